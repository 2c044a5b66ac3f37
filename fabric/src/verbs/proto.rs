//! The verbs provider's formats and bookkeeping, free of I/O: the records
//! of the inbound rings, their checksum, the acknowledgement word, the
//! out-of-band set-up message, receive credits, the staging allocator and
//! the sizing of one-sided reads.
//! Decoders take untrusted bytes and return errors, never panic
//! (property-tested below).
//!
//! # Ring records
//!
//! Each side owns an inbound ring in registered memory that only the peer
//! writes, by one RDMA WRITE_WITH_IMM per record. A record is 64-byte
//! aligned and never wraps (when it does not fit before the end of the
//! ring, the producer skips to the start of the next lap, and the consumer
//! looks there when nothing is at its head):
//!
//! ```text
//!  0  stamp    u64   (position + 1) ^ key: stale bytes of earlier laps never match
//!  8  kind u8, reserved u8, directs u16, len u32
//! 16  imm u32, rkey u32
//! 24  addr u64       (writes: the target address in the consumer's region)
//! 32  ack u64        (the sender's own consumer state, see [`Ack`])
//! 40  inline payload (writes up to a limit, send fragments), zero padding
//! end-8  check u64   checksum of everything before it, seeded by key and position
//! ```
//!
//! The consumer reads the record at its head once the receive CQ announced
//! one, and accepts it only when the stamp and the checksum match: that
//! does not depend on the order in which the device places the bytes of
//! one message, so a record is never read half-written. Writes larger than [`WRITE_IN_RECORD_MAX`] travel as RDMA
//! WRITEs straight into the target region, followed on the same queue pair
//! by a header-only record ([`Kind::WriteDirect`]): RC places a queue
//! pair's writes in order, so the data has landed when that record is
//! visible.
//!
//! # Direct writes
//!
//! A record's WRITE_WITH_IMM carries the immediate [`RING_IMM`]. A
//! `write_imm` to the same place as the sender's previous write record
//! (the invocation slot, the result buffer: what a ping-pong writes again
//! and again) goes without a record: one WRITE_WITH_IMM of the bare bytes
//! straight into the target, carrying the caller's immediate, as
//! `ib_write_lat` does. The receiver learns it from its receive CQ (the
//! immediate, and the byte count), and takes the place from the last write
//! record it consumed. Immediates equal to [`RING_IMM`] never go direct.
//!
//! Records are found by polling the ring, direct writes by polling the
//! CQ, yet completions keep the peer's order: every record says how many
//! direct writes were posted before it (`directs`, wrapping), and the CQ
//! lists records and direct writes in posting order. [`Inbound`] keeps
//! that bookkeeping.
//!
//! The bytes of a write record are copied into place when the receiver
//! consumes it, those of a direct write or a [`Kind::WriteDirect`] are
//! placed by the device on arrival: the later could overtake the earlier.
//! So a write is placed by the device only once the peer has acknowledged
//! consuming every write record that overlaps it ([`Unconsumed`]); until
//! then a small one travels in a record too, a large one waits. A side
//! with consumed records it has not acknowledged says so (one RDMA WRITE
//! of its control block) when it goes idle, and before each direct write,
//! which carries no ack: RC order puts the news in the peer's control
//! block before the direct write completes there, and a writer whose
//! check fails reads its control block again. So a ping-pong's first
//! exchange goes by records and every later one direct, both ways (a
//! reply that is the only news would otherwise keep the other side on
//! records for good).

use serde::{Deserialize, Serialize};

use crate::mr::RemoteBuffer;
use crate::ring::Producer;
use crate::wire::WireError;

/// Bytes of a record before its inline payload.
pub(super) const REC_HDR: usize = 40;
/// The checksum word at the end of every record.
pub(super) const TRAILER: usize = 8;
/// Records start and end on this alignment.
pub(super) const REC_ALIGN: usize = 64;
/// Largest write whose bytes travel inside the record (copied on arrival):
/// beyond it, a second work request (the RDMA WRITE of the data) costs less
/// than copying and checksumming the bytes twice.
pub(super) const WRITE_IN_RECORD_MAX: usize = 8 << 10;

/// The immediate of every record's WRITE_WITH_IMM: a receive completion
/// with any other immediate is a direct write.
pub(super) const RING_IMM: u32 = u32::MAX;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// A write whose bytes follow the header (copied into the region on arrival).
    Write = 1,
    /// A write whose bytes were placed by RDMA WRITEs posted before this
    /// record on the same queue pair.
    WriteDirect = 2,
    /// A fragment of a two-sided message; more follow.
    SendMore = 3,
    /// The last (or only) fragment of a two-sided message.
    SendLast = 4,
    /// Orderly close: nothing follows.
    Close = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, WireError> {
        Ok(match b {
            1 => Kind::Write,
            2 => Kind::WriteDirect,
            3 => Kind::SendMore,
            4 => Kind::SendLast,
            5 => Kind::Close,
            other => return Err(WireError::UnknownOp(other)),
        })
    }

    /// Bytes of payload inside a record of this kind with length `len`.
    pub(super) fn inline_len(self, len: u32) -> usize {
        match self {
            Kind::Write | Kind::SendMore | Kind::SendLast => len as usize,
            Kind::WriteDirect | Kind::Close => 0,
        }
    }
}

