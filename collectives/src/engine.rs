//! The progress engine: one [`Endpoint`] per peer, per-peer send queues
//! with credit flow control, reassembly of fragmented messages, and the
//! queue of arrived messages matched by (source, context, tag).
//!
//! Every poll drains every peer, so a rank waiting on peer A still takes
//! peer B's traffic off the wire: nothing blocks in the transport, and two
//! ranks sending to each other never deadlock. A sender never puts more
//! than the window into one peer's ring or socket; the receiver returns
//! credit as it drains.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use rfx_fabric::{Completion, Endpoint, FabricError, PollMode, TransportKind};

use crate::error::CollError;
use crate::wire::{self, Frame, FRAME_OVERHEAD};

/// Completions taken from one endpoint per sweep, so that one busy peer
/// does not starve the others.
const POLL_BURST: usize = 64;

/// A message that arrived complete and waits for a matching receive.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) src: usize,
    pub(crate) ctx: u32,
    pub(crate) tag: u32,
    pub(crate) data: Bytes,
}

#[derive(Debug)]
struct Assembly {
    ctx: u32,
    tag: u32,
    total: usize,
    buf: BytesMut,
}

#[derive(Debug)]
struct Peer {
    ep: Endpoint,
    window: usize,
    /// Bytes we may still put in flight to this peer.
    credit: usize,
    /// Bytes drained from this peer not yet credited back.
    owed: usize,
    pending: VecDeque<Vec<u8>>,
    asm: Option<Assembly>,
    gone: Option<String>,
}

/// The engine settings that matter per sweep.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub(crate) progress: PollMode,
    pub(crate) window: usize,
    pub(crate) fragment: usize,
    pub(crate) shm_ring_bytes: usize,
    pub(crate) max_message: usize,
    pub(crate) flush_timeout: Duration,
}

/// The shared state of all communicators of a process.
#[derive(Debug)]
pub(crate) struct Engine {
    rank: usize,
    peers: Vec<Option<Peer>>,
    unexpected: VecDeque<Msg>,
    cfg: EngineConfig,
    oversubscribed: bool,
    idle_sweeps: u32,
    /// The next free context id of this process (see `split`).
    pub(crate) next_ctx: u32,
}

