//! Each subcommand of `rfx-bench`: its arguments and its driver, one module
//! each; what they share (the ping-pong options, the output, the parsers)
//! is here. The measurements themselves live in the crate's other modules.

pub(crate) mod cold_start;
pub(crate) mod coll;
pub(crate) mod device;
pub(crate) mod invoke;
pub(crate) mod mpi;
pub(crate) mod throughput;
pub(crate) mod transport;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use rfx_fabric::{PollMode, TransportKind};

use crate::results::ResultFile;
use crate::schedule::{self, Step};
use crate::{pin, report};

/// The options `transport` and `invoke` share: what to ping-pong, how.
#[derive(Args)]
pub(crate) struct PingPongArgs {
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
    #[command(flatten)]
    out: OutputArgs,
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

/// Where results go (`--json`, `--csv`): every measuring subcommand's.
#[derive(Args, Clone)]
pub(crate) struct OutputArgs {
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
pub(crate) struct Output {
    table: Box<dyn Write>,
    json: Option<String>,
    csv: Option<String>,
}

impl Output {
    fn new(args: &OutputArgs) -> Output {
        let table: Box<dyn Write> = if args.json.as_deref() == Some("-") {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        Output {
            table,
            json: args.json.clone(),
            csv: args.csv.clone(),
        }
    }

    fn finish<T: ResultFile>(mut self, report: &T) -> anyhow::Result<()> {
        if let Some(path) = self.csv.take() {
            report::csv::write(Path::new(&path), report.rows())?;
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

pub(crate) fn parse_mode(s: &str) -> Result<PollMode, String> {
    match s.trim() {
        "hot" => Ok(PollMode::Hot),
        "warm" => Ok(PollMode::Warm),
        other => Err(format!("unknown mode {other:?}; expected hot or warm")),
    }
}

pub(crate) fn parse_cpus(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("expected two CPUs, e.g. 0,1")?;
    Ok((
        a.trim().parse().map_err(|e| format!("{e}"))?,
        b.trim().parse().map_err(|e| format!("{e}"))?,
    ))
}

pub(crate) fn mode_name(m: PollMode) -> &'static str {
    match m {
        PollMode::Hot => "hot",
        PollMode::Warm => "warm",
    }
}
