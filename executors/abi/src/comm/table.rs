//! The communicator table as C sees it (`rfx_comm`): its version, result
//! codes, entry point types, element types and operations.

use std::ffi::c_void;

/// Version of the [`RfxComm`] table; entries are only ever appended.
pub const COMM_ABI_VERSION: u32 = 2;

/// `source` of a receive from any rank (`RFX_ANY_SOURCE`).
pub const ANY_SOURCE: u32 = u32::MAX;

/// Result codes of the table's entry points (`RFX_OK`, `RFX_E_*`).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// A bad argument: rank out of range, unknown type or operation,
    /// misaligned or too small buffer.
    pub const INVALID: i32 = -1;
    /// A peer instance is gone (its executor died or closed).
    pub const PEER_GONE: i32 = -2;
    /// The operation did not complete within the communicator's timeout.
    pub const TIMEOUT: i32 = -3;
    /// Any other failure (see the executor's log).
    pub const FAILED: i32 = -4;
    /// A received message was longer than the buffer.
    pub const TRUNCATED: i32 = -5;
}

/// `int32_t send(void *h, const void *buf, uint64_t len, uint32_t dest, uint32_t tag)`.
pub type SendFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, u32, u32) -> i32;
/// `int32_t recv(void *h, void *buf, uint64_t cap, uint32_t source, uint32_t tag, uint64_t *len)`.
pub type RecvFn = unsafe extern "C" fn(*mut c_void, *mut c_void, u64, u32, u32, *mut u64) -> i32;
/// `int32_t barrier(void *h)`.
pub type BarrierFn = unsafe extern "C" fn(*mut c_void) -> i32;
/// `int32_t bcast(void *h, void *buf, uint64_t len, uint32_t root)`.
pub type BcastFn = unsafe extern "C" fn(*mut c_void, *mut c_void, u64, u32) -> i32;
/// `int32_t reduce(void *h, const void *in, void *out, uint64_t count, uint32_t dtype, uint32_t op, uint32_t root)`.
pub type ReduceFn =
    unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void, u64, u32, u32, u32) -> i32;
/// `int32_t allreduce(void *h, const void *in, void *out, uint64_t count, uint32_t dtype, uint32_t op)`.
pub type AllreduceFn =
    unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void, u64, u32, u32) -> i32;
/// `int32_t allgather(void *h, const void *in, uint64_t len, void *out)`: `out` holds
/// `size * len` bytes, rank r's block at `r * len`.
pub type AllgatherFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, *mut c_void) -> i32;
/// `int32_t gather(void *h, const void *in, uint64_t len, void *out, uint32_t root)`: the
/// root's `out` holds `size * len` bytes, rank r's block at `r * len` (ignored elsewhere).
/// Version 2.
pub type GatherFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, *mut c_void, u32) -> i32;
/// `int32_t scatter(void *h, const void *in, uint64_t len, void *out, uint32_t root)`: the
/// root's `in` holds `size * len` bytes (ignored elsewhere), block r to rank r's `out`.
/// Version 2.
pub type ScatterFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, *mut c_void, u32) -> i32;
/// `int32_t alltoall(void *h, const void *in, uint64_t len, void *out)`: `in` and `out` hold
/// `size * len` bytes; block r of `in` goes to rank r, block r of `out` comes from rank r.
/// Version 2.
pub type AlltoallFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, *mut c_void) -> i32;

/// The communicator table, `rfx_comm` in C. Valid for the duration of the
/// call that received it.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct RfxComm {
    /// [`COMM_ABI_VERSION`].
    pub abi_version: u32,
    /// Rank of this instance.
    pub rank: u32,
    /// Number of instances.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// The executor's state, passed back to every entry point.
    pub handle: *mut c_void,
    /// Tagged send of bytes to `dest`.
    pub send: SendFn,
    /// Tagged receive of bytes from `source` (or [`ANY_SOURCE`]).
    pub recv: RecvFn,
    /// Barrier.
    pub barrier: BarrierFn,
    /// Broadcast of bytes from `root`.
    pub bcast: BcastFn,
    /// Reduction to `root` (`out` used on the root only).
    pub reduce: ReduceFn,
    /// Reduction to everyone.
    pub allreduce: AllreduceFn,
    /// Every rank's block to everyone.
    pub allgather: AllgatherFn,
    /// Every rank's block to the root (version 2).
    pub gather: GatherFn,
    /// The root's blocks, one to each rank (version 2).
    pub scatter: ScatterFn,
    /// Block r of every rank to rank r (version 2).
    pub alltoall: AlltoallFn,
}

/// Element types of the reductions (`RFX_U8` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Dtype {
    /// `uint8_t`
    U8 = 0,
    /// `int32_t`
    I32 = 1,
    /// `uint32_t`
    U32 = 2,
    /// `int64_t`
    I64 = 3,
    /// `uint64_t`
    U64 = 4,
    /// `float`
    F32 = 5,
    /// `double`
    F64 = 6,
}

impl Dtype {
    /// The type a C caller named, if known.
    pub fn from_u32(v: u32) -> Option<Dtype> {
        use Dtype::*;
        [U8, I32, U32, I64, U64, F32, F64]
            .into_iter()
            .find(|d| *d as u32 == v)
    }
}

/// Reduction operations (`RFX_SUM` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CommOp {
    /// Sum.
    Sum = 0,
    /// Product.
    Prod = 1,
    /// Minimum.
    Min = 2,
    /// Maximum.
    Max = 3,
    /// Bitwise and (integers).
    BitAnd = 4,
    /// Bitwise or (integers).
    BitOr = 5,
    /// Bitwise xor (integers).
    BitXor = 6,
}

impl CommOp {
    /// The operation a C caller named, if known.
    pub fn from_u32(v: u32) -> Option<CommOp> {
        use CommOp::*;
        [Sum, Prod, Min, Max, BitAnd, BitOr, BitXor]
            .into_iter()
            .find(|o| *o as u32 == v)
    }

    /// The operation of a Python name (`rfx.SUM` is `"sum"`, ... `"bxor"`),
    /// as the Python package and the Python host both read it.
    pub fn from_name(name: &str) -> Option<CommOp> {
        use CommOp::*;
        Some(match name {
            "sum" => Sum,
            "prod" => Prod,
            "min" => Min,
            "max" => Max,
            "band" => BitAnd,
            "bor" => BitOr,
            "bxor" => BitXor,
            _ => return None,
        })
    }
}

/// Element types a Rust function reduces through [`Comm`](super::Comm).
pub trait CommElement: Copy + sealed::Sealed {
    /// Its [`Dtype`].
    const DTYPE: Dtype;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! comm_element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl CommElement for $t {
            const DTYPE: Dtype = Dtype::$d;
        }
    )*};
}
comm_element!(u8 => U8, i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64);

#[cfg(test)]
mod tests {
    use super::CommOp;

    #[test]
    fn every_operation_has_one_python_name() {
        let names = ["sum", "prod", "min", "max", "band", "bor", "bxor"];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(CommOp::from_name(n), CommOp::from_u32(i as u32), "{n}");
        }
        assert_eq!(CommOp::from_name("SUM"), None);
        assert_eq!(CommOp::from_name(""), None);
    }
}
