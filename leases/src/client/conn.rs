//! One connection to the daemon: hello, then requests matched to replies by
//! id, and pushes routed to their receivers.

use crate::error::DaemonError;
use crate::proto::Event;
use crate::tls::{Stream, TlsClient};
use crate::wire::{
    self, ClientMsg, Command, ErrorCode, Hello, RequestId, Response, ServerMsg, WireError,
    PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Requests queued to the connection task.
const CALL_QUEUE: usize = 64;
/// Pushes kept until the application reads them; more are dropped.
const PUSH_QUEUE: usize = 1024;

type Reader = FramedRead<ReadHalf<Stream>, LengthDelimitedCodec>;
type Writer = FramedWrite<WriteHalf<Stream>, LengthDelimitedCodec>;
type ReplyTx = oneshot::Sender<Result<Response, DaemonError>>;

/// A handle on the connection task; clones share the connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    calls: mpsc::Sender<Call>,
    next_id: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Call {
    id: RequestId,
    msg: ClientMsg,
    reply: ReplyTx,
}

/// What the daemon pushes on this connection.
#[derive(Debug)]
pub(crate) struct Pushes {
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) commands: mpsc::Receiver<Command>,
}

impl Conn {
    /// Connects, exchanges hellos and starts the connection task.
    pub(crate) async fn connect(addr: impl ToSocketAddrs) -> Result<(Self, Pushes), DaemonError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(DaemonError::io("connect to the lease manager"))?;
        let _ = tcp.set_nodelay(true);
        // TLS when the environment names a CA to trust (crate::tls).
        let stream = match TlsClient::from_env()? {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let peer = tcp
                    .peer_addr()
                    .map_err(DaemonError::io("read the lease manager's address"))?;
                tls.connect(tcp, peer).await?
            }
        };
        let (rd, wr) = tokio::io::split(stream);
        let mut rd = FramedRead::new(rd, wire::reply_codec());
        let mut wr = FramedWrite::new(wr, wire::request_codec());
        let hello = wire::encode(&ClientMsg::Hello(Hello::current()))?;
        wr.send(hello)
            .await
            .map_err(DaemonError::io("send the hello"))?;
        match next(&mut rd).await? {
            ServerMsg::Welcome { version } if version == PROTOCOL_VERSION => {}
            ServerMsg::Error(e) => {
                return Err(DaemonError::Remote {
                    code: e.code,
                    message: e.message,
                })
            }
            other => {
                return Err(DaemonError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
        }
        let (calls, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (events_tx, events) = mpsc::channel(PUSH_QUEUE);
        let (commands_tx, commands) = mpsc::channel(PUSH_QUEUE);
        tokio::spawn(drive(rd, wr, calls_rx, events_tx, commands_tx));
        let conn = Self {
            calls,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        Ok((conn, Pushes { events, commands }))
    }

    /// Sends the request `make(id)` and waits for its reply.
    pub(crate) async fn call(
        &self,
        make: impl FnOnce(RequestId) -> ClientMsg,
    ) -> Result<Response, DaemonError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let call = Call {
            id,
            msg: make(id),
            reply,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| DaemonError::Closed)?;
        rx.await.map_err(|_| DaemonError::Closed)?
    }
}

/// The error for a reply of the wrong kind.
pub(crate) fn unexpected(resp: &Response) -> DaemonError {
    DaemonError::Protocol(format!("unexpected reply {resp:?}"))
}

/// Reads and decodes one frame.
async fn next(rd: &mut Reader) -> Result<ServerMsg, DaemonError> {
    match rd.next().await {
        None => Err(DaemonError::Closed),
        Some(Err(e)) => Err(WireError::Frame(e).into()),
        Some(Ok(frame)) => Ok(wire::decode_server(&frame)?),
    }
}

/// The connection task: writes calls, matches replies, routes pushes; on
/// the way out fails every pending call.
async fn drive(
    mut rd: Reader,
    mut wr: Writer,
    mut calls: mpsc::Receiver<Call>,
    events: mpsc::Sender<Event>,
    commands: mpsc::Sender<Command>,
) {
    let mut pending: HashMap<RequestId, ReplyTx> = HashMap::new();
    // Why the connection ended, if the daemon said.
    let refusal: Option<(ErrorCode, String)> = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break None }; // every handle dropped
                let frame = match wire::encode(&call.msg) {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = call.reply.send(Err(e.into()));
                        continue;
                    }
                };
                if let Err(e) = wr.send(frame).await {
                    let _ = call.reply.send(Err(DaemonError::Io { op: "send a request", source: e }));
                    break None;
                }
                pending.insert(call.id, call.reply);
            }
            msg = next(&mut rd) => match msg {
                Ok(ServerMsg::Reply { id, body }) => {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Ok(body));
                    }
                }
                Ok(ServerMsg::Error(e)) => match e.id.and_then(|id| pending.remove(&id)) {
                    Some(tx) => {
                        let _ = tx.send(Err(DaemonError::Remote { code: e.code, message: e.message }));
                    }
                    None => {
                        tracing::warn!(code = %e.code, "lease manager closed the connection: {}", e.message);
                        break Some((e.code, e.message));
                    }
                },
                Ok(ServerMsg::Event(event)) => {
                    if events.try_send(event).is_err() {
                        tracing::debug!("lease event dropped: nobody reads events");
                    }
                }
                Ok(ServerMsg::Command(cmd)) => {
                    if commands.try_send(cmd).is_err() {
                        tracing::warn!("host command dropped: nobody reads commands");
                    }
                }
                Ok(ServerMsg::Welcome { .. }) => {}
                Err(e) => {
                    if !matches!(e, DaemonError::Closed) {
                        tracing::warn!("lease manager connection failed: {e}");
                    }
                    break None;
                }
            }
        }
    };
    for (_, tx) in pending {
        let err = match &refusal {
            Some((code, message)) => DaemonError::Remote {
                code: *code,
                message: message.clone(),
            },
            None => DaemonError::Closed,
        };
        let _ = tx.send(Err(err));
    }
}
