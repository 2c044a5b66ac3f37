//! What the executor manager hands an executor at start: the lease token
//! and, in strict mode, how to confine itself. It travels on an inherited
//! file descriptor (a memfd placed at [`HANDOFF_FD`] in the child only),
//! never in the environment or on the command line, which other processes
//! of the host can read (`/proc/PID/environ` of the same uid, `ps`).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use serde::{Deserialize, Serialize};

/// The descriptor number the handoff has in the executor.
pub const HANDOFF_FD: i32 = 3;

/// The descriptor number on which a standby executor waits for its
/// [`Claim`] (the read end of a pipe only its manager writes).
pub const CLAIM_FD: i32 = 4;

/// Largest handoff read (a few KiB in practice).
const MAX_HANDOFF: u64 = 1 << 20;

/// Why the handoff could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The descriptor does not hold a handoff.
    #[error("malformed handoff on descriptor {fd}: {why}")]
    Malformed {
        /// The descriptor.
        fd: i32,
        /// What is wrong.
        why: String,
    },
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> HandoffError {
    move |source| HandoffError::Os { op, source }
}

/// What an executor receives from its manager.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The lease token in hex, as the tenant received it: the fabric
    /// handshake's shared secret.
    pub token: String,
    /// How to confine itself before serving; `None`: sandbox off.
    pub confinement: Option<Confinement>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("confinement", &self.confinement)
            .finish_non_exhaustive()
    }
}

/// How an executor confines itself (see [`confine`](super::confine())).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// The uid to run as (inside a user namespace: the uid inside it).
    pub uid: u32,
    /// The gid to run as.
    pub gid: u32,
    /// Enter a user namespace first, mapping `uid`/`gid` inside to the
    /// manager's own ids (a manager that is not root).
    pub user_namespace: bool,
    /// Files into which the executor writes its pid to join its cgroup
    /// before anything else (empty: no cgroup).
    pub cgroup_procs: Vec<PathBuf>,
    /// Size of the private `/tmp` and of `/dev/shm`, bytes each.
    pub tmp_bytes: u64,
    /// Host directories visible read-only.
    pub ro_paths: Vec<PathBuf>,
    /// Host device nodes visible (read-write, as the node's mode allows).
    pub devices: Vec<PathBuf>,
    /// An empty host directory where the new root is assembled (a mount
    /// point inside the executor's own mount namespace only).
    #[serde(default = "default_staging")]
    pub staging: PathBuf,
    /// The seccomp filters, compiled once by the manager; `None`: compile
    /// them here.
    #[serde(default)]
    pub seccomp: Option<super::syscalls::SeccompPrograms>,
}

fn default_staging() -> PathBuf {
    PathBuf::from(super::STAGING_DIR)
}

