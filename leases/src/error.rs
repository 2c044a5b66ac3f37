//! The error type of the lease manager's I/O side: daemon, store and clients.

use crate::proto::LeaseError;
use crate::wire::{ErrorCode, WireError};
use std::path::PathBuf;

/// Why a daemon, store or client operation failed.
///
/// Refusals by the lease manager (a wrong token, an unknown lease, a request
/// that fits no host) arrive as [`DaemonError::Remote`] with the daemon's
/// [`ErrorCode`] and message; everything else is local.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The lease manager refused the request.
    #[error("lease manager refused: {message} ({code})")]
    Remote {
        /// What kind of refusal, for callers that branch.
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
    /// A socket or file operation failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The durable store failed.
    #[error("store: {op} failed")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The store's error (redb's).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process (usually the running lease manager) holds the store.
    #[error(
        "store {} is in use by another process (is the lease manager running? \
         then add tenants through it, authenticated by the cluster key)",
        path.display()
    )]
    StoreLocked {
        /// The store file.
        path: PathBuf,
    },
    /// The store holds data this version cannot read.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The persisted lease log does not replay.
    #[error("cannot replay the lease log")]
    Replay(#[source] LeaseError),
    /// The daemon configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tenant name is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("invalid tenant name {0:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidTenantName(String),
    /// The tenant already exists.
    #[error("tenant {0} already exists")]
    TenantExists(String),
    /// The system's random source failed.
    #[error("no randomness available")]
    Random(#[source] getrandom::Error),
    /// A frame could not be encoded or decoded.
    #[error("bad frame")]
    Wire(#[from] WireError),
    /// TLS set-up or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The peer broke the protocol (unexpected message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection to the lease manager is closed.
    #[error("connection to the lease manager closed")]
    Closed,
    /// A task of the daemon failed unexpectedly.
    #[error("internal failure: {0}")]
    Internal(String),
    /// An operation did not finish in time.
    #[error("{0} timed out")]
    TimedOut(&'static str),
}

impl DaemonError {
    /// The daemon's error code, if this is a refusal by the daemon.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { op, source }
    }

    #[cfg(feature = "server")]
    pub(crate) fn store<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Store {
            op,
            source: Box::new(e.into()),
        }
    }
}
