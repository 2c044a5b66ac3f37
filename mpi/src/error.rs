//! Error codes: a failure is an MPI error class and rfx's own message.
//! The code a program gets carries both: `MPI_Error_class` gives the
//! class, `MPI_Error_string` the message (a dead rank, a timeout, which
//! function is not implemented), kept for the last [`SLOTS`] failures.

use std::ffi::c_int;

use parking_lot::Mutex;
use rfx_collectives::CollError;
use rfx_fabric::error_chain;

use crate::abi;

/// A failed call: its class and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The MPI error class.
    pub class: c_int,
    /// What rfx knows of it.
    pub message: String,
}

impl Failure {
    /// A failure of `class`.
    pub fn new(class: c_int, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
        }
    }

    /// An invalid argument.
    pub fn arg(message: impl Into<String>) -> Failure {
        Failure::new(abi::MPI_ERR_ARG, message)
    }
}

impl From<CollError> for Failure {
    fn from(e: CollError) -> Failure {
        let class = match &e {
            CollError::PeerGone { .. } => abi::MPI_ERR_PROC_ABORTED,
            CollError::InvalidRank { .. } => abi::MPI_ERR_RANK,
            CollError::Truncated { .. } => abi::MPI_ERR_TRUNCATE,
            CollError::UnsupportedOp { .. } => abi::MPI_ERR_OP,
            CollError::InvalidArgument(_) => abi::MPI_ERR_ARG,
            _ => abi::MPI_ERR_OTHER,
        };
        Failure::new(class, error_chain(&e))
    }
}

/// Failures remembered for `MPI_Error_string`.
pub const SLOTS: usize = 256;

/// Codes above this carry a slot: `BASE | slot << 6 | class`.
const BASE: c_int = 0x10000;

struct Book {
    next: usize,
    slots: Vec<Option<(c_int, String)>>,
}

static BOOK: Mutex<Book> = Mutex::new(Book {
    next: 0,
    slots: Vec::new(),
});

/// The code to return for `f`: its class, with the message kept.
pub fn code(f: &Failure) -> c_int {
    if f.class == abi::MPI_SUCCESS {
        return abi::MPI_SUCCESS;
    }
    let mut b = BOOK.lock();
    if b.slots.is_empty() {
        b.slots = vec![None; SLOTS];
    }
    let slot = b.next % SLOTS;
    b.next = b.next.wrapping_add(1);
    let code = BASE | (slot as c_int) << 6 | (f.class & 63);
    b.slots[slot] = Some((code, f.message.clone()));
    code
}

/// The class of `code`; `None` if it is no code of ours.
pub fn class_of(code: c_int) -> Option<c_int> {
    if (0..=abi::MPI_ERR_ABI).contains(&code) {
        return Some(code);
    }
    (code >= BASE && code < BASE + ((SLOTS as c_int) << 6)).then_some(code & 63)
}

/// `MPI_Error_string`'s text for `code`.
pub fn string_of(code: c_int) -> Option<String> {
    let class = class_of(code)?;
    let base = class_text(class).to_string();
    if code < BASE {
        return Some(base);
    }
    let slot = ((code - BASE) >> 6) as usize;
    let b = BOOK.lock();
    match b.slots.get(slot) {
        Some(Some((c, msg))) if *c == code => Some(format!("{base}: {msg}")),
        _ => Some(base),
    }
}

/// The standard's meaning of an error class.
pub fn class_text(class: c_int) -> &'static str {
    match class {
        abi::MPI_SUCCESS => "no error",
        abi::MPI_ERR_BUFFER => "invalid buffer pointer",
        abi::MPI_ERR_COUNT => "invalid count argument",
        abi::MPI_ERR_TYPE => "invalid datatype argument",
        abi::MPI_ERR_TAG => "invalid tag argument",
        abi::MPI_ERR_COMM => "invalid communicator",
        abi::MPI_ERR_RANK => "invalid rank",
        abi::MPI_ERR_REQUEST => "invalid request (handle)",
        abi::MPI_ERR_ROOT => "invalid root",
        abi::MPI_ERR_GROUP => "invalid group",
        abi::MPI_ERR_OP => "invalid operation",
        abi::MPI_ERR_ARG => "invalid argument of some other kind",
        abi::MPI_ERR_UNKNOWN => "unknown error",
        abi::MPI_ERR_TRUNCATE => "message truncated on receive",
        abi::MPI_ERR_OTHER => "known error not in this list",
        abi::MPI_ERR_INTERN => "internal MPI (implementation) error",
        abi::MPI_ERR_IN_STATUS => "error code is in status",
        abi::MPI_ERR_INFO_KEY => "key longer than MPI_MAX_INFO_KEY",
        abi::MPI_ERR_INFO_NOKEY => "invalid key passed to MPI_INFO_DELETE",
        abi::MPI_ERR_INFO_VALUE => "value longer than MPI_MAX_INFO_VAL",
        abi::MPI_ERR_INFO => "invalid info argument",
        abi::MPI_ERR_NO_MEM => "MPI_ALLOC_MEM failed because memory is exhausted",
        abi::MPI_ERR_UNSUPPORTED_OPERATION => "unsupported operation",
        abi::MPI_ERR_PROC_ABORTED => "operation failed because a peer process has aborted",
        abi::MPI_ERR_VALUE_TOO_LARGE => "value is too large to store",
        abi::MPI_ERR_ERRHANDLER => "invalid errhandler",
        abi::MPI_ERR_ABI => "the MPI ABI does not match",
        _ => "MPI error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_class_and_message() {
        let c = code(&Failure::new(abi::MPI_ERR_RANK, "rank 9 of 4"));
        assert_ne!(c, abi::MPI_ERR_RANK);
        assert_eq!(class_of(c), Some(abi::MPI_ERR_RANK));
        let s = string_of(c).expect("ours");
        assert!(
            s.contains("invalid rank") && s.contains("rank 9 of 4"),
            "{s}"
        );
        assert_eq!(class_of(abi::MPI_ERR_TRUNCATE), Some(abi::MPI_ERR_TRUNCATE));
        assert_eq!(class_of(-5), None);
        assert_eq!(class_of(0x7fff_0000), None);
        assert_eq!(code(&Failure::new(abi::MPI_SUCCESS, "")), abi::MPI_SUCCESS);
    }

    #[test]
    fn dead_ranks_and_timeouts_map_to_classes() {
        let f: Failure = CollError::PeerGone {
            rank: 1,
            reason: "closed".into(),
        }
        .into();
        assert_eq!(f.class, abi::MPI_ERR_PROC_ABORTED);
        let f: Failure = CollError::Truncated { got: 9, cap: 4 }.into();
        assert_eq!(f.class, abi::MPI_ERR_TRUNCATE);
    }
}
