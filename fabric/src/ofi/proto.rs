//! The ofi provider's protocol, free of I/O: the 24-byte record header of
//! every message, credit-based flow control, and the in-order delivery of
//! completions (writes are reported once both their descriptor and their
//! remote-CQ-data completion have arrived).
//!
//! Records (one libfabric message each, at most one receive slot):
//!
//! | kind | payload | consumes a data credit |
//! |---|---|---|
//! | `Send` | message bytes (fragment when `MORE`) | yes |
//! | `InlineWrite` | the written bytes, copied into the region at the target | yes |
//! | `WriteDesc` | none: the bytes come by `fi_writedata` | yes |
//! | `Credit` | none: returns credits only | no (reserved slots) |
//! | `Hello`, `Close` | none | no (reserved slots) |
//!
//! Every header carries the credits its sender returns. A side sends an
//! explicit `Credit` only when it owes at least a quarter of the window,
//! so at most `window / (window / 4) + 1` such records are in flight: the
//! receiver posts that many reserved slots beyond the window.

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use crate::completion::{Completion, WriteCompletion};
use crate::wire::WireError;

/// Length of a record header.
pub(super) const REC_HDR: usize = 24;
/// Flag on a `Send` fragment: more follow.
pub(super) const MORE: u8 = 1;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    Send = 1,
    InlineWrite = 2,
    WriteDesc = 3,
    Credit = 4,
    Hello = 5,
    Close = 6,
}

impl Kind {
    /// True for records that use one of the peer's data credits.
    pub(super) fn uses_credit(self) -> bool {
        matches!(self, Kind::Send | Kind::InlineWrite | Kind::WriteDesc)
    }
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rec {
    pub(super) kind: Kind,
    pub(super) flags: u8,
    /// Credits the sender returns to the receiver.
    pub(super) credits: u16,
    pub(super) imm: u32,
    pub(super) rkey: u32,
    pub(super) len: u32,
    pub(super) addr: u64,
}

impl Rec {
    pub(super) fn new(kind: Kind) -> Rec {
        Rec {
            kind,
            flags: 0,
            credits: 0,
            imm: 0,
            rkey: 0,
            len: 0,
            addr: 0,
        }
    }

    pub(super) fn write(kind: Kind, addr: u64, rkey: u32, imm: u32, len: u32) -> Rec {
        Rec {
            imm,
            rkey,
            len,
            addr,
            ..Rec::new(kind)
        }
    }

    pub(super) fn encode(&self) -> [u8; REC_HDR] {
        let mut b = [0u8; REC_HDR];
        b[0] = self.kind as u8;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.credits.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b
    }

    /// Decodes a whole record (`buf` is what the slot received) and checks
    /// that its payload length matches.
    pub(super) fn decode(buf: &[u8]) -> Result<(Rec, &[u8]), WireError> {
        let b: &[u8; REC_HDR] =
            buf.get(..REC_HDR)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Short {
                    need: REC_HDR,
                    got: buf.len(),
                })?;
        let kind = match b[0] {
            1 => Kind::Send,
            2 => Kind::InlineWrite,
            3 => Kind::WriteDesc,
            4 => Kind::Credit,
            5 => Kind::Hello,
            6 => Kind::Close,
            other => return Err(WireError::UnknownOp(other)),
        };
        let flags = b[1];
        if flags & !MORE != 0 || (flags != 0 && kind != Kind::Send) {
            return Err(WireError::Reserved);
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[16..24]);
        let rec = Rec {
            kind,
            flags,
            credits: u16::from_le_bytes([b[2], b[3]]),
            imm: u32_at(4),
            rkey: u32_at(8),
            len: u32_at(12),
            addr: u64::from_le_bytes(addr),
        };
        let payload = &buf[REC_HDR..];
        let want = match kind {
            Kind::Send | Kind::InlineWrite => rec.len as usize,
            _ => 0,
        };
        if payload.len() != want {
            return Err(WireError::Invalid("record length differs from its header"));
        }
        Ok((rec, payload))
    }
}

/// Remote CQ data of a write: the immediate and the writer's write count.
pub(super) fn encode_cq_data(imm: u32, wseq: u32) -> u64 {
    u64::from(imm) | (u64::from(wseq) << 32)
}

/// Inverse of [`encode_cq_data`]: `(imm, wseq)`.
pub(super) fn decode_cq_data(data: u64) -> (u32, u32) {
    (data as u32, (data >> 32) as u32)
}

/// Credit-based flow control of one direction pair.
#[derive(Debug, Clone)]
pub(super) struct Credits {
    /// Records we may still send to the peer.
    avail: u32,
    /// Slots we re-posted and not yet told the peer about.
    owed: u32,
    /// The peer's window (its data slots).
    peer_window: u32,
    /// Our window.
    window: u32,
}

