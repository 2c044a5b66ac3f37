//! MPI inside a function: during a group invocation the executor attaches
//! its group's communicator table (`rfx_comm`, see `rfx-abi`), and
//! `MPI_COMM_WORLD` is the group. The table offers what a kernel needs most:
//! point to point (no `MPI_ANY_TAG`), barrier, broadcast, reduce, allreduce
//! and allgather on the basic types; anything else is
//! `MPI_ERR_UNSUPPORTED_OPERATION` inside a function.

use std::ffi::{c_int, c_void};

use rfx_abi::comm::{code, CommOp, Dtype, RfxComm, ANY_SOURCE, COMM_ABI_VERSION};

use crate::abi;
use crate::datatype::{Datatype, Kind};
use crate::error::Failure;
use crate::op::MpiOp;
use crate::state::{Phase, State, PHASE};

/// The attached table: valid from `rfx_mpi_attach` to `rfx_mpi_detach`,
/// which the executor calls around the function.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table(RfxComm);

// SAFETY: the table's handle is the executor's, used only by the thread
// that runs the function (MPI calls are serialized by the state's lock).
unsafe impl Send for Table {}

fn check(rc: i32) -> Result<(), Failure> {
    match rc {
        code::OK => Ok(()),
        code::PEER_GONE => Err(Failure::new(
            abi::MPI_ERR_PROC_ABORTED,
            "a group instance is gone",
        )),
        code::TIMEOUT => Err(Failure::new(
            abi::MPI_ERR_OTHER,
            "the group operation timed out",
        )),
        code::TRUNCATED => Err(Failure::new(
            abi::MPI_ERR_TRUNCATE,
            "message longer than the buffer",
        )),
        code::INVALID => Err(Failure::arg("the group refused an argument")),
        rc => Err(Failure::new(
            abi::MPI_ERR_OTHER,
            format!("group operation failed ({rc})"),
        )),
    }
}

fn dtype(t: &Datatype) -> Result<(Dtype, usize), Failure> {
    let d = match t.kind {
        Kind::U8 | Kind::I8 => Dtype::U8,
        Kind::I32 => Dtype::I32,
        Kind::U32 => Dtype::U32,
        Kind::I64 => Dtype::I64,
        Kind::U64 => Dtype::U64,
        Kind::F32 => Dtype::F32,
        Kind::F64 => Dtype::F64,
        _ => {
            return Err(Failure::new(
                abi::MPI_ERR_UNSUPPORTED_OPERATION,
                format!("reductions on {} inside a function", t.name),
            ))
        }
    };
    Ok((d, t.per_item))
}

fn op(o: MpiOp, signed_bytes: bool) -> Result<CommOp, Failure> {
    let unsupported = || {
        Failure::new(
            abi::MPI_ERR_UNSUPPORTED_OPERATION,
            "this operation inside a function (sum, prod, min, max and bitwise ops only)",
        )
    };
    Ok(match o {
        MpiOp::Builtin(abi::MPI_SUM) => CommOp::Sum,
        MpiOp::Builtin(abi::MPI_PROD) => CommOp::Prod,
        // Min and max of signed chars would compare as unsigned bytes.
        MpiOp::Builtin(abi::MPI_MIN) if !signed_bytes => CommOp::Min,
        MpiOp::Builtin(abi::MPI_MAX) if !signed_bytes => CommOp::Max,
        MpiOp::Builtin(abi::MPI_BAND) => CommOp::BitAnd,
        MpiOp::Builtin(abi::MPI_BOR) => CommOp::BitOr,
        MpiOp::Builtin(abi::MPI_BXOR) => CommOp::BitXor,
        _ => return Err(unsupported()),
    })
}

impl Table {
    pub(crate) fn rank(&self) -> usize {
        self.0.rank as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.0.size as usize
    }

    pub(crate) fn send(&self, buf: &[u8], dest: usize, tag: u32) -> Result<(), Failure> {
        let t = &self.0;
        // SAFETY: the executor's table is valid while attached (module
        // docs); `buf` is valid for its length.
        check(unsafe {
            (t.send)(
                t.handle,
                buf.as_ptr().cast(),
                buf.len() as u64,
                dest as u32,
                tag,
            )
        })
    }

