//! The invocation wire format, rFaaS-compatible in spirit and free of I/O.
//!
//! # Set-up fixes where results go
//!
//! At connect the client exposes its result region, and its set-up names
//! the result geometry: the result buffer of slot `k` is the client's first
//! exposed buffer at `k * stride`, `stride` bytes long. The executor checks
//! that geometry once, at set-up, and from then on knows where every
//! invocation's result goes. So an invocation carries nothing but its input:
//! unlike rFaaS, which sends a 12-byte header (result address, rkey and
//! capacity) with every invocation, a 4 KiB input is one 4096-byte write.
//!
//! # Inline inputs
//!
//! A client invokes a function by one [`crate::Endpoint::write_imm`] of the
//! bare input at the start of a registered slot of the executor, with the
//! immediate `id << 16 | function`. The executor learns the slot from the
//! completion's offset (`offset / slot_size`, which must be exact) and the
//! input's length from the completion's length (0 is an empty input). It
//! runs the function on the slot in place and writes the output straight
//! into that slot's result buffer, with the immediate `id << 16 | status`.
//!
//! # Remote inputs (larger than a slot)
//!
//! An input larger than the slot does not travel in the write: the client
//! copies it into a registered input region it exposed at connect, and
//! writes only an [`InputDescriptor`] (address, rkey and length of the
//! input in that region, [`DESCRIPTOR_LEN`] bytes) into the slot instead,
//! with [`REMOTE_INPUT`] set in the low half of the immediate. The executor
//! fetches the input with a one-sided [`crate::Endpoint::read`] (RDMA READ
//! on verbs, as rFaaS designs it), runs the function on it and answers as
//! for an inline input. The client keeps the region untouched until that
//! invocation's result has arrived.
//!
//! The flag takes the top bit of the function half of the immediate, so a
//! session names at most [`MAX_FUNCTIONS`] functions (indices `0..=0x7fff`);
//! [`FunctionField`] packs and unpacks that half.
//!
//! An executor refuses a remote input longer than its own bound with
//! [`Status::InputTooLarge`], and then writes the bound as a little-endian
//! `u64` ([`encode_limit`]) as the result's bytes when the result buffer
//! holds 8 bytes. An input it could not read (refused access, timeout) is
//! [`Status::InputUnreadable`]. Either way the connection goes on.
//!
//! ```
//! use rfx_fabric::invocation::{
//!     pack_imm, unpack_imm, FunctionField, Input, InputDescriptor, Status,
//! };
//! assert_eq!(unpack_imm(pack_imm(7, 3)), (7, 3));
//! assert_eq!(Status::from_u16(Status::UnknownFunction as u16), Some(Status::UnknownFunction));
//!
//! // An inline input: the write is the input, nothing else.
//! let input = [0xabu8; 4096];
//! assert_eq!(Input::decode(false, input.len(), &input), Ok(Input::Inline { len: 4096 }));
//! assert_eq!(Input::decode(false, 0, &[]), Ok(Input::Inline { len: 0 }));
//!
//! // A remote input: the slot holds the descriptor, the immediate the flag.
//! let d = InputDescriptor { addr: 0x7f00_0010_0000, rkey: 9, len: 8 << 20 };
//! let field = FunctionField { index: 3, remote_input: true };
//! let imm = pack_imm(7, field.encode().expect("index below 0x8000"));
//! let slot = d.encode();
//! let (id, low) = unpack_imm(imm);
//! let got = FunctionField::decode(low);
//! assert_eq!((id, got), (7, field));
//! assert_eq!(Input::decode(got.remote_input, slot.len(), &slot), Ok(Input::Remote(d)));
//! assert_eq!(FunctionField { index: 0x8000, remote_input: false }.encode(), None);
//! ```

use crate::wire::WireError;

/// Packs an invocation id and a function index (or a status) into an
/// immediate, as rFaaS does.
pub fn pack_imm(id: u16, low: u16) -> u32 {
    (u32::from(id) << 16) | u32::from(low)
}

/// The inverse of [`pack_imm`].
pub fn unpack_imm(imm: u32) -> (u16, u16) {
    ((imm >> 16) as u16, imm as u16)
}

/// The flag in the low half of an invocation's immediate that marks a
/// remote input: the slot holds an [`InputDescriptor`], not the input.
pub const REMOTE_INPUT: u16 = 0x8000;

