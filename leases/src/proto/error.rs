//! The crate's error type.

use super::ids::{HostId, LeaseId, Millis};
use super::lease::LeaseState;
use super::placement::PlacementError;
use super::queue::TicketId;
use serde::{Deserialize, Serialize};

/// Why a lease-manager operation failed.
///
/// A tenant acting on another tenant's lease gets [`LeaseError::NotFound`],
/// exactly as for an id that was never granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LeaseError {
    /// No such lease for this tenant (it may exist for another).
    #[error("lease {0} not found")]
    NotFound(LeaseId),
    /// The lease has ended.
    #[error("lease {lease} is {state}")]
    NotActive {
        /// The lease.
        lease: LeaseId,
        /// How it ended.
        state: LeaseState,
    },
    /// A renewal would put the expiry too far ahead.
    #[error("lease would expire {ahead_ms} ms from now, more than the maximum {max_ms} ms")]
    TooLong {
        /// How far ahead the renewed expiry would be.
        ahead_ms: Millis,
        /// The configured maximum.
        max_ms: Millis,
    },
    /// The host id was never registered.
    #[error("host {0} not found")]
    UnknownHost(HostId),
    /// The host was marked down; its executor manager must register again.
    #[error("host {0} is down; register again")]
    HostDown(HostId),
    /// The host reported on a lease it does not run.
    #[error("lease {lease} not found on host {host}")]
    NotOnHost {
        /// The lease.
        lease: LeaseId,
        /// The reporting host.
        host: HostId,
    },
    /// A registration's address or capacity is out of bounds.
    #[error("invalid registration: {0}")]
    InvalidRegistration(String),
    /// A store op contradicts the state it is applied to (corrupt or
    /// reordered log).
    #[error("store op cannot be applied: {0}")]
    BadStoreOp(String),
    /// A lease request was refused.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// No such ticket of this tenant.
    #[error("queued request {0} not found")]
    TicketNotFound(TicketId),
    /// The ticket stopped waiting already.
    #[error("queued request {0} has ended")]
    TicketEnded(TicketId),
}
