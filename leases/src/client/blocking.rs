//! Synchronous wrappers for the CLI: each client runs its async twin on a
//! private current-thread tokio runtime, and every call has a time limit.
//!
//! Do not use these from inside an async runtime (tokio refuses to block
//! there); use the async clients.
//!
//! ```no_run
//! use rfx_leases::client::blocking::TenantClient;
//! use rfx_leases::proto::LeaseRequest;
//! let alice = TenantClient::connect("10.0.0.1:7400", "alice.0123...")?;
//! for info in alice.list()? {
//!     println!("{} on {}: {}", info.lease.id, info.host_addr, info.lease.state);
//! }
//! # Ok::<(), rfx_leases::DaemonError>(())
//! ```

use crate::error::DaemonError;
use crate::proto::{Event, Host, LeaseId, LeaseRequest, Millis, Quota, TenantId, TicketId, Usage};
use crate::wire::{JobInfo, LeaseInfo, TenantInfo, TicketInfo};
use std::future::Future;
use std::time::Duration;
use tokio::runtime::Runtime;

/// The time limit of each call unless changed with `set_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A private runtime and a time limit.
#[derive(Debug)]
struct Rt {
    rt: Runtime,
    timeout: Duration,
}

impl Rt {
    fn new() -> Result<Self, DaemonError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DaemonError::io("start a tokio runtime"))?;
        Ok(Self {
            rt,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    fn run<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T, DaemonError>>,
    ) -> Result<T, DaemonError> {
        self.rt.block_on(async {
            tokio::time::timeout(self.timeout, f)
                .await
                .map_err(|_| DaemonError::TimedOut(what))?
        })
    }
}

/// The blocking [`TenantClient`](super::TenantClient).
#[derive(Debug)]
pub struct TenantClient {
    inner: super::TenantClient,
    rt: Rt,
}

impl TenantClient {
    /// Connects to `addr` (`host:port`) and checks the token.
    pub fn connect(addr: &str, token: &str) -> Result<Self, DaemonError> {
        let rt = Rt::new()?;
        let inner = rt.run("connect", super::TenantClient::connect(addr, token))?;
        Ok(Self { inner, rt })
    }

    /// Sets the time limit of each later call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.rt.timeout = timeout;
    }

    /// The tenant this client's token belongs to.
    pub fn tenant(&self) -> &TenantId {
        self.inner.tenant()
    }

    /// See [`super::TenantClient::create_lease`].
    pub fn create_lease(&self, req: &LeaseRequest) -> Result<LeaseInfo, DaemonError> {
        self.rt.run("create lease", self.inner.create_lease(req))
    }

    /// See [`super::TenantClient::list`].
    pub fn list(&self) -> Result<Vec<LeaseInfo>, DaemonError> {
        self.rt.run("list leases", self.inner.list())
    }

    /// See [`super::TenantClient::show`].
    pub fn show(&self, lease: LeaseId) -> Result<LeaseInfo, DaemonError> {
        self.rt.run("show lease", self.inner.show(lease))
    }

    /// See [`super::TenantClient::renew`].
    pub fn renew(&self, lease: LeaseId, extra_ms: u64) -> Result<Millis, DaemonError> {
        self.rt
            .run("renew lease", self.inner.renew(lease, extra_ms))
    }

    /// See [`super::TenantClient::release`].
    pub fn release(&self, lease: LeaseId) -> Result<Usage, DaemonError> {
        self.rt.run("release lease", self.inner.release(lease))
    }

    /// See [`super::TenantClient::usage`].
    pub fn usage(&self, lease: LeaseId) -> Result<Usage, DaemonError> {
        self.rt.run("lease usage", self.inner.usage(lease))
    }

    /// See [`super::TenantClient::queue_lease`].
    pub fn queue_lease(
        &self,
        req: &LeaseRequest,
        count: u32,
        wait_ms: u64,
    ) -> Result<TicketInfo, DaemonError> {
        self.rt
            .run("queue lease", self.inner.queue_lease(req, count, wait_ms))
    }

    /// See [`super::TenantClient::ticket`].
    pub fn ticket(&self, ticket: TicketId) -> Result<TicketInfo, DaemonError> {
        self.rt.run("show ticket", self.inner.ticket(ticket))
    }

    /// See [`super::TenantClient::tickets`].
    pub fn tickets(&self) -> Result<Vec<TicketInfo>, DaemonError> {
        self.rt.run("list tickets", self.inner.tickets())
    }

    /// See [`super::TenantClient::cancel_ticket`].
    pub fn cancel_ticket(&self, ticket: TicketId) -> Result<(), DaemonError> {
        self.rt
            .run("cancel ticket", self.inner.cancel_ticket(ticket))
    }

    /// The next pushed event, waiting at most `wait`; `None` if none came
    /// or the connection closed.
    pub fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let inner = &mut self.inner;
        self.rt
            .rt
            .block_on(async { tokio::time::timeout(wait, inner.next_event()).await })
            .ok()
            .flatten()
    }
}

/// The blocking [`AdminClient`](super::AdminClient).
#[derive(Debug)]
pub struct AdminClient {
    inner: super::AdminClient,
    rt: Rt,
}

impl AdminClient {
    /// Connects to `addr` (`host:port`); the key is checked on each request.
    pub fn connect(addr: &str, cluster_key: &str) -> Result<Self, DaemonError> {
        let rt = Rt::new()?;
        let inner = rt.run("connect", super::AdminClient::connect(addr, cluster_key))?;
        Ok(Self { inner, rt })
    }

    /// Sets the time limit of each later call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.rt.timeout = timeout;
    }

    /// See [`super::AdminClient::add_tenant`].
    pub fn add_tenant(&self, name: &str) -> Result<String, DaemonError> {
        self.rt.run("add tenant", self.inner.add_tenant(name))
    }

    /// See [`super::AdminClient::list_tenants`].
    pub fn list_tenants(&self) -> Result<Vec<TenantInfo>, DaemonError> {
        self.rt.run("list tenants", self.inner.list_tenants())
    }

    /// See [`super::AdminClient::list_hosts`].
    pub fn list_hosts(&self) -> Result<Vec<Host>, DaemonError> {
        self.rt.run("list hosts", self.inner.list_hosts())
    }

    /// See [`super::AdminClient::set_quota`].
    pub fn set_quota(&self, tenant: &str, quota: &Quota) -> Result<(), DaemonError> {
        self.rt
            .run("set quota", self.inner.set_quota(tenant, quota))
    }

    /// See [`super::AdminClient::jobs`].
    pub fn jobs(&self) -> Result<Vec<JobInfo>, DaemonError> {
        self.rt.run("list jobs", self.inner.jobs())
    }

    /// See [`super::AdminClient::queue`].
    pub fn queue(&self) -> Result<Vec<TicketInfo>, DaemonError> {
        self.rt.run("list queue", self.inner.queue())
    }
}
