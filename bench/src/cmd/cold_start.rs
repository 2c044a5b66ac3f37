//! `rfx-bench cold-start`: from a lease (or a spawn) to the first result.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rfx_fabric::{PollMode, TransportKind};

use super::{mode_name, parse_cpus, parse_mode, Output, OutputArgs};
use crate::results::{ColdStartReport, ColdStartRow, Floor};
use crate::{cold_start, library, machine, pin};

#[derive(Args)]
pub(crate) struct ColdStartArgs {
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
    #[command(flatten)]
    out: OutputArgs,
}

pub(crate) fn run(args: ColdStartArgs) -> anyhow::Result<()> {
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
    let mut out = Output::new(&args.out);
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
            chain: chain.into(),
            transport: kind,
            mode: mode_name(args.mode).into(),
            iters: args.iters,
            lease,
            spawn,
            listen,
            connect: spreads[2],
            load: spreads[3],
            first_result: spreads[4],
            total: spreads[5],
            phases: phases.map(String::from).to_vec(),
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
        bench: "cold-start".into(),
        chain: chain.into(),
        machine: machine::describe(),
        rfx,
        library: lib,
        library_bytes,
        cpus,
        goal_total_p50_us: 10_000.0,
        floor,
        results,
    };
    out.finish(&report)
}
