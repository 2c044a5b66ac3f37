//! Standby executors: started and confined before any lease exists, so that
//! a lease's cold start skips the spawn and the sandbox's set-up.
//!
//! A standby runs `rfx executor --standby --handoff-fd 3` in a cgroup of its
//! own (`standby-N`, the host's default limits). It enters its sandbox
//! (namespaces, new root, Landlock, seccomp; [`crate::sandbox::enter`]),
//! prints [`STANDBY_LINE`] and waits on descriptor 4, the read end of a pipe
//! only this manager writes. A lease that fits ([`SandboxHost::standby_fits`]:
//! no container, no GPUs) takes a ready standby: the manager sets the lease's
//! limits on the standby's cgroup and gives it a uid
//! ([`SandboxHost::claim`]), then writes the [`Claim`] (token, uid, the
//! executor's arguments and environment) and closes the pipe. The standby
//! drops to the uid and serves; from there it is the lease's executor like
//! any other. The pool starts a replacement at once.
//!
//! Nothing of a tenant runs in a standby before its claim, and a standby
//! serves one lease only. A standby that died waiting is disposed of and the
//! lease spawns a fresh executor; after [`MAX_FAILURES`] failed starts in a
//! row the pool stops refilling (every lease then spawns).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::BufReader;
use tokio::process::{Child, ChildStderr, Command};

use super::bounds::{KILL_WAIT, START_WAIT};
use super::lines::{next_line, Line};
use crate::sandbox::handoff::{self, Claim, CLAIM_FD, HANDOFF_FD};
use crate::sandbox::host::{Prepared, SandboxHost};
use crate::sandbox::{Handoff, STANDBY_LINE};
use rfx_leases::proto::Lease;

/// Failed starts in a row after which the pool stops refilling.
pub(crate) const MAX_FAILURES: u32 = 3;

/// Longest line kept from a standby's stderr before its claim.
const MAX_LINE: usize = 64 << 10;

/// How long [`Pool::drain`] waits for standbys still starting.
const STARTING_WAIT: Duration = Duration::from_secs(2);

/// What the pool needs of its executor manager.
pub(crate) trait StandbyHost: Send + Sync + 'static {
    /// The host's sandbox.
    fn sandbox(&self) -> &SandboxHost;
    /// The pool of standbys.
    fn pool(&self) -> &Pool;
    /// The executor's program, its leading arguments, and the environment
    /// of every executor.
    fn executor(&self) -> (&OsString, &[OsString], Vec<(OsString, OsString)>);
}

/// A confined executor waiting for its lease.
#[derive(Debug)]
pub(crate) struct Standby {
    child: Child,
    stderr: BufReader<ChildStderr>,
    prepared: Prepared,
    /// Its number on this manager (`standby-N`).
    n: u64,
    /// The write end of its claim pipe.
    claim: OwnedFd,
}

/// A standby given to a lease: from here on, the lease's executor.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The process the manager spawned (the sandbox's relay).
    pub(crate) child: Child,
    /// Its stderr, read up to [`STANDBY_LINE`].
    pub(crate) stderr: BufReader<ChildStderr>,
    /// Its number on this manager.
    pub(crate) n: u64,
}

impl Standby {
    /// Gives this standby to `lease`: its limits and uid
    /// ([`SandboxHost::claim`]), then the claim `make` builds from the uid
    /// and gid, written on the pipe, which closes. `None` if that failed:
    /// the standby is then disposed of (and the uid released).
    pub(crate) async fn claim(
        self,
        sandbox: &SandboxHost,
        lease: &Lease,
        make: impl FnOnce(u32, u32) -> Claim,
    ) -> Option<(Prepared, Claimed)> {
        let Standby {
            mut child,
            stderr,
            prepared,
            n,
            claim,
        } = self;
        let mut prepared = prepared;
        if let Err(why) = sandbox.claim(&mut prepared, lease) {
            tracing::warn!(lease = %lease.id, standby = n, "standby not claimed: {why}");
            dispose(&mut child, prepared, n).await;
            return None;
        }
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            if let Err(e) = handoff::schedule_normally(pid) {
                tracing::debug!(standby = n, "SCHED_OTHER for the relay: {e}");
            }
        }
        let message = make(prepared.confinement.uid, prepared.confinement.gid);
        // The pipe closes when the file drops: the standby sees the end of
        // its claim.
        if let Err(e) = std::fs::File::from(claim).write_all(&message.to_bytes()) {
            tracing::warn!(lease = %lease.id, standby = n, "standby not claimed: {e}");
            sandbox.release(lease.id);
            dispose(&mut child, prepared, n).await;
            return None;
        }
        Some((prepared, Claimed { child, stderr, n }))
    }

    /// Kills the standby and removes its cgroup.
    pub(crate) async fn dispose(self) {
        let Standby {
            mut child,
            prepared,
            n,
            ..
        } = self;
        dispose(&mut child, prepared, n).await;
    }
}

/// Kills `child`, reaps it (bounded) and removes the cgroup of `prepared`.
pub(crate) async fn dispose(child: &mut Child, prepared: Prepared, n: u64) {
    if let Err(e) = child.start_kill() {
        tracing::debug!(standby = n, "SIGKILL failed: {e}");
    }
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        tracing::error!(
            standby = n,
            "standby executor not reaped {KILL_WAIT:?} after SIGKILL"
        );
    }
    let _ = tokio::task::spawn_blocking(move || SandboxHost::finish(&prepared)).await;
}

/// The standbys of one executor manager.
#[derive(Debug)]
pub(crate) struct Pool {
    want: usize,
    ready: Mutex<Vec<Standby>>,
    starting: AtomicUsize,
    next: AtomicU64,
    failures: AtomicU32,
    closed: AtomicBool,
}