/// Functions a session may name: indices `0..MAX_FUNCTIONS` fit beside the
/// [`REMOTE_INPUT`] flag.
pub const MAX_FUNCTIONS: usize = REMOTE_INPUT as usize;

/// Bytes of [`InputDescriptor`] on the wire.
pub const DESCRIPTOR_LEN: usize = 16;

/// Bytes of the bound an executor reports with [`Status::InputTooLarge`].
pub const LIMIT_LEN: usize = 8;

/// The low half of an invocation's immediate: which function, and whether
/// its input is remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionField {
    /// Index of the function in the session's list (below [`MAX_FUNCTIONS`]).
    pub index: u16,
    /// The input lies in the client's input region ([`InputDescriptor`]).
    pub remote_input: bool,
}

impl FunctionField {
    /// The wire value; `None` when the index does not fit beside the flag.
    pub fn encode(self) -> Option<u16> {
        if usize::from(self.index) >= MAX_FUNCTIONS {
            return None;
        }
        Some(if self.remote_input {
            self.index | REMOTE_INPUT
        } else {
            self.index
        })
    }

    /// The inverse of [`FunctionField::encode`]; every value decodes.
    pub fn decode(low: u16) -> FunctionField {
        FunctionField {
            index: low & !REMOTE_INPUT,
            remote_input: low & REMOTE_INPUT != 0,
        }
    }
}

/// Where a remote input lies: a range of the client's exposed input
/// region, which the executor reads with [`crate::Endpoint::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDescriptor {
    /// Address of the input (in the client's address space).
    pub addr: u64,
    /// Remote key of the client's input region.
    pub rkey: u32,
    /// Length of the input.
    pub len: u32,
}

impl InputDescriptor {
    /// The 16-byte little-endian encoding.
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes the descriptor at the start of `buf` (untrusted bytes).
    pub fn decode(buf: &[u8]) -> Result<InputDescriptor, WireError> {
        let b: &[u8; DESCRIPTOR_LEN] = buf
            .get(..DESCRIPTOR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Short {
                need: DESCRIPTOR_LEN,
                got: buf.len(),
            })?;
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[..8]);
        Ok(InputDescriptor {
            addr: u64::from_le_bytes(addr),
            rkey: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            len: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        })
    }
}

/// Where an invocation's input is, as the executor learns it from the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// In the slot, from its start: `len` bytes (0 for an empty input).
    Inline {
        /// Length of the input.
        len: usize,
    },
    /// In the client's input region.
    Remote(InputDescriptor),
}

impl Input {
    /// Decodes the input of an invocation whose write put `written` bytes
    /// at the start of the slot, `remote_input` as its [`FunctionField`]
    /// says; `slot` holds the slot's first bytes (at least the descriptor
    /// for a remote input; unused for an inline one). An inline input is
    /// the whole write; a remote one must come as exactly
    /// [`DESCRIPTOR_LEN`] bytes.
    pub fn decode(remote_input: bool, written: usize, slot: &[u8]) -> Result<Input, WireError> {
        if !remote_input {
            return Ok(Input::Inline { len: written });
        }
        if written != DESCRIPTOR_LEN {
            return Err(WireError::Invalid(
                "a remote input is announced by exactly a descriptor",
            ));
        }
        InputDescriptor::decode(slot).map(Input::Remote)
    }
}

/// The result bytes that go with [`Status::InputTooLarge`]: the executor's
/// bound on inputs.
pub fn encode_limit(max: u64) -> [u8; LIMIT_LEN] {
    max.to_le_bytes()
}