/// A consumer's state as its peer needs it: how far it consumed our
/// records (in [`REC_ALIGN`] units, wrapping) and how many receives it
/// re-posted in all (our credits). Carried in every record and, when there
/// is nothing to send, RDMA-written into the peer's control block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Ack {
    pub(super) head_units: u32,
    pub(super) reposted: u32,
}

impl Ack {
    pub(super) fn to_u64(self) -> u64 {
        u64::from(self.head_units) | u64::from(self.reposted) << 32
    }

    pub(super) fn from_u64(w: u64) -> Ack {
        Ack {
            head_units: w as u32,
            reposted: (w >> 32) as u32,
        }
    }

    /// The 16 bytes written into the peer's control block: the word twice,
    /// so that a torn read (halves of two writes) is detected and ignored.
    pub(super) fn control_block(self) -> [u8; 16] {
        let w = self.to_u64().to_le_bytes();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&w);
        b[8..].copy_from_slice(&w);
        b
    }

    /// The ack of a control block, if its two copies agree.
    pub(super) fn from_control_block(a: u64, b: u64) -> Option<Ack> {
        (a == b).then(|| Ack::from_u64(a))
    }
}

/// The header of a record (the stamp and checksum are framing, not fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) kind: Kind,
    /// Direct writes the sender posted before this record (wrapping).
    pub(super) directs: u16,
    /// Writes: bytes written; sends: fragment length.
    pub(super) len: u32,
    pub(super) imm: u32,
    pub(super) rkey: u32,
    pub(super) addr: u64,
    pub(super) ack: Ack,
}

impl Header {
    pub(super) fn new(kind: Kind) -> Self {
        Header {
            kind,
            directs: 0,
            len: 0,
            imm: 0,
            rkey: 0,
            addr: 0,
            ack: Ack::default(),
        }
    }

    /// Payload bytes inside the record.
    pub(super) fn inline_len(&self) -> usize {
        self.kind.inline_len(self.len)
    }

    /// Bytes of the whole record.
    pub(super) fn record_size(&self) -> usize {
        record_size(self.inline_len())
    }

    /// The header bytes at `pos` of a ring with stamp key `key`.
    pub(super) fn encode(&self, key: u64, pos: u64) -> [u8; REC_HDR] {
        let mut b = [0u8; REC_HDR];
        b[0..8].copy_from_slice(&stamp(key, pos).to_le_bytes());
        b[8] = self.kind as u8;
        b[10..12].copy_from_slice(&self.directs.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.imm.to_le_bytes());
        b[20..24].copy_from_slice(&self.rkey.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        b[32..40].copy_from_slice(&self.ack.to_u64().to_le_bytes());
        b
    }

    /// Decodes the header bytes (stamp not checked here). `max_inline`
    /// bounds the payload a record may carry.
    pub(super) fn decode(b: &[u8; REC_HDR], max_inline: usize) -> Result<Header, WireError> {
        let kind = Kind::from_u8(b[8])?;
        if b[9] != 0 {
            return Err(WireError::Reserved);
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let h = Header {
            kind,
            directs: u16::from_le_bytes([b[10], b[11]]),
            len: u32_at(12),
            imm: u32_at(16),
            rkey: u32_at(20),
            addr: u64_at(24),
            ack: Ack::from_u64(u64_at(32)),
        };
        if h.inline_len() > max_inline {
            return Err(WireError::TooLarge {
                len: h.inline_len() as u64,
                max: max_inline as u64,
            });
        }
        Ok(h)
    }
}

/// Bytes a record with `inline` payload bytes occupies.
pub(super) fn record_size(inline: usize) -> usize {
    (REC_HDR + inline + TRAILER + REC_ALIGN - 1) & !(REC_ALIGN - 1)
}

/// Largest inline payload of a record of at most `size` bytes.
pub(super) fn max_inline_in(size: usize) -> usize {
    (size & !(REC_ALIGN - 1)).saturating_sub(REC_HDR + TRAILER)
}

/// The stamp of the record at `pos`.
pub(super) fn stamp(key: u64, pos: u64) -> u64 {
    (pos + 1) ^ key
}

/// The record checksum: a multiplicative hash over little-endian words,
/// seeded by the ring key and the record's position, so that bytes left by
/// any earlier record (another lap, another position) do not match. It
/// guards against reading a record the device has not finished placing,
/// not against a hostile peer (which can write whatever it likes anyway).
#[derive(Debug, Clone, Copy)]
pub(super) struct Checksum(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Checksum {
    pub(super) fn new(key: u64, pos: u64) -> Self {
        Checksum((key ^ pos.rotate_left(32)).wrapping_mul(K) | 1)
    }

    #[inline(always)]
    pub(super) fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }

    /// Adds `bytes` as little-endian words, the last one zero-padded.
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w));
        }
    }

    pub(super) fn finish(self) -> u64 {
        let h = self.0;
        h ^ (h >> 29) ^ (h >> 47)
    }

    /// The checksum of a record made of `hdr` and `payload`, zero-padded to
    /// `size - TRAILER` bytes: what the sender writes, without assembling it.
    #[cfg(test)]
    pub(super) fn of_record(
        key: u64,
        pos: u64,
        hdr: &[u8; REC_HDR],
        payload: &[u8],
        size: usize,
    ) -> u64 {
        let mut c = Checksum::new(key, pos);
        record_words(hdr, payload, size).for_each(|w| c.word(w));
        c.finish()
    }
}

