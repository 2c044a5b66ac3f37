//! One executor process per lease: spawn it, learn its address, forward its
//! usage, stop it, reap it, report its crash.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use rfx_leases::client::HostClient;
use rfx_leases::proto::{LeaseId, UsageReport};
use rfx_leases::wire::{LeaseToken, StartLease};
use tokio::io::{AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::bounds::{DRAIN_WAIT, KILL_WAIT, REPORT_WAIT, START_WAIT};
use super::lines::{next_line, Line};
use super::lookup::{Directory, ExecState};
use super::standby::{Claimed, Pool, StandbyHost};
use super::state::{describe_exit, parse_listening, reachable, LaunchPolicy, UsageMeter};
use crate::executor::{
    ExecutorUsage, SESSION_CLOSED_PREFIX, SESSION_OPENED_PREFIX, TIMED_OUT_EXIT, TIMED_OUT_PREFIX,
};
use crate::lookup::TimedOut;
use crate::sandbox::host::{Isolation, Prepared, SandboxHost};
use crate::sandbox::{handoff, Claim, Handoff};
use rfx_leases::audit::{AuditAction, AuditEvent, AuditLog};

/// Longest line kept from an executor's stdout or stderr.
const MAX_OUTPUT_LINE: usize = 64 << 10;

/// What every executor supervisor shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current connection to the lease manager (replaced on reconnect).
    pub(crate) host: Mutex<HostClient>,
    /// What the lookup service publishes.
    pub(crate) directory: Arc<Directory>,
    /// The executor program.
    pub(crate) program: OsString,
    /// Its leading arguments.
    pub(crate) leading: Vec<OsString>,
    /// Extra environment of every executor.
    pub(crate) extra_env: Vec<(OsString, OsString)>,
    /// Flags, token and device visibility per lease.
    pub(crate) policy: LaunchPolicy,
    /// A specific address of this host, for executors bound to `0.0.0.0`.
    pub(crate) fallback_ip: Option<IpAddr>,
    /// Time between SIGTERM and SIGKILL.
    pub(crate) stop_grace: Duration,
    /// The base environment of every executor (nothing else of the
    /// manager's passes).
    pub(crate) base_env: Vec<(OsString, OsString)>,
    /// How executors are isolated (sandbox, containers).
    pub(crate) sandbox: SandboxHost,
    /// Executors started and confined ahead of their lease.
    pub(crate) standby: Pool,
    /// The audit log of tenant-visible events.
    pub(crate) audit: AuditLog,
    /// What `--metrics-listen` serves.
    pub(crate) metrics: Arc<super::metrics::ManagerMetrics>,
}

impl Shared {
    /// Records `action` on `lease` for its tenant.
    fn audit(&self, lease: &rfx_leases::proto::Lease, action: AuditAction) -> AuditEvent {
        AuditEvent::tenant(lease.tenant.0.clone(), action)
            .with_lease(lease.id)
            .with_host(lease.host)
    }

    /// The current lease manager connection.
    pub(crate) fn host(&self) -> HostClient {
        self.host.lock().clone()
    }
}

impl StandbyHost for Shared {
    fn sandbox(&self) -> &SandboxHost {
        &self.sandbox
    }

    fn pool(&self) -> &Pool {
        &self.standby
    }

    fn executor(&self) -> (&OsString, &[OsString], Vec<(OsString, OsString)>) {
        let env = self
            .base_env
            .iter()
            .chain(&self.extra_env)
            .cloned()
            .collect();
        (&self.program, &self.leading, env)
    }
}

/// How a supervised executor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stopped on command or at shutdown.
    Stopped,
    /// It exited on its own, or never started.
    Ended {
        /// Why, as reported to the lease manager.
        ending: Ending,
        /// Whether the lease manager took the report (else retry after
        /// reconnecting).
        reported: bool,
    },
}

/// Why an executor is gone, as the lease manager is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// What happened (exit status, signal, start failure).
    pub(crate) reason: String,
    /// Set when the OOM killer ended it: the lease's memory limit, MiB.
    pub(crate) out_of_memory_mib: Option<u64>,
    /// Set when it stopped itself at the time limit: the executor is
    /// restarted within the lease, which goes on.
    pub(crate) timed_out: Option<TimedOut>,
}

