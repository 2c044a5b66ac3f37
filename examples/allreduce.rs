//! An MPI-like program on rfx's communicator: every rank contributes a
//! vector, allreduces it (sum), checks the result against the closed form,
//! and rank 0 prints what it measured.
//!
//! ```text
//! cargo build --release --example allreduce
//! cargo run --release -- run -n 4 target/release/examples/allreduce [ELEMENTS] [ITERS]
//! ```
//!
//! It starts from any launcher's environment: `rfx run`, `srun`
//! (SLURM_PROCID/SLURM_NTASKS) or `mpirun` (OMPI_COMM_WORLD_RANK/SIZE), with
//! `RFX_RENDEZVOUS=host:port` naming where rank 0 hosts the rendezvous.

use std::time::Instant;

use anyhow::{ensure, Context};
use rfx::collectives::{Communicator, ReduceOp};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let elements: usize = args.next().map_or(Ok(1 << 16), |a| a.parse())?;
    let iters: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let mut comm = Communicator::from_env().context("joining the job")?;
    let (rank, size) = (comm.rank(), comm.size());

    // Rank r holds r + i at index i: the sum over ranks is size*i + size*(size-1)/2.
    let fill = |v: &mut Vec<f64>| {
        v.clear();
        v.extend((0..elements).map(|i| (rank + i) as f64));
    };
    let mut buf = Vec::with_capacity(elements);
    fill(&mut buf);
    comm.allreduce(&mut buf, ReduceOp::Sum)?;
    let base = (size * (size - 1) / 2) as f64;
    for (i, v) in buf.iter().enumerate() {
        ensure!(
            *v == (size * i) as f64 + base,
            "rank {rank}: element {i} is {v}"
        );
    }

    comm.barrier()?;
    let start = Instant::now();
    for _ in 0..iters {
        fill(&mut buf);
        comm.allreduce(&mut buf, ReduceOp::Sum)?;
    }
    let per_call = start.elapsed() / iters.max(1) as u32;
    let mut slowest = [per_call.as_secs_f64() * 1e6];
    comm.reduce(&mut slowest, 0, ReduceOp::Max)?;
    if rank == 0 {
        println!(
            "allreduce of {elements} f64 on {size} ranks over {}: {:.1} us per call (slowest rank), result checked",
            comm.transport_summary(),
            slowest[0]
        );
    }
    Ok(())
}
