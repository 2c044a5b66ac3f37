//! The receiving side of the protocol: each write of the peer taken in
//! ring order ([`on_write`]), the messages it starts or continues
//! ([`InMsg`]), their copy out of the inbox ([`spill`]), and the read of
//! a message the peer left in its own memory ([`read_out`]).

use std::collections::VecDeque;

use rfx_fabric::{FabricError, WriteCompletion, WriteData};

use super::flow::{Chunk, Conn, Inbox};
use super::link::Link;
use super::{LinkReader, Piece, RemoteSrc, SPILL_RESERVE};
use crate::wire::{self, Header, Kind, PullDesc, HDR_LEN, PULL_DESC_MAX};

/// Payloads up to this size are read out with their header on arrival
/// (their inbox space is free at once). 64 bytes measured 2-11% faster
/// than 48 at 64 B on 2 ranks (9 interleaved runs); 128 slower at every
/// size: every queued message ([`InMsg`]) carries this many bytes.
pub(crate) const INLINE_MAX: usize = 64;

/// A small message's payload, read out with its header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inline {
    /// Payload bytes in `data`.
    pub(super) len: u8,
    /// The payload, then padding.
    pub(super) data: [u8; INLINE_MAX],
}

impl Inline {
    /// No payload (a message of 0 bytes).
    pub(super) const EMPTY: Inline = Inline {
        len: 0,
        data: [0; INLINE_MAX],
    };

    /// The payload.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// A copy of `b`, if it fits.
    pub(crate) fn copy_of(b: &[u8]) -> Option<Inline> {
        let mut data = [0u8; INLINE_MAX];
        data.get_mut(..b.len())?.copy_from_slice(b);
        Some(Inline {
            len: b.len() as u8,
            data,
        })
    }
}

/// A message's data copied out of the inbox.
#[derive(Debug)]
pub(super) struct Owned {
    /// Payload offset of `data[0]`.
    pub(super) base: usize,
    /// The copied bytes.
    pub(super) data: Vec<u8>,
}

/// An arrived (or arriving) message.
#[derive(Debug)]
pub(super) struct InMsg {
    /// Arrival number (per peer).
    pub(super) id: u64,
    /// Context (communicator) and tag from its header.
    pub(super) ctx: u32,
    pub(super) tag: u32,
    /// Payload bytes.
    pub(super) total: usize,
    /// Payload bytes arrived, and those consumed.
    pub(super) arrived: usize,
    pub(super) consumed: usize,
    /// Absolute index of its next unconsumed chunk.
    pub(super) next_chunk: u64,
    /// Spilled: the data lives here, not in the inbox.
    pub(super) owned: Option<Box<Owned>>,
    /// A small message, read with its header on arrival (its inbox space
    /// is free at once).
    pub(super) inline: Option<Inline>,
    /// A message to read from the peer's memory (its payload never enters
    /// the inbox): where it lies there.
    pub(super) pull: Option<Box<PullDesc>>,
    /// A read request we answered with PUSH (its number): the peer writes
    /// the payload into the receive's buffer itself.
    pub(super) pushed: Option<u32>,
    /// The peer's WROTE for `pushed` came: the payload is in place.
    pub(super) written: bool,
    /// Bytes at the start of a read request that the peer writes itself
    /// (our PUSH named only them) while we read the rest: the copy shared
    /// between both sides. 0: none. The peer's send ends with our FIN,
    /// after its WROTE and our read.
    pub(super) shared: usize,
    /// The receive that claimed it (0: none).
    pub(super) claim: u64,
    /// Discarded: drop its data as it arrives.
    pub(super) sink: bool,
}

impl InMsg {
    /// Message `id` of `(ctx, tag)` with `total` payload bytes, of which
    /// `arrived` are in the inbox from chunk `next_chunk` on: nothing
    /// consumed, claimed, spilled or read yet.
    pub(super) fn new(
        id: u64,
        (ctx, tag): (u32, u32),
        total: usize,
        arrived: usize,
        next_chunk: u64,
    ) -> InMsg {
        InMsg {
            id,
            ctx,
            tag,
            total,
            arrived,
            consumed: 0,
            next_chunk,
            owned: None,
            inline: None,
            pull: None,
            pushed: None,
            written: false,
            shared: 0,
            claim: 0,
            sink: false,
        }
    }
}