impl Pool {
    /// A pool that keeps `want` standbys ready (0: none).
    pub(crate) fn new(want: usize) -> Pool {
        Pool {
            want,
            ready: Mutex::new(Vec::new()),
            starting: AtomicUsize::new(0),
            next: AtomicU64::new(1),
            failures: AtomicU32::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Starts standbys in the background until `want` are ready or
    /// starting.
    pub(crate) fn fill<H: StandbyHost>(host: &Arc<H>) {
        let pool = host.pool();
        if pool.want == 0 || !host.sandbox().standby_possible() {
            return;
        }
        // Bounded by `want`: each pass either starts one or returns.
        for _ in 0..pool.want {
            if pool.closed.load(Ordering::Acquire)
                || pool.failures.load(Ordering::Acquire) >= MAX_FAILURES
            {
                return;
            }
            let have = pool.ready.lock().len() + pool.starting.load(Ordering::Acquire);
            if have >= pool.want {
                return;
            }
            pool.starting.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(start_one(host.clone()));
        }
    }

    /// A ready standby whose process still runs, if any; dead ones are
    /// disposed of in the background.
    pub(crate) fn take(&self) -> Option<Standby> {
        // Bounded: each pass removes one entry.
        loop {
            let mut standby = self.ready.lock().pop()?;
            match standby.child.try_wait() {
                Ok(None) => return Some(standby),
                status => {
                    tracing::warn!(
                        standby = standby.n,
                        ?status,
                        "standby executor died waiting"
                    );
                    tokio::spawn(standby.dispose());
                }
            }
        }
    }

    /// At shutdown: no more starts; every standby killed and its cgroup
    /// removed (those still starting are waited for, bounded).
    pub(crate) async fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + STARTING_WAIT;
        while self.starting.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all: Vec<Standby> = std::mem::take(&mut *self.ready.lock());
        for standby in all {
            standby.dispose().await;
        }
    }
}

/// Starts standby `n`, then files it as ready (or disposes of it, if the
/// pool closed meanwhile), and refills.
async fn start_one<H: StandbyHost>(host: Arc<H>) {
    let pool = host.pool();
    let n = pool.next.fetch_add(1, Ordering::AcqRel);
    match start(&*host, n).await {
        Ok(standby) => {
            pool.failures.store(0, Ordering::Release);
            tracing::debug!(
                standby = n,
                pid = standby.child.id(),
                "standby executor ready"
            );
            if pool.closed.load(Ordering::Acquire) {
                standby.dispose().await;
            } else {
                pool.ready.lock().push(standby);
            }
            pool.starting.fetch_sub(1, Ordering::AcqRel);
        }
        Err(e) => {
            let failures = pool.failures.fetch_add(1, Ordering::AcqRel) + 1;
            pool.starting.fetch_sub(1, Ordering::AcqRel);
            if failures >= MAX_FAILURES {
                tracing::error!(
                    "standby executor {n} not started: {e}; {failures} failures in a row, no \
                     more standbys (leases spawn their executors)"
                );
                return;
            }
            tracing::warn!("standby executor {n} not started: {e}");
        }
    }
    Pool::fill(&host);
}

/// Spawns standby `n` and waits until it stands by.
async fn start<H: StandbyHost>(host: &H, n: u64) -> Result<Standby, String> {
    let prepared = host.sandbox().prepare_standby(n)?;
    let spawned = spawn(host, &prepared);
    let (mut child, claim) = match spawned {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || SandboxHost::finish(&prepared)).await;
            return Err(e);
        }
    };
    let Some(stderr) = child.stderr.take() else {
        dispose(&mut child, prepared, n).await;
        return Err("no stderr pipe".into());
    };
    let mut stderr = BufReader::new(stderr);
    let waited = tokio::time::timeout(START_WAIT, async {
        // Bounded by START_WAIT.
        loop {
            match next_line(&mut stderr, MAX_LINE).await {
                Ok(Some(Line::Text(t))) if t.trim_end() == STANDBY_LINE => return Ok(()),
                Ok(Some(Line::Text(t))) => tracing::debug!(standby = n, "standby: {t}"),
                Ok(Some(Line::TooLong)) => {}
                Ok(None) | Err(_) => return Err("it exited before standing by".to_owned()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("not standing by within {START_WAIT:?}")));
    if let Err(e) = waited {
        let status = child.try_wait();
        dispose(&mut child, prepared, n).await;
        return Err(format!("{e} ({status:?})"));
    }
    Ok(Standby {
        child,
        stderr,
        prepared,
        n,
        claim,
    })
}

/// `rfx executor --standby` with the handoff of `prepared` at descriptor 3
/// and the read end of a new claim pipe at 4; returns the child and the
/// write end.
fn spawn<H: StandbyHost>(host: &H, prepared: &Prepared) -> Result<(Child, OwnedFd), String> {
    let (program, leading, env) = host.executor();
    let handoff = Handoff {
        token: String::new(),
        confinement: Some(prepared.confinement.clone()),
    };
    let memfd = handoff
        .to_memfd()
        .and_then(handoff::above)
        .map_err(|e| e.to_string())?;
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("claim pipe: {e}"))?;
    let read = handoff::above(read).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(leading)
        .args(["--standby", "--handoff-fd", &HANDOFF_FD.to_string()])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    handoff::pass_at(&mut cmd, &memfd, HANDOFF_FD);
    handoff::pass_at(&mut cmd, &read, CLAIM_FD);
    handoff::idle_until_claimed(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    Ok((child, write))
}
