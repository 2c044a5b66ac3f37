//! `rfx-bench`: latency benchmarks of rfx, each printed next to a raw
//! baseline measured in the same run, with the ratio.
//!
//! ```text
//! rfx-bench transport [--transport tcp,shm] [--mode hot,warm] [--sizes 8,4k,1m]
//!                     [--iters N] [--warmup N] [--cpus 0,1] [--json [FILE|-]]
//! rfx-bench invoke [--transport shm,tcp] [--mode hot,warm] [--sizes ...] [--iters N]
//!                  [--warmup N] [--cpus 0,1] [--lib PATH] [--json [FILE|-]]
//! rfx-bench throughput [--transport shm,tcp] [--threads 1,2] [--duration-s 3]
//!                      [--depth 32] [--mode hot] [--lib PATH] [--json [FILE|-]]
//! rfx-bench cold-start [--with-lease|--direct] [--transport shm,tcp] [--iters 20]
//!                      [--lib PATH] [--json [FILE|-]]
//! rfx-bench coll [--ranks 2,4] [--ops allreduce,bcast,...] [--sizes 8,1k,1m] [--iters N]
//!                [--mpi target/coll_lat] [--transport auto] [--json [FILE|-]]
//! rfx-bench all [--json out/] [--sizes ...] [--iters N] [--warmup N] [--duration S]
//! rfx-bench report [out/]
//! ```
//!
//! Every measuring subcommand also takes `--csv FILE` (one line per result
//! row, nested fields flattened to `a.b` columns).

mod all;
mod baseline;
mod cold_start;
mod coll;
mod invoke;
mod library;
mod load;
mod machine;
mod pin;
mod report;
mod schedule;
mod stats;
mod throughput;
mod transport;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Round trips of `noop` and `echo` invocations through an in-process
    /// executor, per size, hot and warm, against the rfx transport round
    /// trip measured in the same run.
    Invoke(InvokeArgs),
    /// Pipelined `noop` invocations per second, N client threads each with
    /// its own connection to a worker of an in-process executor.
    Throughput(ThroughputArgs),
    /// Lease (or, with --direct, spawn an `rfx executor` process), connect,
    /// ship the library, first `noop` result: the time of each phase,
    /// against a trivial spawn.
    ColdStart(ColdStartArgs),
    /// OSU-style latency of each collective per size and rank count, and
    /// with --mpi of an MPI implementation in the same run, with the ratio.
    Coll(CollArgs),
    /// Bounded load test: many tenants leasing, invoking and releasing
    /// against one lease manager and several executor managers (child
    /// processes); counts errors and lost results, latency under load.
    Load(load::LoadArgs),
    /// One rank of `coll` (started by it).
    #[command(hide = true)]
    CollRank(CollRankArgs),
    /// Every benchmark above with its baselines found on this machine
    /// (scripts/baselines.sh installs them), one JSON file each in a
    /// directory, plus `all.json` saying what ran and what was missing.
    All(all::AllArgs),
    /// Reads the result files of a directory (`all --json DIR`) and writes
    /// DIR/report.md and DIR/report.html with SVG plots in DIR/plots/.
    Report(report::ReportArgs),
}

/// What each rank of `coll` measures.
#[derive(Args, Clone)]
struct CollRankArgs {
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
}

#[derive(Args)]
struct CollArgs {
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
    /// The MPI launcher.
    #[arg(long, default_value = "mpirun")]
    mpirun: String,
    /// Bound on each run of one implementation at one rank count.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Write results as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Also write the result rows as CSV to FILE.
    #[arg(long)]
    csv: Option<String>,
}

/// The options `transport` and `invoke` share: what to ping-pong, how.
#[derive(Args)]
struct PingPongArgs {
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
    /// CPUs of the client and the server (executor), e.g. `0,1` (default
    /// 0,1 when the machine has two).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<(usize, usize)>,
    /// Write results as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Also write the result rows as CSV to FILE.
    #[arg(long)]
    csv: Option<String>,
}