/// Copies a message's data out of the inbox; its later chunks are copied
/// as they arrive.
pub(super) fn spill(inbox: &mut Inbox, m: &mut InMsg) -> Result<(), FabricError> {
    let base = m.consumed;
    let mut data = Vec::with_capacity((m.total - base).min(SPILL_RESERVE));
    while let Some(ch) = inbox.chunk(m.next_chunk) {
        if ch.msg != m.id {
            break;
        }
        ch.done = true;
        let (off, len) = (ch.off, ch.len);
        let at = data.len();
        data.resize(at + len, 0);
        inbox.mr.read_at(off, &mut data[at..])?;
        m.next_chunk += 1;
    }
    m.owned = Some(Box::new(Owned { base, data }));
    Ok(())
}

/// Bytes copied per read of [`read_out`] (its buffer grows by this much
/// only once the peer's memory delivered the bytes before).
const READ_OUT_STEP: usize = 64 << 20;

/// Copies a message to read out of the peer's memory into owned memory
/// and tells the peer its buffer is free (a receiver that waits on other
/// messages must not hold a sender forever).
pub(super) fn read_out(l: &mut Conn<impl Link>, m: &mut InMsg) -> Result<(), FabricError> {
    let Some(d) = m.pull.take() else {
        return Ok(());
    };
    let reader;
    let src = match d.keys() {
        Some(keys) => {
            reader = LinkReader::new(&mut l.link);
            RemoteSrc::Lent(&reader, keys)
        }
        None => RemoteSrc::Memory(
            l.link
                .peer_memory()
                .ok_or_else(|| FabricError::PeerGone("no access to the peer's memory".into()))?,
        ),
    };
    let mut data = Vec::new();
    while data.len() < m.total {
        let at = data.len();
        let n = (m.total - at).min(READ_OUT_STEP);
        data.resize(at + n, 0);
        src.read(d.segs(), at as u64, &mut data[at..])?;
    }
    l.control(Kind::Fin(d.seq))?;
    // After the FIN, so that the sender does not wait for it.
    super::remote::reads_were_the_peers(&l.link, d.keys().is_some())?;
    m.owned = Some(Box::new(Owned { base: 0, data }));
    Ok(())
}

