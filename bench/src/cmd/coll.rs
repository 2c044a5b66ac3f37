//! `rfx-bench coll` and its ranks (`coll-rank`).

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::{Output, OutputArgs};
use crate::results::{CollReport, CollRow};
use crate::schedule::{self};
use crate::{coll, machine};

/// What each rank of `coll` measures.
#[derive(Args, Clone)]
pub(crate) struct CollRankArgs {
    /// Operations (comma-separated): barrier, bcast, reduce, allreduce,
    /// gather, scatter, allgather, reduce_scatter, alltoall, scan.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "barrier,bcast,reduce,allreduce,gather,scatter,allgather,reduce_scatter,alltoall,scan"
    )]
    ops: Vec<String>,
    /// Bytes per rank (per block for gather, scatter, allgather, alltoall).
    #[arg(long, default_value = "8,64,512,4k,32k,256k,1m")]
    sizes: String,
    /// Timed calls per size (default 2000 up to 8 KiB, 300 up to 256 KiB, 60 above).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed calls per size (default iters / 10).
    #[arg(long)]
    warmup: Option<usize>,
    /// How calls are timed: osu (OSU 7.4's loop: each call timed alone, an
    /// untimed barrier between calls; latency) or pipelined (back-to-back
    /// calls as one block: throughput, not latency).
    #[arg(long, value_enum, default_value = "osu")]
    method: coll::Method,
}

#[derive(Args)]
pub(crate) struct CollArgs {
    #[command(flatten)]
    rank: CollRankArgs,
    /// Rank counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    ranks: Vec<usize>,
    /// Transport between ranks: auto (shm on one host), shm, tcp.
    #[arg(long, default_value = "auto")]
    transport: String,
    /// The MPI baseline: `bench/mpi/coll_lat.c` compiled with mpicc
    /// (scripts/coll-vs-mpi.sh builds it); run under --mpirun.
    #[arg(long)]
    mpi: Option<String>,
    /// The MPI launcher (default: Debian's Open MPI `/usr/bin/mpirun`
    /// where it exists, as the baseline is built with its mpicc; else
    /// `mpirun` on PATH, which may be another MPI's, e.g. MPICH's venv).
    #[arg(long)]
    mpirun: Option<String>,
    /// Bound on each run of one implementation at one rank count.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    #[command(flatten)]
    out: OutputArgs,
}

pub(crate) fn run(args: CollArgs) -> anyhow::Result<()> {
    let sizes = schedule::parse_sizes(&args.rank.sizes).map_err(anyhow::Error::msg)?;
    for op in &args.rank.ops {
        anyhow::ensure!(coll::OPS.contains(&op.as_str()), "unknown operation {op}");
    }
    let limit = Duration::from_secs(args.timeout_s);
    let mut common = vec![
        "--ops".to_string(),
        args.rank.ops.join(","),
        "--sizes".into(),
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ];
    if let Some(i) = args.rank.iters {
        common.extend(["--iters".into(), i.to_string()]);
    }
    if let Some(w) = args.rank.warmup {
        common.extend(["--warmup".into(), w.to_string()]);
    }
    common.extend(["--method".into(), args.rank.method.name().into()]);
    let mut out = Output::new(&args.out);
    let mut points = Vec::new();
    for &n in &args.ranks {
        anyhow::ensure!(n >= 1, "--ranks must be at least 1");
        // One implementation at a time: on a small machine they would share cores.
        points.extend(coll::run_rfx(n, &common, &args.transport, limit)?);
        if let Some(bin) = &args.mpi {
            let mpirun = args.mpirun.clone().unwrap_or_else(|| {
                let debian = "/usr/bin/mpirun";
                if std::path::Path::new(debian).exists() {
                    debian.into()
                } else {
                    "mpirun".into()
                }
            });
            points.extend(coll::run_mpi(&mpirun, bin, n, &common, limit)?);
        }
    }
    let mut rows = Vec::new();
    for p in points.iter().filter(|p| p.imp == "rfx") {
        let mpi = points
            .iter()
            .find(|q| q.imp == "mpi" && q.op == p.op && q.ranks == p.ranks && q.size == p.size)
            .map(|q| q.avg_us);
        rows.push(CollRow {
            op: p.op.clone(),
            ranks: p.ranks,
            size: p.size,
            rfx_avg_us: p.avg_us,
            mpi_avg_us: mpi,
            ratio: mpi.filter(|m| *m > 0.0).map(|m| p.avg_us / m),
        });
    }
    let t = &mut out.table;
    let what = match args.rank.method {
        coll::Method::Osu => "OSU's method: per-call latency, a barrier between calls",
        coll::Method::Pipelined => {
            "pipelined: back-to-back calls as one block, THROUGHPUT per call, not latency"
        }
    };
    writeln!(
        t,
        "# rfx-bench coll: mean over ranks, us per call ({what}), transport {}",
        args.transport
    )?;
    writeln!(
        t,
        "{:<15} {:>5} {:>9} | {:>10} {:>10} | {:>7}",
        "op", "ranks", "size", "rfx", "mpi", "x mpi"
    )?;
    for r in &rows {
        let mpi = r.mpi_avg_us.map_or("-".into(), |m| format!("{m:.2}"));
        let ratio = r.ratio.map_or("-".into(), |x| format!("{x:.2}"));
        writeln!(
            t,
            "{:<15} {:>5} {:>9} | {:>10.2} {:>10} | {:>7}",
            r.op, r.ranks, r.size, r.rfx_avg_us, mpi, ratio
        )?;
    }
    out.finish(&CollReport {
        bench: "coll".into(),
        machine: machine::describe(),
        transport: args.transport.clone(),
        method: args.rank.method.name().into(),
        points,
        rows,
    })
}

/// One rank of `coll` (`coll-rank`, started by it).
pub(crate) fn rank(a: CollRankArgs) -> anyhow::Result<()> {
    let sizes = schedule::parse_sizes(&a.sizes).map_err(anyhow::Error::msg)?;
    coll::rank_main(&a.ops, &sizes, a.iters, a.warmup, a.method)
}
