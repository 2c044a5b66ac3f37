//! The error type of rfx-fabric.

use std::time::Duration;

use crate::caps::TransportKind;
use crate::wire::WireError;

/// Everything that can go wrong in the transport layer.
///
/// Every error concerns one operation or one endpoint: nothing a peer sends
/// makes the process panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// A transport was forced that this build does not contain.
    #[error("transport `{kind}` is not built; rebuild with `--features {feature}`")]
    NotBuilt {
        /// The transport asked for.
        kind: TransportKind,
        /// The cargo feature that builds it.
        feature: &'static str,
    },
    /// A transport is built but cannot run here, or cannot reach this peer.
    #[error("transport `{kind}` is unavailable: {reason}")]
    Unavailable {
        /// The transport asked for.
        kind: TransportKind,
        /// Why it cannot be used.
        reason: String,
    },
    /// The two sides have no transport in common (or force different ones).
    #[error("no usable transport: {0}")]
    NoTransport(String),
    /// The connection handshake failed (wrong version, garbage, bad reply).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer refused the connection and said why.
    #[error("peer rejected the connection: {0}")]
    Rejected(String),
    /// The peer did not prove it knows the shared secret
    /// ([`crate::ConnectOptions::secret`]): this side refused it.
    #[error("authentication failed: {0}")]
    AuthFailed(crate::auth::AuthError),
    /// The peer sent bytes that do not parse; the endpoint is closed.
    #[error("malformed data from peer")]
    Malformed(#[source] WireError),
    /// A one-sided access outside the peer's registered memory, refused
    /// before anything was sent.
    #[error("remote access refused: {len} bytes at {addr:#x} with rkey {rkey:#x}: {reason}")]
    RemoteAccess {
        /// The remote key used.
        rkey: u32,
        /// The first remote address of the access.
        addr: u64,
        /// The length of the access.
        len: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A local access outside a registered region.
    #[error("local access out of bounds: {len} bytes at offset {offset} of a {size}-byte region")]
    OutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The length asked for.
        len: usize,
        /// The size of the region.
        size: usize,
    },
    /// A payload larger than the transport or the configuration allows.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length of the payload.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer closed the connection or died.
    #[error("peer gone: {0}")]
    PeerGone(String),
    /// A bounded wait ran out.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        op: &'static str,
        /// How long.
        after: Duration,
    },
    /// A configuration value (usually from the environment) is invalid.
    #[error("invalid {var}={value:?}: {reason}")]
    Config {
        /// The variable or option.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{op} failed")]
    Os {
        /// The call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl FabricError {
    pub(crate) fn os(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        FabricError::Os {
            op,
            source: source.into(),
        }
    }

    /// Classifies an I/O error of `op`: a vanished peer is
    /// [`FabricError::PeerGone`], a socket timeout is
    /// [`FabricError::Timeout`], anything else [`FabricError::Os`].
    pub(crate) fn from_io(op: &'static str, e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            WouldBlock | TimedOut => FabricError::Timeout {
                op,
                after: Duration::ZERO,
            },
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                FabricError::PeerGone(format!("{op}: {e}"))
            }
            _ => FabricError::os(op, e),
        }
    }

    /// True when the peer is gone: the endpoint is dead, every later
    /// operation fails the same way.
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, FabricError::PeerGone(_))
    }

    /// True for a timeout of a bounded wait: nothing happened yet, the
    /// endpoint is still usable.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FabricError::Timeout { .. })
    }
}

pub(crate) fn nix_err(op: &'static str) -> impl FnOnce(nix::Error) -> FabricError {
    move |e| FabricError::os(op, std::io::Error::from(e))
}

/// `e` and its causes on one line (`outer: inner: ...`), for a log line or
/// a peer that sees only the text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