impl PingPongArgs {
    /// The schedule of sizes and iterations, and the two CPUs.
    fn plan(&self) -> anyhow::Result<(Vec<Step>, pin::CpuPair)> {
        let sizes = match &self.sizes {
            Some(s) => schedule::parse_sizes(s).map_err(anyhow::Error::msg)?,
            None => schedule::default_sizes(),
        };
        Ok((
            schedule::schedule(&sizes, self.iters, self.warmup),
            pin::pair(self.cpus),
        ))
    }
}

#[derive(Args)]
struct TransportArgs {
    #[command(flatten)]
    common: PingPongArgs,
    /// The operation: `write` (write_imm ping-pong: write, peer writes
    /// back) or `read` (one-sided read of the peer's memory; raw baselines:
    /// a 24-byte request answered by the size over TCP, one copy out of a
    /// shared mapping for shm, none in-process for verbs and ofi).
    #[arg(long, default_value = "write", value_parser = ["write", "read"])]
    op: String,
}

#[derive(Args)]
struct InvokeArgs {
    #[command(flatten)]
    common: PingPongArgs,
    /// Function library with `noop` and `echo` (default: build
    /// examples/functions in release mode).
    #[arg(long)]
    lib: Option<PathBuf>,
    /// Input bytes an executor slot holds, e.g. `64k` (the executor's
    /// default): larger inputs travel by one-sided read. Default: the
    /// largest size, so every input is written inline, like for like with
    /// the write_imm round trip.
    #[arg(long, value_parser = parse_size)]
    slot_size: Option<usize>,
}

#[derive(Args)]
struct ThroughputArgs {
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
    /// Write results as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Also write the result rows as CSV to FILE.
    #[arg(long)]
    csv: Option<String>,
}

#[derive(Args)]
struct ColdStartArgs {
    /// Providers to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp")]
    transport: Vec<TransportKind>,
    /// Measure the full chain (default): a lease manager and an executor
    /// manager run as children of `rfx`; each iteration creates a lease,
    /// waits for the manager's lookup to answer with the executor's
    /// address, connects, ships the library, first `noop` result, then
    /// releases the lease (untimed).
    #[arg(long, conflicts_with = "direct")]
    with_lease: bool,
    /// Spawn `rfx executor` directly instead (no lease, no managers).
    #[arg(long)]
    direct: bool,
    /// The executor manager's sandbox for the lease chain: `strict` or
    /// `off` (default: the manager's, strict as root).
    #[arg(long, conflicts_with = "direct")]
    sandbox: Option<String>,
    /// The executor manager's standby executors in strict mode
    /// (`--sandbox-standby`; default: the manager's, 1): 0 spawns every
    /// lease's executor at its lease.
    #[arg(long, conflicts_with = "direct")]
    standby: Option<usize>,
    /// Cold starts per provider (and spawns of the floor).
    #[arg(long, default_value_t = 20)]
    iters: u64,
    /// How the client waits for the first result: hot (busy poll; the
    /// executor is hot for 10 ms after set-up) or warm (both block).
    #[arg(long, default_value = "hot", value_parser = parse_mode)]
    mode: PollMode,
    /// CPUs of the client and of the executor's worker, e.g. `0,1`
    /// (default 0,1 when the machine has two): two busy pollers on one CPU
    /// cost a scheduler slice (~ms).
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<(usize, usize)>,
    /// Function library with `noop`, shipped to each executor (default:
    /// build examples/functions in release mode).
    #[arg(long)]
    lib: Option<PathBuf>,
    /// Write results as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Also write the result rows as CSV to FILE.
    #[arg(long)]
    csv: Option<String>,
}

/// Where the table and the JSON go: with `--json -` the JSON takes stdout
/// and the table goes to stderr.
struct Output {
    table: Box<dyn Write>,
    json: Option<String>,
    csv: Option<String>,
}

