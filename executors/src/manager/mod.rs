//! The executor manager (`rfx executor-manager`), one per host.
//!
//! It registers the host's capacity with the lease manager and heartbeats;
//! for every lease placed on the host it runs one executor process (the
//! `executor_command`, normally `rfx executor`) with a worker per leased core
//! pinned to the leased cores, the lease's token, and only the leased
//! accelerators visible; it forwards the executors' usage to the lease
//! manager, stops executors whose lease ended, and reaps every executor,
//! reporting one that exits on its own (a function that segfaults, a kill)
//! as crashed, so that its tenant learns the lease is lost.
//!
//! Tenants find their executor through the manager's **lookup service** (see
//! [`lookup_executor`] and [`LookupRequest`]): the lease manager tells them
//! the address the manager registered (its lookup address); they ask it
//! where the executor of their lease listens, proving that they hold the
//! lease token (an HMAC of the lease id under the token, never the token),
//! then connect to the executor directly. Only that lookup goes through the
//! manager; invocations are peer to peer. The lookup service speaks TLS when
//! [`ManagerConfig::tls`] is set.
//!
//! # Lease tokens
//!
//! The lease manager does not send lease secrets: the manager derives each
//! lease's token from the lease and the cluster key
//! ([`rfx_leases::wire::LeaseKey`]), exactly as the lease manager
//! does for the tenant.
//!
//! # Executors
//!
//! The executor of a lease is started as
//!
//! ```text
//! <executor_command...> --listen <executor_host>:0 --workers <cores> [--cpus <core ids>]
//!     --hot-timeout-ms <ms> --usage-every-ms <ms>
//! ```
//!
//! followed by `--handoff-fd 3`: descriptor 3 holds the handoff
//! ([`crate::sandbox::Handoff`], JSON): the lease token in hex, as the
//! tenant received it (and as the manager derived it), and in strict mode
//! how to confine itself ([`crate::sandbox`]). In strict mode as root a
//! lease may instead take a standby executor, started and confined ahead of
//! it, which receives the same on descriptor 4 ([`crate::sandbox::Claim`]). Its environment is
//! cleared and rebuilt from an allow-list: never the cluster key. It must
//! print `rfx executor: listening on ADDR` on stderr
//! within 30 s, and may print its cumulative usage as JSON
//! [`ExecutorUsage`](crate::executor::ExecutorUsage) lines on stdout; the
//! manager reports the growth. On stop it gets SIGTERM, then SIGKILL after
//! [`ManagerConfig::stop_grace`].
//!
//! **Accelerator visibility**: for each accelerator kind the host declares,
//! the executor's environment names the lease's devices of that kind (empty
//! when it has none, so an executor never sees devices it did not lease):
//! kind `gpu` sets `CUDA_VISIBLE_DEVICES`, kind `amdgpu` sets
//! `ROCR_VISIBLE_DEVICES` (not `HIP_VISIBLE_DEVICES`, which indexes into the
//! devices ROCr exposes and would pick the wrong ones if set as well). If the
//! manager itself runs with that variable set (a Slurm allocation, say),
//! device `i` of the capacity is its `i`-th entry. Other kinds are placed by
//! the lease manager but not hidden.
//!
//! # Lease manager connection
//!
//! The first registration must succeed, or [`run`] fails. Later, a host
//! marked down registers again (and its executors follow the
//! [`Command::Sync`] that comes back); a lost connection is retried with
//! backoff while the executors keep running. A crash that could not be
//! reported is reported after reconnecting; a lease whose executor exited on
//! its own is never started again.
//!
//! # Shutdown
//!
//! When the `shutdown` future of [`run`] completes (SIGINT or SIGTERM for
//! [`serve`]), the manager deregisters (its leases are lost) and stops every
//! executor. Dropping the [`run`] future instead kills the executors with
//! SIGKILL.

mod bounds;
mod error;
mod lines;
mod lookup;
mod metrics;
mod process;
mod standby;
mod state;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rfx_leases::audit::AuditLog;
use rfx_leases::client::{Commands, HostClient};
use rfx_leases::proto::{Capacity, LeaseId};
use rfx_leases::tls::TlsServer;
use rfx_leases::wire::{Command, LeaseKey, StartLease};
use rfx_leases::DaemonError;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinError, JoinSet};

