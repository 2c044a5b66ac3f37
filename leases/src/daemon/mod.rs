//! The lease manager daemon: the only module that knows tokio, the store
//! and the wall clock.
//!
//! One task owns the [`proto::Manager`](crate::proto::Manager) (the
//! *core*): connection tasks send it each request over an mpsc channel
//! with a oneshot for the reply; a timer sleeps until
//! [`poll_timeout`](crate::proto::Manager::poll_timeout). After each input
//! the core drains the manager's outputs in order: every
//! [`StoreOp`](crate::proto::StoreOp) of the input is committed durably in
//! one transaction first, then host commands and tenant events are pushed,
//! then the reply is sent. A failed commit stops the daemon (its memory is
//! then ahead of the store; a restart replays the store).
//!
//! Times in leases are milliseconds since the Unix epoch.
//!
//! Auditing: with an [`AuditLog`] in [`DaemonConfig::audit`] (off by
//! default), the core appends a line for every lease granted, refused,
//! renewed, released, expired or lost, every tenant added, every host
//! registered, deregistered or marked down, every executor crash reported
//! and every refused credential, in the order they happened, once their
//! effects are durable (see [`crate::audit`]).
//!
//! Tenants are managed on the store directly ([`add_tenant`],
//! [`list_tenants`]) while the daemon is stopped; redb locks the store file,
//! so while it runs these fail with
//! [`DaemonError::StoreLocked`] and tenants are added through the daemon
//! ([`AdminRequest::AddTenant`](crate::wire::AdminRequest::AddTenant),
//! [`AdminClient`](crate::client::AdminClient)), authenticated by the
//! cluster key.
//!
//! ```no_run
//! use rfx_leases::daemon::{self, DaemonConfig};
//! let cfg = DaemonConfig::new("0.0.0.0:7400".parse()?, "/var/lib/rfx/leases.redb".into(), "cluster-secret".into());
//! let token = daemon::add_tenant(&cfg.db_path, "alice")?; // shown once
//! daemon::serve(cfg)?; // until SIGINT or SIGTERM
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod core;
mod provider;

pub use provider::ProviderConfig;

use crate::audit::AuditLog;
use crate::auth::{self, ClusterKey};
use crate::error::DaemonError;
use crate::proto::{Config, Manager, Millis};
use crate::store::Store;
use crate::wire::{LeaseKey, TenantInfo};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Requests queued to the core before connection tasks wait.
const CORE_QUEUE: usize = 1024;

/// How the daemon runs.
#[derive(Clone)]
pub struct DaemonConfig {
    /// Where to listen for tenants, executor managers and operators.
    pub listen: SocketAddr,
    /// The store file (created if missing, mode 0600; it holds the lease
    /// log and hashed tenant tokens, no lease secret).
    pub db_path: PathBuf,
    /// The secret shared with executor managers and operators
    /// (`RFX_CLUSTER_KEY`); must not be empty. Lease tokens are derived
    /// from it ([`LeaseKey`]): changing it changes every lease's token.
    pub cluster_key: String,
    /// A host silent for this long is marked down and its leases lost.
    pub heartbeat_timeout: Duration,
    /// Longest a lease may run ahead of now.
    pub max_lease: Duration,
    /// How long ended leases stay visible; `None` keeps them forever.
    pub retain_finished: Option<Duration>,
    /// A connection that sends no hello within this is closed.
    pub hello_timeout: Duration,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Serve TLS instead of plain TCP ([`crate::tls`]).
    pub tls: Option<crate::tls::TlsServer>,
    /// The lease log is rewritten as a checkpoint of the state once it
    /// holds this many ops (and at least twice as many as the checkpoint):
    /// every usage report is an op, so the log would otherwise grow for as
    /// long as executors run, and so would the replay at each start.
    pub compact_after_ops: usize,
    /// Where tenant, host and operator actions are recorded
    /// ([`crate::audit`]); [`AuditLog::disabled`] (the default) records
    /// nothing.
    pub audit: AuditLog,
    /// Serve Prometheus metrics at `http://ADDR/metrics` ([`crate::metrics`]).
    pub metrics_listen: Option<SocketAddr>,
    /// Ask a batch scheduler for hosts when requests wait, and give idle
    /// ones back ([`crate::provision`]); `None`: the hosts are whatever
    /// registers.
    pub provider: Option<ProviderConfig>,
}

impl DaemonConfig {
    /// A config with the defaults of [`proto::Config`](Config) (10 s
    /// heartbeat timeout, 24 h leases, ended leases kept 1 h), a 10 s hello
    /// timeout, 4096 connections and no audit log.
    pub fn new(listen: SocketAddr, db_path: PathBuf, cluster_key: String) -> Self {
        let d = Config::default();
        Self {
            listen,
            db_path,
            cluster_key,
            heartbeat_timeout: Duration::from_millis(d.heartbeat_timeout_ms),
            max_lease: Duration::from_millis(d.max_lease_ms),
            retain_finished: d.retain_finished_ms.map(Duration::from_millis),
            hello_timeout: Duration::from_secs(10),
            max_connections: 4096,
            tls: None,
            compact_after_ops: 10_000,
            audit: AuditLog::disabled(),
            metrics_listen: None,
            provider: None,
        }
    }

    fn proto(&self) -> Config {
        Config {
            heartbeat_timeout_ms: millis(self.heartbeat_timeout),
            max_lease_ms: millis(self.max_lease),
            retain_finished_ms: self.retain_finished.map(millis),
            ..Config::default()
        }
    }
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("listen", &self.listen)
            .field("db_path", &self.db_path)
            .field("cluster_key", &"<secret>")
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("max_lease", &self.max_lease)
            .field("retain_finished", &self.retain_finished)
            .field("hello_timeout", &self.hello_timeout)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .field("compact_after_ops", &self.compact_after_ops)
            .field("audit", &self.audit)
            .finish()
    }
}

