//! rfx-abi: the function ABI of rfx, for function authors.
//!
//! A function library (a `cdylib`) depends on this crate alone: it defines
//! what crosses the boundary between an rfx executor and a tenant's
//! function, and nothing of the executor itself, so function libraries
//! build in seconds and ship small.
//!
//! - [`export!`]: Rust functions with the extended C ABI
//!   (`uint32_t f(const rfx_context *ctx, const void *in, uint32_t size, void *out)`),
//!   panics caught at the boundary;
//! - [`Context`] ([`RfxContext`] in C): rank, group size, invocation id,
//!   output capacity, and for a group invocation the communicator;
//! - [`comm`]: the group's communicator table ([`comm::RfxComm`], `rfx_comm`
//!   in C) and its typed face [`comm::Comm`] (send, recv, barrier, bcast,
//!   reduce, allreduce, allgather);
//! - [`status`]: return values (output lengths and reserved status codes).
//!
//! The C header is `examples/c/rfx.h`; the executor side (loading libraries,
//! calling functions, serving the communicator table) is `rfx-executors`,
//! which re-exports this crate.
//!
//! ```
//! use rfx_abi::{comm::CommOp, Context};
//!
//! rfx_abi::export! {
//!     /// The sum of every group instance's input bytes.
//!     fn group_total(ctx: &Context, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
//!         let mine = input.iter().map(|&b| u64::from(b)).sum::<u64>();
//!         let mut total = [mine];
//!         if let Some(comm) = ctx.comm() {
//!             comm.allreduce(&[mine], &mut total, CommOp::Sum).map_err(|e| e.to_string())?;
//!         }
//!         out.get_mut(..8).ok_or("output too small")?.copy_from_slice(&total[0].to_le_bytes());
//!         Ok(8)
//!     }
//! }
//! # fn main() {}
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, unreachable_pub)]

pub mod comm;
mod context;
mod export;
mod ffi;
pub mod status;

pub use context::{Context, RfxContext, RfxDevice, ABI_VERSION, DEVICE_CUDA, DEVICE_HOST};
pub use status::FunctionOutput;

#[doc(hidden)]
pub use ffi::private as __private;
