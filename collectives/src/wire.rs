//! The message framing of the communicator over [`rfx_fabric::Endpoint::send`],
//! free of I/O. Every decoder takes untrusted bytes and returns an error,
//! never panics.
//!
//! A message is one `First` frame (header + the first fragment) followed
//! by `Cont` frames until `total` bytes have arrived. Frames of one
//! message are contiguous on an endpoint (the sender queues per peer, in
//! order). `Credit` returns flow-control credit to the sender.
//!
//! ```text
//! First:  kind=1 u8 | version u8 | 0 u16 | context u32 | tag u32 | total u64 | payload
//! Cont:   kind=2 u8 | version u8 | 0 u16 | payload
//! Credit: kind=3 u8 | version u8 | 0 u16 | bytes u64
//! ```

/// Version of this framing.
pub(crate) const VERSION: u8 = 1;
/// Header of a `First` frame.
pub(crate) const FIRST_LEN: usize = 20;
/// Header of a `Cont` frame.
pub(crate) const CONT_LEN: usize = 4;
/// Flow-control cost of a frame beyond its length (the transport's own
/// record header, rounded up).
pub(crate) const FRAME_OVERHEAD: usize = 128;

/// A decoded frame header; the payload starts at `payload_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    First {
        ctx: u32,
        tag: u32,
        total: u64,
        payload_at: usize,
    },
    Cont {
        payload_at: usize,
    },
    Credit {
        bytes: u64,
    },
}

/// Why a frame does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("short frame of {0} bytes")]
    Short(usize),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("framing version {0} (this side speaks {VERSION})")]
    Version(u8),
    #[error("reserved bits set")]
    Reserved,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn decode(b: &[u8]) -> Result<Frame, FrameError> {
    if b.len() < CONT_LEN {
        return Err(FrameError::Short(b.len()));
    }
    if b[1] != VERSION {
        return Err(FrameError::Version(b[1]));
    }
    if b[2] != 0 || b[3] != 0 {
        return Err(FrameError::Reserved);
    }
    match b[0] {
        1 => {
            if b.len() < FIRST_LEN {
                return Err(FrameError::Short(b.len()));
            }
            Ok(Frame::First {
                ctx: u32_at(b, 4),
                tag: u32_at(b, 8),
                total: u64_at(b, 12),
                payload_at: FIRST_LEN,
            })
        }
        2 => Ok(Frame::Cont {
            payload_at: CONT_LEN,
        }),
        3 => {
            if b.len() < 12 {
                return Err(FrameError::Short(b.len()));
            }
            Ok(Frame::Credit {
                bytes: u64_at(b, 4),
            })
        }
        k => Err(FrameError::Kind(k)),
    }
}

/// Appends a `First` header.
pub(crate) fn encode_first(out: &mut Vec<u8>, ctx: u32, tag: u32, total: u64) {
    out.extend_from_slice(&[1, VERSION, 0, 0]);
    out.extend_from_slice(&ctx.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
}

/// Appends a `Cont` header.
pub(crate) fn encode_cont(out: &mut Vec<u8>) {
    out.extend_from_slice(&[2, VERSION, 0, 0]);
}

/// A `Credit` frame.
pub(crate) fn encode_credit(bytes: u64) -> Vec<u8> {
    let mut out = vec![3, VERSION, 0, 0];
    out.extend_from_slice(&bytes.to_le_bytes());
    out
}

/// Cuts a message into frames of at most `fragment` payload bytes each.
pub(crate) fn frames(ctx: u32, tag: u32, data: &[u8], fragment: usize) -> Vec<Vec<u8>> {
    let fragment = fragment.max(1);
    let first_len = data.len().min(fragment);
    let mut first = Vec::with_capacity(FIRST_LEN + first_len);
    encode_first(&mut first, ctx, tag, data.len() as u64);
    first.extend_from_slice(&data[..first_len]);
    let mut out = vec![first];
    for chunk in data[first_len..].chunks(fragment) {
        let mut f = Vec::with_capacity(CONT_LEN + chunk.len());
        encode_cont(&mut f);
        f.extend_from_slice(chunk);
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let fs = frames(7, 9, &[5u8; 10], 4);
        assert_eq!(fs.len(), 3);
        assert_eq!(
            decode(&fs[0]).unwrap(),
            Frame::First {
                ctx: 7,
                tag: 9,
                total: 10,
                payload_at: FIRST_LEN
            }
        );
        assert_eq!(fs[0].len(), FIRST_LEN + 4);
        assert_eq!(decode(&fs[2]).unwrap(), Frame::Cont { payload_at: 4 });
        assert_eq!(fs[2].len(), CONT_LEN + 2);
        assert_eq!(
            decode(&encode_credit(77)).unwrap(),
            Frame::Credit { bytes: 77 }
        );
        let empty = frames(1, 2, &[], 4);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].len(), FIRST_LEN);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode(&[1, 1]), Err(FrameError::Short(2)));
        assert_eq!(decode(&[9, 1, 0, 0]), Err(FrameError::Kind(9)));
        assert_eq!(decode(&[1, 2, 0, 0]), Err(FrameError::Version(2)));
        assert_eq!(decode(&[2, 1, 1, 0]), Err(FrameError::Reserved));
        assert_eq!(decode(&[1, 1, 0, 0, 0]), Err(FrameError::Short(5)));
        assert_eq!(decode(&[3, 1, 0, 0, 0]), Err(FrameError::Short(5)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&b);
        }

        #[test]
        fn frames_reassemble(len in 0usize..5000, frag in 1usize..700) {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut got = Vec::new();
            for f in frames(3, 4, &data, frag) {
                match decode(&f).unwrap() {
                    Frame::First { payload_at, total, .. } => {
                        prop_assert_eq!(total as usize, len);
                        got.extend_from_slice(&f[payload_at..]);
                    }
                    Frame::Cont { payload_at } => got.extend_from_slice(&f[payload_at..]),
                    Frame::Credit { .. } => prop_assert!(false),
                }
            }
            prop_assert_eq!(got, data);
        }
    }
}
