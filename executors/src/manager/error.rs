//! The executor manager's error type.

use rfx_leases::proto::LeaseId;
use rfx_leases::DaemonError;
use std::io;

/// Why the executor manager, or a lookup of an executor, failed.
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
    /// The executor manager could not be reached at `manager` for a lookup.
    #[error("cannot reach the executor manager at {manager}")]
    Unreachable {
        /// The executor manager's lookup address.
        manager: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The executor manager answered a lookup with a refusal ("unknown lease",
    /// an executor still starting or gone).
    #[error("executor manager refused the lookup of lease {lease}: {message}")]
    LookupRefused {
        /// The lease looked up.
        lease: LeaseId,
        /// The executor manager's explanation.
        message: String,
    },
    /// The TLS set-up or handshake of a lookup failed (a bad `RFX_TLS_CA`,
    /// an untrusted certificate, a manager that does not speak TLS).
    #[error("TLS with the executor manager at {manager} failed")]
    Tls {
        /// The executor manager's lookup address.
        manager: String,
        /// The cause.
        #[source]
        source: DaemonError,
    },
    /// The executor manager's answer to a lookup is not the lookup protocol.
    #[error("malformed lookup reply: {0}")]
    Protocol(String),
}

impl ManagerError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { op, source }
    }
}