impl Output {
    fn new(json: Option<String>) -> Output {
        let table: Box<dyn Write> = if json.as_deref() == Some("-") {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        Output {
            table,
            json,
            csv: None,
        }
    }

    /// Also writes the result rows as CSV to `csv`, if given.
    fn with_csv(mut self, csv: Option<String>) -> Output {
        self.csv = csv;
        self
    }

    fn finish<T: Serialize>(mut self, report: &T) -> anyhow::Result<()> {
        if let Some(path) = self.csv.take() {
            report::csv::write(Path::new(&path), &serde_json::to_value(report)?)?;
            writeln!(self.table, "rows written to {path}")?;
        }
        let Some(path) = self.json.take() else {
            return Ok(());
        };
        let json = serde_json::to_string_pretty(report)?;
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(&path, json + "\n").with_context(|| format!("writing {path}"))?;
            writeln!(self.table, "results written to {path}")?;
        }
        Ok(())
    }
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
    op: &'static str,
    mode: &'static str,
    size: usize,
    baseline: Option<&'static str>,
    rfx: Summary,
    raw: Option<Summary>,
    ratio_p50: Option<f64>,
    ratio_p99: Option<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    bench: &'static str,
    machine: machine::Machine,
    cpus: (Option<usize>, Option<usize>),
    schedule: &'a [Step],
    results: Vec<Row>,
}

fn baseline_name(kind: TransportKind, read: bool) -> &'static str {
    match (kind, read) {
        (TransportKind::Tcp, false) => "raw tcp socket ping-pong",
        (TransportKind::Shm, false) => "raw shm flag ping-pong",
        (TransportKind::Ofi, false) => {
            "libfabric fi_pingpong, same provider (mean round trip, busy poll)"
        }
        (TransportKind::Verbs, false) => {
            "raw WRITE_WITH_IMM ping-pong (ib_write_lat --write_with_imm's loop), busy poll"
        }
        (TransportKind::Tcp, true) => "raw tcp socket, 24-byte request, size-byte reply",
        (TransportKind::Shm, true) => "one copy out of a shared mapping",
        _ => "none",
    }
}

fn transport(TransportArgs { common: args, op }: TransportArgs) -> anyhow::Result<()> {
    let (steps, cpus) = args.plan()?;
    let read = op == "read";
    let mut out = Output::new(args.json.clone()).with_csv(args.csv.clone());
    let table = &mut out.table;
    writeln!(
        table,
        "# rfx-bench transport: {} (us), client cpu {:?}, server cpu {:?}",
        if read {
            "one-sided read"
        } else {
            "write_imm round trip"
        },
        cpus.0,
        cpus.1
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
            let what = || format!("rfx {op} {kind} {}", mode_name(mode));
            let (rfx, raw) = if read {
                let rfx = transport::rfx_read(kind, mode, &steps, cpus).with_context(what)?;
                let raw = match kind {
                    TransportKind::Tcp => Some(baseline::tcp::request_reply(
                        mode,
                        &steps,
                        cpus,
                        rfx_fabric::wire::FRAME_HEADER_LEN,
                    )?),
                    TransportKind::Shm => Some(baseline::shm::copy_out(&steps, cpus)?),
                    _ => None,
                };
                (rfx, raw)
            } else {
                let rfx = transport::rfx_pingpong(kind, mode, &steps, cpus).with_context(what)?;
                let raw = match kind {
                    TransportKind::Tcp => Some(baseline::tcp::pingpong(mode, &steps, cpus)?),
                    TransportKind::Shm => Some(baseline::shm::pingpong(mode, &steps, cpus)?),
                    #[cfg(feature = "ofi")]
                    TransportKind::Ofi => Some(baseline::ofi::pingpong(&steps, cpus)?),
                    #[cfg(feature = "verbs")]
                    TransportKind::Verbs if mode == PollMode::Hot => {
                        Some(baseline::verbs::pingpong(&steps, cpus)?)
                    }
                    _ => None,
                };
                (rfx, raw)
            };
            let mut raw = raw.map(Vec::into_iter);
            for (step, r) in steps.iter().zip(rfx) {
                let b = raw.as_mut().and_then(Iterator::next);
                let row = Row {
                    transport: kind,
                    op: if read { "read" } else { "write" },
                    mode: mode_name(mode),
                    size: step.size,
                    baseline: b.as_ref().map(|_| baseline_name(kind, read)),
                    ratio_p50: b.as_ref().map(|b| r.p50_us / b.p50_us),
                    ratio_p99: b.as_ref().map(|b| r.p99_us / b.p99_us),
                    rfx: r,
                    raw: b,
                };
                let cell = |v: Option<f64>, w: usize| match v {
                    Some(v) => format!("{v:>w$.2}"),
                    None => format!("{:>w$}", "-"),
                };
                let raw = row.raw.as_ref();
                writeln!(
                    table,
                    "{:<5} {:<4} {:>8} | {:>8.2} {:>8.2} {:>8.2} | {} {} {} | {} {}",
                    kind.name(),
                    row.mode,
                    step.size,
                    row.rfx.p50_us,
                    row.rfx.p99_us,
                    row.rfx.p999_us,
                    cell(raw.map(|b| b.p50_us), 8),
                    cell(raw.map(|b| b.p99_us), 8),
                    cell(raw.map(|b| b.p999_us), 8),
                    cell(row.ratio_p50, 6),
                    cell(row.ratio_p99, 6)
                )?;
                results.push(row);
            }
        }
    }
    let report = Report {
        bench: "transport",
        machine: machine::describe(),
        cpus,
        schedule: &steps,
        results,
    };
    out.finish(&report)
}

