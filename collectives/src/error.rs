//! The error type of rfx-collectives.

use std::time::Duration;

use rfx_fabric::FabricError;

use crate::element::ReduceOp;

/// Everything that can go wrong in a communicator.
///
/// Errors name the rank involved where there is one, so that a job whose
/// rank died reports which.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollError {
    /// The transport failed on the endpoint to a rank.
    #[error("transport error with rank {rank}")]
    Fabric {
        /// The world rank of the peer.
        rank: usize,
        /// The transport error.
        #[source]
        source: FabricError,
    },
    /// A rank died or closed its end; the operation cannot complete.
    #[error("rank {rank} is gone: {reason}")]
    PeerGone {
        /// The world rank of the peer.
        rank: usize,
        /// What the transport said.
        reason: String,
    },
    /// An operation waited longer than the op timeout without progress.
    #[error("{op} timed out after {after:?} (waiting for rank {waiting_for:?})")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The bound that ran out.
        after: Duration,
        /// The world rank waited on, if one.
        waiting_for: Option<usize>,
    },
    /// A rank outside `0..size`.
    #[error("rank {rank} is outside a communicator of size {size}")]
    InvalidRank {
        /// The rank given.
        rank: usize,
        /// The communicator's size.
        size: usize,
    },
    /// A message longer than the receive buffer, or of a length that is
    /// not a whole number of elements.
    #[error("message of {got} bytes does not fit a receive buffer of {cap} bytes")]
    Truncated {
        /// Bytes that arrived.
        got: usize,
        /// Bytes the buffer holds.
        cap: usize,
    },
    /// A collective got a message of the wrong length: the ranks called
    /// different collectives or passed different counts.
    #[error("collective mismatch: rank {rank} sent {got} bytes where {want} were expected")]
    Mismatch {
        /// The world rank of the sender.
        rank: usize,
        /// Bytes that arrived.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A peer sent bytes that do not parse; its endpoint is closed.
    #[error("malformed message from rank {rank}: {reason}")]
    Malformed {
        /// The world rank of the peer.
        rank: usize,
        /// What is wrong.
        reason: String,
    },
    /// The reduction is not defined for the element type (e.g. `BitAnd`
    /// on floats).
    #[error("reduction {op:?} is not defined for {ty}")]
    UnsupportedOp {
        /// The operation.
        op: ReduceOp,
        /// The element type.
        ty: &'static str,
    },
    /// An argument that cannot be right (buffer lengths, counts).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Missing or invalid environment variables.
    #[error("invalid environment: {0}")]
    Env(String),
    /// The rendezvous or the wiring of the ranks failed.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// A device buffer failed to stage through host memory.
    #[error("device buffer: {0}")]
    Device(String),
    /// An I/O call of the bootstrap failed.
    #[error("{op} failed")]
    Io {
        /// The call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl CollError {
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        CollError::Io { op, source }
    }

    /// True when a peer rank is gone.
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, CollError::PeerGone { .. })
    }

    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CollError::Timeout { .. })
    }
}
