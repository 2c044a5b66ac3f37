//! The durable state: hosts, leases and free pools, changed only by store ops.

use super::error::LeaseError;
use super::host::Host;
use super::ids::{HostId, LeaseId, Millis, TenantId};
use super::lease::{Lease, LeaseState};
use super::queue::{InUse, Queue, Quota, Ticket, TicketId, TicketOutcome};
use super::resources::{Capacity, Pool};
use super::store_op::StoreOp;
use std::collections::{BTreeMap, BTreeSet};

/// Everything the lease manager must not forget, and nothing else (no
/// heartbeat times, no pending outputs). Two managers with equal states
/// grant the same leases from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    hosts: BTreeMap<HostId, Host>,
    by_address: BTreeMap<String, HostId>,
    leases: BTreeMap<LeaseId, Lease>,
    /// Active leases by expiry.
    expiry: BTreeSet<(Millis, LeaseId)>,
    /// Ended leases by end time.
    ended: BTreeSet<(Millis, LeaseId)>,
    next_host: u64,
    next_lease: u64,
    /// Queued requests, waiting and recently ended.
    queue: Queue,
    /// Tenants' quotas (unlimited ones are absent).
    quotas: BTreeMap<TenantId, Quota>,
    next_ticket: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            by_address: BTreeMap::new(),
            leases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            ended: BTreeSet::new(),
            next_host: 1,
            next_lease: 1,
            queue: Queue::default(),
            quotas: BTreeMap::new(),
            next_ticket: 1,
        }
    }
}

impl State {
    /// All hosts, by id.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// One host.
    pub fn host(&self, id: HostId) -> Option<&Host> {
        self.hosts.get(&id)
    }

    /// The host registered from `address`.
    pub fn host_by_address(&self, address: &str) -> Option<&Host> {
        self.by_address
            .get(address)
            .and_then(|id| self.hosts.get(id))
    }

    /// Every retained lease of every tenant, by id: for the operator, never
    /// for tenants (see [`Manager::lease`](super::Manager::lease)).
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// One lease, whatever its tenant.
    pub(crate) fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Active leases on `host`, by id (what a `Sync` tells it to run).
    pub fn active_on_host(&self, host: HostId) -> Vec<Lease> {
        self.active_on(host).cloned().collect()
    }

    /// Active leases on `host`, by id.
    pub(crate) fn active_on(&self, host: HostId) -> impl Iterator<Item = &Lease> {
        self.leases
            .values()
            .filter(move |l| l.host == host && l.is_active())
    }

    /// The earliest expiry among active leases.
    pub(crate) fn next_expiry(&self) -> Option<Millis> {
        self.expiry.first().map(|&(t, _)| t)
    }

    /// Active leases whose expiry is at or before `now`, with that expiry.
    pub(crate) fn expired_by(&self, now: Millis) -> Vec<(Millis, LeaseId)> {
        self.expiry
            .iter()
            .take_while(|&&(t, _)| t <= now)
            .copied()
            .collect()
    }

    /// When the earliest-ended retained lease ended.
    pub(crate) fn oldest_end(&self) -> Option<Millis> {
        self.ended.first().map(|&(t, _)| t)
    }

