//! `rfx-bench throughput`: pipelined invocations per second.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rfx_fabric::{PollMode, TransportKind};

use super::{mode_name, parse_mode, Output, OutputArgs};
use crate::results::{ThroughputReport, ThroughputRow};
use crate::{library, machine, throughput};

#[derive(Args)]
pub(crate) struct ThroughputArgs {
    /// Providers to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp")]
    transport: Vec<TransportKind>,
    /// Client thread counts to measure (comma-separated); the executor has
    /// as many workers.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, visible_alias = "duration", default_value_t = 3.0)]
    duration_s: f64,
    /// Invocations in flight per client thread.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    /// Polling mode of clients and workers: hot or warm.
    #[arg(long, default_value = "hot", value_parser = parse_mode)]
    mode: PollMode,
    /// Function library with `noop` (default: build examples/functions in
    /// release mode).
    #[arg(long)]
    lib: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

pub(crate) fn run(args: ThroughputArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration_s.is_finite() && args.duration_s > 0.0 && args.duration_s <= 3600.0,
        "--duration-s must be in (0, 3600]"
    );
    anyhow::ensure!(
        args.threads.iter().all(|&t| (1..=256).contains(&t)),
        "--threads must be in 1..=256"
    );
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let lib = library::resolve(args.lib.as_deref())?;
    let duration = Duration::from_secs_f64(args.duration_s);
    let mut out = Output::new(&args.out);
    let table = &mut out.table;
    writeln!(
        table,
        "# rfx-bench throughput: pipelined noop invocations, depth {} per client, {:.1} s each, cpus {:?}",
        args.depth, args.duration_s, cpus
    )?;
    writeln!(table, "# library {}", lib.display())?;
    writeln!(
        table,
        "{:<5} {:<4} {:>3} {:>12} {:>12} | {:>9} {:>9} {:>9} | note",
        "prov", "mode", "thr", "inv/s", "inv/s/thr", "lat p50", "p99", "p999"
    )?;
    let mut results = Vec::new();
    for &kind in &args.transport {
        for &threads in &args.threads {
            let r = throughput::run(kind, args.mode, threads, args.depth, duration, &cpus, &lib)
                .with_context(|| format!("throughput {kind}, {threads} threads"))?;
            let invocations: u64 = r.threads.iter().map(|t| t.invocations).sum();
            let wall = r.threads.iter().map(|t| t.elapsed_s).fold(0.0, f64::max);
            let per_s = if wall > 0.0 {
                invocations as f64 / wall
            } else {
                0.0
            };
            let oversubscribed = 2 * threads > cpus.len();
            let note = if oversubscribed {
                format!(
                    "{threads} client + {threads} executor threads poll on {} cpus: they share cores",
                    cpus.len()
                )
            } else {
                String::new()
            };
            writeln!(
                table,
                "{:<5} {:<4} {:>3} {:>12.0} {:>12.0} | {:>9.2} {:>9.2} {:>9.2} | {}",
                kind.name(),
                mode_name(args.mode),
                threads,
                per_s,
                per_s / threads as f64,
                r.latency.p50_us,
                r.latency.p99_us,
                r.latency.p999_us,
                note
            )?;
            results.push(ThroughputRow {
                transport: kind,
                mode: mode_name(args.mode).into(),
                threads,
                depth: r.depth,
                oversubscribed,
                invocations,
                invocations_per_s: per_s,
                per_thread: r.threads,
                latency: r.latency,
            });
        }
    }
    writeln!(
        table,
        "goal: over 2 M noop invocations/s on one host (shm, pipelined)"
    )?;
    let report = ThroughputReport {
        bench: "throughput".into(),
        machine: machine::describe(),
        cpus,
        library: lib,
        duration_s: args.duration_s,
        goal_per_s: 2e6,
        results,
    };
    out.finish(&report)
}
