//! Reductions with a user operation that does not commute (`MPI_Op_create`
//! with `commute = 0`): rfx's reduction algorithms may combine in any
//! order, so the contributions are gathered instead and combined in rank
//! order, `x0 op x1 op ... op x(n-1)`, as the standard requires. Scan and
//! exscan need nothing: rfx combines them in rank order already.

use rfx_collectives::Communicator;

use crate::abi::{Handle, Status};
use crate::datatype::Datatype;
use crate::error::Failure;
use crate::op::{MpiOp, UserFn};
use crate::raw;
use crate::request::{Pending, Then};

/// The user function of `op` when it does not commute.
pub(crate) fn non_commutative(op: MpiOp) -> Option<UserFn> {
    match op {
        MpiOp::User { f, commute: false } => Some(f),
        _ => None,
    }
}

/// Combines `n` blocks of `len` bytes in rank order.
fn fold(f: UserFn, ty: Handle, dt: &Datatype, blocks: &[u8], n: usize, len: usize) -> Vec<u8> {
    let items = len / dt.extent.max(1);
    let mut acc = blocks[..len].to_vec();
    for r in 1..n {
        // MPI's function computes inout = in op inout: in = the ranks
        // before r, inout = rank r's block.
        let mut x = blocks[r * len..(r + 1) * len].to_vec();
        raw::call_user(f, &mut acc, &mut x, items, ty);
        acc = x;
    }
    acc
}

/// What an ordered reduction needs to know.
pub(crate) struct Ordered<'a> {
    pub(crate) f: UserFn,
    pub(crate) ty: Handle,
    pub(crate) dt: &'a Datatype,
    pub(crate) len: usize,
}

impl Ordered<'_> {
    /// Gathers every rank's block with `gather` (into `n` blocks), then
    /// combines them into `out`.
    fn combine(
        &self,
        c: &mut Communicator,
        out: &mut [u8],
        gather: impl FnOnce(&mut Communicator, &mut [u8]) -> Result<(), rfx_collectives::CollError>,
    ) -> Result<(), Failure> {
        let n = c.size();
        let mut all = vec![0u8; n * self.len];
        gather(c, &mut all)?;
        let r = fold(self.f, self.ty, self.dt, &all, n, self.len);
        self.dt.deliver(out, &r);
        Ok(())
    }

    /// `MPI_Reduce`: the result into `out` on `root` only.
    pub(crate) fn reduce(
        &self,
        c: &mut Communicator,
        input: &[u8],
        out: &mut [u8],
        root: usize,
    ) -> Result<(), Failure> {
        if c.rank() != root {
            c.gather::<u8>(input, &mut [], root)?;
            return Ok(());
        }
        self.combine(c, out, |c, all| c.gather::<u8>(input, all, root))
    }

    /// `MPI_Allreduce`.
    pub(crate) fn allreduce(
        &self,
        c: &mut Communicator,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(), Failure> {
        self.combine(c, out, |c, all| c.allgather::<u8>(input, all))
    }

    /// `MPI_Reduce_scatter_block`: `input` is `size` blocks of `len`; each
    /// rank gets its block combined over the ranks.
    pub(crate) fn reduce_scatter(
        &self,
        c: &mut Communicator,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(), Failure> {
        self.combine(c, out, |c, all| c.alltoall::<u8>(input, all))
    }

    /// The non-blocking forms: the same gathers, combined at completion
    /// into `out` (`keep` bytes of it; 0 off the root of a reduce).
    pub(crate) fn pending(
        &self,
        req: rfx_collectives::Request<Vec<u8>>,
        n: usize,
        out: *mut std::ffi::c_void,
        keep: usize,
    ) -> Box<dyn Pending> {
        let (f, ty, dt, len) = (self.f, self.ty, self.dt.clone(), self.len);
        let out = out as usize;
        Then::new(req, move |all: Vec<u8>| {
            if keep > 0 && all.len() >= n * len {
                let r = fold(f, ty, &dt, &all, n, len);
                dt.deliver(raw::bytes_mut(out as *mut std::ffi::c_void, keep)?, &r);
            }
            Ok(Status::empty())
        })
    }
}
