//! Single-producer single-consumer byte ring in a shared mapping.
//!
//! Layout: a 4 KiB header page (consumer's `head` and `waiting` words on
//! separate cache lines), then `cap` bytes of records. A record is 64-byte
//! aligned: an 8-byte stamp, a 24-byte [`FrameHeader`], then an inline
//! payload (two-sided sends, and writes of at most [`INLINE_WRITE_MAX`]
//! bytes flagged [`FLAG_INLINE`]). The consumer polls the stamp at its head,
//! so a small message costs one cache-line transfer: the stamp is
//! `(position + 1) ^ key`, which stale bytes of earlier laps do not match.
//! A record never wraps; a `Pad` record fills the end of the ring.
//!
//! The peer is untrusted: every record is validated before use and a bad
//! one is an error, never an out-of-bounds access.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use bytes::BytesMut;

use crate::error::FabricError;
use crate::mem::SharedMap;
use crate::wire::{FrameHeader, Op, WireError, FLAG_INLINE, FRAME_HEADER_LEN};

const RING_HDR: usize = 4096;
const HEAD_OFF: usize = 0;
const WAITING_OFF: usize = 64;
/// Bytes before a record's payload.
pub(super) const REC_HDR: usize = 8 + FRAME_HEADER_LEN;

/// Largest write carried inline: a record of at most four cache lines,
/// whose first line the consumer fetches anyway.
pub(super) const INLINE_WRITE_MAX: usize = 256 - REC_HDR;

/// Bytes a record with `payload` inline bytes occupies.
pub(super) fn record_size(payload: usize) -> usize {
    (REC_HDR + payload + 63) & !63
}

/// Bytes carried inline by a record: a write's data is in the target
/// region, not in the ring, unless the write is flagged inline.
fn inline_len(hdr: &FrameHeader) -> usize {
    match hdr.op {
        Op::Send | Op::Pad => hdr.len as usize,
        Op::Write if hdr.flags & FLAG_INLINE != 0 => hdr.len as usize,
        Op::Write | Op::Close | Op::Read | Op::ReadReply => 0,
    }
}

#[derive(Debug)]
pub(super) struct Ring {
    map: SharedMap,
    cap: u64,
    key: u64,
}

impl Ring {
    /// A new ring of `cap` bytes (a power of two) with a random stamp key.
    pub(super) fn create(cap: usize) -> Result<Ring, FabricError> {
        let k = crate::secret::random_bytes::<8>()?;
        let map = SharedMap::create("rfx-ring", RING_HDR + cap)?;
        Ok(Ring {
            map,
            cap: cap as u64,
            key: u64::from_le_bytes(k) | 1,
        })
    }

    /// Maps a peer's ring; `cap` and `key` come from the peer and are checked.
    pub(super) fn from_fd(fd: OwnedFd, cap: u64, key: u64) -> Result<Ring, FabricError> {
        if !cap.is_power_of_two() || !(4096..=1 << 30).contains(&cap) {
            return Err(FabricError::Handshake(format!(
                "peer ring capacity {cap} is invalid"
            )));
        }
        let map = SharedMap::from_fd(fd, RING_HDR + cap as usize)?;
        Ok(Ring { map, cap, key })
    }

    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.map.fd()
    }

    pub(super) fn cap(&self) -> u64 {
        self.cap
    }

    pub(super) fn key(&self) -> u64 {
        self.key
    }

    fn off(&self, pos: u64) -> usize {
        RING_HDR + (pos & (self.cap - 1)) as usize
    }

    fn stamp(&self, pos: u64) -> &AtomicU64 {
        self.map.atomic_u64(self.off(pos))
    }

    fn stamp_value(&self, pos: u64) -> u64 {
        (pos + 1) ^ self.key
    }

    fn head(&self) -> &AtomicU64 {
        self.map.atomic_u64(HEAD_OFF)
    }

    fn waiting(&self) -> &AtomicU64 {
        self.map.atomic_u64(WAITING_OFF)
    }
}

/// The writing end (we write into the peer's inbound ring).
#[derive(Debug)]
pub(super) struct Producer {
    ring: Ring,
    tail: u64,
    cached_head: u64,
}

impl Producer {
    pub(super) fn new(ring: Ring) -> Self {
        // The peer's ring is fresh: it starts empty at position 0.
        Producer {
            ring,
            tail: 0,
            cached_head: 0,
        }
    }

