//! The lookup service: the executor manager's side of the protocol of
//! [`crate::lookup`] (where the executor of a lease listens). A lookup of an
//! executor that is still starting waits up to [`LOOKUP_WAIT`] for its
//! address. With a certificate and key
//! ([`ManagerConfig::tls`](super::ManagerConfig::tls), `--tls-cert/--tls-key`
//! or `RFX_TLS_CERT/RFX_TLS_KEY` on the command line) it serves lookups over
//! TLS only.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rfx_leases::proto::LeaseId;
use rfx_leases::tls::TlsServer;
use rfx_leases::wire::LeaseToken;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::error::ManagerError;
use super::lines::{next_line, Line};
use crate::lookup::{LookupReply, LookupRequest, TimedOut, LOOKUP_WAIT, MAX_LINE};

/// The answer to an unknown lease or a wrong proof.
const UNKNOWN: &str = "unknown lease";

/// A refusal.
fn refusal(e: impl Into<String>) -> LookupReply {
    LookupReply::Error { error: e.into() }
}

/// A connection silent this long is closed.
const IDLE: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 128;

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
                return refusal(
                    "malformed request: expected {\"lease\": <id>, \"proof\": \"<hex>\"}",
                )
            }
        };
        let Some(mut state) = self.find(req.lease, &req.proof) else {
            return refusal(UNKNOWN);
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
                    refusal(format!("the executor of lease {} is gone", req.lease))
                }
            },
            Ok(Err(_)) => refusal(format!("the executor of lease {} is gone", req.lease)),
            Err(_) => refusal(format!(
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
                refusal(format!("request longer than {MAX_LINE} bytes")),
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
            serde_json::to_string(&refusal("unknown lease")).expect("encodes"),
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
