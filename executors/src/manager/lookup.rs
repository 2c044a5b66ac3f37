//! The lookup service: where the executor of a lease listens.
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
//! **TLS**: a manager given a certificate and key
//! ([`ManagerConfig::tls`](super::ManagerConfig::tls), `--tls-cert/--tls-key`
//! or `RFX_TLS_CERT/RFX_TLS_KEY` on the command line) serves lookups over
//! TLS only; [`lookup_executor`] speaks TLS when `RFX_TLS_CA` names the CA to
//! trust (with `RFX_TLS_SERVER_NAME`, as for the lease manager:
//! [`rfx_leases::tls`]).

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rfx_leases::proto::LeaseId;
use rfx_leases::tls::{TlsClient, TlsServer};
use rfx_leases::wire::{self, LeaseToken};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::error::ManagerError;
use super::lines::{next_line, Line};

/// Longest request or reply line, in bytes.
pub const MAX_LINE: usize = 1024;

/// How long a lookup waits for an executor that is still starting.
pub const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// A connection silent this long is closed.
const IDLE: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 128;

/// The answer to an unknown lease or a wrong proof.
const UNKNOWN: &str = "unknown lease";

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
    /// From what the executor printed after [`TIMED_OUT_PREFIX`](crate::executor::TIMED_OUT_PREFIX):
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

impl LookupReply {
    fn error(e: impl Into<String>) -> Self {
        Self::Error { error: e.into() }
    }
}

/// Where the executor of a lease is in its life, as the lookup sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecState {
    /// Spawned; its address is not known yet.
    Starting,
    /// Listening there; after a restart for a time limit, which
    /// invocation ran over.
    Ready(SocketAddr, Option<TimedOut>),
    /// It failed to start, exited or was stopped.
    Gone,
}

#[derive(Debug)]
struct Entry {
    token: LeaseToken,
    generation: u64,
    state: watch::Receiver<ExecState>,
}

/// The executors the lookup service knows, by lease.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    entries: Mutex<HashMap<LeaseId, Entry>>,
}

impl Directory {
    /// Publishes the executor of `lease`; `state` follows it.
    pub(crate) fn insert(
        &self,
        lease: LeaseId,
        token: LeaseToken,
        generation: u64,
        state: watch::Receiver<ExecState>,
    ) {
        let e = Entry {
            token,
            generation,
            state,
        };
        self.entries.lock().insert(lease, e);
    }

    /// Forgets the executor of `lease` if it is still `generation`.
    pub(crate) fn remove(&self, lease: LeaseId, generation: u64) {
        let mut entries = self.entries.lock();
        if entries
            .get(&lease)
            .is_some_and(|e| e.generation == generation)
        {
            entries.remove(&lease);
        }
    }

    /// Forgets every executor.
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    /// The state of the executor of `lease` if `proof` proves its token.
    fn find(&self, lease: LeaseId, proof: &str) -> Option<watch::Receiver<ExecState>> {
        let entries = self.entries.lock();
        match entries.get(&lease) {
            Some(e) if e.token.verify_lookup_proof(lease, proof) => Some(e.state.clone()),
            Some(_) => None,
            None => {
                // The same work as a wrong proof, so timing tells nothing more
                // than the answer does.
                let _ = LeaseToken::from_bytes([0; 32]).verify_lookup_proof(lease, proof);
                None
            }
        }
    }

    /// The answer to one request line.
    async fn answer(&self, line: &str) -> LookupReply {
        let req: LookupRequest = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(_) => {
                return LookupReply::error(
                    "malformed request: expected {\"lease\": <id>, \"proof\": \"<hex>\"}",
                )
            }
        };
        let Some(mut state) = self.find(req.lease, &req.proof) else {
            return LookupReply::error(UNKNOWN);
        };
        let settled =
            tokio::time::timeout(LOOKUP_WAIT, state.wait_for(|s| *s != ExecState::Starting)).await;
        match settled {
            Ok(Ok(s)) => match *s {
                ExecState::Ready(addr, timed_out) => LookupReply::Executor {
                    executor: addr.to_string(),
                    timed_out,
                },
                ExecState::Starting | ExecState::Gone => {
                    LookupReply::error(format!("the executor of lease {} is gone", req.lease))
                }
            },
            Ok(Err(_)) => {
                LookupReply::error(format!("the executor of lease {} is gone", req.lease))
            }
            Err(_) => LookupReply::error(format!(
                "the executor of lease {} is still starting",
                req.lease
            )),
        }
    }
}

/// Serves lookups on `listener` (over TLS if `tls` is set) until the task
/// is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    directory: Arc<Directory>,
    tls: Option<TlsServer>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!("lookup service: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "lookup service: too many connections; closing one");
            continue;
        };
        let directory = directory.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, &directory).await,
                // The handshake is bounded like a silent connection.
                Some(tls) => match tokio::time::timeout(IDLE, tls.accept(stream)).await {
                    Ok(Ok(s)) => serve_connection(s, &directory).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "lookup service: TLS handshake failed: {e}")
                    }
                    Err(_) => tracing::debug!(%peer, "lookup service: TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite>(stream: S, directory: &Directory) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = AsyncBufReader::new(r);
    answer_lines(&mut r, &mut w, directory).await;
    // Our side ends first (FIN, or TLS close_notify then FIN), so that the
    // last reply is read before the socket closes over unread input (which
    // makes the kernel reset the connection).
    let _ = tokio::time::timeout(IDLE, w.shutdown()).await;
}