impl From<String> for Ending {
    fn from(reason: String) -> Self {
        Ending {
            reason,
            out_of_memory_mib: None,
            timed_out: None,
        }
    }
}

/// Runs the executor of `start` (with the lease's derived `token`) until it
/// exits or `stop` fires (or its sender is dropped); always reaps it.
/// `state` follows it for lookups.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    start: StartLease,
    token: LeaseToken,
    mut stop: oneshot::Receiver<()>,
    state: watch::Sender<ExecState>,
) -> Outcome {
    let lease = start.lease.id;
    let mut previous = None;
    let ended = loop {
        let ended = run_executor(&shared, &start, &token, &mut stop, &state, previous).await;
        match ended {
            Some(Ending {
                timed_out: Some(t), ..
            }) => {
                // The lease goes on: a new executor, its slots served again.
                tracing::warn!(
                    %lease,
                    worker = t.worker,
                    invocation = t.invocation,
                    after_ms = t.after_ms,
                    "a function ran past the lease's time limit; restarting the executor"
                );
                state.send_replace(ExecState::Starting);
                shared.audit.record(
                    &shared
                        .audit(&start.lease, AuditAction::FunctionTimeout)
                        .with_field("worker", t.worker)
                        .with_field("invocation", t.invocation)
                        .with_field("after_ms", t.after_ms),
                );
                report_timeout(&shared, lease).await;
                previous = Some(t);
            }
            other => break other,
        }
    };
    state.send_replace(ExecState::Gone);
    shared.sandbox.release(lease);
    match ended {
        None => {
            shared
                .audit
                .record(&shared.audit(&start.lease, AuditAction::ExecutorStopped));
            Outcome::Stopped
        }
        Some(ending) => {
            tracing::warn!(%lease, "{}", ending.reason);
            let action = if ending.out_of_memory_mib.is_some() {
                AuditAction::SandboxKill
            } else {
                AuditAction::ExecutorCrashed
            };
            shared.audit.record(
                &shared
                    .audit(&start.lease, action)
                    .with_detail(ending.reason.as_str()),
            );
            let reported = report_crash(&shared.host(), lease, &ending).await;
            Outcome::Ended { ending, reported }
        }
    }
}

/// Counts a stop at the time limit in the lease's usage (best effort).
async fn report_timeout(shared: &Shared, lease: LeaseId) {
    shared.metrics.restarted();
    let delta = UsageReport {
        function_timeouts: 1,
        ..UsageReport::default()
    };
    let host = shared.host();
    match tokio::time::timeout(REPORT_WAIT, host.report_usage(lease, &delta)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%lease, "time-limit report failed: {e}"),
        Err(_) => tracing::warn!(%lease, "time-limit report timed out"),
    }
}

/// Tells the lease manager that the executor of `lease` is gone; `false` if
/// it should be told again later (the connection failed).
pub(crate) async fn report_crash(host: &HostClient, lease: LeaseId, ending: &Ending) -> bool {
    let report = host.report_end(lease, &ending.reason, ending.out_of_memory_mib);
    match tokio::time::timeout(REPORT_WAIT, report).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) if e.code().is_some() => {
            // Refused (the lease already ended): nothing left to tell.
            tracing::debug!(%lease, "crash report refused: {e}");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(%lease, "crash report failed: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(%lease, "crash report timed out");
            false
        }
    }
}

/// `None` if stopped on command, else why the executor is gone.
async fn run_executor(
    shared: &Arc<Shared>,
    start: &StartLease,
    token: &LeaseToken,
    stop: &mut oneshot::Receiver<()>,
    state: &watch::Sender<ExecState>,
    previous: Option<TimedOut>,
) -> Option<Ending> {
    let launch = match shared.policy.launch(&start.lease) {
        Ok(l) => l,
        Err(e) => return Some(format!("executor not started: {e}").into()),
    };
    let (isolation, standby) = match claim_standby(shared, start, token, &launch).await {
        Some((prepared, standby)) => (Isolation::Builtin(prepared), Some(standby)),
        None => match shared.sandbox.prepare(&start.lease) {
            Ok(i) => (i, None),
            Err(e) => return Some(format!("executor not started: sandbox: {e}").into()),
        },
    };
    let ended = spawn_and_watch(
        shared, start, token, &launch, &isolation, standby, stop, state, previous,
    )
    .await;
    if matches!(isolation, Isolation::None) {
        return ended;
    }
    // Whatever the exit, nothing of the lease outlives its executor. The
    // clean-up blocks (kills, rmdir retries, the runtime's commands): off
    // the async threads.
    let memory_mib = isolation.memory_mib().unwrap_or(0);
    let finished = tokio::task::spawn_blocking(move || match &isolation {
        Isolation::Builtin(p) => SandboxHost::finish(p).out_of_memory,
        Isolation::Container(c) => SandboxHost::finish_container(c).out_of_memory,
        Isolation::None => false,
    })
    .await;
    let out_of_memory = finished.unwrap_or(false);
    // A kill at our own stop is no OOM (ended is None then).
    match ended {
        Some(_) if out_of_memory => Some(Ending {
            reason: format!(
                "out of memory: the executor went over the lease's {memory_mib} MiB and was killed"
            ),
            out_of_memory_mib: Some(memory_mib),
            timed_out: None,
        }),
        other => other,
    }
}