/// The words of a record before its trailer: `hdr`, `payload` (its last
/// word zero-padded), zeros up to `size - TRAILER` bytes. The sender writes
/// them and feeds them to the checksum in one pass.
pub(super) fn record_words<'a>(
    hdr: &'a [u8; REC_HDR],
    payload: &'a [u8],
    size: usize,
) -> impl Iterator<Item = u64> + 'a {
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let body = (REC_HDR + payload.len()).div_ceil(8);
    hdr.chunks_exact(8)
        .map(word)
        .chain(payload.chunks(8).map(word))
        .chain(std::iter::repeat_n(0, (size - TRAILER) / 8 - body))
}

/// The producer's view of the peer's inbound ring ([`Producer`]): where
/// the next record goes, and how much of it the peer acknowledged as
/// consumed, which it reports in wrapping units of [`REC_ALIGN`].
#[derive(Debug, Clone)]
pub(super) struct RingTx(Producer);

impl RingTx {
    pub(super) fn new(cap: u64) -> Self {
        RingTx(Producer::new(cap))
    }

    /// True if [`RingTx::reserve`] of `size` bytes would succeed now.
    pub(super) fn fits(&self, size: usize) -> bool {
        self.0.fits(size as u64)
    }

    /// Position of a new record of `size` bytes, skipping to the next lap
    /// if it does not fit before the end; `None` if the ring has no room yet.
    pub(super) fn reserve(&mut self, size: usize) -> Option<u64> {
        self.0.reserve(size as u64)
    }

    /// The ring offset of position `pos`.
    pub(super) fn offset(&self, pos: u64) -> u64 {
        self.0.offset(pos)
    }

    /// Takes the peer's consumed position (wrapping units). Reports older
    /// than what we know are ignored; a report beyond what we wrote too
    /// (a broken peer: the op timeout will tell).
    pub(super) fn ack(&mut self, head_units: u32) {
        let tail = self.0.tail();
        let tail_units = (tail / REC_ALIGN as u64) as u32;
        let behind = u64::from(tail_units.wrapping_sub(head_units)) * REC_ALIGN as u64;
        if behind <= self.0.outstanding() {
            let _ = self.0.release_to(tail - behind);
        }
    }

    /// The position up to which the peer consumed our records.
    pub(super) fn acked(&self) -> u64 {
        self.0.head()
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self) -> u64 {
        self.0.outstanding()
    }
}

/// Our write records the peer may not have consumed yet (their bytes are
/// copied into place only then): `(ring position after the record, rkey,
/// addr, len)`, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Unconsumed(std::collections::VecDeque<(u64, u32, u64, u64)>);

impl Unconsumed {
    /// Notes a write record that ends at ring position `end`.
    pub(super) fn push(&mut self, end: u64, rkey: u32, addr: u64, len: u64) {
        if len > 0 {
            self.0.push_back((end, rkey, addr, len));
        }
    }

    /// True if the device may place `len` bytes at `addr` of region `rkey`
    /// now, the peer having consumed our records up to `acked`: no write
    /// record still to be copied overlaps them.
    pub(super) fn may_place(&mut self, acked: u64, rkey: u32, addr: u64, len: u64) -> bool {
        while self.0.front().is_some_and(|w| w.0 <= acked) {
            self.0.pop_front();
        }
        !self.0.iter().any(|&(_, k, a, n)| {
            k == rkey && a < addr.saturating_add(len) && addr < a.saturating_add(n)
        })
    }
}

/// The consumer's position in its inbound ring.
#[derive(Debug, Clone)]
pub(super) struct RingRx {
    cap: u64,
    key: u64,
    head: u64,
}

impl RingRx {
    pub(super) fn new(cap: u64, key: u64) -> Self {
        RingRx { cap, key, head: 0 }
    }

