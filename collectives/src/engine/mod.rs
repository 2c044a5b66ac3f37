//! The progress engine: one [`Endpoint`] per peer, the inbox each side
//! exposes to the other, per-peer send queues with credit flow control,
//! and the per-peer queues of arrived messages that receives claim.
//!
//! Data moves one-sided ([`Endpoint::write_imm`], protocol in
//! [`crate::wire`]): a sender writes straight from the caller's buffer into
//! the receiver's inbox (on shm the only copy on the way in), and the
//! receiver copies (or reduces) straight from its inbox into the caller's
//! buffer. Nothing is allocated per message on that path. A message stays
//! in the inbox until the receive that claims it consumes it, chunk by
//! chunk, so large messages pipeline: the sender writes chunk k+1 while the
//! receiver consumes chunk k.
//!
//! Messages nobody consumes (unexpected ones, or those behind them) are
//! copied out of the inbox into owned buffers ("spilled") when the inbox
//! runs short while this rank waits: a sender blocked on credit thus always
//! makes progress, and two ranks sending to each other never deadlock.
//! A message of a small size travels in one write with its header; larger
//! ones as a header and chunks.
//!
//! Between processes of one host that may read each other's memory
//! ([`rfx_fabric::cma`]), a large send whose buffer stays put until it
//! completes ([`Lend::Expose`]) goes as a read request instead: the
//! receiver copies the payload straight from the sender's buffer into its
//! own (one copy, as Open MPI's vader does with CMA) and tells the sender
//! when it is done. A receiver waiting on other messages reads such
//! requests into owned memory, as it spills, so no sender waits on it
//! forever.
//!
//! The protocol is written against [`Link`], not the fabric: `flow` holds
//! the window into each peer's inbox and our inbox with its credit,
//! `inbound` takes the peer's writes in ring order and spills, `outbound`
//! places ours, and this module keeps the per-peer queues that operations
//! post to and claim from. `harness` (tests only) joins N engines by links
//! in memory, so `tests` drives credit starvation, spill, crossed sends and
//! failures in one thread.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use rfx_fabric::cma::PeerMemory;
use rfx_fabric::{Completion, Endpoint, FabricError, MemoryRegion, PollMode, TransportKind};

use crate::error::CollError;
use crate::wire::{Header, Kind, PullDesc, ALIGN, HDR_LEN, SEQ_MASK};

mod flow;
#[cfg(test)]
mod harness;
mod inbound;
mod link;
mod outbound;
mod remote;
#[cfg(test)]
mod tests;

use flow::Conn;
use inbound::{on_write, read_out, spill, InMsg, Owned};
pub(crate) use inbound::{Inline, INLINE_MAX};
pub(crate) use link::Link;
use outbound::{flush, owned_rest, send_some, OutData, OutMsg, Progress};
pub(crate) use remote::RemoteSrc;
use remote::{lend_parts, LinkReader};

/// Completions taken from one endpoint per sweep, so that one busy peer
/// does not starve the others. With a core per rank a sweep also stops
/// at the first new message from a peer: the waiting operation gets it
/// at once, and does not wait on the peer's next record while the peer
/// is still writing its line (bcast 8 B on 2 ranks: the receiver's call
/// 0.63 → 0.35 µs by OSU's method). Oversubscribed ranks, for which a
/// sweep may end in a yield, take the whole burst.
const POLL_BURST: usize = 64;

/// Most writes taken from a peer after a write to it failed.
const LOSE_POLLS: usize = 1 << 16;

/// Payloads up to this many bytes travel in one write with their header
/// (copied into a staging buffer first); larger ones as a header write and
/// chunk writes straight from the caller's buffer.
pub(super) const SINGLE_MAX: usize = 2048;

/// Words of the scratch buffer that reductions read inbox data (or the
/// peer's memory, a system call per fill) into.
const SCRATCH_WORDS: usize = 2048;

/// Read requests a reduction's receive takes whole before combining, so
/// that the sender's FIN (and so the sender's call) does not wait for the
/// combining: up to this many bytes ([`Engine::consume_with`]). Larger
/// ones are read and combined a scratch-full at a time.
pub(crate) const STAGED_READ_MAX: usize = 256 << 10;

/// Where [`Engine::consume_with`] puts a claimed message's data. A closure
/// `(payload offset, data, scratch words)` is a sink that lands what
/// arrives as it comes.
pub(crate) trait Sink {
    /// Lands the payload bytes from `off`, replacing or combining.
    fn land(&mut self, off: usize, piece: Piece<'_>, scratch: &mut [u64]) -> Result<(), CollError>;
    /// A receive that combines what it reads (a reduction): a read request
    /// of up to [`STAGED_READ_MAX`] bytes is then read whole and its
    /// sender released (FIN) before the combining, as Open MPI's root
    /// receives before it reduces. Read and combined a chunk at a time,
    /// the sender would wait for all the combining too.
    fn staged(&self) -> bool {
        false
    }
    /// For a staged read: where its `len` payload bytes may be read whole
    /// (the part of the output the message combines into, not yet
    /// written), so that [`Sink::combine_staged`] combines in place, one
    /// pass over fewer cache lines than out of a staging buffer. `None`:
    /// the engine's staging buffer, handed to [`Sink::land`].
    fn stage(&mut self, len: usize) -> Option<&mut [u8]> {
        let _ = len;
        None
    }
    /// Combines what was read into [`Sink::stage`]'s bytes.
    fn combine_staged(&mut self) -> Result<(), CollError> {
        Ok(())
    }
}

impl<F> Sink for F
where
    F: FnMut(usize, Piece<'_>, &mut [u64]) -> Result<(), CollError>,
{
    fn land(&mut self, off: usize, piece: Piece<'_>, scratch: &mut [u64]) -> Result<(), CollError> {
        self(off, piece, scratch)
    }
}

/// Empty sweeps of a hot wait between two reliefs of the inboxes.
const RELIEVE_EVERY_HOT: u32 = 1024;
/// The same for waits that yield or sleep (relieved on their first sweep).
const RELIEVE_EVERY_SLOW: u32 = 64;

/// Empty sweeps after which a hot wait with a core of its own yields.
const HOT_YIELD_AFTER: u32 = 1_000_000;

/// With more ranks than cores a read request's sender waits for its
/// reader to be scheduled before its send completes, where a copy into
/// the inbox completes at once: reads start this many times higher. On 4
/// ranks of 2 vCPUs, through the inbox bcast, gather, allgather and
/// alltoall at 16-64 KiB took x0.40-0.94 of the reads' time (gather 32 KiB
/// 10.9 → 4.3 µs); at 128 KiB reads won for bcast, scatter and alltoall
/// (x0.79-0.91).
const OVERSUBSCRIBED_READ_FACTOR: usize = 8;

/// Arrived messages (and inbox chunks) each peer's queue has room for
/// from the start, so that small operations allocate nothing however
/// their messages interleave.
pub(super) const QUEUE_RESERVE: usize = 16;

/// The least inbox the protocol works with.
pub(crate) const MIN_INBOX: usize = 1024;

/// Bound on the up-front allocation for a spilled message (it grows as
/// data arrives beyond that).
pub(super) const SPILL_RESERVE: usize = 64 << 20;

/// Message data handed to a receive: in the inbox, in owned memory, or
/// in the sender's memory.
#[derive(Debug)]
pub(crate) enum Piece<'a> {
    /// `len` bytes at `off` of our inbox region.
    Region {
        mr: &'a MemoryRegion,
        off: usize,
        len: usize,
    },
    /// Bytes already copied out (spilled or sent to ourselves).
    Bytes(&'a [u8]),
    /// `len` bytes from `at` of the concatenation of the sender's ranges
    /// `segs`, read with one copy.
    Remote {
        src: RemoteSrc<'a>,
        segs: &'a [(u64, u64)],
        at: u64,
        len: usize,
    },
}

impl Piece<'_> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Piece::Region { len, .. } | Piece::Remote { len, .. } => *len,
            Piece::Bytes(b) => b.len(),
        }
    }

    /// The part `[at, at + len)`.
    pub(crate) fn sub(&self, at: usize, len: usize) -> Piece<'_> {
        match self {
            Piece::Region { mr, off, .. } => Piece::Region {
                mr,
                off: off + at,
                len,
            },
            Piece::Bytes(b) => Piece::Bytes(&b[at..at + len]),
            Piece::Remote {
                src, segs, at: a, ..
            } => Piece::Remote {
                src: *src,
                segs,
                at: a + at as u64,
                len,
            },
        }
    }

    /// Copies `out.len()` bytes from `at` of the piece into `out`.
    #[inline]
    pub(crate) fn read_at(&self, at: usize, out: &mut [u8]) -> Result<(), FabricError> {
        match self {
            Piece::Region { mr, off, .. } => mr.read_at(off + at, out),
            Piece::Bytes(b) => {
                out.copy_from_slice(&b[at..at + out.len()]);
                Ok(())
            }
            Piece::Remote {
                src, segs, at: a, ..
            } => src.read(segs, a + at as u64, out),
        }
    }
}

