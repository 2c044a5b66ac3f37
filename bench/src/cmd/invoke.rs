//! `rfx-bench invoke`: invocation round trips through an in-process executor.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rfx_fabric::{PollMode, TransportKind};

use super::{mode_name, Output, PingPongArgs};
use crate::results::{InvokeGoal, InvokeReport, InvokeRow};
use crate::schedule;
use crate::{invoke, library, machine, transport};

#[derive(Args)]
pub(crate) struct InvokeArgs {
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
    /// How the executor waits, when not as the client (`--mode`) does:
    /// `--mode hot --executor-mode warm` is a client that busy-polls for its
    /// result while the executor sleeps between invocations (rFaaS's warm
    /// executors); its baseline is the hot round trip.
    #[arg(long, value_parser = super::parse_mode)]
    executor_mode: Option<PollMode>,
}

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

fn parse_size(s: &str) -> Result<usize, String> {
    match schedule::parse_sizes(s)?.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("one size expected, got {s:?}")),
    }
}

pub(crate) fn run(
    InvokeArgs {
        common: args,
        lib,
        slot_size,
        executor_mode,
    }: InvokeArgs,
) -> anyhow::Result<()> {
    let (steps, cpus) = args.plan()?;
    let lib = library::resolve(lib.as_deref())?;
    let mut out = Output::new(&args.out);
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
        "{:<5} {:<13} {:<5} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6}",
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
            let exec_mode = executor_mode.unwrap_or(mode);
            let label = if exec_mode == mode {
                mode_name(mode).to_string()
            } else {
                format!("{}/{}-exec", mode_name(mode), mode_name(exec_mode))
            };
            let what = || format!("{kind} {label}");
            let inv = invoke::latency(kind, mode, exec_mode, &steps, cpus, &lib, slot_size)
                .with_context(|| format!("invoke {}", what()))?;
            let rt = transport::rfx_pingpong(kind, mode, &steps, cpus, false)
                .with_context(|| format!("rfx transport {}", what()))?;
            for (function, series) in invoke::FUNCTIONS.into_iter().zip(inv) {
                for ((step, i), t) in steps.iter().zip(series).zip(&rt) {
                    let row = InvokeRow {
                        transport: kind,
                        mode: label.clone(),
                        function: function.into(),
                        size: step.size,
                        invoke: i,
                        transport_pingpong: *t,
                        ratio_p50: i.p50_us / t.p50_us,
                        ratio_p99: i.p99_us / t.p99_us,
                    };
                    writeln!(
                        table,
                        "{:<5} {:<13} {:<5} {:>8} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>6.2} {:>6.2}",
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
                    if function == "noop" && step.size == 8 && exec_mode == mode {
                        if let Some(limit) = invoke_goal(kind) {
                            goals.push(InvokeGoal {
                                transport: kind,
                                mode: row.mode.clone(),
                                what: "noop 8 B p50 / transport round trip p50".into(),
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
        bench: "invoke".into(),
        machine: machine::describe(),
        cpus,
        library: lib,
        baseline: "rfx write_imm ping-pong (rfx-bench transport), same run, same cpus and mode"
            .into(),
        schedule: steps,
        results,
        goals,
    };
    out.finish(&report)
}
