//! Serving the queue: requests that wait for capacity, granted in a fair
//! order when capacity appears (see [`queue`](super::queue)), and quotas.

use super::error::LeaseError;
use super::host::Host;
use super::ids::{HostId, Millis, TenantId};
use super::lease::{Lease, LeaseRequest};
use super::manager::Manager;
use super::output::{Event, Output};
use super::placement::{self, PlacementError};
use super::queue::{InUse, Quota, Ticket, TicketId, TicketOutcome};
use super::resources::Allocation;
use super::store_op::StoreOp;

/// Most leases one queued request may ask for at once.
pub const MAX_TICKET_LEASES: u32 = 1024;

/// Most requests one tenant may have waiting: a tenant cannot grow the
/// lease manager's queue (memory, log) without bound.
pub const MAX_WAITING_PER_TENANT: usize = 4096;

/// What queueing a request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Granted at once.
    Granted {
        /// Its ticket (ended, granted).
        ticket: TicketId,
        /// Its leases.
        leases: Vec<Lease>,
    },
    /// Waiting.
    Waiting {
        /// Its ticket.
        ticket: TicketId,
        /// Why it waits.
        reason: String,
    },
}

/// A ticket as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    /// The ticket.
    pub ticket: Ticket,
    /// Why it waits (while it does).
    pub reason: Option<String>,
    /// Waiting requests ahead of it, all tenants' (while it waits).
    pub ahead: Option<usize>,
    /// Its leases, once granted.
    pub leases: Vec<Lease>,
}

impl Manager {
    /// Queues `count` leases of `req`, granted together, waiting up to
    /// `wait_ms` for capacity; granted at once if they fit now and no
    /// earlier request is served first. Refused at once if the request is
    /// invalid or no quota of the tenant's could ever admit it.
    pub fn queue_lease(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        req: &LeaseRequest,
        count: u32,
        wait_ms: Millis,
    ) -> Result<Queued, PlacementError> {
        let now = self.advance_pub(now);
        placement::validate(req, &self.config)?;
        let invalid = |reason: String| Err(PlacementError::Invalid { reason });
        if count == 0 || count > MAX_TICKET_LEASES {
            return invalid(format!("{count} leases at once (1 to {MAX_TICKET_LEASES})"));
        }
        if wait_ms > self.config.max_wait_ms {
            return invalid(format!(
                "a wait of {wait_ms} ms exceeds the maximum {} ms",
                self.config.max_wait_ms
            ));
        }
        let waiting = self
            .state
            .queue()
            .waiting
            .get(tenant)
            .map_or(0, |q| q.len());
        if waiting >= MAX_WAITING_PER_TENANT {
            return invalid(format!(
                "{waiting} requests of this tenant wait already (at most {MAX_WAITING_PER_TENANT})"
            ));
        }
        let quota = self.state.quota(tenant);
        if let Some((what, limit, would_be)) = quota.excess(&InUse::default(), req, count) {
            return Err(PlacementError::Quota {
                what: what.into(),
                limit,
                would_be,
            });
        }
        let id = self.state.next_ticket_id();
        self.commit(StoreOp::TicketQueued(Ticket {
            id,
            tenant: tenant.clone(),
            request: req.clone(),
            count,
            queued_at_ms: now,
            deadline_ms: now.saturating_add(wait_ms),
            outcome: None,
            ended_at_ms: None,
        }));
        self.freed = true;
        self.settle(now);
        let view = self.view(id);
        Ok(match view.ticket.outcome {
            Some(TicketOutcome::Granted(_)) => Queued::Granted {
                ticket: id,
                leases: view.leases,
            },
            _ => Queued::Waiting {
                ticket: id,
                reason: view.reason.unwrap_or_default(),
            },
        })
    }

    /// One of a tenant's tickets; [`LeaseError::TicketNotFound`] if it is
    /// missing or another tenant's.
    pub fn ticket(&self, tenant: &TenantId, id: TicketId) -> Result<TicketView, LeaseError> {
        match self.state.ticket(id) {
            Some(t) if &t.tenant == tenant => Ok(self.view(id)),
            _ => Err(LeaseError::TicketNotFound(id)),
        }
    }

    /// A tenant's retained tickets (waiting and recently ended), by id.
    pub fn tickets_of(&self, tenant: &TenantId) -> Vec<TicketView> {
        self.state
            .tickets()
            .filter(|t| &t.tenant == tenant)
            .map(|t| self.view(t.id))
            .collect()
    }

    /// Waiting tickets in all.
    pub fn queue_depth(&self) -> usize {
        self.state.queue().depth()
    }

    /// Every waiting ticket, by id: for the operator.
    pub fn waiting(&self) -> impl Iterator<Item = &Ticket> {
        self.state.tickets().filter(|t| t.is_waiting())
    }

    /// Withdraws a waiting ticket.
    pub fn cancel_ticket(
        &mut self,
        now: Millis,
        tenant: &TenantId,
        id: TicketId,
    ) -> Result<(), LeaseError> {
        let now = self.advance_pub(now);
        match self.state.ticket(id) {
            Some(t) if &t.tenant == tenant && t.is_waiting() => {}
            Some(t) if &t.tenant == tenant => return Err(LeaseError::TicketEnded(id)),
            _ => return Err(LeaseError::TicketNotFound(id)),
        }
        self.commit(StoreOp::TicketEnded {
            ticket: id,
            outcome: TicketOutcome::Cancelled,
            at: now,
        });
        // Another tenant's request may have waited behind it.
        self.freed = true;
        self.settle(now);
        Ok(())
    }

