//! The executor manager's client.

use super::conn::{unexpected, Conn};
use crate::error::DaemonError;
use crate::proto::{Capacity, HostId, LeaseId, UsageReport};
use crate::wire::{ClientMsg, Command, ErrorCode, HostRequest, Response};
use futures::Stream;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::ToSocketAddrs;
use tokio::sync::mpsc;

/// An executor manager's connection to the lease manager; clones share it.
///
/// ```no_run
/// # async fn f() -> Result<(), rfx_leases::DaemonError> {
/// use rfx_leases::client::HostClient;
/// use rfx_leases::proto::Capacity;
/// use rfx_leases::wire::Command;
/// let cap = Capacity::new(32, 128 * 1024).with_accelerators("gpu", 2);
/// let (host, mut commands) = HostClient::register("10.0.0.1:7400", "cluster-key", "10.0.0.7:7500", cap).await?;
/// let beats = host.clone();
/// tokio::spawn(async move { beats.run_heartbeats().await });
/// while let Some(cmd) = commands.recv().await {
///     match cmd {
///         // The executor checks the token derived from the lease:
///         // LeaseKey::from_cluster_key("cluster-key").token(&s.lease).
///         Command::Start(s) => { /* spawn an executor for s.lease */ }
///         Command::Stop { lease } => { /* stop it */ }
///         Command::Sync(all) => { /* run exactly these */ }
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HostClient {
    conn: Conn,
    key: Arc<str>,
    addr: Arc<str>,
    capacity: Arc<Capacity>,
    /// The batch job this host runs in, if a provider started it.
    job: Option<Arc<str>>,
    host: Arc<AtomicU64>,
    heartbeat_timeout: Duration,
}

impl fmt::Debug for HostClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostClient")
            .field("host", &self.host_id())
            .field("addr", &self.addr)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl HostClient {
    /// Connects and registers the host, advertised at `addr` (where tenants
    /// reach its executors) with `capacity`. The returned [`Commands`] start
    /// with a [`Command::Sync`] of the leases the host must run.
    pub async fn register(
        manager: impl ToSocketAddrs,
        cluster_key: &str,
        addr: &str,
        capacity: Capacity,
    ) -> Result<(Self, Commands), DaemonError> {
        Self::register_in_job(manager, cluster_key, addr, capacity, None).await
    }

    /// [`register`](Self::register), naming the batch job the host runs in
    /// (`SLURM_JOB_ID`): how a lease manager that asked a scheduler for
    /// hosts knows which job this host is.
    pub async fn register_in_job(
        manager: impl ToSocketAddrs,
        cluster_key: &str,
        addr: &str,
        capacity: Capacity,
        job: Option<String>,
    ) -> Result<(Self, Commands), DaemonError> {
        let (conn, pushes) = Conn::connect(manager).await?;
        let mut client = Self {
            conn,
            key: cluster_key.into(),
            addr: addr.into(),
            capacity: Arc::new(capacity),
            job: job.map(Arc::from),
            host: Arc::new(AtomicU64::new(0)),
            heartbeat_timeout: Duration::ZERO,
        };
        let (host, timeout) = client.register_call().await?;
        client.heartbeat_timeout = timeout;
        tracing::info!(%host, "registered with the lease manager");
        Ok((
            client,
            Commands {
                rx: pushes.commands,
            },
        ))
    }

    /// The host's id.
    pub fn host_id(&self) -> HostId {
        HostId(self.host.load(Ordering::Relaxed))
    }

    /// A host silent this long is marked down.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    /// How often [`run_heartbeats`](Self::run_heartbeats) beats: a third of
    /// the timeout.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.heartbeat_timeout / 3).max(Duration::from_millis(1))
    }

    /// Registers again (same address, same id); a [`Command::Sync`] follows.
    pub async fn register_again(&self) -> Result<HostId, DaemonError> {
        Ok(self.register_call().await?.0)
    }

    /// Tells the lease manager the host is alive.
    pub async fn heartbeat(&self) -> Result<(), DaemonError> {
        let host = self.host_id();
        self.ack(HostRequest::Heartbeat { host }).await
    }

    /// Heartbeats every [`heartbeat_interval`](Self::heartbeat_interval)
    /// until the connection fails; a host marked down (it was silent too
    /// long) registers again and gets a [`Command::Sync`].
    pub async fn run_heartbeats(&self) -> Result<Infallible, DaemonError> {
        let mut tick = tokio::time::interval(self.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.heartbeat().await {
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::HostDown) => {
                    tracing::warn!("lease manager marked this host down; registering again");
                    self.register_again().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds usage of `lease` since the previous report.
    pub async fn report_usage(
        &self,
        lease: LeaseId,
        delta: &UsageReport,
    ) -> Result<(), DaemonError> {
        let host = self.host_id();
        let delta = delta.clone();
        self.ack(HostRequest::UsageReport { host, lease, delta })
            .await
    }

    /// Reports that the executor of `lease` died: the lease is lost and its
    /// tenant told.
    pub async fn report_crash(&self, lease: LeaseId, reason: &str) -> Result<(), DaemonError> {
        self.report_end(lease, reason, None).await
    }

    /// Reports that the executor of `lease` ended: crashed, or killed by
    /// the OOM killer over `out_of_memory_mib` (the lease's limit).
    pub async fn report_end(
        &self,
        lease: LeaseId,
        reason: &str,
        out_of_memory_mib: Option<u64>,
    ) -> Result<(), DaemonError> {
        let host = self.host_id();
        let reason = reason.to_owned();
        self.ack(HostRequest::ExecutorCrashed {
            host,
            lease,
            reason,
            out_of_memory_mib,
        })
        .await
    }

    /// Takes the host out of service: its leases are lost.
    pub async fn deregister(&self) -> Result<(), DaemonError> {
        let host = self.host_id();
        self.ack(HostRequest::Deregister { host }).await
    }

    async fn register_call(&self) -> Result<(HostId, Duration), DaemonError> {
        let req = HostRequest::Register {
            addr: self.addr.to_string(),
            capacity: Capacity::clone(&self.capacity),
            job: self.job.as_deref().map(str::to_owned),
        };
        match self.call(req).await? {
            Response::Registered {
                host,
                heartbeat_timeout_ms,
            } => {
                self.host.store(host.0, Ordering::Relaxed);
                Ok((host, Duration::from_millis(heartbeat_timeout_ms)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn ack(&self, req: HostRequest) -> Result<(), DaemonError> {
        match self.call(req).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn call(&self, req: HostRequest) -> Result<Response, DaemonError> {
        let key = self.key.to_string();
        self.conn.call(|id| ClientMsg::Host { id, key, req }).await
    }
}

/// Commands pushed to an executor manager. Ends when the connection closes.
#[derive(Debug)]
pub struct Commands {
    rx: mpsc::Receiver<Command>,
}

impl Commands {
    /// The next command; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Command> {
        self.rx.recv().await
    }

    /// A command if one is queued.
    pub fn try_recv(&mut self) -> Option<Command> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Commands {
    type Item = Command;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        self.rx.poll_recv(cx)
    }
}
