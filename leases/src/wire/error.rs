//! Errors as data: what the daemon answers instead of a reply.

use super::msg::RequestId;
use crate::proto::{LeaseError, PlacementError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why the daemon refused a request or closed a connection.
///
/// Codes are stable across versions; a code this build does not know
/// decodes as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peer speaks another protocol version; the connection is closed.
    VersionMismatch,
    /// The frame is not a valid message; the connection is closed.
    Malformed,
    /// A valid message out of place (no hello first, hello twice).
    Protocol,
    /// The tenant token or the cluster key is wrong.
    Unauthorized,
    /// No such lease for this tenant, or no such tenant.
    NotFound,
    /// The lease has ended.
    NotActive,
    /// A renewal would put the expiry beyond the maximum lease length.
    TooLong,
    /// No host can hold the lease request now.
    Placement,
    /// The request is out of bounds (zero cores, bad tenant name, ...).
    InvalidArgument,
    /// The tenant already exists.
    AlreadyExists,
    /// The host id was never registered.
    UnknownHost,
    /// The host was marked down; its executor manager must register again.
    HostDown,
    /// The host reported on a lease it does not run.
    NotOnHost,
    /// The registration's address or capacity is out of bounds.
    InvalidRegistration,
    /// The daemon failed (store error); the request may not have happened.
    Internal,
    /// The tenant's quota refuses the request.
    Quota,
    /// A code from a newer daemon.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error reply: for the request `id`, or for the whole connection if
/// `id` is `None` (the daemon closes it after sending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The request refused, if the error is about one request.
    pub id: Option<RequestId>,
    /// What kind of error.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
}

impl ErrorReply {
    /// An error about the request `id`.
    pub fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

impl From<&LeaseError> for ErrorCode {
    fn from(e: &LeaseError) -> Self {
        match e {
            LeaseError::NotFound(_) | LeaseError::TicketNotFound(_) => Self::NotFound,
            LeaseError::TicketEnded(_) => Self::NotActive,
            LeaseError::NotActive { .. } => Self::NotActive,
            LeaseError::TooLong { .. } => Self::TooLong,
            LeaseError::UnknownHost(_) => Self::UnknownHost,
            LeaseError::HostDown(_) => Self::HostDown,
            LeaseError::NotOnHost { .. } => Self::NotOnHost,
            LeaseError::InvalidRegistration(_) => Self::InvalidRegistration,
            LeaseError::Placement(p) => p.into(),
            _ => Self::Internal,
        }
    }
}

impl From<&PlacementError> for ErrorCode {
    fn from(e: &PlacementError) -> Self {
        match e {
            PlacementError::Invalid { .. } => Self::InvalidArgument,
            PlacementError::Quota { .. } => Self::Quota,
            _ => Self::Placement,
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes are not a valid message.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    /// The message could not be serialized.
    #[error("message cannot be encoded")]
    Encode(#[source] serde_json::Error),
    /// The framing layer failed (frame too long, connection error).
    #[error("framing failed")]
    Frame(#[source] std::io::Error),
}