/// How a send's bytes may be used after [`Engine::post`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lend {
    /// The engine copies what it could not send at once.
    Copy,
    /// The caller keeps the bytes unchanged and sends the rest by
    /// [`Engine::pump`] (or hands it over by [`Engine::unborrow`]).
    Borrow,
    /// As `Borrow`, and the receiver may also read them in place, so the
    /// caller must not change them before the send completes.
    Expose,
    /// As `Expose`, and the caller waits in the library, pumping, until
    /// the send completes (a blocking send): a receiver that reads it in
    /// place may ask it to write part of the message itself, so that both
    /// copy at once ([`Engine::push`] of a first part).
    ExposeWaiting,
}

/// A message a receive claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    /// World rank of the sender.
    pub(crate) src: usize,
    pub(crate) id: u64,
    pub(crate) tag: u32,
    /// Payload bytes.
    pub(crate) total: usize,
}

/// What [`Engine::take_small`] found.
#[derive(Debug)]
pub(crate) enum Small<R> {
    /// Nothing queued from the source: no claim from it can succeed yet.
    Empty,
    /// The first message from the source, whole and matching, was handed
    /// to the receive's landing and taken: what the landing returned.
    Taken(R),
    /// Anything else: the general claim decides.
    Other,
}

#[derive(Debug)]
struct Peer<L> {
    /// `None` for ourselves.
    link: Option<Conn<L>>,
    msgs: VecDeque<InMsg>,
    next_msg: u64,
    gone: Option<String>,
}

impl<L: Link> Peer<L> {
    /// Reading message `i` (from rank `r`) in the peer's memory failed
    /// (`source`): its ranges were bad, or it exited. The message is
    /// dropped and the peer is gone.
    fn read_failed(&mut self, r: usize, i: usize, source: &FabricError) -> CollError {
        let why = format!("reading a message in its memory: {source}");
        tracing::warn!(rank = r, "{why}");
        self.give_up(why.clone());
        self.msgs.remove(i);
        CollError::PeerGone {
            rank: r,
            reason: why,
        }
    }

    /// Message `i` (rank `r`'s read request `seq`) is read: its FIN frees
    /// the sender, then the reads are verified, after the FIN so that the
    /// sender does not wait for that: what was read in the peer's memory is
    /// its own only if it still lives (`lent`: read through its provider's
    /// loans, nothing to verify). A FIN that fails loses the peer (a
    /// message that came meanwhile moves `epoch`).
    fn finish_read(
        &mut self,
        r: usize,
        i: usize,
        seq: u32,
        lent: bool,
        epoch: &mut u64,
    ) -> Result<(), CollError> {
        if self.gone.is_none() {
            if let Some(Err(e)) = self.link.as_mut().map(|l| l.control(Kind::Fin(seq))) {
                *epoch += u64::from(self.lose(r, e.to_string()));
            }
        }
        let verified = match self.link.as_ref() {
            Some(l) => remote::reads_were_the_peers(&l.link, lent),
            None => Ok(()),
        };
        verified.map_err(|source| self.read_failed(r, i, &source))
    }

