//! Durable state changes: the redo log of the lease manager.

use super::ids::{HostId, LeaseId, Millis, TenantId};
use super::lease::{Lease, LeaseState, UsageReport};
use super::queue::{Quota, Ticket, TicketId, TicketOutcome};
use super::resources::Capacity;
use serde::{Deserialize, Serialize};

/// One durable state change, emitted as [`Output::Persist`](super::Output::Persist).
///
/// Applying every op, in emission order, to an empty state rebuilds the
/// same state ([`Manager::replay`](super::Manager::replay)). Heartbeat times
/// are not durable: a replayed manager gives every up host a fresh grace
/// period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// A host registered (first time or again) and is up with this capacity;
    /// its active leases all fit the capacity.
    HostUpserted {
        /// Host id.
        host: HostId,
        /// Executor manager address.
        address: String,
        /// Total capacity.
        capacity: Capacity,
    },
    /// A host went down; it holds no active lease any more.
    HostDown {
        /// Host id.
        host: HostId,
    },
    /// A lease was granted; its resources leave the host's pool.
    LeaseGranted(Lease),
    /// A lease's expiry moved later.
    LeaseRenewed {
        /// Lease id.
        lease: LeaseId,
        /// New expiry.
        expires_at_ms: Millis,
        /// When it was renewed.
        at: Millis,
    },
    /// An executor manager reported usage.
    UsageReported {
        /// Lease id.
        lease: LeaseId,
        /// Usage since the previous report.
        delta: UsageReport,
        /// When it was reported.
        at: Millis,
    },
    /// A lease ended; its resources return to the host's pool.
    LeaseEnded {
        /// Lease id.
        lease: LeaseId,
        /// How it ended (never `Active`).
        state: LeaseState,
        /// When it ended (its expiry, for an expired lease).
        at: Millis,
    },
    /// An ended lease was dropped after the retention period.
    LeaseForgotten {
        /// Lease id.
        lease: LeaseId,
    },
    /// Checkpoint only: an ended lease, kept for its retention period,
    /// restored as it was (it holds no resources).
    LeaseRestored(Lease),
    /// Checkpoint only, last: the id counters and the clock, which the
    /// other checkpoint ops may not imply (the newest lease may have been
    /// forgotten, and ids are never reused).
    Checkpoint {
        /// The id the next new host gets.
        next_host: u64,
        /// The id the next lease gets.
        next_lease: u64,
        /// The manager's clock when the checkpoint was taken.
        at: Millis,
        /// The id the next ticket gets (absent from logs older than queues).
        #[serde(default)]
        next_ticket: u64,
    },
    /// A lease request was queued (also, in a checkpoint, one that waits).
    TicketQueued(Ticket),
    /// A queued request stopped waiting: granted (its leases' grants come
    /// first), timed out or cancelled.
    TicketEnded {
        /// The ticket.
        ticket: TicketId,
        /// How.
        outcome: TicketOutcome,
        /// When.
        at: Millis,
    },
    /// An ended ticket was dropped after the retention period.
    TicketForgotten {
        /// The ticket.
        ticket: TicketId,
    },
    /// Checkpoint only: an ended ticket kept for its retention period.
    TicketRestored(Ticket),
    /// A tenant's quota was set (unlimited: removed).
    QuotaSet {
        /// The tenant.
        tenant: TenantId,
        /// Its limits.
        quota: Quota,
    },
}

impl StoreOp {
    /// The time the op carries, if any.
    pub(crate) fn at(&self) -> Option<Millis> {
        match self {
            Self::LeaseGranted(lease) => Some(lease.granted_at_ms),
            Self::LeaseRenewed { at, .. }
            | Self::UsageReported { at, .. }
            | Self::LeaseEnded { at, .. }
            | Self::Checkpoint { at, .. } => Some(*at),
            Self::LeaseRestored(lease) => lease.ended_at_ms,
            Self::TicketQueued(t) => Some(t.queued_at_ms),
            Self::TicketEnded { at, .. } => Some(*at),
            Self::TicketRestored(t) => t.ended_at_ms,
            Self::HostUpserted { .. }
            | Self::HostDown { .. }
            | Self::LeaseForgotten { .. }
            | Self::TicketForgotten { .. }
            | Self::QuotaSet { .. } => None,
        }
    }
}
