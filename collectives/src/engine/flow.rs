//! Credit flow control over one peer's link: our [`Window`] into the
//! peer's inbox (ring positions written and acknowledged), our [`Inbox`]
//! (ring positions arrived, freed and credited back), and [`Conn`], the
//! two together with the link and its send queue.

use std::collections::VecDeque;

use rfx_fabric::ring::Producer;
use rfx_fabric::{FabricError, MemoryRegion, RemoteBuffer};

use super::link::Link;
use super::outbound::OutMsg;
use super::{MIN_INBOX, QUEUE_RESERVE, SINGLE_MAX};
use crate::error::CollError;
use crate::wire::{self, Kind, PullDesc, ALIGN};

/// A write occupying inbox space, in ring order.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Ring position after it (any skip before it included).
    pub(super) end: u64,
    /// Offset of its payload in the inbox.
    pub(super) off: usize,
    /// Payload bytes.
    pub(super) len: usize,
    /// The message it belongs to.
    pub(super) msg: u64,
    /// Consumed (or copied out): its space may be freed.
    pub(super) done: bool,
}

/// Our side of the peer's inbox.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) remote: RemoteBuffer,
    /// The peer's inbox as a ring we write and it frees.
    pub(super) ring: Producer,
    /// Largest data write.
    pub(super) chunk: usize,
    /// Largest payload sent in one write with its header.
    pub(super) single: usize,
}

impl Window {
    /// The offset for a write of `len` bytes, if the window has room.
    pub(super) fn reserve(&mut self, len: usize) -> Option<u64> {
        let start = self.ring.reserve(wire::cost(len))?;
        Some(self.ring.offset(start))
    }
}

/// Our inbox, the peer writes into it.
#[derive(Debug)]
pub(super) struct Inbox {
    pub(super) mr: MemoryRegion,
    /// Usable ring bytes.
    pub(super) size: u64,
    /// Ring position of the next write we expect.
    pub(super) rpos: u64,
    /// The writes that occupy space, oldest first.
    pub(super) chunks: VecDeque<Chunk>,
    /// Absolute index of `chunks[0]`.
    pub(super) base: u64,
    /// Ring position freed up to.
    pub(super) freed: u64,
    /// Ring position credited back to the peer.
    pub(super) credited: u64,
}

impl Inbox {
    /// Frees the consumed chunks at the front.
    pub(super) fn release(&mut self) {
        while let Some(c) = self.chunks.front() {
            if !c.done {
                break;
            }
            self.freed = c.end;
            self.chunks.pop_front();
            self.base += 1;
        }
    }

    /// The chunk of absolute index `abs`, if it still occupies space.
    pub(super) fn chunk(&mut self, abs: u64) -> Option<&mut Chunk> {
        let i = abs.checked_sub(self.base)?;
        self.chunks.get_mut(usize::try_from(i).ok()?)
    }
}

/// One peer's connection with both directions' flow control and the
/// messages waiting for credit.
#[derive(Debug)]
pub(super) struct Conn<L> {
    pub(super) link: L,
    pub(super) win: Window,
    pub(super) out: VecDeque<OutMsg>,
    pub(super) inbox: Inbox,
    /// We told the peer we can read its memory: it may send read requests.
    pub(super) we_read: bool,
    /// Whether the peer can read ours (large exposed sends then go as
    /// read requests); `None` until its first write says.
    pub(super) peer_reads: Option<bool>,
    /// We told the peer we can also write its memory: it may answer our
    /// read requests with PUSH.
    pub(super) we_write: bool,
    /// The peer can write our memory: we may answer its read requests
    /// with PUSH.
    pub(super) peer_writes: bool,
    /// The peer's PUSH answers to our read requests, not served yet.
    pub(super) pushes: Vec<PullDesc>,
    /// The number of our next read request (mod 2^29).
    pub(super) next_seq: u32,
    /// Our read requests the peer has not finished: (number, token).
    pub(super) reading: Vec<(u32, u64)>,
    /// The loans of our read requests over a link that lends, ended when
    /// the peer's FIN (or the link's end) drops them: (number, loans).
    pub(super) loans: Vec<(u32, Vec<rfx_fabric::Loan>)>,
}

