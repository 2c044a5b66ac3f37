//! The lookup protocol, a tenant's side: where the executor of a lease
//! listens, asked of its host's executor manager (whose side is
//! `manager::lookup`).
//!
//! Control plane only (the invocations go straight to the executor). TCP (or
//! TLS, see below), one JSON object per line, any number of requests per
//! connection:
//!
//! ```text
//! -> {"lease": 7, "proof": "<64 hex digits>"}
//! <- {"executor": "10.0.0.7:40123"}
//! -> {"lease": 8, "proof": "<wrong>"}
//! <- {"error": "unknown lease"}
//! ```
//!
//! The lease token never crosses this connection: the client sends the
//! proof `HMAC-SHA256(token, "rfx-lookup-v1" || lease id as 8 big-endian
//! bytes)` in hex ([`LeaseToken::lookup_proof`]), which the manager
//! recomputes from the token it derived for the lease and compares in
//! constant time. An unknown lease, a wrong proof and a raw token (the
//! format of version 1, `"token"`) all get the same answer. The proof is the
//! same for every lookup of a lease, so an eavesdropper on plain TCP can
//! replay it and learn the executor's address, nothing more: the executor
//! itself checks the token. A lookup of an executor that is still starting
//! waits up to [`LOOKUP_WAIT`] for its address.
//!
//! **TLS**: a manager given a certificate and key (`--tls-cert/--tls-key`
//! or `RFX_TLS_CERT/RFX_TLS_KEY`) serves lookups over TLS only;
//! [`lookup_executor`] speaks TLS when `RFX_TLS_CA` names the CA to trust (with `RFX_TLS_SERVER_NAME`, as for the lease manager:
//! [`rfx_leases::tls`]).

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rfx_leases::proto::LeaseId;
use rfx_leases::tls::TlsClient;
use rfx_leases::wire::{self, LeaseToken};
use serde::{Deserialize, Serialize};

/// Longest request or reply line, in bytes.
pub const MAX_LINE: usize = 1024;

/// How long a lookup waits for an executor that is still starting.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// A lookup request: one JSON object on one line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// The lease.
    pub lease: LeaseId,
    /// The proof of the lease's token, 64 hex digits
    /// ([`LookupRequest::new`]). A version 1 request's `"token"` is read
    /// here too, and refused like any wrong proof.
    #[serde(alias = "token")]
    pub proof: String,
}