    pub(super) fn key(&self) -> u64 {
        self.key
    }

    pub(super) fn head(&self) -> u64 {
        self.head
    }

    pub(super) fn head_units(&self) -> u32 {
        (self.head / REC_ALIGN as u64) as u32
    }

    /// Ring offset of the head.
    pub(super) fn offset(&self) -> usize {
        (self.head % self.cap) as usize
    }

    /// Bytes from the head to the end of the ring.
    pub(super) fn to_end(&self) -> usize {
        (self.cap - self.head % self.cap) as usize
    }

    /// The stamp expected at the head.
    pub(super) fn expected(&self) -> u64 {
        stamp(self.key, self.head)
    }

    /// The position where the next lap starts, and its stamp (where the
    /// producer went if a record did not fit at the head), unless the head
    /// is at a lap start already.
    pub(super) fn next_lap(&self) -> Option<(u64, u64)> {
        let off = self.head % self.cap;
        (off != 0).then(|| {
            let pos = self.head - off + self.cap;
            (pos, stamp(self.key, pos))
        })
    }

    /// Moves the head to the next lap (the producer skipped the rest).
    pub(super) fn skip_to(&mut self, pos: u64) {
        debug_assert!(pos > self.head && pos % self.cap == 0);
        self.head = pos;
    }