    /// Receives from `src` (any if `None`): the bytes received.
    pub(crate) fn recv(
        &self,
        buf: &mut [u8],
        src: Option<usize>,
        tag: u32,
    ) -> Result<usize, Failure> {
        let t = &self.0;
        let mut len = 0u64;
        let src = src.map_or(ANY_SOURCE, |s| s as u32);
        // SAFETY: as in `send`; `buf` is writable for its length and `len`
        // lives for the call.
        check(unsafe {
            (t.recv)(
                t.handle,
                buf.as_mut_ptr().cast(),
                buf.len() as u64,
                src,
                tag,
                &mut len,
            )
        })?;
        Ok(len as usize)
    }

    pub(crate) fn barrier(&self) -> Result<(), Failure> {
        // SAFETY: as in `send`.
        check(unsafe { (self.0.barrier)(self.0.handle) })
    }

    pub(crate) fn bcast(&self, buf: &mut [u8], root: usize) -> Result<(), Failure> {
        let t = &self.0;
        // SAFETY: as in `recv`.
        check(unsafe {
            (t.bcast)(
                t.handle,
                buf.as_mut_ptr().cast(),
                buf.len() as u64,
                root as u32,
            )
        })
    }

    /// Reduces `input` into `out` of `root` (everyone's if `None`).
    pub(crate) fn reduce(
        &self,
        input: &[u8],
        out: &mut [u8],
        items: usize,
        ty: &Datatype,
        o: MpiOp,
        root: Option<usize>,
    ) -> Result<(), Failure> {
        let (d, per) = dtype(ty)?;
        let o = op(o, ty.kind == Kind::I8)? as u32;
        let n = (items * per) as u64;
        let t = &self.0;
        let (i, out) = (
            input.as_ptr().cast::<c_void>(),
            out.as_mut_ptr().cast::<c_void>(),
        );
        // SAFETY: as in `send`; `input` and `out` hold `n` elements of the
        // type (the caller's spans), `out` only on the root for a reduce.
        check(unsafe {
            match root {
                Some(r) => (t.reduce)(t.handle, i, out, n, d as u32, o, r as u32),
                None => (t.allreduce)(t.handle, i, out, n, d as u32, o),
            }
        })
    }

    pub(crate) fn allgather(&self, input: &[u8], out: &mut [u8]) -> Result<(), Failure> {
        let t = &self.0;
        // SAFETY: as in `send`; `out` holds size * len bytes (the caller's span).
        check(unsafe {
            (t.allgather)(
                t.handle,
                input.as_ptr().cast(),
                input.len() as u64,
                out.as_mut_ptr().cast(),
            )
        })
    }
}

/// Called by the executor before a group function runs: MPI is
/// initialized with the group as `MPI_COMM_WORLD`. 0 on success.
#[no_mangle]
extern "C" fn rfx_mpi_attach(table: *const RfxComm) -> c_int {
    let Ok(t) = crate::raw::read(table) else {
        return abi::MPI_ERR_ARG;
    };
    // Entries are only appended: a later table serves as well.
    if t.abi_version < COMM_ABI_VERSION {
        return abi::MPI_ERR_ABI;
    }
    let mut phase = PHASE.lock();
    if matches!(&*phase, Phase::Running(_)) {
        return abi::MPI_ERR_OTHER;
    }
    let table = Table(t);
    *phase = Phase::Running(Box::new(State::with_group(
        table,
        abi::MPI_THREAD_SERIALIZED,
    )));
    abi::MPI_SUCCESS
}

/// Called by the executor after the function returned: what the function
/// left (communicators, requests) is dropped, and MPI is uninitialized.
#[no_mangle]
extern "C" fn rfx_mpi_detach() -> c_int {
    *PHASE.lock() = Phase::Before;
    abi::MPI_SUCCESS
}