// ---------------------------------------------------------------------------
// invoke

/// The `docs/design.md` goal for a no-op 8 B invocation: p50 within this factor of
/// the transport's round trip.
fn invoke_goal(kind: TransportKind) -> Option<f64> {
    match kind {
        TransportKind::Shm => Some(1.3),
        TransportKind::Tcp => Some(1.15),
        TransportKind::Verbs => Some(1.2),
        _ => None,
    }
}

#[derive(Serialize)]
struct InvokeRow {
    transport: TransportKind,
    mode: &'static str,
    function: &'static str,
    size: usize,
    invoke: Summary,
    /// The rfx write_imm round trip of the same size (`transport` bench).
    transport_pingpong: Summary,
    ratio_p50: f64,
    ratio_p99: f64,
}

#[derive(Serialize)]
struct Goal {
    transport: TransportKind,
    mode: &'static str,
    what: &'static str,
    ratio_p50: f64,
    limit: f64,
    met: bool,
}

#[derive(Serialize)]
struct InvokeReport<'a> {
    bench: &'static str,
    machine: machine::Machine,
    cpus: (Option<usize>, Option<usize>),
    library: &'a Path,
    baseline: &'static str,
    schedule: &'a [Step],
    results: Vec<InvokeRow>,
    goals: Vec<Goal>,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match schedule::parse_sizes(s)?.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("one size expected, got {s:?}")),
    }
}