/// A ready standby given to the lease of `start`, when the lease fits one:
/// the lease's limits and uid, then its claim. `None`: spawn afresh (no
/// standby ready, or the claim failed and the standby was disposed of).
async fn claim_standby(
    shared: &Arc<Shared>,
    start: &StartLease,
    token: &LeaseToken,
    launch: &super::state::Launch,
) -> Option<(Prepared, Claimed)> {
    let lease = &start.lease;
    if !shared.sandbox.standby_fits(lease) {
        return None;
    }
    let standby = shared.standby.take();
    // A replacement, or one for a standby that died waiting.
    Pool::fill(shared);
    let standby = standby?;
    let lossy = |s: &std::ffi::OsString| s.to_string_lossy().into_owned();
    standby
        .claim(&shared.sandbox, lease, |uid, gid| Claim {
            token: token.to_hex(),
            uid,
            gid,
            args: launch.args.iter().map(lossy).collect(),
            env: launch
                .env
                .iter()
                .map(|(k, v)| (lossy(k), lossy(v)))
                .collect(),
        })
        .await
}

/// Spawns the executor of `start`, then follows it as [`run_executor`] says.
#[allow(clippy::too_many_arguments)]
async fn spawn_and_watch(
    shared: &Arc<Shared>,
    start: &StartLease,
    token: &LeaseToken,
    launch: &super::state::Launch,
    isolation: &Isolation,
    standby: Option<Claimed>,
    stop: &mut oneshot::Receiver<()>,
    state: &watch::Sender<ExecState>,
    previous: Option<TimedOut>,
) -> Option<Ending> {
    let lease = start.lease.id;
    let (mut child, stderr, standby) = match standby {
        Some(s) => (s.child, Some(s.stderr), Some(s.n)),
        None => match spawn(shared, token, launch, isolation) {
            Ok(child) => (child, None, None),
            Err(e) => return Some(e.into()),
        },
    };
    let pid = child.id();
    tracing::info!(%lease, pid, cores = start.lease.cores, ?standby, "executor spawned");
    let mut started = shared
        .audit(&start.lease, AuditAction::ExecutorStarted)
        .with_cores(start.lease.cores)
        .with_field("pid", pid)
        .with_field("sandbox", isolation.mode());
    if let (Some(memory_mib), Some(uid)) = (isolation.memory_mib(), isolation.uid()) {
        started = started.with_memory_mib(memory_mib).with_field("uid", uid);
    }
    let limit = shared.policy.exec_timeout_ms(&start.lease);
    if limit > 0 {
        started = started.with_field("exec_timeout_ms", limit);
    }
    if let Some(n) = standby {
        started = started.with_field("standby", n);
    }
    if let Isolation::Container(c) = isolation {
        started = started.with_field("container", &c.image);
    }
    shared.audit.record(&started);
    let usage = child
        .stdout
        .take()
        .map(|out| tokio::spawn(forward_usage(out, shared.clone(), lease)));
    let stderr = match stderr {
        Some(s) => s,
        None => match child.stderr.take() {
            Some(s) => BufReader::new(s),
            None => {
                terminate(&mut child, Duration::ZERO).await;
                return Some("executor not started: no stderr pipe".to_owned().into());
            }
        },
    };
    let mut stderr = stderr;

    // Until it prints its address.
    let deadline = tokio::time::sleep(START_WAIT);
    tokio::pin!(deadline);
    let addr = loop {
        tokio::select! {
            _ = &mut *stop => {
                terminate(&mut child, shared.stop_grace).await;
                finish(usage).await;
                return None;
            }
            status = child.wait() => {
                finish(usage).await;
                return Some(
                    format!("executor exited before listening: {}", status_text(status)).into(),
                );
            }
            () = &mut deadline => {
                terminate(&mut child, Duration::ZERO).await;
                finish(usage).await;
                return Some(
                    format!("executor not started: no address within {START_WAIT:?}").into(),
                );
            }
            line = next_line(&mut stderr, MAX_OUTPUT_LINE) => match line {
                Ok(Some(Line::Text(t))) => match parse_listening(&t) {
                    Some(a) => break a,
                    None => tracing::debug!(%lease, "executor: {t}"),
                },
                Ok(Some(Line::TooLong)) => {}
                Ok(None) | Err(_) => {
                    // Stderr closed without an address: it is exiting, or
                    // will not say where it listens.
                    let status = tokio::time::timeout(DRAIN_WAIT, child.wait()).await;
                    let why = match status {
                        Ok(s) => status_text(s),
                        Err(_) => "stderr closed".to_owned(),
                    };
                    terminate(&mut child, Duration::ZERO).await;
                    finish(usage).await;
                    return Some(format!("executor exited before listening: {why}").into());
                }
            },
        }
    };
    let addr = reachable(addr, shared.fallback_ip);
    tracing::info!(%lease, pid, %addr, "executor listening");
    state.send_replace(ExecState::Ready(addr, previous));
    let sessions = (shared.clone(), start.lease.clone());
    let log = tokio::spawn(log_stderr(stderr, sessions));

    let ended = tokio::select! {
        _ = &mut *stop => {
            terminate(&mut child, shared.stop_grace).await;
            tracing::info!(%lease, pid, "executor stopped");
            None
        }
        status = child.wait() => Some(status),
    };
    if ended.is_some() {
        // Make sure nothing is left (a wait error) before reading the rest.
        terminate(&mut child, Duration::ZERO).await;
    }
    // The last usage lines go out before a crash report ends the lease.
    finish(usage).await;
    let said = match tokio::time::timeout(DRAIN_WAIT, log).await {
        Ok(Ok(said)) => said,
        _ => None,
    };
    let status = ended?;
    let code = status.as_ref().ok().and_then(ExitStatus::code);
    Some(Ending {
        reason: format!("executor exited: {}", status_text(status)),
        out_of_memory_mib: None,
        // Only the exit code and the line together: a function cannot
        // fake a time limit by printing the line alone.
        timed_out: said.filter(|_| code == Some(TIMED_OUT_EXIT)),
    })
}

