//! The tenant's side in one place: lease slots, find the leased executor,
//! invoke on it, release, with errors that say which step failed.
//!
//! ```no_run
//! use rfx::client::InvokerConfig;
//! use rfx::executors::session::LibrarySource;
//! use rfx::leases::proto::LeaseRequest;
//!
//! # fn main() -> Result<(), rfx::tenant::TenantError> {
//! let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default())?;
//! let tenant = rfx::tenant::Tenant::connect("127.0.0.1:7600", "alice.0123...")?;
//! let lease = tenant.lease(&LeaseRequest::new(1, 600_000))?;
//! let lib = LibrarySource::Path("/opt/functions/libfunctions.so".into());
//! let mut inv = lease.invoker(&fabric, lib, &["echo"], InvokerConfig::default())?;
//! assert_eq!(inv.invoke("echo", b"hi")?, b"hi");
//! let ticket = inv.submit("echo", b"later")?; // returns at once; redeem with wait
//! assert_eq!(inv.wait(ticket)?, b"later");
//! drop(inv);
//! let usage = lease.release()?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rfx_executors::client::{GoneProbe, InvokeError, Invoker, InvokerConfig};
use rfx_executors::group::{Group, Member};
use rfx_executors::lookup::{lookup_executor, lookup_executor_found, LookupError, TimedOut};
use rfx_executors::session::LibrarySource;
use rfx_fabric::{Fabric, FabricError};
use rfx_leases::client::blocking::TenantClient;
use rfx_leases::proto::{LeaseId, LeaseRequest, TicketId, TicketOutcome, Usage};
use rfx_leases::wire::LeaseInfo;
use rfx_leases::DaemonError;

