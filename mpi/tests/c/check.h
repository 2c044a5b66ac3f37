/* Shared helpers of rfx's self-checking MPI test programs (plain C11,
 * written against the standard ABI's mpi.h). A failed CHECK prints
 *   FAIL rank R: file:line: message
 * on stderr and aborts the job with MPI_Abort(MPI_COMM_WORLD, 1).
 *
 * With MPI_TEST_KEEP_GOING=1 in the environment a failed CHECK only prints
 * its line and counts, and check_ok() fails the job at the end: a way to
 * see every failure of a run at once (later checks may then fail, or a
 * rank crash, as a consequence of an earlier one). */
#ifndef RFX_MPI_TEST_CHECK_H
#define RFX_MPI_TEST_CHECK_H

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define CHECK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CHECK_PRINTF(a, b)
#endif

static inline int check_rank(void) {
    int init = 0, fin = 0, r = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static int check_failures;

CHECK_PRINTF(3, 4)
static inline void check_fail(const char *file, int line_no, const char *fmt, ...) {
    int init = 0, fin = 0;
    const char *keep = getenv("MPI_TEST_KEEP_GOING");
    char line[1024];
    int n;
    va_list ap;
    /* One write per line: ranks share the terminal. */
    n = snprintf(line, sizeof line, "FAIL rank %d: %s:%d: ", check_rank(), file,
                 line_no);
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    if (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0) {
        check_failures++;
        return;
    }
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* CHECK(cond, fmt, ...): fails the job unless cond holds. */
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond))                                      \
            check_fail(__FILE__, __LINE__, __VA_ARGS__);  \
    } while (0)

/* MPI_OK(call): the call returns MPI_SUCCESS. */
#define MPI_OK(call)                                                 \
    do {                                                             \
        int check_rc_ = (call);                                      \
        CHECK(check_rc_ == MPI_SUCCESS, "%s returned %d (%s)", #call, \
              check_rc_, check_errstr(check_rc_));                   \
    } while (0)

/* The error string of a code (a static buffer). */
static inline const char *check_errstr(int code) {
    static char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    s[0] = '\0';
    if (MPI_Error_string(code, s, &len) != MPI_SUCCESS)
        snprintf(s, sizeof s, "no error string for %d", code);
    return s;
}

/* The class of an error code (-1 if MPI_Error_class fails). */
static inline int check_class(int code) {
    int c = -1;
    if (MPI_Error_class(code, &c) != MPI_SUCCESS)
        return -1;
    return c;
}

/* 1 when the library is rfx's (its version string names rfx). */
static inline int check_is_rfx(void) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(v, &len) != MPI_SUCCESS)
        return 0;
    return strncmp(v, "rfx", 3) == 0;
}

static inline int world_rank(void) {
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static inline int world_size(void) {
    int n;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

/* Every program needs two ranks or more. */
static inline void check_min_ranks(const char *prog) {
    CHECK(world_size() >= 2, "%s needs at least 2 ranks, got %d", prog,
          world_size());
}

/* Rank 0 prints the success line, after every rank got there. */
static inline void check_ok(const char *prog) {
    int all = 0;
    MPI_OK(MPI_Allreduce(&check_failures, &all, 1, MPI_INT, MPI_SUM,
                         MPI_COMM_WORLD));
    if (all != 0) {
        if (world_rank() == 0)
            fprintf(stderr, "FAILED %s %d ranks: %d failed check(s)\n", prog,
                    world_size(), all);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (world_rank() == 0) {
        printf("OK %s %d ranks\n", prog, world_size());
        fflush(stdout);
    }
}

/* CHECK with the file and line of a caller (for helpers). */
#define CHECK_AT(file, line, cond, ...)                   \
    do {                                                  \
        if (!(cond))                                      \
            check_fail(file, line, __VA_ARGS__);          \
    } while (0)

/* The status of a completion that received nothing: source `source`, tag
 * MPI_ANY_TAG, count 0. */
static inline void check_status_at(const char *file, int line, const MPI_Status *st,
                                   int source, const char *what) {
    int n = -1;
    CHECK_AT(file, line, st->MPI_SOURCE == source, "%s: source %d, want %s (%d)",
             what, st->MPI_SOURCE,
             source == MPI_PROC_NULL ? "MPI_PROC_NULL" : "MPI_ANY_SOURCE", source);
    CHECK_AT(file, line, st->MPI_TAG == MPI_ANY_TAG, "%s: tag %d, want MPI_ANY_TAG",
             what, st->MPI_TAG);
    CHECK_AT(file, line, MPI_Get_count(st, MPI_INT, &n) == MPI_SUCCESS && n == 0,
             "%s: count %d, want 0", what, n);
}

/* The status of a receive from MPI_PROC_NULL: source MPI_PROC_NULL, tag
 * MPI_ANY_TAG, count 0. */
#define check_proc_null_status(st, what) \
    check_status_at(__FILE__, __LINE__, st, MPI_PROC_NULL, what)

/* An empty status (the completion of MPI_REQUEST_NULL): source
 * MPI_ANY_SOURCE, tag MPI_ANY_TAG, count 0. */
#define check_empty_status(st, what) \
    check_status_at(__FILE__, __LINE__, st, MPI_ANY_SOURCE, what)

#endif
