//! The lease manager state machine: inputs in, outputs out, no I/O.

use super::config::Config;
use super::error::LeaseError;
use super::host::Host;
use super::ids::{HostId, LeaseId, Millis, TenantId};
use super::lease::{Lease, LeaseRequest, LeaseState, LostReason, Usage, UsageReport};
use super::output::{Event, HostCommand, Output};
use super::placement::{self, PlacementError};
use super::resources::{Allocation, Capacity, Pool};
use super::state::State;
use super::store_op::StoreOp;
use std::collections::{BTreeMap, VecDeque};

/// The lease manager, without sockets, store or clock.
///
/// Inputs are `handle_*`-style calls that take the current time (`now`, ms
/// since the driver's epoch; a `now` earlier than one already seen counts as
/// the latest one seen). Every call first runs the timers due at `now`
/// (expiries, silent hosts), so decisions never rest on stale state. Effects
/// come out of [`poll_output`](Self::poll_output); the next deadline out of
/// [`poll_timeout`](Self::poll_timeout).
///
/// ```
/// use rfx_leases::proto::{Capacity, Config, HostCommand, LeaseRequest, Manager, Output, TenantId};
///
/// let mut mgr = Manager::new(Config::default());
/// let host = mgr.register_host(0, "10.0.0.1:7000", Capacity::new(8, 16_384).with_accelerators("gpu", 2))?;
/// let alice = TenantId::from("alice");
/// let req = LeaseRequest::new(2, 60_000).with_accelerators("gpu", 1);
/// let lease = mgr.request_lease(5, &alice, &req)?;
/// assert_eq!((lease.host, lease.visible_devices("gpu")), (host, "0".to_string()));
/// assert_eq!(mgr.poll_timeout(), Some(10_000)); // the host's heartbeat deadline
///
/// // The driver persists, then forwards: here the host is told to start the lease.
/// let outputs: Vec<Output> = std::iter::from_fn(|| mgr.poll_output()).collect();
/// assert!(outputs.contains(&Output::NotifyHost(host, HostCommand::Start(lease.clone()))));
///
/// let usage = mgr.release(1_005, &alice, lease.id)?;
/// assert_eq!(usage.core_ms, 2 * 1_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Manager {
    pub(super) config: Config,
    pub(super) state: State,
    /// Last heartbeat of every up host (not durable).
    last_seen: BTreeMap<HostId, Millis>,
    /// Latest time seen.
    clock: Millis,
    pub(super) out: VecDeque<Output>,
    /// The tenant served last from the queue (round robin; not durable).
    pub(super) last_served: Option<TenantId>,
    /// Capacity was freed (or added) since the queue was last served.
    pub(super) freed: bool,
}

