//! `rfx-bench device` and its ranks (`device-rank`): collectives on device
//! memory against the same collectives on host memory, by OSU's method
//! (each call timed alone, an untimed barrier between calls), in one run;
//! and the reduction kernel's bandwidth against a device copy's.
//!
//! `--device cuda` (a build with `--features cuda`, on a GPU) measures the
//! staging pipeline's real cost: the gap to host memory should be the
//! device copies, mostly hidden by the pipeline from 1 MiB. `--device host`
//! runs the same pipeline on the host reference device (copies by a worker
//! thread): the pipeline's own overhead, no GPU involved.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rfx_collectives::device::{Device, DeviceVec, HostDevice};
use rfx_collectives::{Communicator, ReduceOp};
use rfx_device::{DevOp, Dtype};

use super::{Output, OutputArgs};
use crate::coll;
use crate::results::{DeviceReport, DeviceRow, KernelRow};
use crate::{machine, schedule};

/// The operations `device` knows.
const OPS: &[&str] = &[
    "allreduce",
    "bcast",
    "reduce",
    "allgather",
    "reduce_scatter",
];

/// What each rank measures.
#[derive(Args, Clone)]
pub(crate) struct DeviceRankArgs {
    /// The device: host (the reference backend) or cuda (GPU 0; needs a
    /// build with --features cuda).
    #[arg(long, default_value = "host")]
    device: String,
    /// Operations (comma-separated): allreduce, bcast, reduce, allgather,
    /// reduce_scatter.
    #[arg(long, value_delimiter = ',', default_value = "allreduce")]
    ops: Vec<String>,
    /// Bytes per rank.
    #[arg(long, default_value = "4k,64k,1m,16m,256m")]
    sizes: String,
    /// Timed calls per size (default 200 up to 1 MiB, 30 up to 16 MiB, 10 above).
    #[arg(long)]
    iters: Option<usize>,
}

#[derive(Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    rank: DeviceRankArgs,
    /// Rank counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    ranks: Vec<usize>,
    /// Sizes of the kernel bandwidth test (empty: none).
    #[arg(long, default_value = "1m,16m,256m")]
    kernel_sizes: String,
    /// Bound on each run.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    #[command(flatten)]
    out: OutputArgs,
}

fn iters_for(size: usize, given: Option<usize>) -> usize {
    given.unwrap_or(if size <= 1 << 20 {
        200
    } else if size <= 16 << 20 {
        30
    } else {
        10
    })
}

pub(crate) fn run(args: DeviceArgs) -> anyhow::Result<()> {
    schedule::parse_sizes(&args.rank.sizes).map_err(anyhow::Error::msg)?;
    for op in &args.rank.ops {
        anyhow::ensure!(OPS.contains(&op.as_str()), "unknown operation {op}");
    }
    let mut rank_args = vec![
        "--device".to_string(),
        args.rank.device.clone(),
        "--ops".into(),
        args.rank.ops.join(","),
        "--sizes".into(),
        args.rank.sizes.clone(),
    ];
    if let Some(i) = args.rank.iters {
        rank_args.extend(["--iters".into(), i.to_string()]);
    }
    let limit = Duration::from_secs(args.timeout_s);
    let mut points = Vec::new();
    for &n in &args.ranks {
        anyhow::ensure!(n >= 1, "--ranks must be at least 1");
        points.extend(coll::run_ranks(
            "device-rank",
            n,
            &rank_args,
            "auto",
            limit,
        )?);
    }
    let kernel_sizes = if args.kernel_sizes.trim().is_empty() {
        Vec::new()
    } else {
        schedule::parse_sizes(&args.kernel_sizes).map_err(anyhow::Error::msg)?
    };
    let (describe, kernels) = match args.rank.device.as_str() {
        "host" => {
            let d = HostDevice::new();
            (d.describe(), kernel_rows(&d, &kernel_sizes)?)
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            let d = rfx_device::CudaDevice::open(0)?;
            (d.describe(), kernel_rows(&d, &kernel_sizes)?)
        }
        other => bail!(
            "unknown device {other} (this build has: host{})",
            cuda_name()
        ),
    };
    let mut rows = Vec::new();
    for p in points.iter().filter(|p| p.imp == "device") {
        if let Some(h) = points
            .iter()
            .find(|q| q.imp == "host" && q.op == p.op && q.ranks == p.ranks && q.size == p.size)
        {
            rows.push(DeviceRow {
                op: p.op.clone(),
                ranks: p.ranks,
                size: p.size,
                host_us: h.avg_us,
                device_us: p.avg_us,
                ratio: p.avg_us / h.avg_us.max(1e-9),
            });
        }
    }
    let cfg = rfx_collectives::CollConfig::from_env()?;
    let mut out = Output::new(&args.out);
    let t = &mut out.table;
    writeln!(
        t,
        "# rfx-bench device on {describe}: OSU's method, mean over ranks, us per call; \
         staging chunk {} B x {} slots",
        cfg.device_chunk, cfg.device_slots
    )?;
    writeln!(
        t,
        "{:<15} {:>5} {:>10} | {:>12} {:>12} | {:>8}",
        "op", "ranks", "size", "host mem", "device mem", "x host"
    )?;
    for r in &rows {
        writeln!(
            t,
            "{:<15} {:>5} {:>10} | {:>12.2} {:>12.2} | {:>8.2}",
            r.op, r.ranks, r.size, r.host_us, r.device_us, r.ratio
        )?;
    }
    if !kernels.is_empty() {
        writeln!(
            t,
            "# reduction kernel (f32 sum) against a device copy, GB/s"
        )?;
        writeln!(
            t,
            "{:>10} | {:>10} {:>10} | {:>7}",
            "size", "reduce", "copy", "ratio"
        )?;
        for k in &kernels {
            writeln!(
                t,
                "{:>10} | {:>10.1} {:>10.1} | {:>7.2}",
                k.size, k.reduce_gbps, k.copy_gbps, k.ratio
            )?;
        }
    }
    out.finish(&DeviceReport {
        bench: "device".into(),
        machine: machine::describe(),
        device: describe,
        chunk: cfg.device_chunk,
        slots: cfg.device_slots,
        points,
        rows,
        kernels,
    })
}