    /// With nothing queued from the peer (rank `r`): its next message
    /// handed to `land` straight from the link ([`inbound::take_direct`])
    /// if it is whole in one write and a receive of `(ctx, tag)` and at
    /// most `max` bytes takes it, else [`Small::Empty`].
    fn take_direct<R>(
        &mut self,
        r: usize,
        want: (u32, Option<u32>),
        max: usize,
        land: impl FnOnce(u32, Piece<'_>) -> Option<R>,
    ) -> Small<R> {
        if self.gone.is_some() {
            return Small::Empty;
        }
        let Some(l) = self.link.as_mut() else {
            return Small::Empty;
        };
        let Some(got) = inbound::take_direct(l, &mut self.next_msg, want, max, land) else {
            return Small::Empty;
        };
        // The space it took goes back as progress would return it.
        self.return_credit(r);
        Small::Taken(got)
    }

    /// The first queued message, if it is whole in one chunk of the inbox
    /// (a message in one write that progress queued), handed to `land`
    /// (its tag and payload there); taken if `land` takes it: its space is
    /// free and credited, as [`Engine::consume`] would, without the claim.
    fn take_landed<R>(
        &mut self,
        r: usize,
        land: impl FnOnce(u32, Piece<'_>) -> Option<R>,
    ) -> Option<R> {
        let m = self.msgs.front()?;
        let l = self.link.as_mut()?;
        if m.owned.is_some()
            || m.pull.is_some()
            || m.pushed.is_some()
            || m.total == 0
            || m.arrived != m.total
            || m.consumed != 0
        {
            return None;
        }
        let ch = l.inbox.chunk(m.next_chunk)?;
        if ch.msg != m.id || ch.len != m.total || ch.done {
            return None;
        }
        let (off, len) = (ch.off, ch.len);
        let got = land(
            m.tag,
            Piece::Region {
                mr: &l.inbox.mr,
                off,
                len,
            },
        )?;
        if let Some(ch) = l.inbox.chunk(m.next_chunk) {
            ch.done = true;
        }
        l.inbox.release();
        self.msgs.pop_front();
        self.return_credit(r);
        Some(got)
    }

    /// Returns the inbox space freed so far to the peer (rank `r`) unless
    /// it is gone; a credit that cannot be written loses it ([`Peer::lose`]:
    /// true if a message arrived meanwhile). A peer that left after
    /// sending still gets its data read; only its credit goes nowhere.
    fn return_credit(&mut self, r: usize) -> bool {
        if self.gone.is_some() {
            return false;
        }
        match self.link.as_mut().map(|l| l.credit()) {
            Some(Err(e)) => self.lose(r, e.to_string()),
            _ => false,
        }
    }

    /// A write to the peer failed (`why`): it is gone, but what it wrote
    /// before it left still counts (a rank that finished and exited while
    /// our credit was on its way). Its writes are taken until its link is
    /// empty or fails, bounded by the inbox (the peer cannot have written
    /// more than its credit). True if a message arrived meanwhile.
    fn lose(&mut self, r: usize, why: String) -> bool {
        let before = self.next_msg;
        if self.gone.is_some() {
            return false;
        }
        if let Some(l) = self.link.as_mut() {
            for _ in 0..LOSE_POLLS {
                match l.link.poll() {
                    Ok(Some(Completion::Write(w))) => {
                        if let Err(bad) = on_write(l, &mut self.msgs, &mut self.next_msg, &w) {
                            self.gone = Some(malformed(r, bad));
                            break;
                        }
                    }
                    Ok(Some(Completion::Recv(_)) | None) | Err(_) => break,
                }
            }
        }
        if self.gone.is_none() {
            tracing::debug!(rank = r, "peer gone: {why}");
        }
        self.give_up(why);
        self.next_msg != before
    }

    /// The peer is gone (the first reason stays). It sends no FIN any
    /// more: its loans end now, before a send that lent them returns its
    /// buffer to the caller.
    fn give_up(&mut self, why: String) {
        self.gone.get_or_insert(why);
        if let Some(l) = self.link.as_mut() {
            l.loans.clear();
        }
    }
}

/// A point-to-point receive not matched yet.
#[derive(Debug, Clone, Copy)]
struct Posted {
    claimer: u64,
    src: Option<usize>,
    ctx: u32,
    tag: Option<u32>,
}

/// The engine settings that matter per sweep.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub(crate) progress: PollMode,
    pub(crate) fragment: usize,
    pub(crate) flush_timeout: Duration,
    /// Exposed sends of at least this many bytes go as read requests to
    /// peers that can read our memory (0: never; we then tell no peer that
    /// we read theirs either).
    pub(crate) single_copy_min: usize,
    /// Exposed sends of at least this many bytes over a link that lends
    /// (verbs) go as read requests naming loans (0: never).
    pub(crate) lend_min: usize,
    /// Read requests of at least this many bytes may be answered with
    /// PUSH (0: never).
    pub(crate) push_min: usize,
    /// Cores the ranks on this host share.
    pub(crate) cores: usize,
    /// Read requests of at least this many bytes may be shared: the
    /// sender writes the first part while we read the rest (0: never).
    pub(crate) share_min: usize,
}

impl EngineConfig {
    pub(crate) fn of(cfg: &crate::CollConfig) -> EngineConfig {
        EngineConfig {
            progress: cfg.progress,
            fragment: cfg.fragment,
            flush_timeout: cfg.op_timeout,
            single_copy_min: cfg.thresholds.single_copy_min,
            lend_min: cfg.thresholds.lend_min,
            push_min: cfg.thresholds.push_min,
            cores: cfg.cores.unwrap_or_else(online_cpus),
            share_min: cfg.thresholds.share_min,
        }
    }
}

/// The shared state of all communicators of a process.
#[derive(Debug)]
pub(crate) struct Engine<L: Link = Endpoint> {
    rank: usize,
    peers: Vec<Peer<L>>,
    cfg: EngineConfig,
    oversubscribed: bool,
    idle_sweeps: u32,
    /// The next free context id of this process (see `split`).
    pub(crate) next_ctx: u32,
    next_token: u64,
    /// Moves whenever a message may have become claimable by a receive
    /// that found none: one arrived, a receive was withdrawn, or a claim
    /// went to another posted receive.
    epoch: u64,
    stage: Vec<u8>,
    scratch: Vec<u64>,
    /// Read requests of reductions read whole ([`Engine::consume_with`]);
    /// grown to the largest such message, at most [`STAGED_READ_MAX`].
    pulled: Vec<u64>,
    /// Point-to-point receives not matched yet, in the order they were
    /// posted: a message goes to the first posted receive that matches it,
    /// whichever receive is stepped first (MPI's matching order).
    posted: VecDeque<Posted>,
    pub(crate) stats: EngineStats,
}

/// What the engine moved, since it started (all communicators of the
/// process together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Messages this rank sent to other ranks (of every size; a message to
    /// itself is not counted).
    pub messages_sent: u64,
    /// Messages this rank read in place from a peer's memory (one copy).
    pub messages_read_in_place: u64,
    /// Their bytes.
    pub bytes_read_in_place: u64,
    /// Of those, messages a reduction read straight into its output and
    /// combined there with its input (one copy, one pass).
    pub messages_combined_in_place: u64,
    /// Messages a peer wrote straight into this rank's buffer, answering
    /// its PUSH (one copy, by the sender).
    pub messages_written_in_place: u64,
    /// Their bytes.
    pub bytes_written_in_place: u64,
    /// Messages whose copy this rank shared with their sender: it asked
    /// the sender to write the first half into its buffer while it read
    /// the second in the sender's memory (`RFX_COLL_SHARE_MIN`).
    pub messages_shared: u64,
    /// Their bytes (both halves).
    pub bytes_shared: u64,
    /// Messages copied out of an inbox (or a peer's memory) into owned
    /// memory because nobody was receiving them yet.
    pub messages_spilled: u64,
    /// Messages a waiting receive took straight from the link (shm),
    /// whole in one write, past the queue of arrived messages (and, for
    /// those whose bytes came in the ring's record, past the inbox).
    pub messages_taken_direct: u64,
}

fn malformed(r: usize, why: impl std::fmt::Display) -> String {
    tracing::warn!(rank = r, "closing the endpoint: {why}");
    format!("malformed traffic: {why}")
}

fn fabric_err(rank: usize, source: FabricError) -> CollError {
    match source {
        FabricError::PeerGone(reason) => CollError::PeerGone { rank, reason },
        source => CollError::Fabric { rank, source },
    }
}