    /// Frees the record of `size` bytes at the head.
    pub(super) fn advance(&mut self, size: usize) {
        self.head += size as u64;
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
    /// Receives posted for the peer's records (its initial credits).
    pub(super) recv_depth: u32,
    /// The inbound ring the peer writes its records into.
    pub(super) ring_addr: u64,
    pub(super) ring_rkey: u32,
    pub(super) ring_cap: u64,
    pub(super) ring_key: u64,
    /// Where the peer RDMA-writes its [`Ack::control_block`].
    pub(super) ctl_addr: u64,
    pub(super) ctl_rkey: u32,
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
        if !m.ring_cap.is_power_of_two() || !(4096..=1 << 30).contains(&m.ring_cap) {
            return Err(WireError::Invalid("ring capacity out of range"));
        }
        if m.ring_addr % REC_ALIGN as u64 != 0 || m.ctl_addr % 8 != 0 {
            return Err(WireError::Invalid("ring or control block misaligned"));
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

/// Send credits: how many records the peer has receives posted for (each
/// record is a WRITE_WITH_IMM, which consumes one).
///
/// The peer starts with `depth` receives and reports the cumulative count
/// it re-posted (in every record's [`Ack`], and in our control block);
/// counts wrap at 2^32.
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

    /// Records that may be posted now.
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

/// Allocator of the staging ring (registered bounce memory for records too
/// large to post inline, and for direct writes): contiguous chunks in
/// posting order, released in the same order as their work requests
/// complete.
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

    /// Offset of `len` contiguous free bytes (8-byte aligned), or `None` if
    /// they are not free yet. Allocation never wraps inside a chunk.
    pub(super) fn alloc(&mut self, len: usize) -> Option<usize> {
        let len = (len as u64 + 7) & !7;
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

/// Smallest registered bounce buffer of one-sided reads.
pub(super) const READ_BOUNCE_MIN: usize = 64 << 10;
/// Largest one: a read beyond it goes in pieces of this size, one RDMA
/// READ (and one copy out) each.
pub(super) const READ_BOUNCE_MAX: usize = 4 << 20;

/// Bytes of each registration of a read that lands in the caller's
/// memory: the next piece is registered while the device reads the one
/// before.
pub(super) const LANDING_PIECE: usize = 256 << 10;

/// The size of the READ bounce buffer to read `want` bytes when one of
/// `have` bytes is registered (0: none yet): `have` if it is large enough
/// or already at the bound, else the next power of two that holds `want`,
/// between [`READ_BOUNCE_MIN`] and [`READ_BOUNCE_MAX`]. It only grows, so a
/// workload registers a handful of times at most.
pub(super) fn read_bounce_size(have: usize, want: usize) -> usize {
    if have >= want.min(READ_BOUNCE_MAX) {
        return have;
    }
    want.checked_next_power_of_two()
        .unwrap_or(READ_BOUNCE_MAX)
        .clamp(READ_BOUNCE_MIN, READ_BOUNCE_MAX)
}

/// The RDMA READs of a one-sided read of `len` bytes at the peer's `addr`,
/// through a bounce buffer of `bounce` bytes: `(remote address, offset in
/// the caller's buffer, length)`, in order, each at most `bounce` bytes.
pub(super) fn read_pieces(
    addr: u64,
    len: usize,
    bounce: usize,
) -> impl Iterator<Item = (u64, usize, usize)> {
    let step = bounce.max(1);
    (0..len)
        .step_by(step)
        .map(move |off| (addr + off as u64, off, (len - off).min(step)))
}

/// A direct write seen in the receive CQ, not yet delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Direct {
    /// Records posted before it (records seen in the CQ before it).
    after: u64,
    pub(super) imm: u32,
    pub(super) len: u32,
}

/// The receiver's order of records and direct writes (see the module's
/// "Direct writes"): records are taken from the ring only once every
/// direct write posted before them was delivered, and a direct write only
/// once every record posted before it was taken.
#[derive(Debug, Clone, Default)]
pub(super) struct Inbound {
    /// Records seen in the receive CQ, and records taken from the ring.
    records_seen: u64,
    records_taken: u64,
    /// Direct writes delivered (wrapping, as records count them).
    directs_done: u16,
    pending: std::collections::VecDeque<Direct>,
    /// Where direct writes land: the place of the last write record taken.
    target: Option<(u32, u64)>,
}

impl Inbound {
    /// Files one receive completion: a record's or a direct write's.
    pub(super) fn on_receive(&mut self, imm: Option<u32>, len: u32) {
        match imm {
            Some(imm) if imm != RING_IMM => self.pending.push_back(Direct {
                after: self.records_seen,
                imm,
                len,
            }),
            _ => self.records_seen += 1,
        }
    }

    /// True if a record that counts `directs` direct writes before it may
    /// be taken now.
    pub(super) fn record_ready(&self, directs: u16) -> bool {
        directs == self.directs_done
    }

    /// A record was taken from the ring; a write record names the place of
    /// the direct writes that follow it.
    pub(super) fn record_taken(&mut self, write_target: Option<(u32, u64)>) {
        self.records_taken += 1;
        if write_target.is_some() {
            self.target = write_target;
        }
    }

    /// The next direct write, with its place `(rkey, addr)`, if every
    /// record before it was taken. A direct write before any write record
    /// is a broken peer.
    pub(super) fn next_direct(&mut self) -> Result<Option<(Direct, u32, u64)>, WireError> {
        match self.pending.front() {
            Some(d) if d.after <= self.records_taken => {
                let (rkey, addr) = self
                    .target
                    .ok_or(WireError::Invalid("direct write before any write record"))?;
                let d = self.pending.pop_front().expect("front was just seen");
                self.directs_done = self.directs_done.wrapping_add(1);
                Ok(Some((d, rkey, addr)))
            }
            _ => Ok(None),
        }
    }

    /// True if the CQ announced a record not taken yet (its bytes are in
    /// the ring).
    pub(super) fn records_pending(&self) -> bool {
        self.records_seen > self.records_taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_bounce_grows_by_powers_of_two_within_bounds() {
        assert_eq!(read_bounce_size(0, 1), READ_BOUNCE_MIN);
        assert_eq!(
            read_bounce_size(0, READ_BOUNCE_MIN + 1),
            2 * READ_BOUNCE_MIN
        );
        assert_eq!(read_bounce_size(READ_BOUNCE_MIN, 100), READ_BOUNCE_MIN);
        assert_eq!(read_bounce_size(1 << 20, (1 << 20) + 1), 2 << 20);
        assert_eq!(
            read_bounce_size(1 << 20, 1 << 20),
            1 << 20,
            "exact fit is kept"
        );
        assert_eq!(read_bounce_size(0, 64 << 20), READ_BOUNCE_MAX);
        assert_eq!(read_bounce_size(READ_BOUNCE_MAX, 64 << 20), READ_BOUNCE_MAX);
        assert_eq!(read_bounce_size(0, usize::MAX), READ_BOUNCE_MAX);
    }

    #[test]
    fn read_pieces_cover_the_range_in_order() {
        let p: Vec<_> = read_pieces(1000, 10, 4).collect();
        assert_eq!(p, [(1000, 0, 4), (1004, 4, 4), (1008, 8, 2)]);
        assert_eq!(read_pieces(7, 4, 4).collect::<Vec<_>>(), [(7, 0, 4)]);
        assert_eq!(read_pieces(7, 0, 4).count(), 0);
    }

    fn header() -> Header {
        Header {
            kind: Kind::Write,
            directs: 0x1234,
            len: 8,
            imm: 0xdead_beef,
            rkey: 3,
            addr: 0x1234_5678_9abc,
            ack: Ack {
                head_units: 7,
                reposted: 9,
            },
        }
    }

    #[test]
    fn header_roundtrip_and_errors() {
        let h = header();
        let b = h.encode(5, 128);
        assert_eq!(
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            stamp(5, 128)
        );
        assert_eq!(Header::decode(&b, 100), Ok(h));
        assert!(matches!(
            Header::decode(&b, 7),
            Err(WireError::TooLarge { .. })
        ));
        let mut bad = b;
        bad[8] = 9;
        assert_eq!(Header::decode(&bad, 100), Err(WireError::UnknownOp(9)));
        let mut bad = b;
        bad[9] = 1;
        assert_eq!(Header::decode(&bad, 100), Err(WireError::Reserved));
        // A direct write of any length carries nothing inline.
        let d = Header {
            kind: Kind::WriteDirect,
            len: u32::MAX,
            ..h
        };
        assert_eq!(Header::decode(&d.encode(1, 0), 0), Ok(d));
        assert_eq!(d.record_size(), 64);
    }

    #[test]
    fn record_sizes() {
        assert_eq!(record_size(0), 64);
        assert_eq!(record_size(16), 64);
        assert_eq!(record_size(17), 128);
        assert_eq!(record_size(4096), 4160);
        assert_eq!(max_inline_in(256), 208);
        assert_eq!(record_size(max_inline_in(256)), 256);
        assert_eq!(max_inline_in(100), 16);
        assert_eq!(max_inline_in(10), 0);
    }

    #[test]
    fn checksum_of_parts_equals_checksum_of_assembled_words() {
        let hdr = header().encode(77, 4096);
        for len in [0usize, 1, 7, 8, 9, 100, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let size = record_size(len);
            let mut rec = vec![0u8; size - TRAILER];
            rec[..REC_HDR].copy_from_slice(&hdr);
            rec[REC_HDR..REC_HDR + len].copy_from_slice(&payload);
            let mut c = Checksum::new(77, 4096);
            for w in rec.chunks_exact(8) {
                c.word(u64::from_le_bytes(w.try_into().unwrap()));
            }
            assert_eq!(
                c.finish(),
                Checksum::of_record(77, 4096, &hdr, &payload, size),
                "{len}"
            );
        }
    }

    #[test]
    fn checksum_depends_on_position_key_and_every_word() {
        let hdr = header().encode(1, 0);
        let base = Checksum::of_record(1, 0, &hdr, &[0; 64], 128);
        assert_ne!(base, Checksum::of_record(1, 64, &hdr, &[0; 64], 128));
        assert_ne!(base, Checksum::of_record(2, 0, &hdr, &[0; 64], 128));
        for i in 0..64 {
            let mut p = [0u8; 64];
            p[i] = 1;
            assert_ne!(base, Checksum::of_record(1, 0, &hdr, &p, 128), "byte {i}");
        }
        // Swapped words differ too (position inside the record matters).
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        a[0] = 1;
        a[8] = 2;
        b[0] = 2;
        b[8] = 1;
        assert_ne!(
            Checksum::of_record(1, 0, &hdr, &a, 128),
            Checksum::of_record(1, 0, &hdr, &b, 128)
        );
    }

    #[test]
    fn ack_words() {
        let a = Ack {
            head_units: 0xffff_fff0,
            reposted: 12,
        };
        assert_eq!(Ack::from_u64(a.to_u64()), a);
        let b = a.control_block();
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        assert_eq!(Ack::from_control_block(w(0), w(8)), Some(a));
        assert_eq!(Ack::from_control_block(w(0), w(8) ^ 1), None, "torn");
    }

    #[test]
    fn ring_tx_skips_to_the_next_lap_and_waits_for_acks() {
        let mut tx = RingTx::new(1024);
        assert_eq!(tx.reserve(512), Some(0));
        assert_eq!(tx.reserve(384), Some(512));
        // 128 left before the end: a 256-byte record goes to the next lap,
        // which is not free yet.
        assert_eq!(tx.reserve(256), None);
        tx.ack((512 / 64) as u32);
        assert_eq!(tx.reserve(256), Some(1024));
        assert_eq!(tx.offset(1024), 0);
        assert_eq!(tx.in_flight(), 1024 + 256 - 512);
        // Stale and impossible acks are ignored.
        tx.ack(0);
        assert_eq!(tx.in_flight(), 768);
        tx.ack(1000);
        assert_eq!(tx.in_flight(), 768);
        tx.ack((1280 / 64) as u32);
        assert_eq!(tx.in_flight(), 0);
        assert_eq!(tx.reserve(2048), None, "larger than the ring");
    }

    #[test]
    fn ring_tx_acks_wrap() {
        let tail = (u64::from(u32::MAX) + 10) * 64;
        let mut tx = RingTx(Producer::at(4096, tail - 640, tail));
        // The tail is unit 2^32 + 9 (9 once wrapped), the head 2^32 - 1:
        // an ack of unit 2^32 (0 once wrapped) is one unit ahead.
        tx.ack(0);
        assert_eq!(tx.in_flight(), 9 * 64);
    }

    #[test]
    fn ring_rx_positions() {
        let mut rx = RingRx::new(1024, 9);
        assert_eq!(rx.next_lap(), None);
        assert_eq!(rx.expected(), stamp(9, 0));
        rx.advance(576);
        assert_eq!((rx.offset(), rx.to_end()), (576, 448));
        assert_eq!(rx.next_lap(), Some((1024, stamp(9, 1024))));
        rx.skip_to(1024);
        assert_eq!((rx.offset(), rx.head_units()), (0, 16));
    }

    /// Producer and consumer agree on every position and acks free space.
    #[test]
    fn ring_tx_and_rx_agree() {
        let mut tx = RingTx::new(4096);
        let mut rx = RingRx::new(4096, 3);
        let mut inflight = std::collections::VecDeque::new();
        for i in 0..2000usize {
            let size = record_size((i * 97) % 900);
            let pos = loop {
                if let Some(p) = tx.reserve(size) {
                    break p;
                }
                // Consume one.
                let (p, s): (u64, usize) = inflight.pop_front().unwrap();
                if rx.head() != p {
                    let (lap, _) = rx.next_lap().unwrap();
                    assert_eq!(lap, p);
                    rx.skip_to(lap);
                }
                rx.advance(s);
                tx.ack(rx.head_units());
            };
            assert!(tx.offset(pos) as usize + size <= 4096, "wraps");
            inflight.push_back((pos, size));
        }
    }

    /// The sender's view of one message: a record (with or without a new
    /// write target) or a direct write.
    #[derive(Debug, Clone, Copy)]
    enum Msg {
        Record(Option<(u32, u64)>),
        Direct(u32),
    }

    /// Delivers `msgs` as a receiver sees them: records become visible in
    /// the ring in order, receive completions arrive in order, the two
    /// interleaved by `schedule` (true: look at the CQ). Returns the order
    /// of delivery (indices into `msgs`) and the target of each direct.
    fn deliver(msgs: &[Msg], schedule: &[bool]) -> Vec<(usize, Option<(u32, u64)>)> {
        // What the sender writes: the directs count of each record, the
        // CQ in posting order.
        let mut directs = 0u16;
        let mut records = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            match m {
                Msg::Record(t) => records.push((i, directs, *t)),
                Msg::Direct(_) => directs = directs.wrapping_add(1),
            }
        }
        let mut inb = Inbound::default();
        let (mut next_rec, mut next_cqe, mut out) = (0, 0, Vec::new());
        let (mut step, mut force) = (0, false);
        while out.len() < msgs.len() {
            // A step that delivered nothing makes the next one look at the
            // CQ: the receiver always polls both eventually.
            let look_cq = force || schedule[step % schedule.len()];
            step += 1;
            assert!(step < 100_000, "stuck");
            if look_cq && next_cqe < msgs.len() {
                let (imm, len) = match msgs[next_cqe] {
                    Msg::Record(_) => (RING_IMM, 64),
                    Msg::Direct(imm) => (imm, next_cqe as u32),
                };
                inb.on_receive(Some(imm), len);
                next_cqe += 1;
            }
            let before = out.len();
            if let Some((d, rkey, addr)) = inb.next_direct().unwrap() {
                out.push((d.len as usize, Some((rkey, addr))));
            } else if let Some(&(i, d, t)) = records.get(next_rec) {
                // A record is visible once posted (the ring may show it
                // before the CQ does).
                if inb.record_ready(d) {
                    inb.record_taken(t);
                    out.push((i, None));
                    next_rec += 1;
                }
            }
            force = out.len() == before;
        }
        out
    }

    #[test]
    fn inbound_keeps_the_posting_order() {
        let a = Some((1, 64));
        let b = Some((2, 128));
        let msgs = [
            Msg::Record(a),
            Msg::Direct(7),
            Msg::Direct(8),
            Msg::Record(None),
            Msg::Direct(9),
            Msg::Record(b),
            Msg::Direct(10),
        ];
        for schedule in [
            &[true][..],
            &[false, true],
            &[false, false, true],
            &[true, false],
        ] {
            let got = deliver(&msgs, schedule);
            let order: Vec<usize> = got.iter().map(|g| g.0).collect();
            assert_eq!(order, (0..msgs.len()).collect::<Vec<_>>(), "{schedule:?}");
            assert_eq!(got[1].1, a);
            assert_eq!(got[4].1, a);
            assert_eq!(got[6].1, b);
        }
    }

    #[test]
    fn placement_waits_for_overlapping_records() {
        let mut u = Unconsumed::default();
        u.push(64, 1, 100, 50);
        u.push(128, 1, 400, 8);
        u.push(192, 2, 100, 50);
        u.push(256, 1, 900, 0); // empty: overlaps nothing
        assert!(!u.may_place(0, 1, 140, 4), "overlaps the first");
        assert!(!u.may_place(0, 1, 0, 101), "touches its first byte");
        assert!(u.may_place(0, 1, 150, 250), "between the two");
        assert!(u.may_place(0, 3, 100, 50), "another region");
        assert!(!u.may_place(0, 2, 149, 1));
        assert!(u.may_place(64, 1, 140, 4), "consumed");
        assert!(!u.may_place(64, 1, 404, 1));
        assert!(u.may_place(192, 1, 0, u64::MAX));
        assert!(u.may_place(192, 2, 0, 1 << 40));
    }

    #[test]
    fn a_direct_write_before_any_target_is_refused() {
        let mut inb = Inbound::default();
        assert!(!inb.records_pending());
        inb.on_receive(Some(5), 8);
        assert!(inb.next_direct().is_err());
        // A record's completion (or one without an immediate) is no direct.
        let mut inb = Inbound::default();
        inb.on_receive(Some(RING_IMM), 64);
        inb.on_receive(None, 0);
        assert!(inb.records_pending());
        assert_eq!(inb.next_direct(), Ok(None));
        assert!(!inb.record_ready(1));
        assert!(inb.record_ready(0));
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
    fn staging_ring() {
        let mut s = Staging::new(96);
        assert_eq!(s.alloc(60), Some(0));
        let m1 = s.mark();
        assert_eq!(s.alloc(28), Some(64));
        assert_eq!(s.alloc(20), None, "would wrap into live data");
        s.release(m1);
        assert_eq!(s.alloc(20), Some(0), "wrapped to the start");
        assert_eq!(s.alloc(101), None);
        let m = s.mark();
        s.release(m);
        assert_eq!(s.used(), 0);
        assert_eq!(s.alloc(96), Some(0));
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
            ring_addr: 1 << 20,
            ring_rkey: 4,
            ring_cap: 1 << 18,
            ring_key: 77,
            ctl_addr: 8,
            ctl_rkey: 5,
            regions: vec![ExposedRegion {
                buffer: rb,
                device_rkey: 77,
            }],
        };
        let enc = m.encode();
        let len = SetupMsg::decode_len(enc[..4].try_into().unwrap()).unwrap();
        assert_eq!(SetupMsg::decode(&enc[4..4 + len], &[rb]), Ok(m.clone()));
        assert!(SetupMsg::decode(&enc[4..], &[]).is_err(), "regions differ");
        for bad in [
            SetupMsg {
                recv_depth: 0,
                ..m.clone()
            },
            SetupMsg {
                ring_cap: 3 << 16,
                ..m.clone()
            },
            SetupMsg {
                ring_addr: 8,
                ..m.clone()
            },
        ] {
            assert!(SetupMsg::decode(&bad.encode()[4..], &[rb]).is_err());
        }
        assert!(SetupMsg::decode_len((u32::MAX).to_le_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = bytes.get(..REC_HDR) {
                let _ = Header::decode(b.try_into().unwrap(), 1 << 16);
            }
            let _ = SetupMsg::decode(&bytes, &[]);
        }

        #[test]
        fn read_pieces_tile_the_read(addr in 0u64..1 << 40, len in 0usize..1 << 24, have in 0usize..1 << 23) {
            let bounce = read_bounce_size(have, len);
            prop_assert!(bounce >= have);
            if have < len.min(READ_BOUNCE_MAX) {
                prop_assert!(bounce.is_power_of_two());
                prop_assert!((READ_BOUNCE_MIN..=READ_BOUNCE_MAX).contains(&bounce));
                prop_assert!(bounce >= len.min(READ_BOUNCE_MAX));
            }
            let mut next = 0usize;
            for (raddr, off, n) in read_pieces(addr, len, bounce) {
                prop_assert_eq!(off, next);
                prop_assert_eq!(raddr, addr + off as u64);
                prop_assert!(n > 0 && n <= bounce);
                next += n;
            }
            prop_assert_eq!(next, len);
        }

        #[test]
        fn inbound_order_under_any_interleaving(
            kinds in proptest::collection::vec(0u8..3, 1..300),
            schedule in proptest::collection::vec(any::<bool>(), 1..20),
        ) {
            // The first message names a target: directs need one.
            let msgs: Vec<Msg> = std::iter::once(Msg::Record(Some((1, 0))))
                .chain(kinds.iter().enumerate().map(|(i, k)| match k {
                    0 => Msg::Direct(i as u32),
                    1 => Msg::Record(None),
                    _ => Msg::Record(Some((1, i as u64))),
                }))
                .collect();
            let got = deliver(&msgs, &schedule);
            let mut target = None;
            for (pos, (i, t)) in got.iter().enumerate() {
                prop_assert_eq!(*i, pos);
                match msgs[pos] {
                    Msg::Record(nt) => if nt.is_some() { target = nt },
                    Msg::Direct(_) => prop_assert_eq!(*t, target),
                }
            }
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
                    prop_assert_eq!(off % 8, 0);
                    for &(_, o, l) in &live {
                        prop_assert!(off + len <= o || o + l <= off, "overlap");
                    }
                    live.push_back((s.mark(), off, len));
                }
            }
        }
    }
}