impl Handoff {
    /// A close-on-exec memfd holding the handoff, for [`pass_to`].
    pub fn to_memfd(&self) -> Result<OwnedFd, HandoffError> {
        let bytes = serde_json::to_vec(self).map_err(|e| HandoffError::Malformed {
            fd: -1,
            why: e.to_string(),
        })?;
        let fd = memfd_create(c"rfx-handoff", MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(|e| os("memfd_create")(e.into()))?;
        let mut f = File::from(fd);
        f.write_all(&bytes).map_err(os("write the handoff"))?;
        f.rewind().map_err(os("rewind the handoff"))?;
        Ok(OwnedFd::from(f))
    }

    /// Reads the handoff the manager placed at `fd` and closes `fd`, so
    /// that nothing started later (a function's child) inherits it.
    pub fn take(fd: i32) -> Result<Handoff, HandoffError> {
        // Reopened through /proc (a new description, offset 0): no unsafe
        // adoption of a raw descriptor.
        let path = format!("/proc/self/fd/{fd}");
        let read = File::open(&path).and_then(|f| {
            let mut buf = Vec::new();
            f.take(MAX_HANDOFF).read_to_end(&mut buf).map(|_| buf)
        });
        // Closed whatever the read gave.
        let closed = nix::unistd::close(fd);
        let buf = read.map_err(|e| HandoffError::Malformed {
            fd,
            why: format!("cannot read {path}: {e}"),
        })?;
        closed.map_err(|e| os("close the handoff descriptor")(e.into()))?;
        serde_json::from_slice(&buf).map_err(|e| HandoffError::Malformed {
            fd,
            why: e.to_string(),
        })
    }
}

/// What a standby executor receives when a lease takes it: everything of
/// the lease that a fresh executor would get from its handoff, command line
/// and environment. A standby is started ahead of any lease, [`enter`]s its
/// sandbox (cgroup, namespaces, new root, Landlock, seccomp) and waits on
/// [`CLAIM_FD`]; its manager sets the lease's limits on the standby's cgroup,
/// then writes one claim and closes the pipe. Only then does the standby
/// take the lease's uid and serve: a lease's cold start skips the spawn and
/// the confinement.
///
/// [`enter`]: super::confine::enter
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The lease token in hex (as [`Handoff::token`]).
    pub token: String,
    /// The lease's uid.
    pub uid: u32,
    /// The lease's gid.
    pub gid: u32,
    /// The executor's arguments for the lease (as a fresh executor's
    /// command line, without the program).
    pub args: Vec<String>,
    /// The lease's own environment variables (its id, device visibility),
    /// set before any thread starts.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("args", &self.args)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The bytes the manager writes on the standby's pipe.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Waits on `fd` until the manager writes a claim and closes the pipe,
    /// then closes `fd`. `Ok(None)`: the pipe closed with nothing in it
    /// (the manager let the standby go, or is gone).
    pub fn wait(fd: i32) -> Result<Option<Claim>, HandoffError> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let read = loop {
            match nix::unistd::read(fd, &mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) if (buf.len() + n) as u64 > MAX_HANDOFF => {
                    break Err(HandoffError::Malformed {
                        fd,
                        why: format!("a claim over {MAX_HANDOFF} bytes"),
                    })
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(os("read the claim")(e.into())),
            }
        };
        let closed = nix::unistd::close(fd);
        read?;
        closed.map_err(|e| os("close the claim descriptor")(e.into()))?;
        if buf.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| HandoffError::Malformed {
                fd,
                why: e.to_string(),
            })
    }
}

#[cfg(feature = "manager")]
/// Runs the child `cmd` starts (a standby) under `SCHED_IDLE`: it gets
/// only CPU time nothing else wants until its claim, so that starting
/// standbys never slows the executors and clients already running.
pub fn idle_until_claimed(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and makes one
    // system call (async-signal-safe) with a parameter on its stack.
    unsafe {
        cmd.pre_exec(|| set_policy(0, libc::SCHED_IDLE));
    }
}

/// Gives `pid` (0: the calling thread) the normal policy back, as a claimed
/// standby does (the manager for the process it spawned, the executor for
/// itself, before it drops its privileges).
pub fn schedule_normally(pid: i32) -> std::io::Result<()> {
    set_policy(pid, libc::SCHED_OTHER)
}

