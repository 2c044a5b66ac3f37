//! `no_new_privs`, a seccomp filter and Landlock rules: what an executor does to itself.
//!
//! The executor confines itself once, early, while it is still single-threaded: after it has
//! entered its namespaces and pivoted into its new root, and before it drops to its lease's
//! uid/gid (see `confine.rs`), it calls, in this order,
//!
//! 1. [`set_no_new_privs`]: setuid binaries and file capabilities then grant nothing, and an
//!    unprivileged process may install seccomp filters and Landlock rules;
//! 2. [`restrict_filesystem`]: Landlock rules, read (and execute) beneath some paths, read and
//!    write beneath others, nothing elsewhere;
//! 3. [`install_seccomp`]: the syscall filter.
//!
//! All three are inherited by every thread and process created afterwards, and none can be
//! undone.
//!
//! # The seccomp filter: a deny list
//!
//! Tenant functions are native code that uses threads, futexes, epoll, eventfd, memfds, `mmap`,
//! Unix and TCP sockets, RDMA verbs (`ioctl` and `mmap` on `/dev/infiniband/*`), `fork`... An
//! allow list of all that would break some function sooner or later, so the filter allows by
//! default and denies what no function needs: the calls that reach into other processes,
//! reshape the file system view or the namespaces the sandbox built, change the machine
//! (modules, kexec, clocks, swap, reboot), or open kernel attack surface that functions do not
//! use (eBPF, perf, io_uring, userfaultfd, keyrings). The table is `DENY_GROUPS` in this file
//! (plus `ARCH_DENY_GROUPS` for one architecture); [`denied_syscalls`] lists the names.
//!
//! A denied call fails with `EPERM`, so a function sees a clean error, not a signal. Three calls
//! are denied only for some arguments: `clone` with any namespace flag, `personality` other
//! than the query `0xffffffff` and `PER_LINUX` (0), and `ioctl` with `TIOCSTI`/`TIOCLINUX`.
//!
//! `clone3` fails with `ENOSYS` instead: its flags live in memory, which seccomp cannot read,
//! so the filter could not tell a thread from a new namespace; glibc (2.34 and later) takes
//! `ENOSYS` as "old kernel" and falls back to `clone`, whose flags the filter does see.
//!
//! The filter is one program (`search_program`). It checks the architecture, answers `ENOSYS`
//! on x86_64 to every x32 system call (numbers with bit 30 set, which pass the architecture
//! check as x86_64 and would otherwise be a second, unfiltered copy of the deny list on kernels
//! built with `CONFIG_X86_X32_ABI`), then finds the number by binary search: allowed, denied
//! (`EPERM`, or `ENOSYS` for `clone3`), or denied for some arguments, which a `seccompiler`
//! program behind the search decides. That program also checks the architecture first: a call
//! made through another ABI (for example `int 0x80`, the i386 ABI of an x86_64 process) kills
//! the process.
//!
//! The cost is small. At run time the kernel's seccomp cache (5.11 and later) remembers which
//! syscall numbers the filter allows whatever the arguments, and runs no filter for them
//! (`futex`, `read`, `write`, `epoll_wait`...); only `clone`, `ioctl`, `personality` and the
//! denied calls run it. At install the kernel fills that cache by running the filter for every
//! number of every architecture, which is why the search exists: through a plain chain of
//! comparisons it took a quarter of a millisecond of every sandboxed cold start.
//!
//! # Landlock
//!
//! [`restrict_filesystem`] applies the rules of [`FsRules`] in the `landlock` crate's
//! best-effort mode, targeting Landlock ABI 5 ([`LANDLOCK_ABI`]: reads, writes, `Refer`,
//! `Truncate` and `IoctlDev`). Landlock is not used for network ports (the executor needs TCP)
//! nor for scopes (abstract Unix sockets connect the executor to its manager).
//!
//! `IoctlDev` is handled: `ioctl` on a device file is allowed only beneath a `write` path, so
//! devices a function drives (`/dev/infiniband`, GPUs) belong in [`FsRules::write`]. They need
//! it anyway, as they are opened read-write.
//!
//! A memfd opened through `/proc/self/fd/N` (how shipped libraries are loaded) is not subject
//! to the rules: it lives on an internal file system that Landlock leaves alone.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The Landlock ABI whose file system rights [`restrict_filesystem`] asks for.
///
/// ABI 5 (Linux 6.10) adds the last file system right that matters here (`IoctlDev`); a kernel
/// with ABI 1 to 4 enforces a subset ([`LandlockStatus::Partial`]). ABI 9's `ResolveUnix`
/// (connecting to path-named Unix sockets) would be the next to consider.
pub const LANDLOCK_ABI: ABI = ABI::V5;

/// `open_tree_attr` (Linux 6.15), which `libc` 0.2 does not name yet; its number is the same on
/// every architecture.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// On x86_64, the bit that marks an x32 system call number (`__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Sets `PR_SET_NO_NEW_PRIVS` (setuid binaries and file caps then grant nothing).
///
/// The flag is per thread, inherited by threads and children created afterwards, and cannot be
/// cleared. [`install_seccomp`] and [`restrict_filesystem`] set it too, but calling this first
/// makes the order explicit.
pub fn set_no_new_privs() -> Result<(), SyscallError> {
    nix::sys::prctl::set_no_new_privs().map_err(SyscallError::NoNewPrivs)?;
    tracing::debug!("no_new_privs set");
    Ok(())
}

/// Filesystem rules for Landlock: read (and execute) beneath `read`, read+write beneath `write`.
///
/// Each path names a directory (the rule covers everything beneath it) or a file. Paths that
/// do not exist or cannot be opened are skipped (with a log line). Everything not beneath a
/// listed path is denied: with both lists empty, the process can open no file at all by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsRules {
    /// Beneath these: open files for reading, list directories, execute files.
    pub read: Vec<PathBuf>,
    /// Beneath these: everything `read` allows, plus write, create, remove, rename, link,
    /// truncate, and `ioctl` on device files.
    pub write: Vec<PathBuf>,
}

/// What Landlock did: fully enforced, partially (older ABI), or not available in this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    /// All the rights of [`LANDLOCK_ABI`] are enforced.
    Enforced,
    /// The kernel's Landlock is older than [`LANDLOCK_ABI`]: the rights it knows are enforced,
    /// the others (e.g. truncation, device `ioctl`) are not.
    Partial,
    /// The kernel has no Landlock (not built in, or not enabled at boot): no rule is enforced.
    Unavailable,
}

/// Applies Landlock best-effort (the landlock crate's compat mode): never fails only because
/// the kernel lacks Landlock (returns Unavailable); fails on real errors (a listed path cannot
/// be opened is NOT an error: skip missing paths).
///
/// The rules apply to the calling thread and to the threads and processes it creates
/// afterwards; call it while the process is single-threaded. It sets `no_new_privs`.
pub fn restrict_filesystem(rules: &FsRules) -> Result<LandlockStatus, SyscallError> {
    let handled = AccessFs::from_all(LANDLOCK_ABI);
    let mut ruleset = Ruleset::default().handle_access(handled)?.create()?;
    let lists = [
        ("read", &rules.read, AccessFs::from_read(LANDLOCK_ABI)),
        ("write", &rules.write, handled),
    ];
    for (kind, paths, access) in lists {
        for path in paths {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                Err(error) => {
                    tracing::debug!(path = %path.display(), kind, %error, "landlock: path skipped");
                    continue;
                }
            };
            // Directory rights (list, create, remove...) are invalid on a file: keep those
            // that make sense for what the path names, as `landlock::path_beneath_rules` does.
            let is_dir = nix::sys::stat::fstat(fd.as_fd().as_raw_fd())
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(true);
            let access = if is_dir {
                access
            } else {
                access & AccessFs::from_file(LANDLOCK_ABI)
            };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    let restriction = ruleset.restrict_self()?;
    let status = match restriction.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unavailable,
    };
    match status {
        LandlockStatus::Enforced => tracing::info!(
            kernel = ?restriction.landlock,
            read = rules.read.len(),
            write = rules.write.len(),
            "landlock rules enforced"
        ),
        LandlockStatus::Partial => tracing::warn!(
            kernel = ?restriction.landlock,
            target = %LANDLOCK_ABI,
            "landlock rules partially enforced: the kernel's Landlock is older than the target ABI"
        ),
        LandlockStatus::Unavailable => tracing::warn!(
            kernel = ?restriction.landlock,
            "landlock is not available in this kernel: file system rules are NOT enforced"
        ),
    }
    Ok(status)
}

