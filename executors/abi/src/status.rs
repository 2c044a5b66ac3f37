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
/// a `Result` of one (an `Err` becomes [`FAILED`], its text the reason the client gets:
/// written NUL-terminated into the output buffer, see [`write_reason`]).
pub trait FunctionOutput {
    /// The `uint32_t` the exported symbol returns; `out` is the function's output buffer
    /// (for a failure's reason).
    fn into_status(self, out: &mut [u8]) -> u32;
}

/// Longest reason a failing function reports, in bytes.
pub const REASON_MAX: usize = 1024;

/// Writes `reason` into `out`, NUL-terminated, cut at a character boundary to fit (and to
/// [`REASON_MAX`]): how a function says why it returns [`FAILED`] (or, for the executor,
/// why it panicked).
pub fn write_reason(out: &mut [u8], reason: &str) {
    let room = out.len().min(REASON_MAX).saturating_sub(1);
    let mut n = reason.len().min(room);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    if let Some(dst) = out.get_mut(..n) {
        dst.copy_from_slice(&reason.as_bytes()[..n]);
    }
    if let Some(nul) = out.get_mut(n) {
        *nul = 0;
    }
}

impl FunctionOutput for usize {
    /// The length itself, or `RESERVED_MIN - 1` (above every capacity) if it does not fit
    /// below the reserved range.
    fn into_status(self, _out: &mut [u8]) -> u32 {
        match u32::try_from(self) {
            Ok(len) if len < RESERVED_MIN => len,
            _ => RESERVED_MIN - 1,
        }
    }
}

/// The reason a failing function wrote at the start of `output` (up to a
/// NUL, at most [`REASON_MAX`] bytes), as printable text: control
/// characters become spaces (no forged log lines), invalid UTF-8 the
/// replacement character.
pub fn read_reason(output: &[u8]) -> String {
    let head = &output[..output.len().min(REASON_MAX)];
    let end = head.iter().position(|&b| b == 0).unwrap_or(head.len());
    String::from_utf8_lossy(&head[..end])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl<E: std::fmt::Display> FunctionOutput for Result<usize, E> {
    fn into_status(self, out: &mut [u8]) -> u32 {
        match self {
            Ok(len) => len.into_status(out),
            Err(e) => {
                write_reason(out, &e.to_string());
                FAILED
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_codes_do_not_overlap() {
        assert_eq!(0usize.into_status(&mut []), 0);
        assert_eq!(42usize.into_status(&mut []), 42);
        assert_eq!(
            (RESERVED_MIN as usize).into_status(&mut []),
            RESERVED_MIN - 1
        );
        assert_eq!(usize::MAX.into_status(&mut []), RESERVED_MIN - 1);
        assert_eq!(Ok::<usize, &str>(7).into_status(&mut []), 7);
        assert_eq!(Err::<usize, &str>("no").into_status(&mut []), FAILED);
        let mut out = [0xaau8; 8];
        assert_eq!(Err::<usize, &str>("why").into_status(&mut out), FAILED);
        assert_eq!(&out[..4], b"why\0");
        // Cut to fit, at a character boundary, always terminated.
        let mut small = [0xaau8; 4];
        write_reason(&mut small, "héllo");
        assert_eq!(&small, "hé\0".as_bytes());
        let mut smaller = [0xaau8; 3];
        write_reason(&mut smaller, "héllo");
        assert_eq!(&smaller[..2], b"h\0");
        write_reason(&mut [], "nowhere");
        assert_eq!(read_reason(b"two\nlines\0stale"), "two lines");
        assert_eq!(read_reason(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(read_reason(&[b'a'; 5000]).len(), REASON_MAX);
        assert_eq!(describe(PANICKED), "panicked");
        assert_eq!(describe(RESERVED_MIN), "reserved");
        assert_eq!(describe(3), "output length");
    }
}