pub use crate::lookup::{
    lookup_executor, lookup_executor_found, lookup_executor_with, Found, LookupError, LookupReply,
    LookupRequest, TimedOut, LOOKUP_WAIT, MAX_LINE,
};
pub use error::ManagerError;

use crate::sandbox::host::SandboxHost;
use crate::sandbox::SandboxConfig;
use bounds::{KILL_WAIT, REPORT_WAIT};
use lookup::{Directory, ExecState};
use process::{Outcome, Shared};
use state::{plan_sync, DeviceVar, LaunchPolicy};

/// The default cap on a lease's time limit per invocation (as AWS Lambda's
/// longest function): 15 minutes.
pub const DEFAULT_MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Bound on one registration with the lease manager.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// Longest pause between attempts to reach a lost lease manager.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How an executor manager runs.
#[derive(Clone)]
pub struct ManagerConfig {
    /// The lease manager's address (`host:port`).
    pub lease_manager: String,
    /// The cluster key shared with the lease manager; lease tokens are
    /// derived from it.
    pub cluster_key: String,
    /// Where the lookup service listens; its address (or
    /// [`advertise`](Self::advertise)) is what the manager registers as the
    /// host's address.
    pub listen: SocketAddr,
    /// The address to register if tenants reach the lookup service elsewhere
    /// than `listen` (needed when `listen` is `0.0.0.0`).
    pub advertise: Option<String>,
    /// What the host offers.
    pub capacity: Capacity,
    /// The program and leading arguments that start an executor (the CLI
    /// passes `[current_exe, "executor"]`); the flags of one lease follow.
    pub executor_command: Vec<OsString>,
    /// Extra environment of every executor (for example `RFX_TRANSPORT`);
    /// the lease's own variables (token, device visibility) win over it.
    pub executor_env: Vec<(OsString, OsString)>,
    /// Where executors listen (port 0: any free port). An executor bound to
    /// `0.0.0.0` is announced at the host's advertised (or listening) IP.
    pub executor_host: IpAddr,
    /// How often executors print their usage, which is then reported.
    pub usage_every: Duration,
    /// How long a stopped executor has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Serve lookups over TLS with this certificate (clients then need
    /// `RFX_TLS_CA`); `None`: plain TCP.
    pub tls: Option<TlsServer>,
    /// How executors are sandboxed ([`SandboxConfig::default`]: strict when
    /// running as root).
    pub sandbox: SandboxConfig,
    /// The longest time limit per invocation a lease may have, and the one
    /// of a lease that asks none; `Duration::ZERO`: no cap, and no limit
    /// unless asked. A function past its limit gets its executor killed and
    /// restarted within the lease.
    pub max_exec_timeout: Duration,
    /// Where executor starts, stops, crashes, sandbox kills, time limits
    /// and invocation sessions are recorded, one JSON line each
    /// (`rfx_leases::audit`); disabled by default.
    pub audit: AuditLog,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// The batch job this manager runs in (`SLURM_JOB_ID`), told to the
    /// lease manager so that one that asked for the host knows it.
    pub job: Option<String>,
}

impl ManagerConfig {
    /// A config with defaults: no advertised address (the bound one), no
    /// extra environment, executors on `listen`'s IP, usage every second,
    /// 5 s of grace.
    pub fn new(
        lease_manager: impl Into<String>,
        cluster_key: impl Into<String>,
        listen: SocketAddr,
        capacity: Capacity,
        executor_command: Vec<OsString>,
    ) -> Self {
        Self {
            lease_manager: lease_manager.into(),
            cluster_key: cluster_key.into(),
            listen,
            advertise: None,
            capacity,
            executor_command,
            executor_env: Vec::new(),
            executor_host: listen.ip(),
            usage_every: Duration::from_secs(1),
            stop_grace: Duration::from_secs(5),
            tls: None,
            sandbox: SandboxConfig::default(),
            max_exec_timeout: DEFAULT_MAX_EXEC_TIMEOUT,
            audit: AuditLog::disabled(),
            metrics_listen: None,
            job: None,
        }
    }
}

