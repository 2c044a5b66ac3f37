//! What the state machine asks its driver to do.

use super::ids::{HostId, LeaseId, TenantId};
use super::lease::{Lease, LostReason};
use super::queue::TicketId;
use super::store_op::StoreOp;
use serde::{Deserialize, Serialize};

/// One effect for the driver, from [`Manager::poll_output`](super::Manager::poll_output).
///
/// Outputs come in causal order. The driver makes each `Persist` durable
/// before it acts on any later output or replies to the call that caused it
/// (write-ahead), so that a restarted manager never forgets a lease it
/// granted. Notifications for a peer that is not connected may be dropped:
/// tenants can query, and hosts get a [`HostCommand::Sync`] when they register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[must_use]
pub enum Output {
    /// Append this op to the durable store.
    Persist(StoreOp),
    /// Send a command to a host's executor manager.
    NotifyHost(HostId, HostCommand),
    /// Tell a tenant about one of its leases.
    NotifyTenant(TenantId, Event),
}

/// A command to an executor manager.
// One per lease start or stop, queued briefly and sent at once: the size of
// `Start` costs nothing worth a box on the way.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostCommand {
    /// Start an executor for this lease (idempotent: ignore if running).
    Start(Lease),
    /// Stop the executor of this lease.
    Stop(LeaseId),
    /// Sent on registration: run exactly these leases; start the missing
    /// ones and stop every other executor.
    Sync(Vec<Lease>),
}

/// A notification to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The lease ended by a failure; its executors are gone or going.
    LeaseLost {
        /// Lease id.
        lease: LeaseId,
        /// The host it ran on.
        host: HostId,
        /// What failed.
        reason: LostReason,
    },
    /// The lease reached its expiry.
    LeaseExpired {
        /// Lease id.
        lease: LeaseId,
    },
    /// A queued request was granted: its leases.
    TicketGranted {
        /// The ticket.
        ticket: TicketId,
        /// Its leases, granted together.
        leases: Vec<LeaseId>,
    },
    /// A queued request waited until its deadline, in vain.
    TicketTimedOut {
        /// The ticket.
        ticket: TicketId,
    },
}
