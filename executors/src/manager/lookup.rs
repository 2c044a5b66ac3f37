//! The lookup service: where the executor of a lease listens.
//!
//! Control plane only (the invocations go straight to the executor). TCP, one
//! JSON object per line, any number of requests per connection:
//!
//! ```text
//! -> {"lease": 7, "token": "<64 hex digits>"}
//! <- {"executor": "10.0.0.7:40123"}
//! -> {"lease": 8, "token": "<wrong>"}
//! <- {"error": "unknown lease"}
//! ```
//!
//! The token is checked in constant time against the lease's; an unknown
//! lease and a wrong token get the same answer. A lookup of an executor that
//! is still starting waits up to [`LOOKUP_WAIT`] for its address.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rfx_leases::proto::LeaseId;
use rfx_leases::wire::LeaseToken;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufReader as AsyncBufReader};
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

/// The answer to an unknown lease or a wrong token.
const UNKNOWN: &str = "unknown lease";

/// A lookup request: one JSON object on one line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// The lease.
    pub lease: LeaseId,
    /// Its token, as 64 hex digits (as the tenant received it).
    pub token: String,
}

impl fmt::Debug for LookupRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupRequest")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The answer to a [`LookupRequest`]: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LookupReply {
    /// Where the lease's executor listens (`ip:port`).
    Executor {
        /// The address.
        executor: String,
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
    /// Listening there.
    Ready(SocketAddr),
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

    /// The state of the executor of `lease` if `token` is its token.
    fn find(&self, lease: LeaseId, token: &str) -> Option<watch::Receiver<ExecState>> {
        let entries = self.entries.lock();
        match entries.get(&lease) {
            Some(e) if e.token.verify(token) => Some(e.state.clone()),
            Some(_) => None,
            None => {
                // The same work as a wrong token, so timing tells nothing more
                // than the answer does.
                let _ = LeaseToken::from_bytes([0; 32]).verify(token);
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
                    "malformed request: expected {\"lease\": <id>, \"token\": \"<hex>\"}",
                )
            }
        };
        let Some(mut state) = self.find(req.lease, &req.token) else {
            return LookupReply::error(UNKNOWN);
        };
        let settled =
            tokio::time::timeout(LOOKUP_WAIT, state.wait_for(|s| *s != ExecState::Starting)).await;
        match settled {
            Ok(Ok(s)) => match *s {
                ExecState::Ready(addr) => LookupReply::Executor {
                    executor: addr.to_string(),
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

/// Serves lookups on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, directory: Arc<Directory>) {
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
        tokio::spawn(async move {
            serve_connection(stream, &directory).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, directory: &Directory) {
    let (r, mut w) = stream.into_split();
    let mut r = AsyncBufReader::new(r);
    loop {
        let line = match tokio::time::timeout(IDLE, next_line(&mut r, MAX_LINE)).await {
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
/// where the executor of `lease` listens, presenting the lease's `token` (64
/// hex digits). Blocking; the whole exchange is bounded by `timeout` (plus
/// name resolution).
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
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| {
        unreachable(
            last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
        )
    })?;
    let req = LookupRequest {
        lease,
        token: token.to_owned(),
    };
    let mut line = serde_json::to_vec(&req).map_err(|e| ManagerError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(remaining()))
        .map_err(unreachable)?;
    stream.write_all(&line).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(remaining()))
        .map_err(unreachable)?;
    let mut reply = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    BufReader::new(stream.take(limit))
        .read_until(b'\n', &mut reply)
        .map_err(unreachable)?;
    if reply.last() != Some(&b'\n') {
        return Err(ManagerError::Protocol(if reply.is_empty() {
            "connection closed without a reply".to_owned()
        } else {
            "reply line unterminated or too long".to_owned()
        }));
    }
    match serde_json::from_slice::<LookupReply>(&reply) {
        Ok(LookupReply::Executor { executor }) => executor
            .parse()
            .map_err(|_| ManagerError::Protocol(format!("not an address: {executor:?}"))),
        Ok(LookupReply::Error { error }) => Err(ManagerError::LookupRefused {
            lease,
            message: error,
        }),
        Err(e) => Err(ManagerError::Protocol(e.to_string())),
    }
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
            serde_json::from_str(r#"{"lease": 7, "token": "ab"}"#).expect("parses");
        assert_eq!((req.lease, req.token.as_str()), (LeaseId(7), "ab"));
        assert!(!format!("{req:?}").contains("ab\""));
        let ok: LookupReply =
            serde_json::from_str(r#"{"executor":"127.0.0.1:5"}"#).expect("parses");
        assert_eq!(
            ok,
            LookupReply::Executor {
                executor: "127.0.0.1:5".into()
            }
        );
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
            let good = |lease: u64| format!(r#"{{"lease":{lease},"token":"{}"}}"#, token.to_hex());
            let refused = |r: LookupReply| match r {
                LookupReply::Error { error } => error,
                other => panic!("expected a refusal, got {other:?}"),
            };

            // Still starting: the lookup waits, then gives up (paused clock).
            assert!(refused(d.answer(&good(1)).await).contains("still starting"));
            tx.send_replace(ExecState::Ready("127.0.0.1:9".parse().expect("addr")));
            assert_eq!(
                d.answer(&good(1)).await,
                LookupReply::Executor {
                    executor: "127.0.0.1:9".into()
                }
            );
            let wrong = format!(r#"{{"lease":1,"token":"{}"}}"#, "0".repeat(64));
            assert_eq!(refused(d.answer(&wrong).await), UNKNOWN);
            assert_eq!(refused(d.answer(&good(2)).await), UNKNOWN);
            for garbage in ["", "{", "null", r#"{"lease":-1,"token":"x"}"#, "\u{0}"] {
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
}