/// Answers request lines until the peer ends, is silent for [`IDLE`], or
/// sends an overlong line (answered, then the end).
async fn answer_lines<R, W>(r: &mut R, w: &mut W, directory: &Directory)
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let line = match tokio::time::timeout(IDLE, next_line(r, MAX_LINE)).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None) | Err(_)) | Err(_) => return,
        };
        let (reply, last) = match line {
            Line::Text(t) if t.trim().is_empty() => continue,
            Line::Text(t) => (directory.answer(&t).await, false),
            Line::TooLong => (
                LookupReply::error(format!("request longer than {MAX_LINE} bytes")),
                true,
            ),
        };
        let Ok(mut out) = serde_json::to_vec(&reply) else {
            return;
        };
        out.push(b'\n');
        match tokio::time::timeout(IDLE, w.write_all(&out)).await {
            Ok(Ok(())) if !last => {}
            _ => return,
        }
    }
}

/// Asks the executor manager at `manager` (its lookup address, `host:port`)
/// where the executor of `lease` listens, proving the lease's `token` (64
/// hex digits; the token itself is not sent: see the [module](self) docs).
/// Over TLS when `RFX_TLS_CA` is set ([`rfx_leases::tls::TlsClient::from_env`]).
/// Blocking; the whole exchange is bounded by `timeout` (plus name
/// resolution).
///
/// ```no_run
/// use rfx_executors::manager::lookup_executor;
/// use rfx_leases::proto::LeaseId;
/// use std::time::Duration;
/// # fn main() -> Result<(), rfx_executors::manager::ManagerError> {
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
) -> Result<SocketAddr, ManagerError> {
    let tls = TlsClient::from_env().map_err(|source| ManagerError::Tls {
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
) -> Result<SocketAddr, ManagerError> {
    lookup_executor_found(manager, lease, token, timeout, tls).map(|f| f.addr)
}

/// [`lookup_executor_with`], with what the manager says of a restart.
pub fn lookup_executor_found(
    manager: &str,
    lease: LeaseId,
    token: &str,
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> Result<Found, ManagerError> {
    let deadline = Instant::now() + timeout;
    let unreachable = |source| ManagerError::Unreachable {
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
        .map_err(|e| ManagerError::Protocol(e.to_string()))?;
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
                .map_err(|source| ManagerError::Tls {
                    manager: manager.to_owned(),
                    source,
                })?;
            timeouts(s.get_ref()).map_err(unreachable)?;
            exchange(s, &line)
        }
    }
    .map_err(unreachable)?;
    if reply.last() != Some(&b'\n') {
        return Err(ManagerError::Protocol(if reply.is_empty() {
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
            .map_err(|_| ManagerError::Protocol(format!("not an address: {executor:?}"))),
        Ok(LookupReply::Error { error }) => Err(ManagerError::LookupRefused {
            lease,
            message: error,
        }),
        Err(e) => Err(ManagerError::Protocol(e.to_string())),
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

/// Binds the lookup service's address (blocking bind, so `run` reports a
/// taken port before registering).
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, ManagerError> {
    let std = StdListener::bind(addr).map_err(ManagerError::io("bind the lookup service"))?;
    std.set_nonblocking(true)
        .map_err(ManagerError::io("bind the lookup service"))?;
    TcpListener::from_std(std).map_err(ManagerError::io("bind the lookup service"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let req: LookupRequest =
            serde_json::from_str(r#"{"lease": 7, "proof": "ab"}"#).expect("parses");
        assert_eq!((req.lease, req.proof.as_str()), (LeaseId(7), "ab"));
        assert!(!format!("{req:?}").contains("ab\""));
        // A version 1 request (a raw token) still parses, to be refused.
        let old: LookupRequest =
            serde_json::from_str(r#"{"lease": 7, "token": "cd"}"#).expect("parses");
        assert_eq!(old.proof, "cd");
        // The request carries the proof, never the token.
        let token = LeaseToken::from_bytes([9; 32]);
        let req = LookupRequest::new(LeaseId(7), &token.to_hex());
        let line = serde_json::to_string(&req).expect("encodes");
        assert!(!line.contains(&token.to_hex()), "{line}");
        assert!(!line.contains("token"), "{line}");
        assert!(token.verify_lookup_proof(LeaseId(7), &req.proof));
        // Not a token: a proof all the same, which no lease accepts.
        assert_eq!(LookupRequest::new(LeaseId(7), "zz").proof.len(), 64);
        let ok: LookupReply =
            serde_json::from_str(r#"{"executor":"127.0.0.1:5"}"#).expect("parses");
        assert_eq!(
            ok,
            LookupReply::Executor {
                executor: "127.0.0.1:5".into(),
                timed_out: None,
            }
        );
        // After a restart for a time limit, the reply says which invocation.
        let t = TimedOut {
            worker: 1,
            invocation: 7,
            after_ms: 310,
        };
        let line = serde_json::to_string(&LookupReply::Executor {
            executor: "127.0.0.1:5".into(),
            timed_out: Some(t),
        })
        .expect("encodes");
        assert_eq!(
            line,
            r#"{"executor":"127.0.0.1:5","timed_out":{"worker":1,"invocation":7,"after_ms":310}}"#
        );
        assert_eq!(
            TimedOut::parse("worker 1 invocation 7 after 310 ms"),
            Some(t)
        );
        for bad in [
            "",
            "worker x invocation 7 after 3 ms",
            "invocation 7 worker 1 after 3 ms",
        ] {
            assert_eq!(TimedOut::parse(bad), None, "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&LookupReply::error("unknown lease")).expect("encodes"),
            r#"{"error":"unknown lease"}"#
        );
    }

    #[test]
    fn answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let d = Directory::default();
            let token = LeaseToken::from_bytes([7; 32]);
            let (tx, rx) = watch::channel(ExecState::Starting);
            d.insert(LeaseId(1), token.clone(), 1, rx);
            let good = |lease: u64| {
                serde_json::to_string(&LookupRequest::new(LeaseId(lease), &token.to_hex()))
                    .expect("encodes")
            };
            let refused = |r: LookupReply| match r {
                LookupReply::Error { error } => error,
                other => panic!("expected a refusal, got {other:?}"),
            };

            // Still starting: the lookup waits, then gives up (paused clock).
            assert!(refused(d.answer(&good(1)).await).contains("still starting"));
            tx.send_replace(ExecState::Ready("127.0.0.1:9".parse().expect("addr"), None));
            assert_eq!(
                d.answer(&good(1)).await,
                LookupReply::Executor {
                    executor: "127.0.0.1:9".into(),
                    timed_out: None,
                }
            );
            // A wrong proof, the raw token in either field (the old
            // format), another lease's proof, another token's proof and an
            // unknown lease: all the same answer.
            let other = LeaseToken::from_bytes([8; 32]);
            let proof_of = |t: &LeaseToken, lease: u64| t.lookup_proof_hex(LeaseId(lease));
            for wrong in [
                format!(r#"{{"lease":1,"proof":"{}"}}"#, "0".repeat(64)),
                format!(r#"{{"lease":1,"token":"{}"}}"#, token.to_hex()),
                format!(r#"{{"lease":1,"proof":"{}"}}"#, token.to_hex()),
                format!(r#"{{"lease":1,"proof":"{}"}}"#, proof_of(&token, 2)),
                format!(r#"{{"lease":1,"proof":"{}"}}"#, proof_of(&other, 1)),
                r#"{"lease":1,"proof":"zz"}"#.to_owned(),
            ] {
                assert_eq!(refused(d.answer(&wrong).await), UNKNOWN, "{wrong}");
            }
            assert_eq!(refused(d.answer(&good(2)).await), UNKNOWN);
            for garbage in ["", "{", "null", r#"{"lease":-1,"proof":"x"}"#, "\u{0}"] {
                assert!(refused(d.answer(garbage).await).starts_with("malformed"));
            }

            d.remove(LeaseId(1), 2); // another generation: kept
            assert!(matches!(
                d.answer(&good(1)).await,
                LookupReply::Executor { .. }
            ));
            tx.send_replace(ExecState::Gone);
            assert!(refused(d.answer(&good(1)).await).contains("gone"));
            d.remove(LeaseId(1), 1);
            assert_eq!(refused(d.answer(&good(1)).await), UNKNOWN);
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]

        /// Whatever the line, the answer is a refusal unless it carries the
        /// proof: random text, and well-formed requests with random proofs
        /// (of the right length) or with the raw token, for any lease.
        #[test]
        fn only_the_proof_finds_an_executor(
            text in "\\PC{0,200}",
            lease in proptest::prelude::any::<u64>(),
            proof in "[0-9a-f]{64}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let d = Directory::default();
                let token = LeaseToken::from_bytes([3; 32]);
                let (_tx, rx) =
                    watch::channel(ExecState::Ready("127.0.0.1:9".parse().expect("addr"), None));
                d.insert(LeaseId(lease), token.clone(), 1, rx);
                let lines = [
                    text.clone(),
                    format!(r#"{{"lease":{lease},"proof":"{proof}"}}"#),
                    format!(r#"{{"lease":{lease},"token":"{}"}}"#, token.to_hex()),
                ];
                for line in lines {
                    let r = d.answer(&line).await;
                    proptest::prop_assert!(matches!(r, LookupReply::Error { .. }), "{line} -> {r:?}");
                }
                let good = serde_json::to_string(&LookupRequest::new(LeaseId(lease), &token.to_hex()))
                    .expect("encodes");
                let found = matches!(d.answer(&good).await, LookupReply::Executor { .. });
                proptest::prop_assert!(found, "the proof was refused");
                Ok(())
            })?;
        }
    }
}
