//! `rfx-bench coll`: the latency of each collective per size and rank
//! count, and with `--mpi` the same measurement of an MPI implementation
//! (`bench/mpi/coll_lat.c` under `mpirun`) in the same run, with the ratio.
//!
//! Methods ([`Method`]), the same in `coll_lat.c`: OSU 7.4's loop (the
//! default: untimed warm-up calls, then each call timed on its own with an
//! untimed barrier after it; a rank's latency is the mean of its calls), or
//! a pipelined block (`iters` back-to-back calls after one barrier, block /
//! iters: a sender runs ahead of its receivers, so throughput, not
//! latency). The figure is the mean over ranks (min and max too). The ranks
//! are processes of this binary (`coll-rank`), wired by a rendezvous this
//! process hosts, as `rfx run` does.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rfx_collectives::{Communicator, ReduceOp, Rendezvous};
use serde::{Deserialize, Serialize};

/// Every operation, in report order.
pub const OPS: [&str; 10] = [
    "barrier",
    "bcast",
    "reduce",
    "allreduce",
    "gather",
    "scatter",
    "allgather",
    "reduce_scatter",
    "alltoall",
    "scan",
];

/// How calls are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// OSU's loop: each call timed alone, an untimed barrier between calls
    /// (latency).
    Osu,
    /// Back-to-back calls timed as one block (throughput, not latency).
    Pipelined,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Osu => "osu",
            Method::Pipelined => "pipelined",
        }
    }
}

/// Operations that work on whole f64 elements.
fn is_reduction(op: &str) -> bool {
    matches!(op, "reduce" | "allreduce" | "reduce_scatter" | "scan")
}

/// One measured point, as both implementations print it (JSON lines).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// `rfx` or `mpi`.
    #[serde(rename = "impl")]
    pub imp: String,
    /// The operation.
    pub op: String,
    /// Ranks.
    pub ranks: usize,
    /// Bytes per rank (per block for the block-wise operations).
    pub size: usize,
    /// Timed calls.
    pub iters: usize,
    /// Mean over ranks of the per-call latency, µs.
    pub avg_us: f64,
    /// Fastest rank, µs.
    pub min_us: f64,
    /// Slowest rank, µs.
    pub max_us: f64,
}

/// Iterations for a size unless given (as coll_lat.c).
pub fn default_iters(size: usize) -> usize {
    match size {
        0..=8192 => 2000,
        8193..=262_144 => 300,
        _ => 60,
    }
}

/// The (op, size) pairs to measure: barrier once, reductions from 8 B.
pub fn plan(ops: &[String], sizes: &[usize]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for op in OPS.iter().filter(|o| ops.iter().any(|x| x == *o)) {
        if *op == "barrier" {
            out.push((op.to_string(), 0));
            continue;
        }
        for &s in sizes {
            if is_reduction(op) && s < 8 {
                continue;
            }
            out.push((op.to_string(), s));
        }
    }
    out
}