/// A daemon with its store opened and replayed and its socket bound, not
/// yet serving.
#[derive(Debug)]
pub struct Daemon {
    listener: TcpListener,
    core: core::Core,
    hello_timeout: Duration,
    max_connections: usize,
    tls: Option<crate::tls::TlsServer>,
    metrics_listen: Option<SocketAddr>,
}

impl Daemon {
    /// Opens the store, replays the lease log and binds the listening socket.
    pub async fn bind(cfg: DaemonConfig) -> Result<Self, DaemonError> {
        let key = ClusterKey::new(&cfg.cluster_key)?;
        let path = cfg.db_path.clone();
        let (store, loaded) = blocking(move || {
            let store = Store::open(&path)?;
            let loaded = store.load()?;
            Ok((store, loaded))
        })
        .await?;
        let n_ops = loaded.ops.len();
        let mgr =
            Manager::replay(cfg.proto(), now_ms(), loaded.ops).map_err(DaemonError::Replay)?;
        tracing::info!(
            store = %cfg.db_path.display(),
            ops = n_ops,
            leases = mgr.state().leases().filter(|l| l.is_active()).count(),
            tenants = loaded.tenants.len(),
            "lease log replayed"
        );
        if let Some(path) = cfg.audit.path() {
            tracing::info!(audit_log = %path.display(), "auditing tenant, host and operator actions");
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(DaemonError::io("bind the lease manager socket"))?;
        let lease_key = LeaseKey::from_cluster_key(&cfg.cluster_key);
        let log = core::LogSize::new(n_ops, cfg.compact_after_ops);
        let core = core::Core::new(
            mgr,
            Arc::new(store),
            loaded.tenants,
            key,
            lease_key,
            log,
            cfg.audit,
        )
        .with_provider(cfg.provider);
        Ok(Self {
            listener,
            core,
            hello_timeout: cfg.hello_timeout,
            max_connections: cfg.max_connections,
            tls: cfg.tls,
            metrics_listen: cfg.metrics_listen,
        })
    }

    /// The address the daemon listens on (the real port if it bound port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, DaemonError> {
        self.listener
            .local_addr()
            .map_err(DaemonError::io("read the listening address"))
    }

    /// Serves until `shutdown` completes (then returns `Ok`), or until the
    /// store fails (then returns the error). Every acknowledged change is
    /// already durable when this returns or is dropped.
    pub async fn run<F: Future>(self, shutdown: F) -> Result<(), DaemonError> {
        let (tx, rx) = mpsc::channel(CORE_QUEUE);
        // The exporter asks the core for each scrape (its own thread).
        let _exporter = match self.metrics_listen {
            None => None,
            Some(addr) => {
                let tx = tx.clone();
                let render = move || {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    tx.blocking_send(core::CoreMsg::Metrics { reply })
                        .map_err(|_| "the lease manager is stopping".to_string())?;
                    answer
                        .blocking_recv()
                        .map_err(|_| "the lease manager is stopping".to_string())?
                };
                Some(
                    crate::metrics::Exporter::serve(addr, render)
                        .map_err(DaemonError::io("serve the metrics"))?,
                )
            }
        };
        let core = self.core.run(rx);
        tokio::pin!(core, shutdown);
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut conns = JoinSet::new();
        let mut next_conn: core::ConnId = 0;
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("lease manager shutting down");
                    return Ok(());
                }
                res = &mut core => return res,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::warn!(%peer, "too many connections; closing");
                            continue;
                        };
                        next_conn = next_conn.wrapping_add(1);
                        let (id, tx, hello) = (next_conn, tx.clone(), self.hello_timeout);
                        let tls = self.tls.clone();
                        conns.spawn(async move {
                            // Small request/reply frames: do not wait to coalesce.
                            let _ = stream.set_nodelay(true);
                            let stream = match tls {
                                None => crate::tls::Stream::Plain(stream),
                                // The TLS handshake is bounded like the hello.
                                Some(t) => match tokio::time::timeout(hello, t.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::warn!(%peer, "TLS handshake failed: {e}");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::warn!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                },
                            };
                            conn::serve(stream, peer, id, tx, hello).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next() => {}
            }
        }
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run<F: Future>(cfg: DaemonConfig, shutdown: F) -> Result<(), DaemonError> {
    Daemon::bind(cfg).await?.run(shutdown).await
}

/// Runs the daemon on a new multi-threaded tokio runtime until SIGINT or
/// SIGTERM.
pub fn serve(cfg: DaemonConfig) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::io("start the tokio runtime"))?;
    rt.block_on(async {
        let daemon = Daemon::bind(cfg).await?;
        tracing::info!(addr = %daemon.local_addr()?, "lease manager listening");
        daemon.run(termination()).await
    })
}

/// Adds a tenant to a store no daemon holds; returns its token, which is
/// stored only as a salted hash: show it once.
pub fn add_tenant(db_path: &Path, name: &str) -> Result<String, DaemonError> {
    auth::validate_name(name)?;
    let store = Store::open(db_path)?;
    let (record, token) = auth::new_tenant(name, now_ms())?;
    store.add_tenant(name, &record)?;
    Ok(token)
}

/// The tenants of a store no daemon holds, by name.
pub fn list_tenants(db_path: &Path) -> Result<Vec<TenantInfo>, DaemonError> {
    let store = Store::open(db_path)?;
    Ok(store
        .tenants()?
        .iter()
        .map(|(name, r)| r.info(name))
        .collect())
}

/// Completes on SIGINT or SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs blocking store work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, DaemonError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DaemonError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Internal(format!("store task: {e}")))?
}

/// The wall clock, in ms since the Unix epoch.
fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
