//! Return values of functions: output lengths, and the reserved range of status codes.
//!
//! A function returns a `uint32_t`. Values up to the output capacity are output lengths.
//! The top 256 values, [`RESERVED_MIN`]`..=u32::MAX`, are status codes; no output buffer is
//! that large ([`MAX_OUTPUT_CAPACITY`]), so a code is never mistaken for a length. Any other
//! value above the capacity is an error too
//! (the executor reports it as an output too large).
//!
//! | code | name | meaning |
//! | --- | --- | --- |
//! | `0xffff_ffff` | [`PANICKED`] | a Rust function panicked; [`export!`](crate::export) caught it |
//! | `0xffff_fffe` | [`FAILED`] | the function refused its input (a Rust function returned `Err`) |
//! | `0xffff_fffd` | [`BAD_CONTEXT`] | the extended-ABI entry got a null or incompatible context |
//!
//! C functions may return [`FAILED`] to report an error.

/// A Rust function panicked; the panic was caught at the ABI boundary.
pub const PANICKED: u32 = u32::MAX;

/// The function refused its input or otherwise failed (a Rust function returned `Err`).
pub const FAILED: u32 = u32::MAX - 1;

/// The extended-ABI entry was called with a null context, a context of an unknown ABI
/// version, or a null buffer with a non-zero length.
pub const BAD_CONTEXT: u32 = u32::MAX - 2;

/// The first code of the reserved range (`0xffff_ff00`).
pub const RESERVED_MIN: u32 = u32::MAX - 255;

/// The largest output capacity handed to a function: a longer output buffer is offered only
/// up to this length. One less than a length that a Rust function saturates to, so that a
/// saturated length is always above the capacity.
pub const MAX_OUTPUT_CAPACITY: u32 = RESERVED_MIN - 2;

// A saturated length (`RESERVED_MIN - 1`) is above every capacity.
const _: () = assert!(RESERVED_MIN - 1 > MAX_OUTPUT_CAPACITY);

/// What a return value in the reserved range means, for messages.
pub fn describe(code: u32) -> &'static str {
    match code {
        PANICKED => "panicked",
        FAILED => "failed",
        BAD_CONTEXT => "bad context",
        c if c >= RESERVED_MIN => "reserved",
        _ => "output length",
    }
}

/// What a function exported with [`export!`](crate::export) may return: an output length, or
/// a `Result` of one (an `Err` becomes [`FAILED`]; its value does not cross the ABI).
pub trait FunctionOutput {
    /// The `uint32_t` the exported symbol returns.
    fn into_status(self) -> u32;
}

impl FunctionOutput for usize {
    /// The length itself, or `RESERVED_MIN - 1` (above every capacity) if it does not fit
    /// below the reserved range.
    fn into_status(self) -> u32 {
        match u32::try_from(self) {
            Ok(len) if len < RESERVED_MIN => len,
            _ => RESERVED_MIN - 1,
        }
    }
}

impl<E> FunctionOutput for Result<usize, E> {
    fn into_status(self) -> u32 {
        match self {
            Ok(len) => len.into_status(),
            Err(_) => FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_codes_do_not_overlap() {
        assert_eq!(0usize.into_status(), 0);
        assert_eq!(42usize.into_status(), 42);
        assert_eq!((RESERVED_MIN as usize).into_status(), RESERVED_MIN - 1);
        assert_eq!(usize::MAX.into_status(), RESERVED_MIN - 1);
        assert_eq!(Ok::<usize, ()>(7).into_status(), 7);
        assert_eq!(Err::<usize, &str>("no").into_status(), FAILED);
        assert_eq!(describe(PANICKED), "panicked");
        assert_eq!(describe(RESERVED_MIN), "reserved");
        assert_eq!(describe(3), "output length");
    }
}