/// The inverse of [`encode_limit`]; `None` unless `bytes` is exactly
/// [`LIMIT_LEN`] long (the result buffer may have been too small for it).
pub fn decode_limit(bytes: &[u8]) -> Option<u64> {
    let b: [u8; LIMIT_LEN] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(b))
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
    /// The invocation did not fit the slot or its descriptor was malformed.
    BadRequest = 4,
    /// The remote input is longer than this executor accepts; the result's
    /// bytes are its bound ([`encode_limit`]) if the buffer holds them.
    InputTooLarge = 5,
    /// The executor could not read the remote input (access refused, or no
    /// answer within its op timeout).
    InputUnreadable = 6,
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
            5 => Status::InputTooLarge,
            6 => Status::InputUnreadable,
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
        fn imm_roundtrip(id: u16, low: u16) {
            prop_assert_eq!(unpack_imm(pack_imm(id, low)), (id, low));
        }

        #[test]
        fn descriptor_roundtrip(addr: u64, rkey: u32, len: u32) {
            let d = InputDescriptor { addr, rkey, len };
            prop_assert_eq!(InputDescriptor::decode(&d.encode()), Ok(d));
        }

        #[test]
        fn descriptor_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let r = InputDescriptor::decode(&bytes);
            prop_assert_eq!(r.is_ok(), bytes.len() >= DESCRIPTOR_LEN);
        }

        #[test]
        fn function_field_roundtrip(index in 0u16..0x8000, remote_input: bool) {
            let f = FunctionField { index, remote_input };
            let low = f.encode().expect("index fits");
            prop_assert_eq!(FunctionField::decode(low), f);
            prop_assert_eq!(low & REMOTE_INPUT != 0, remote_input);
            let (id, back) = unpack_imm(pack_imm(index, low));
            prop_assert_eq!((id, FunctionField::decode(back)), (index, f));
        }

        #[test]
        fn function_field_refuses_flag_bit(index in 0x8000u16.., remote_input: bool) {
            prop_assert_eq!(FunctionField { index, remote_input }.encode(), None);
        }

        #[test]
        fn any_low_half_decodes_and_reencodes(low: u16) {
            prop_assert_eq!(FunctionField::decode(low).encode(), Some(low));
        }

        #[test]
        fn input_decoder_never_panics(
            remote_input: bool,
            written in 0usize..100,
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            match Input::decode(remote_input, written, &bytes) {
                Ok(Input::Inline { len }) => {
                    prop_assert!(!remote_input);
                    prop_assert_eq!(len, written);
                }
                Ok(Input::Remote(d)) => {
                    prop_assert!(remote_input);
                    prop_assert_eq!(written, DESCRIPTOR_LEN);
                    let enc = d.encode();
                    prop_assert_eq!(enc.as_slice(), &bytes[..DESCRIPTOR_LEN]);
                }
                Err(_) => prop_assert!(
                    remote_input && (written != DESCRIPTOR_LEN || bytes.len() < DESCRIPTOR_LEN)
                ),
            }
        }

        #[test]
        fn limit_roundtrip(max: u64) {
            prop_assert_eq!(decode_limit(&encode_limit(max)), Some(max));
        }

        #[test]
        fn status_roundtrip(v: u16) {
            if let Some(s) = Status::from_u16(v) {
                prop_assert_eq!(s as u16, v);
            }
        }
    }

    #[test]
    fn input_cases() {
        let d = InputDescriptor {
            addr: 0x1000,
            rkey: 5,
            len: 1 << 20,
        };
        // An inline input is the whole write, however short.
        assert_eq!(Input::decode(false, 4, &[]), Ok(Input::Inline { len: 4 }));
        assert_eq!(Input::decode(false, 0, &[]), Ok(Input::Inline { len: 0 }));
        assert_eq!(
            Input::decode(false, 4096, &[]),
            Ok(Input::Inline { len: 4096 })
        );
        // A descriptor-sized inline input stays inline: the flag decides.
        assert_eq!(
            Input::decode(false, DESCRIPTOR_LEN, &d.encode()),
            Ok(Input::Inline {
                len: DESCRIPTOR_LEN
            })
        );
        assert_eq!(
            Input::decode(true, DESCRIPTOR_LEN, &d.encode()),
            Ok(Input::Remote(d))
        );
        // A descriptor with trailing bytes, or a short one, is refused.
        assert!(Input::decode(true, DESCRIPTOR_LEN + 1, &d.encode()).is_err());
        assert!(Input::decode(true, DESCRIPTOR_LEN - 1, &d.encode()).is_err());
        assert!(Input::decode(true, DESCRIPTOR_LEN, &d.encode()[..8]).is_err());
        assert!(Input::decode(true, 0, &[]).is_err());
    }

    #[test]
    fn statuses_are_distinct_and_known() {
        for v in 0..=6u16 {
            assert_eq!(Status::from_u16(v).map(|s| s as u16), Some(v));
        }
        assert_eq!(Status::from_u16(7), None);
        assert_eq!(decode_limit(&[0; 7]), None);
        assert_eq!(MAX_FUNCTIONS, 0x8000);
    }
}