/// Spawns a fresh executor for the lease of `token`, isolated as `isolation` says.
fn spawn(
    shared: &Shared,
    token: &LeaseToken,
    launch: &super::state::Launch,
    isolation: &Isolation,
) -> Result<Child, String> {
    let handoff = Handoff {
        token: token.to_hex(),
        confinement: match isolation {
            Isolation::Builtin(p) => Some(p.confinement.clone()),
            // A container is the confinement.
            Isolation::Container(_) | Isolation::None => None,
        },
    };
    let handoff_fd = match handoff.to_memfd() {
        Ok(fd) => fd,
        Err(e) => return Err(format!("executor not started: {e}")),
    };
    let env: Vec<(OsString, OsString)> = shared
        .base_env
        .iter()
        .chain(&shared.extra_env)
        .chain(&launch.env)
        .cloned()
        .collect();
    let args: Vec<OsString> = shared.leading.iter().chain(&launch.args).cloned().collect();
    let mut cmd = match isolation {
        Isolation::Container(c) => {
            let argv =
                match shared
                    .sandbox
                    .container_command(c, Path::new(&shared.program), &args, &env)
                {
                    Ok(a) => a,
                    Err(e) => return Err(format!("executor not started: container: {e}")),
                };
            let Some((runtime, rest)) = argv.split_first() else {
                return Err("executor not started: container: empty command".to_owned());
            };
            let mut cmd = Command::new(runtime);
            cmd.args(rest)
                .env_clear()
                .envs(c.runtime_env())
                .current_dir(&c.workdir);
            cmd
        }
        Isolation::Builtin(_) | Isolation::None => {
            let mut cmd = Command::new(&shared.program);
            cmd.args(&args).env_clear().envs(env);
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at the manager's terminal reaches
        // the manager, which then stops the executors in order.
        .process_group(0)
        .kill_on_drop(true);
    handoff::pass_to(&mut cmd, &handoff_fd);
    let spawned = cmd.spawn();
    drop(handoff_fd);
    spawned.map_err(|e| {
        format!(
            "executor not started: cannot run {}: {e}",
            shared.program.to_string_lossy()
        )
    })
}

/// The description of a wait result.
fn status_text(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => describe_exit(s.code(), s.signal(), s.core_dumped()),
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

/// Stops `child` and reaps it: SIGTERM, up to `grace` to exit, then SIGKILL.
/// Returns at once if it was already reaped.
async fn terminate(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    if !grace.is_zero() {
        if let Ok(raw) = i32::try_from(pid) {
            // The child is not reaped yet, so the pid is still ours.
            if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGTERM) {
                tracing::debug!(pid, "SIGTERM failed: {e}");
            }
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "executor ignored SIGTERM for {grace:?}; killing it");
    }
    if let Err(e) = child.start_kill() {
        tracing::debug!(pid, "SIGKILL failed: {e}");
    }
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        // Dropping the child leaves it to tokio's orphan reaper.
        tracing::error!(pid, "executor not reaped {KILL_WAIT:?} after SIGKILL");
    }
}

/// Waits a little for `task` to reach the end of its pipe, then drops it.
async fn finish(task: Option<JoinHandle<()>>) {
    if let Some(mut task) = task {
        if tokio::time::timeout(DRAIN_WAIT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Reads the executor's usage lines (cumulative [`ExecutorUsage`] JSON) and
/// reports what grew; other lines are logged.
async fn forward_usage(out: impl AsyncRead + Unpin, shared: Arc<Shared>, lease: LeaseId) {
    let mut out = BufReader::new(out);
    let mut meter = UsageMeter::default();
    while let Ok(Some(line)) = next_line(&mut out, MAX_OUTPUT_LINE).await {
        let Line::Text(text) = line else { continue };
        let Ok(usage) = serde_json::from_str::<ExecutorUsage>(text.trim()) else {
            if !text.trim().is_empty() {
                tracing::debug!(%lease, "executor stdout: {text}");
            }
            continue;
        };
        let Some(delta) = meter.delta(&usage) else {
            continue;
        };
        let host = shared.host();
        match tokio::time::timeout(REPORT_WAIT, host.report_usage(lease, &delta)).await {
            Ok(Ok(())) => {
                meter.acknowledge(&usage);
                shared.metrics.usage(&delta);
            }
            Ok(Err(e)) => tracing::debug!(%lease, "usage report failed: {e}"),
            Err(_) => tracing::warn!(%lease, "usage report timed out"),
        }
    }
}

/// Logs what the executor prints on stderr after its address.
/// Audits its session lines (tenant code shares that stderr: a line is
/// only ever taken as the lease's own) and returns what the last
/// time-limit line said, if one came.
async fn log_stderr(
    err: impl AsyncRead + Unpin,
    (shared, l): (Arc<Shared>, rfx_leases::proto::Lease),
) -> Option<TimedOut> {
    let mut err = BufReader::new(err);
    let mut timed_out = None;
    let lease = l.id;
    while let Ok(Some(line)) = next_line(&mut err, MAX_OUTPUT_LINE).await {
        if let Line::Text(t) = line {
            let t = t.trim_end();
            if let Some(rest) = t.strip_prefix(TIMED_OUT_PREFIX) {
                timed_out = TimedOut::parse(rest).or(timed_out);
            }
            let session = [
                (SESSION_OPENED_PREFIX, AuditAction::InvocationSessionOpened),
                (SESSION_CLOSED_PREFIX, AuditAction::InvocationSessionClosed),
            ]
            .into_iter()
            .find_map(|(p, a)| Some((a, t.strip_prefix(p)?)));
            if let Some((action, rest)) = session {
                let worker = rest
                    .strip_prefix("worker ")
                    .and_then(|w| w.parse::<u32>().ok());
                if let Some(worker) = worker {
                    shared
                        .audit
                        .record(&shared.audit(&l, action).with_field("worker", worker));
                }
            }
            tracing::debug!(%lease, "executor: {t}");
        }
    }
    timed_out
}
