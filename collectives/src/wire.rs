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
//! kind 0 MSG:    a message starts: Header (16 B), then its first payload bytes
//! kind 1 DATA:   the next payload bytes of the message in progress
//! kind 2 CREDIT: no data; the writer's reader freed `units` * 64 bytes of
//!                the inbox it exposed (units = 0 for MSG and DATA)
//! Header: context u32 | tag u32 | total payload bytes u64 (little-endian)
//! ```
//!
//! Writes of one message are contiguous on an endpoint (the sender queues
//! per peer, in order). The reader frees inbox space in order and returns
//! it as CREDIT writes; a writer never has more than the inbox's size
//! outstanding, so writes never land on unread data.

/// Bytes of a message header.
pub(crate) const HDR_LEN: usize = 16;
/// Alignment (and least cost) of a write in an inbox.
pub(crate) const ALIGN: u64 = 64;

/// What a write is (the low two bits of its immediate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message starts here.
    Msg,
    /// More payload of the message in progress.
    Data,
    /// Freed inbox space, in bytes.
    Credit(u64),
}

/// Why an immediate or a write does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("unknown write kind {0}")]
    Kind(u32),
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
        Kind::Data => 1,
        Kind::Credit(bytes) => {
            let units = bytes / ALIGN;
            debug_assert!(units < 1 << 30 && bytes % ALIGN == 0);
            ((units as u32) << 2) | 2
        }
    }
}

/// Parses an immediate.
pub(crate) fn parse_imm(imm: u32) -> Result<Kind, WireError> {
    match imm & 3 {
        0 | 1 if imm >> 2 != 0 => Err(WireError::Reserved(imm)),
        0 => Ok(Kind::Msg),
        1 => Ok(Kind::Data),
        2 => Ok(Kind::Credit(u64::from(imm >> 2) * ALIGN)),
        k => Err(WireError::Kind(k)),
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
            Kind::Data,
            Kind::Credit(0),
            Kind::Credit(64 << 20),
        ] {
            assert_eq!(parse_imm(imm(k)), Ok(k));
        }
        assert_eq!(parse_imm(3), Err(WireError::Kind(3)));
        assert_eq!(parse_imm(4), Err(WireError::Reserved(4)));
        assert_eq!(parse_imm(5), Err(WireError::Reserved(5)));
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
    }
}