impl Manager {
    /// An empty manager: no hosts, no leases.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::default(),
            last_seen: BTreeMap::new(),
            clock: 0,
            out: VecDeque::new(),
            last_served: None,
            freed: false,
        }
    }

    /// Rebuilds a manager from every op it persisted, in order; up hosts get
    /// a fresh heartbeat grace period from `now`. No outputs are queued.
    pub fn replay<I>(config: Config, now: Millis, ops: I) -> Result<Self, LeaseError>
    where
        I: IntoIterator<Item = StoreOp>,
    {
        let mut mgr = Self::new(config);
        mgr.clock = now;
        for op in ops {
            mgr.apply(op)?;
        }
        Ok(mgr)
    }

    /// Applies one persisted op (as [`replay`](Self::replay) does), checking
    /// it against the state first; a rejected op changes nothing.
    pub fn apply(&mut self, op: StoreOp) -> Result<(), LeaseError> {
        if let StoreOp::HostUpserted {
            address, capacity, ..
        } = &op
        {
            self.validate_registration(address, capacity)
                .map_err(|e| LeaseError::BadStoreOp(e.to_string()))?;
        }
        self.state.apply(&op)?;
        self.clock = self.clock.max(op.at().unwrap_or(0));
        match op {
            StoreOp::HostUpserted { host, .. } => {
                self.last_seen.insert(host, self.clock);
            }
            StoreOp::HostDown { host } => {
                self.last_seen.remove(&host);
            }
            _ => {}
        }
        Ok(())
    }

    /// The store ops that rebuild this manager's state from nothing, to
    /// replace a long log ([`State::checkpoint`]); ops emitted later append
    /// to them as to the log they replace.
    pub fn checkpoint(&self) -> Vec<StoreOp> {
        self.state.checkpoint(self.clock)
    }

    /// The tunables.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable state (equal after [`replay`](Self::replay)).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Registers an executor manager, or registers it again: the same
    /// address keeps its id and the active leases that still fit `capacity`
    /// (the others are lost). Queues a [`HostCommand::Sync`] with the leases
    /// the host must run.
    pub fn register_host(
        &mut self,
        now: Millis,
        address: impl Into<String>,
        capacity: Capacity,
    ) -> Result<HostId, LeaseError> {
        let now = self.advance(now);
        let address = address.into();
        self.validate_registration(&address, &capacity)?;
        let id = self
            .state
            .host_by_address(&address)
            .map_or_else(|| self.state.next_host_id(), |h| h.id);
        let mut pool = Pool::full(&capacity);
        let mut misfits = Vec::new();
        for lease in self.state.active_on(id) {
            match pool.check_holds(lease) {
                Ok(()) => pool.remove(lease),
                Err(_) => misfits.push(lease.id),
            }
        }
        for lease in misfits {
            self.end(
                lease,
                LeaseState::Lost {
                    reason: LostReason::CapacityChanged,
                },
                now,
            );
        }
        if self
            .state
            .host(id)
            .is_none_or(|h| !h.up || h.capacity != capacity)
        {
            self.commit(StoreOp::HostUpserted {
                host: id,
                address,
                capacity,
            });
        }
        self.last_seen.insert(id, now);
        let active = self.state.active_on(id).cloned().collect();
        self.out
            .push_back(Output::NotifyHost(id, HostCommand::Sync(active)));
        self.freed = true;
        self.settle(now);
        Ok(id)
    }

    /// Takes a host out of service at once: its active leases are lost.
    pub fn deregister_host(&mut self, now: Millis, host: HostId) -> Result<(), LeaseError> {
        let now = self.advance(now);
        match self.state.host(host) {
            None => Err(LeaseError::UnknownHost(host)),
            Some(h) if !h.up => Ok(()),
            Some(_) => {
                self.mark_down(host, LostReason::HostDeregistered, now);
                Ok(())
            }
        }
    }

    /// Records a heartbeat; a host marked down must register again.
    pub fn heartbeat(&mut self, now: Millis, host: HostId) -> Result<(), LeaseError> {
        let now = self.advance(now);
        match self.state.host(host) {
            None => Err(LeaseError::UnknownHost(host)),
            Some(h) if !h.up => Err(LeaseError::HostDown(host)),
            Some(_) => {
                self.last_seen.insert(host, now);
                Ok(())
            }
        }
    }

    /// Grants a lease on the up host with the most free cores that fits, or
    /// refuses with the reason; never queues. Queues a [`HostCommand::Start`].
    pub fn request_lease(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        req: &LeaseRequest,
    ) -> Result<Lease, PlacementError> {
        let now = self.advance(now);
        placement::validate(req, &self.config)?;
        self.check_quota(tenant, req, 1)?;
        let (host, alloc) = placement::place(self.state.hosts(), req)?;
        Ok(self.grant(now, tenant, req, host, alloc))
    }

    /// Grants a lease placed on `host`; queues a [`HostCommand::Start`].
    pub(super) fn grant(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        req: &LeaseRequest,
        host: HostId,
        alloc: Allocation,
    ) -> Lease {
        let lease = Lease {
            id: self.state.next_lease_id(),
            tenant: tenant.clone(),
            host,
            cores: req.cores,
            core_ids: alloc.core_ids,
            memory_mib: alloc.memory_mib,
            accelerators: alloc.accelerators,
            hot_timeout_ms: req.hot_timeout_ms,
            exec_timeout_ms: req.exec_timeout_ms,
            container: req.container.clone(),
            granted_at_ms: now,
            expires_at_ms: now.saturating_add(req.duration_ms),
            ended_at_ms: None,
            state: LeaseState::Active,
            usage: Usage::default(),
        };
        self.commit(StoreOp::LeaseGranted(lease.clone()));
        self.out
            .push_back(Output::NotifyHost(host, HostCommand::Start(lease.clone())));
        lease
    }

    /// Moves a lease's expiry `extra_ms` later; returns the new expiry.
    pub fn renew(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        lease: LeaseId,
        extra_ms: u64,
    ) -> Result<Millis, LeaseError> {
        let now = self.advance(now);
        let l = self.active_owned(tenant, lease)?;
        let expires_at_ms = l.expires_at_ms.saturating_add(extra_ms);
        let ahead_ms = expires_at_ms.saturating_sub(now);
        if ahead_ms > self.config.max_lease_ms {
            return Err(LeaseError::TooLong {
                ahead_ms,
                max_ms: self.config.max_lease_ms,
            });
        }
        if expires_at_ms != l.expires_at_ms {
            self.commit(StoreOp::LeaseRenewed {
                lease,
                expires_at_ms,
                at: now,
            });
        }
        Ok(expires_at_ms)
    }

    /// Ends a lease early; returns its final usage. Queues a [`HostCommand::Stop`].
    pub fn release(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        lease: LeaseId,
    ) -> Result<Usage, LeaseError> {
        let now = self.advance(now);
        self.active_owned(tenant, lease)?;
        self.end(lease, LeaseState::Released, now);
        self.settle(now);
        Ok(self
            .state
            .lease(lease)
            .map(|l| l.usage.clone())
            .unwrap_or_default())
    }

    /// Adds an executor manager's usage report to one of its leases (also
    /// after the lease ended, for the final report).
    pub fn report_usage(
        &mut self,
        now: Millis,
        host: HostId,
        lease: LeaseId,
        delta: &UsageReport,
    ) -> Result<(), LeaseError> {
        let now = self.advance(now);
        self.on_host(host, lease)?;
        if *delta != UsageReport::default() {
            self.commit(StoreOp::UsageReported {
                lease,
                delta: delta.clone(),
                at: now,
            });
        }
        Ok(())
    }

    /// An executor died: its lease is lost, its resources return to the pool,
    /// its tenant is told.
    pub fn executor_crashed(
        &mut self,
        now: Millis,
        host: HostId,
        lease: LeaseId,
        reason: impl Into<String>,
    ) -> Result<(), LeaseError> {
        let reason = LostReason::ExecutorCrashed {
            reason: reason.into(),
        };
        self.executor_lost(now, host, lease, reason)
    }

    /// An executor ended for `reason` (a crash, the OOM killer): its lease
    /// is lost, its resources return to the pool, its tenant is told.
    pub fn executor_lost(
        &mut self,
        now: Millis,
        host: HostId,
        lease: LeaseId,
        reason: LostReason,
    ) -> Result<(), LeaseError> {
        let now = self.advance(now);
        let l = self.on_host(host, lease)?;
        if !l.is_active() {
            return Err(LeaseError::NotActive {
                lease,
                state: l.state.clone(),
            });
        }
        self.end(lease, LeaseState::Lost { reason }, now);
        self.settle(now);
        Ok(())
    }

    /// Runs the timers due at `now`: expires leases, marks silent hosts down
    /// (their leases lost), forgets ended leases past retention.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.advance(now);
        self.settle(now);
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let expiry = self.state.next_expiry();
        let silence = self
            .last_seen
            .values()
            .min()
            .map(|t| t.saturating_add(self.config.heartbeat_timeout_ms));
        let forget = self.config.retain_finished_ms.and_then(|r| {
            let oldest = [self.state.oldest_end(), self.oldest_ticket_end()];
            oldest
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_add(r))
        });
        let deadline = self.next_ticket_deadline();
        [expiry, silence, forget, deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next effect for the driver, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A tenant's retained leases (active and recently ended), by id.
    pub fn leases_of<'a>(&'a self, tenant: &'a TenantId) -> impl Iterator<Item = &'a Lease> + 'a {
        self.state.leases().filter(move |l| &l.tenant == tenant)
    }

    /// One of a tenant's leases; [`LeaseError::NotFound`] if it is missing or
    /// another tenant's.
    pub fn lease(&self, tenant: &TenantId, lease: LeaseId) -> Result<&Lease, LeaseError> {
        self.state
            .lease(lease)
            .filter(|l| &l.tenant == tenant)
            .ok_or(LeaseError::NotFound(lease))
    }

    /// All registered hosts, by id.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.state.hosts()
    }

    /// One host.
    pub fn host(&self, host: HostId) -> Option<&Host> {
        self.state.host(host)
    }

    /// [`advance`](Self::advance), for the other inputs of the module.
    pub(super) fn advance_pub(&mut self, now: Millis) -> Millis {
        self.advance(now)
    }

    /// Moves the clock to `now` (never backwards) and runs the due timers.
    fn advance(&mut self, now: Millis) -> Millis {
        self.clock = self.clock.max(now);
        let now = self.clock;
        for (expiry, lease) in self.state.expired_by(now) {
            self.end(lease, LeaseState::Expired, expiry);
        }
        let timeout = self.config.heartbeat_timeout_ms;
        let silent: Vec<HostId> = self
            .last_seen
            .iter()
            .filter(|(_, &t)| t.saturating_add(timeout) <= now)
            .map(|(&h, _)| h)
            .collect();
        for host in silent {
            self.mark_down(host, LostReason::HostDown, now);
        }
        if let Some(horizon) = self
            .config
            .retain_finished_ms
            .and_then(|r| now.checked_sub(r))
        {
            for lease in self.state.ended_by(horizon) {
                self.commit(StoreOp::LeaseForgotten { lease });
            }
            self.forget_tickets(horizon);
        }
        self.expire_tickets(now);
        self.settle(now);
        now
    }

    /// Ends every active lease of `host` and marks it down.
    fn mark_down(&mut self, host: HostId, reason: LostReason, now: Millis) {
        let leases: Vec<LeaseId> = self.state.active_on(host).map(|l| l.id).collect();
        for lease in leases {
            self.end(
                lease,
                LeaseState::Lost {
                    reason: reason.clone(),
                },
                now,
            );
        }
        self.commit(StoreOp::HostDown { host });
        self.last_seen.remove(&host);
    }

    /// Ends an active lease and queues the notifications its end calls for.
    fn end(&mut self, lease: LeaseId, state: LeaseState, at: Millis) {
        let Some((tenant, host)) = self.state.lease(lease).map(|l| (l.tenant.clone(), l.host))
        else {
            return;
        };
        self.commit(StoreOp::LeaseEnded {
            lease,
            state: state.clone(),
            at,
        });
        self.freed = true;
        let notify = match state {
            LeaseState::Active => None,
            LeaseState::Released => {
                self.out
                    .push_back(Output::NotifyHost(host, HostCommand::Stop(lease)));
                None
            }
            LeaseState::Expired => {
                self.out
                    .push_back(Output::NotifyHost(host, HostCommand::Stop(lease)));
                Some(Event::LeaseExpired { lease })
            }
            LeaseState::Lost { reason } => Some(Event::LeaseLost {
                lease,
                host,
                reason,
            }),
        };
        if let Some(event) = notify {
            self.out.push_back(Output::NotifyTenant(tenant, event));
        }
    }

    /// Applies a change decided here and queues it for the store.
    pub(super) fn commit(&mut self, op: StoreOp) {
        debug_assert_eq!(self.state.check(&op), Ok(()), "inconsistent {op:?}");
        self.state.mutate(&op);
        self.out.push_back(Output::Persist(op));
    }

    /// The tenant's lease if it is active; `NotFound` hides other tenants' leases.
    fn active_owned(&self, tenant: &TenantId, lease: LeaseId) -> Result<&Lease, LeaseError> {
        let l = self.lease(tenant, lease)?;
        if !l.is_active() {
            return Err(LeaseError::NotActive {
                lease,
                state: l.state.clone(),
            });
        }
        Ok(l)
    }

    /// The lease if `host` is known and runs it.
    fn on_host(&self, host: HostId, lease: LeaseId) -> Result<&Lease, LeaseError> {
        self.state.host(host).ok_or(LeaseError::UnknownHost(host))?;
        self.state
            .lease(lease)
            .filter(|l| l.host == host)
            .ok_or(LeaseError::NotOnHost { lease, host })
    }

    fn validate_registration(&self, address: &str, capacity: &Capacity) -> Result<(), LeaseError> {
        let invalid = |why: String| Err(LeaseError::InvalidRegistration(why));
        if address.is_empty() {
            return invalid("empty address".into());
        }
        if capacity.cores > self.config.max_host_cores {
            return invalid(format!(
                "{} cores exceed the maximum {}",
                capacity.cores, self.config.max_host_cores
            ));
        }
        let max = self.config.max_devices_per_kind;
        if let Some((kind, n)) = capacity.accelerators.iter().find(|(_, &n)| n > max) {
            return invalid(format!("{n} {kind} exceed the maximum {max} per kind"));
        }
        if capacity.accelerators.keys().any(String::is_empty) {
            return invalid("empty accelerator kind".into());
        }
        Ok(())
    }
}
