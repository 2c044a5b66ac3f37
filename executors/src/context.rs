//! The invocation context: [`RfxContext`] as it crosses the extended ABI, [`Context`] as a Rust
//! function sees it, and [`CallContext`] as the executor fills it.

use std::fmt;

/// The version of the extended ABI this crate implements: the value of
/// [`RfxContext::abi_version`] and of the `rfx_abi_<name>` markers.
pub const ABI_VERSION: u32 = 1;

/// Which calling convention a function uses (see the [crate docs](crate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Abi {
    /// rFaaS: `uint32_t f(void *in, uint32_t size, void *out)`.
    Rfaas,
    /// rfx extended:
    /// `uint32_t f(const rfx_context *ctx, const void *in, uint32_t size, void *out)`.
    Extended,
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Abi::Rfaas => "rfaas",
            Abi::Extended => "extended",
        })
    }
}

/// The context passed to extended-ABI functions, `rfx_context` in C (`examples/c/rfx.h`).
///
/// Layout (64-bit): 32 bytes, fields at offsets 0, 4, 8, 12, 16, 24. New fields are only ever
/// appended, with a new [`ABI_VERSION`].
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct RfxContext {
    /// [`ABI_VERSION`] of the executor.
    pub abi_version: u32,
    /// Rank of this instance in a group invocation (0 for a single invocation).
    pub rank: u32,
    /// Number of instances of the group invocation (1 for a single invocation).
    pub size: u32,
    /// Length of the output buffer; a function must not write past it nor return more.
    pub out_capacity: u32,
    /// Id of the invocation, unique per connection while it is in flight.
    pub invocation_id: u64,
    /// The communicator of a group invocation ([`crate::comm::RfxComm`]); null for a single
    /// invocation.
    pub comm: *const crate::comm::RfxComm,
}

/// What a Rust function exported with the extended form of [`export!`](crate::export) learns
/// about its invocation.
///
/// ```
/// use rfx_executors::Context;
///
/// // Unit-test a function body without an executor.
/// let ctx = Context::new(2, 4, 7, 64);
/// assert_eq!((ctx.rank(), ctx.size(), ctx.invocation_id(), ctx.out_capacity()), (2, 4, 7, 64));
/// ```
///
/// A `Context` lives for one call (it is neither `Clone` nor `Copy`): its
/// communicator is only valid then.
#[derive(Debug)]
pub struct Context {
    raw: RfxContext,
}

impl Context {
    /// A context for rank `rank` of `size`, invocation `invocation_id`, with an output buffer
    /// of `out_capacity` bytes (for testing function bodies).
    pub fn new(rank: u32, size: u32, invocation_id: u64, out_capacity: u32) -> Context {
        Context {
            raw: RfxContext {
                abi_version: ABI_VERSION,
                rank,
                size,
                out_capacity,
                invocation_id,
                comm: std::ptr::null(),
            },
        }
    }

    pub(crate) fn from_raw(raw: RfxContext) -> Context {
        Context { raw }
    }

    /// Rank of this instance in its group (0 for a single invocation).
    pub fn rank(&self) -> u32 {
        self.raw.rank
    }

    /// Number of instances in the group (1 for a single invocation).
    pub fn size(&self) -> u32 {
        self.raw.size
    }

    /// Id of the invocation.
    pub fn invocation_id(&self) -> u64 {
        self.raw.invocation_id
    }

    /// Length of the output buffer, the same as `out.len()`.
    pub fn out_capacity(&self) -> usize {
        self.raw.out_capacity as usize
    }

    /// The executor's [`ABI_VERSION`].
    pub fn abi_version(&self) -> u32 {
        self.raw.abi_version
    }

    /// The communicator to the other instances of a group invocation; `None`
    /// for a single invocation.
    pub fn comm(&self) -> Option<crate::comm::Comm<'_>> {
        crate::abi::comm_table(&self.raw).map(|table| crate::comm::Comm { table })
    }
}

/// What the executor knows about one invocation, passed to
/// [`Function::call`](crate::Function::call).
///
/// ```
/// use rfx_executors::CallContext;
///
/// let single = CallContext::new(17);
/// assert_eq!((single.rank, single.size), (0, 1));
/// let member = CallContext::new(18).in_group(2, 4);
/// assert_eq!((member.rank, member.size, member.invocation_id), (2, 4, 18));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallContext {
    /// Rank of this instance in a group invocation.
    pub rank: u32,
    /// Number of instances of the group invocation.
    pub size: u32,
    /// Id of the invocation.
    pub invocation_id: u64,
    /// The group's communicator table, kept alive by the executor for the call.
    pub(crate) comm: *const crate::comm::RfxComm,
}

impl CallContext {
    /// A single invocation (rank 0 of 1).
    pub fn new(invocation_id: u64) -> CallContext {
        CallContext {
            rank: 0,
            size: 1,
            invocation_id,
            comm: std::ptr::null(),
        }
    }

    /// The same invocation with the group's communicator (which outlives
    /// the call: the executor's worker owns it).
    pub(crate) fn with_comm(self, table: &crate::comm::RfxComm) -> CallContext {
        CallContext {
            comm: table,
            ..self
        }
    }

    /// The same invocation as instance `rank` of a group of `size`.
    pub fn in_group(self, rank: u32, size: u32) -> CallContext {
        CallContext { rank, size, ..self }
    }

    pub(crate) fn to_raw(self, out_capacity: u32) -> RfxContext {
        RfxContext {
            abi_version: ABI_VERSION,
            rank: self.rank,
            size: self.size,
            out_capacity,
            invocation_id: self.invocation_id,
            comm: self.comm,
        }
    }
}

impl Default for CallContext {
    fn default() -> CallContext {
        CallContext::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn rfx_context_layout_matches_the_c_header() {
        assert_eq!(size_of::<RfxContext>(), 32);
        assert_eq!(align_of::<RfxContext>(), 8);
        assert_eq!(offset_of!(RfxContext, abi_version), 0);
        assert_eq!(offset_of!(RfxContext, rank), 4);
        assert_eq!(offset_of!(RfxContext, size), 8);
        assert_eq!(offset_of!(RfxContext, out_capacity), 12);
        assert_eq!(offset_of!(RfxContext, invocation_id), 16);
        assert_eq!(offset_of!(RfxContext, comm), 24);
    }

    #[test]
    fn call_context_fills_the_raw_context() {
        let raw = CallContext::new(9).in_group(3, 5).to_raw(128);
        assert_eq!(raw.abi_version, ABI_VERSION);
        assert_eq!((raw.rank, raw.size, raw.invocation_id), (3, 5, 9));
        assert_eq!(raw.out_capacity, 128);
        assert!(raw.comm.is_null());
        let ctx = Context::from_raw(raw);
        assert_eq!((ctx.rank(), ctx.size(), ctx.out_capacity()), (3, 5, 128));
    }
}
