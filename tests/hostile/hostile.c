/* Hostile tenant functions: each tries to escape the executor sandbox and
 * reports, as text, what it got. tests/sandbox.rs ships them and asserts that
 * every attempt was refused or contained. Built with
 *     cc -shared -fPIC -Wall -Werror -I examples/c tests/hostile/hostile.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rfx.h"

/* Appends printf-style text to out, bounded by the capacity. */
typedef struct {
    char *p;
    uint32_t len, cap;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (b->len < b->cap) {
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        if (n > 0)
            b->len = (uint32_t)n + b->len > b->cap ? b->cap : b->len + (uint32_t)n;
    }
    va_end(ap);
}

/* The NUL-terminated input as a string (inputs are small). */
static void arg(const void *in, uint32_t size, char *s, size_t cap)
{
    size_t n = size < cap - 1 ? size : cap - 1;
    memcpy(s, in, n);
    s[n] = 0;
}

/* Its whole environment, one variable a line. */
RFX_EXTENDED(env_dump);
uint32_t env_dump(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    extern char **environ;
    buf b = {out, 0, ctx->out_capacity};
    for (char **e = environ; *e; e++)
        put(&b, "%s\n", *e);
    return b.len;
}

/* Every /proc/PID/environ it can read, and the processes it can see:
 * "visible N" then "PID: readable|errno" lines; "KEY FOUND" if any holds
 * RFX_CLUSTER_KEY. */
RFX_EXTENDED(proc_scan);
uint32_t proc_scan(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    buf b = {out, 0, ctx->out_capacity};
    DIR *d = opendir("/proc");
    if (!d) {
        put(&b, "no /proc: %s\n", strerror(errno));
        return b.len;
    }
    int visible = 0, found = 0;
    struct dirent *e;
    char path[300];
    static char data[65536];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        visible++;
        snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            put(&b, "%s: %s\n", e->d_name, strerror(errno));
            continue;
        }
        ssize_t n = read(fd, data, sizeof data - 1);
        close(fd);
        put(&b, "%s: readable\n", e->d_name);
        for (ssize_t i = 0; n > 0 && i < n; i += strlen(data + i) + 1) {
            data[n] = 0;
            if (strncmp(data + i, "RFX_CLUSTER_KEY=", 16) == 0)
                found = 1;
        }
    }
    closedir(d);
    put(&b, "visible %d\n%s\n", visible, found ? "KEY FOUND" : "no key");
    return b.len;
}

/* Input: a host pid (another lease's executor). Tries its environ, its
 * memory, a signal and ptrace; one "what: result" line each. */
RFX_EXTENDED(attack_pid);
uint32_t attack_pid(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    char s[32];
    arg(in, size, s, sizeof s);
    pid_t pid = (pid_t)atoi(s);
    buf b = {out, 0, ctx->out_capacity};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int fd = open(path, O_RDONLY);
    put(&b, "environ: %s\n", fd < 0 ? strerror(errno) : "OPENED");
    if (fd >= 0)
        close(fd);
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    fd = open(path, O_RDONLY);
    put(&b, "mem: %s\n", fd < 0 ? strerror(errno) : "OPENED");
    if (fd >= 0)
        close(fd);
    put(&b, "kill: %s\n", kill(pid, SIGKILL) < 0 ? strerror(errno) : "SENT");
    long r = ptrace(PTRACE_ATTACH, pid, 0, 0);
    put(&b, "ptrace: %s\n", r < 0 ? strerror(errno) : "ATTACHED");
    return b.len;
}

/* Input: a path. Tries to create it and write to it: "ok" or the error. */
RFX_EXTENDED(write_file);
uint32_t write_file(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    char path[512];
    arg(in, size, path, sizeof path);
    buf b = {out, 0, ctx->out_capacity};
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        put(&b, "%s", strerror(errno));
        return b.len;
    }
    ssize_t n = write(fd, "pwned\n", 6);
    close(fd);
    put(&b, n == 6 ? "ok" : "short write");
    return b.len;
}

/* Its identity: "uid U gid G". */
RFX_EXTENDED(whoami_c);
uint32_t whoami_c(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    buf b = {out, 0, ctx->out_capacity};
    put(&b, "uid %u gid %u", (unsigned)getuid(), (unsigned)getgid());
    return b.len;
}

/* Input: MiB to allocate and touch. Returns "touched N MiB" if it lives. */
RFX_EXTENDED(hog);
uint32_t hog(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    char s[32];
    arg(in, size, s, sizeof s);
    long mib = atol(s);
    buf b = {out, 0, ctx->out_capacity};
    for (long i = 0; i < mib; i++) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            put(&b, "mmap failed after %ld MiB: %s", i, strerror(errno));
            return b.len;
        }
        memset(p, 0x5a, 1 << 20);
    }
    put(&b, "touched %ld MiB", mib);
    return b.len;
}

/* Forks children that wait for their parent's end, until fork fails or
 * 100000 forks: "forked N, then ERR"; then kills them all. */
RFX_EXTENDED(fork_bomb);
uint32_t fork_bomb(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    buf b = {out, 0, ctx->out_capacity};
    static pid_t kids[100000];
    int n = 0, err = 0;
    while (n < 100000) {
        pid_t p = fork();
        if (p < 0) {
            err = errno;
            break;
        }
        if (p == 0) {
            pause();
            _exit(0);
        }
        kids[n++] = p;
    }
    for (int i = 0; i < n; i++)
        kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    put(&b, "forked %d, then %s", n, err ? strerror(err) : "no error");
    return b.len;
}

/* Tries what the seccomp filter denies: one "call: result" line each. */
RFX_EXTENDED(escape_calls);
uint32_t escape_calls(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    buf b = {out, 0, ctx->out_capacity};
    put(&b, "unshare: %s\n", unshare(CLONE_NEWUSER) < 0 ? strerror(errno) : "DONE");
    put(&b, "ptrace: %s\n", ptrace(PTRACE_TRACEME, 0, 0, 0) < 0 ? strerror(errno) : "DONE");
    put(&b, "setuid0: %s\n", setuid(0) < 0 ? strerror(errno) : "DONE");
    put(&b, "chroot: %s\n", chroot("/tmp") < 0 ? strerror(errno) : "DONE");
    return b.len;
}

/* Spins on its core (at most 60 s, then "spun out"): only the lease's time
 * limit stops it. */
#include <time.h>
RFX_EXTENDED(spin);
uint32_t spin(const rfx_context *ctx, const void *in, uint32_t size, void *out)
{
    (void)in, (void)size;
    buf b = {out, 0, ctx->out_capacity};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile unsigned long n = 0;
    do {
        for (int i = 0; i < 1000000; i++)
            n++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec < 60);
    put(&b, "spun out");
    return b.len;
}