impl<L: Link> Engine<L> {
    /// `links[i]` is the link to world rank i and the inbox we exposed on
    /// it (`None` for ourselves).
    pub(crate) fn new(
        rank: usize,
        links: Vec<Option<(L, MemoryRegion)>>,
        cfg: EngineConfig,
    ) -> Result<Engine<L>, CollError> {
        let size = links.len();
        // Ranks of this job on this machine's cores: ours and the peers'
        // that share them (not ranks on other hosts).
        let here = 1 + links
            .iter()
            .flatten()
            .filter(|(l, _)| l.shares_cpus())
            .count();
        let oversubscribed = here > cfg.cores;
        let mut peers = Vec::with_capacity(size);
        for (r, l) in links.into_iter().enumerate() {
            let link = match l {
                None => None,
                Some((link, mr)) => {
                    let mut c = Conn::new(r, link, mr, cfg.fragment)?;
                    let lends = cfg.lend_min > 0 && c.link.lends();
                    let mem = c.link.peer_memory();
                    // Over a link that lends, the peer's read requests name
                    // loans, which we read by the provider; else its memory,
                    // which we read in place.
                    c.we_read = lends || (cfg.single_copy_min > 0 && mem.is_some());
                    c.we_write = c.we_read && mem.is_some_and(PeerMemory::writable);
                    let word = if c.we_write {
                        Kind::Writes
                    } else {
                        Kind::Reads(c.we_read)
                    };
                    c.control(word).map_err(|e| fabric_err(r, e))?;
                    Some(c)
                }
            };
            peers.push(Peer {
                link,
                // Room up front: a queue that first fills late (most small
                // messages skip it, `take_direct`) must not allocate then.
                msgs: VecDeque::with_capacity(QUEUE_RESERVE),
                next_msg: 1,
                gone: None,
            });
        }
        Ok(Engine {
            rank,
            peers,
            cfg,
            oversubscribed,
            idle_sweeps: 0,
            next_ctx: 1,
            next_token: 1,
            epoch: 0,
            stage: Vec::with_capacity(SINGLE_MAX + HDR_LEN),
            scratch: vec![0u64; SCRATCH_WORDS],
            pulled: Vec::new(),
            posted: VecDeque::new(),
            stats: EngineStats::default(),
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn size(&self) -> usize {
        self.peers.len()
    }

    /// A fresh id for a receive (claims) or a borrowed send.
    pub(crate) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The transport to world rank `r` (`None` for ourselves).
    pub(crate) fn transport(&self, r: usize) -> Option<TransportKind> {
        self.peers.get(r)?.link.as_ref().map(|l| l.link.kind())
    }

    /// Why world rank `r` is gone, if it is.
    pub(crate) fn gone(&self, r: usize) -> Option<&str> {
        self.peers.get(r)?.gone.as_deref()
    }

    /// `PeerGone` if world rank `r` is gone.
    pub(crate) fn gone_err(&self, r: usize) -> Result<(), CollError> {
        match self.gone(r) {
            Some(why) => Err(CollError::PeerGone {
                rank: r,
                reason: why.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn peer_mut(&mut self, r: usize) -> Result<&mut Peer<L>, CollError> {
        let size = self.peers.len();
        self.peers
            .get_mut(r)
            .ok_or(CollError::InvalidRank { rank: r, size })
    }

    /// True if this host has more ranks than cores: a rank that waits may
    /// be keeping its peer off a core.
    pub(crate) fn oversubscribed(&self) -> bool {
        self.oversubscribed
    }

    /// True if an exposed send of `bytes` to world rank `dest` would go as
    /// a read request (then the caller must keep its buffer unchanged).
    pub(crate) fn reads_in_place(&self, dest: usize, bytes: usize) -> bool {
        self.read_min(dest).is_some_and(|min| bytes >= min)
    }

    /// From how many bytes exposed sends to world rank `dest` go as read
    /// requests; `None`: never.
    pub(crate) fn read_min(&self, dest: usize) -> Option<usize> {
        let l = self.peers.get(dest).and_then(|p| p.link.as_ref())?;
        let min = if l.link.lends() {
            self.cfg.lend_min
        } else if self.oversubscribed {
            self.cfg
                .single_copy_min
                .saturating_mul(OVERSUBSCRIBED_READ_FACTOR)
        } else {
            self.cfg.single_copy_min
        };
        (min > 0 && l.peer_reads == Some(true)).then_some(min)
    }

    /// Progresses until every peer said whether it reads our memory (its
    /// first write), so that the first large sends already know; bounded
    /// by `deadline` (the bootstrap's).
    pub(crate) fn await_peers(&mut self, deadline: Instant) -> Result<(), CollError> {
        loop {
            let silent = self.peers.iter().enumerate().find(|(_, p)| {
                p.gone.is_none() && p.link.as_ref().is_some_and(|l| l.peer_reads.is_none())
            });
            let Some((r, _)) = silent else {
                break;
            };
            if Instant::now() >= deadline {
                return Err(CollError::Bootstrap(format!(
                    "rank {r} connected but sent nothing"
                )));
            }
            if !self.progress() {
                self.idle(Duration::from_millis(1));
            }
        }
        match self
            .peers
            .iter()
            .enumerate()
            .find_map(|(r, p)| Some((r, p.gone.as_ref()?)))
        {
            Some((r, why)) => Err(CollError::PeerGone {
                rank: r,
                reason: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Sends a message of the concatenation of `parts` to world rank
    /// `dest`: as much as the window allows now, never waiting. What is
    /// left is copied into the send queue with [`Lend::Copy`]; otherwise
    /// the caller sends the rest by [`Engine::pump`] with the returned
    /// token (or hands it over by [`Engine::unborrow`]).
    pub(crate) fn post(
        &mut self,
        dest: usize,
        ctx: u32,
        tag: u32,
        parts: &[&[u8]],
        lend: Lend,
    ) -> Result<Option<u64>, CollError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let hdr = Header {
            ctx,
            tag,
            total: total as u64,
        };
        if dest == self.rank {
            self.epoch += 1;
            let mut data = Vec::with_capacity(total);
            parts.iter().for_each(|p| data.extend_from_slice(p));
            let peer = self.peer_mut(dest)?;
            let id = peer.next_msg;
            peer.next_msg += 1;
            peer.msgs.push_back(InMsg {
                owned: Some(Box::new(Owned { base: 0, data })),
                ..InMsg::new(id, (ctx, tag), total, total, 0)
            });
            return Ok(None);
        }
        self.gone_err(dest)?;
        self.stats.messages_sent += 1;
        let token = self.token();
        let exposed = matches!(lend, Lend::Expose | Lend::ExposeWaiting);
        let read = exposed && self.reads_in_place(dest, total);
        let Engine {
            peers,
            stage,
            epoch,
            ..
        } = self;
        let size = peers.len();
        let peer = peers
            .get_mut(dest)
            .ok_or(CollError::InvalidRank { rank: dest, size })?;
        let Some(l) = peer.link.as_mut() else {
            return Err(CollError::InvalidRank { rank: dest, size });
        };
        let mut loans = Vec::new();
        let desc = if !read {
            None
        } else if l.link.lends() {
            loans = lend_parts(&mut l.link, parts);
            let lent: Vec<_> = loans.iter().map(rfx_fabric::Loan::lent).collect();
            (!loans.is_empty())
                .then(|| PullDesc::lent(l.next_seq, &lent))
                .flatten()
        } else {
            PullDesc::new(l.next_seq, parts).map(|d| d.with_waiting(lend == Lend::ExposeWaiting))
        }
        .filter(|d| d.len() <= l.win.single);
        if let Some(d) = desc {
            l.next_seq = l.next_seq.wrapping_add(1) & SEQ_MASK;
            if !loans.is_empty() {
                // Lent until the peer's FIN says it read them.
                l.loans.push((d.seq, loans));
            }
            let mut data = Vec::with_capacity(d.len());
            d.encode(&mut data);
            let mut prog = Progress::new(hdr, data.len());
            prog.first = Kind::Rts;
            if l.out.is_empty() {
                match send_some(&mut l.link, &mut l.win, stage, &mut prog, &[&data], 0) {
                    Ok(true) => {
                        l.reading.push((d.seq, token));
                        return Ok(Some(token));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        *epoch += u64::from(peer.lose(dest, e.to_string()));
                        return Err(fabric_err(dest, e));
                    }
                }
            }
            l.out.push_back(OutMsg {
                token,
                prog,
                data: OutData::Owned { base: 0, data },
                rts: Some(d.seq),
            });
            return Ok(Some(token));
        }
        let mut prog = Progress::new(hdr, total);
        if l.out.is_empty() {
            match send_some(&mut l.link, &mut l.win, stage, &mut prog, parts, 0) {
                Ok(true) => return Ok(None),
                Ok(false) => {}
                Err(e) => {
                    *epoch += u64::from(peer.lose(dest, e.to_string()));
                    return Err(fabric_err(dest, e));
                }
            }
        }
        let borrow = lend != Lend::Copy;
        let data = if borrow {
            OutData::Borrowed
        } else {
            owned_rest(parts, prog.sent)
        };
        l.out.push_back(OutMsg {
            token,
            prog,
            data,
            rts: None,
        });
        Ok(borrow.then_some(token))
    }

    /// Sends more of the borrowed message `token` to `dest` (its bytes are
    /// `parts` again). Returns (bytes sent now, done).
    pub(crate) fn pump(
        &mut self,
        dest: usize,
        token: u64,
        parts: &[&[u8]],
    ) -> Result<(usize, bool), CollError> {
        // A send the peer finished (its FIN came before it left) is done,
        // whatever happened to the peer after.
        let settled = self
            .peers
            .get(dest)
            .and_then(|p| p.link.as_ref())
            .is_none_or(|l| !l.is_read(token) && !l.out.iter().any(|m| m.token == token));
        if settled {
            return Ok((0, true));
        }
        self.gone_err(dest)?;
        let Engine {
            peers,
            stage,
            epoch,
            ..
        } = self;
        let Some(peer) = peers.get_mut(dest) else {
            return Ok((0, true));
        };
        let Some(l) = peer.link.as_mut() else {
            return Ok((0, true));
        };
        let r = (|| {
            if l.is_read(token) {
                // Requested: nothing to write until the FIN, or until the
                // receiver asks us to write it ourselves.
                return l.serve_push(token, parts);
            }
            flush(l, stage)?;
            let Some(m) = l.out.front_mut() else {
                return Ok((0, true));
            };
            if m.token != token {
                return Ok((0, !l.out.iter().any(|m| m.token == token)));
            }
            if m.rts.is_some() {
                // A read request still waiting for credit.
                return Ok((0, false));
            }
            let before = m.prog.sent;
            let done = send_some(&mut l.link, &mut l.win, stage, &mut m.prog, parts, 0)?;
            let now = m.prog.sent - before;
            if done {
                l.out.pop_front();
                flush(l, stage)?;
            }
            Ok((now + usize::from(done), done))
        })();
        r.map_err(|e: FabricError| {
            *epoch += u64::from(peer.lose(dest, e.to_string()));
            fabric_err(dest, e)
        })
    }

    /// Hands the rest of the borrowed message `token` (bytes `parts`) over
    /// to the engine, copied: the caller may then change its buffer. A
    /// message the peer is reading in place is waited for instead (it may
    /// be reading right now), bounded by the flush timeout.
    pub(crate) fn unborrow(&mut self, dest: usize, token: u64, parts: &[&[u8]]) {
        let Some(l) = self.peers.get_mut(dest).and_then(|p| p.link.as_mut()) else {
            return;
        };
        if l.is_read(token) {
            self.await_read(dest, token, parts);
            return;
        }
        if let Some(m) = l.out.iter_mut().find(|m| m.token == token) {
            if m.rts.take().is_some() {
                // Not requested yet: send it the usual way.
                m.prog = Progress::new(m.prog.hdr, m.prog.hdr.total as usize);
                m.data = owned_rest(parts, 0);
            } else if matches!(m.data, OutData::Borrowed) {
                m.data = owned_rest(parts, m.prog.sent);
            }
        }
    }

    /// Progresses until the peer finished reading the exposed message
    /// `token` (bytes `parts`; or asked us to write it, which we do), it
    /// is gone, or the flush timeout passed (then it is taken for gone:
    /// its reads can no longer be vouched for).
    fn await_read(&mut self, dest: usize, token: u64, parts: &[&[u8]]) {
        self.await_peer(dest, "read a message in place", |p| {
            let Some(l) = p.link.as_mut().filter(|l| l.is_read(token)) else {
                return Ok(false);
            };
            l.serve_push(token, parts)?;
            Ok(l.is_read(token))
        });
    }

    /// Progresses while `waiting(peer r)` says so (it may act, and fail:
    /// the peer is then lost), until the peer is gone or the flush timeout
    /// passed (then it is taken for gone: it may still be at `what`).
    fn await_peer(
        &mut self,
        r: usize,
        what: &str,
        mut waiting: impl FnMut(&mut Peer<L>) -> Result<bool, FabricError>,
    ) {
        let deadline = Instant::now() + self.cfg.flush_timeout;
        let mut spins = 0u32;
        loop {
            let Some(p) = self.peers.get_mut(r).filter(|p| p.gone.is_none()) else {
                return;
            };
            match waiting(p) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    self.epoch += u64::from(p.lose(r, e.to_string()));
                    return;
                }
            }
            if Instant::now() >= deadline {
                let why = format!("timed out waiting for the peer to {what}");
                tracing::warn!(rank = r, "{why}");
                p.give_up(why);
                return;
            }
            spins = spins.wrapping_add(1);
            if !self.progress() {
                if self.relieve_due(spins) {
                    self.relieve(0, None);
                }
                self.idle(Duration::from_millis(1));
            }
        }
    }

    /// True while messages to world rank `dest` wait for credit.
    pub(crate) fn has_pending(&self, dest: usize) -> bool {
        self.peers
            .get(dest)
            .and_then(|p| p.link.as_ref().filter(|_| p.gone.is_none()))
            .is_some_and(|l| !l.out.is_empty())
    }

    /// Posts a point-to-point receive: it matches before every receive of
    /// its context posted after it ([`Engine::claim`]).
    pub(crate) fn post_recv(
        &mut self,
        src: Option<usize>,
        ctx: u32,
        tag: Option<u32>,
        claimer: u64,
    ) {
        self.posted.push_back(Posted {
            claimer,
            src,
            ctx,
            tag,
        });
    }

    /// Withdraws a posted receive (it failed or was abandoned).
    pub(crate) fn unpost(&mut self, claimer: u64) {
        self.posted.retain(|p| p.claimer != claimer);
        self.epoch += 1;
    }

    /// The matching epoch (see the field): a claim that found nothing
    /// finds nothing again until it moves.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Claims for `claimer` the first message from `src` (any if `None`)
    /// on `ctx` with `tag` (any if `None`) that no other receive claimed
    /// (or the one it claimed already). A posted receive lets the receives
    /// of its context posted before it match first.
    pub(crate) fn claim(
        &mut self,
        src: Option<usize>,
        ctx: u32,
        tag: Option<u32>,
        claimer: u64,
    ) -> Option<Claimed> {
        if self.posted.iter().any(|p| p.claimer == claimer) {
            let mut i = 0;
            while i < self.posted.len() {
                let p = self.posted[i];
                if p.ctx != ctx {
                    i += 1;
                    continue;
                }
                match self.claim_first(p.src, p.ctx, p.tag, p.claimer) {
                    Some(c) => {
                        self.posted.remove(i);
                        if p.claimer == claimer {
                            return Some(c);
                        }
                        self.epoch += 1;
                    }
                    None if p.claimer == claimer => return None,
                    None => i += 1,
                }
            }
            return None;
        }
        self.claim_first(src, ctx, tag, claimer)
    }

    /// The fast path of a receive from `src` of at most `max` bytes: when
    /// the first message from `src` is whole (queued with its header on
    /// arrival, or, with nothing queued, in one write the link offers) and
    /// the receive `claimer` would claim it (it matches, and, for a
    /// `posted` receive, no receive posted before it waits), it is handed
    /// to `land` (its tag and payload) and, unless `land` declines, taken
    /// with the posting: the message that [`Engine::claim`] and
    /// [`Engine::consume`] would deliver, without their bookkeeping.
    pub(crate) fn take_small<R>(
        &mut self,
        src: usize,
        (ctx, tag): (u32, Option<u32>),
        claimer: u64,
        posted: bool,
        max: usize,
        land: impl FnOnce(u32, Piece<'_>) -> Option<R>,
    ) -> Small<R> {
        let Some(peer) = self.peers.get_mut(src) else {
            return Small::Other;
        };
        // A posted receive goes in posting order: only the first may take.
        let not_first = posted && self.posted.front().is_none_or(|p| p.claimer != claimer);
        let Some(m) = peer.msgs.front() else {
            if not_first {
                return Small::Empty;
            }
            let got = peer.take_direct(src, (ctx, tag), max, land);
            if matches!(got, Small::Taken(..)) {
                self.stats.messages_taken_direct += 1;
                if posted {
                    self.posted.pop_front();
                }
            }
            return got;
        };
        if not_first
            || m.ctx != ctx
            || m.sink
            || tag.is_some_and(|t| t != m.tag)
            || (m.claim != 0 && m.claim != claimer)
            || m.consumed != 0
            || m.total > max
        {
            return Small::Other;
        }
        let data = match m.inline {
            Some(small) => Some(small),
            None if m.total == 0 && m.pull.is_none() && m.pushed.is_none() => Some(Inline::EMPTY),
            None => None,
        };
        let got = match data {
            Some(data) => land(m.tag, Piece::Bytes(data.bytes())).inspect(|_| {
                peer.msgs.pop_front();
            }),
            // Queued whole in the inbox: landed from there.
            None => peer.take_landed(src, land),
        };
        let Some(got) = got else {
            return Small::Other;
        };
        if posted {
            self.posted.pop_front();
        }
        Small::Taken(got)
    }

    fn claim_first(
        &mut self,
        src: Option<usize>,
        ctx: u32,
        tag: Option<u32>,
        claimer: u64,
    ) -> Option<Claimed> {
        let range = match src {
            Some(s) => s..s + 1,
            None => 0..self.peers.len(),
        };
        for r in range {
            let Some(peer) = self.peers.get_mut(r) else {
                continue;
            };
            for m in peer.msgs.iter_mut() {
                if m.ctx == ctx
                    && !m.sink
                    && tag.is_none_or(|t| t == m.tag)
                    && (m.claim == 0 || m.claim == claimer)
                {
                    m.claim = claimer;
                    return Some(Claimed {
                        src: r,
                        id: m.id,
                        tag: m.tag,
                        total: m.total,
                    });
                }
            }
        }
        None
    }

    /// Hands what arrived of a claimed message to `f` (payload offset, the
    /// data, scratch words) and frees it. Returns (bytes consumed now,
    /// complete).
    pub(crate) fn consume<F>(&mut self, c: &Claimed, f: F) -> Result<(usize, bool), CollError>
    where
        F: FnMut(usize, Piece<'_>, &mut [u64]) -> Result<(), CollError>,
    {
        self.consume_with(c, f)
    }

    /// As [`Engine::consume`], into a [`Sink`] (which may stage a read
    /// request whole before combining it).
    pub(crate) fn consume_with(
        &mut self,
        c: &Claimed,
        mut sink: impl Sink,
    ) -> Result<(usize, bool), CollError> {
        let Engine {
            peers,
            scratch,
            pulled,
            stats,
            epoch,
            ..
        } = self;
        let peer = peers
            .get_mut(c.src)
            .ok_or_else(|| CollError::InvalidArgument("consume from a bad rank".into()))?;
        let Some(i) = peer.msgs.iter().position(|m| m.id == c.id) else {
            return Err(CollError::InvalidArgument(
                "a claimed message vanished".into(),
            ));
        };
        let m = &mut peer.msgs[i];
        let start = m.consumed;
        if let Some(seq) = m.pushed {
            // The peer writes it (or its first `shared` bytes, and we read
            // the rest now): then nothing to do but see that it did.
            if let Some(d) = m.pull.take() {
                let Some(l) = peer.link.as_mut() else {
                    return Err(CollError::InvalidArgument(
                        "a read request without a link".into(),
                    ));
                };
                let Some(mem) = l.link.peer_memory() else {
                    return Err(CollError::InvalidArgument(
                        "a read request without access".into(),
                    ));
                };
                let piece = Piece::Remote {
                    src: RemoteSrc::Memory(mem),
                    segs: d.segs(),
                    at: m.shared as u64,
                    len: m.total - m.shared,
                };
                if let Err(e) = sink.land(m.shared, piece, scratch) {
                    if let CollError::Fabric { source, .. } = &e {
                        return Err(peer.read_failed(c.src, i, source));
                    }
                    m.pull = Some(d);
                    return Err(e);
                }
            }
            if m.written {
                if m.shared > 0 {
                    // Both halves are in: the sender's send may end.
                    peer.finish_read(c.src, i, seq, false, epoch)?;
                }
                let m = &mut peer.msgs[i];
                m.consumed = m.total;
                if m.shared > 0 {
                    stats.messages_shared += 1;
                    stats.bytes_shared += m.total as u64;
                } else {
                    stats.messages_written_in_place += 1;
                    stats.bytes_written_in_place += m.total as u64;
                }
            }
        } else if let Some(d) = m.pull.take() {
            let Some(l) = peer.link.as_mut() else {
                return Err(CollError::InvalidArgument(
                    "a read request without a link".into(),
                ));
            };
            let reader;
            let src = match d.keys() {
                // Lent by the peer's provider: read through the link.
                Some(keys) => {
                    reader = LinkReader::new(&mut l.link);
                    RemoteSrc::Lent(&reader, keys)
                }
                None => match l.link.peer_memory() {
                    Some(mem) => RemoteSrc::Memory(mem),
                    None => {
                        return Err(CollError::InvalidArgument(
                            "a read request without access".into(),
                        ))
                    }
                },
            };
            let piece = Piece::Remote {
                src,
                segs: d.segs(),
                at: 0,
                len: m.total,
            };
            let whole = sink.staged() && m.total <= STAGED_READ_MAX;
            let mut in_place = false;
            let r = if whole {
                let bytes = match sink.stage(m.total) {
                    Some(bytes) if bytes.len() == m.total => {
                        in_place = true;
                        bytes
                    }
                    _ => {
                        let words = m.total.div_ceil(8);
                        if pulled.len() < words {
                            pulled.resize(words, 0);
                        }
                        &mut bytemuck::cast_slice_mut::<u64, u8>(pulled)[..m.total]
                    }
                };
                piece.read_at(0, bytes).map_err(|source| CollError::Fabric {
                    rank: c.src,
                    source,
                })
            } else {
                sink.land(0, piece, scratch)
            };
            if let Err(e) = r {
                // The peer's memory failed us: its ranges were bad, or it
                // exited. Either way its buffer is not read again.
                if let CollError::Fabric { source, .. } = &e {
                    return Err(peer.read_failed(c.src, i, source));
                }
                m.pull = Some(d);
                return Err(e);
            }
            let total = m.total;
            m.consumed = total;
            stats.messages_read_in_place += 1;
            stats.bytes_read_in_place += total as u64;
            peer.finish_read(c.src, i, d.seq, d.keys().is_some(), epoch)?;
            if whole {
                // The sender is free; now the combining. The message is
                // ours whatever the sink says: it is not read again.
                let r = if in_place {
                    stats.messages_combined_in_place += 1;
                    sink.combine_staged()
                } else {
                    let bytes = &bytemuck::cast_slice::<u64, u8>(pulled)[..total];
                    sink.land(0, Piece::Bytes(bytes), scratch)
                };
                if let Err(e) = r {
                    peer.msgs.remove(i);
                    return Err(e);
                }
            }
        } else if let Some(small) = &m.inline {
            if m.consumed == 0 && m.total > 0 {
                sink.land(0, Piece::Bytes(&small.data[..small.len as usize]), scratch)?;
                m.consumed = m.total;
            }
        } else if let Some(o) = &m.owned {
            if m.arrived > m.consumed {
                let piece = &o.data[m.consumed - o.base..m.arrived - o.base];
                sink.land(m.consumed, Piece::Bytes(piece), scratch)?;
                m.consumed = m.arrived;
            }
        } else if let Some(l) = peer.link.as_mut() {
            let inbox = &mut l.inbox;
            while let Some(ch) = inbox.chunk(m.next_chunk) {
                if ch.msg != m.id {
                    break;
                }
                let (off, len) = (ch.off, ch.len);
                ch.done = true;
                let piece = Piece::Region {
                    mr: &inbox.mr,
                    off,
                    len,
                };
                sink.land(m.consumed, piece, scratch)?;
                m.consumed += len;
                m.next_chunk += 1;
            }
            inbox.release();
            *epoch += u64::from(peer.return_credit(c.src));
        }
        let m = &peer.msgs[i];
        let now = m.consumed - start;
        let done = m.consumed == m.total;
        if done {
            peer.msgs.remove(i);
        }
        Ok((now, done))
    }

    /// Answers the claimed message, a read request, with PUSH: its sender
    /// is asked to write the payload into `segs` (address, length: the
    /// receive's buffer, which nothing may touch until [`Engine::consume`]
    /// says the message is done). `segs` shorter than the message name
    /// its first bytes only: the sender writes those while
    /// [`Engine::consume`] reads the rest, and its send ends with our FIN
    /// once both are done. False, with nothing sent, if the message is not
    /// a read request, its sender cannot write our memory, it is too small
    /// to push ([`Engine::push_worth`]) or to share ([`Engine::share_worth`]),
    /// or `segs` are more ranges than a PUSH carries.
    pub(crate) fn push(&mut self, c: &Claimed, segs: &[(u64, u64)]) -> Result<bool, CollError> {
        let named = segs.iter().map(|s| s.1).fold(0u64, u64::saturating_add);
        let part = named < c.total as u64;
        if named == 0 || (!part && !self.push_worth(c)) || (part && !self.share_worth(c)) {
            return Ok(false);
        }
        let Engine {
            peers,
            stage,
            epoch,
            ..
        } = self;
        let Some(peer) = peers.get_mut(c.src) else {
            return Ok(false);
        };
        let Some(l) = peer.link.as_mut().filter(|l| l.peer_writes) else {
            return Ok(false);
        };
        if peer.gone.is_some() {
            return Ok(false);
        }
        let Some(m) = peer.msgs.iter_mut().find(|m| m.id == c.id) else {
            return Ok(false);
        };
        let Some(seq) = m.pull.as_ref().map(|d| d.seq) else {
            return Ok(false);
        };
        if m.pushed.is_some() {
            // Shared already: one PUSH per request.
            return Ok(false);
        }
        let Some(d) = PullDesc::from_segs(seq, segs.iter().copied()) else {
            return Ok(false);
        };
        if named > m.total as u64 {
            return Err(CollError::InvalidArgument(
                "a push into a buffer larger than the message".into(),
            ));
        }
        let mut data = Vec::with_capacity(d.len());
        d.encode(&mut data);
        // The bytes the sender is to write: the whole message, or its first
        // `named` (we read the rest ourselves meanwhile).
        let hdr = Header {
            ctx: 0,
            tag: 0,
            total: named,
        };
        let mut prog = Progress::new(hdr, data.len());
        prog.first = Kind::Push;
        if part {
            m.shared = named as usize;
        } else {
            m.pull = None;
        }
        m.pushed = Some(seq);
        l.out.push_back(OutMsg {
            token: 0,
            prog,
            data: OutData::Owned { base: 0, data },
            rts: None,
        });
        if let Err(e) = flush(l, stage) {
            *epoch += u64::from(peer.lose(c.src, e.to_string()));
            return Err(fabric_err(c.src, e));
        }
        Ok(true)
    }

    /// Progresses until the sender wrote the claimed message we answered
    /// with PUSH, it is gone, or the flush timeout passed (then it is
    /// taken for gone). A receive that gives up must wait so: its buffer
    /// is the caller's again when it returns, and the sender may be
    /// writing into it.
    pub(crate) fn await_pushed(&mut self, c: &Claimed) {
        let id = c.id;
        self.await_peer(c.src, "write a message in place", |p| {
            Ok(p.msgs
                .iter()
                .any(|m| m.id == id && m.pushed.is_some() && !m.written))
        });
    }

    /// True if the claimed message is large enough to answer with PUSH
    /// (a size check only: whether it is a read request is
    /// [`Engine::is_read_request`]).
    pub(crate) fn push_worth(&self, c: &Claimed) -> bool {
        // The sender must be running to write: with more ranks than cores
        // that may cost a wake-up, worth it only for larger messages.
        let min = self
            .cfg
            .push_min
            .saturating_mul(if self.oversubscribed { 2 } else { 1 });
        min > 0 && c.total >= min
    }

    /// True if the claimed message is large enough to share its copy with
    /// its sender ([`Engine::push`] of its first part): each side copies
    /// part of it at once. Not with more ranks than cores, where the
    /// sender may have to be scheduled first.
    pub(crate) fn share_worth(&self, c: &Claimed) -> bool {
        self.cfg.share_min > 0 && c.total >= self.cfg.share_min && !self.oversubscribed
    }

    /// True if the claimed message is a read request whose sender waits
    /// for it in the library (a blocking send, [`Lend::ExposeWaiting`]).
    pub(crate) fn sender_waits(&self, c: &Claimed) -> bool {
        self.peers
            .get(c.src)
            .and_then(|p| p.msgs.iter().find(|m| m.id == c.id))
            .and_then(|m| m.pull.as_ref())
            .is_some_and(|d| d.waiting())
    }

    /// True if a claimed message is a read request not read yet.
    pub(crate) fn is_read_request(&self, c: &Claimed) -> bool {
        self.peers
            .get(c.src)
            .and_then(|p| p.msgs.iter().find(|m| m.id == c.id))
            .is_some_and(|m| m.pull.is_some())
    }

    /// True once all of a claimed message arrived.
    pub(crate) fn arrived_all(&self, c: &Claimed) -> bool {
        self.peers
            .get(c.src)
            .and_then(|p| p.msgs.iter().find(|m| m.id == c.id))
            .is_some_and(|m| m.arrived == m.total)
    }

    /// Drops a claimed message (and its parts still to come). One we
    /// answered with PUSH is waited for first: the sender may be writing
    /// into the receive's buffer.
    pub(crate) fn discard(&mut self, c: &Claimed) {
        self.await_pushed(c);
        if let Ok((_, false)) = self.consume(c, |_, _, _| Ok(())) {
            if let Some(m) = self
                .peers
                .get_mut(c.src)
                .and_then(|p| p.msgs.iter_mut().find(|m| m.id == c.id))
            {
                m.sink = true;
                m.claim = 0;
            }
        }
    }

    /// Drops every message `claimer` claimed (an operation that failed).
    pub(crate) fn drop_claims(&mut self, claimer: u64) {
        self.unpost(claimer);
        let claimed: Vec<Claimed> = self
            .peers
            .iter()
            .enumerate()
            .flat_map(|(r, p)| {
                p.msgs
                    .iter()
                    .filter(|m| m.claim == claimer)
                    .map(move |m| Claimed {
                        src: r,
                        id: m.id,
                        tag: m.tag,
                        total: m.total,
                    })
            })
            .collect();
        for c in claimed {
            self.discard(&c);
        }
    }

    /// Gives up a claim (an operation that failed).
    pub(crate) fn unclaim(&mut self, c: &Claimed) {
        self.discard(c);
    }

    /// One sweep over all peers: send what credit allows, take what
    /// arrived. True if anything moved.
    pub(crate) fn progress(&mut self) -> bool {
        let mut moved = false;
        let mut arrived = false;
        let one_each = !self.oversubscribed;
        let Engine { peers, stage, .. } = self;
        for (r, peer) in peers.iter_mut().enumerate() {
            if peer.gone.is_some() {
                continue;
            }
            let Peer {
                link,
                msgs,
                next_msg,
                gone,
            } = &mut *peer;
            let Some(l) = link.as_mut() else { continue };
            // What the peer wrote first, then ours: a peer that finished
            // (its last FIN or credit written) and left is read to the end
            // before a write to it fails.
            let before = *next_msg;
            for _ in 0..POLL_BURST {
                if inbound::queue_inline(l, msgs, next_msg) {
                    moved = true;
                    if one_each {
                        break;
                    }
                    continue;
                }
                match l.link.poll() {
                    Ok(Some(Completion::Write(w))) => {
                        moved = true;
                        match on_write(l, msgs, next_msg, &w) {
                            Ok(_) if one_each && *next_msg != before => break,
                            Ok(_) => {}
                            Err(why) => {
                                *gone = Some(malformed(r, why));
                                break;
                            }
                        }
                    }
                    Ok(Some(Completion::Recv(_))) => {
                        *gone = Some(malformed(r, "an unexpected two-sided message"));
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        mark_gone(r, gone, e);
                        break;
                    }
                }
            }
            arrived |= *next_msg != before;
            if gone.is_some() {
                continue;
            }
            match l.credit().and_then(|_| flush(l, stage)) {
                Ok(m) => moved |= m,
                Err(e) => arrived |= peer.lose(r, e.to_string()),
            }
        }
        if arrived {
            self.epoch += 1;
        }
        if moved {
            self.idle_sweeps = 0;
        }
        moved
    }

    /// True when a wait of `spins` empty sweeps should relieve the
    /// inboxes: a hot wait first gives the peers time (a spill is copies
    /// and an allocation, and most waits end within microseconds; a sender
    /// blocked on us waits for good), a wait that sleeps or yields does it
    /// first.
    pub(crate) fn relieve_due(&self, spins: u32) -> bool {
        if self.oversubscribed || self.cfg.progress == PollMode::Warm {
            spins % RELIEVE_EVERY_SLOW == 1
        } else {
            spins % RELIEVE_EVERY_HOT == 0
        }
    }

    /// Copies out of the inboxes whose sender may be blocked on credit the
    /// messages that the waiting operation will not consume itself (those
    /// its receive `keep` claimed, and those of its collective traffic
    /// `(context, tag)`), so that their senders get credit. The operation
    /// never has to wait for itself: its own messages come to it in its
    /// own order, and no sender of one waits on anything but that.
    pub(crate) fn relieve(&mut self, keep: u64, traffic: Option<(u32, u32)>) {
        let Engine {
            peers,
            stats,
            epoch,
            ..
        } = self;
        for (r, peer) in peers.iter_mut().enumerate() {
            if peer.gone.is_some() {
                continue;
            }
            let Peer {
                link, msgs, gone, ..
            } = &mut *peer;
            let Some(l) = link.as_mut() else { continue };
            // A write that failed (a FIN, credit): the peer is lost after
            // the sweep, once what it wrote before is taken.
            let mut lost = None;
            // Read requests hold their sender until read: read them out.
            // What the waiting operation consumes itself is left alone.
            let ours =
                |m: &InMsg| (m.claim != 0 && m.claim == keep) || traffic == Some((m.ctx, m.tag));
            for m in msgs.iter_mut() {
                // A shared request (its sender writing part of it) is its
                // receive's to finish: the sender waits for that.
                if m.pull.is_some() && m.pushed.is_none() && !m.sink && !ours(m) {
                    if let Err(e) = read_out(l, m) {
                        // Reading the peer's memory failed, or the FIN.
                        lost = Some(e.to_string());
                        break;
                    }
                    stats.messages_spilled += 1;
                }
            }
            // The sender's writes cost at most an eighth of the inbox plus
            // alignment, twice over with a skip at the end: below that much
            // outstanding it is not blocked.
            let outstanding = l.inbox.rpos - l.inbox.credited;
            if lost.is_none() && outstanding + 2 * (l.inbox.size / 8 + ALIGN) > l.inbox.size {
                for m in msgs.iter_mut() {
                    let unread = m.owned.is_none() && m.inline.is_none() && m.pushed.is_none();
                    if unread && !m.sink && !ours(m) {
                        if let Err(e) = spill(&mut l.inbox, m) {
                            mark_gone(r, gone, e);
                            break;
                        }
                        stats.messages_spilled += 1;
                    }
                }
                l.inbox.release();
                if gone.is_none() {
                    if let Err(e) = l.credit() {
                        lost = Some(e.to_string());
                    }
                }
            }
            if let Some(why) = lost {
                *epoch += u64::from(peer.lose(r, why));
            }
        }
    }

    /// Sweeps between two releases of the engine's lock by a waiting
    /// operation: every sweep when a sweep may sleep or yield.
    pub(crate) fn relock_every(&self) -> u32 {
        if self.oversubscribed || self.cfg.progress == PollMode::Warm {
            1
        } else {
            16
        }
    }

    /// A wait starts or its operation advanced: spin again before yielding.
    pub(crate) fn busy(&mut self) {
        self.idle_sweeps = 0;
    }

    /// Waits a little after an empty sweep: hot progress spins (yielding
    /// when ranks outnumber cores), warm progress sleeps on the fds.
    pub(crate) fn idle(&mut self, max: Duration) {
        self.idle_sweeps = self.idle_sweeps.saturating_add(1);
        match self.cfg.progress {
            PollMode::Hot => {
                // With a core per rank a hot wait keeps its core, as MPI's
                // busy polling does: a yield on a loaded machine hands it to
                // another process for a whole time slice. Only a wait of
                // seconds gives it up now and then.
                if self.oversubscribed || self.idle_sweeps > HOT_YIELD_AFTER {
                    std::thread::yield_now();
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
        for (r, peer) in self.peers.iter_mut().enumerate() {
            let Some(l) = peer.link.as_mut() else {
                continue;
            };
            if peer.gone.is_some() {
                continue;
            }
            match l.link.arm() {
                Ok(true) => armed.push(r),
                Ok(false) => {
                    ready = true;
                    break;
                }
                Err(e) => {
                    mark_gone(r, &mut peer.gone, e);
                    ready = true;
                    break;
                }
            }
        }
        if !ready && !armed.is_empty() {
            let ms = max.as_millis().clamp(1, 100) as u16;
            let mut fds: Vec<PollFd<'_>> = armed
                .iter()
                .filter_map(|&r| self.peers[r].link.as_ref()?.link.event_fd())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        } else if !ready {
            std::thread::sleep(max.min(Duration::from_millis(1)));
        }
        for r in armed {
            if let Some(l) = self.peers[r].link.as_mut() {
                l.link.disarm();
            }
        }
    }

    /// Closes every link in order, together, bounded by the flush timeout:
    /// a rank that leaves first must not lose what its slower peers have
    /// not read yet (MPI_Finalize's guarantee).
    fn close(&mut self) {
        for l in self.peers.iter_mut().filter_map(|p| p.link.as_mut()) {
            l.link.close_start();
        }
        let deadline = Instant::now() + self.cfg.flush_timeout;
        let mut pending: Vec<usize> = (0..self.peers.len()).collect();
        loop {
            pending.retain(|&r| {
                self.peers[r]
                    .link
                    .as_mut()
                    .is_some_and(|l| !l.link.close_done())
            });
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends everything still queued, bounded by the flush timeout (used
    /// when the last communicator goes away).
    fn drain(&mut self) {
        // Borrowed messages whose task is gone (a panic unwound through it)
        // can never go out: only owned ones are waited for.
        for l in self.peers.iter_mut().filter_map(|p| p.link.as_mut()) {
            l.out.retain(|m| matches!(m.data, OutData::Owned { .. }));
        }
        let deadline = Instant::now() + self.cfg.flush_timeout;
        while (0..self.peers.len()).any(|r| self.has_pending(r)) && Instant::now() < deadline {
            if !self.progress() {
                self.idle(Duration::from_millis(5));
            }
        }
    }
}

impl<L: Link> Drop for Engine<L> {
    fn drop(&mut self) {
        self.drain();
        self.close();
    }
}

/// The bytes of a shared message of `total` bytes that its sender writes
/// (the rest the receiver reads): half, cut at a cache line so that the
/// two copies never write the same line.
pub(crate) fn shared_part(total: usize) -> usize {
    (total / 2) & !63
}

/// CPUs of this host, not of this process: a launcher that binds each
/// rank to a core (`mpirun --bind-to core`) must not make every rank
/// believe it shares one core with the others.
pub(crate) fn online_cpus() -> usize {
    let own = std::thread::available_parallelism().map_or(1, |n| n.get());
    let host = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .map_or(0, |s| count_cpu_list(s.trim()));
    own.max(host)
}

/// CPUs in a kernel CPU list such as `0-3,5,7-8`.
fn count_cpu_list(s: &str) -> usize {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(p.parse::<usize>().is_ok()),
        })
        .sum()
}

fn mark_gone(r: usize, gone: &mut Option<String>, e: FabricError) {
    tracing::debug!(rank = r, "peer gone: {e}");
    *gone = Some(e.to_string());
}