impl Credits {
    pub(super) fn new(window: u32, peer_window: u32) -> Credits {
        Credits {
            avail: peer_window,
            owed: 0,
            peer_window,
            window,
        }
    }

    pub(super) fn can_send(&self) -> bool {
        self.avail > 0
    }

    /// The credits to piggyback on the next record.
    pub(super) fn to_return(&self) -> u16 {
        self.owed.min(u32::from(u16::MAX)) as u16
    }

    /// Accounts a record of `kind` that was posted carrying `returned`
    /// credits (from [`Credits::to_return`]).
    pub(super) fn on_sent(&mut self, kind: Kind, returned: u16) {
        if kind.uses_credit() {
            debug_assert!(self.avail > 0, "sent without credit");
            self.avail = self.avail.saturating_sub(1);
        }
        self.owed = self.owed.saturating_sub(u32::from(returned));
    }

    /// Credits the peer returned. More than its window is a protocol error.
    pub(super) fn on_grant(&mut self, n: u16) -> Result<(), WireError> {
        let avail = self.avail + u32::from(n);
        if avail > self.peer_window {
            return Err(WireError::Invalid(
                "peer returned more credits than it took",
            ));
        }
        self.avail = avail;
        Ok(())
    }

    /// We re-posted the slot of a record of `kind`.
    pub(super) fn on_consumed(&mut self, kind: Kind) {
        if kind.uses_credit() {
            self.owed += 1;
        }
    }

    /// True when an explicit credit record is due.
    pub(super) fn credit_due(&self) -> bool {
        self.owed >= (self.window / 4).max(1)
    }
}

/// Reserved slots needed beyond a window (see the module docs): credit
/// records in flight, plus hello and close.
pub(super) fn reserved_slots(window: u32) -> u32 {
    window / (window / 4).max(1) + 1 + 2
}

#[derive(Debug)]
enum Pending {
    Ready(Completion),
    /// Waits for the remote CQ data of write number `wseq`.
    Write {
        wseq: u32,
        w: WriteCompletion,
    },
}

/// Completions in the order the peer posted them.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    queue: VecDeque<Pending>,
    /// Remote CQ data that came before its descriptor: wseq -> imm.
    early: HashMap<u32, u32>,
    /// The wseq the next descriptor stands for.
    next_desc: u32,
    assembling: Option<BytesMut>,
}

/// Bound on writes whose data came before their descriptor.
const MAX_EARLY: usize = 4096;

impl Inbox {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when the head is ready to be delivered.
    pub(super) fn has_ready(&self) -> bool {
        match self.queue.front() {
            Some(Pending::Ready(_)) => true,
            Some(Pending::Write { wseq, .. }) => self.early.contains_key(wseq),
            None => false,
        }
    }

    pub(super) fn handle_ready(&mut self, c: Completion) {
        self.queue.push_back(Pending::Ready(c));
    }

    /// A send fragment of `payload`; `max` bounds a whole message.
    pub(super) fn handle_fragment(
        &mut self,
        payload: &[u8],
        more: bool,
        max: usize,
    ) -> Result<(), WireError> {
        let mut buf = self.assembling.take().unwrap_or_default();
        if buf.len() + payload.len() > max {
            return Err(WireError::TooLarge {
                len: (buf.len() + payload.len()) as u64,
                max: max as u64,
            });
        }
        buf.extend_from_slice(payload);
        if more {
            self.assembling = Some(buf);
        } else {
            self.queue
                .push_back(Pending::Ready(Completion::Recv(buf.freeze())));
        }
        Ok(())
    }

    /// The descriptor of the peer's next `fi_writedata`.
    pub(super) fn handle_desc(&mut self, w: WriteCompletion) {
        let wseq = self.next_desc;
        self.next_desc = self.next_desc.wrapping_add(1);
        self.queue.push_back(Pending::Write { wseq, w });
    }

    /// Remote CQ data of a write that landed.
    pub(super) fn handle_remote_write(&mut self, data: u64) -> Result<(), WireError> {
        let (imm, wseq) = decode_cq_data(data);
        if self.early.len() >= MAX_EARLY {
            return Err(WireError::Invalid("too many writes without descriptors"));
        }
        if self.early.insert(wseq, imm).is_some() {
            return Err(WireError::Invalid("write sequence number repeated"));
        }
        Ok(())
    }