/// Installs the seccomp filter on the calling thread (and, since it is called while the
/// process is single-threaded, on every thread created later). Denied calls fail with EPERM
/// (so a function sees a clean error); `clone3` fails with ENOSYS (so glibc falls back to
/// clone, whose flags the filter can inspect).
///
/// Threads that already exist are not filtered: a warning is logged if there are any. It sets
/// `no_new_privs`. See the [module documentation](self) for the filter's design.
pub fn install_seccomp() -> Result<(), SyscallError> {
    install_compiled(&compile_seccomp()?)
}

/// The filters of [`install_seccomp`], compiled to BPF: the same for every
/// executor, so the manager compiles them once (hundreds of microseconds)
/// and hands them to each executor, which only installs them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeccompPrograms {
    /// Each filter's name and instructions, one per `u64`:
    /// `code << 48 | jt << 40 | jf << 32 | k`.
    programs: Vec<(String, Vec<u64>)>,
}

/// Compiles the filters of [`install_seccomp`].
pub fn compile_seccomp() -> Result<SeccompPrograms, SyscallError> {
    let programs = build_filters()?
        .into_iter()
        .map(|(name, program)| {
            let packed = program
                .iter()
                .map(|f| {
                    (u64::from(f.code) << 48)
                        | (u64::from(f.jt) << 40)
                        | (u64::from(f.jf) << 32)
                        | u64::from(f.k)
                })
                .collect();
            (name.to_owned(), packed)
        })
        .collect();
    Ok(SeccompPrograms { programs })
}

/// Installs filters from [`compile_seccomp`], as [`install_seccomp`] does.
pub fn install_compiled(compiled: &SeccompPrograms) -> Result<(), SyscallError> {
    let filters: Vec<(&str, BpfProgram)> = compiled
        .programs
        .iter()
        .map(|(name, packed)| {
            let program = packed
                .iter()
                .map(|&w| seccompiler::sock_filter {
                    code: (w >> 48) as u16,
                    jt: (w >> 40) as u8,
                    jf: (w >> 32) as u8,
                    k: w as u32,
                })
                .collect();
            (name.as_str(), program)
        })
        .collect();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let threads = tasks.count();
        if threads > 1 {
            tracing::warn!(
                threads,
                "seccomp filter installed with several threads: only the calling one (and the \
                 threads and processes it creates) is filtered"
            );
        }
    }
    for (name, program) in &filters {
        seccompiler::apply_filter(program).map_err(|source| SyscallError::SeccompInstall {
            filter: filter_name(name),
            source,
        })?;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        for group in all_groups() {
            let calls: Vec<&str> = group.calls.iter().map(|call| call.name).collect();
            tracing::debug!(reason = group.reason, ?calls, "seccomp: denied with EPERM");
        }
    }
    tracing::debug!(
        filters = filters.len(),
        denied = denied_syscalls().len(),
        "seccomp filter installed"
    );
    Ok(())
}

/// The static name of a compiled filter, for errors.
fn filter_name(name: &str) -> &'static str {
    if name == "deny" {
        "deny"
    } else {
        "handed over"
    }
}

/// The names of the denied syscalls, for docs and logs.
///
/// `clone`, `personality` and `ioctl` are denied only for some arguments (see the [module
/// documentation](self)); `clone3` fails with `ENOSYS`, the others with `EPERM`.
pub fn denied_syscalls() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        all_groups()
            .flat_map(|group| group.calls.iter().map(|call| call.name))
            .chain(std::iter::once("clone3"))
            .collect()
    })
}