impl fmt::Debug for ManagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerConfig")
            .field("lease_manager", &self.lease_manager)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("capacity", &self.capacity)
            .field("executor_command", &self.executor_command)
            .field("executor_host", &self.executor_host)
            .field("usage_every", &self.usage_every)
            .field("stop_grace", &self.stop_grace)
            .field("tls", &self.tls.is_some())
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// The number of NVIDIA GPUs of this host: the `GPU` lines of
/// `nvidia-smi -L`, at most as many as a set `CUDA_VISIBLE_DEVICES` lists;
/// 0 without `nvidia-smi`, or if it fails or takes over 10 s. Never fails.
pub fn detect_gpus() -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("nvidia-smi".into())
        .spawn(move || {
            let out = std::process::Command::new("nvidia-smi")
                .arg("-L")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output();
            let _ = tx.send(out);
        });
    if spawned.is_err() {
        return 0;
    }
    let listed = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("GPU "))
            .count(),
        _ => 0,
    };
    let visible = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).count());
    let n = visible.map_or(listed, |v| v.min(listed));
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Runs the executor manager until `shutdown` completes; then deregisters
/// and stops every executor. Fails only at start: the lookup address cannot
/// be bound, the config is unusable, or the first registration fails.
pub async fn run(cfg: ManagerConfig, shutdown: impl Future) -> Result<(), ManagerError> {
    let Some((program, leading)) = cfg.executor_command.split_first() else {
        return Err(ManagerError::Config("the executor command is empty".into()));
    };
    // The manager holds the cluster key: no process of the same uid may
    // read its memory or environment (/proc/PID/{mem,environ}), nor attach.
    nix::sys::prctl::set_dumpable(false).map_err(|e| ManagerError::Io {
        op: "make the manager non-dumpable",
        source: e.into(),
    })?;
    if let Some(bad) = cfg
        .executor_env
        .iter()
        .find(|(k, _)| !state::allowed_extra_env(k))
    {
        return Err(ManagerError::Config(format!(
            "{} may not be passed to executors",
            bad.0.to_string_lossy()
        )));
    }
    let sandbox = SandboxHost::new(&cfg.sandbox).map_err(ManagerError::Config)?;
    tracing::info!(mode = %cfg.sandbox.mode, "executor sandbox");
    let listener = lookup::bind(cfg.listen)?;
    let local = listener
        .local_addr()
        .map_err(ManagerError::io("bind the lookup service"))?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| local.to_string());
    let fallback_ip = advertise
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(local.ip());
    if fallback_ip.is_unspecified() && cfg.advertise.is_none() {
        tracing::warn!(
            %local,
            "registering an unspecified address; set an advertised address tenants can reach"
        );
    }
    let register = HostClient::register_in_job(
        cfg.lease_manager.as_str(),
        &cfg.cluster_key,
        &advertise,
        cfg.capacity.clone(),
        cfg.job.clone(),
    );
    let (host, commands) = match tokio::time::timeout(REGISTER_WAIT, register).await {
        Ok(r) => r,
        Err(_) => Err(DaemonError::TimedOut("registration")),
    }
    .map_err(|source| ManagerError::Register {
        manager: cfg.lease_manager.clone(),
        source,
    })?;
    tracing::info!(%advertise, host = %host.host_id(), "executor manager registered");

    let directory = Arc::new(Directory::default());
    let _lookup = AbortOnDrop(tokio::spawn(lookup::serve(
        listener,
        directory.clone(),
        cfg.tls.clone(),
    )));
    let devices = DeviceVar::for_host(&cfg.capacity.accelerators, |v| std::env::var(v).ok());
    let shared = Arc::new(Shared {
        host: Mutex::new(host),
        directory,
        program: program.clone(),
        leading: leading.to_vec(),
        extra_env: cfg.executor_env.clone(),
        policy: LaunchPolicy {
            executor_host: cfg.executor_host,
            usage_every: cfg.usage_every,
            devices,
            max_exec_timeout_ms: u64::try_from(cfg.max_exec_timeout.as_millis())
                .unwrap_or(u64::MAX),
        },
        fallback_ip: (!fallback_ip.is_unspecified()).then_some(fallback_ip),
        stop_grace: cfg.stop_grace,
        base_env: state::executor_base_env(std::env::vars_os()),
        sandbox,
        standby: standby::Pool::new(cfg.sandbox.standby),
        audit: cfg.audit.clone(),
        metrics: Arc::new(metrics::ManagerMetrics::new()),
    });
    let _exporter = match cfg.metrics_listen {
        None => None,
        Some(addr) => {
            let m = Arc::clone(&shared.metrics);
            Some(
                rfx_leases::metrics::Exporter::serve(addr, move || m.render())
                    .map_err(ManagerError::io("serve the metrics"))?,
            )
        }
    };
    standby::Pool::fill(&shared);
    let mut driver = Driver {
        shared,
        lease_key: LeaseKey::from_cluster_key(&cfg.cluster_key),
        lease_manager: cfg.lease_manager,
        cluster_key: cfg.cluster_key,
        job: cfg.job,
        advertise,
        capacity: cfg.capacity,
        running: HashMap::new(),
        tasks: JoinSet::new(),
        task_leases: HashMap::new(),
        ended: HashSet::new(),
        unreported: HashMap::new(),
        generation: 0,
    };
    let shutdown = std::pin::pin!(shutdown);
    driver.drive(commands, shutdown).await;
    driver.shutdown().await;
    driver.shared.standby.drain().await;
    driver.shared.sandbox.shutdown();
    Ok(())
}

