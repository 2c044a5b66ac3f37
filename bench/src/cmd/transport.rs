//! `rfx-bench transport`: write_imm ping-pong per provider and size.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use rfx_fabric::TransportKind;

use super::{mode_name, Output, PingPongArgs};
use crate::results::{TransportReport, TransportRow};
use crate::{baseline, machine, transport};

#[derive(Args)]
pub(crate) struct TransportArgs {
    #[command(flatten)]
    common: PingPongArgs,
    /// The operation: `write` (write_imm ping-pong: write, peer writes
    /// back), `echo` (the same, but both peers read the payload that
    /// arrived, as an `echo` invocation does: moving its cache lines between
    /// cores is part of the figure; no raw baseline) or `read` (one-sided
    /// read of the peer's memory; raw baselines: a 24-byte request answered
    /// by the size over TCP, one copy out of a shared mapping for shm, none
    /// in-process for verbs and ofi) or `read-lent` (a rendezvous's read of
    /// a buffer that is not registered: lend, one-sided read, end the loan,
    /// all timed; providers with Caps::LEND, i.e. verbs and ofi but its
    /// shm; baseline: rfx's `read` of an exposed region of the same size,
    /// in the same run).
    #[arg(long, default_value = "write", value_parser = ["write", "echo", "read", "read-lent"])]
    op: String,
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
        (TransportKind::Verbs, true) => "rfx read of an exposed (registered) region",
        _ => "none",
    }
}

pub(crate) fn run(TransportArgs { common: args, op }: TransportArgs) -> anyhow::Result<()> {
    let (steps, cpus) = args.plan()?;
    let read = op == "read" || op == "read-lent";
    let mut out = Output::new(&args.out);
    let table = &mut out.table;
    writeln!(
        table,
        "# rfx-bench transport: {} (us), client cpu {:?}, server cpu {:?}",
        match op.as_str() {
            "read" => "one-sided read",
            "read-lent" => "lend + one-sided read + end of the loan",
            "echo" => "write_imm round trip, payload read on both sides",
            _ => "write_imm round trip",
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
            let (rfx, raw) = if op == "read-lent" {
                let rfx = transport::rfx_read_lent(kind, &steps, cpus).with_context(what)?;
                let raw = transport::rfx_read(kind, mode, &steps, cpus).with_context(what)?;
                (rfx, Some(raw))
            } else if read {
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
                let echo = op == "echo";
                let rfx =
                    transport::rfx_pingpong(kind, mode, &steps, cpus, echo).with_context(what)?;
                let raw = match kind {
                    // The raw ping-pongs never read their payload.
                    _ if echo => None,
                    TransportKind::Tcp => Some(baseline::tcp::pingpong(mode, &steps, cpus)?),
                    TransportKind::Shm => Some(baseline::shm::pingpong(mode, &steps, cpus)?),
                    #[cfg(feature = "ofi")]
                    TransportKind::Ofi => Some(baseline::ofi::pingpong(&steps, cpus)?),
                    #[cfg(feature = "verbs")]
                    TransportKind::Verbs if mode == rfx_fabric::PollMode::Hot => {
                        Some(baseline::verbs::pingpong(&steps, cpus)?)
                    }
                    _ => None,
                };
                (rfx, raw)
            };
            let mut raw = raw.map(Vec::into_iter);
            for (step, r) in steps.iter().zip(rfx) {
                let b = raw.as_mut().and_then(Iterator::next);
                let row = TransportRow {
                    transport: kind,
                    op: op.clone(),
                    mode: mode_name(mode).into(),
                    size: step.size,
                    baseline: b.as_ref().map(|_| baseline_name(kind, read).into()),
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
    let report = TransportReport {
        bench: "transport".into(),
        machine: machine::describe(),
        cpus,
        schedule: steps,
        results,
    };
    out.finish(&report)
}