    /// Sets a tenant's quota (the default: unlimited). Leases already
    /// granted stay; later grants keep to it.
    pub fn set_quota(&mut self, now: Millis, tenant: &TenantId, quota: Quota) {
        let now = self.advance_pub(now);
        self.commit(StoreOp::QuotaSet {
            tenant: tenant.clone(),
            quota,
        });
        self.freed = true;
        self.settle(now);
    }

    /// Refuses `count` leases of `req` that would pass the tenant's quota.
    pub(super) fn check_quota(
        &self,
        tenant: &TenantId,
        req: &LeaseRequest,
        count: u32,
    ) -> Result<(), PlacementError> {
        let quota = self.state.quota(tenant);
        if quota.is_unlimited() {
            return Ok(());
        }
        match quota.excess(&self.state.in_use(tenant), req, count) {
            None => Ok(()),
            Some((what, limit, would_be)) => Err(PlacementError::Quota {
                what: what.into(),
                limit,
                would_be,
            }),
        }
    }

    /// Serves the queue if capacity was freed since it was last served:
    /// tenants in turn, each its oldest request, until none fits.
    pub(super) fn settle(&mut self, now: Millis) {
        if !std::mem::take(&mut self.freed) {
            return;
        }
        while self.serve_one(now) {}
    }

    /// Grants the first request that fits, starting with the tenant after
    /// the one served last; false if none fits.
    fn serve_one(&mut self, now: Millis) -> bool {
        let queue = self.state.queue();
        for tenant in queue.rotation(self.last_served.as_ref()) {
            let Some(&head) = queue.waiting.get(&tenant).and_then(|q| q.front()) else {
                continue;
            };
            let Some(t) = self.state.ticket(head) else {
                continue;
            };
            let (req, count) = (t.request.clone(), t.count);
            if self.check_quota(&tenant, &req, count).is_err() {
                continue;
            }
            let Ok(allocs) = self.place_all(&req, count) else {
                continue;
            };
            let leases = allocs
                .into_iter()
                .map(|(host, alloc)| self.grant(now, &tenant, &req, host, alloc).id)
                .collect::<Vec<_>>();
            self.commit(StoreOp::TicketEnded {
                ticket: head,
                outcome: TicketOutcome::Granted(leases.clone()),
                at: now,
            });
            self.out.push_back(Output::NotifyTenant(
                tenant.clone(),
                Event::TicketGranted {
                    ticket: head,
                    leases,
                },
            ));
            self.last_served = Some(tenant);
            return true;
        }
        false
    }

    /// Places `count` leases of `req` at once, or none.
    fn place_all(
        &self,
        req: &LeaseRequest,
        count: u32,
    ) -> Result<Vec<(HostId, Allocation)>, PlacementError> {
        if count == 1 {
            return placement::place(self.state.hosts(), req).map(|p| vec![p]);
        }
        let mut hosts: Vec<Host> = self.state.hosts().cloned().collect();
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (h, a) = placement::place(hosts.iter(), req)?;
            if let Some(host) = hosts.iter_mut().find(|x| x.id == h) {
                host.free.take(&a);
            }
            out.push((h, a));
        }
        Ok(out)
    }

    /// Ends the waiting tickets whose deadline is at or before `now`.
    pub(super) fn expire_tickets(&mut self, now: Millis) {
        let due: Vec<(Millis, TicketId)> = self
            .state
            .queue()
            .deadlines
            .iter()
            .take_while(|&&(d, _)| d <= now)
            .copied()
            .collect();
        for (deadline, id) in due {
            let Some(tenant) = self.state.ticket(id).map(|t| t.tenant.clone()) else {
                continue;
            };
            self.commit(StoreOp::TicketEnded {
                ticket: id,
                outcome: TicketOutcome::TimedOut,
                at: deadline,
            });
            self.out.push_back(Output::NotifyTenant(
                tenant,
                Event::TicketTimedOut { ticket: id },
            ));
        }
    }

    /// Forgets the tickets that ended at or before `horizon`.
    pub(super) fn forget_tickets(&mut self, horizon: Millis) {
        let old: Vec<TicketId> = self
            .state
            .queue()
            .ended
            .iter()
            .take_while(|&&(e, _)| e <= horizon)
            .map(|&(_, id)| id)
            .collect();
        for ticket in old {
            self.commit(StoreOp::TicketForgotten { ticket });
        }
    }

    /// The earliest deadline of a waiting ticket.
    pub(super) fn next_ticket_deadline(&self) -> Option<Millis> {
        self.state.queue().deadlines.first().map(|&(d, _)| d)
    }

    /// When the earliest-ended retained ticket ended.
    pub(super) fn oldest_ticket_end(&self) -> Option<Millis> {
        self.state.queue().ended.first().map(|&(e, _)| e)
    }

    fn view(&self, id: TicketId) -> TicketView {
        let t = self.state.ticket(id).cloned().expect("a known ticket");
        let leases = match &t.outcome {
            Some(TicketOutcome::Granted(ids)) => ids
                .iter()
                .filter_map(|l| self.state.lease(*l).cloned())
                .collect(),
            _ => Vec::new(),
        };
        let (reason, ahead) = if t.is_waiting() {
            let ahead = self
                .state
                .tickets()
                .filter(|o| o.is_waiting() && o.id < id)
                .count();
            let reason = match self.check_quota(&t.tenant, &t.request, t.count) {
                Err(e) => e.to_string(),
                Ok(()) => match self.place_all(&t.request, t.count) {
                    Err(e) => e.to_string(),
                    Ok(_) => "behind earlier requests".into(),
                },
            };
            (Some(reason), Some(ahead))
        } else {
            (None, None)
        };
        TicketView {
            ticket: t,
            reason,
            ahead,
            leases,
        }
    }
}