    /// Largest inline payload of one record.
    pub(super) fn max_payload(&self) -> usize {
        self.ring.cap as usize / 4 - REC_HDR
    }

    fn free(&self) -> u64 {
        self.ring.cap - (self.tail - self.cached_head)
    }

    /// Appends a record; false if the ring has no room now.
    pub(super) fn try_push(
        &mut self,
        hdr: &FrameHeader,
        payload: &[u8],
    ) -> Result<bool, FabricError> {
        debug_assert!(payload.len() <= self.max_payload());
        debug_assert_eq!(payload.len(), inline_len(hdr));
        let size = record_size(payload.len()) as u64;
        let to_end = self.ring.cap - (self.tail & (self.ring.cap - 1));
        let need = if size > to_end { to_end + size } else { size };
        if need > self.free() {
            let head = self.ring.head().load(Ordering::Acquire);
            // A head outside [cached_head, tail] is a broken peer; treat the
            // ring as full and let the op timeout report it.
            if head < self.cached_head || head > self.tail {
                return Ok(false);
            }
            self.cached_head = head;
            if need > self.free() {
                return Ok(false);
            }
        }
        if size > to_end {
            let pad = FrameHeader {
                len: (to_end as usize - REC_HDR) as u32,
                ..FrameHeader::new(Op::Pad)
            };
            self.publish(&pad, &[])?;
            self.tail += to_end;
        }
        self.publish(hdr, payload)?;
        self.tail += size;
        Ok(true)
    }

    fn publish(&self, hdr: &FrameHeader, payload: &[u8]) -> Result<(), FabricError> {
        let off = self.ring.off(self.tail);
        self.ring.map.write_array(off + 8, &hdr.encode())?;
        if !payload.is_empty() {
            self.ring.map.write(off + REC_HDR, payload)?;
        }
        self.ring
            .stamp(self.tail)
            .store(self.ring.stamp_value(self.tail), Ordering::Release);
        Ok(())
    }

    /// True if the consumer sleeps and must be woken. The fence pairs with
    /// the one in [`Consumer::set_waiting`]: either we see its flag or it
    /// sees our record.
    pub(super) fn consumer_waiting(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.waiting().load(Ordering::Relaxed) != 0
    }
}

/// The reading end (our inbound ring).
#[derive(Debug)]
pub(super) struct Consumer {
    ring: Ring,
    head: u64,
}

impl Consumer {
    pub(super) fn new(ring: Ring) -> Self {
        Consumer { ring, head: 0 }
    }

    /// The record at the head, if published, validated.
    pub(super) fn peek(&self) -> Result<Option<FrameHeader>, WireError> {
        if self.ring.stamp(self.head).load(Ordering::Acquire) != self.ring.stamp_value(self.head) {
            return Ok(None);
        }
        let b: [u8; FRAME_HEADER_LEN] = self
            .ring
            .map
            .read_array(self.ring.off(self.head) + 8)
            .map_err(|_| WireError::Invalid("record outside the ring"))?;
        let hdr = FrameHeader::decode(&b)?;
        let to_end = self.ring.cap - (self.head & (self.ring.cap - 1));
        let size = record_size(inline_len(&hdr)) as u64;
        if size > to_end {
            return Err(WireError::Invalid("record crosses the end of the ring"));
        }
        if hdr.op == Op::Pad && size != to_end {
            return Err(WireError::Invalid(
                "pad record does not reach the end of the ring",
            ));
        }
        if hdr.op == Op::Write && hdr.flags == FLAG_INLINE && hdr.len as usize > INLINE_WRITE_MAX {
            return Err(WireError::Invalid(
                "inline write larger than the inline limit",
            ));
        }
        Ok(Some(hdr))
    }

    /// Appends the inline payload of the record at the head to `out`.
    pub(super) fn read_payload(
        &self,
        hdr: &FrameHeader,
        out: &mut BytesMut,
    ) -> Result<(), FabricError> {
        let len = inline_len(hdr);
        let at = out.len();
        out.resize(at + len, 0);
        self.ring
            .map
            .read(self.ring.off(self.head) + REC_HDR, &mut out[at..])
    }

    /// Copies the inline payload of the record at the head into `out`
    /// (which has its length).
    pub(super) fn copy_payload(&self, out: &mut [u8]) -> Result<(), FabricError> {
        self.ring.map.read(self.ring.off(self.head) + REC_HDR, out)
    }