/// One rank of the rfx side (`rfx-bench coll-rank`): joins from the
/// environment, runs the plan, rank 0 prints the points.
pub fn rank_main(
    ops: &[String],
    sizes: &[usize],
    iters: Option<usize>,
    warmup: Option<usize>,
    method: Method,
) -> anyhow::Result<()> {
    let mut comm = Communicator::from_env().context("joining the benchmark job")?;
    let (rank, n) = (comm.rank(), comm.size());
    if let Ok(cpus) = core_affinity::get_core_ids().ok_or(()) {
        // Pinned only when every rank has a CPU of its own, as mpirun's
        // --bind-to core does; oversubscribed ranks float.
        if n <= cpus.len() {
            crate::pin::pin(Some(cpus[rank].id));
        }
    }
    let max = sizes.iter().copied().max().unwrap_or(8).max(8);
    // Written through, as OSU's set_buffer does: untouched pages are all
    // the kernel's one zero page, always in cache, and would flatter a
    // receiver that reads the sender's memory in place.
    let mut a: Vec<u8> = (0..max * n).map(|i| (i % 251) as u8 ^ rank as u8).collect();
    let mut b: Vec<u8> = (0..max * n).map(|i| (i % 241) as u8).collect();
    let fa: Vec<f64> = (0..max * n / 8).map(|i| (rank + i % 7) as f64).collect();
    let mut fb = vec![0f64; max * n / 8];
    for (op, size) in plan(ops, sizes) {
        let it = iters.unwrap_or_else(|| default_iters(size));
        let wu = warmup.unwrap_or(it / 10);
        let count = size / 8;
        let mine = time_calls(&mut comm, wu, it, method, |comm| {
            match op.as_str() {
                "barrier" => comm.barrier()?,
                "bcast" => comm.bcast(&mut a[..size], 0)?,
                // Two buffers, as the MPI baseline's (and OSU's) calls
                // have: in place would skip the work of keeping the input.
                "reduce" => comm.reduce_to(&fa[..count], &mut fb[..count], 0, ReduceOp::Sum)?,
                "allreduce" => comm.allreduce_to(&fa[..count], &mut fb[..count], ReduceOp::Sum)?,
                "gather" => comm.gather(&a[..size], &mut b[..size * n], 0)?,
                "scatter" => comm.scatter(&a[..size * n], &mut b[..size], 0)?,
                "allgather" => comm.allgather(&a[..size], &mut b[..size * n])?,
                "reduce_scatter" => {
                    comm.reduce_scatter(&fa[..count * n], &mut fb[..count], ReduceOp::Sum)?
                }
                "alltoall" => comm.alltoall(&a[..size * n], &mut b[..size * n])?,
                "scan" => comm.scan_to(&fa[..count], &mut fb[..count], ReduceOp::Sum)?,
                other => bail!("unknown operation {other}"),
            }
            Ok(())
        })?;
        report_point(&mut comm, "rfx", &op, size, it, mine)?;
    }
    Ok(())
}

/// Calls `f` `wu` times untimed, then `it` times timed; this rank's time
/// per call, µs. [`Method::Osu`]: each call timed alone, an untimed
/// barrier after every call (OSU 7.4's loop); [`Method::Pipelined`]: the
/// timed calls back to back as one block (throughput, not latency).
pub fn time_calls(
    comm: &mut Communicator,
    wu: usize,
    it: usize,
    method: Method,
    mut f: impl FnMut(&mut Communicator) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut t0 = Instant::now();
    let mut timed = Duration::ZERO;
    for i in 0..wu + it {
        if i == wu {
            comm.barrier()?;
            t0 = Instant::now();
        }
        let start = Instant::now();
        f(comm)?;
        if method == Method::Osu {
            if i >= wu {
                timed += start.elapsed();
            }
            comm.barrier()?;
        }
    }
    let total = match method {
        Method::Osu => timed,
        Method::Pipelined => t0.elapsed(),
    };
    Ok(total.as_secs_f64() * 1e6 / it as f64)
}

/// Gathers every rank's mean per-call time `mine` (µs) of `op` at `size`
/// to rank 0, which prints the point (mean, fastest and slowest rank) as a
/// JSON line.
pub fn report_point(
    comm: &mut Communicator,
    imp: &str,
    op: &str,
    size: usize,
    iters: usize,
    mine: f64,
) -> anyhow::Result<()> {
    let (mut sum, mut lo, mut hi) = ([mine], [mine], [mine]);
    comm.reduce(&mut sum, 0, ReduceOp::Sum)?;
    comm.reduce(&mut lo, 0, ReduceOp::Min)?;
    comm.reduce(&mut hi, 0, ReduceOp::Max)?;
    if comm.rank() == 0 {
        let p = Point {
            imp: imp.into(),
            op: op.into(),
            ranks: comm.size(),
            size,
            iters,
            avg_us: sum[0] / comm.size() as f64,
            min_us: lo[0],
            max_us: hi[0],
        };
        println!("{}", serde_json::to_string(&p)?);
    }
    Ok(())
}

/// Parses the JSON lines a run printed (other lines are ignored).
pub fn parse_points(out: &str) -> Vec<Point> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Point>(l.trim()).ok())
        .collect()
}

