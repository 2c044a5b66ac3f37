//! rfx as an implementation of the MPI-5 standard ABI: `libmpi_abi.so.1`.
//!
//! A program compiled once against the standard `mpi.h` (e.g. with MPICH's
//! `mpicc_abi`) runs on rfx by loading this library instead of another
//! implementation's (`LD_LIBRARY_PATH`; `rfx run` sets it). `MPI_COMM_WORLD`
//! is an [`rfx_collectives::Communicator`] joined from the launcher's
//! environment (`rfx run`, `srun`, `mpirun`), or a singleton without one.
//!
//! Layout, one concern per module:
//! - [`abi`]: the standard's constants (handles, error classes, sentinels);
//! - `raw`: every conversion of a caller's pointer, the crate's only
//!   unsafe code besides calls of user functions;
//! - [`datatype`], [`op`], [`error`]: datatypes, reduction operations and
//!   error codes, free of I/O;
//! - `state`: the process's MPI state (communicators, requests, derived
//!   types, ops) behind one lock;
//! - `api/`: the entry points by chapter of the standard;
//! - `unsupported.txt`: every other function of the ABI, exported by
//!   `build.rs` as a stub that fails with `MPI_ERR_UNSUPPORTED_OPERATION`
//!   naming itself.
//!
//! Every entry point also exists as `PMPI_` (the profiling interface). See
//! `docs/mpi.md` for what is implemented and how to run programs.

pub mod abi;
mod api;
pub mod datatype;
pub mod error;
mod group;
pub mod op;
mod raw;
mod request;
mod state;

use std::ffi::c_int;

/// The entry point of a function rfx does not implement.
fn unsupported(name: &str) -> c_int {
    state::fail_world(error::Failure::new(
        abi::MPI_ERR_UNSUPPORTED_OPERATION,
        format!("{name} is not implemented by rfx's libmpi_abi.so.1"),
    ))
}

mod unsupported {
    use super::unsupported;
    use std::ffi::c_int;
    include!(concat!(env!("OUT_DIR"), "/unsupported.rs"));
}
