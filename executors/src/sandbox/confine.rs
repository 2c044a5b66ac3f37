//! The executor's side of the sandbox: it confines itself, once, before it
//! opens the fabric or loads any tenant code.
//!
//! Order matters, each step needing the privilege the next one drops:
//! 1. join the lease's cgroup (its pid into every `cgroup.procs` listed), so
//!    that no moment passes outside the limits;
//! 2. a user namespace when the manager is not root;
//! 3. new mount, pid and ipc namespaces, then a fork: the child is pid 1 of
//!    the new pid namespace and goes on as the executor; the parent stays
//!    outside as a relay that forwards SIGTERM and exits as the child did
//!    (a kill by the OOM killer reads as `signal 9`);
//! 4. a new root: a small tmpfs with read-only binds of the host's system
//!    directories, a fresh `/proc`, a read-only `/sys`, a `/dev` of the
//!    listed nodes, private size-limited `/tmp` and `/dev/shm`;
//!    `pivot_root` into it and the host's root detached;
//! 5. `no_new_privs`, Landlock (write only beneath `/tmp` and `/dev/shm`),
//!    the seccomp filter (none of which stops the next step);
//! 6. the lease's uid/gid, no supplementary groups, no capabilities.
//!
//! [`enter`] does steps 1 to 5 and [`Entered::become_user`] step 6, so that
//! a standby executor can do the first part before its lease exists (see
//! [`crate::sandbox::handoff::Claim`]); [`confine`] does both.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, ForkResult, Gid, Pid, Uid};

use super::handoff::Confinement;
use super::syscalls::{self, FsRules, LandlockStatus};

/// Why an executor could not confine itself; it then exits without
/// serving anyone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// A step failed.
    #[error("sandbox: {step}")]
    Step {
        /// The step, with its path where it has one.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process already runs threads: a fork would copy a broken state.
    #[error("sandbox: confine must run before any thread starts ({0} threads)")]
    Threaded(usize),
    /// The syscall filter or Landlock could not be applied.
    #[error("sandbox: {0}")]
    Syscalls(#[from] syscalls::SyscallError),
}

fn step<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> ConfineError {
    let step = what.into();
    move |e| ConfineError::Step {
        step,
        source: e.into(),
    }
}

/// What confinement gave, for the executor's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confined {
    /// Whether Landlock rules are in force.
    pub landlock: LandlockStatus,
}

/// Confines the calling process as `c` says: [`enter`], then
/// [`Entered::become_user`] with `c.uid` and `c.gid`. Returns in the
/// confined child only; the relay parent exits with the child's status and
/// never returns. Must be called while the process has a single thread.
pub fn confine(c: &Confinement) -> Result<Confined, ConfineError> {
    enter(c)?.become_user(c.uid, c.gid)
}

/// A process inside its sandbox that still has the root identity it
/// started with: what [`enter`] returns.
#[derive(Debug)]
#[must_use = "the process is still root: call become_user"]
pub struct Entered {
    landlock: LandlockStatus,
    user_namespace: bool,
}

/// Steps 1 to 5 of the [module docs](self): every confinement but the
/// identity. Returns in the confined child only (as [`confine`]). Nothing of
/// a tenant may run before [`Entered::become_user`].
pub fn enter(c: &Confinement) -> Result<Entered, ConfineError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(ConfineError::Threaded(threads));
    }
    let me = getpid();
    for procs in &c.cgroup_procs {
        fs::write(procs, me.to_string())
            .map_err(step(format!("join cgroup {}", procs.display())))?;
    }
    if c.user_namespace {
        enter_user_namespace(c)?;
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC)
        .map_err(step("unshare mount, pid and ipc namespaces"))?;
    // The relay holds the write end: the child sees it hang up if the relay
    // died before the child armed its death signal.
    let (alive_r, alive_w) = nix::unistd::pipe().map_err(step("pipe"))?;
    // SAFETY: the process has exactly one thread (checked above), so the
    // child is a full copy with no lock held by a vanished thread.
    match unsafe { nix::unistd::fork() }.map_err(step("fork into the pid namespace"))? {
        ForkResult::Parent { child } => {
            drop(alive_r);
            relay(child, alive_w)
        }
        ForkResult::Child => drop(alive_w),
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(step("PR_SET_PDEATHSIG"))?;
    let mut poll = [PollFd::new(alive_r.as_fd(), PollFlags::POLLIN)];
    if nix::poll::poll(&mut poll, PollTimeout::ZERO).map_err(step("poll the relay"))? > 0 {
        // Hung up: the relay is gone, nobody would forward or report.
        std::process::exit(1);
    }
    drop(alive_r);
    build_root(c)?;
    syscalls::set_no_new_privs()?;
    let mut write: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into()];
    write.extend(c.devices.iter().cloned());
    let landlock = syscalls::restrict_filesystem(&FsRules {
        read: vec!["/".into()],
        write,
    })?;
    match &c.seccomp {
        Some(compiled) => syscalls::install_compiled(compiled)?,
        None => syscalls::install_seccomp()?,
    }
    Ok(Entered {
        landlock,
        user_namespace: c.user_namespace,
    })
}

