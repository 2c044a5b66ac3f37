//! One client connection: hello, then requests to the core and pushes from it.

use super::core::{ConnId, CoreMsg};
use crate::tls::Stream;
use crate::wire::{self, ClientMsg, ErrorCode, ErrorReply, ServerMsg, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Pushes queued for one connection before it counts as too slow.
const PUSH_QUEUE: usize = 256;

type Reader = FramedRead<ReadHalf<Stream>, LengthDelimitedCodec>;
type Writer = FramedWrite<WriteHalf<Stream>, LengthDelimitedCodec>;

/// Serves one connection until the peer leaves, breaks the protocol, or the
/// core drops it. Never panics, whatever the peer sends.
pub(super) async fn serve(
    stream: Stream,
    peer: SocketAddr,
    conn: ConnId,
    core: mpsc::Sender<CoreMsg>,
    hello_timeout: Duration,
) {
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = FramedRead::new(rd, wire::request_codec());
    let mut wr = FramedWrite::new(wr, wire::reply_codec());
    tracing::debug!(%peer, conn, "connection opened");
    let welcome = match hello(&mut rd, hello_timeout).await {
        Ok(()) => ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
        },
        Err(e) => {
            tracing::warn!(%peer, code = %e.code, "refused: {}", e.message);
            let _ = send(&mut wr, &ServerMsg::Error(e)).await;
            return;
        }
    };
    if send(&mut wr, &welcome).await.is_err() {
        return;
    }
    let (push, pushes) = mpsc::channel(PUSH_QUEUE);
    if core.send(CoreMsg::Open { conn, push }).await.is_err() {
        return;
    }
    if let Err(e) = session(&mut rd, &mut wr, pushes, conn, &core).await {
        tracing::warn!(%peer, code = %e.code, "closing: {}", e.message);
        let _ = send(&mut wr, &ServerMsg::Error(e)).await;
    }
    let _ = core.send(CoreMsg::Close { conn }).await;
    tracing::debug!(%peer, conn, "connection closed");
}

/// Reads the first frame: a hello of our version.
async fn hello(rd: &mut Reader, limit: Duration) -> Result<(), ErrorReply> {
    let refuse = |code, message: String| ErrorReply::new(None, code, message);
    let frame = match tokio::time::timeout(limit, rd.next()).await {
        Err(_) => {
            let ms = limit.as_millis();
            return Err(refuse(
                ErrorCode::Protocol,
                format!("no hello within {ms} ms"),
            ));
        }
        Ok(None) => return Err(refuse(ErrorCode::Protocol, "closed before hello".into())),
        Ok(Some(Err(e))) => return Err(refuse(ErrorCode::Malformed, format!("bad frame: {e}"))),
        Ok(Some(Ok(frame))) => frame,
    };
    match wire::decode_client(&frame) {
        Ok(ClientMsg::Hello(h)) if h.version == PROTOCOL_VERSION => Ok(()),
        Ok(ClientMsg::Hello(h)) => Err(refuse(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version {} is not supported; this lease manager speaks version {}",
                h.version, PROTOCOL_VERSION
            ),
        )),
        Ok(_) => Err(refuse(
            ErrorCode::Protocol,
            "expected a hello as the first frame".into(),
        )),
        Err(e) => Err(refuse(ErrorCode::Malformed, malformed(&e))),
    }
}

/// Requests one at a time, in order; pushes in between. `Ok` when the peer
/// or the core leaves, the error to send when the peer breaks the protocol.
async fn session(
    rd: &mut Reader,
    wr: &mut Writer,
    mut pushes: mpsc::Receiver<ServerMsg>,
    conn: ConnId,
    core: &mpsc::Sender<CoreMsg>,
) -> Result<(), ErrorReply> {
    let mut pending: Option<oneshot::Receiver<ServerMsg>> = None;
    loop {
        tokio::select! {
            biased;
            reply = wait(&mut pending) => {
                pending = None;
                let Ok(reply) = reply else { return Ok(()) }; // core stopped
                if send(wr, &reply).await.is_err() {
                    return Ok(());
                }
            }
            push = pushes.recv() => {
                // `None`: the core dropped this peer (too slow).
                let Some(push) = push else { return Ok(()) };
                if send(wr, &push).await.is_err() {
                    return Ok(());
                }
            }
            frame = rd.next(), if pending.is_none() => {
                let frame = match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(ErrorReply::new(
                        None,
                        ErrorCode::Malformed,
                        format!("bad frame: {e}"),
                    )),
                    Some(Ok(frame)) => frame,
                };
                let msg = wire::decode_client(&frame)
                    .map_err(|e| ErrorReply::new(None, ErrorCode::Malformed, malformed(&e)))?;
                if let ClientMsg::Hello(_) = msg {
                    return Err(ErrorReply::new(None, ErrorCode::Protocol, "hello sent twice"));
                }
                let (reply, rx) = oneshot::channel();
                if core.send(CoreMsg::Request { conn, msg, reply }).await.is_err() {
                    return Ok(());
                }
                pending = Some(rx);
            }
        }
    }
}

/// The reply awaited, or never.
async fn wait(
    pending: &mut Option<oneshot::Receiver<ServerMsg>>,
) -> Result<ServerMsg, oneshot::error::RecvError> {
    match pending {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// Writes one message; a message too large for a frame becomes an error reply.
async fn send(wr: &mut Writer, msg: &ServerMsg) -> Result<(), std::io::Error> {
    let frame = match wire::encode(msg) {
        Ok(f) if f.len() <= wire::MAX_REPLY_LEN => f,
        other => {
            let why = match other {
                Ok(f) => format!("reply of {} bytes exceeds the frame limit", f.len()),
                Err(e) => format!("reply cannot be encoded: {e}"),
            };
            let id = match msg {
                ServerMsg::Reply { id, .. } => Some(*id),
                _ => None,
            };
            tracing::error!("{why}");
            let err = ServerMsg::Error(ErrorReply::new(id, ErrorCode::Internal, why));
            wire::encode(&err).map_err(std::io::Error::other)?
        }
    };
    wr.send(frame).await
}

/// The decoder's explanation, for the peer.
fn malformed(e: &wire::WireError) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("malformed message: {cause}"),
        None => format!("malformed message: {e}"),
    }
}