/// Runs the executor manager on its own tokio runtime until SIGINT or
/// SIGTERM.
pub fn serve(cfg: ManagerConfig) -> Result<(), ManagerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rfx-executor-manager")
        .enable_all()
        .build()
        .map_err(ManagerError::io("start the tokio runtime"))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())
            .map_err(ManagerError::io("install the SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(ManagerError::io("install the SIGINT handler"))?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        run(cfg, stop).await
    })
}

/// A task that ends with its handle: a dropped [`run`] future stops
/// heartbeating and serving lookups.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The executor of a lease the manager runs.
#[derive(Debug)]
struct Running {
    generation: u64,
    /// Sending (or dropping) stops the executor.
    stop: oneshot::Sender<()>,
}

type Reaped = Result<(tokio::task::Id, (LeaseId, u64, Outcome)), JoinError>;

/// The manager's event loop: commands, heartbeats, reaped executors.
struct Driver {
    shared: Arc<Shared>,
    /// Derives the token of each lease started.
    lease_key: LeaseKey,
    lease_manager: String,
    cluster_key: String,
    job: Option<String>,
    advertise: String,
    capacity: Capacity,
    running: HashMap<LeaseId, Running>,
    /// One supervisor per executor, stopped or not.
    tasks: JoinSet<(LeaseId, u64, Outcome)>,
    task_leases: HashMap<tokio::task::Id, (LeaseId, u64)>,
    /// Leases whose executor exited on its own: never started again.
    ended: HashSet<LeaseId>,
    /// Crashes the lease manager has not heard of yet.
    unreported: HashMap<LeaseId, process::Ending>,
    generation: u64,
}