impl Entered {
    /// Step 6: `uid`/`gid` (inside the user namespace, if there is one),
    /// no supplementary groups, no capability left in any set.
    pub fn become_user(self, uid: u32, gid: u32) -> Result<Confined, ConfineError> {
        drop_identity(uid, gid, self.user_namespace)?;
        Ok(Confined {
            landlock: self.landlock,
        })
    }
}

/// The `Threads:` line of `/proc/self/status` (0 if unreadable).
fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A user namespace in which `c.uid`/`c.gid` are the manager's own ids.
fn enter_user_namespace(c: &Confinement) -> Result<(), ConfineError> {
    let (uid, gid) = (Uid::effective(), Gid::effective());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(step("unshare a user namespace"))?;
    fs::write("/proc/self/setgroups", "deny").map_err(step("deny setgroups"))?;
    fs::write("/proc/self/uid_map", format!("{} {uid} 1", c.uid)).map_err(step("write uid_map"))?;
    fs::write("/proc/self/gid_map", format!("{} {gid} 1", c.gid)).map_err(step("write gid_map"))?;
    Ok(())
}

/// The relay: forwards stop signals to the confined child and exits as it
/// did. Runs outside the pid namespace, holds nothing of the tenant's.
fn relay(child: Pid, _alive: OwnedFd) -> ! {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
        Signal::SIGALRM,
    ] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        // Without blocked signals sigwait cannot work: stop the child.
        let _ = kill(child, Signal::SIGKILL);
    }
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => die_by(sig),
            Ok(_) => {}
            Err(_) => std::process::exit(1),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            // The grace after a stop signal is over: pid 1 of a namespace
            // ignores signals it has no handler for.
            Ok(Signal::SIGALRM) => {
                let _ = kill(child, Signal::SIGKILL);
            }
            Ok(sig) => {
                let _ = kill(child, sig);
                nix::unistd::alarm::set(STOP_GRACE_S);
            }
        }
    }
}

/// How long the confined executor has to stop after a forwarded stop
/// signal before the relay kills it.
const STOP_GRACE_S: u32 = 5;

/// Ends the relay the way its child ended.
fn die_by(sig: Signal) -> ! {
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    // Default action, so that the signal kills; SIGKILL needs nothing.
    let dfl = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigDfl,
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: installs the default disposition, no handler code: nothing
    // can run in signal context.
    let _ = unsafe { nix::sys::signal::sigaction(sig, &dfl) };
    let _ = kill(getpid(), sig);
    std::process::exit(128 + sig as i32)
}

