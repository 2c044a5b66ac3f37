//! The message protocol of the communicator over one-sided
//! [`rfx_fabric::Endpoint::write_imm`], free of I/O. Decoders take
//! untrusted input and return an error, never panic.
//!
//! Each rank exposes to each peer an *inbox* region at the handshake. The
//! peer writes into it as into a ring: every write starts at a multiple of
//! [`ALIGN`] and never crosses the end of the inbox (a write that does not
//! fit skips to offset 0); [`place`] is that rule, run by the writer to
//! place and by the reader to check. The immediate says what a write is:
//!
//! ```text
//! imm = units << 2 | kind
//! kind 0 MSG:    units 0: a message starts: Header (16 B), then its first
//!                payload bytes
//!                units 1: a message to read (RTS): Header, then where the
//!                payload lies in the writer's memory: seq u32 | n u32 |
//!                n x (address u64 | length u64), 1 <= n <= 4
//!                units 2: write it yourself (PUSH): Header (total: the
//!                RTS's size), then the RTS's seq and where the receiver
//!                wants its payload, in the same layout, in the writer's
//!                (the receiver's) memory
//! kind 1 DATA:   the next payload bytes of the message in progress (units 0)
//! kind 2 CREDIT: no data; the writer's reader freed `units` * 64 bytes of
//!                the inbox it exposed
//! kind 3 CTRL:   no data; units 0 (READS), 4 (WRITES) or 2 (COPIES), each
//!                rank's first write on a link: the writer can read (read
//!                and write, or cannot read) this process's memory, so RTS
//!                may (may not) be sent to it, and PUSH too after WRITES;
//!                units odd (FIN): the writer read the RTS numbered
//!                units >> 1 (mod 2^29), its buffer is the sender's again;
//!                units & 7 == 6 (WROTE): the writer wrote the RTS numbered
//!                units >> 3 (mod 2^27) where our PUSH asked
//! Header: context u32 | tag u32 | total payload bytes u64 (little-endian)
//! ```
//!
//! Writes of one message are contiguous on an endpoint (the sender queues
//! per peer, in order). The reader frees inbox space in order and returns
//! it as CREDIT writes; a writer never has more than the inbox's size
//! outstanding, so writes never land on unread data.
//!
//! An RTS is the single-copy path for large messages between processes of
//! one host ([`rfx_fabric::cma`]): the receiver copies the payload straight
//! from the sender's buffer into its own when a receive claims it, then
//! sends FIN. Only a peer that sent READS (or WRITES) gets them.
//!
//! A receiver with work of its own to do meanwhile (a gather's root) may
//! instead answer an RTS from a peer that sent WRITES with PUSH: the
//! sender then copies the payload into the receiver's buffer itself and
//! answers WROTE, so both copy at once.

/// Bytes of a message header.
pub(crate) const HDR_LEN: usize = 16;
/// Alignment (and least cost) of a write in an inbox.
pub(crate) const ALIGN: u64 = 64;

/// What a write is (its immediate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message starts here.
    Msg,
    /// A message starts here whose payload the receiver reads from the
    /// writer's memory ([`PullDesc`]).
    Rts,
    /// More payload of the message in progress.
    Data,
    /// Freed inbox space, in bytes.
    Credit(u64),
    /// The writer can (`true`) or cannot read our memory: we may send it
    /// [`Kind::Rts`] or not. Each rank's first write on a link.
    Reads(bool),
    /// The writer finished reading the RTS with this number (mod 2^29).
    Fin(u32),
    /// The writer can read and write our memory: we may send it
    /// [`Kind::Rts`] and answer its RTS with [`Kind::Push`]. Its first
    /// write instead of [`Kind::Reads`].
    Writes,
    /// Write the payload of your RTS into my memory ([`PullDesc`]: its
    /// number and where).
    Push,
    /// The writer wrote the RTS with this number (mod 2^27) as our PUSH
    /// asked.
    Wrote(u32),
}

/// Bits of an RTS number carried by a FIN.
pub(crate) const SEQ_MASK: u32 = (1 << 29) - 1;

/// Bits of an RTS number carried by a WROTE.
pub(crate) const WROTE_MASK: u32 = (1 << 27) - 1;

/// Most address ranges of one RTS.
pub(crate) const PULL_SEGS: usize = 4;

/// Why an immediate or a write does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("reserved immediate bits set: {0:#x}")]
    Reserved(u32),
    #[error("write at offset {got}, expected {want}")]
    Misplaced { got: u64, want: u64 },
    #[error("write of {len} bytes does not fit the inbox of {size}")]
    TooLong { len: u64, size: u64 },
    #[error("short message header ({0} bytes)")]
    ShortHeader(usize),
}