/// Which step of the tenant's path failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// The lease manager refused or could not be reached.
    #[error("lease manager: {0}")]
    Lease(#[from] DaemonError),
    /// The lease's executor could not be found at its host.
    #[error("finding the executor: {0}")]
    Lookup(#[from] LookupError),
    /// Connecting or invoking failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The transport could not be opened.
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// A queued request was not granted within its wait.
    #[error("not granted within {waited_s:.1} s (queued request {ticket}: {reason})")]
    NotGranted {
        /// The request's ticket.
        ticket: TicketId,
        /// How long it waited.
        waited_s: f64,
        /// How it ended, or why it still waited.
        reason: String,
    },
}

/// A tenant connected to a lease manager. Cheap to clone: clones share
/// the connection, and its leases keep it alive.
#[derive(Debug, Clone)]
pub struct Tenant {
    client: Arc<TenantClient>,
}

impl Tenant {
    /// Connects with the tenant's secret token (from `rfx tenant add`).
    pub fn connect(lease_manager: &str, token: &str) -> Result<Tenant, TenantError> {
        Ok(Tenant {
            client: Arc::new(TenantClient::connect(lease_manager, token)?),
        })
    }

    /// The underlying client, for listing, renewing and usage.
    pub fn client(&self) -> &TenantClient {
        &self.client
    }

    /// Leases slots and waits until their executor listens.
    pub fn lease(&self, req: &LeaseRequest) -> Result<Lease, TenantError> {
        let info = self.client.create_lease(req)?;
        self.attach(info)
    }

    /// Leases slots, waiting up to `wait` for capacity if none is free
    /// now: the request is queued in the lease manager (durably, and
    /// served fairly between tenants; see docs/deploy.md).
    pub fn lease_wait(&self, req: &LeaseRequest, wait: Duration) -> Result<Lease, TenantError> {
        let mut leases = self.queued(req, 1, wait)?;
        Ok(leases.remove(0))
    }

    /// [`lease_group`](Self::lease_group), waiting up to `wait` for room
    /// for all `n` at once (all or nothing, queued as one request).
    pub fn lease_group_wait(
        &self,
        n: usize,
        req: &LeaseRequest,
        wait: Duration,
    ) -> Result<LeaseGroup, TenantError> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(LeaseGroup {
            leases: self.queued(req, n, wait)?,
        })
    }

    /// Queues `count` leases and waits for their grant, polling the ticket
    /// (from every 10 ms to every 200 ms) until it ends.
    fn queued(
        &self,
        req: &LeaseRequest,
        count: u32,
        wait: Duration,
    ) -> Result<Vec<Lease>, TenantError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let started = Instant::now();
        let mut info = self.client.queue_lease(req, count, wait_ms)?;
        let id = info.ticket.id;
        let mut pause = Duration::from_millis(10);
        // The lease manager times the ticket out; this bound only guards
        // against one that stopped answering.
        let give_up = wait + Duration::from_secs(5);
        loop {
            match &info.ticket.outcome {
                Some(TicketOutcome::Granted(_)) => {
                    return info.leases.into_iter().map(|l| self.attach(l)).collect();
                }
                Some(other) => {
                    return Err(TenantError::NotGranted {
                        ticket: id,
                        waited_s: started.elapsed().as_secs_f64(),
                        reason: match other {
                            TicketOutcome::Cancelled => "cancelled".into(),
                            _ => "timed out".into(),
                        },
                    })
                }
                None if started.elapsed() > give_up => {
                    return Err(TenantError::NotGranted {
                        ticket: id,
                        waited_s: started.elapsed().as_secs_f64(),
                        reason: info.reason.unwrap_or_default(),
                    })
                }
                None => {}
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
            info = self.client.ticket(id)?;
        }
    }

    /// An existing lease of this tenant.
    pub fn existing(&self, id: LeaseId) -> Result<Lease, TenantError> {
        let info = self.client.show(id)?;
        self.attach(info)
    }

    /// Leases `n` slots for a group invocation, one lease per instance
    /// (each with `req`'s cores, memory and accelerators, so that placement
    /// honours them per instance and spreads the instances). All or
    /// nothing: if one lease is refused, those granted are released.
    pub fn lease_group(&self, n: usize, req: &LeaseRequest) -> Result<LeaseGroup, TenantError> {
        let mut leases = Vec::with_capacity(n);
        for _ in 0..n {
            match self.lease(req) {
                Ok(l) => leases.push(l),
                Err(e) => {
                    for l in leases {
                        let id = l.info.lease.id;
                        if let Err(r) = l.release() {
                            tracing::warn!(lease = %id, "releasing after a failed group lease: {r}");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(LeaseGroup { leases })
    }

    fn attach(&self, info: LeaseInfo) -> Result<Lease, TenantError> {
        let executor = find_executor(&info.host_addr, info.lease.id, &info.token.to_hex())?;
        Ok(Lease {
            client: self.client.clone(),
            info,
            executor: Arc::new(parking_lot::Mutex::new(executor)),
        })
    }
}

/// A granted lease and where its executor listens.
#[derive(Debug)]
pub struct Lease {
    client: Arc<TenantClient>,
    info: LeaseInfo,
    /// Where its executor listens (moved by a restart after a time limit).
    executor: Arc<parking_lot::Mutex<SocketAddr>>,
}

impl Lease {
    /// What the lease manager granted (id, cores, devices, expiry, token).
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// The executor's address.
    pub fn executor(&self) -> SocketAddr {
        *self.executor.lock()
    }

    /// Connects to the executor (one worker per connection), ships
    /// `library` and resolves `functions`.
    ///
    /// When the executor goes away under an invocation, the invoker asks
    /// the executor manager why: a function past the lease's time limit
    /// gives [`InvokeError::FunctionTimedOut`] (that invocation) or
    /// [`InvokeError::ExecutorRestarted`] (the others); call `invoker`
    /// again to reach the restarted executor.
    pub fn invoker(
        &self,
        fabric: &Fabric,
        library: LibrarySource,
        functions: &[&str],
        mut cfg: InvokerConfig,
    ) -> Result<Invoker, TenantError> {
        let token = self.info.token.to_hex();
        if cfg.explain_gone.is_none() {
            let (host, lease, token) = (
                self.info.host_addr.clone(),
                self.info.lease.id,
                token.clone(),
            );
            let current = self.executor.clone();
            cfg.explain_gone = Some(GoneProbe::new(move |old| {
                let (moved, timed_out) = restart_of(&host, lease, &token, old)?;
                *current.lock() = moved;
                timed_out
            }));
        }
        Ok(Invoker::connect(
            fabric,
            self.executor(),
            token.as_bytes(),
            library,
            functions,
            cfg,
        )?)
    }

    /// What the lease used so far.
    pub fn usage(&self) -> Result<Usage, TenantError> {
        Ok(self.client.usage(self.info.lease.id)?)
    }

    /// Ends the lease; returns its usage as the lease manager knows it
    /// now. The executor's last report (what it served since its previous
    /// one, at most a few hundred ms) lands right after, when it stops:
    /// `tenant.client().usage(id)` then has the final figures.
    pub fn release(self) -> Result<Usage, TenantError> {
        Ok(self.client.release(self.info.lease.id)?)
    }
}

/// Asks the executor manager at `host` whether the executor of `lease`
/// that listened at `old` was restarted for a time limit: waits (bounded)
/// until the manager has seen it go and answers with the new executor's
/// restart reason; `None` when it was not a time limit or nobody knows.
fn restart_of(
    host: &str,
    lease: LeaseId,
    token: &str,
    old: SocketAddr,
) -> Option<(SocketAddr, Option<TimedOut>)> {
    let tls = rfx_leases::tls::TlsClient::from_env().ok().flatten();
    let deadline = Instant::now() + RESTART_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match lookup_executor_found(host, lease, token, left, tls.as_ref()) {
            // The manager has not seen the old executor go yet.
            Ok(found) if found.addr == old => {}
            Ok(found) => return Some((found.addr, found.timed_out)),
            Err(LookupError::LookupRefused { message, .. }) if message.contains("starting") => {}
            Err(_) => return None,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long an invoker waits for the manager to say why its executor went.
const RESTART_WAIT: Duration = Duration::from_secs(5);

/// When [`Retrying`] tries again: only after infrastructure failures (the
/// executor died, its connection broke, no answer in time, its lease was
/// lost), never after the function's own failure, which would repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 50 ms then 100 ms apart.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// Whether `e` is worth another attempt on a fresh lease.
    pub fn retryable(e: &TenantError) -> bool {
        matches!(
            e,
            TenantError::Invoke(
                InvokeError::ExecutorGone(_)
                    | InvokeError::ExecutorRestarted(_)
                    | InvokeError::Timeout(_)
                    | InvokeError::Fabric(_),
            ) | TenantError::Lookup(_)
        )
    }
}

/// Invocations that survive the loss of their executor, as funcX retries
/// tasks whose worker was lost: on an infrastructure failure the lease is
/// given up, a new one is taken, the library shipped again, and the
/// invocation repeated (so only for idempotent functions), up to the
/// policy's attempts.
///
/// ```no_run
/// # use rfx::tenant::{Retrying, RetryPolicy, Tenant};
/// # use rfx::leases::proto::LeaseRequest;
/// # use rfx::executors::session::LibrarySource;
/// # fn main() -> Result<(), rfx::tenant::TenantError> {
/// let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default())?;
/// let tenant = Tenant::connect("127.0.0.1:7600", "alice.0123...")?;
/// let lib = LibrarySource::Path("/opt/fn/librfx_example_functions.so".into());
/// let mut r = Retrying::new(&tenant, &fabric, LeaseRequest::new(1, 600_000), lib, &["echo"],
///                           Default::default(), RetryPolicy::default());
/// assert_eq!(r.invoke("echo", b"hi")?, b"hi");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Retrying {
    tenant: Tenant,
    fabric: Fabric,
    req: LeaseRequest,
    library: LibrarySource,
    functions: Vec<String>,
    cfg: InvokerConfig,
    policy: RetryPolicy,
    /// The lease in use, and its connection (none after a restart for a
    /// time limit: made again on the next call).
    current: Option<(Lease, Option<Invoker>)>,
    retries: u64,
}

impl Retrying {
    /// Nothing leased yet: the first invocation leases.
    pub fn new(
        tenant: &Tenant,
        fabric: &Fabric,
        req: LeaseRequest,
        library: LibrarySource,
        functions: &[&str],
        cfg: InvokerConfig,
        policy: RetryPolicy,
    ) -> Self {
        Retrying {
            tenant: tenant.clone(),
            fabric: fabric.clone(),
            req,
            library,
            functions: functions.iter().map(|f| f.to_string()).collect(),
            cfg,
            policy,
            current: None,
            retries: 0,
        }
    }

    /// Retries so far (attempts beyond the first of each invocation).
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// The lease in use, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.current.as_ref().map(|(l, _)| l)
    }

    fn connected(&mut self) -> Result<&mut Invoker, TenantError> {
        if self.current.is_none() {
            let lease = self.tenant.lease(&self.req)?;
            self.current = Some((lease, None));
        }
        let names: Vec<&str> = self.functions.iter().map(String::as_str).collect();
        match &mut self.current {
            Some((lease, inv)) => match inv {
                Some(i) => Ok(i),
                None => Ok(inv.insert(lease.invoker(
                    &self.fabric,
                    self.library.clone(),
                    &names,
                    self.cfg.clone(),
                )?)),
            },
            None => Err(TenantError::Invoke(InvokeError::Protocol(
                "no lease after leasing".into(),
            ))),
        }
    }

    /// Drops the connection, keeping the lease (its executor restarted).
    fn reconnect_later(&mut self) {
        if let Some((_, inv)) = &mut self.current {
            *inv = None;
        }
    }

    /// Gives the current lease up (best effort: it may be lost already).
    fn abandon(&mut self) {
        if let Some((lease, inv)) = self.current.take() {
            drop(inv);
            let id = lease.info().lease.id;
            if let Err(e) = lease.release() {
                tracing::debug!(lease = %id, "releasing a failed lease: {e}");
            }
        }
    }

    /// Invokes `function`, on a fresh lease after each infrastructure
    /// failure, up to the policy's attempts; the last error otherwise.
    pub fn invoke(&mut self, function: &str, input: &[u8]) -> Result<Vec<u8>, TenantError> {
        let mut backoff = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let r = self
                .connected()
                .and_then(|inv| inv.invoke(function, input).map_err(TenantError::from));
            match r {
                // Not retried (it would run past the limit again), but the
                // lease goes on: the next call reaches its new executor.
                Err(e @ TenantError::Invoke(InvokeError::FunctionTimedOut { .. })) => {
                    self.reconnect_later();
                    return Err(e);
                }
                // Restarted under it: the same lease, a new connection.
                Err(TenantError::Invoke(InvokeError::ExecutorRestarted(why)))
                    if attempt < self.policy.max_attempts =>
                {
                    tracing::info!(
                        attempt,
                        "executor restarted ({why}); retrying on the same lease"
                    );
                    self.reconnect_later();
                    attempt += 1;
                    self.retries += 1;
                }
                Err(e) if RetryPolicy::retryable(&e) && attempt < self.policy.max_attempts => {
                    tracing::info!(attempt, "invocation failed ({e}); retrying on a new lease");
                    self.abandon();
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                    self.retries += 1;
                }
                Err(e) => {
                    if RetryPolicy::retryable(&e) {
                        self.abandon();
                    }
                    return Err(e);
                }
                Ok(out) => return Ok(out),
            }
        }
    }

    /// Releases the lease in use, if any.
    pub fn release(mut self) -> Result<(), TenantError> {
        if let Some((lease, inv)) = self.current.take() {
            drop(inv);
            lease.release()?;
        }
        Ok(())
    }
}

/// The leases of a group invocation, one per instance (rank order).
#[derive(Debug)]
pub struct LeaseGroup {
    leases: Vec<Lease>,
}

impl LeaseGroup {
    /// The leases, by rank.
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// The leases, by rank, each on its own from here.
    pub fn into_leases(self) -> Vec<Lease> {
        self.leases
    }

    /// Connects to every instance's executor and wires their communicator
    /// (see [`rfx_executors::group`]).
    pub fn group(
        &self,
        fabric: &Fabric,
        library: LibrarySource,
        functions: &[&str],
        cfg: InvokerConfig,
    ) -> Result<Group, TenantError> {
        let members: Vec<Member> = self
            .leases
            .iter()
            .map(|l| Member {
                addr: l.executor(),
                token: l.info.token.to_hex().into_bytes(),
            })
            .collect();
        Ok(Group::connect(fabric, &members, library, functions, cfg)?)
    }

    /// Ends every lease; their final usage, by rank (the first error after
    /// trying them all).
    pub fn release(self) -> Result<Vec<Usage>, TenantError> {
        let mut out = Vec::with_capacity(self.leases.len());
        let mut first_error = None;
        for l in self.leases {
            match l.release() {
                Ok(u) => out.push(u),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(out),
            Some(e) => Err(e),
        }
    }
}

/// Asks the lease's host where its executor listens. A lease granted a
/// moment ago may not have reached its executor manager yet, so that
/// refusal is retried for up to ten seconds.
pub fn find_executor(host: &str, lease: LeaseId, token: &str) -> Result<SocketAddr, LookupError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lookup_executor(host, lease, token, Duration::from_secs(10)) {
            Err(LookupError::LookupRefused { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}