/// Runs the rfx side for `n` ranks: spawns `coll-rank` processes of this
/// binary, hosts their rendezvous, returns rank 0's points.
pub fn run_rfx(
    n: usize,
    rank_args: &[String],
    transport: &str,
    limit: Duration,
) -> anyhow::Result<Vec<Point>> {
    run_ranks("coll-rank", n, rank_args, transport, limit)
}

/// Spawns `n` processes of this binary's subcommand `sub`, hosts their
/// rendezvous, returns the points rank 0 printed.
pub fn run_ranks(
    sub: &str,
    n: usize,
    rank_args: &[String],
    transport: &str,
    limit: Duration,
) -> anyhow::Result<Vec<Point>> {
    let mut key = [0u8; 16];
    getrandom::getrandom(&mut key).context("a job key")?;
    let rv = Rendezvous::bind(SocketAddr::from(([127, 0, 0, 1], 0)), n, key.to_vec())?;
    let rv_addr = rv.local_addr()?;
    let _rv = rv.spawn(limit);
    let exe = std::env::current_exe()?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut children = Vec::new();
    for rank in 0..n {
        let child = Command::new(&exe)
            .arg(sub)
            .args(rank_args)
            .env("RFX_RANK", rank.to_string())
            .env("RFX_SIZE", n.to_string())
            .env("RFX_RENDEZVOUS", rv_addr.to_string())
            .env("RFX_RENDEZVOUS_EXTERNAL", "1")
            .env("RFX_JOB_KEY", &hex)
            .env("RFX_BIND_ADDR", "127.0.0.1")
            .env("RFX_TRANSPORT", transport)
            .stdin(Stdio::null())
            .stdout(if rank == 0 {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("starting a rank")?;
        children.push(child);
    }
    let stdout = children[0].stdout.take().context("rank 0's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let deadline = Instant::now() + limit;
    let mut failed = None;
    for (rank, c) in children.iter_mut().enumerate() {
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() && failed.is_none() {
                    failed = Some((rank, st));
                }
                break;
            }
            if Instant::now() >= deadline || failed.is_some() {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let out = reader.join().unwrap_or_default();
    if let Some((rank, st)) = failed {
        bail!("rfx rank {rank} of {n} failed: {st}");
    }
    Ok(parse_points(&out))
}

/// Runs the MPI side for `n` ranks under `mpirun`.
pub fn run_mpi(
    mpirun: &str,
    bin: &str,
    n: usize,
    mpi_args: &[String],
    limit: Duration,
) -> anyhow::Result<Vec<Point>> {
    let cpus = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let bind = if n <= cpus { "core" } else { "none" };
    let mut cmd = Command::new(mpirun);
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(n.to_string())
        .args(["--bind-to", bind, "--mca", "btl", "self,vader"])
        .arg(bin)
        .args(mpi_args)
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    let out = run_bounded(cmd, limit).with_context(|| format!("running {bin} under {mpirun}"))?;
    let points = parse_points(&out);
    ensure!(!points.is_empty(), "{bin} printed no results:\n{out}");
    Ok(points)
}

/// Runs `cmd` to its end within `limit` (killed after); its stdout.
fn run_bounded(mut cmd: Command, limit: Duration) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} ran over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_measures_barrier_once_and_reductions_from_8_bytes() {
        let ops: Vec<String> = ["barrier", "allreduce", "bcast"].map(String::from).to_vec();
        let p = plan(&ops, &[0, 8, 1024]);
        assert_eq!(
            p,
            vec![
                ("barrier".to_string(), 0),
                ("bcast".to_string(), 0),
                ("bcast".to_string(), 8),
                ("bcast".to_string(), 1024),
                ("allreduce".to_string(), 8),
                ("allreduce".to_string(), 1024),
            ]
        );
    }

    #[test]
    fn points_parse_from_both_implementations() {
        let out = "noise\n{\"impl\":\"mpi\",\"op\":\"bcast\",\"ranks\":2,\"size\":8,\"iters\":2000,\"avg_us\":0.095,\"min_us\":0.094,\"max_us\":0.095}\n";
        let p = parse_points(out);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].imp.as_str(), p[0].ranks, p[0].size), ("mpi", 2, 8));
    }
}