/// The immediate of a write of `kind`.
pub(crate) fn imm(kind: Kind) -> u32 {
    match kind {
        Kind::Msg => 0,
        Kind::Rts => 1 << 2,
        Kind::Data => 1,
        Kind::Credit(bytes) => {
            let units = bytes / ALIGN;
            debug_assert!(units < 1 << 30 && bytes % ALIGN == 0);
            ((units as u32) << 2) | 2
        }
        Kind::Reads(true) => 3,
        Kind::Reads(false) => 2 << 2 | 3,
        Kind::Fin(seq) => ((seq & SEQ_MASK) << 3) | 1 << 2 | 3,
        Kind::Writes => 4 << 2 | 3,
        Kind::Push => 2 << 2,
        Kind::Wrote(seq) => ((seq & WROTE_MASK) << 5) | 6 << 2 | 3,
    }
}

/// Parses an immediate.
pub(crate) fn parse_imm(imm: u32) -> Result<Kind, WireError> {
    let units = imm >> 2;
    match (imm & 3, units) {
        (0, 0) => Ok(Kind::Msg),
        (0, 1) => Ok(Kind::Rts),
        (1, 0) => Ok(Kind::Data),
        (2, _) => Ok(Kind::Credit(u64::from(units) * ALIGN)),
        (3, 0) => Ok(Kind::Reads(true)),
        (3, 2) => Ok(Kind::Reads(false)),
        (3, 4) => Ok(Kind::Writes),
        (0, 2) => Ok(Kind::Push),
        (3, u) if u & 1 == 1 => Ok(Kind::Fin(u >> 1)),
        (3, u) if u & 7 == 6 => Ok(Kind::Wrote(u >> 3)),
        _ => Err(WireError::Reserved(imm)),
    }
}

/// Where an RTS's payload lies in the sender's memory: address ranges,
/// and for memory the sender lent through its provider (verbs), the
/// provider's key of each range ([`rfx_fabric::Endpoint::lend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PullDesc {
    /// Its number, echoed by the FIN.
    pub(crate) seq: u32,
    n: usize,
    segs: [(u64, u64); PULL_SEGS],
    /// The provider's key of each range, when lent.
    keys: Option<[u64; PULL_SEGS]>,
    /// The sender waits in the library until the request is read (a
    /// blocking send): its receiver may share the copy with it (a PUSH
    /// for the first part).
    waiting: bool,
}

/// Set in the range count of an RTS whose ranges carry keys.
const KEYED: u32 = 1 << 31;
/// In an RTS's range count: the sender waits for it ([`PullDesc::waiting`]).
const WAITING: u32 = 1 << 30;

/// Most bytes of an RTS's description.
pub(crate) const PULL_DESC_MAX: usize = 8 + 24 * PULL_SEGS;

impl PullDesc {
    /// The description of `parts` (empty ones left out); `None` if they
    /// are more than [`PULL_SEGS`] ranges.
    pub(crate) fn new(seq: u32, parts: &[&[u8]]) -> Option<PullDesc> {
        PullDesc::from_segs(
            seq,
            parts.iter().map(|p| (p.as_ptr() as u64, p.len() as u64)),
        )
    }

    /// The description of lent ranges: what each loan covers, and its key.
    pub(crate) fn lent(seq: u32, loans: &[rfx_fabric::LentBuffer]) -> Option<PullDesc> {
        let mut d = PullDesc::from_segs(seq, loans.iter().map(|l| (l.addr, l.len)))?;
        if d.n != loans.len() {
            return None;
        }
        let mut keys = [0u64; PULL_SEGS];
        for (k, l) in keys.iter_mut().zip(loans) {
            *k = l.key;
        }
        d.keys = Some(keys);
        Some(d)
    }

    /// The description of ranges `segs` (address, length; empty ones left
    /// out); `None` if they are more than [`PULL_SEGS`].
    pub(crate) fn from_segs(
        seq: u32,
        segs: impl IntoIterator<Item = (u64, u64)>,
    ) -> Option<PullDesc> {
        let mut d = PullDesc {
            seq,
            n: 0,
            segs: [(0, 0); PULL_SEGS],
            keys: None,
            waiting: false,
        };
        for s in segs.into_iter().filter(|s| s.1 > 0) {
            *d.segs.get_mut(d.n)? = s;
            d.n += 1;
        }
        Some(d)
    }

    /// The ranges (address, length) in the sender's memory.
    pub(crate) fn segs(&self) -> &[(u64, u64)] {
        &self.segs[..self.n]
    }

    /// The same request, saying whether its sender waits for it.
    pub(crate) fn with_waiting(mut self, waiting: bool) -> PullDesc {
        self.waiting = waiting;
        self
    }