    /// Ended leases that ended at or before `t`.
    pub(crate) fn ended_by(&self, t: Millis) -> Vec<LeaseId> {
        self.ended
            .iter()
            .take_while(|&&(e, _)| e <= t)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Every retained ticket (waiting and recently ended), by id.
    pub fn tickets(&self) -> impl Iterator<Item = &Ticket> {
        self.queue.tickets.values()
    }

    /// One ticket, whatever its tenant.
    pub(crate) fn ticket(&self, id: TicketId) -> Option<&Ticket> {
        self.queue.tickets.get(&id)
    }

    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The id the next ticket gets.
    pub(crate) fn next_ticket_id(&self) -> TicketId {
        TicketId(self.next_ticket)
    }

    /// A tenant's quota (unlimited if none was set).
    pub fn quota(&self, tenant: &TenantId) -> Quota {
        self.quotas.get(tenant).cloned().unwrap_or_default()
    }

    /// Every quota set, by tenant.
    pub fn quotas(&self) -> impl Iterator<Item = (&TenantId, &Quota)> {
        self.quotas.iter()
    }

    /// What `tenant`'s active leases hold.
    pub(crate) fn in_use(&self, tenant: &TenantId) -> InUse {
        let mut u = InUse::default();
        for l in self
            .leases
            .values()
            .filter(|l| &l.tenant == tenant && l.is_active())
        {
            u.cores += u64::from(l.cores);
            u.accelerators += l.accelerators.values().map(|d| d.len() as u64).sum::<u64>();
            u.leases += 1;
        }
        u
    }

    /// The id the next new host gets.
    pub(crate) fn next_host_id(&self) -> HostId {
        HostId(self.next_host)
    }

    /// The id the next lease gets.
    pub(crate) fn next_lease_id(&self) -> LeaseId {
        LeaseId(self.next_lease)
    }

    /// Checks `op` against this state, then applies it.
    pub(crate) fn apply(&mut self, op: &StoreOp) -> Result<(), LeaseError> {
        self.check(op).map_err(LeaseError::BadStoreOp)?;
        self.mutate(op);
        Ok(())
    }

    /// Whether `op` is consistent with this state; the reason if not.
    pub(crate) fn check(&self, op: &StoreOp) -> Result<(), String> {
        match op {
            StoreOp::HostUpserted {
                host,
                address,
                capacity,
            } => {
                if let Some(other) = self.by_address.get(address).filter(|&o| o != host) {
                    return Err(format!("address {address} belongs to host {other}"));
                }
                let mut pool = Pool::full(capacity);
                for lease in self.active_on(*host) {
                    pool.check_holds(lease)?;
                    pool.remove(lease);
                }
                Ok(())
            }
            StoreOp::HostDown { host } => {
                self.hosts
                    .get(host)
                    .ok_or_else(|| format!("unknown host {host}"))?;
                match self.active_on(*host).next() {
                    Some(l) => Err(format!("host {host} still holds active lease {}", l.id)),
                    None => Ok(()),
                }
            }
            StoreOp::LeaseGranted(lease) => {
                if self.leases.contains_key(&lease.id) {
                    return Err(format!("lease {} already exists", lease.id));
                }
                if !lease.is_active() || lease.ended_at_ms.is_some() {
                    return Err(format!("granted lease {} is not active", lease.id));
                }
                if lease.expires_at_ms < lease.granted_at_ms {
                    return Err(format!("lease {} expires before its grant", lease.id));
                }
                match self.hosts.get(&lease.host) {
                    Some(h) if h.up => h.free.check_holds(lease),
                    Some(_) => Err(format!("host {} is down", lease.host)),
                    None => Err(format!("unknown host {}", lease.host)),
                }
            }
            StoreOp::LeaseRenewed {
                lease,
                expires_at_ms,
                ..
            } => {
                let l = self.active(*lease)?;
                if *expires_at_ms < l.expires_at_ms {
                    return Err(format!("renewal moves lease {lease} earlier"));
                }
                Ok(())
            }
            StoreOp::UsageReported { lease, .. } => self
                .leases
                .get(lease)
                .map(|_| ())
                .ok_or_else(|| format!("unknown lease {lease}")),
            StoreOp::LeaseEnded { lease, state, .. } => {
                self.active(*lease)?;
                if *state == LeaseState::Active {
                    return Err(format!("lease {lease} ends as active"));
                }
                Ok(())
            }
            StoreOp::LeaseForgotten { lease } => match self.leases.get(lease) {
                Some(l) if l.is_active() => Err(format!("lease {lease} is still active")),
                Some(_) => Ok(()),
                None => Err(format!("unknown lease {lease}")),
            },
            StoreOp::LeaseRestored(lease) => {
                if self.leases.contains_key(&lease.id) {
                    return Err(format!("lease {} already exists", lease.id));
                }
                if lease.is_active() || lease.ended_at_ms.is_none() {
                    return Err(format!("restored lease {} has not ended", lease.id));
                }
                if !self.hosts.contains_key(&lease.host) {
                    return Err(format!("unknown host {}", lease.host));
                }
                Ok(())
            }
            StoreOp::Checkpoint {
                next_host,
                next_lease,
                next_ticket,
                ..
            } => {
                if *next_host < self.next_host
                    || *next_lease < self.next_lease
                    || (*next_ticket != 0 && *next_ticket < self.next_ticket)
                {
                    return Err("checkpoint would reuse ids".into());
                }
                Ok(())
            }
            StoreOp::TicketQueued(t) => {
                if self.queue.tickets.contains_key(&t.id) {
                    return Err(format!("ticket {} already exists", t.id));
                }
                if !t.is_waiting() || t.count == 0 {
                    return Err(format!("queued ticket {} is not a waiting one", t.id));
                }
                Ok(())
            }
            StoreOp::TicketEnded {
                ticket, outcome, ..
            } => {
                match self.queue.tickets.get(ticket) {
                    Some(t) if t.is_waiting() => {}
                    Some(_) => return Err(format!("ticket {ticket} has ended")),
                    None => return Err(format!("unknown ticket {ticket}")),
                }
                if let TicketOutcome::Granted(leases) = outcome {
                    if let Some(l) = leases.iter().find(|l| !self.leases.contains_key(l)) {
                        return Err(format!("ticket {ticket} granted unknown lease {l}"));
                    }
                }
                Ok(())
            }
            StoreOp::TicketForgotten { ticket } => match self.queue.tickets.get(ticket) {
                Some(t) if t.is_waiting() => Err(format!("ticket {ticket} still waits")),
                Some(_) => Ok(()),
                None => Err(format!("unknown ticket {ticket}")),
            },
            StoreOp::TicketRestored(t) => {
                if self.queue.tickets.contains_key(&t.id) {
                    return Err(format!("ticket {} already exists", t.id));
                }
                if t.is_waiting() || t.ended_at_ms.is_none() {
                    return Err(format!("restored ticket {} has not ended", t.id));
                }
                Ok(())
            }
            StoreOp::QuotaSet { .. } => Ok(()),
        }
    }

    /// The shortest op sequence that rebuilds this state from an empty one:
    /// what the store keeps instead of a log that only grows (every usage
    /// report is an op). Hosts first (all up, so active leases can be
    /// granted on them), then active leases as they stand, then the hosts
    /// that are down, then ended leases kept for retention, then the id
    /// counters. Replaying it gives an equal state (tested).
    pub fn checkpoint(&self, clock: Millis) -> Vec<StoreOp> {
        let mut ops = Vec::with_capacity(self.hosts.len() * 2 + self.leases.len() + 1);
        for h in self.hosts.values() {
            ops.push(StoreOp::HostUpserted {
                host: h.id,
                address: h.address.clone(),
                capacity: h.capacity.clone(),
            });
        }
        let (active, ended): (Vec<&Lease>, Vec<&Lease>) =
            self.leases.values().partition(|l| l.is_active());
        ops.extend(active.into_iter().cloned().map(StoreOp::LeaseGranted));
        ops.extend(
            self.hosts
                .values()
                .filter(|h| !h.up)
                .map(|h| StoreOp::HostDown { host: h.id }),
        );
        ops.extend(ended.into_iter().cloned().map(StoreOp::LeaseRestored));
        ops.extend(self.quotas.iter().map(|(tenant, quota)| StoreOp::QuotaSet {
            tenant: tenant.clone(),
            quota: quota.clone(),
        }));
        ops.extend(self.queue.tickets.values().map(|t| {
            if t.is_waiting() {
                StoreOp::TicketQueued(t.clone())
            } else {
                StoreOp::TicketRestored(t.clone())
            }
        }));
        ops.push(StoreOp::Checkpoint {
            next_host: self.next_host,
            next_lease: self.next_lease,
            at: clock,
            next_ticket: self.next_ticket,
        });
        ops
    }

    fn active(&self, id: LeaseId) -> Result<&Lease, String> {
        match self.leases.get(&id) {
            Some(l) if l.is_active() => Ok(l),
            Some(l) => Err(format!("lease {id} is {}", l.state)),
            None => Err(format!("unknown lease {id}")),
        }
    }

    /// Applies `op`, which `check` accepted; never panics, even if it did not.
    pub(crate) fn mutate(&mut self, op: &StoreOp) {
        match op {
            StoreOp::HostUpserted {
                host,
                address,
                capacity,
            } => self.upsert_host(*host, address, capacity),
            StoreOp::HostDown { host } => {
                if let Some(h) = self.hosts.get_mut(host) {
                    h.up = false;
                }
            }
            StoreOp::LeaseGranted(lease) => {
                if let Some(h) = self.hosts.get_mut(&lease.host) {
                    h.free.remove(lease);
                }
                self.expiry.insert((lease.expires_at_ms, lease.id));
                self.next_lease = self.next_lease.max(lease.id.0.saturating_add(1));
                self.leases.insert(lease.id, lease.clone());
            }
            StoreOp::LeaseRenewed {
                lease,
                expires_at_ms,
                at,
            } => {
                if let Some(l) = self.leases.get_mut(lease) {
                    accrue(l, *at);
                    self.expiry.remove(&(l.expires_at_ms, l.id));
                    l.expires_at_ms = *expires_at_ms;
                    self.expiry.insert((l.expires_at_ms, l.id));
                }
            }
            StoreOp::UsageReported { lease, delta, at } => {
                if let Some(l) = self.leases.get_mut(lease) {
                    l.usage.add(delta);
                    if l.is_active() {
                        accrue(l, *at);
                    }
                }
            }
            StoreOp::LeaseEnded { lease, state, at } => {
                if let Some(l) = self.leases.get_mut(lease) {
                    accrue(l, *at);
                    l.state = state.clone();
                    l.ended_at_ms = Some(*at);
                    self.expiry.remove(&(l.expires_at_ms, l.id));
                    self.ended.insert((*at, l.id));
                    if let Some(h) = self.hosts.get_mut(&l.host) {
                        h.free.give_back(l);
                    }
                }
            }
            StoreOp::LeaseForgotten { lease } => {
                if let Some(l) = self.leases.remove(lease) {
                    self.expiry.remove(&(l.expires_at_ms, l.id));
                    if let Some(end) = l.ended_at_ms {
                        self.ended.remove(&(end, l.id));
                    }
                }
            }
            StoreOp::LeaseRestored(lease) => {
                if let Some(end) = lease.ended_at_ms {
                    self.ended.insert((end, lease.id));
                }
                self.next_lease = self.next_lease.max(lease.id.0.saturating_add(1));
                self.leases.insert(lease.id, lease.clone());
            }
            StoreOp::Checkpoint {
                next_host,
                next_lease,
                next_ticket,
                ..
            } => {
                self.next_host = self.next_host.max(*next_host);
                self.next_lease = self.next_lease.max(*next_lease);
                self.next_ticket = self.next_ticket.max(*next_ticket);
            }
            StoreOp::TicketQueued(t) | StoreOp::TicketRestored(t) => {
                self.next_ticket = self.next_ticket.max(t.id.0.saturating_add(1));
                self.queue.insert(t);
            }
            StoreOp::TicketEnded {
                ticket,
                outcome,
                at,
            } => self.queue.end(*ticket, outcome, *at),
            StoreOp::TicketForgotten { ticket } => self.queue.forget(*ticket),
            StoreOp::QuotaSet { tenant, quota } => {
                if quota.is_unlimited() {
                    self.quotas.remove(tenant);
                } else {
                    self.quotas.insert(tenant.clone(), quota.clone());
                }
            }
        }
    }

    fn upsert_host(&mut self, id: HostId, address: &str, capacity: &Capacity) {
        let mut free = Pool::full(capacity);
        for lease in self.active_on(id) {
            free.remove(lease);
        }
        let host = self.hosts.entry(id).or_insert_with(|| Host {
            id,
            address: address.to_owned(),
            capacity: capacity.clone(),
            free: Pool::default(),
            up: true,
        });
        if host.address != address && self.by_address.get(&host.address) == Some(&id) {
            self.by_address.remove(&host.address);
        }
        host.address = address.to_owned();
        host.capacity = capacity.clone();
        host.free = free;
        host.up = true;
        self.by_address.insert(address.to_owned(), id);
        self.next_host = self.next_host.max(id.0.saturating_add(1));
    }
}

/// Accrues core and GPU time up to `at` (never backwards).
fn accrue(lease: &mut Lease, at: Millis) {
    let mut u = std::mem::take(&mut lease.usage);
    u.accrue(lease, at);
    lease.usage = u;
}
