//! rfx: a peer-to-peer function fabric for HPC.
//!
//! Tenants lease executor slots on hosts straight from a lease manager, then
//! invoke functions on those slots peer to peer, with no gateway in the data
//! path: RDMA, libfabric, shared memory on one host, or TCP. Functions that
//! run together get an MPI-like communicator.
//!
//! This facade re-exports the crates of the workspace:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`fabric`] | `rfx-fabric` | transports: tcp, shm, verbs and ofi (cargo features), memory regions, endpoints |
//! | [`leases`] | `rfx-leases` | the lease core (placement, renew, expiry, usage) |
//! | [`executors`] | `rfx-executors` | executors and the function ABI |
//! | [`collectives`] | `rfx-collectives` | the MPI-like communicator and its bootstrap |
//!
//! [`tenant`] puts the tenant's path in one place: lease, find the executor,
//! invoke, release. [`local`] runs a whole deployment on this host (lease
//! manager and executor managers as child processes), [`launch`] the ranks
//! of `rfx run`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use rfx_collectives as collectives;
pub use rfx_executors as executors;
pub use rfx_fabric as fabric;
pub use rfx_leases as leases;

pub mod launch;
pub mod local;
pub mod tenant;

/// The invocation client: connect to an executor, invoke, batch.
pub use rfx_executors::client;
/// Exports Rust functions with the rfx C ABI from a `cdylib`.
pub use rfx_executors::export;

/// The README's Rust examples, compiled as doctests (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