fn invoke(
    InvokeArgs {
        common: args,
        lib,
        slot_size,
    }: InvokeArgs,
) -> anyhow::Result<()> {
    let (steps, cpus) = args.plan()?;
    let lib = library::resolve(lib.as_deref())?;
    let mut out = Output::new(args.json.clone()).with_csv(args.csv.clone());
    let table = &mut out.table;
    writeln!(
        table,
        "# rfx-bench invoke: invocation round trip (us) vs rfx write_imm round trip, \
         client cpu {:?}, executor cpu {:?}",
        cpus.0, cpus.1
    )?;
    writeln!(table, "# library {}", lib.display())?;
    if let Some(slot) = slot_size {
        writeln!(
            table,
            "# slots of {slot} B: larger inputs are read by the executor (one-sided read)"
        )?;
    }
    writeln!(
        table,
        "{:<5} {:<4} {:<5} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "prov",
        "mode",
        "func",
        "size",
        "inv p50",
        "p99",
        "p999",
        "rt p50",
        "p99",
        "p999",
        "x p50",
        "x p99"
    )?;
    let mut results = Vec::new();
    let mut goals = Vec::new();
    for &kind in &args.transport {
        for &mode in &args.mode {
            let what = || format!("{kind} {}", mode_name(mode));
            let inv = invoke::latency(kind, mode, &steps, cpus, &lib, slot_size)
                .with_context(|| format!("invoke {}", what()))?;
            let rt = transport::rfx_pingpong(kind, mode, &steps, cpus)
                .with_context(|| format!("rfx transport {}", what()))?;
            for (function, series) in invoke::FUNCTIONS.into_iter().zip(inv) {
                for ((step, i), t) in steps.iter().zip(series).zip(&rt) {
                    let row = InvokeRow {
                        transport: kind,
                        mode: mode_name(mode),
                        function,
                        size: step.size,
                        invoke: i,
                        transport_pingpong: *t,
                        ratio_p50: i.p50_us / t.p50_us,
                        ratio_p99: i.p99_us / t.p99_us,
                    };
                    writeln!(
                        table,
                        "{:<5} {:<4} {:<5} {:>8} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>6.2} {:>6.2}",
                        kind.name(),
                        row.mode,
                        function,
                        step.size,
                        i.p50_us,
                        i.p99_us,
                        i.p999_us,
                        t.p50_us,
                        t.p99_us,
                        t.p999_us,
                        row.ratio_p50,
                        row.ratio_p99
                    )?;
                    if function == "noop" && step.size == 8 {
                        if let Some(limit) = invoke_goal(kind) {
                            goals.push(Goal {
                                transport: kind,
                                mode: row.mode,
                                what: "noop 8 B p50 / transport round trip p50",
                                ratio_p50: row.ratio_p50,
                                limit,
                                met: row.ratio_p50 <= limit,
                            });
                        }
                    }
                    results.push(row);
                }
            }
        }
    }
    for g in &goals {
        writeln!(
            table,
            "goal {} {}: noop 8 B x{:.2} of the transport round trip (p50), goal <= {:.2}: {}",
            g.transport.name(),
            g.mode,
            g.ratio_p50,
            g.limit,
            if g.met { "met" } else { "missed" }
        )?;
    }
    let report = InvokeReport {
        bench: "invoke",
        machine: machine::describe(),
        cpus,
        library: &lib,
        baseline: "rfx write_imm ping-pong (rfx-bench transport), same run, same cpus and mode",
        schedule: &steps,
        results,
        goals,
    };
    out.finish(&report)
}

// ---------------------------------------------------------------------------
// throughput

#[derive(Serialize)]
struct ThroughputRow {
    transport: TransportKind,
    mode: &'static str,
    threads: usize,
    depth: usize,
    /// Client plus executor threads polling, above the CPUs available.
    oversubscribed: bool,
    invocations: u64,
    invocations_per_s: f64,
    per_thread: Vec<throughput::ThreadStats>,
    /// Submit-to-result time of one invocation in 16, in the pipeline.
    latency: Summary,
}

#[derive(Serialize)]
struct ThroughputReport<'a> {
    bench: &'static str,
    machine: machine::Machine,
    cpus: &'a [usize],
    library: &'a Path,
    duration_s: f64,
    goal_per_s: f64,
    results: Vec<ThroughputRow>,
}

fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
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
    let mut out = Output::new(args.json.clone()).with_csv(args.csv.clone());
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
                mode: mode_name(args.mode),
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
        bench: "throughput",
        machine: machine::describe(),
        cpus: &cpus,
        library: &lib,
        duration_s: args.duration_s,
        goal_per_s: 2e6,
        results,
    };
    out.finish(&report)
}

// ---------------------------------------------------------------------------
// cold-start

#[derive(Serialize)]
struct ColdStartRow {
    /// `lease` (the full chain through the managers) or `direct`.
    chain: &'static str,
    transport: TransportKind,
    mode: &'static str,
    iters: u64,
    /// The CreateLease round trip (lease chain only).
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<cold_start::Spread>,
    spawn: cold_start::Spread,
    /// Spawn to the address on stderr (direct chain only).
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<cold_start::Spread>,
    connect: cold_start::Spread,
    load: cold_start::Spread,
    first_result: cold_start::Spread,
    total: cold_start::Spread,
    /// The phases of each sample, in order.
    phases: [&'static str; 6],
    /// Per iteration, nanoseconds of each phase.
    samples_ns: Vec<cold_start::Sample>,
    /// Release waits (until the lookup forgets the lease) that hit their
    /// bound (lease chain only).
    #[serde(skip_serializing_if = "Option::is_none")]
    release_timeouts: Option<u64>,
}

#[derive(Serialize)]
struct Floor {
    what: String,
    spread: cold_start::Spread,
}

#[derive(Serialize)]
struct ColdStartReport<'a> {
    bench: &'static str,
    chain: &'static str,
    machine: machine::Machine,
    rfx: &'a Path,
    library: &'a Path,
    library_bytes: u64,
    cpus: (Option<usize>, Option<usize>),
    goal_total_p50_us: f64,
    floor: Vec<Floor>,
    results: Vec<ColdStartRow>,
}

