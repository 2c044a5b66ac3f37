//! Queued lease requests ("tickets") and per-tenant quotas: the durable
//! records and the index that orders them.
//!
//! A request that cannot be met now may wait up to a deadline. It is
//! granted when capacity appears, in an order fair between tenants (round
//! robin over the tenants with waiting requests, each served one request
//! in turn) and first in, first out within a tenant. A ticket for `count`
//! leases is granted all at once or not at all (a group invocation's
//! leases). A ticket over its tenant's quota waits only while the
//! tenant's own leases hold the quota; one that no quota could ever admit
//! is refused at once.

use super::ids::{LeaseId, Millis, TenantId};
use super::lease::LeaseRequest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// A queued request's id, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketId(pub u64);

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// How a ticket ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketOutcome {
    /// Its leases, granted together.
    Granted(Vec<LeaseId>),
    /// Its deadline passed first.
    TimedOut,
    /// Its tenant withdrew it.
    Cancelled,
}

/// A lease request waiting for capacity, or one that waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its id.
    pub id: TicketId,
    /// Who asked.
    pub tenant: TenantId,
    /// What each lease gets.
    pub request: LeaseRequest,
    /// Leases granted together (a group's), at least 1.
    pub count: u32,
    /// When it was queued.
    pub queued_at_ms: Millis,
    /// When it stops waiting.
    pub deadline_ms: Millis,
    /// `None` while it waits.
    pub outcome: Option<TicketOutcome>,
    /// When it stopped waiting.
    pub ended_at_ms: Option<Millis>,
}

impl Ticket {
    /// Whether it still waits.
    pub fn is_waiting(&self) -> bool {
        self.outcome.is_none()
    }
}

/// A tenant's limits on what its active leases hold at once; `None`: no
/// limit. Queued requests count only once granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Cores.
    pub cores: Option<u32>,
    /// Accelerators, all kinds together.
    pub accelerators: Option<u32>,
    /// Active leases.
    pub leases: Option<u32>,
}

impl Quota {
    /// Whether it limits nothing.
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }

    /// The first limit that `in_use` plus `count` leases of `req` would
    /// pass: (what, limit, what that would make).
    pub(crate) fn excess(
        &self,
        in_use: &InUse,
        req: &LeaseRequest,
        count: u32,
    ) -> Option<(&'static str, u32, u64)> {
        let n = u64::from(count);
        let accel: u64 = req.accelerators.values().map(|&c| u64::from(c)).sum();
        [
            ("cores", self.cores, in_use.cores + n * u64::from(req.cores)),
            (
                "accelerators",
                self.accelerators,
                in_use.accelerators + n * accel,
            ),
            ("leases", self.leases, in_use.leases + n),
        ]
        .into_iter()
        .find_map(|(what, limit, total)| {
            limit
                .filter(|&l| total > u64::from(l))
                .map(|l| (what, l, total))
        })
    }
}

/// What a tenant's active leases hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InUse {
    pub(crate) cores: u64,
    pub(crate) accelerators: u64,
    pub(crate) leases: u64,
}

/// The tickets, and the orders they are served and timed out in (derived
/// from the tickets; rebuilt on replay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Queue {
    pub(crate) tickets: BTreeMap<TicketId, Ticket>,
    /// Waiting tickets per tenant, oldest first.
    pub(crate) waiting: BTreeMap<TenantId, VecDeque<TicketId>>,
    /// Waiting tickets by deadline.
    pub(crate) deadlines: BTreeSet<(Millis, TicketId)>,
    /// Ended tickets by end.
    pub(crate) ended: BTreeSet<(Millis, TicketId)>,
}

impl Queue {
    pub(crate) fn insert(&mut self, t: &Ticket) {
        match (&t.outcome, t.ended_at_ms) {
            (None, _) => {
                self.waiting
                    .entry(t.tenant.clone())
                    .or_default()
                    .push_back(t.id);
                self.deadlines.insert((t.deadline_ms, t.id));
            }
            (Some(_), end) => {
                self.ended.insert((end.unwrap_or(t.queued_at_ms), t.id));
            }
        }
        self.tickets.insert(t.id, t.clone());
    }

    pub(crate) fn end(&mut self, id: TicketId, outcome: &TicketOutcome, at: Millis) {
        let Some(t) = self.tickets.get_mut(&id) else {
            return;
        };
        if t.outcome.is_some() {
            return;
        }
        t.outcome = Some(outcome.clone());
        t.ended_at_ms = Some(at);
        self.deadlines.remove(&(t.deadline_ms, id));
        if let Some(q) = self.waiting.get_mut(&t.tenant) {
            q.retain(|&x| x != id);
            if q.is_empty() {
                self.waiting.remove(&t.tenant);
            }
        }
        self.ended.insert((at, id));
    }

    pub(crate) fn forget(&mut self, id: TicketId) {
        if let Some(t) = self.tickets.remove(&id) {
            if let Some(end) = t.ended_at_ms {
                self.ended.remove(&(end, id));
            }
        }
    }

    /// Waiting tickets in all.
    pub(crate) fn depth(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// The tenants with waiting tickets, starting after `last` (round robin).
    pub(crate) fn rotation(&self, last: Option<&TenantId>) -> Vec<TenantId> {
        let mut after: Vec<TenantId> = Vec::with_capacity(self.waiting.len());
        let mut before = Vec::new();
        for t in self.waiting.keys() {
            if last.is_some_and(|l| t <= l) {
                before.push(t.clone());
            } else {
                after.push(t.clone());
            }
        }
        after.extend(before);
        after
    }
}