/// The mount namespace's new root, then `pivot_root` into it.
fn build_root(c: &Confinement) -> Result<(), ConfineError> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(step("make mounts private"))?;
    let root = c.staging.as_path();
    let tmpfs = |at: &Path, flags: MsFlags, opts: &str| {
        mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(opts))
            .map_err(step(format!("mount tmpfs at {}", at.display())))
    };
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    tmpfs(root, nosuid_nodev, "size=4m,mode=0755")?;
    for dir in &c.ro_paths {
        bind_read_only(dir, &inside(root, dir))?;
    }
    // /proc of the new pid namespace: only this executor's processes.
    let proc_ = root.join("proc");
    mkdir(&proc_)?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(step("mount /proc"))?;
    // /sys read-only, without its submounts (cgroups stay out of sight). A
    // user namespace may not hide what those submounts cover: with it the
    // bind is recursive (the cgroup files stay the host root's, whom the
    // namespace does not map).
    let sys = root.join("sys");
    mkdir(&sys)?;
    bind(Path::new("/sys"), &sys, c.user_namespace)?;
    remount_read_only(&sys)?;
    // /dev: the listed nodes only.
    let dev = root.join("dev");
    mkdir(&dev)?;
    tmpfs(
        &dev,
        nosuid_nodev | MsFlags::MS_NOEXEC,
        "size=64k,mode=0755",
    )?;
    for node in &c.devices {
        let at = inside(root, node);
        if !node.exists() {
            tracing::debug!(node = %node.display(), "device not on this host");
            continue;
        }
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).map_err(step(format!("mkdir {}", parent.display())))?;
        }
        fs::File::create(&at).map_err(step(format!("create {}", at.display())))?;
        bind(node, &at, false)?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name)).map_err(step(format!("symlink /dev/{name}")))?;
    }
    let private = format!("size={},mode=1777", c.tmp_bytes.max(4096));
    let shm = dev.join("shm");
    mkdir(&shm)?;
    tmpfs(&shm, nosuid_nodev, &private)?;
    let tmp = root.join("tmp");
    mkdir(&tmp)?;
    tmpfs(&tmp, nosuid_nodev, &private)?;
    let old = root.join(".old-root");
    mkdir(&old)?;
    nix::unistd::pivot_root(root, &old).map_err(step("pivot_root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    umount2("/.old-root", MntFlags::MNT_DETACH).map_err(step("detach the host's root"))?;
    fs::remove_dir("/.old-root").map_err(step("rmdir /.old-root"))?;
    mount(
        none,
        "/",
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev,
        none,
    )
    .map_err(step("remount / read-only"))?;
    nix::unistd::chdir("/tmp").map_err(step("chdir /tmp"))?;
    Ok(())
}

/// `path` of the host under `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdir(p: &Path) -> Result<(), ConfineError> {
    fs::create_dir_all(p).map_err(step(format!("mkdir {}", p.display())))
}

fn bind(from: &Path, to: &Path, recursive: bool) -> Result<(), ConfineError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(from), to, None::<&str>, flags, None::<&str>).map_err(step(format!(
        "bind {} at {}",
        from.display(),
        to.display()
    )))
}

/// Makes `at` a read-only bind of `host`: a symlink is recreated, a
/// directory or file bound; a path missing on the host is skipped.
fn bind_read_only(host: &Path, at: &Path) -> Result<(), ConfineError> {
    let Ok(meta) = fs::symlink_metadata(host) else {
        return Ok(());
    };
    if let Some(parent) = at.parent() {
        mkdir(parent)?;
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(host).map_err(step(format!("readlink {}", host.display())))?;
        return symlink(&target, at).map_err(step(format!("symlink {}", at.display())));
    }
    if meta.is_dir() {
        mkdir(at)?;
    } else {
        fs::File::create(at).map_err(step(format!("create {}", at.display())))?;
    }
    bind(host, at, true)?;
    remount_read_only(at)
}

/// Remounts the bind at `at` read-only, keeping the flags the host's mount
/// has (a user namespace may not clear them).
fn remount_read_only(at: &Path) -> Result<(), ConfineError> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    flags |= MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Ok(st) = statvfs(at) {
        let f = st.flags();
        for (has, ms) in [
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(has) {
                flags |= ms;
            }
        }
    }
    mount(None::<&str>, at, None::<&str>, flags, None::<&str>)
        .map_err(step(format!("remount {} read-only", at.display())))
}

/// The lease's uid and gid with no supplementary groups, then no
/// capability left in any set.
fn drop_identity(uid: u32, gid: u32, user_namespace: bool) -> Result<(), ConfineError> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if !user_namespace {
        nix::unistd::setgroups(&[gid]).map_err(step("setgroups"))?;
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(step(format!("setresgid {gid}")))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step(format!("setresuid {uid}")))?;
    drop_capabilities()
}

/// Empties the effective, permitted and inheritable capability sets (in a
/// user namespace, the creator keeps them across a change to its own uid).
fn drop_capabilities() -> Result<(), ConfineError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads one header and two data structs laid out as
    // the kernel's (`repr(C)`, version 3), both alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            std::ptr::addr_of_mut!(header),
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(step("capset (drop capabilities)")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
