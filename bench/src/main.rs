//! `rfx-bench`: latency benchmarks of rfx, each printed next to a raw
//! baseline measured in the same run, with the ratio.
//!
//! ```text
//! rfx-bench transport [--transport tcp,shm] [--mode hot,warm] [--sizes 8,4k,1m]
//!                     [--iters N] [--warmup N] [--cpus 0,1] [--json [FILE|-]]
//! ```

mod baseline;
mod machine;
mod pin;
mod schedule;
mod stats;
mod transport;

use std::io::Write;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rfx_fabric::{PollMode, TransportKind};
use serde::Serialize;

use schedule::Step;
use stats::Summary;

#[derive(Parser)]
#[command(
    name = "rfx-bench",
    version,
    about = "rfx latency benchmarks against raw baselines"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// write_imm ping-pong per provider and size, hot and warm, against a
    /// raw TCP socket / raw shared-memory ping-pong.
    Transport(TransportArgs),
}

#[derive(Args)]
struct TransportArgs {
    /// Providers to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp")]
    transport: Vec<TransportKind>,
    /// Polling modes (comma-separated): hot (busy poll), warm (blocking).
    #[arg(long, value_delimiter = ',', default_value = "hot,warm", value_parser = parse_mode)]
    mode: Vec<PollMode>,
    /// Payload sizes, e.g. `8,4k,1m` (default: 8 B to 1 MiB, powers of 4).
    #[arg(long)]
    sizes: Option<String>,
    /// Measured iterations per size (default 10000 up to 8 KiB, 1000 above).
    #[arg(long)]
    iters: Option<u64>,
    /// Warm-up iterations per size (default 1000 up to 8 KiB, 100 above).
    #[arg(long)]
    warmup: Option<u64>,
    /// CPUs of the client and the server, e.g. `0,1` (default 0,1 when the
    /// machine has two).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<(usize, usize)>,
    /// Write results as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
}

fn parse_mode(s: &str) -> Result<PollMode, String> {
    match s.trim() {
        "hot" => Ok(PollMode::Hot),
        "warm" => Ok(PollMode::Warm),
        other => Err(format!("unknown mode {other:?}; expected hot or warm")),
    }
}

fn parse_cpus(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("expected two CPUs, e.g. 0,1")?;
    Ok((
        a.trim().parse().map_err(|e| format!("{e}"))?,
        b.trim().parse().map_err(|e| format!("{e}"))?,
    ))
}

fn mode_name(m: PollMode) -> &'static str {
    match m {
        PollMode::Hot => "hot",
        PollMode::Warm => "warm",
    }
}

#[derive(Serialize)]
struct Row {
    transport: TransportKind,
    mode: &'static str,
    size: usize,
    baseline: &'static str,
    rfx: Summary,
    raw: Summary,
    ratio_p50: f64,
    ratio_p99: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    bench: &'static str,
    machine: machine::Machine,
    cpus: (Option<usize>, Option<usize>),
    schedule: &'a [Step],
    results: Vec<Row>,
}

fn baseline_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Tcp => "raw tcp socket ping-pong",
        TransportKind::Shm => "raw shm flag ping-pong",
        _ => "none",
    }
}

fn transport(args: TransportArgs) -> anyhow::Result<()> {
    let sizes = match &args.sizes {
        Some(s) => schedule::parse_sizes(s).map_err(anyhow::Error::msg)?,
        None => schedule::default_sizes(),
    };
    let steps = schedule::schedule(&sizes, args.iters, args.warmup);
    let cpus = pin::pair(args.cpus);
    let to_stdout = args.json.as_deref() == Some("-");
    let mut table: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    writeln!(
        table,
        "# rfx-bench transport: write_imm round trip (us), client cpu {:?}, server cpu {:?}",
        cpus.0, cpus.1
    )?;
    writeln!(
        table,
        "{:<5} {:<4} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "prov",
        "mode",
        "size",
        "rfx p50",
        "p99",
        "p999",
        "raw p50",
        "p99",
        "p999",
        "x p50",
        "x p99"
    )?;
    let mut results = Vec::new();
    for &kind in &args.transport {
        for &mode in &args.mode {
            let rfx = transport::rfx_pingpong(kind, mode, &steps, cpus)
                .with_context(|| format!("rfx {kind} {}", mode_name(mode)))?;
            let raw = match kind {
                TransportKind::Tcp => baseline::tcp::pingpong(mode, &steps, cpus)?,
                TransportKind::Shm => baseline::shm::pingpong(mode, &steps, cpus)?,
                other => anyhow::bail!("no raw baseline for {other} in this build"),
            };
            for ((step, r), b) in steps.iter().zip(rfx).zip(raw) {
                let row = Row {
                    transport: kind,
                    mode: mode_name(mode),
                    size: step.size,
                    baseline: baseline_name(kind),
                    ratio_p50: r.p50_us / b.p50_us,
                    ratio_p99: r.p99_us / b.p99_us,
                    rfx: r,
                    raw: b,
                };
                writeln!(
                    table,
                    "{:<5} {:<4} {:>8} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>6.2} {:>6.2}",
                    kind.name(),
                    row.mode,
                    step.size,
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    b.p50_us,
                    b.p99_us,
                    b.p999_us,
                    row.ratio_p50,
                    row.ratio_p99
                )?;
                results.push(row);
            }
        }
    }
    if let Some(path) = args.json {
        let report = Report {
            bench: "transport",
            machine: machine::describe(),
            cpus,
            schedule: &steps,
            results,
        };
        let json = serde_json::to_string_pretty(&report)?;
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(&path, json + "\n").with_context(|| format!("writing {path}"))?;
            writeln!(table, "results written to {path}")?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Transport(a) => transport(a),
    }
}
