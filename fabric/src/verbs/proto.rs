//! The verbs provider's wire formats and bookkeeping, free of I/O: message
//! headers carried by SENDs, the out-of-band set-up message, receive
//! credits and the staging ring allocator. Decoders take untrusted bytes and
//! return errors, never panic (property-tested below).

use serde::{Deserialize, Serialize};

use crate::mr::RemoteBuffer;
use crate::wire::WireError;

/// Length of the header at the start of every SEND.
pub(super) const HDR_LEN: usize = 32;

/// What a SEND carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// A write whose bytes were placed by RDMA WRITEs posted before this
    /// SEND on the same QP (RC order: they have landed when it arrives).
    Write = 1,
    /// A small write whose bytes follow the header (copied on arrival).
    WriteInline = 2,
    /// A fragment of a two-sided message; more follow.
    SendMore = 3,
    /// The last (or only) fragment of a two-sided message.
    SendLast = 4,
    /// Orderly close: nothing follows.
    Close = 5,
}

/// The header of a SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) kind: Kind,
    /// Cumulative count of receives the sender re-posted (credit return).
    pub(super) credits: u32,
    pub(super) imm: u32,
    pub(super) rkey: u32,
    /// Payload length (writes: bytes written; sends: fragment length).
    pub(super) len: u32,
    pub(super) addr: u64,
}

impl Header {
    pub(super) fn new(kind: Kind) -> Self {
        Header {
            kind,
            credits: 0,
            imm: 0,
            rkey: 0,
            len: 0,
            addr: 0,
        }
    }

    pub(super) fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.kind as u8;
        b[4..8].copy_from_slice(&self.credits.to_le_bytes());
        b[8..12].copy_from_slice(&self.imm.to_le_bytes());
        b[12..16].copy_from_slice(&self.rkey.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Result<Header, WireError> {
        let b: &[u8; HDR_LEN] =
            b.get(..HDR_LEN)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Short {
                    need: HDR_LEN,
                    got: b.len(),
                })?;
        let kind = match b[0] {
            1 => Kind::Write,
            2 => Kind::WriteInline,
            3 => Kind::SendMore,
            4 => Kind::SendLast,
            5 => Kind::Close,
            other => return Err(WireError::UnknownOp(other)),
        };
        if b[1..4] != [0; 3] || b[20..24] != [0; 4] {
            return Err(WireError::Reserved);
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[24..32]);
        Ok(Header {
            kind,
            credits: u32_at(4),
            imm: u32_at(8),
            rkey: u32_at(12),
            len: u32_at(16),
            addr: u64::from_le_bytes(addr),
        })
    }
}

/// A region exposed over verbs: rfx's view plus the device's remote key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ExposedRegion {
    pub(super) buffer: RemoteBuffer,
    pub(super) device_rkey: u32,
}

/// What each side sends on the TCP control connection to connect the QPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SetupMsg {
    pub(super) qpn: u32,
    pub(super) psn: u32,
    pub(super) lid: u16,
    pub(super) gid: [u8; 16],
    pub(super) mtu: u32,
    /// Receives posted for the peer (its initial credits).
    pub(super) recv_depth: u32,
    /// Bytes each posted receive holds.
    pub(super) recv_len: u32,
    /// Where the peer RDMA-writes its credit returns.
    pub(super) credit_addr: u64,
    pub(super) credit_rkey: u32,
    /// The regions of the hello, with device keys, in the same order.
    pub(super) regions: Vec<ExposedRegion>,
}

/// Largest set-up message accepted.
pub(super) const MAX_SETUP: usize = 64 << 10;

impl SetupMsg {
    /// Length-prefixed postcard.
    pub(super) fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("postcard encodes into a Vec");
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The body length from the 4-byte prefix.
    pub(super) fn decode_len(prefix: [u8; 4]) -> Result<usize, WireError> {
        let len = u32::from_le_bytes(prefix) as usize;
        if len > MAX_SETUP {
            return Err(WireError::TooLarge {
                len: len as u64,
                max: MAX_SETUP as u64,
            });
        }
        Ok(len)
    }