fn set_policy(pid: i32, policy: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) reads one `sched_param` that lives for
    // the call; no memory is written.
    if unsafe { libc::sched_setscheduler(pid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(feature = "manager")]
/// Arranges for `fd` to be [`HANDOFF_FD`] in the child `cmd` starts, and
/// only there: `fd` stays close-on-exec in the manager, so executors
/// spawned at the same moment by other threads never inherit another
/// lease's handoff. Keep `fd` open until the child has been spawned.
pub fn pass_to(cmd: &mut tokio::process::Command, fd: &OwnedFd) {
    pass_at(cmd, fd, HANDOFF_FD);
}

#[cfg(feature = "manager")]
/// As [`pass_to`], with `fd` at `target` in the child. To place several
/// descriptors, each `fd` must be above every `target` (see [`above`]), so
/// that placing one never overwrites another before it is placed.
pub fn pass_at(cmd: &mut tokio::process::Command, fd: &OwnedFd, target: i32) {
    let place = placer(fd.as_raw_fd(), target);
    // SAFETY: `place` runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: see `placer`.
    unsafe {
        cmd.pre_exec(place);
    }
}

/// [`pass_to`] for a `std` command.
pub fn pass_to_std(cmd: &mut std::process::Command, fd: &OwnedFd) {
    use std::os::unix::process::CommandExt;
    let place = placer(fd.as_raw_fd(), HANDOFF_FD);
    // SAFETY: as in `pass_to`.
    unsafe {
        cmd.pre_exec(place);
    }
}

#[cfg(feature = "manager")]
/// A close-on-exec copy of `fd` numbered above every target of
/// [`pass_at`] (the original is closed).
pub fn above(fd: OwnedFd) -> Result<OwnedFd, HandoffError> {
    let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(CLAIM_FD + 1))
        .map_err(|e| os("fcntl F_DUPFD_CLOEXEC")(e.into()))?;
    // SAFETY: `raw` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// What the child runs before exec: fcntl(2) or dup2(2) on integers
/// captured by value; no allocation, no lock.
fn placer(raw: i32, target: i32) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        if raw == target {
            // dup2 onto itself would keep close-on-exec set.
            fcntl(raw, FcntlArg::F_SETFD(FdFlag::empty()))?;
        } else {
            // The copy made by dup2 is not close-on-exec.
            nix::unistd::dup2(raw, target)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_handoff_survives_the_memfd_and_its_debug_hides_the_token() {
        let h = Handoff {
            token: "ab".repeat(32),
            confinement: Some(Confinement {
                uid: 60001,
                gid: 60001,
                user_namespace: false,
                cgroup_procs: vec!["/sys/fs/cgroup/memory/rfx/lease-1/cgroup.procs".into()],
                tmp_bytes: 64 << 20,
                ro_paths: vec!["/usr".into()],
                devices: vec!["/dev/null".into()],
                staging: "/run/rfx-sandbox".into(),
                seccomp: Some(super::super::syscalls::compile_seccomp().unwrap()),
            }),
        };
        assert!(!format!("{h:?}").contains(&h.token));
        let fd = h.to_memfd().unwrap();
        // A copy, since take() closes what it reads.
        let copy = nix::unistd::dup(fd.as_raw_fd()).unwrap();
        assert_eq!(Handoff::take(copy).unwrap(), h);
        // Closed: the number is free again (or reused by someone else).
        assert!(std::fs::read_link(format!("/proc/self/fd/{copy}"))
            .map_or(true, |p| !p.to_string_lossy().contains("rfx-handoff")));
    }

    #[test]
    fn garbage_on_the_descriptor_is_a_clear_error() {
        let fd = memfd_create(c"junk", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        let mut f = File::from(fd);
        f.write_all(b"{not json").unwrap();
        let copy = nix::unistd::dup(f.as_raw_fd()).unwrap();
        let e = Handoff::take(copy).unwrap_err().to_string();
        assert!(e.contains("malformed handoff"), "{e}");
        let e = Handoff::take(9999).unwrap_err().to_string();
        assert!(e.contains("cannot read /proc/self/fd/9999"), "{e}");
    }

    #[test]
    fn a_claim_crosses_its_pipe_once_and_an_empty_pipe_is_no_claim() {
        use std::os::fd::IntoRawFd;
        let claim = Claim {
            token: "cd".repeat(32),
            uid: 60007,
            gid: 60007,
            args: vec!["--workers".into(), "2".into()],
            env: vec![("RFX_LEASE_ID".into(), "7".into())],
        };
        assert!(!format!("{claim:?}").contains(&claim.token));
        let (r, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(&claim.to_bytes()).unwrap();
        assert_eq!(Claim::wait(r.into_raw_fd()).unwrap(), Some(claim));

        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert_eq!(Claim::wait(r.into_raw_fd()).unwrap(), None);

        let (r, w) = nix::unistd::pipe().unwrap();
        File::from(w).write_all(b"{\"token\":").unwrap();
        let e = Claim::wait(r.into_raw_fd()).unwrap_err().to_string();
        assert!(e.contains("malformed handoff"), "{e}");
    }
}