/// An error of the confinement calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyscallError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] nix::Error),
    /// Landlock failed for a reason other than the kernel lacking it.
    #[error("cannot apply the Landlock rules")]
    Landlock(#[from] landlock::RulesetError),
    /// A seccomp filter could not be compiled (a bug in the table).
    #[error("cannot build the seccomp filter `{filter}`")]
    SeccompBuild {
        /// Which filter.
        filter: &'static str,
        /// The cause.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused a seccomp filter.
    #[error("cannot install the seccomp filter `{filter}`")]
    SeccompInstall {
        /// Which filter.
        filter: &'static str,
        /// The cause.
        #[source]
        source: seccompiler::Error,
    },
    /// No filter is defined for this architecture (only x86_64 and aarch64 are).
    #[error("no seccomp filter is defined for the architecture {0}")]
    UnsupportedArch(&'static str),
}

/// When a listed call is denied.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Always.
    Always,
    /// When the low 32 bits of argument `arg` have any of `bits` set.
    AnyBitSet { arg: u8, bits: &'static [u64] },
    /// When the low 32 bits of argument `arg` are one of `values`.
    ArgIn { arg: u8, values: &'static [u64] },
    /// When the low 32 bits of argument `arg` are none of `values`.
    ArgNotIn { arg: u8, values: &'static [u64] },
}

/// A denied call: its name, its number on this architecture, and when it is denied.
#[derive(Debug, Clone, Copy)]
struct Denied {
    name: &'static str,
    nr: libc::c_long,
    when: When,
}

/// A group of denied calls and why they are denied.
#[derive(Debug, Clone, Copy)]
struct DenyGroup {
    reason: &'static str,
    calls: &'static [Denied],
}

/// A call denied whatever its arguments.
const fn always(name: &'static str, nr: libc::c_long) -> Denied {
    Denied {
        name,
        nr,
        when: When::Always,
    }
}

/// The namespace flags of `clone` (`CLONE_NEWTIME` cannot be passed to `clone`: its bit is
/// part of the exit signal there).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The calls denied on every supported architecture, by group; each group says why.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
// `Ioctl` (TIOCSTI...) is `c_ulong` with glibc but `c_int` with musl: keep the casts.
#[allow(clippy::unnecessary_cast)]
const DENY_GROUPS: &[DenyGroup] = &[
    DenyGroup {
        reason: "reaching into other processes: trace them, read or write their memory, \
                 compare or steal their file descriptors",
        calls: &[
            always("ptrace", libc::SYS_ptrace),
            always("process_vm_readv", libc::SYS_process_vm_readv),
            always("process_vm_writev", libc::SYS_process_vm_writev),
            always("process_madvise", libc::SYS_process_madvise),
            always("kcmp", libc::SYS_kcmp),
            always("pidfd_getfd", libc::SYS_pidfd_getfd),
        ],
    },
    DenyGroup {
        reason: "mounts and root changes: reshaping the file system view the sandbox built",
        calls: &[
            always("mount", libc::SYS_mount),
            always("umount2", libc::SYS_umount2),
            always("pivot_root", libc::SYS_pivot_root),
            always("chroot", libc::SYS_chroot),
            always("move_mount", libc::SYS_move_mount),
            always("open_tree", libc::SYS_open_tree),
            always("open_tree_attr", SYS_OPEN_TREE_ATTR),
            always("fsopen", libc::SYS_fsopen),
            always("fsconfig", libc::SYS_fsconfig),
            always("fsmount", libc::SYS_fsmount),
            always("fspick", libc::SYS_fspick),
            always("mount_setattr", libc::SYS_mount_setattr),
        ],
    },
    DenyGroup {
        reason: "namespaces: leaving the sandbox's or making new ones (a new user namespace \
                 grants capabilities in it)",
        calls: &[
            always("unshare", libc::SYS_unshare),
            always("setns", libc::SYS_setns),
            Denied {
                name: "clone",
                nr: libc::SYS_clone,
                when: When::AnyBitSet {
                    arg: 0,
                    bits: CLONE_NAMESPACE_FLAGS,
                },
            },
        ],
    },
    DenyGroup {
        reason: "kernel attack surface no function needs: eBPF, perf events, io_uring, userfaultfd",
        calls: &[
            always("bpf", libc::SYS_bpf),
            always("perf_event_open", libc::SYS_perf_event_open),
            always("io_uring_setup", libc::SYS_io_uring_setup),
            always("io_uring_enter", libc::SYS_io_uring_enter),
            always("io_uring_register", libc::SYS_io_uring_register),
            always("userfaultfd", libc::SYS_userfaultfd),
        ],
    },
    DenyGroup {
        reason: "kernel code and machine state: modules, kexec, reboot, swap, process \
                 accounting, quotas, nfsd",
        calls: &[
            always("kexec_load", libc::SYS_kexec_load),
            always("kexec_file_load", libc::SYS_kexec_file_load),
            always("init_module", libc::SYS_init_module),
            always("finit_module", libc::SYS_finit_module),
            always("delete_module", libc::SYS_delete_module),
            always("reboot", libc::SYS_reboot),
            always("swapon", libc::SYS_swapon),
            always("swapoff", libc::SYS_swapoff),
            always("acct", libc::SYS_acct),
            always("quotactl", libc::SYS_quotactl),
            always("quotactl_fd", libc::SYS_quotactl_fd),
            always("nfsservctl", libc::SYS_nfsservctl),
            always("lookup_dcookie", libc::SYS_lookup_dcookie),
        ],
    },
    DenyGroup {
        reason: "host-wide logs and terminals: the kernel log, hanging up the controlling terminal",
        calls: &[
            always("syslog", libc::SYS_syslog),
            always("vhangup", libc::SYS_vhangup),
        ],
    },
    DenyGroup {
        reason: "kernel keyrings: not namespaced, shared with the host's other users",
        calls: &[
            always("keyctl", libc::SYS_keyctl),
            always("add_key", libc::SYS_add_key),
            always("request_key", libc::SYS_request_key),
        ],
    },
    DenyGroup {
        reason: "the system clock: setting or slewing the host's time",
        calls: &[
            always("settimeofday", libc::SYS_settimeofday),
            always("clock_settime", libc::SYS_clock_settime),
            always("clock_adjtime", libc::SYS_clock_adjtime),
            always("adjtimex", libc::SYS_adjtimex),
        ],
    },
    DenyGroup {
        reason: "host identity: host and domain names",
        calls: &[
            always("sethostname", libc::SYS_sethostname),
            always("setdomainname", libc::SYS_setdomainname),
        ],
    },
    DenyGroup {
        reason: "file handles: open any file of a mounted file system by handle, bypassing \
                 paths (the 'shocker' escape)",
        calls: &[
            always("open_by_handle_at", libc::SYS_open_by_handle_at),
            always("name_to_handle_at", libc::SYS_name_to_handle_at),
        ],
    },
    DenyGroup {
        reason: "file system wide event monitoring",
        calls: &[always("fanotify_init", libc::SYS_fanotify_init)],
    },
    DenyGroup {
        reason: "execution domains: anything but the query (0xffffffff) and PER_LINUX (0), \
                 e.g. ADDR_NO_RANDOMIZE",
        calls: &[Denied {
            name: "personality",
            nr: libc::SYS_personality,
            when: When::ArgNotIn {
                arg: 0,
                values: &[0, 0xffff_ffff],
            },
        }],
    },
    DenyGroup {
        reason: "terminal input injection and console control: ioctl TIOCSTI and TIOCLINUX",
        calls: &[Denied {
            name: "ioctl",
            nr: libc::SYS_ioctl,
            when: When::ArgIn {
                arg: 1,
                values: &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64],
            },
        }],
    },
];

/// The calls denied on x86_64 only, by group.
#[cfg(target_arch = "x86_64")]
const ARCH_DENY_GROUPS: &[DenyGroup] = &[
    DenyGroup {
        reason: "raw I/O port access",
        calls: &[
            always("iopl", libc::SYS_iopl),
            always("ioperm", libc::SYS_ioperm),
        ],
    },
    DenyGroup {
        reason: "obsolete interfaces: a.out library loading, binary sysctl",
        calls: &[
            always("uselib", libc::SYS_uselib),
            always("_sysctl", libc::SYS__sysctl),
        ],
    },
];

/// The calls denied on aarch64 only (none).
#[cfg(target_arch = "aarch64")]
const ARCH_DENY_GROUPS: &[DenyGroup] = &[];

/// No table on other architectures: [`install_seccomp`] fails there.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DENY_GROUPS: &[DenyGroup] = &[];

/// No table on other architectures: [`install_seccomp`] fails there.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_DENY_GROUPS: &[DenyGroup] = &[];

/// Every group of denied calls on this architecture.
fn all_groups() -> impl Iterator<Item = &'static DenyGroup> {
    DENY_GROUPS.iter().chain(ARCH_DENY_GROUPS.iter())
}

/// The seccompiler target of this build.
fn target_arch() -> Result<seccompiler::TargetArch, SyscallError> {
    #[cfg(target_arch = "x86_64")]
    return Ok(seccompiler::TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Ok(seccompiler::TargetArch::aarch64);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return Err(SyscallError::UnsupportedArch(std::env::consts::ARCH));
}

/// A condition on the low 32 bits of argument `arg`.
fn condition(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// The seccompiler rules of one denied call: empty for "always", else any rule matching
/// denies the call.
fn rules_of(when: When) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    match when {
        When::Always => Ok(Vec::new()),
        When::AnyBitSet { arg, bits } => bits
            .iter()
            .map(|&bit| SeccompRule::new(vec![condition(arg, SeccompCmpOp::MaskedEq(bit), bit)?]))
            .collect(),
        When::ArgIn { arg, values } => values
            .iter()
            .map(|&value| SeccompRule::new(vec![condition(arg, SeccompCmpOp::Eq, value)?]))
            .collect(),
        When::ArgNotIn { arg, values } => {
            let all_differ = values
                .iter()
                .map(|&value| condition(arg, SeccompCmpOp::Ne, value))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![SeccompRule::new(all_differ)?])
        }
    }
}

/// Compiles one filter that answers `action` to the calls of `rules` and allows the rest.
fn compile(
    filter: &'static str,
    rules: std::collections::BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
    arch: seccompiler::TargetArch,
) -> Result<BpfProgram, SyscallError> {
    let build = |source| SyscallError::SeccompBuild { filter, source };
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch).map_err(build)?;
    BpfProgram::try_from(filter).map_err(build)
}

/// What the filter answers for a syscall number of this architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Fail with this errno, whatever the arguments.
    Errno(i32),
    /// Depends on the arguments: ask the `seccompiler` program.
    Arguments,
}

/// `AUDIT_ARCH_*` of the architecture this binary runs as (the value `seccomp_data.arch` holds).
fn audit_arch() -> u32 {
    /// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
    const LE64: u32 = 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "x86_64")]
    return 62 | LE64; // EM_X86_64
    #[cfg(not(target_arch = "x86_64"))]
    return 183 | LE64; // EM_AARCH64; no other architecture gets here (see `target_arch`)
}

/// The BPF programs to install, named, in order: one, `deny`.
fn build_filters() -> Result<Vec<(&'static str, BpfProgram)>, SyscallError> {
    let arch = target_arch()?;
    let build = |source| SyscallError::SeccompBuild {
        filter: "deny",
        source,
    };
    let mut verdicts = std::collections::BTreeMap::new();
    let mut by_arguments = std::collections::BTreeMap::new();
    for call in all_groups().flat_map(|group| group.calls.iter()) {
        let rules = rules_of(call.when).map_err(build)?;
        let nr = u32::try_from(call.nr).map_err(|_| SyscallError::UnsupportedArch("nr"))?;
        if rules.is_empty() {
            verdicts.insert(nr, Verdict::Errno(libc::EPERM));
        } else {
            verdicts.insert(nr, Verdict::Arguments);
            by_arguments.insert(call.nr, rules);
        }
    }
    verdicts.insert(libc::SYS_clone3 as u32, Verdict::Errno(libc::ENOSYS));
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let arguments = compile("deny", by_arguments, eperm, arch)?;
    Ok(vec![("deny", search_program(&verdicts, arguments))])
}