    /// Decodes and checks a peer's message against the buffers of its hello.
    pub(super) fn decode(body: &[u8], hello_buffers: &[RemoteBuffer]) -> Result<Self, WireError> {
        let m: SetupMsg = postcard::from_bytes(body).map_err(|e| WireError::Body(e.to_string()))?;
        if !(1..=1 << 16).contains(&m.recv_depth) {
            return Err(WireError::Invalid("receive depth out of range"));
        }
        if (m.recv_len as usize) < HDR_LEN + 1 {
            return Err(WireError::Invalid("receive buffers too small"));
        }
        if !(1..=5).contains(&m.mtu) {
            return Err(WireError::Invalid("unknown path MTU"));
        }
        if m.regions.len() != hello_buffers.len()
            || m.regions
                .iter()
                .zip(hello_buffers)
                .any(|(r, b)| r.buffer != *b)
        {
            return Err(WireError::Invalid(
                "verbs regions differ from the buffers in the hello",
            ));
        }
        Ok(m)
    }
}

/// Send credits: how many SENDs the peer has receives posted for.
///
/// The peer starts with `depth` receives and reports the cumulative count
/// it re-posted (in headers and by RDMA-writing a word of ours); counts
/// wrap at 2^32.
#[derive(Debug, Clone, Copy)]
pub(super) struct Credits {
    depth: u32,
    sent: u32,
    reposted: u32,
}

impl Credits {
    pub(super) fn new(depth: u32) -> Self {
        Credits {
            depth,
            sent: 0,
            reposted: 0,
        }
    }

    /// SENDs that may be posted now.
    pub(super) fn available(&self) -> u32 {
        let outstanding = self.sent.wrapping_sub(self.reposted);
        self.depth.saturating_sub(outstanding)
    }

    /// Takes one credit; false if none is left.
    pub(super) fn take(&mut self) -> bool {
        if self.available() == 0 {
            return false;
        }
        self.sent = self.sent.wrapping_add(1);
        true
    }

    /// The peer says it re-posted `count` receives in all. Stale reports
    /// are ignored; a report of more than was sent is a lying peer.
    pub(super) fn handle_reposted(&mut self, count: u32) -> Result<(), WireError> {
        let ahead = count.wrapping_sub(self.reposted);
        let max_ahead = self.sent.wrapping_sub(self.reposted);
        if ahead == 0 || ahead > u32::MAX / 2 {
            return Ok(()); // nothing new, or an older report arriving late
        }
        if ahead > max_ahead {
            return Err(WireError::Invalid("peer returned more credits than it got"));
        }
        self.reposted = count;
        Ok(())
    }
}

/// Encodes a credit count for the RDMA-written word: the count twice, so
/// that a torn read is detected and ignored.
pub(super) fn credit_word(count: u32) -> u64 {
    (u64::from(count) << 32) | u64::from(count)
}

/// The count of a credit word, if its halves agree.
pub(super) fn credit_of_word(w: u64) -> Option<u32> {
    let (hi, lo) = ((w >> 32) as u32, w as u32);
    (hi == lo).then_some(lo)
}

/// Allocator of the staging ring (registered bounce memory for sends that
/// are not inline): contiguous chunks in posting order, released in the
/// same order as their work requests complete.
#[derive(Debug, Clone)]
pub(super) struct Staging {
    cap: u64,
    head: u64,
    tail: u64,
}

impl Staging {
    pub(super) fn new(cap: usize) -> Self {
        Staging {
            cap: cap as u64,
            head: 0,
            tail: 0,
        }
    }

    /// Offset of `len` contiguous free bytes, or `None` if they are not
    /// free yet. Allocation never wraps inside a chunk.
    pub(super) fn alloc(&mut self, len: usize) -> Option<usize> {
        let len = len as u64;
        if len > self.cap {
            return None;
        }
        let at = self.head % self.cap;
        let skip = if at + len > self.cap {
            self.cap - at
        } else {
            0
        };
        if self.head == self.tail {
            // Empty: the skipped end holds nothing live either.
            self.tail += skip;
        }
        if self.head + skip + len - self.tail > self.cap {
            return None;
        }
        self.head += skip;
        let off = self.head % self.cap;
        self.head += len;
        Some(off as usize)
    }

    /// True when more than half is in use: the request that takes it
    /// there must be signalled, so that its completion frees space.
    pub(super) fn over_half(&self) -> bool {
        self.used() * 2 > self.cap
    }

    /// The position after everything allocated so far (a release mark).
    pub(super) fn mark(&self) -> u64 {
        self.head
    }

    /// Frees everything allocated before `mark`.
    pub(super) fn release(&mut self, mark: u64) {
        if mark > self.tail && mark <= self.head {
            self.tail = mark;
        }
    }

