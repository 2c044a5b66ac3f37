//! `rfx-bench invoke`: round trips of `noop` and `echo` invocations through
//! an in-process executor, per transport, polling mode and size.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rfx_executors::client::{Invoker, InvokerConfig};
use rfx_executors::executor::{Executor, ExecutorConfig, ExecutorUsage, HotTimeout};
use rfx_executors::session::LibrarySource;
use rfx_executors::ExecError;
use rfx_fabric::invocation::DESCRIPTOR_LEN;
use rfx_fabric::{Config, Fabric, PollMode, TransportChoice, TransportKind};

use crate::pin;
use crate::schedule::Step;
use crate::stats::{Recorder, Summary};

/// The lease token of the in-process executors.
pub const TOKEN: &[u8] = b"rfx-bench-token";

/// The functions measured, in this order.
pub const FUNCTIONS: [&str; 2] = ["noop", "echo"];

/// Bound on each wait for a result.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long an executor thread may take to end once its clients are gone.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// A fabric with `kind` forced (the rest from the environment).
pub fn open_fabric(kind: TransportKind) -> anyhow::Result<Fabric> {
    let cfg = Config {
        transport: TransportChoice::Forced(kind),
        ..Config::from_env()?
    };
    Fabric::open(cfg).with_context(|| format!("opening transport {kind}"))
}

/// The executor's polling for a client polling mode.
pub fn hot_timeout(mode: PollMode) -> HotTimeout {
    match mode {
        PollMode::Hot => HotTimeout::AlwaysHot,
        PollMode::Warm => HotTimeout::AlwaysWarm,
    }
}

/// A library named by path (the executor runs on this host).
pub fn library_source(lib: &Path) -> LibrarySource {
    LibrarySource::Path(lib.to_string_lossy().into_owned())
}

type ServeHandle = JoinHandle<Result<ExecutorUsage, ExecError>>;

/// Binds an executor and serves it on a thread pinned to `cpu`.
pub fn serve(
    fabric: &Fabric,
    cfg: ExecutorConfig,
    cpu: Option<usize>,
) -> anyhow::Result<(SocketAddr, ServeHandle)> {
    let exec = Executor::bind(fabric.clone(), cfg).context("binding the executor")?;
    let addr = exec.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("rfx-executor".into())
        .spawn(move || {
            pin::pin(cpu);
            exec.serve()
        })
        .context("spawning the executor thread")?;
    Ok((addr, handle))
}

/// Waits up to [`JOIN_WAIT`] for the executor thread to end (it does once
/// its `connections` have ended); past that it is left behind, with a note.
pub fn join_executor(handle: ServeHandle) -> anyhow::Result<ExecutorUsage> {
    let deadline = Instant::now() + JOIN_WAIT;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            bail!("the executor did not stop within {JOIN_WAIT:?} after its clients left");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match handle.join() {
        Ok(r) => r.context("executor"),
        Err(_) => bail!("the executor thread panicked"),
    }
}

/// Per function (in [`FUNCTIONS`] order), one summary per step: the round
/// trip of `invoke` with an input of the step's size, client pinned to
/// `cpus.0`, executor (its serving thread and its worker) to `cpus.1`.
/// Inputs above `slot` bytes (default: none) go by one-sided read.
pub fn latency(
    kind: TransportKind,
    mode: PollMode,
    executor_mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
    lib: &Path,
    slot: Option<usize>,
) -> anyhow::Result<Vec<Vec<Summary>>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let max_output = max.max(64);
    let fabric = open_fabric(kind)?;
    let mut cfg = ExecutorConfig::new("127.0.0.1:0".parse()?, TOKEN.to_vec());
    cfg.workers = 1;
    cfg.cpus = cpus.1.into_iter().collect();
    cfg.slots = 1;
    // A slot holds the bare input (no header), and at least a remote
    // input's descriptor.
    cfg.slot_size = slot.unwrap_or(max).min(max).max(DESCRIPTOR_LEN);
    cfg.max_output = max_output;
    cfg.hot_timeout = hot_timeout(executor_mode);
    cfg.connections = Some(1);
    let (addr, server) = serve(&fabric, cfg, cpus.1)?;

    pin::pin(cpus.0);
    let icfg = InvokerConfig {
        depth: 1,
        max_output,
        max_input: max,
        timeout: WAIT,
        mode,
        explain_gone: None,
    };
    let mut inv = Invoker::connect(&fabric, addr, TOKEN, library_source(lib), &FUNCTIONS, icfg)
        .context("connecting to the executor")?;
    let payload: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    for function in FUNCTIONS {
        let echo = function == "echo";
        let mut series = Vec::with_capacity(steps.len());
        for step in steps {
            let input = &payload[..step.size];
            let mut rec = Recorder::new();
            for i in 0..step.total() {
                let t0 = Instant::now();
                let r = inv.invoke(function, input);
                let dt = t0.elapsed();
                let r = r.with_context(|| format!("{function} of {} B", step.size))?;
                let want = if echo { step.size } else { 0 };
                ensure!(
                    r.len() == want,
                    "{function} of {} B returned {} B, expected {want}",
                    step.size,
                    r.len()
                );
                if echo && i == 0 {
                    ensure!(r == input, "echo of {} B returned other bytes", step.size);
                }
                if i >= step.warmup {
                    rec.record(dt.as_nanos() as u64);
                }
            }
            series.push(rec.summary());
        }
        out.push(series);
    }
    drop(inv);
    let usage = join_executor(server)?;
    let expected: u64 = steps.iter().map(Step::total).sum::<u64>() * FUNCTIONS.len() as u64;
    ensure!(
        usage.invocations == expected && usage.failed == 0,
        "the executor counted {} invocations ({} failed), expected {expected}",
        usage.invocations,
        usage.failed
    );
    Ok(out)
}