/// The peer's next write if it is a whole message (header and payload in
/// one write) that `land` takes, offered by the link before `poll`
/// ([`Link::take_write`]): `land` gets its header and its payload (the
/// bytes that came with the completion, or the inbox where they landed)
/// and copies the payload where it belongs. The inbox keeps the same
/// account as when [`on_write`] takes the message and it is consumed at
/// once (its space is free), but the message is never queued. Anything
/// else, or what `land` declines, is left for [`on_write`] (which also
/// reports what is wrong with it). The caller has no message from the peer
/// still arriving, so this one starts the next.
fn take_record<R>(
    l: &mut Conn<impl Link>,
    next_msg: &mut u64,
    land: impl FnOnce(&Header, Piece<'_>) -> Option<R>,
) -> Option<R> {
    let Conn { link, inbox, .. } = l;
    link.take_write(|w, data| {
        let len = w.len as usize;
        if wire::parse_imm(w.imm).ok()? != Kind::Msg || w.rkey != inbox.mr.rkey() || len < HDR_LEN {
            return None;
        }
        let (off, end) = wire::place(inbox.rpos, inbox.size, len)?;
        if w.offset != off {
            return None;
        }
        let mut h = [0u8; HDR_LEN];
        let payload = match data {
            WriteData::Inline(bytes) => {
                h.copy_from_slice(bytes.get(..HDR_LEN)?);
                Piece::Bytes(&bytes[HDR_LEN..])
            }
            WriteData::Landed => {
                inbox.mr.read_at(off as usize, &mut h).ok()?;
                Piece::Region {
                    mr: &inbox.mr,
                    off: off as usize + HDR_LEN,
                    len: len - HDR_LEN,
                }
            }
        };
        let hdr = Header::decode(&h);
        let n = payload.len();
        if hdr.total != n as u64 {
            return None;
        }
        let r = land(&hdr, payload)?;
        inbox.rpos = end;
        // As on_write's account of a message consumed on arrival.
        inbox.chunks.push_back(Chunk {
            end,
            off: off as usize + HDR_LEN,
            len: n,
            msg: *next_msg,
            done: true,
        });
        inbox.release();
        *next_msg += 1;
        Some(r)
    })
}

/// For a receive of `(ctx, tag)` of at most `max` bytes that would take
/// the peer's next message, with nothing queued from the peer: that
/// message, if whole in one write and matching, handed to `land` (its tag
/// and payload) straight from the link ([`take_record`]).
pub(super) fn take_direct<R>(
    l: &mut Conn<impl Link>,
    next_msg: &mut u64,
    (ctx, tag): (u32, Option<u32>),
    max: usize,
    land: impl FnOnce(u32, Piece<'_>) -> Option<R>,
) -> Option<R> {
    take_record(l, next_msg, |h, p| {
        if p.len() <= max && h.ctx == ctx && tag.is_none_or(|t| t == h.tag) {
            land(h.tag, p)
        } else {
            None
        }
    })
}

/// Queues the peer's next message if it is whole, at most [`INLINE_MAX`]
/// bytes, and its bytes came with its completion ([`take_record`]): as
/// [`on_write`] would, one copy fewer. False if it did not (nothing there,
/// or anything else: then [`Link::poll`] takes it).
pub(super) fn queue_inline(
    l: &mut Conn<impl Link>,
    msgs: &mut VecDeque<InMsg>,
    next_msg: &mut u64,
) -> bool {
    if msgs.back().is_some_and(|m| m.arrived < m.total) {
        return false;
    }
    let id = *next_msg;
    let small = take_record(l, next_msg, |h, p| match p {
        Piece::Bytes(b) => Some((h.ctx, h.tag, Inline::copy_of(b)?)),
        _ => None,
    });
    let Some((ctx, tag, small)) = small else {
        return false;
    };
    let total = small.len as usize;
    // take_record pushed its chunk, done.
    let next_chunk = l.inbox.base + l.inbox.chunks.len() as u64;
    msgs.push_back(InMsg {
        inline: (total > 0).then_some(small),
        ..InMsg::new(id, (ctx, tag), total, total, next_chunk)
    });
    true
}

/// Takes one write of the peer. True if it returned credit.
pub(super) fn on_write(
    l: &mut Conn<impl Link>,
    msgs: &mut VecDeque<InMsg>,
    next_msg: &mut u64,
    w: &WriteCompletion,
) -> Result<bool, String> {
    let kind = wire::parse_imm(w.imm).map_err(|e| e.to_string())?;
    match kind {
        Kind::Credit(bytes) => {
            let to = l.win.ring.head().saturating_add(bytes);
            l.win
                .ring
                .release_to(to)
                .map_err(|e| format!("credit for more than was sent: {e}"))?;
            return Ok(true);
        }
        Kind::Reads(_) | Kind::Writes => {
            if l.peer_reads.is_some() {
                return Err("a second word on reading our memory".into());
            }
            l.peer_reads = Some(kind != Kind::Reads(false));
            l.peer_writes = kind == Kind::Writes;
            return Ok(false);
        }
        Kind::Wrote(seq) => {
            let Some(i) = msgs
                .iter()
                .position(|m| m.pushed.is_some_and(|s| s & wire::WROTE_MASK == seq) && !m.written)
            else {
                return Err(format!("a WROTE for no push in progress ({seq})"));
            };
            if msgs[i].sink {
                // Its receive gave up (and stopped waiting for this).
                msgs.remove(i);
            } else {
                msgs[i].written = true;
            }
            return Ok(false);
        }
        Kind::Fin(seq) => {
            let Some(i) = l.reading.iter().position(|&(s, _)| s == seq) else {
                return Err(format!("a FIN for no read in progress ({seq})"));
            };
            l.reading.swap_remove(i);
            // The peer has read them: the loans end.
            l.loans.retain(|&(s, _)| s != seq);
            return Ok(false);
        }
        Kind::Msg | Kind::Rts | Kind::Push | Kind::Data => {}
    }
    let inbox = &mut l.inbox;
    if w.rkey != inbox.mr.rkey() {
        return Err("a write outside the inbox".into());
    }
    let len = w.len as usize;
    let (off, end) = wire::place(inbox.rpos, inbox.size, len).ok_or_else(|| {
        wire::WireError::TooLong {
            len: len as u64,
            size: inbox.size,
        }
        .to_string()
    })?;
    if w.offset != off {
        return Err(wire::WireError::Misplaced {
            got: w.offset,
            want: off,
        }
        .to_string());
    }
    inbox.rpos = end;
    let idx = inbox.base + inbox.chunks.len() as u64;
    let off = off as usize;
    if kind != Kind::Data {
        if msgs.back().is_some_and(|m| m.arrived < m.total) {
            return Err("a message started inside another".into());
        }
        if len < HDR_LEN {
            return Err(wire::WireError::ShortHeader(len).to_string());
        }
        if kind == Kind::Rts && !l.we_read {
            return Err("a read request, though we cannot read the peer's memory".into());
        }
        if kind == Kind::Push && !l.we_write {
            return Err("a push, though we cannot write the peer's memory".into());
        }
        // A small message (or a read request) comes out whole, with its
        // header, in one read.
        let mut buf = [0u8; HDR_LEN + PULL_DESC_MAX];
        let take = if len <= buf.len() { len } else { HDR_LEN };
        inbox
            .mr
            .read_at(off, &mut buf[..take])
            .map_err(|e| e.to_string())?;
        let mut h = [0u8; HDR_LEN];
        h.copy_from_slice(&buf[..HDR_LEN]);
        let hdr = Header::decode(&h);
        let total = usize::try_from(hdr.total)
            .ok()
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| format!("a message of {} bytes", hdr.total))?;
        let payload = len - HDR_LEN;
        let pull = match kind {
            Kind::Rts if take == len => {
                let d = PullDesc::decode(&buf[HDR_LEN..len], hdr.total)?;
                // Loans are read through a link that lends; ranges of
                // memory only where we read the peer's in place.
                if d.keys().is_some() != l.link.lends() {
                    return Err("a read request we cannot serve on this link".into());
                }
                Some(Box::new(d))
            }
            Kind::Rts => return Err(format!("a read request of {len} bytes")),
            Kind::Push if take == len => {
                // An answer to our read request, not a message.
                let d = PullDesc::decode(&buf[HDR_LEN..len], hdr.total)?;
                if !l.reading.iter().any(|&(s, _)| s == d.seq) {
                    return Err(format!("a push for no read request ({})", d.seq));
                }
                if l.pushes.iter().any(|p| p.seq == d.seq) {
                    return Err(format!("a second push for read request {}", d.seq));
                }
                l.pushes.push(d);
                inbox.chunks.push_back(Chunk {
                    end,
                    off,
                    len: 0,
                    msg: 0,
                    done: true,
                });
                inbox.release();
                return Ok(false);
            }
            Kind::Push => return Err(format!("a push of {len} bytes")),
            _ => None,
        };
        if payload > total && pull.is_none() {
            return Err("the first write is longer than the message".into());
        }
        let id = *next_msg;
        *next_msg += 1;
        if pull.is_some() {
            inbox.chunks.push_back(Chunk {
                end,
                off,
                len: 0,
                msg: id,
                done: true,
            });
            msgs.push_back(InMsg {
                pull,
                ..InMsg::new(id, (hdr.ctx, hdr.tag), total, total, idx + 1)
            });
            inbox.release();
            return Ok(false);
        }
        let inline = (take == len && payload == total && payload > 0 && payload <= INLINE_MAX)
            .then(|| {
                let mut data = [0u8; INLINE_MAX];
                data[..payload].copy_from_slice(&buf[HDR_LEN..len]);
                Inline {
                    len: payload as u8,
                    data,
                }
            });
        inbox.chunks.push_back(Chunk {
            end,
            off: off + HDR_LEN,
            len: payload,
            msg: id,
            done: payload == 0 || inline.is_some(),
        });
        let next_chunk = if payload > 0 && inline.is_none() {
            idx
        } else {
            idx + 1
        };
        msgs.push_back(InMsg {
            inline,
            ..InMsg::new(id, (hdr.ctx, hdr.tag), total, payload, next_chunk)
        });
    } else {
        let Some(m) = msgs.back_mut().filter(|m| m.arrived < m.total) else {
            return Err("data outside a message".into());
        };
        if len == 0 || m.arrived + len > m.total {
            return Err("a message longer than announced".into());
        }
        m.arrived += len;
        let mut done = false;
        if let Some(o) = m.owned.as_mut() {
            let at = o.data.len();
            o.data.resize(at + len, 0);
            inbox
                .mr
                .read_at(off, &mut o.data[at..])
                .map_err(|e| e.to_string())?;
            m.next_chunk = idx + 1;
            done = true;
        } else if m.sink {
            m.consumed += len;
            m.next_chunk = idx + 1;
            done = true;
        }
        inbox.chunks.push_back(Chunk {
            end,
            off,
            len,
            msg: m.id,
            done,
        });
        if m.sink && m.arrived == m.total {
            msgs.pop_back();
        }
    }
    inbox.release();
    Ok(false)
}
