//! The executor manager's error type.

use rfx_leases::DaemonError;
use std::io;

/// Why the executor manager failed (a lookup's errors are
/// [`LookupError`](crate::lookup::LookupError)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The first registration with the lease manager failed (later losses of
    /// the connection are retried, not returned).
    #[error("cannot register with the lease manager at {manager}")]
    Register {
        /// The lease manager's address.
        manager: String,
        /// The cause.
        #[source]
        source: DaemonError,
    },
    /// A socket, process or runtime operation failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid executor manager configuration: {0}")]
    Config(String),
}

impl ManagerError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { op, source }
    }
}
