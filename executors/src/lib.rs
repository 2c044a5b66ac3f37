//! rfx executors: the executor manager, the executor, and the **function ABI** — how tenant
//! functions are shipped, loaded and called.
//!
//! # The function ABI
//!
//! Functions are C-ABI symbols of a shared library. Two calling conventions exist; a library
//! may mix them.
//!
//! **rFaaS** (unchanged from spcl/rFaaS), for existing C/C++ functions:
//!
//! ```c
//! uint32_t name(void *in, uint32_t size, void *out);
//! ```
//!
//! **Extended**, which adds a context (layout in [`RfxContext`]; C header in
//! `examples/c/rfx.h`):
//!
//! ```c
//! typedef struct rfx_context {
//!     uint32_t abi_version;   /* 2 */
//!     uint32_t rank;          /* this instance in a group invocation; 0 otherwise */
//!     uint32_t size;          /* instances in the group; 1 otherwise */
//!     uint32_t out_capacity;  /* bytes the function may write to out */
//!     uint64_t invocation_id;
//!     const rfx_comm *comm;   /* group invocations: the communicator (see [comm]) */
//!     const rfx_device *device; /* v2, device functions: their buffers on the device */
//! } rfx_context;
//!
//! uint32_t name(const rfx_context *ctx, const void *in, uint32_t size, void *out);
//! const uint32_t rfx_abi_name = 2;    /* the marker: "name" uses the extended ABI, v2 */
//! ```
//!
//! **The marker convention**: a function `name` uses the extended ABI if and only if the
//! library also exports a data symbol `rfx_abi_name` ([`MARKER_PREFIX`]), a `uint32_t` holding
//! the extended-ABI version it was built for, 1 to [`ABI_VERSION`] (2; contexts only grow, so
//! a function built for 1 runs). Any other value is refused at resolution
//! ([`ExecError::BadAbiMarker`]), so an executor never calls a function with the wrong
//! signature. Without the marker, the function is an rFaaS one. (The marker is data, not
//! a naming scheme for the function itself, so rFaaS names keep working and a C author needs
//! one line.)
//!
//! **Both forms**: the function reads `size` bytes at `in` and must not write them; it writes
//! its output at `out` and returns the output length. The return value is not trusted: a
//! length above the output capacity is an error ([`CallError::OutputTooLarge`]), and the top
//! 256 values are status codes ([`status`]): `0xffff_ffff` ([`status::PANICKED`]) means a Rust
//! function panicked, `0xffff_fffe` ([`status::FAILED`]) that the function refused its input.
//! rFaaS functions are not told the capacity (as in rFaaS, the client and the function agree
//! on it); extended ones get it in `ctx->out_capacity`.
//!
//! **Device functions** (v2): a library that also exports `rfx_device_name`
//! (`RFX_DEVICE_FUNCTION(name)` in C) gets `name`'s input in device memory and returns its
//! output from there: `ctx->device` ([`RfxDevice`]) holds both addresses and the stream; see
//! [`device`] and `examples/c/gpu_functions.c` (SAXPY on a GPU).
//!
//! **Crashes**: a function that segfaults or aborts kills its executor process. That is by
//! design: each lease has its own executor process, which the executor manager reaps, and the
//! crash is reported to the client. Panics of Rust functions are caught (see [`export!`]).
//!
//! # Loading and calling
//!
//! [`Library::load_path`] opens a library on the host; [`Library::load_bytes`] takes the bytes a
//! client shipped with its allocation, puts them in a sealed memfd and opens
//! `/proc/self/fd/N`. Both check the ELF header first, so a file that is not a library, or one
//! for another architecture, gets a clear error. [`Library::function`] resolves a symbol once
//! and caches it; [`Function::call`] runs it with a [`CallContext`].
//!
//! ```no_run
//! use rfx_executors::{Abi, CallContext, Library};
//!
//! # fn main() -> Result<(), rfx_executors::ExecError> {
//! let bytes = std::fs::read("librfx_example_functions.so").expect("read");
//! let lib = Library::load_bytes("example functions", &bytes)?;
//! let rank_info = lib.function("rank_info")?;
//! assert_eq!(rank_info.abi(), Abi::Extended);
//! let mut out = [0u8; 8];
//! let n = rank_info.call(&CallContext::new(7).in_group(2, 4), &[], &mut out)?;
//! assert_eq!(n, 8);
//! # Ok(()) }
//! ```
//!
//! # Writing functions in Rust
//!
//! A `cdylib` crate depends on the small crate `rfx-abi` (the function's side of the ABI, which
//! this crate re-exports; it has no other dependency, so a function library builds in seconds
//! and ships small) and exports functions with [`export!`]:
//!
//! ```
//! rfx_executors::export! {
//!     fn sum_u8(input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
//!         let sum: u64 = input.iter().map(|&b| u64::from(b)).sum();
//!         out.get_mut(..8).ok_or("output buffer too small")?.copy_from_slice(&sum.to_le_bytes());
//!         Ok(8)
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! `examples/functions` (Rust) and `examples/c` (C) hold complete examples.
//!
//! # The rest of the crate
//!
//! - [`executor`]: the executor process's core: one worker thread per leased
//!   core, each serving one client connection (token checked in the fabric
//!   handshake), hot polling then warm after `hot_timeout`.
//! - [`client`]: the tenant's side: [`client::Invoker`] ships the library,
//!   invokes (blocking, pipelined with tickets, or in batches) and turns
//!   statuses into [`client::InvokeError`]s.
//! - [`session`]: the set-up messages between the two, free of I/O.
//! - [`manager`]: the executor manager: registers with the lease manager,
//!   starts one executor per lease, reaps and reports crashes, forwards
//!   usage, and answers lookups of executor addresses.
//! - [`python`]: functions written in Python: shipping a module, and the
//!   Python host (`librfx_pyhost.so`) that embeds CPython in the executor.
//! - [`sandbox`]: what confines a tenant's executor (namespaces, a uid per
//!   lease, cgroup limits, seccomp, Landlock) and how the manager hands it
//!   its token.
//!
//! # Environment
//!
//! `rfx executor` run by hand takes the lease token from `RFX_LEASE_TOKEN`
//! (never from the command line, which other users can read); executors
//! started by the manager get it on a descriptor (`--handoff-fd`), a
//! cleared environment, `RFX_LEASE_ID`, and `CUDA_VISIBLE_DEVICES` (or `ROCR_VISIBLE_DEVICES`) for
//! their lease's accelerators. `RFX_EXECUTOR_MAX_INPUT` bounds, in bytes,
//! an input the executor reads from its client (inputs larger than a slot:
//! see [`rfx_fabric::invocation`]; default 64 MiB, 0 refuses them).
//!
//! # Cargo features: one crate, three roles
//!
//! - always: the tenant's side ([`client`], [`group`], [`session`],
//!   [`lookup`]);
//! - `executor` (default): the executor, the function loader and the
//!   executor's side of the sandbox (libloading, seccompiler, landlock);
//! - `manager` (default, implies `executor`): the executor manager and the
//!   host's side of the sandbox (cgroups, uids, containers; tokio's
//!   processes).
//!
//! A tenant's program depends on `rfx-executors` with
//! `default-features = false` and links neither the executor nor the
//! manager, nor (through `rfx-leases` without `server`) the lease manager.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "executor")]
mod abi;
pub mod client;
#[cfg(feature = "executor")]
mod context;
#[cfg(feature = "executor")]
pub mod device;
#[cfg(feature = "executor")]
mod elf;
#[cfg(feature = "executor")]
mod error;
#[cfg(feature = "executor")]
pub mod executor;
pub mod group;
pub mod lookup;
#[cfg(feature = "manager")]
pub mod manager;
#[cfg(feature = "executor")]
pub mod mpi;
pub mod python;
#[cfg(feature = "executor")]
pub mod sandbox;
pub mod session;

#[cfg(feature = "executor")]
pub use abi::{Function, Library, MARKER_PREFIX, MAX_NAME_LEN};
#[cfg(feature = "executor")]
pub use context::{Abi, CallContext};
#[cfg(feature = "executor")]
pub use error::{CallError, ExecError};
/// The function ABI (crate `rfx-abi`), re-exported: what function libraries see.
pub use rfx_abi::{
    comm, export, status, Context, FunctionOutput, RfxContext, RfxDevice, ABI_VERSION,
};