impl LookupRequest {
    /// The request for `lease`, proving `token` (the lease token in hex, as
    /// the tenant received it; anything else makes a proof the manager
    /// refuses).
    pub fn new(lease: LeaseId, token: &str) -> Self {
        let proof = match LeaseToken::from_hex(token) {
            Some(t) => t.lookup_proof(lease),
            None => wire::lookup_proof(token.as_bytes(), lease),
        };
        Self {
            lease,
            proof: proof.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl fmt::Debug for LookupRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupRequest")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Why the lease's executor was restarted: an invocation ran past the
/// lease's time limit, and its executor was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedOut {
    /// The worker (one per connection: [`ExecutorHello::worker`](crate::session::ExecutorHello)).
    pub worker: u32,
    /// The invocation's id on that worker's connection.
    pub invocation: u16,
    /// How long it had run, ms.
    pub after_ms: u64,
}

impl TimedOut {
    /// From what the executor printed after its time-limit prefix:
    /// `worker W invocation ID after MS ms`.
    pub fn parse(rest: &str) -> Option<TimedOut> {
        let mut w = rest.split_whitespace();
        let mut field = |name: &str| -> Option<&str> {
            (w.next()? == name).then_some(())?;
            w.next()
        };
        let worker = field("worker")?.parse().ok()?;
        let invocation = field("invocation")?.parse().ok()?;
        let after_ms = field("after")?.parse().ok()?;
        Some(TimedOut {
            worker,
            invocation,
            after_ms,
        })
    }
}

/// What a lookup found: where the executor listens, and whether it is a
/// restart after a time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The executor's address.
    pub addr: SocketAddr,
    /// Set when the previous executor of the lease was stopped because an
    /// invocation ran past the time limit.
    pub timed_out: Option<TimedOut>,
}

/// The answer to a [`LookupRequest`]: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LookupReply {
    /// Where the lease's executor listens (`ip:port`).
    Executor {
        /// The address.
        executor: String,
        /// Set after a restart for a time limit: which invocation ran over.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timed_out: Option<TimedOut>,
    },
    /// Why there is no address.
    Error {
        /// The explanation.
        error: String,
    },
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The executor manager could not be reached at `manager`.
    #[error("cannot reach the executor manager at {manager}")]
    Unreachable {
        /// The executor manager's lookup address.
        manager: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The executor manager refused the lookup ("unknown lease", an
    /// executor still starting or gone).
    #[error("executor manager refused the lookup of lease {lease}: {message}")]
    LookupRefused {
        /// The lease looked up.
        lease: LeaseId,
        /// The executor manager's explanation.
        message: String,
    },
    /// The TLS set-up or handshake failed (a bad `RFX_TLS_CA`, an
    /// untrusted certificate, a manager that does not speak TLS).
    #[error("TLS with the executor manager at {manager} failed")]
    Tls {
        /// The executor manager's lookup address.
        manager: String,
        /// The cause.
        #[source]
        source: rfx_leases::DaemonError,
    },
    /// The answer is not the lookup protocol.
    #[error("malformed lookup reply: {0}")]
    Protocol(String),
}

/// Asks the executor manager at `manager` (its lookup address, `host:port`)
/// where the executor of `lease` listens, proving the lease's `token` (64
/// hex digits; the token itself is not sent: see the [module](self) docs).
/// Over TLS when `RFX_TLS_CA` is set ([`rfx_leases::tls::TlsClient::from_env`]).
/// Blocking; the whole exchange is bounded by `timeout` (plus name
/// resolution).
///
/// ```no_run
/// use rfx_executors::lookup::lookup_executor;
/// use rfx_leases::proto::LeaseId;
/// use std::time::Duration;
/// # fn main() -> Result<(), rfx_executors::lookup::LookupError> {
/// let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// let addr = lookup_executor("10.0.0.7:7500", LeaseId(7), token, Duration::from_secs(10))?;
/// println!("invoke on {addr}");
/// # Ok(()) }
/// ```
pub fn lookup_executor(
    manager: &str,
    lease: LeaseId,
    token: &str,
    timeout: Duration,
) -> Result<SocketAddr, LookupError> {
    let tls = TlsClient::from_env().map_err(|source| LookupError::Tls {
        manager: manager.to_owned(),
        source,
    })?;
    lookup_executor_with(manager, lease, token, timeout, tls.as_ref())
}

/// [`lookup_executor`] with the TLS settings given (`None`: plain TCP)
/// instead of read from the environment.
pub fn lookup_executor_with(
    manager: &str,
    lease: LeaseId,
    token: &str,
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> Result<SocketAddr, LookupError> {
    lookup_executor_found(manager, lease, token, timeout, tls).map(|f| f.addr)
}

/// [`lookup_executor_with`], with what the manager says of a restart.
pub fn lookup_executor_found(
    manager: &str,
    lease: LeaseId,
    token: &str,
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> Result<Found, LookupError> {
    let deadline = Instant::now() + timeout;
    let unreachable = |source| LookupError::Unreachable {
        manager: manager.to_owned(),
        source,
    };
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut last = None;
    let mut stream = None;
    for addr in manager.to_socket_addrs().map_err(unreachable)? {
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some((s, addr));
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let (stream, peer) = stream.ok_or_else(|| {
        unreachable(
            last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
        )
    })?;
    let mut line = serde_json::to_vec(&LookupRequest::new(lease, token))
        .map_err(|e| LookupError::Protocol(e.to_string()))?;
    line.push(b'\n');
    let timeouts = |s: &TcpStream| {
        s.set_write_timeout(Some(remaining()))?;
        s.set_read_timeout(Some(remaining()))
    };
    timeouts(&stream).map_err(unreachable)?;
    let reply = match tls {
        None => exchange(stream, &line),
        Some(tls) => {
            let s = tls
                .connect_blocking(stream, peer)
                .map_err(|source| LookupError::Tls {
                    manager: manager.to_owned(),
                    source,
                })?;
            timeouts(s.get_ref()).map_err(unreachable)?;
            exchange(s, &line)
        }
    }
    .map_err(unreachable)?;
    if reply.last() != Some(&b'\n') {
        return Err(LookupError::Protocol(if reply.is_empty() {
            "connection closed without a reply".to_owned()
        } else {
            "reply line unterminated or too long".to_owned()
        }));
    }
    match serde_json::from_slice::<LookupReply>(&reply) {
        Ok(LookupReply::Executor {
            executor,
            timed_out,
        }) => executor
            .parse()
            .map(|addr| Found { addr, timed_out })
            .map_err(|_| LookupError::Protocol(format!("not an address: {executor:?}"))),
        Ok(LookupReply::Error { error }) => Err(LookupError::LookupRefused {
            lease,
            message: error,
        }),
        Err(e) => Err(LookupError::Protocol(e.to_string())),
    }
}

/// Writes `line`, reads one reply line (at most [`MAX_LINE`] bytes and its
/// newline; the socket's timeouts bound both).
fn exchange<S: Read + Write>(mut stream: S, line: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(line)?;
    stream.flush()?;
    let mut reply = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    BufReader::new(stream.take(limit)).read_until(b'\n', &mut reply)?;
    Ok(reply)
}
