//! rfx-collectives: the MPI-like communicator of rfx.
//!
//! Not implemented yet: this crate holds the place of the communicator
//! (send/recv, barrier, bcast, reduce, allreduce, ...) over
//! [`rfx_fabric`] endpoints, and the `rfx run` bootstrap. It exports
//! nothing until those work.
#![forbid(unsafe_code)]