/// The deny filter: a binary search over `verdicts` for calls of this architecture, with
/// `arguments` (a `seccompiler` program, which begins with its own architecture check) behind
/// it for the calls whose verdict depends on their arguments and for every other architecture.
///
/// A call that is not denied returns "allow" after about a dozen instructions. That matters
/// less at run time (the kernel's cache skips the filter for such numbers) than at install:
/// the kernel then runs the filter once for every syscall number of every architecture to fill
/// that cache, which through one `seccompiler` chain of 355 instructions cost about a quarter of
/// a millisecond of each sandboxed cold start.
fn search_program(
    verdicts: &std::collections::BTreeMap<u32, Verdict>,
    arguments: BpfProgram,
) -> BpfProgram {
    use libc::{BPF_ABS, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    /// An instruction before `arguments`, whose jumps there are resolved at the end.
    enum Op {
        Insn(seccompiler::sock_filter),
        /// `ja` over the next `usize` instructions.
        Skip(usize),
        /// `ja` to the first instruction of `arguments`.
        ToArguments,
    }
    fn insn(code: u32, k: u32, jt: u8, jf: u8) -> Op {
        Op::Insn(seccompiler::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        })
    }
    fn ret(action: u32) -> Op {
        insn(BPF_RET | BPF_K, action, 0, 0)
    }
    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
    }
    /// Leaves compare at most this many numbers, one by one.
    const LEAF: usize = 4;
    /// Code that answers for the number in the accumulator, among `calls` or allowed. Every
    /// conditional jump is 0 or 1 ahead; longer ones are `ja`, whose offset has 32 bits.
    fn search(calls: &[(u32, Verdict)], out: &mut Vec<Op>) {
        if calls.len() <= LEAF {
            for &(nr, verdict) in calls {
                out.push(insn(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
                out.push(match verdict {
                    Verdict::Errno(e) => ret(errno(e)),
                    Verdict::Arguments => Op::ToArguments,
                });
            }
            out.push(ret(libc::SECCOMP_RET_ALLOW));
            return;
        }
        let (low, high) = calls.split_at(calls.len() / 2);
        // At or above the pivot: jump over the low half's code.
        out.push(insn(BPF_JMP | BPF_JGE | BPF_K, high[0].0, 0, 1));
        let skip = out.len();
        out.push(Op::Skip(0));
        search(low, out);
        out[skip] = Op::Skip(out.len() - skip - 1);
        search(high, out);
    }
    /// Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let mut ops = vec![
        insn(BPF_LD | BPF_W | BPF_ABS, ARCH, 0, 0),
        insn(BPF_JMP | BPF_JEQ | BPF_K, audit_arch(), 1, 0),
        // Another architecture: `arguments` kills the process.
        Op::ToArguments,
        insn(BPF_LD | BPF_W | BPF_ABS, NR, 0, 0),
    ];
    // x32 numbers pass the architecture check as x86_64 and would otherwise be a second,
    // unfiltered copy of every denied call (on kernels built with `CONFIG_X86_X32_ABI`).
    #[cfg(target_arch = "x86_64")]
    ops.extend([
        insn(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        ret(errno(libc::ENOSYS)),
    ]);
    let calls: Vec<(u32, Verdict)> = verdicts.iter().map(|(&nr, &v)| (nr, v)).collect();
    search(&calls, &mut ops);
    let len = ops.len();
    let ja = |k: usize| seccompiler::sock_filter {
        code: (BPF_JMP | BPF_JA) as u16,
        jt: 0,
        jf: 0,
        k: k as u32,
    };
    let mut program: BpfProgram = ops
        .into_iter()
        .enumerate()
        .map(|(at, op)| match op {
            Op::Insn(i) => i,
            Op::Skip(n) => ja(n),
            Op::ToArguments => ja(len - at - 1),
        })
        .collect();
    program.extend(arguments);
    program
}

#[cfg(test)]
mod tests {
    //! Confinement is per thread and irreversible, so every test that confines runs in a child
    //! process: this test binary, re-executed on that one test with [`CHILD_ENV`] set.

    use super::*;

    use std::collections::HashSet;
    use std::ffi::{CString, OsString};
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::{Command, Output, Stdio};
    use std::time::Duration;

    use nix::errno::Errno;

    /// Names the case a child process runs.
    const CHILD_ENV: &str = "RFX_SYSCALLS_TEST_CHILD";
    /// The directory a Landlock child may write in.
    const ALLOWED_ENV: &str = "RFX_SYSCALLS_TEST_ALLOWED";
    /// A directory a Landlock child may only read.
    const OTHER_ENV: &str = "RFX_SYSCALLS_TEST_OTHER";
    /// A child taking longer than this is killed.
    const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

    // ---- the deny filter's search, against the plain chain it stands in for -------------

    /// A classic BPF interpreter for the instructions seccomp filters here use. Returns the
    /// action and how many instructions ran.
    fn run_bpf(program: &[seccompiler::sock_filter], data: &[u8; 64]) -> (u32, usize) {
        use libc::{
            BPF_ABS, BPF_ALU, BPF_AND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K,
            BPF_LD, BPF_RET, BPF_W,
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        // Classic BPF only jumps forward: at most one pass over the program.
        for steps in 1..=program.len() {
            let insn = &program[pc];
            let (code, k) = (u32::from(insn.code), insn.k);
            let branch = |taken: bool| 1 + usize::from(if taken { insn.jt } else { insn.jf });
            pc += match code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let at = k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                    1
                }
                c if c == BPF_ALU | BPF_AND | BPF_K => {
                    acc &= k;
                    1
                }
                c if c == BPF_JMP | BPF_JA => 1 + k as usize,
                c if c == BPF_JMP | BPF_JEQ | BPF_K => branch(acc == k),
                c if c == BPF_JMP | BPF_JGE | BPF_K => branch(acc >= k),
                c if c == BPF_JMP | BPF_JGT | BPF_K => branch(acc > k),
                c if c == BPF_JMP | BPF_JSET | BPF_K => branch(acc & k != 0),
                c if c == BPF_RET | BPF_K => return (k, steps),
                other => panic!("instruction {other:#x} at {pc} is not interpreted"),
            };
        }
        panic!("the program ran off its end")
    }

    /// `struct seccomp_data` for a call.
    fn seccomp_data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        data
    }

    #[test]
    fn the_search_answers_as_the_plain_chain_does() {
        let arch = target_arch().expect("a supported architecture");
        // What the filter stands in for: one seccompiler chain over every denied call, with
        // `clone3` and (on x86_64) x32 numbers answered ENOSYS.
        let mut all = std::collections::BTreeMap::new();
        let mut by_arguments = HashSet::new();
        for call in all_groups().flat_map(|group| group.calls.iter()) {
            let rules = rules_of(call.when).expect("rules");
            if !rules.is_empty() {
                by_arguments.insert(call.nr as u32);
            }
            all.insert(call.nr, rules);
        }
        let eperm = SeccompAction::Errno(libc::EPERM as u32);
        let chain = compile("deny", all, eperm, arch).expect("the chain compiles");
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let expected = |data: &[u8; 64], arch: u32, nr: u32| {
            if arch == audit_arch() {
                #[cfg(target_arch = "x86_64")]
                if nr >= X32_SYSCALL_BIT {
                    return enosys;
                }
                if nr == libc::SYS_clone3 as u32 {
                    return enosys;
                }
            }
            run_bpf(&chain, data).0
        };
        let filters = build_filters().expect("the filters compile");
        assert_eq!(filters.len(), 1, "one filter");
        let program = &filters[0].1;
        assert!(program.len() < 4096, "{} instructions", program.len());
        let i386 = 3 | 0x4000_0000;
        let other = if audit_arch() == 62 | 0xC000_0000 {
            183 | 0xC000_0000
        } else {
            62 | 0xC000_0000
        };
        let mut arg_sets: Vec<[u64; 6]> = vec![[0; 6], [u64::MAX; 6], [0xffff_ffff, 0, 0, 0, 0, 0]];
        for value in [
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNS as u64,
            libc::CLONE_NEWPID as u64,
            (libc::CLONE_VM | libc::CLONE_THREAD) as u64,
            8,
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::FIONREAD,
        ] {
            for arg in 0..3 {
                let mut set = [0; 6];
                set[arg] = value;
                arg_sets.push(set);
                set[arg] = value | 0xffff_ffff_0000_0000;
                arg_sets.push(set);
            }
        }
        let mut numbers: Vec<u32> = (0..600).collect();
        numbers.extend([0x3fff_ffff, u32::MAX, 0x8000_0000]);
        #[cfg(target_arch = "x86_64")]
        numbers.extend((0..600).map(|nr| nr | X32_SYSCALL_BIT));
        let (mut compared, mut most_steps_allowed) = (0, 0);
        for &call_arch in &[audit_arch(), i386, other] {
            for &nr in &numbers {
                for args in &arg_sets {
                    let data = seccomp_data(call_arch, nr, *args);
                    let (got, steps) = run_bpf(program, &data);
                    let want = expected(&data, call_arch, nr);
                    assert_eq!(
                        got, want,
                        "arch {call_arch:#x} nr {nr} args {args:x?}: {got:#x}, the chain {want:#x}"
                    );
                    if got == libc::SECCOMP_RET_ALLOW
                        && call_arch == audit_arch()
                        && !by_arguments.contains(&nr)
                    {
                        most_steps_allowed = most_steps_allowed.max(steps);
                    }
                    compared += 1;
                }
            }
        }
        // What makes installing it cheap: a call allowed whatever its arguments answers in a
        // few instructions.
        assert!(
            most_steps_allowed <= 24,
            "an allowed call ran {most_steps_allowed} instructions"
        );
        eprintln!(
            "{compared} calls answered alike; {} instructions, an allowed call runs at most \
             {most_steps_allowed}",
            program.len()
        );
    }

    // ---- parent side -------------------------------------------------------------------

    /// Runs the test `test` of this module in a child process with `CHILD_ENV=case`.
    fn run_child(test: &str, case: &str, env: &[(&str, OsString)]) -> Output {
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let name = format!("{module}::{test}");
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, case)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn the child test process");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(output) => output,
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let output = rx.recv().expect("the waiting thread answers");
                let output = output.expect("wait for the child");
                panic!(
                    "child `{case}` timed out after {CHILD_TIMEOUT:?}; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        };
        let output = output.expect("wait for the child");
        eprintln!(
            "---- child `{case}`: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Asserts that the child succeeded and printed its success marker.
    fn assert_child_ok(case: &str, output: &Output) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "child `{case}` failed ({}):\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains(&format!("CHILD OK {case}")),
            "child `{case}` did not report success:\n{stderr}"
        );
    }

    // ---- child side --------------------------------------------------------------------

    /// The case this process runs, if it is a child.
    fn child_case() -> Option<String> {
        std::env::var(CHILD_ENV).ok()
    }

    /// Runs a child case and exits: 0 and "CHILD OK" if every check passed, 1 with the
    /// failures on stderr otherwise.
    fn child_main(case: &str, body: fn(&mut Checks)) -> ! {
        let mut checks = Checks::default();
        body(&mut checks);
        if checks.failures.is_empty() {
            eprintln!("CHILD OK {case} ({} checks)", checks.passed);
            std::process::exit(0);
        }
        for failure in &checks.failures {
            eprintln!("CHECK FAILED: {failure}");
        }
        eprintln!(
            "CHILD FAILED {case}: {} of {} checks failed",
            checks.failures.len(),
            checks.failures.len() + checks.passed
        );
        std::process::exit(1);
    }

    /// Collects the results of a child's checks (all run, then all reported).
    #[derive(Debug, Default)]
    struct Checks {
        passed: usize,
        failures: Vec<String>,
    }

    impl Checks {
        fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
            if ok {
                self.passed += 1;
                eprintln!("ok: {what}");
            } else {
                self.failures.push(format!("{what}: {detail}"));
            }
        }

        /// `result` must be the error `expected`.
        fn fails_with<T: std::fmt::Debug>(
            &mut self,
            what: &str,
            result: Result<T, Errno>,
            expected: Errno,
        ) {
            let ok = matches!(result, Err(e) if e == expected);
            self.check(
                what,
                ok,
                format_args!("expected {expected:?}, got {result:?}"),
            );
        }

        /// `result` must be a success.
        fn succeeds<T, E: std::fmt::Debug>(
            &mut self,
            what: &str,
            result: Result<T, E>,
        ) -> Option<T> {
            match result {
                Ok(value) => {
                    self.check(what, true, "");
                    Some(value)
                }
                Err(error) => {
                    self.check(what, false, format_args!("{error:?}"));
                    None
                }
            }
        }
    }

    /// A raw system call with integer arguments.
    ///
    /// # Safety
    ///
    /// The arguments must be valid for `nr`: callers pass integers, null pointers (which the
    /// kernel checks) or pointers to live memory of the size the call expects.
    unsafe fn raw(nr: libc::c_long, args: [libc::c_long; 5]) -> Result<libc::c_long, Errno> {
        // SAFETY: forwarded to this function's contract.
        let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
        if ret == -1 {
            Err(Errno::last())
        } else {
            Ok(ret)
        }
    }

    /// `clone(flags)` with no stack, so fork-like if the kernel accepted it: a child that
    /// somehow starts exits at once, and the parent reaps it.
    fn raw_clone(flags: libc::c_long) -> Result<libc::c_long, Errno> {
        // SAFETY: no pointer arguments (null stack: the child, if any, runs on a copy of this
        // stack, like fork). A child runs only the async-signal-safe `_exit`.
        let ret = unsafe { raw(libc::SYS_clone, [flags, 0, 0, 0, 0]) };
        match ret {
            Ok(0) => {
                // SAFETY: `_exit` is async-signal-safe, the only kind of call allowed in the
                // child of a multithreaded process.
                unsafe { libc::_exit(0) }
            }
            Ok(pid) => {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
                Ok(pid)
            }
            Err(e) => Err(e),
        }
    }

    /// A field of this thread's `/proc/thread-self/status` (seccomp state is per thread).
    fn status_field(field: &str) -> Option<String> {
        let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
        status.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == field).then(|| value.trim().to_owned())
        })
    }

    /// The kernel's Landlock ABI, probed directly (not through the landlock crate).
    fn probe_landlock_abi() -> Result<libc::c_long, Errno> {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
        // SAFETY: a null attribute pointer with size 0 is the documented version query.
        unsafe {
            raw(
                libc::SYS_landlock_create_ruleset,
                [0, 0, LANDLOCK_CREATE_RULESET_VERSION, 0, 0],
            )
        }
    }

    /// What `restrict_filesystem` should report, given the kernel's ABI.
    fn expected_landlock_status() -> LandlockStatus {
        match probe_landlock_abi() {
            Err(_) => LandlockStatus::Unavailable,
            Ok(abi) if abi >= LANDLOCK_ABI as libc::c_long => LandlockStatus::Enforced,
            Ok(_) => LandlockStatus::Partial,
        }
    }

    fn describe_landlock() -> String {
        match probe_landlock_abi() {
            Ok(abi) => format!("Landlock available, kernel ABI {abi}"),
            Err(Errno::EOPNOTSUPP) => {
                "Landlock NOT available: built into this kernel but not enabled at boot".into()
            }
            Err(e) => format!("Landlock NOT available in this kernel ({e})"),
        }
    }

    /// Raw probes of denied calls: what, syscall number, arguments (integers and null
    /// pointers only), and the filter's answer. Arguments are chosen so that, without the
    /// filter, each call fails harmlessly with another error or succeeds harmlessly (as root:
    /// see [`check_probes_unfiltered`] for those that differ for any user).
    fn denied_probes() -> Vec<(&'static str, libc::c_long, [libc::c_long; 5], Errno)> {
        use libc::c_long;
        let pid = c_long::from(std::process::id() as i32);
        let (eperm, enosys) = (Errno::EPERM, Errno::ENOSYS);
        let probes = vec![
            ("ptrace(PTRACE_TRACEME)", libc::SYS_ptrace, [0; 5], eperm),
            (
                "process_vm_readv(self, no iovecs)",
                libc::SYS_process_vm_readv,
                [pid, 0, 0, 0, 0],
                eperm,
            ),
            // What a collective's PUSH writes with.
            (
                "process_vm_writev(self, no iovecs)",
                libc::SYS_process_vm_writev,
                [pid, 0, 0, 0, 0],
                eperm,
            ),
            (
                "kcmp(self, self, KCMP_FILE, 0, 0)",
                libc::SYS_kcmp,
                [pid, pid, 0, 0, 0],
                eperm,
            ),
            (
                "pidfd_getfd(-1, 0, 0)",
                libc::SYS_pidfd_getfd,
                [-1, 0, 0, 0, 0],
                eperm,
            ),
            (
                "fsopen(NULL, bad flags)",
                libc::SYS_fsopen,
                [0, 0x7fff_0000, 0, 0, 0],
                eperm,
            ),
            ("setns(-1, 0)", libc::SYS_setns, [-1, 0, 0, 0, 0], eperm),
            (
                "keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)",
                libc::SYS_keyctl,
                [0, -3, 0, 0, 0],
                eperm,
            ),
            ("add_key(NULL...)", libc::SYS_add_key, [0; 5], eperm),
            ("bpf(BPF_MAP_CREATE, NULL, 0)", libc::SYS_bpf, [0; 5], eperm),
            (
                "perf_event_open(NULL...)",
                libc::SYS_perf_event_open,
                [0, 0, -1, -1, 0],
                eperm,
            ),
            (
                "io_uring_setup(1, NULL)",
                libc::SYS_io_uring_setup,
                [1, 0, 0, 0, 0],
                eperm,
            ),
            ("userfaultfd(0)", libc::SYS_userfaultfd, [0; 5], eperm),
            (
                "open_by_handle_at(-1, NULL, 0)",
                libc::SYS_open_by_handle_at,
                [-1, 0, 0, 0, 0],
                eperm,
            ),
            (
                "syslog(SYSLOG_ACTION_SIZE_BUFFER)",
                libc::SYS_syslog,
                [10, 0, 0, 0, 0],
                eperm,
            ),
            (
                "sethostname(NULL, -1)",
                libc::SYS_sethostname,
                [0, -1, 0, 0, 0],
                eperm,
            ),
            (
                "clock_settime(-1, NULL)",
                libc::SYS_clock_settime,
                [-1, 0, 0, 0, 0],
                eperm,
            ),
            ("reboot(bad magic)", libc::SYS_reboot, [0; 5], eperm),
            (
                "init_module(NULL, 0, NULL)",
                libc::SYS_init_module,
                [0; 5],
                eperm,
            ),
            (
                "ioctl(-1, TIOCSTI)",
                libc::SYS_ioctl,
                [-1, libc::TIOCSTI as c_long, 0, 0, 0],
                eperm,
            ),
            (
                "ioctl(-1, FIONREAD) (allowed: EBADF)",
                libc::SYS_ioctl,
                [-1, libc::FIONREAD as c_long, 0, 0, 0],
                Errno::EBADF,
            ),
            (
                "personality(ADDR_NO_RANDOMIZE)",
                libc::SYS_personality,
                [c_long::from(libc::ADDR_NO_RANDOMIZE), 0, 0, 0, 0],
                eperm,
            ),
            ("clone3(NULL, 0)", libc::SYS_clone3, [0; 5], enosys),
        ];
        #[cfg(target_arch = "x86_64")]
        let probes = {
            let mut probes = probes;
            probes.extend([
                ("iopl(0)", libc::SYS_iopl, [0; 5], eperm),
                (
                    "x32 getpid",
                    c_long::from(X32_SYSCALL_BIT as i32) | libc::SYS_getpid,
                    [0; 5],
                    enosys,
                ),
            ]);
            probes
        };
        probes
    }

    /// Checks that the denied calls fail as they should (run after `install_seccomp`).
    fn check_denials(c: &mut Checks) {
        let eperm = Errno::EPERM;
        for (what, nr, args, expected) in denied_probes() {
            // SAFETY: the probes pass integers and null pointers only.
            c.fails_with(what, unsafe { raw(nr, args) }, expected);
        }
        for (what, persona) in [
            ("personality(0xffffffff) (query)", 0xffff_ffff),
            ("personality(PER_LINUX)", 0),
        ] {
            // SAFETY: integer argument.
            c.succeeds(what, unsafe {
                raw(libc::SYS_personality, [persona, 0, 0, 0, 0])
            });
        }
        c.fails_with(
            "mount(tmpfs on a missing path)",
            nix::mount::mount(
                Some("none"),
                "/nonexistent/rfx-syscalls-test",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
            eperm,
        );
        c.fails_with(
            "umount2(a missing path)",
            nix::mount::umount2(
                "/nonexistent/rfx-syscalls-test",
                nix::mount::MntFlags::empty(),
            ),
            eperm,
        );
        c.fails_with(
            "chroot(a missing path)",
            nix::unistd::chroot("/nonexistent/rfx-syscalls-test"),
            eperm,
        );
        c.fails_with(
            "unshare(CLONE_NEWUSER)",
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER),
            eperm,
        );
        c.fails_with(
            "unshare(CLONE_NEWNS)",
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS),
            eperm,
        );
        c.fails_with(
            "clone(CLONE_NEWPID | SIGCHLD)",
            raw_clone(libc::c_long::from(libc::CLONE_NEWPID | libc::SIGCHLD)),
            eperm,
        );
        // CLONE_THREAD without CLONE_SIGHAND is EINVAL for the kernel, which checks it before
        // anything else: EPERM can only come from the filter, for each namespace flag.
        for &flag in CLONE_NAMESPACE_FLAGS {
            c.fails_with(
                &format!("clone({flag:#x} | CLONE_THREAD)"),
                raw_clone(flag as libc::c_long | libc::c_long::from(libc::CLONE_THREAD)),
                eperm,
            );
        }
    }

    /// The control of [`check_denials`]: without the filter, the same probes give other
    /// answers than the filter's (as any user, not only root), so the denial checks cannot
    /// pass by accident.
    fn check_probes_unfiltered(c: &mut Checks) {
        let pid = libc::c_long::from(std::process::id() as i32);
        // SAFETY: every `raw` call below passes integers and null pointers only; the calls
        // that succeed change nothing but this (child) process's personality.
        unsafe {
            c.fails_with(
                "setns(-1, 0): EBADF",
                raw(libc::SYS_setns, [-1, 0, 0, 0, 0]),
                Errno::EBADF,
            );
            c.fails_with(
                "pidfd_getfd(-1, 0, 0): EBADF",
                raw(libc::SYS_pidfd_getfd, [-1, 0, 0, 0, 0]),
                Errno::EBADF,
            );
            c.fails_with(
                "ioctl(-1, TIOCSTI): EBADF",
                raw(
                    libc::SYS_ioctl,
                    [-1, libc::TIOCSTI as libc::c_long, 0, 0, 0],
                ),
                Errno::EBADF,
            );
            c.fails_with(
                "clone3(NULL, 0): EINVAL",
                raw(libc::SYS_clone3, [0, 0, 0, 0, 0]),
                Errno::EINVAL,
            );
            let readv = raw(libc::SYS_process_vm_readv, [pid, 0, 0, 0, 0]);
            c.check(
                "process_vm_readv(self, no iovecs): not EPERM",
                readv != Err(Errno::EPERM),
                format_args!("{readv:?}"),
            );
            let writev = raw(libc::SYS_process_vm_writev, [pid, 0, 0, 0, 0]);
            c.check(
                "process_vm_writev(self, no iovecs): not EPERM",
                writev != Err(Errno::EPERM),
                format_args!("{writev:?}"),
            );
            c.succeeds(
                "kcmp(self, self, KCMP_FILE, 0, 0)",
                raw(libc::SYS_kcmp, [pid, pid, 0, 0, 0]),
            );
            let keyctl = raw(libc::SYS_keyctl, [0, -3, 0, 0, 0]);
            c.check(
                "keyctl(KEYCTL_GET_KEYRING_ID): not EPERM",
                keyctl != Err(Errno::EPERM),
                format_args!("{keyctl:?}"),
            );
            c.succeeds(
                "personality(ADDR_NO_RANDOMIZE)",
                raw(
                    libc::SYS_personality,
                    [libc::c_long::from(libc::ADDR_NO_RANDOMIZE), 0, 0, 0, 0],
                ),
            );
        }
        c.fails_with(
            "mount(tmpfs on a missing path): ENOENT",
            nix::mount::mount(
                Some("none"),
                "/nonexistent/rfx-syscalls-test",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
            Errno::ENOENT,
        );
        c.fails_with(
            "chroot(a missing path): ENOENT",
            nix::unistd::chroot("/nonexistent/rfx-syscalls-test"),
            Errno::ENOENT,
        );
        // The test harness's main thread makes this process multithreaded.
        c.fails_with(
            "unshare(CLONE_NEWUSER) in a multithreaded process: EINVAL",
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER),
            Errno::EINVAL,
        );
        for &flag in CLONE_NAMESPACE_FLAGS {
            c.fails_with(
                &format!("clone({flag:#x} | CLONE_THREAD): EINVAL"),
                raw_clone(flag as libc::c_long | libc::c_long::from(libc::CLONE_THREAD)),
                Errno::EINVAL,
            );
        }
    }

    /// Checks the status of this thread after `install_seccomp`, given the number of filters
    /// it had before.
    fn check_seccomp_status(c: &mut Checks, filters_before: usize) {
        let nnp = status_field("NoNewPrivs");
        c.check(
            "NoNewPrivs: 1",
            nnp.as_deref() == Some("1"),
            format_args!("{nnp:?}"),
        );
        let mode = status_field("Seccomp");
        c.check(
            "Seccomp: 2 (filter)",
            mode.as_deref() == Some("2"),
            format_args!("{mode:?}"),
        );
        if let Some(count) = status_field("Seccomp_filters") {
            let expected = filters_before + build_filters().map_or(0, |f| f.len());
            c.check(
                "Seccomp_filters",
                count == expected.to_string(),
                format_args!("expected {expected}, got {count}"),
            );
        }
    }

    fn seccomp_filters_now() -> usize {
        status_field("Seccomp_filters")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Normal work of an executor, in a confined process.
    fn check_normal_work(c: &mut Checks, scratch: &Path) {
        // Threads (clone3 gets ENOSYS, glibc falls back to clone).
        let thread = std::thread::Builder::new()
            .name("confined".into())
            .spawn(|| std::thread::current().name().map(str::to_owned))
            .map(|handle| handle.join());
        c.check(
            "spawn and join a thread",
            matches!(&thread, Ok(Ok(Some(name))) if name == "confined"),
            format_args!("{thread:?}"),
        );

        // fork + wait.
        // SAFETY: the child calls only async-signal-safe functions (`_exit`).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // SAFETY: async-signal-safe.
                unsafe { libc::_exit(7) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let status = nix::sys::wait::waitpid(child, None);
                c.check(
                    "fork, then wait for the child's exit code",
                    matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 7))),
                    format_args!("{status:?}"),
                );
            }
            Err(e) => c.check("fork", false, e),
        }

        // posix_spawn + exec (std::process::Command).
        if Path::new("/bin/true").exists() {
            let status = Command::new("/bin/true").status();
            c.check(
                "spawn /bin/true",
                matches!(&status, Ok(s) if s.success()),
                format_args!("{status:?}"),
            );
        } else {
            eprintln!("note: no /bin/true, spawn not checked");
        }

        // memfd + write + seal + mmap + open through /proc/self/fd.
        check_memfd(c);

        // dlopen of a shipped library from a sealed memfd, as the executor does.
        let libm = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/aarch64-linux-gnu/libm.so.6",
            "/usr/lib/aarch64-linux-gnu/libm.so.6",
            "/lib64/libm.so.6",
            "/usr/lib64/libm.so.6",
        ]
        .iter()
        .find_map(|p| std::fs::read(p).ok());
        match libm {
            Some(bytes) => {
                let lib = crate::Library::load_bytes("libm-copy", &bytes);
                c.check(
                    "load a library from a sealed memfd (Library::load_bytes)",
                    lib.is_ok(),
                    format_args!("{:?}", lib.err()),
                );
            }
            None => eprintln!("note: no libm.so.6 found, dlopen from memfd not checked"),
        }

        // TCP on loopback, std.
        let tcp = (|| -> std::io::Result<Vec<u8>> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
            let (mut server, _) = listener.accept()?;
            client.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf)?;
            // ioctl on a socket must not be caught by the TIOCSTI rule.
            let mut pending: libc::c_int = -1;
            // SAFETY: FIONREAD writes one int through the pointer, which points to `pending`.
            let ret = unsafe { libc::ioctl(server.as_raw_fd(), libc::FIONREAD, &mut pending) };
            if ret != 0 || pending != 0 {
                return Err(std::io::Error::other(format!(
                    "ioctl(FIONREAD) = {ret}, pending = {pending}"
                )));
            }
            Ok(buf.to_vec())
        })();
        c.check(
            "TCP listener on 127.0.0.1:0, connect, accept, exchange, ioctl(FIONREAD)",
            matches!(&tcp, Ok(b) if b == b"ping"),
            format_args!("{tcp:?}"),
        );

        // Abstract Unix socket.
        let unix = (|| -> std::io::Result<Vec<u8>> {
            use std::os::linux::net::SocketAddrExt;
            use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
            let name = format!("rfx-syscalls-test-{}", std::process::id());
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            let listener = UnixListener::bind_addr(&addr)?;
            let mut client = UnixStream::connect_addr(&addr)?;
            let (mut server, _) = listener.accept()?;
            client.write_all(b"pong")?;
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf)?;
            Ok(buf.to_vec())
        })();
        c.check(
            "abstract Unix socket: bind, connect, exchange",
            matches!(&unix, Ok(b) if b == b"pong"),
            format_args!("{unix:?}"),
        );

        // tokio: epoll, eventfd, futexes, worker threads, TCP.
        let tokio_result = (|| -> std::io::Result<Vec<u8>> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let server = tokio::spawn(async move {
                    let (mut s, _) = listener.accept().await?;
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await?;
                    s.write_all(&buf).await?;
                    std::io::Result::Ok(())
                });
                let mut client = tokio::net::TcpStream::connect(addr).await?;
                client.write_all(b"hello").await?;
                let mut buf = [0u8; 5];
                client.read_exact(&mut buf).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                server.await.map_err(std::io::Error::other)??;
                Ok(buf.to_vec())
            })
        })();
        c.check(
            "tokio multi-thread runtime: TCP echo and a timer",
            matches!(&tokio_result, Ok(b) if b == b"hello"),
            format_args!("{tokio_result:?}"),
        );

        // sched_setaffinity to the current mask.
        let pid = nix::unistd::Pid::from_raw(0);
        let affinity = nix::sched::sched_getaffinity(pid)
            .and_then(|set| nix::sched::sched_setaffinity(pid, &set));
        c.succeeds("sched_getaffinity, sched_setaffinity", affinity);

        // /proc/self and /sys.
        c.succeeds(
            "read /proc/self/status",
            std::fs::read_to_string("/proc/self/status"),
        );
        if Path::new("/sys/devices/system/cpu/online").exists() {
            c.succeeds(
                "read /sys/devices/system/cpu/online",
                std::fs::read_to_string("/sys/devices/system/cpu/online"),
            );
        }

        // Files in the writable scratch directory.
        let file = scratch.join("work.txt");
        let written = std::fs::write(&file, b"data").and_then(|()| std::fs::read(&file));
        c.check(
            "write and read a file in the writable directory",
            matches!(&written, Ok(b) if b == b"data"),
            format_args!("{written:?}"),
        );
    }

    /// Whether `result` is the error Landlock gives (EACCES; EPERM for some operations).
    fn landlock_denied<T>(result: &std::io::Result<T>) -> bool {
        matches!(result, Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)))
    }

    /// memfd_create, write, seal, mmap, and opening the memfd again through /proc/self/fd.
    fn check_memfd(c: &mut Checks) {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        let result = (|| -> Result<(), String> {
            let name = CString::new("rfx-syscalls-test").map_err(|e| e.to_string())?;
            let fd = memfd_create(
                &name,
                MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
            )
            .map_err(|e| format!("memfd_create: {e}"))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(b"sealed bytes")
                .map_err(|e| format!("write: {e}"))?;
            let seals = SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL;
            fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
                .map_err(|e| format!("F_ADD_SEALS: {e}"))?;
            // SAFETY: a fresh private read-only mapping of 12 bytes of our own memfd, read
            // below and unmapped before the file is closed.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    12,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return Err(format!("mmap: {}", Errno::last()));
            }
            // SAFETY: `map` is a live mapping of 12 readable bytes.
            let mapped = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), 12) }.to_vec();
            // SAFETY: `map` was returned by mmap with this length and is no longer used.
            unsafe { libc::munmap(map, 12) };
            if mapped != b"sealed bytes" {
                return Err(format!("mapped {mapped:?}"));
            }
            let again = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(|e| format!("open /proc/self/fd/N: {e}"))?;
            if again != b"sealed bytes" {
                return Err(format!("read back {again:?}"));
            }
            Ok(())
        })();
        c.check(
            "memfd_create, write, seal, mmap, reopen through /proc/self/fd",
            result.is_ok(),
            format_args!("{result:?}"),
        );
    }

    // ---- the tests ---------------------------------------------------------------------

    #[test]
    fn filter_table_is_consistent() {
        let names = denied_syscalls();
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
        let numbers: Vec<_> = all_groups()
            .flat_map(|g| g.calls.iter().map(|c| c.nr))
            .collect();
        let unique_numbers: HashSet<_> = numbers.iter().collect();
        assert_eq!(unique_numbers.len(), numbers.len(), "duplicate numbers");
        for required in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "unshare",
            "setns",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "open_by_handle_at",
            "name_to_handle_at",
            "userfaultfd",
            "lookup_dcookie",
            "syslog",
            "vhangup",
            "personality",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kcmp",
            "pidfd_getfd",
            "fanotify_init",
            "setdomainname",
            "sethostname",
            "nfsservctl",
            "clone",
            "clone3",
        ] {
            assert!(names.contains(&required), "{required} is not denied");
        }
        #[cfg(target_arch = "x86_64")]
        for required in ["iopl", "ioperm"] {
            assert!(names.contains(&required), "{required} is not denied");
        }
        for group in all_groups() {
            assert!(!group.reason.is_empty() && !group.calls.is_empty());
        }
        let filters = build_filters().expect("the filters compile");
        for (name, program) in &filters {
            assert!(
                !program.is_empty() && program.len() < 4096,
                "filter {name}: {} instructions",
                program.len()
            );
        }
        eprintln!(
            "{} denied syscalls, {} filters ({})",
            names.len(),
            filters.len(),
            filters
                .iter()
                .map(|(n, p)| format!("{n}: {} instructions", p.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    #[test]
    fn seccomp_denies_what_no_function_needs() {
        const CASE: &str = "seccomp-denies";
        if child_case().as_deref() == Some(CASE) {
            child_main(CASE, |c| {
                let before = seccomp_filters_now();
                c.succeeds("set_no_new_privs", set_no_new_privs());
                c.succeeds("install_seccomp", install_seccomp());
                check_seccomp_status(c, before);
                check_denials(c);
                // Inherited by threads created afterwards...
                let in_thread = std::thread::spawn(|| {
                    let mut c = Checks::default();
                    check_denials(&mut c);
                    c
                })
                .join();
                match in_thread {
                    Ok(t) => {
                        c.check(
                            "denials in a thread spawned after install",
                            t.failures.is_empty(),
                            format_args!("{:?}", t.failures),
                        );
                    }
                    Err(_) => c.check("thread", false, "panicked"),
                }
                // ...and by forked children.
                // SAFETY: the child makes only async-signal-safe calls (raw syscalls, `_exit`).
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        // SAFETY: integer arguments; async-signal-safe.
                        let unshare = unsafe {
                            raw(
                                libc::SYS_unshare,
                                [libc::c_long::from(libc::CLONE_NEWUSER), 0, 0, 0, 0],
                            )
                        };
                        // SAFETY: null pointer, checked by the kernel; async-signal-safe.
                        let clone3 = unsafe { raw(libc::SYS_clone3, [0, 0, 0, 0, 0]) };
                        let ok = unshare == Err(Errno::EPERM) && clone3 == Err(Errno::ENOSYS);
                        // SAFETY: async-signal-safe.
                        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        let status = nix::sys::wait::waitpid(child, None);
                        c.check(
                            "denials in a forked child",
                            matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))),
                            format_args!("{status:?}"),
                        );
                    }
                    Err(e) => c.check("fork", false, e),
                }
            });
        }
        let output = run_child("seccomp_denies_what_no_function_needs", CASE, &[]);
        assert_child_ok(CASE, &output);
    }

    #[test]
    fn denial_probes_answer_otherwise_without_the_filter() {
        const CASE: &str = "unfiltered";
        if child_case().as_deref() == Some(CASE) {
            child_main(CASE, |c| {
                let mode = status_field("Seccomp");
                c.check(
                    "no seccomp filter yet",
                    mode.as_deref() == Some("0"),
                    format_args!("{mode:?}"),
                );
                check_probes_unfiltered(c);
            });
        }
        let output = run_child(
            "denial_probes_answer_otherwise_without_the_filter",
            CASE,
            &[],
        );
        assert_child_ok(CASE, &output);
    }

    #[test]
    fn confined_executor_keeps_normal_work() {
        const CASE: &str = "normal-work";
        if child_case().as_deref() == Some(CASE) {
            child_main(CASE, |c| {
                let Some(scratch) = std::env::var_os(ALLOWED_ENV).map(PathBuf::from) else {
                    c.check("scratch directory given", false, ALLOWED_ENV);
                    return;
                };
                let before = seccomp_filters_now();
                // The executor's order: no_new_privs, Landlock, seccomp.
                c.succeeds("set_no_new_privs", set_no_new_privs());
                let rules = FsRules {
                    read: vec!["/".into()],
                    write: vec![scratch.clone()],
                };
                let status = restrict_filesystem(&rules);
                eprintln!("landlock: {status:?}; {}", describe_landlock());
                c.check(
                    "restrict_filesystem",
                    matches!(&status, Ok(s) if *s == expected_landlock_status()),
                    format_args!("{status:?}, expected {:?}", expected_landlock_status()),
                );
                c.succeeds("install_seccomp", install_seccomp());
                check_seccomp_status(c, before);
                check_normal_work(c, &scratch);
            });
        }
        let scratch = tempfile::tempdir().expect("temp dir");
        let output = run_child(
            "confined_executor_keeps_normal_work",
            CASE,
            &[(ALLOWED_ENV, scratch.path().into())],
        );
        assert_child_ok(CASE, &output);
    }

    #[test]
    fn landlock_confines_writes() {
        const CASE: &str = "landlock";
        if child_case().as_deref() == Some(CASE) {
            child_main(CASE, |c| {
                let (Some(allowed), Some(other)) = (
                    std::env::var_os(ALLOWED_ENV).map(PathBuf::from),
                    std::env::var_os(OTHER_ENV).map(PathBuf::from),
                ) else {
                    c.check("directories given", false, "missing env");
                    return;
                };
                let expected = expected_landlock_status();
                let rules = FsRules {
                    read: vec!["/".into()],
                    // A missing path is skipped, not an error.
                    // A file can be a rule too (with the rights that make sense for a file).
                    write: vec![
                        allowed.clone(),
                        "/nonexistent/rfx-landlock-test".into(),
                        other.join("writable.txt"),
                    ],
                };
                let status = restrict_filesystem(&rules);
                c.check(
                    "restrict_filesystem status matches the kernel",
                    matches!(&status, Ok(s) if *s == expected),
                    format_args!("{status:?}, expected {expected:?}"),
                );
                eprintln!("LANDLOCK {status:?}: {}", describe_landlock());
                if expected == LandlockStatus::Unavailable {
                    eprintln!(
                        "NOTE: Landlock is not in this kernel: restrict_filesystem reported \
                         Unavailable, and the write checks are skipped"
                    );
                    return;
                }
                let written = std::fs::write(allowed.join("new.txt"), b"ok")
                    .and_then(|()| std::fs::read(allowed.join("new.txt")));
                c.check(
                    "create, write and read a file beneath a write path",
                    matches!(&written, Ok(b) if b == b"ok"),
                    format_args!("{written:?}"),
                );
                let sub = allowed.join("sub");
                c.succeeds(
                    "mkdir, rename, remove beneath a write path",
                    std::fs::create_dir(&sub)
                        .and_then(|()| std::fs::write(sub.join("a"), b"a"))
                        .and_then(|()| std::fs::rename(sub.join("a"), allowed.join("b")))
                        .and_then(|()| std::fs::remove_file(allowed.join("b")))
                        .and_then(|()| std::fs::remove_dir(&sub)),
                );
                let create = std::fs::write(other.join("new.txt"), b"no");
                c.check(
                    "create a file outside the write paths: EACCES",
                    landlock_denied(&create),
                    format_args!("{create:?}"),
                );
                let overwrite = std::fs::OpenOptions::new()
                    .write(true)
                    .open(other.join("existing.txt"))
                    .map(drop);
                c.check(
                    "open an existing file for writing outside the write paths: EACCES",
                    landlock_denied(&overwrite),
                    format_args!("{overwrite:?}"),
                );
                let mkdir = std::fs::create_dir(other.join("sub"));
                c.check(
                    "mkdir outside the write paths: EACCES",
                    landlock_denied(&mkdir),
                    format_args!("{mkdir:?}"),
                );
                let read = std::fs::read(other.join("existing.txt"));
                c.check(
                    "read a file beneath a read path",
                    matches!(&read, Ok(b) if b == b"before"),
                    format_args!("{read:?}"),
                );
                let file_rule = std::fs::OpenOptions::new()
                    .append(true)
                    .open(other.join("writable.txt"))
                    .and_then(|mut f| f.write_all(b" and after"));
                c.succeeds("append to a file that is itself a write rule", file_rule);
                // Shipped libraries are opened as /proc/self/fd/N of a memfd made after
                // confinement: Landlock must not get in the way.
                check_memfd(c);
                let nnp = status_field("NoNewPrivs");
                c.check(
                    "NoNewPrivs: 1 after restrict_filesystem",
                    nnp.as_deref() == Some("1"),
                    format_args!("{nnp:?}"),
                );
            });
        }
        let allowed = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("temp dir");
        std::fs::write(other.path().join("existing.txt"), b"before").expect("write");
        std::fs::write(other.path().join("writable.txt"), b"before").expect("write");
        let output = run_child(
            "landlock_confines_writes",
            CASE,
            &[
                (ALLOWED_ENV, allowed.path().into()),
                (OTHER_ENV, other.path().into()),
            ],
        );
        assert_child_ok(CASE, &output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("LANDLOCK "))
            .unwrap_or("no LANDLOCK line");
        eprintln!("{line}");
        assert!(
            !other.path().join("new.txt").exists(),
            "the child created a file outside its write paths"
        );
    }
}