fn cuda_name() -> &'static str {
    if cfg!(feature = "cuda") {
        ", cuda"
    } else {
        "; cuda needs --features cuda"
    }
}

/// The reduction kernel's and a copy's bandwidth on `dev`, per size.
fn kernel_rows<D: Device>(dev: &Arc<D>, sizes: &[usize]) -> anyhow::Result<Vec<KernelRow>> {
    let mut rows = Vec::new();
    for &size in sizes {
        let size = size / 4 * 4;
        if size == 0 {
            continue;
        }
        let mut acc = dev.alloc(size)?;
        let src = dev.alloc(size)?;
        let it = iters_for(size, None).max(5);
        let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            f()?;
            dev.synchronize()?;
            let t0 = Instant::now();
            for _ in 0..it {
                f()?;
            }
            dev.synchronize()?;
            Ok(t0.elapsed().as_secs_f64() / it as f64)
        };
        let r = time(&mut || {
            Ok(dev.reduce(DevOp::Sum, Dtype::F32, &mut acc, 0, &src, 0, size / 4)?)
        })?;
        let c = time(&mut || Ok(dev.copy(&src, 0, &mut acc, 0, size)?))?;
        let (reduce_gbps, copy_gbps) = (3.0 * size as f64 / r / 1e9, 2.0 * size as f64 / c / 1e9);
        rows.push(KernelRow {
            size,
            reduce_gbps,
            copy_gbps,
            ratio: reduce_gbps / copy_gbps,
        });
    }
    Ok(rows)
}

/// One rank of `device` (`device-rank`, started by it).
pub(crate) fn rank(a: DeviceRankArgs) -> anyhow::Result<()> {
    let sizes = schedule::parse_sizes(&a.sizes).map_err(anyhow::Error::msg)?;
    let mut comm = Communicator::from_env().context("joining the benchmark job")?;
    match a.device.as_str() {
        "host" => rank_on(&HostDevice::new(), &mut comm, &a, &sizes),
        #[cfg(feature = "cuda")]
        "cuda" => rank_on(&rfx_device::CudaDevice::open(0)?, &mut comm, &a, &sizes),
        other => bail!(
            "unknown device {other} (this build has: host{})",
            cuda_name()
        ),
    }
}

fn rank_on<D: Device>(
    dev: &Arc<D>,
    comm: &mut Communicator,
    a: &DeviceRankArgs,
    sizes: &[usize],
) -> anyhow::Result<()> {
    let (rank, n) = (comm.rank(), comm.size());
    if let Some(cpus) = core_affinity::get_core_ids() {
        if n <= cpus.len() {
            crate::pin::pin(Some(cpus[rank].id));
        }
    }
    for op in &a.ops {
        for &size in sizes {
            let count = (size / 4).max(1);
            let it = iters_for(size, a.iters);
            let wu = (it / 10).max(1);
            let block = if op == "allgather" || op == "reduce_scatter" {
                count * n
            } else {
                count
            };
            let mut h: Vec<f32> = (0..block).map(|i| ((i + rank) % 7) as f32).collect();
            let mut h2 = vec![0f32; block];
            let mut d = DeviceVec::from_slice(dev, &h)?;
            let mut d2 = DeviceVec::<f32, D>::zeros(dev, block)?;
            let host = coll::time_calls(comm, wu, it, coll::Method::Osu, |c| {
                match op.as_str() {
                    "allreduce" => c.allreduce(&mut h, ReduceOp::Sum)?,
                    "bcast" => c.bcast(&mut h, 0)?,
                    "reduce" => c.reduce(&mut h, 0, ReduceOp::Sum)?,
                    "allgather" => c.allgather(&h[..count], &mut h2)?,
                    "reduce_scatter" => c.reduce_scatter(&h, &mut h2[..count], ReduceOp::Sum)?,
                    other => bail!("unknown operation {other}"),
                }
                Ok(())
            })?;
            let mut part = DeviceVec::<f32, D>::zeros(dev, count)?;
            let device = coll::time_calls(comm, wu, it, coll::Method::Osu, |c| {
                match op.as_str() {
                    "allreduce" => c.allreduce_device(&mut d, ReduceOp::Sum)?,
                    "bcast" => c.bcast_device(&mut d, 0)?,
                    "reduce" => c.reduce_device(&mut d, 0, ReduceOp::Sum)?,
                    "allgather" => c.allgather_device(&part, &mut d2)?,
                    "reduce_scatter" => c.reduce_scatter_device(&d, &mut part, ReduceOp::Sum)?,
                    other => bail!("unknown operation {other}"),
                }
                Ok(())
            })?;
            for (imp, mine) in [("host", host), ("device", device)] {
                coll::report_point(comm, imp, op, size, it, mine)?;
            }
        }
    }
    Ok(())
}