    pub(super) fn used(&self) -> u64 {
        self.head - self.tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_roundtrip_and_errors() {
        let h = Header {
            kind: Kind::WriteInline,
            credits: 7,
            imm: 0xdead_beef,
            rkey: 3,
            len: 8,
            addr: 0x1234_5678_9abc,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        assert!(matches!(
            Header::decode(&[0; 5]),
            Err(WireError::Short { .. })
        ));
        let mut b = h.encode();
        b[0] = 9;
        assert_eq!(Header::decode(&b), Err(WireError::UnknownOp(9)));
        let mut b = h.encode();
        b[21] = 1;
        assert_eq!(Header::decode(&b), Err(WireError::Reserved));
    }

    #[test]
    fn credits_flow() {
        let mut c = Credits::new(2);
        assert!(c.take() && c.take());
        assert!(!c.take());
        assert!(c.handle_reposted(3).is_err(), "more than sent");
        c.handle_reposted(1).unwrap();
        assert_eq!(c.available(), 1);
        c.handle_reposted(0).unwrap(); // stale
        assert_eq!(c.available(), 1);
        assert!(c.take());
        c.handle_reposted(3).unwrap();
        assert_eq!(c.available(), 2);
    }

    #[test]
    fn credits_wrap() {
        let mut c = Credits {
            depth: 4,
            sent: u32::MAX - 1,
            reposted: u32::MAX - 1,
        };
        for _ in 0..4 {
            assert!(c.take());
        }
        assert!(!c.take());
        c.handle_reposted(1).unwrap();
        assert_eq!(c.available(), 3);
    }

    #[test]
    fn credit_words() {
        assert_eq!(credit_of_word(credit_word(77)), Some(77));
        assert_eq!(credit_of_word(0x1_0000_0002), None);
    }

    #[test]
    fn staging_ring() {
        let mut s = Staging::new(100);
        assert_eq!(s.alloc(60), Some(0));
        let m1 = s.mark();
        assert_eq!(s.alloc(30), Some(60));
        assert_eq!(s.alloc(20), None, "would wrap into live data");
        s.release(m1);
        assert_eq!(s.alloc(20), Some(0), "wrapped to the start");
        assert_eq!(s.alloc(101), None);
        let m = s.mark();
        s.release(m);
        assert_eq!(s.used(), 0);
        assert_eq!(s.alloc(100), Some(0));
    }

    #[test]
    fn setup_checks() {
        let rb = RemoteBuffer {
            addr: 4096,
            len: 64,
            rkey: 9,
        };
        let m = SetupMsg {
            qpn: 1,
            psn: 2,
            lid: 0,
            gid: [1; 16],
            mtu: 3,
            recv_depth: 64,
            recv_len: 8192,
            credit_addr: 8,
            credit_rkey: 5,
            regions: vec![ExposedRegion {
                buffer: rb,
                device_rkey: 77,
            }],
        };
        let enc = m.encode();
        let len = SetupMsg::decode_len(enc[..4].try_into().unwrap()).unwrap();
        assert_eq!(SetupMsg::decode(&enc[4..4 + len], &[rb]), Ok(m.clone()));
        assert!(SetupMsg::decode(&enc[4..], &[]).is_err(), "regions differ");
        let bad = SetupMsg {
            recv_depth: 0,
            ..m.clone()
        };
        assert!(SetupMsg::decode(&bad.encode()[4..], &[rb]).is_err());
        assert!(SetupMsg::decode_len((u32::MAX).to_le_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&bytes);
            let _ = SetupMsg::decode(&bytes, &[]);
        }

        #[test]
        fn staging_never_overlaps(ops in proptest::collection::vec((1usize..40, any::<bool>()), 1..200)) {
            let mut s = Staging::new(128);
            let mut live: std::collections::VecDeque<(u64, usize, usize)> = Default::default();
            for (len, free) in ops {
                if free {
                    if let Some((mark, _, _)) = live.pop_front() {
                        s.release(mark);
                    }
                }
                if let Some(off) = s.alloc(len) {
                    prop_assert!(off + len <= 128);
                    for &(_, o, l) in &live {
                        prop_assert!(off + len <= o || o + l <= off, "overlap");
                    }
                    live.push_back((s.mark(), off, len));
                }
            }
        }
    }
}