    /// Whether the sender waits in the library until the request is read
    /// (a blocking send), serving a PUSH meanwhile.
    pub(crate) fn waiting(&self) -> bool {
        self.waiting
    }

    /// The provider's key of each range, if the sender lent them.
    pub(crate) fn keys(&self) -> Option<&[u64]> {
        self.keys.as_ref().map(|k| &k[..self.n])
    }

    fn per_seg(&self) -> usize {
        if self.keys.is_some() {
            24
        } else {
            16
        }
    }

    /// Bytes of the encoding.
    pub(crate) fn len(&self) -> usize {
        8 + self.per_seg() * self.n
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        let mut flag = if self.keys.is_some() { KEYED } else { 0 };
        if self.waiting {
            flag |= WAITING;
        }
        out.extend_from_slice(&(self.n as u32 | flag).to_le_bytes());
        for (k, (a, l)) in self.segs().iter().enumerate() {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
            if let Some(keys) = &self.keys {
                out.extend_from_slice(&keys[k].to_le_bytes());
            }
        }
    }

    /// Parses the description of a message of `total` bytes (untrusted).
    pub(crate) fn decode(b: &[u8], total: u64) -> Result<PullDesc, String> {
        let u32_at = |i: usize| {
            b.get(i..i + 4)
                .map(|x| u32::from_le_bytes(x.try_into().unwrap_or_default()))
        };
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .map(|x| u64::from_le_bytes(x.try_into().unwrap_or_default()))
        };
        let (Some(seq), Some(word)) = (u32_at(0), u32_at(4)) else {
            return Err("a short read request".into());
        };
        let keyed = word & KEYED != 0;
        let n = (word & !(KEYED | WAITING)) as usize;
        let per = if keyed { 24 } else { 16 };
        if n == 0 || n > PULL_SEGS || b.len() != 8 + per * n {
            return Err(format!("a read request of {n} ranges in {} bytes", b.len()));
        }
        let mut d = PullDesc {
            seq,
            n,
            segs: [(0, 0); PULL_SEGS],
            keys: keyed.then_some([0; PULL_SEGS]),
            waiting: word & WAITING != 0,
        };
        let mut sum = 0u64;
        for k in 0..n {
            let at = 8 + per * k;
            let (Some(a), Some(l)) = (u64_at(at), u64_at(at + 8)) else {
                return Err("a short read request".into());
            };
            if l == 0 || a.checked_add(l).is_none() {
                return Err(format!("a read request range of {l} bytes at {a:#x}"));
            }
            if let Some(keys) = &mut d.keys {
                keys[k] = u64_at(at + 16).ok_or("a short read request")?;
            }
            sum = sum.saturating_add(l);
            d.segs[k] = (a, l);
        }
        if sum != total || total == 0 {
            return Err(format!(
                "a read request of {sum} bytes for a message of {total}"
            ));
        }
        Ok(d)
    }
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ctx: u32,
    pub(crate) tag: u32,
    pub(crate) total: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..4].copy_from_slice(&self.ctx.to_le_bytes());
        b[4..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..16].copy_from_slice(&self.total.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; HDR_LEN]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[8..16]);
        Header {
            ctx: u32_at(0),
            tag: u32_at(4),
            total: u64::from_le_bytes(t),
        }
    }
}

/// The inbox size used for a region of `len` bytes: the largest power of
/// two that fits (both ends compute it from the region's length).
pub(crate) fn inbox_size(len: u64) -> u64 {
    if len == 0 {
        0
    } else {
        1 << (63 - len.leading_zeros())
    }
}

/// Inbox bytes a write of `len` bytes occupies (before any skip).
pub(crate) fn cost(len: usize) -> u64 {
    (len as u64).div_ceil(ALIGN).max(1) * ALIGN
}

