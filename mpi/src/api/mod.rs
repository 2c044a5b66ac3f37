//! The entry points, by chapter of the standard. Each is exported twice,
//! as `MPI_x` and as `PMPI_x` (the profiling interface: a tool's `MPI_x`
//! may wrap ours and call `PMPI_x`).

use std::ffi::c_int;

use crate::abi;
use crate::error::Failure;

mod coll;
mod comm;
mod env;
mod icoll;
mod info;
mod ordered;
mod p2p;
mod types;

/// Defines `PMPI_name` with the body and `MPI_name` calling it.
macro_rules! entry {
    ($(
        $(#[$doc:meta])*
        fn $name:ident / $pname:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty $body:block
    )*) => {$(
        $(#[$doc])*
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        extern "C" fn $pname($($arg: $ty),*) -> $ret $body

        $(#[$doc])*
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        extern "C" fn $name($($arg: $ty),*) -> $ret {
            $pname($($arg),*)
        }
    )*};
}
pub(crate) use entry;

/// A count argument.
pub(crate) fn count(n: c_int) -> Result<usize, Failure> {
    usize::try_from(n).map_err(|_| Failure::new(abi::MPI_ERR_COUNT, format!("count {n}")))
}

/// A tag to send with.
pub(crate) fn send_tag(tag: c_int) -> Result<u32, Failure> {
    u32::try_from(tag).map_err(|_| Failure::new(abi::MPI_ERR_TAG, format!("tag {tag}")))
}

/// A rank of a communicator of `size`.
pub(crate) fn rank(r: c_int, size: usize) -> Result<usize, Failure> {
    usize::try_from(r)
        .ok()
        .filter(|&r| r < size)
        .ok_or_else(|| Failure::new(abi::MPI_ERR_RANK, format!("rank {r} of {size}")))
}

/// A root of a communicator of `size`.
pub(crate) fn root(r: c_int, size: usize) -> Result<usize, Failure> {
    rank(r, size).map_err(|_| Failure::new(abi::MPI_ERR_ROOT, format!("root {r} of {size}")))
}

/// A `usize` as an `int` output.
pub(crate) fn int(n: usize) -> Result<c_int, Failure> {
    c_int::try_from(n).map_err(|_| {
        Failure::new(
            abi::MPI_ERR_VALUE_TOO_LARGE,
            format!("{n} does not fit an int"),
        )
    })
}

/// The code of a call that needs no state (and so no error handler).
pub(crate) fn status(r: Result<(), Failure>) -> c_int {
    match r {
        Ok(()) => abi::MPI_SUCCESS,
        Err(e) => crate::error::code(&e),
    }
}
