//! What the MPI ABI layer costs per call: the same operations through
//! `libmpi_abi.so.1` (loaded as a C program loads it, one singleton rank)
//! and on an `rfx_collectives::Communicator` of one rank in this process.
//! With one rank the operations move nothing, so the difference is the
//! layer: the lock, the handle lookups, the datatype and op translation.

use std::ffi::{c_int, c_void};
use std::path::Path;
use std::time::Instant;

use libloading::Library;
use rfx_collectives::{CollConfig, Communicator, ReduceOp};

use crate::results::MpiOverhead;

// The standard ABI's handles (mpi_abi.h).
const COMM_WORLD: usize = 0x101;
const INT: usize = 0x209;
const BYTE: usize = 0x247;
const SUM: usize = 0x21;

type InitFn = unsafe extern "C" fn(*mut c_int, *mut c_void) -> c_int;
type AllreduceFn =
    unsafe extern "C" fn(*const c_void, *mut c_void, c_int, usize, usize, usize) -> c_int;
type BcastFn = unsafe extern "C" fn(*mut c_void, c_int, usize, c_int, usize) -> c_int;
type BarrierFn = unsafe extern "C" fn(usize) -> c_int;
type SendFn = unsafe extern "C" fn(*const c_void, c_int, usize, c_int, c_int, usize) -> c_int;
type RecvFn =
    unsafe extern "C" fn(*mut c_void, c_int, usize, c_int, c_int, usize, *mut c_void) -> c_int;

/// ns per call of `f`, the best of 5 runs of `iters` calls.
fn per_call(iters: u64, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn row(call: &str, direct_ns: f64, abi_ns: f64) -> MpiOverhead {
    MpiOverhead {
        call: call.to_string(),
        direct_ns,
        abi_ns,
        overhead_ns: abi_ns - direct_ns,
    }
}

/// Measures allreduce, bcast, barrier and a send to oneself with its
/// receive, `iters` calls each, through `lib` and directly.
pub(crate) fn measure(lib: &Path, iters: u64) -> anyhow::Result<Vec<MpiOverhead>> {
    for v in [
        "RFX_RANK",
        "SLURM_PROCID",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
    ] {
        anyhow::ensure!(
            std::env::var_os(v).is_none(),
            "{v} is set: the overhead is measured on a singleton"
        );
    }
    // SAFETY: rfx's own MPI library; its initialisers are Rust's. It stays
    // loaded until the process ends: MPI is not finalized (a later MPI_Init
    // in this process would be refused).
    let lib: &'static Library = Box::leak(Box::new(unsafe { Library::new(lib) }?));
    // SAFETY: the standard ABI's signatures of these functions.
    let (init, allreduce, bcast, barrier, send, recv) = unsafe {
        (
            lib.get::<InitFn>(b"MPI_Init\0")?,
            lib.get::<AllreduceFn>(b"MPI_Allreduce\0")?,
            lib.get::<BcastFn>(b"MPI_Bcast\0")?,
            lib.get::<BarrierFn>(b"MPI_Barrier\0")?,
            lib.get::<SendFn>(b"MPI_Send\0")?,
            lib.get::<RecvFn>(b"MPI_Recv\0")?,
        )
    };
    // SAFETY: MPI_Init accepts null argc and argv.
    let rc = unsafe { init(std::ptr::null_mut(), std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "MPI_Init: {rc}");
    let mut c = Communicator::solo(CollConfig::default())?;

    let (a, mut b) = (1i32, 0i32);
    let mut buf = [0u8; 8];
    let mut out = Vec::new();
    let direct = per_call(iters, || {
        let mut x = [a];
        let _ = c.allreduce(&mut x, ReduceOp::Sum);
        b = x[0];
    });
    // SAFETY: buffers of the sizes the call names, alive for the call;
    // handles are the standard's.
    let abi = per_call(iters, || unsafe {
        allreduce(
            (&a as *const i32).cast(),
            (&mut b as *mut i32).cast(),
            1,
            INT,
            SUM,
            COMM_WORLD,
        );
    });
    out.push(row("MPI_Allreduce 1 MPI_INT", direct, abi));

    let direct = per_call(iters, || {
        let _ = c.bcast(&mut buf, 0);
    });
    // SAFETY: buffers of the sizes the call names, alive for the call;
    // handles are the standard's.
    let abi = per_call(iters, || unsafe {
        bcast(buf.as_mut_ptr().cast(), 8, BYTE, 0, COMM_WORLD);
    });
    out.push(row("MPI_Bcast 8 B", direct, abi));

    let direct = per_call(iters, || {
        let _ = c.barrier();
    });
    // SAFETY: buffers of the sizes the call names, alive for the call;
    // handles are the standard's.
    let abi = per_call(iters, || unsafe {
        barrier(COMM_WORLD);
    });
    out.push(row("MPI_Barrier", direct, abi));

    let mut got = [0u8; 8];
    let direct = per_call(iters, || {
        let _ = c.send(&buf, 0, 1);
        let _ = c.recv(&mut got, 0usize, 1u32);
    });
    // SAFETY: buffers of the sizes the call names, alive for the call;
    // handles are the standard's.
    let abi = per_call(iters, || unsafe {
        send(buf.as_ptr().cast(), 8, BYTE, 0, 1, COMM_WORLD);
        recv(
            got.as_mut_ptr().cast(),
            8,
            BYTE,
            0,
            1,
            COMM_WORLD,
            std::ptr::null_mut(),
        );
    });
    out.push(row("MPI_Send + MPI_Recv 8 B to itself", direct, abi));
    Ok(out)
}
