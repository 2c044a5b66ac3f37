//! The receiving side of the protocol: each write of the peer taken in
//! ring order ([`on_write`]), the messages it starts or continues
//! ([`InMsg`]), and their copy out of the inbox ([`spill`]).

use std::collections::VecDeque;

use rfx_fabric::{FabricError, WriteCompletion};

use super::flow::{Chunk, Conn, Inbox};
use super::link::Link;
use super::SPILL_RESERVE;
use crate::wire::{self, Header, Kind, HDR_LEN};

/// Payloads up to this size are read out with their header on arrival.
pub(super) const INLINE_MAX: usize = 48;

/// A small message's payload, read out with its header.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inline {
    /// Payload bytes in `data`.
    pub(super) len: u8,
    /// The payload, then padding.
    pub(super) data: [u8; INLINE_MAX],
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
    /// The receive that claimed it (0: none).
    pub(super) claim: u64,
    /// Discarded: drop its data as it arrives.
    pub(super) sink: bool,
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

/// Takes one write of the peer. True if it returned credit.
pub(super) fn on_write(
    l: &mut Conn<impl Link>,
    msgs: &mut VecDeque<InMsg>,
    next_msg: &mut u64,
    w: &WriteCompletion,
) -> Result<bool, String> {
    let kind = wire::parse_imm(w.imm).map_err(|e| e.to_string())?;
    if let Kind::Credit(bytes) = kind {
        let to = l.win.ring.head().saturating_add(bytes);
        l.win
            .ring
            .release_to(to)
            .map_err(|e| format!("credit for more than was sent: {e}"))?;
        return Ok(true);
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
    if kind == Kind::Msg {
        if msgs.back().is_some_and(|m| m.arrived < m.total) {
            return Err("a message started inside another".into());
        }
        if len < HDR_LEN {
            return Err(wire::WireError::ShortHeader(len).to_string());
        }
        // A small message comes out whole, with its header, in one read.
        let mut buf = [0u8; HDR_LEN + INLINE_MAX];
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
        if payload > total {
            return Err("the first write is longer than the message".into());
        }
        let id = *next_msg;
        *next_msg += 1;
        let inline = (take == len && payload == total && payload > 0).then(|| {
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
        msgs.push_back(InMsg {
            id,
            ctx: hdr.ctx,
            tag: hdr.tag,
            total,
            arrived: payload,
            consumed: 0,
            next_chunk: if payload > 0 && inline.is_none() {
                idx
            } else {
                idx + 1
            },
            owned: None,
            inline,
            claim: 0,
            sink: false,
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