impl Driver {
    async fn drive<F: Future>(&mut self, mut commands: Commands, mut shutdown: Pin<&mut F>) {
        loop {
            let host = self.shared.host();
            let mut beats = AbortOnDrop(tokio::spawn(async move { host.run_heartbeats().await }));
            let lost = loop {
                tokio::select! {
                    _ = shutdown.as_mut() => return,
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => self.handle(cmd),
                        None => break "connection closed".to_owned(),
                    },
                    r = &mut beats.0 => break match r {
                        Ok(Err(e)) => format!("heartbeat failed: {e}"),
                        Ok(Ok(never)) => match never {},
                        Err(e) => format!("heartbeat task ended: {e}"),
                    },
                    Some(done) = self.tasks.join_next_with_id() => self.reaped(done),
                }
            };
            drop(beats);
            tracing::warn!("lost the lease manager ({lost}); registering again");
            match self.reconnect(shutdown.as_mut()).await {
                Some(c) => commands = c,
                None => return,
            }
            self.flush_unreported().await;
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start(s) => {
                let id = s.lease.id;
                if self.running.contains_key(&id) {
                    tracing::debug!(lease = %id, "start of a running lease ignored");
                } else if self.ended.contains(&id) {
                    tracing::warn!(lease = %id, "start of a lease whose executor ended ignored");
                } else {
                    self.start(s);
                }
            }
            Command::Stop { lease } => self.stop(lease),
            Command::Sync(wanted) => {
                let plan = plan_sync(self.running.keys().copied(), wanted, &self.ended);
                for lease in plan.stop {
                    self.stop(lease);
                }
                for s in plan.start {
                    self.start(s);
                }
            }
        }
    }

    fn start(&mut self, s: StartLease) {
        self.generation += 1;
        let generation = self.generation;
        let id = s.lease.id;
        let token = self.lease_key.token(&s.lease);
        let (state_tx, state_rx) = watch::channel(ExecState::Starting);
        self.shared
            .directory
            .insert(id, token.clone(), generation, state_rx);
        let (stop_tx, stop_rx) = oneshot::channel();
        self.running.insert(
            id,
            Running {
                generation,
                stop: stop_tx,
            },
        );
        self.shared.metrics.started();
        let shared = self.shared.clone();
        let task = self.tasks.spawn(async move {
            let outcome = process::supervise(shared, s, token, stop_rx, state_tx).await;
            (id, generation, outcome)
        });
        self.task_leases.insert(task.id(), (id, generation));
    }

    fn stop(&mut self, lease: LeaseId) {
        match self.running.remove(&lease) {
            Some(r) => {
                tracing::info!(%lease, "stopping the executor");
                self.shared.directory.remove(lease, r.generation);
                let _ = r.stop.send(());
            }
            None => tracing::debug!(%lease, "stop of a lease without executor"),
        }
    }

    fn reaped(&mut self, done: Reaped) {
        let (task, outcome) = match done {
            Ok((task, (_, _, outcome))) => (task, Some(outcome)),
            Err(e) => {
                tracing::error!("executor supervisor failed: {e}");
                (e.id(), None)
            }
        };
        let Some((lease, generation)) = self.task_leases.remove(&task) else {
            return;
        };
        if self
            .running
            .get(&lease)
            .is_some_and(|r| r.generation == generation)
        {
            self.running.remove(&lease);
        }
        self.shared.directory.remove(lease, generation);
        self.shared.metrics.ended(match &outcome {
            Some(Outcome::Stopped) => "stopped",
            Some(Outcome::Ended { ending, .. }) if ending.out_of_memory_mib.is_some() => {
                "out_of_memory"
            }
            _ => "crashed",
        });
        match outcome {
            Some(Outcome::Stopped) => {}
            Some(Outcome::Ended { ending, reported }) => {
                self.ended.insert(lease);
                if !reported {
                    self.unreported.insert(lease, ending);
                }
            }
            None => {
                self.ended.insert(lease);
            }
        }
    }

    /// Registers again until it works; `None` if `shutdown` came first.
    async fn reconnect<F: Future>(&mut self, mut shutdown: Pin<&mut F>) -> Option<Commands> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = shutdown.as_mut() => return None,
                    () = &mut pause => break,
                    Some(done) = self.tasks.join_next_with_id() => self.reaped(done),
                }
            }
            let register = HostClient::register_in_job(
                self.lease_manager.as_str(),
                &self.cluster_key,
                &self.advertise,
                self.capacity.clone(),
                self.job.clone(),
            );
            let attempt = tokio::select! {
                _ = shutdown.as_mut() => return None,
                r = tokio::time::timeout(REGISTER_WAIT, register) => r,
            };
            match attempt {
                Ok(Ok((host, commands))) => {
                    tracing::info!(host = %host.host_id(), "registered again");
                    *self.shared.host.lock() = host;
                    return Some(commands);
                }
                Ok(Err(e)) => tracing::warn!("registering again failed: {e}"),
                Err(_) => tracing::warn!("registering again timed out"),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn flush_unreported(&mut self) {
        let host = self.shared.host();
        for (lease, ending) in std::mem::take(&mut self.unreported) {
            if !process::report_crash(&host, lease, &ending).await {
                self.unreported.insert(lease, ending);
            }
        }
    }

    /// Deregisters, then stops every executor and reaps it.
    async fn shutdown(&mut self) {
        tracing::info!(
            executors = self.running.len(),
            "executor manager stopping: deregistering and stopping executors"
        );
        match tokio::time::timeout(REPORT_WAIT, self.shared.host().deregister()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("deregistering failed: {e}"),
            Err(_) => tracing::warn!("deregistering timed out"),
        }
        self.shared.directory.clear();
        for (_, r) in self.running.drain() {
            let _ = r.stop.send(());
        }
        let deadline = tokio::time::Instant::now()
            + self.shared.stop_grace
            + KILL_WAIT
            + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.reaped(done),
                Ok(None) => break,
                Err(_) => {
                    tracing::error!("executors not stopped in time; killing them");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}
