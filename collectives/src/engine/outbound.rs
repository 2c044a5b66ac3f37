//! The sending side of the protocol: how far a message went out
//! ([`Progress`]), the send queue's entries ([`OutMsg`]), and the writes
//! that window credit allows ([`send_some`], [`flush`]).

use rfx_fabric::FabricError;

use super::flow::{Conn, Window};
use super::link::Link;
use crate::wire::{self, Header, Kind, HDR_LEN};

/// How far a message went out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub(super) hdr: Header,
    /// Payload bytes.
    pub(super) total: usize,
    pub(super) hdr_sent: bool,
    /// Payload bytes written.
    pub(super) sent: usize,
    /// The kind of the first write: [`Kind::Msg`], or [`Kind::Rts`] or
    /// [`Kind::Push`] (the payload is then a [`crate::wire::PullDesc`] and
    /// `hdr.total` the size of the message it describes).
    pub(super) first: Kind,
}

impl Progress {
    pub(super) fn new(hdr: Header, total: usize) -> Progress {
        Progress {
            hdr,
            total,
            hdr_sent: false,
            sent: 0,
            first: Kind::Msg,
        }
    }
}

/// Where the unsent bytes of a queued message are.
#[derive(Debug)]
pub(super) enum OutData {
    /// Payload bytes `[base, total)`.
    Owned { base: usize, data: Vec<u8> },
    /// In the buffer of the task holding `token`; it sends them by `pump`.
    Borrowed,
}

/// A message waiting for window credit.
#[derive(Debug)]
pub(super) struct OutMsg {
    pub(super) token: u64,
    pub(super) prog: Progress,
    pub(super) data: OutData,
    /// A read request with this number: once written, the message waits
    /// in [`Conn::reading`] for the peer's FIN.
    pub(super) rts: Option<u32>,
}

/// The rest of a message from payload byte `from` on, copied.
pub(super) fn owned_rest(parts: &[&[u8]], from: usize) -> OutData {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut data = Vec::with_capacity(total - from);
    let mut at = 0;
    for p in parts {
        let end = at + p.len();
        if end > from {
            data.extend_from_slice(&p[from.saturating_sub(at)..]);
        }
        at = end;
    }
    OutData::Owned { base: from, data }
}

/// Writes what the window allows of a message whose payload bytes from
/// `base` on are the concatenation of `parts`. True once all went out.
pub(super) fn send_some(
    link: &mut impl Link,
    w: &mut Window,
    stage: &mut Vec<u8>,
    p: &mut Progress,
    parts: &[&[u8]],
    base: usize,
) -> Result<bool, FabricError> {
    if !p.hdr_sent {
        if p.total <= w.single {
            debug_assert_eq!(base, 0);
            let Some(off) = w.reserve(HDR_LEN + p.total) else {
                return Ok(false);
            };
            stage.clear();
            stage.extend_from_slice(&p.hdr.encode());
            parts.iter().for_each(|x| stage.extend_from_slice(x));
            link.write_imm(stage, &w.remote, off, wire::imm(p.first))?;
            p.hdr_sent = true;
            p.sent = p.total;
            return Ok(true);
        }
        let Some(off) = w.reserve(HDR_LEN) else {
            return Ok(false);
        };
        link.write_imm(&p.hdr.encode(), &w.remote, off, wire::imm(Kind::Msg))?;
        p.hdr_sent = true;
    }
    let mut at = base;
    for part in parts {
        let end = at + part.len();
        while p.sent < end {
            let from = p.sent - at;
            let n = w.chunk.min(part.len() - from);
            let Some(off) = w.reserve(n) else {
                return Ok(false);
            };
            link.write_imm(&part[from..from + n], &w.remote, off, wire::imm(Kind::Data))?;
            p.sent += n;
        }
        at = end;
    }
    Ok(p.sent == p.total)
}

/// Sends the owned messages at the front of the queue while credit lasts.
pub(super) fn flush(c: &mut Conn<impl Link>, stage: &mut Vec<u8>) -> Result<bool, FabricError> {
    let mut moved = false;
    while let Some(m) = c.out.front_mut() {
        let OutData::Owned { base, data } = &m.data else {
            break;
        };
        let before = m.prog.sent;
        let done = send_some(&mut c.link, &mut c.win, stage, &mut m.prog, &[data], *base)?;
        moved |= done || m.prog.sent != before;
        if !done {
            break;
        }
        if let Some(seq) = m.rts {
            let token = m.token;
            c.reading.push((seq, token));
        }
        c.out.pop_front();
    }
    Ok(moved)
}