impl<L: Link> Conn<L> {
    /// Checks both inboxes' sizes; `fragment` bounds the data writes.
    pub(super) fn new(
        r: usize,
        link: L,
        mr: MemoryRegion,
        fragment: usize,
    ) -> Result<Conn<L>, CollError> {
        let bad = |why: String| CollError::Bootstrap(format!("rank {r}: {why}"));
        let remote = link
            .peer_inbox()
            .ok_or_else(|| bad("the peer exposed no inbox (an older rfx?)".into()))?;
        let size = wire::inbox_size(remote.len);
        if size < MIN_INBOX as u64 {
            return Err(bad(format!(
                "the peer's inbox of {} bytes is too small",
                remote.len
            )));
        }
        // Chunks of at most an eighth of the window keep several in flight
        // (pipelining) and leave room for a chunk after any skip.
        let chunk = (fragment.min(size as usize / 8) / ALIGN as usize * ALIGN as usize).max(64);
        let single = SINGLE_MAX.min(chunk);
        let rsize = wire::inbox_size(mr.len() as u64);
        if rsize < MIN_INBOX as u64 {
            return Err(bad(format!("an inbox of {} bytes is too small", mr.len())));
        }
        Ok(Conn {
            link,
            win: Window {
                remote,
                ring: Producer::new(size),
                chunk,
                single,
            },
            out: VecDeque::new(),
            inbox: Inbox {
                mr,
                size: rsize,
                rpos: 0,
                chunks: VecDeque::with_capacity(QUEUE_RESERVE),
                base: 0,
                freed: 0,
                credited: 0,
            },
            we_read: false,
            peer_reads: None,
            we_write: false,
            peer_writes: false,
            pushes: Vec::new(),
            next_seq: 0,
            reading: Vec::new(),
            loans: Vec::new(),
        })
    }

    /// Sends a control write (no data, no inbox space).
    pub(super) fn control(&mut self, kind: Kind) -> Result<(), FabricError> {
        self.link
            .write_imm(&[], &self.win.remote, 0, wire::imm(kind))
    }

    /// Serves the peer's PUSH for our read request `token`, if it came:
    /// writes `parts` (the message's bytes) where it asked, answers
    /// WROTE, and the message is done. A PUSH for the message's first
    /// bytes only (the peer reads the rest meanwhile) gets those, and the
    /// message stays lent until the peer's FIN. Returns the bytes written
    /// (0: no PUSH yet), and whether that was the whole message.
    pub(super) fn serve_push(
        &mut self,
        token: u64,
        parts: &[&[u8]],
    ) -> Result<(usize, bool), FabricError> {
        let Some(&(seq, _)) = self.reading.iter().find(|&&(_, t)| t == token) else {
            return Ok((0, false));
        };
        let Some(i) = self.pushes.iter().position(|d| d.seq == seq) else {
            return Ok((0, false));
        };
        let d = self.pushes.swap_remove(i);
        let mem = self
            .link
            .peer_memory()
            .ok_or_else(|| FabricError::PeerGone("no access to the peer's memory".into()))?;
        let named: u64 = d.segs().iter().map(|s| s.1).sum();
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let whole = named >= total;
        if whole {
            mem.write_unverified(d.segs(), parts)?;
        } else {
            mem.write_unverified(d.segs(), &prefix(parts, named as usize))?;
        }
        self.control(Kind::Wrote(seq))?;
        if whole {
            self.reading.retain(|&(s, _)| s != seq);
            self.loans.retain(|&(s, _)| s != seq);
        }
        // After the WROTE, so that the peer does not wait for it: the
        // write reached the peer only if it still lives.
        super::remote::peer_still_lives(&self.link)?;
        Ok((named.min(total) as usize, whole))
    }

    /// True while the peer still reads the exposed message `token`.
    pub(super) fn is_read(&self, token: u64) -> bool {
        self.reading.iter().any(|&(_, t)| t == token)
    }

    /// Returns freed inbox space to the peer once there is enough of it.
    pub(super) fn credit(&mut self) -> Result<(), FabricError> {
        let owed = self.inbox.freed - self.inbox.credited;
        if owed > 0 && owed >= self.inbox.size / 8 {
            self.control(Kind::Credit(owed))?;
            self.inbox.credited = self.inbox.freed;
        }
        Ok(())
    }
}

/// The first `n` bytes of the concatenation of `parts`.
fn prefix<'a>(parts: &[&'a [u8]], mut n: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        if n == 0 {
            break;
        }
        let k = p.len().min(n);
        out.push(&p[..k]);
        n -= k;
    }
    out
}