fn cold_start(args: ColdStartArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=100_000).contains(&args.iters),
        "--iters must be in 1..=100000"
    );
    let leased = !args.direct;
    let chain = if leased { "lease" } else { "direct" };
    let rfx = cold_start::rfx_binary()?;
    let mut cpus = pin::pair(args.cpus);
    let lib = library::resolve(args.lib.as_deref())?;
    let library_bytes = std::fs::metadata(&lib)?.len();
    let mut out = Output::new(args.json.clone()).with_csv(args.csv.clone());
    // The managers start before this thread is pinned, so that they (and
    // the executors they spawn) are not confined to the client's CPU.
    let mut cluster = if leased {
        let c = cold_start::Cluster::start(&rfx, args.mode, args.sandbox.as_deref(), args.standby)
            .context("starting a lease manager and an executor manager")?;
        // The executor's worker runs on the leased core: keep the client
        // off it (two busy pollers on one CPU cost a scheduler slice).
        let on_lease = |cpu: Option<usize>| cpu.is_some_and(|id| c.executor_cpus.contains(&id));
        let client = [cpus.0, cpus.1]
            .into_iter()
            .find(|&cpu| !on_lease(cpu))
            .unwrap_or(None);
        cpus = (client, c.executor_cpus.first().copied());
        Some(c)
    } else {
        None
    };
    let table = &mut out.table;
    if leased {
        writeln!(
            table,
            "# rfx-bench cold-start --with-lease: create_lease to first noop result (us), {} \
             iterations, {} wait, client cpu {:?}, leased executor cpu {:?}",
            args.iters,
            mode_name(args.mode),
            cpus.0,
            cpus.1
        )?;
        writeln!(
            table,
            "# lease manager and executor manager children of {}; lease: create_lease round \
             trip; spawn: until the manager's lookup answers with the executor's address",
            rfx.display()
        )?;
    } else {
        writeln!(
            table,
            "# rfx-bench cold-start --direct: `rfx executor` spawn to first noop result (us), {} \
             iterations, {} wait, client cpu {:?}, executor worker cpu {:?}",
            args.iters,
            mode_name(args.mode),
            cpus.0,
            cpus.1
        )?;
    }
    writeln!(
        table,
        "# rfx {}, library {} ({library_bytes} B, shipped)",
        rfx.display(),
        lib.display()
    )?;
    writeln!(
        table,
        "{:<6} {:<5} {:<12} | {:>9} {:>9} {:>9}",
        "chain", "prov", "phase", "p50", "p90", "max"
    )?;
    let mut floor = Vec::new();
    for (what, program, fargs) in [
        (
            "/bin/true (fork+exec+wait)",
            Path::new("/bin/true"),
            &[][..],
        ),
        (
            "rfx --version (fork+exec+wait)",
            rfx.as_path(),
            &["--version"][..],
        ),
    ] {
        let spread = cold_start::Spread::of(&cold_start::spawn_floor(program, fargs, args.iters)?);
        writeln!(
            table,
            "{:<6} {:<5} {:<12} | {:>9.1} {:>9.1} {:>9.1}   {what}",
            "floor", "", "", spread.p50_us, spread.p90_us, spread.max_us
        )?;
        floor.push(Floor {
            what: what.to_string(),
            spread,
        });
    }
    // Pinned after the floor, so that the trivial spawns run as usual; the
    // executor processes inherit this thread's CPU until their worker pins
    // itself.
    pin::pin(cpus.0);
    let mut results = Vec::new();
    for &kind in &args.transport {
        let (samples, phases, release_timeouts) = match cluster.as_mut() {
            Some(c) => {
                let before = c.release_timeouts();
                let s = cold_start::run_leased(c, kind, args.mode, args.iters, &lib)?;
                (
                    s,
                    cold_start::LEASE_PHASES,
                    Some(c.release_timeouts() - before),
                )
            }
            None => (
                cold_start::run(&rfx, kind, args.mode, cpus.1, args.iters, &lib)?,
                cold_start::PHASES,
                None,
            ),
        };
        let spreads: Vec<cold_start::Spread> = (0..phases.len())
            .map(|p| cold_start::Spread::of(&samples.iter().map(|s| s[p]).collect::<Vec<_>>()))
            .collect();
        for (phase, s) in phases.iter().zip(&spreads) {
            writeln!(
                table,
                "{:<6} {:<5} {:<12} | {:>9.1} {:>9.1} {:>9.1}",
                chain,
                kind.name(),
                phase,
                s.p50_us,
                s.p90_us,
                s.max_us
            )?;
        }
        let (lease, spawn, listen) = if leased {
            (Some(spreads[0]), spreads[1], None)
        } else {
            (None, spreads[0], Some(spreads[1]))
        };
        results.push(ColdStartRow {
            chain,
            transport: kind,
            mode: mode_name(args.mode),
            iters: args.iters,
            lease,
            spawn,
            listen,
            connect: spreads[2],
            load: spreads[3],
            first_result: spreads[4],
            total: spreads[5],
            phases,
            samples_ns: samples,
            release_timeouts,
        });
    }
    if let Some(n) = results.iter().filter_map(|r| r.release_timeouts).max() {
        if n > 0 {
            writeln!(
                table,
                "note: {n} released lease(s) still known to the lookup after the bounded wait"
            )?;
        }
    }
    writeln!(
        table,
        "goal: cold start (lease + spawn + connect + first result) under 10 ms p50{}",
        if leased { "" } else { "; no lease here" }
    )?;
    // Stop the managers before writing the report.
    drop(cluster);
    let report = ColdStartReport {
        bench: "cold-start",
        chain,
        machine: machine::describe(),
        rfx: &rfx,
        library: &lib,
        library_bytes,
        cpus,
        goal_total_p50_us: 10_000.0,
        floor,
        results,
    };
    out.finish(&report)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Transport(a) => transport(a),
        Cmd::Invoke(a) => invoke(a),
        Cmd::Throughput(a) => throughput(a),
        Cmd::ColdStart(a) => cold_start(a),
        Cmd::Coll(a) => coll(a),
        Cmd::Load(a) => load::run(a),
        Cmd::All(a) => all::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::CollRank(a) => {
            let sizes = schedule::parse_sizes(&a.sizes).map_err(anyhow::Error::msg)?;
            coll::rank_main(&a.ops, &sizes, a.iters, a.warmup)
        }
    }
}

#[derive(Serialize)]
struct CollRow {
    op: String,
    ranks: usize,
    size: usize,
    rfx_avg_us: f64,
    mpi_avg_us: Option<f64>,
    ratio: Option<f64>,
}

fn coll(args: CollArgs) -> anyhow::Result<()> {
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
    let mut out = Output::new(args.json.clone()).with_csv(args.csv.clone());
    let mut points = Vec::new();
    for &n in &args.ranks {
        anyhow::ensure!(n >= 1, "--ranks must be at least 1");
        // One implementation at a time: on a small machine they would share cores.
        points.extend(coll::run_rfx(n, &common, &args.transport, limit)?);
        if let Some(bin) = &args.mpi {
            points.extend(coll::run_mpi(&args.mpirun, bin, n, &common, limit)?);
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
    writeln!(
        t,
        "# rfx-bench coll: mean over ranks of per-call latency (us), transport {}",
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
    #[derive(Serialize)]
    struct CollReport {
        bench: &'static str,
        machine: machine::Machine,
        transport: String,
        points: Vec<coll::Point>,
        rows: Vec<CollRow>,
    }
    out.finish(&CollReport {
        bench: "coll",
        machine: machine::describe(),
        transport: args.transport.clone(),
        points,
        rows,
    })
}
