//! Transport names and what each provider can do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transports rfx knows. All four names parse in every build; only the
/// built ones can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// TCP, the fallback that works everywhere.
    Tcp,
    /// Shared memory between processes of one host.
    Shm,
    /// RDMA verbs (feature `verbs`).
    Verbs,
    /// libfabric (feature `ofi`).
    Ofi,
}

impl TransportKind {
    /// Every transport, in the order `auto` prefers them (`docs/design.md`).
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Verbs,
        TransportKind::Shm,
        TransportKind::Ofi,
        TransportKind::Tcp,
    ];

    /// The lower-case name used on the command line and in `RFX_TRANSPORT`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Shm => "shm",
            TransportKind::Verbs => "verbs",
            TransportKind::Ofi => "ofi",
        }
    }

    /// The cargo feature that builds it, if it needs one.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            TransportKind::Tcp | TransportKind::Shm => None,
            TransportKind::Verbs => Some("verbs"),
            TransportKind::Ofi => Some("ofi"),
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}; expected auto, tcp, shm, verbs or ofi")]
pub struct UnknownTransport(pub String);

impl FromStr for TransportKind {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(TransportKind::Tcp),
            "shm" => Ok(TransportKind::Shm),
            "verbs" | "rdma" => Ok(TransportKind::Verbs),
            "ofi" | "libfabric" => Ok(TransportKind::Ofi),
            _ => Err(UnknownTransport(s.to_string())),
        }
    }
}

/// `auto`, or one transport forced.
///
/// ```
/// use rfx_fabric::{TransportChoice, TransportKind};
/// assert_eq!("auto".parse::<TransportChoice>().unwrap(), TransportChoice::Auto);
/// assert_eq!("shm".parse::<TransportChoice>().unwrap(), TransportChoice::Forced(TransportKind::Shm));
/// assert!("carrier-pigeon".parse::<TransportChoice>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TransportChoice {
    /// Pick per peer: verbs, else shm on the same host, else ofi, else tcp.
    #[default]
    Auto,
    /// Use this one or fail.
    Forced(TransportKind),
}

impl TransportChoice {
    /// The forced transport, if any.
    pub fn forced(self) -> Option<TransportKind> {
        match self {
            TransportChoice::Auto => None,
            TransportChoice::Forced(k) => Some(k),
        }
    }
}

impl FromStr for TransportChoice {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") || s.trim().is_empty() {
            Ok(TransportChoice::Auto)
        } else {
            s.parse().map(TransportChoice::Forced)
        }
    }
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportChoice::Auto => f.write_str("auto"),
            TransportChoice::Forced(k) => k.fmt(f),
        }
    }
}

bitflags::bitflags! {
    /// What an endpoint of a provider can do; every flag is exercised by the
    /// conformance suite (`fabric/tests/conformance`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Caps: u32 {
        /// Two-sided `send` / receive.
        const SEND = 1;
        /// One-sided write with a 32-bit immediate.
        const WRITE_IMM = 1 << 1;
        /// One-sided read ([`crate::Endpoint::read`]).
        const READ = 1 << 2;
        /// Written data lands in the target's registered memory without a
        /// receive-side copy.
        const ZERO_COPY = 1 << 3;
        /// Warm mode: block on a file descriptor until an event arrives.
        const WAIT_FD = 1 << 4;
        /// Reaches peers on other hosts.
        const INTER_NODE = 1 << 5;
        /// Buffers of this process can be lent to the peer for one-sided
        /// reads with no copy on this side ([`crate::Endpoint::lend`]).
        const LEND = 1 << 6;
    }
}

/// A provider as probed on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Which transport.
    pub kind: TransportKind,
    /// What it can do.
    pub caps: Caps,
    /// Largest payload carried inline with the completion record.
    pub max_inline: usize,
    /// The device it runs on, if any (e.g. `rxe0`).
    pub device: Option<String>,
}