/// Where a write of `len` bytes lands when the ring position is `pos` in
/// an inbox of `size` bytes (a power of two, at least [`ALIGN`]): `(offset, end)`,
/// the offset in the inbox and the ring position after the write (a skip
/// to offset 0 included). `None` if the write can never fit.
pub(crate) fn place(pos: u64, size: u64, len: usize) -> Option<(u64, u64)> {
    debug_assert!(size.is_power_of_two());
    let (start, end) = rfx_fabric::ring::place(pos, size, cost(len))?;
    Some((start & (size - 1), end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn immediates_roundtrip_and_garbage_is_refused() {
        for k in [
            Kind::Msg,
            Kind::Rts,
            Kind::Data,
            Kind::Credit(0),
            Kind::Credit(64 << 20),
            Kind::Reads(true),
            Kind::Reads(false),
            Kind::Fin(0),
            Kind::Fin(SEQ_MASK),
            Kind::Writes,
            Kind::Push,
            Kind::Wrote(0),
            Kind::Wrote(WROTE_MASK),
        ] {
            assert_eq!(parse_imm(imm(k)), Ok(k));
        }
        assert_eq!(imm(Kind::Fin(SEQ_MASK + 2)), imm(Kind::Fin(1)));
        assert_eq!(imm(Kind::Wrote(WROTE_MASK + 2)), imm(Kind::Wrote(1)));
        for bad in [12, 5, 1 << 30 | 1, 8 << 2 | 3, 10 << 2 | 3] {
            assert_eq!(parse_imm(bad), Err(WireError::Reserved(bad)), "{bad:#x}");
        }
    }

    #[test]
    fn read_requests_roundtrip_and_lies_are_refused() {
        let (a, b) = (vec![1u8; 100], vec![2u8; 28]);
        let d = PullDesc::new(7, &[&a, &[], &b]).unwrap();
        assert_eq!(d.segs().len(), 2);
        let mut enc = Vec::new();
        d.encode(&mut enc);
        assert_eq!(enc.len(), d.len());
        assert_eq!(PullDesc::decode(&enc, 128), Ok(d));
        assert!(PullDesc::decode(&enc, 129).is_err(), "total differs");
        assert!(PullDesc::decode(&enc[..enc.len() - 1], 128).is_err());
        assert!(PullDesc::new(0, &[&a, &a, &a, &a, &a]).is_none());
        let mut wrap = Vec::new();
        PullDesc {
            seq: 1,
            n: 1,
            segs: [(u64::MAX, 2), (0, 0), (0, 0), (0, 0)],
            keys: None,
            waiting: false,
        }
        .encode(&mut wrap);
        assert!(PullDesc::decode(&wrap, 2).is_err());
        // A blocking sender says it waits; the ranges are the same.
        let w = d.with_waiting(true);
        let mut enc = Vec::new();
        w.encode(&mut enc);
        let back = PullDesc::decode(&enc, 128).unwrap();
        assert!(back.waiting() && !d.waiting());
        assert_eq!(back.segs(), d.segs());
    }

    #[test]
    fn lent_read_requests_carry_their_keys() {
        let loans = [
            rfx_fabric::LentBuffer {
                addr: 0x1000,
                len: 100,
                key: 0xdead_beef,
            },
            rfx_fabric::LentBuffer {
                addr: 0x9000,
                len: 28,
                key: 7,
            },
        ];
        let d = PullDesc::lent(3, &loans).unwrap();
        let mut enc = Vec::new();
        d.encode(&mut enc);
        assert_eq!(enc.len(), d.len());
        assert_eq!(enc.len(), 8 + 24 * 2);
        let back = PullDesc::decode(&enc, 128).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.segs(), &[(0x1000, 100), (0x9000, 28)]);
        assert_eq!(back.keys(), Some(&[0xdead_beef, 7][..]));
        // Unkeyed requests have no keys; a keyed one cut short is refused.
        assert!(PullDesc::new(1, &[&[1u8; 4]]).unwrap().keys().is_none());
        assert!(PullDesc::decode(&enc[..enc.len() - 8], 128).is_err());
        // An empty loan cannot be described (each range names one).
        let empty = rfx_fabric::LentBuffer { len: 0, ..loans[0] };
        assert!(PullDesc::lent(0, &[empty, loans[1]]).is_none());
    }

    #[test]
    fn header_roundtrip() {
        let h = Header {
            ctx: 1 << 31 | 5,
            tag: 77,
            total: 1 << 40,
        };
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn placement_skips_to_the_start() {
        assert_eq!(place(0, 256, 10), Some((0, 64)));
        assert_eq!(place(64, 256, 65), Some((64, 192)));
        assert_eq!(place(192, 256, 65), Some((0, 256 + 128)));
        assert_eq!(place(0, 256, 0), Some((0, 64)));
        assert_eq!(place(0, 256, 257), None);
    }

    proptest! {
        #[test]
        fn writes_stay_inside_and_never_overlap_live_data(
            lens in proptest::collection::vec(0usize..300, 1..200),
        ) {
            let size = 1024u64;
            let mut pos = 0u64;
            for len in lens {
                let (off, end) = place(pos, size, len).unwrap();
                prop_assert!(off % ALIGN == 0 && off + len as u64 <= size);
                prop_assert_eq!((end - cost(len)) % size, off);
                prop_assert!(end - pos <= 2 * cost(len));
                pos = end;
            }
        }

        #[test]
        fn arbitrary_immediates_never_panic(i in any::<u32>()) {
            let _ = parse_imm(i);
        }

        #[test]
        fn arbitrary_read_requests_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..90),
            total in any::<u64>(),
        ) {
            let _ = PullDesc::decode(&b, total);
        }
    }
}