    /// Frees the record at the head.
    pub(super) fn advance(&mut self, hdr: &FrameHeader) {
        self.head += record_size(inline_len(hdr)) as u64;
        self.ring.head().store(self.head, Ordering::Release);
    }

    /// Announces (or withdraws) that we are about to sleep.
    pub(super) fn set_waiting(&self, on: bool) {
        self.ring.waiting().store(on as u64, Ordering::SeqCst);
        if on {
            fence(Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cap: usize) -> (Producer, Consumer) {
        let ring = Ring::create(cap).unwrap();
        let fd = ring.fd().try_clone_to_owned().unwrap();
        let peer = Ring::from_fd(fd, ring.cap(), ring.key()).unwrap();
        (Producer::new(peer), Consumer::new(ring))
    }

    fn send(len: u32) -> FrameHeader {
        FrameHeader {
            len,
            ..FrameHeader::new(Op::Send)
        }
    }

    #[test]
    fn wraps_with_padding_and_keeps_order() {
        let (mut p, mut c) = pair(4096);
        let mut next = 0u32;
        let mut expect = 0u32;
        for round in 0..200u32 {
            let len = (round * 37) % 900;
            let payload = vec![round as u8; len as usize];
            while !p
                .try_push(
                    &FrameHeader {
                        imm: next,
                        ..send(len)
                    },
                    &payload,
                )
                .unwrap()
            {
                // Full: drain one.
                let h = c.peek().unwrap().unwrap();
                if h.op != Op::Pad {
                    assert_eq!(h.imm, expect);
                    expect += 1;
                }
                c.advance(&h);
            }
            next += 1;
        }
        while let Some(h) = c.peek().unwrap() {
            if h.op != Op::Pad {
                assert_eq!(h.imm, expect);
                let mut out = BytesMut::new();
                c.read_payload(&h, &mut out).unwrap();
                assert_eq!(out.len() as u32, h.len);
                expect += 1;
            }
            c.advance(&h);
        }
        assert_eq!(expect, next);
    }

    #[test]
    fn write_records_carry_no_inline_payload() {
        let (mut p, mut c) = pair(4096);
        let write = FrameHeader {
            len: 1 << 20,
            ..FrameHeader::new(Op::Write)
        };
        assert!(p.try_push(&write, &[]).unwrap());
        assert!(p.try_push(&send(63), &[7; 63]).unwrap());
        let h = c.peek().unwrap().unwrap();
        assert_eq!(h.op, Op::Write);
        c.advance(&h);
        let h = c.peek().unwrap().unwrap();
        assert_eq!((h.op, h.len), (Op::Send, 63));
        let mut out = BytesMut::new();
        c.read_payload(&h, &mut out).unwrap();
        assert_eq!(&out[..], &[7; 63]);
    }

    #[test]
    fn inline_writes_carry_their_data_and_are_bounded() {
        let (mut p, mut c) = pair(4096);
        let inline = |len: u32| FrameHeader {
            flags: FLAG_INLINE,
            ..FrameHeader::write(0, 1, 2, len)
        };
        let data: Vec<u8> = (0..INLINE_WRITE_MAX as u32).map(|i| i as u8).collect();
        assert!(p.try_push(&inline(data.len() as u32), &data).unwrap());
        assert!(p.try_push(&send(3), &[9; 3]).unwrap());
        let h = c.peek().unwrap().unwrap();
        assert_eq!((h.op, h.len), (Op::Write, INLINE_WRITE_MAX as u32));
        let mut out = vec![0u8; h.len as usize];
        c.copy_payload(&mut out).unwrap();
        assert_eq!(out, data);
        c.advance(&h);
        assert_eq!(
            c.peek().unwrap().unwrap().op,
            Op::Send,
            "the next record follows the inline data"
        );

        // A peer claiming a bigger inline write is refused, not trusted.
        let (p, c) = pair(4096);
        p.publish(
            &inline(INLINE_WRITE_MAX as u32 + 1),
            &[0; INLINE_WRITE_MAX + 1],
        )
        .unwrap();
        assert!(c.peek().is_err());
    }

    #[test]
    fn garbage_records_are_errors() {
        let (p, c) = pair(4096);
        // A record that claims more bytes than remain in the ring.
        let bad = send(100_000);
        p.publish(&bad, &[]).unwrap();
        assert!(c.peek().is_err());
    }
}