impl Engine {
    /// `eps[i]` is the endpoint to world rank i (`None` for ourselves).
    pub(crate) fn new(rank: usize, eps: Vec<Option<Endpoint>>, cfg: EngineConfig) -> Engine {
        let size = eps.len();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let peers = eps
            .into_iter()
            .map(|ep| {
                ep.map(|ep| {
                    // Never more in flight than a transport buffer surely
                    // holds: a quarter of an shm ring, 128 KiB of socket.
                    let cap = match ep.kind() {
                        TransportKind::Shm => cfg.shm_ring_bytes / 4,
                        _ => 128 << 10,
                    };
                    let window = cfg.window.min(cap).max(2 * (FRAME_OVERHEAD + 64));
                    Peer {
                        ep,
                        window,
                        credit: window,
                        owed: 0,
                        pending: VecDeque::new(),
                        asm: None,
                        gone: None,
                    }
                })
            })
            .collect();
        Engine {
            rank,
            peers,
            unexpected: VecDeque::new(),
            cfg,
            oversubscribed: size > cores,
            idle_sweeps: 0,
            next_ctx: 1,
        }
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn size(&self) -> usize {
        self.peers.len()
    }

    /// The transport to world rank `r` (`None` for ourselves).
    pub(crate) fn transport(&self, r: usize) -> Option<TransportKind> {
        self.peers.get(r)?.as_ref().map(|p| p.ep.kind())
    }

    /// Why world rank `r` is gone, if it is.
    pub(crate) fn gone(&self, r: usize) -> Option<&str> {
        self.peers.get(r)?.as_ref()?.gone.as_deref()
    }

    /// Queues a message to world rank `dest` and sends what the window
    /// allows now. Never waits for the peer.
    pub(crate) fn post(
        &mut self,
        dest: usize,
        ctx: u32,
        tag: u32,
        data: &[u8],
    ) -> Result<(), CollError> {
        if dest == self.rank {
            self.unexpected.push_back(Msg {
                src: dest,
                ctx,
                tag,
                data: Bytes::copy_from_slice(data),
            });
            return Ok(());
        }
        let fragment = self.frag_for(dest);
        let peer = self.peer_mut(dest)?;
        if let Some(why) = &peer.gone {
            return Err(CollError::PeerGone {
                rank: dest,
                reason: why.clone(),
            });
        }
        peer.pending.extend(wire::frames(ctx, tag, data, fragment));
        flush(dest, peer);
        Ok(())
    }

    fn frag_for(&self, dest: usize) -> usize {
        let w = self
            .peers
            .get(dest)
            .and_then(|p| p.as_ref())
            .map_or(self.cfg.window, |p| p.window);
        self.cfg.fragment.min(w / 2 - FRAME_OVERHEAD).max(64)
    }

    fn peer_mut(&mut self, r: usize) -> Result<&mut Peer, CollError> {
        let size = self.peers.len();
        self.peers
            .get_mut(r)
            .and_then(|p| p.as_mut())
            .ok_or(CollError::InvalidRank { rank: r, size })
    }

    /// True while frames to world rank `dest` wait for credit.
    pub(crate) fn has_pending(&self, dest: usize) -> bool {
        self.peers
            .get(dest)
            .and_then(|p| p.as_ref())
            .is_some_and(|p| p.gone.is_none() && !p.pending.is_empty())
    }

    /// The first arrived message from `src` (any if `None`) on `ctx` with
    /// `tag` (any if `None`), in arrival order.
    pub(crate) fn take(&mut self, src: Option<usize>, ctx: u32, tag: Option<u32>) -> Option<Msg> {
        let i = self.unexpected.iter().position(|m| {
            m.ctx == ctx && src.is_none_or(|s| s == m.src) && tag.is_none_or(|t| t == m.tag)
        })?;
        self.unexpected.remove(i)
    }

    /// One sweep over all peers: send what credit allows, take what
    /// arrived. True if anything moved.
    pub(crate) fn progress(&mut self) -> bool {
        let mut moved = false;
        let max_message = self.cfg.max_message;
        for (r, slot) in self.peers.iter_mut().enumerate() {
            let Some(peer) = slot else { continue };
            if peer.gone.is_some() {
                continue;
            }
            moved |= flush(r, peer);
            for _ in 0..POLL_BURST {
                match peer.ep.poll() {
                    Ok(Some(Completion::Recv(frame))) => {
                        moved = true;
                        if let Err(why) = handle(r, peer, frame, &mut self.unexpected, max_message)
                        {
                            tracing::warn!(rank = r, "closing the endpoint: {why}");
                            peer.gone = Some(format!("malformed traffic: {why}"));
                            break;
                        }
                    }
                    Ok(Some(Completion::Write(_))) => {
                        moved = true;
                        peer.gone = Some("unexpected one-sided write".into());
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        mark_gone(r, peer, e);
                        break;
                    }
                }
            }
            if peer.gone.is_none() && peer.owed >= peer.window / 4 {
                let owed = std::mem::take(&mut peer.owed);
                if let Err(e) = peer.ep.send(&wire::encode_credit(owed as u64)) {
                    mark_gone(r, peer, e);
                }
            }
            if peer.gone.is_none() {
                moved |= flush(r, peer);
            }
        }
        if moved {
            self.idle_sweeps = 0;
        }
        moved
    }

    /// Waits a little after an empty sweep: hot progress spins (yielding
    /// when ranks outnumber cores), warm progress sleeps on the fds.
    pub(crate) fn idle(&mut self, max: Duration) {
        self.idle_sweeps = self.idle_sweeps.saturating_add(1);
        match self.cfg.progress {
            PollMode::Hot => {
                if self.oversubscribed || self.idle_sweeps > 10_000 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            PollMode::Warm => {
                // A short spin first: replies often come within microseconds.
                if self.idle_sweeps < 16 && !self.oversubscribed {
                    std::hint::spin_loop();
                    return;
                }
                self.sleep(max);
            }
        }
    }

    fn sleep(&mut self, max: Duration) {
        let mut armed = Vec::new();
        let mut ready = false;
        for (r, slot) in self.peers.iter_mut().enumerate() {
            let Some(peer) = slot else { continue };
            if peer.gone.is_some() {
                continue;
            }
            match peer.ep.arm() {
                Ok(true) => armed.push(r),
                Ok(false) => {
                    ready = true;
                    break;
                }
                Err(e) => {
                    mark_gone(r, peer, e);
                    ready = true;
                    break;
                }
            }
        }
        if !ready && !armed.is_empty() {
            let ms = max.as_millis().clamp(1, 100) as u16;
            let mut fds: Vec<PollFd<'_>> = armed
                .iter()
                .filter_map(|&r| self.peers[r].as_ref())
                .map(|p| PollFd::new(p.ep.event_fd(), PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        } else if !ready {
            std::thread::sleep(max.min(Duration::from_millis(1)));
        }
        for r in armed {
            if let Some(p) = self.peers[r].as_mut() {
                p.ep.disarm();
            }
        }
    }

    /// Sends everything still queued, bounded by the flush timeout (used
    /// when the last communicator goes away).
    fn drain(&mut self) {
        let deadline = Instant::now() + self.cfg.flush_timeout;
        while (0..self.peers.len()).any(|r| self.has_pending(r)) && Instant::now() < deadline {
            if !self.progress() {
                self.idle(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.drain();
    }
}

fn mark_gone(r: usize, peer: &mut Peer, e: FabricError) {
    tracing::debug!(rank = r, "peer gone: {e}");
    peer.gone = Some(e.to_string());
}

/// Sends queued frames while credit lasts. True if any went out.
fn flush(r: usize, peer: &mut Peer) -> bool {
    let mut sent = false;
    while let Some(f) = peer.pending.front() {
        let cost = f.len() + FRAME_OVERHEAD;
        if cost > peer.credit {
            break;
        }
        if let Err(e) = peer.ep.send(f) {
            mark_gone(r, peer, e);
            break;
        }
        peer.credit -= cost;
        peer.pending.pop_front();
        sent = true;
    }
    sent
}

/// Takes one frame from world rank `r`. An error closes that peer.
fn handle(
    r: usize,
    peer: &mut Peer,
    frame: Bytes,
    queue: &mut VecDeque<Msg>,
    max_message: usize,
) -> Result<(), String> {
    let f = wire::decode(&frame).map_err(|e| e.to_string())?;
    match f {
        Frame::Credit { bytes } => {
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            peer.credit = peer.credit.saturating_add(bytes).min(peer.window);
            return Ok(());
        }
        Frame::First {
            ctx,
            tag,
            total,
            payload_at,
        } => {
            if peer.asm.is_some() {
                return Err("a message started inside another".into());
            }
            let total = usize::try_from(total)
                .ok()
                .filter(|&t| t <= max_message)
                .ok_or_else(|| format!("message of {total} bytes exceeds the limit"))?;
            let payload = frame.slice(payload_at..);
            if payload.len() > total {
                return Err("first fragment longer than the message".into());
            }
            if payload.len() == total {
                queue.push_back(Msg {
                    src: r,
                    ctx,
                    tag,
                    data: payload,
                });
            } else {
                let mut buf = BytesMut::with_capacity(total.min(64 << 20));
                buf.extend_from_slice(&payload);
                peer.asm = Some(Assembly {
                    ctx,
                    tag,
                    total,
                    buf,
                });
            }
        }
        Frame::Cont { payload_at } => {
            let Some(asm) = peer.asm.as_mut() else {
                return Err("continuation outside a message".into());
            };
            let payload = &frame[payload_at..];
            if asm.buf.len() + payload.len() > asm.total {
                return Err("message longer than announced".into());
            }
            asm.buf.extend_from_slice(payload);
            if asm.buf.len() == asm.total {
                let asm = peer.asm.take().expect("checked above");
                queue.push_back(Msg {
                    src: r,
                    ctx: asm.ctx,
                    tag: asm.tag,
                    data: asm.buf.freeze(),
                });
            }
        }
    }
    peer.owed += frame.len() + FRAME_OVERHEAD;
    Ok(())
}
