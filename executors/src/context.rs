//! What the executor knows about an invocation: [`Abi`] (a function's calling convention) and
//! [`CallContext`], from which it fills the [`RfxContext`] a function receives.

use std::fmt;

use rfx_abi::{RfxContext, ABI_VERSION};

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
    pub(crate) comm: *const rfx_abi::comm::RfxComm,
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
    pub(crate) fn with_comm(self, table: &rfx_abi::comm::RfxComm) -> CallContext {
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
            device: std::ptr::null(),
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
    use rfx_abi::Context;

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