    /// The next completion in order, if it is complete.
    pub(super) fn poll(&mut self) -> Result<Option<Completion>, WireError> {
        match self.queue.front() {
            Some(Pending::Ready(_)) => match self.queue.pop_front() {
                Some(Pending::Ready(c)) => Ok(Some(c)),
                _ => Ok(None),
            },
            Some(Pending::Write { wseq, w }) => {
                let (wseq, w) = (*wseq, *w);
                match self.early.remove(&wseq) {
                    Some(imm) if imm == w.imm => {
                        self.queue.pop_front();
                        Ok(Some(Completion::Write(w)))
                    }
                    Some(_) => Err(WireError::Invalid(
                        "immediate of a write differs from its descriptor",
                    )),
                    None => Ok(None),
                }
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(imm: u32) -> WriteCompletion {
        WriteCompletion {
            imm,
            rkey: 1,
            offset: 0,
            len: 8,
        }
    }

    #[test]
    fn record_roundtrip_and_checks() {
        let r = Rec::write(Kind::InlineWrite, 0x1000, 7, 9, 3);
        let mut buf = r.encode().to_vec();
        buf.extend_from_slice(b"abc");
        let (back, payload) = Rec::decode(&buf).unwrap();
        assert_eq!((back, payload), (r, &b"abc"[..]));
        assert!(Rec::decode(&buf[..REC_HDR + 2]).is_err(), "short payload");
        let mut bad = buf.clone();
        bad[0] = 99;
        assert_eq!(Rec::decode(&bad), Err(WireError::UnknownOp(99)));
        let mut bad = buf.clone();
        bad[1] = MORE;
        assert_eq!(Rec::decode(&bad), Err(WireError::Reserved));
        let desc = Rec::write(Kind::WriteDesc, 1, 2, 3, 1 << 20).encode();
        assert!(Rec::decode(&desc).is_ok(), "descriptors carry no payload");
    }

    #[test]
    fn writes_wait_for_their_data_and_keep_order() {
        let mut inbox = Inbox::default();
        inbox.handle_desc(w(10));
        inbox.handle_fragment(b"after", false, 1 << 20).unwrap();
        assert_eq!(inbox.poll(), Ok(None), "data of write 0 not there yet");
        inbox.handle_remote_write(encode_cq_data(10, 0)).unwrap();
        assert_eq!(inbox.poll(), Ok(Some(Completion::Write(w(10)))));
        assert!(matches!(inbox.poll(), Ok(Some(Completion::Recv(_)))));
        // Data before descriptor (providers that do not order them).
        inbox.handle_remote_write(encode_cq_data(11, 1)).unwrap();
        inbox.handle_desc(w(11));
        assert_eq!(inbox.poll(), Ok(Some(Completion::Write(w(11)))));
        assert!(inbox.is_empty());
        // A forged immediate or a replayed sequence number is an error.
        inbox.handle_desc(w(12));
        inbox.handle_remote_write(encode_cq_data(99, 2)).unwrap();
        assert!(inbox.poll().is_err());
        inbox.handle_remote_write(encode_cq_data(1, 7)).unwrap();
        assert!(inbox.handle_remote_write(encode_cq_data(1, 7)).is_err());
    }

    #[test]
    fn fragments_assemble_and_are_bounded() {
        let mut inbox = Inbox::default();
        inbox.handle_fragment(b"ab", true, 4).unwrap();
        inbox.handle_fragment(b"cd", false, 4).unwrap();
        assert_eq!(
            inbox.poll(),
            Ok(Some(Completion::Recv(bytes::Bytes::from_static(b"abcd"))))
        );
        inbox.handle_fragment(b"abc", true, 4).unwrap();
        assert!(inbox.handle_fragment(b"de", false, 4).is_err());
    }

    #[test]
    fn credits_flow_and_overgrants_are_refused() {
        let mut a = Credits::new(8, 8);
        for _ in 0..8 {
            assert!(a.can_send());
            assert_eq!(a.to_return(), 0);
            a.on_sent(Kind::Send, 0);
        }
        assert!(!a.can_send());
        // Control records need no credit.
        a.on_sent(Kind::Credit, 0);
        a.on_grant(3).unwrap();
        assert!(a.can_send());
        assert!(a.on_grant(6).is_err(), "more than the window");
        // Owed credits ride on the next record; a credit record is due at
        // a quarter of the window.
        for _ in 0..2 {
            a.on_consumed(Kind::Send);
        }
        assert!(a.credit_due());
        a.on_consumed(Kind::Credit);
        assert_eq!(a.to_return(), 2);
        a.on_sent(Kind::Credit, 2);
        assert!(!a.credit_due());
        assert!(reserved_slots(64) > 64 / 16);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Rec::decode(&bytes);
        }

        #[test]
        fn cq_data_roundtrip(imm: u32, wseq: u32) {
            prop_assert_eq!(decode_cq_data(encode_cq_data(imm, wseq)), (imm, wseq));
        }
    }
}
