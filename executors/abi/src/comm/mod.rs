//! The communicator of a group invocation as a function sees it: [`RfxComm`]
//! (`rfx_comm` in C, `examples/c/rfx.h`), a table of C entry points the
//! executor fills, and [`Comm`], its typed Rust face.
//!
//! A group invocation runs one instance of a function on each of N executors;
//! instance `rank` gets `ctx.comm` pointing at a table whose entry points run
//! point-to-point messages and collectives over the executors' own
//! communicator (`rfx_collectives::Communicator`), peer to peer: nothing
//! goes through the client. The table crosses the library boundary as plain
//! C so that C functions and Rust functions built against another version
//! of this crate use it the same way.
//!
//! ```no_run
//! use rfx_abi::{Context, comm::CommOp};
//!
//! // The body of a group function: the sum of every instance's input.
//! fn total(ctx: &Context, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
//!     let mine: f64 = input.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).sum();
//!     let comm = ctx.comm().ok_or("not a group invocation")?;
//!     let mut all = [0.0f64];
//!     comm.allreduce(&[mine], &mut all, CommOp::Sum).map_err(|e| e.to_string())?;
//!     out[..8].copy_from_slice(&all[0].to_le_bytes());
//!     Ok(8)
//! }
//! ```

mod calls;
mod table;

pub use table::{
    code, AllgatherFn, AllreduceFn, AlltoallFn, BarrierFn, BcastFn, CommElement, CommOp, Dtype,
    GatherFn, RecvFn, ReduceFn, RfxComm, ScatterFn, SendFn, ANY_SOURCE, COMM_ABI_VERSION,
};

/// Why a [`Comm`] operation failed: the table's result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommError {
    /// [`code::INVALID`].
    #[error("invalid argument to a group operation")]
    Invalid,
    /// [`code::PEER_GONE`].
    #[error("a peer instance of the group is gone")]
    PeerGone,
    /// [`code::TIMEOUT`].
    #[error("group operation timed out")]
    Timeout,
    /// [`code::TRUNCATED`].
    #[error("received message longer than the buffer")]
    Truncated,
    /// [`code::FAILED`] or an unknown code.
    #[error("group operation failed (code {0})")]
    Failed(i32),
    /// The executor's table (of the version given) lacks the operation.
    #[error("the executor's communicator table (version {0}) lacks this operation")]
    Unsupported(u32),
}

impl CommError {
    /// `Ok` for [`code::OK`], else the error it names.
    pub fn check(code: i32) -> Result<(), CommError> {
        match code {
            code::OK => Ok(()),
            code::INVALID => Err(CommError::Invalid),
            code::PEER_GONE => Err(CommError::PeerGone),
            code::TIMEOUT => Err(CommError::Timeout),
            code::TRUNCATED => Err(CommError::Truncated),
            other => Err(CommError::Failed(other)),
        }
    }
}

/// The communicator of a group invocation, for the duration of the call
/// (from [`Context::comm`](crate::Context::comm)).
#[derive(Debug, Clone, Copy)]
pub struct Comm<'a> {
    pub(crate) table: &'a RfxComm,
}

impl Comm<'_> {
    /// This instance's rank.
    pub fn rank(&self) -> u32 {
        self.table.rank
    }

    /// Number of instances.
    pub fn size(&self) -> u32 {
        self.table.size
    }

    /// Sends `buf` to `dest` with `tag`.
    pub fn send(&self, buf: &[u8], dest: u32, tag: u32) -> Result<(), CommError> {
        CommError::check(calls::comm_send(self.table, buf, dest, tag))
    }

    /// Receives a message with `tag` from `source` ([`ANY_SOURCE`] for any)
    /// into `buf`; its length.
    pub fn recv(&self, buf: &mut [u8], source: u32, tag: u32) -> Result<usize, CommError> {
        let (code, len) = calls::comm_recv(self.table, buf, source, tag);
        CommError::check(code).map(|()| len)
    }

    /// Waits until every instance has called it.
    pub fn barrier(&self) -> Result<(), CommError> {
        CommError::check(calls::comm_barrier(self.table))
    }

    /// Broadcasts `root`'s `buf` into everyone's `buf`.
    pub fn bcast(&self, buf: &mut [u8], root: u32) -> Result<(), CommError> {
        CommError::check(calls::comm_bcast(self.table, buf, root))
    }

    /// Reduces everyone's `input` element-wise into `root`'s `out` (other
    /// ranks' `out` is untouched; it must still have `input`'s length).
    pub fn reduce<T: CommElement>(
        &self,
        input: &[T],
        out: &mut [T],
        op: CommOp,
        root: u32,
    ) -> Result<(), CommError> {
        if input.len() != out.len() {
            return Err(CommError::Invalid);
        }
        CommError::check(calls::comm_reduce(self.table, input, out, op, Some(root)))
    }

    /// Reduces everyone's `input` element-wise into everyone's `out`.
    pub fn allreduce<T: CommElement>(
        &self,
        input: &[T],
        out: &mut [T],
        op: CommOp,
    ) -> Result<(), CommError> {
        if input.len() != out.len() {
            return Err(CommError::Invalid);
        }
        CommError::check(calls::comm_reduce(self.table, input, out, op, None))
    }

    /// Gathers every rank's `block` into `out` (rank r's at `r * block.len()`).
    pub fn allgather(&self, block: &[u8], out: &mut [u8]) -> Result<(), CommError> {
        if out.len() != block.len() * self.size() as usize {
            return Err(CommError::Invalid);
        }
        CommError::check(calls::comm_allgather(self.table, block, out))
    }

    /// Gathers every rank's `block` into the root's `out` (rank r's at
    /// `r * block.len()`; `out` is ignored elsewhere and may be empty).
    pub fn gather(&self, block: &[u8], out: &mut [u8], root: u32) -> Result<(), CommError> {
        self.since(2)?;
        if self.rank() == root && out.len() != block.len() * self.size() as usize {
            return Err(CommError::Invalid);
        }
        CommError::check(calls::comm_gather(self.table, block, out, root))
    }

    /// Scatters the root's `input` (`size * out.len()` bytes; ignored
    /// elsewhere and may be empty), block r into rank r's `out`.
    pub fn scatter(&self, input: &[u8], out: &mut [u8], root: u32) -> Result<(), CommError> {
        self.since(2)?;
        if self.rank() == root && input.len() != out.len() * self.size() as usize {
            return Err(CommError::Invalid);
        }
        let len = out.len();
        CommError::check(calls::comm_scatter(self.table, input, len, out, root))
    }

    /// Sends block r of `input` to rank r and receives rank r's into block
    /// r of `out` (`input` and `out` of `size` equal blocks).
    pub fn alltoall(&self, input: &[u8], out: &mut [u8]) -> Result<(), CommError> {
        self.since(2)?;
        let n = self.size() as usize;
        if input.len() != out.len() || input.len() % n != 0 {
            return Err(CommError::Invalid);
        }
        CommError::check(calls::comm_alltoall(self.table, input, out))
    }

    /// Whether the table has the entries of `version` (an older executor's
    /// does not: [`CommError::Unsupported`]).
    fn since(&self, version: u32) -> Result<(), CommError> {
        if self.table.abi_version < version {
            return Err(CommError::Unsupported(self.table.abi_version));
        }
        Ok(())
    }
}
