//! The invocation wire format, rFaaS-compatible in spirit and free of I/O.
//!
//! A client invokes a function by one [`crate::Endpoint::write_imm`] of
//! `header + payload` into a registered slot of the executor, with the
//! immediate `id << 16 | function`. The executor runs the function in place
//! and writes the output straight into the client's result buffer named in
//! the header, with the immediate `id << 16 | status`.
//!
//! ```
//! use rfx_fabric::invocation::{InvocationHeader, Status, pack_imm, unpack_imm};
//! let h = InvocationHeader { result_addr: 0x7f00_0000_1000, result_rkey: 42, result_capacity: 4096 };
//! assert_eq!(InvocationHeader::decode(&h.encode()), Ok(h));
//! assert_eq!(unpack_imm(pack_imm(7, 3)), (7, 3));
//! assert_eq!(Status::from_u16(Status::UnknownFunction as u16), Some(Status::UnknownFunction));
//! ```

use crate::wire::WireError;

/// Bytes of [`InvocationHeader`] on the wire.
pub const HEADER_LEN: usize = 16;

/// What precedes the payload in an executor's slot: where the result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationHeader {
    /// Address of the client's result buffer (its registered memory).
    pub result_addr: u64,
    /// Remote key of the client's result buffer.
    pub result_rkey: u32,
    /// Bytes the client can take at `result_addr`.
    pub result_capacity: u32,
}

impl InvocationHeader {
    /// The 16-byte little-endian encoding.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&self.result_addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.result_rkey.to_le_bytes());
        b[12..16].copy_from_slice(&self.result_capacity.to_le_bytes());
        b
    }

    /// Decodes the header at the start of `buf` (untrusted bytes).
    pub fn decode(buf: &[u8]) -> Result<InvocationHeader, WireError> {
        let b: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Short {
                need: HEADER_LEN,
                got: buf.len(),
            })?;
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[..8]);
        Ok(InvocationHeader {
            result_addr: u64::from_le_bytes(addr),
            result_rkey: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            result_capacity: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        })
    }
}

/// Packs an invocation id and a function index (or a status) into an
/// immediate, as rFaaS does.
pub fn pack_imm(id: u16, low: u16) -> u32 {
    (u32::from(id) << 16) | u32::from(low)
}

/// The inverse of [`pack_imm`].
pub fn unpack_imm(imm: u32) -> (u16, u16) {
    ((imm >> 16) as u16, imm as u16)
}

/// Outcome of an invocation, carried in the low half of the result's
/// immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// The function ran; the output is in the result buffer.
    Ok = 0,
    /// No function with that index is loaded.
    UnknownFunction = 1,
    /// The function reported a failure (a panic in a Rust function).
    FunctionFailed = 2,
    /// The function claimed more output than the result buffer holds.
    OutputTooLarge = 3,
    /// The invocation did not fit the slot or its header was malformed.
    BadRequest = 4,
}

impl Status {
    /// The status for a wire value, if known.
    pub fn from_u16(v: u16) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::UnknownFunction,
            2 => Status::FunctionFailed,
            3 => Status::OutputTooLarge,
            4 => Status::BadRequest,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_roundtrip(addr: u64, rkey: u32, cap: u32) {
            let h = InvocationHeader { result_addr: addr, result_rkey: rkey, result_capacity: cap };
            prop_assert_eq!(InvocationHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let r = InvocationHeader::decode(&bytes);
            prop_assert_eq!(r.is_ok(), bytes.len() >= HEADER_LEN);
        }

        #[test]
        fn imm_roundtrip(id: u16, low: u16) {
            prop_assert_eq!(unpack_imm(pack_imm(id, low)), (id, low));
        }

        #[test]
        fn status_roundtrip(v: u16) {
            if let Some(s) = Status::from_u16(v) {
                prop_assert_eq!(s as u16, v);
            }
        }
    }
}
