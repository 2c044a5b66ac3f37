//! `rfx-bench throughput`: pipelined `noop` invocations per second, N client
//! threads, each with its own connection to one of the N workers of an
//! in-process executor, each keeping `depth` invocations in flight.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rfx_executors::client::{Invoker, InvokerConfig, Ticket};
use rfx_executors::executor::ExecutorConfig;
use rfx_fabric::{PollMode, TransportKind};
use serde::{Deserialize, Serialize};

use crate::invoke::{self, TOKEN, WAIT};
use crate::pin;
use crate::results::f64_or_nan;
use crate::stats::{Recorder, Summary};

/// One invocation in this many is timed (submit to result): two clock reads
/// per invocation would cost a noticeable share of a no-op's time.
const SAMPLE_EVERY: u64 = 16;

/// Upper bound on the invocations of one client thread, whatever the
/// duration.
const MAX_INVOCATIONS: u64 = 1 << 34;

/// What one client thread did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadStats {
    pub invocations: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub elapsed_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub per_s: f64,
    pub client_cpu: Option<usize>,
    pub executor_cpu: Option<usize>,
}

/// One run: `threads` clients for about `duration`.
#[derive(Debug, Clone)]
pub struct Run {
    pub depth: usize,
    pub threads: Vec<ThreadStats>,
    /// Submit-to-result times of one invocation in [`SAMPLE_EVERY`].
    pub latency: Summary,
}

/// The CPU of client `i` and of the worker serving it: client `i` on
/// `cpus[i % n]`, its worker on the next CPU, so that with two CPUs and one
/// client the two spinners never share one.
pub fn placement(cpus: &[usize], i: usize) -> (Option<usize>, Option<usize>) {
    match cpus.len() {
        0 => (None, None),
        n => (Some(cpus[i % n]), Some(cpus[(i + 1) % n])),
    }
}

pub fn run(
    kind: TransportKind,
    mode: PollMode,
    threads: usize,
    depth: usize,
    duration: Duration,
    cpus: &[usize],
    lib: &Path,
) -> anyhow::Result<Run> {
    ensure!(threads >= 1, "need at least one client thread");
    let depth = depth.clamp(1, usize::from(u16::MAX));
    let fabric = invoke::open_fabric(kind)?;
    let mut cfg = ExecutorConfig::new("127.0.0.1:0".parse()?, TOKEN.to_vec());
    cfg.workers = threads;
    // The executor pins worker `w` to `cfg.cpus[w % len]`; clients connect
    // one after the other, so client `i` is served by worker `i`.
    cfg.cpus = (0..threads).filter_map(|i| placement(cpus, i).1).collect();
    cfg.slots = depth as u32;
    cfg.slot_size = 64;
    cfg.max_output = 64;
    cfg.hot_timeout = invoke::hot_timeout(mode);
    cfg.connections = Some(threads);
    let (addr, server) = invoke::serve(&fabric, cfg, None)?;

    let mut invokers = Vec::with_capacity(threads);
    for i in 0..threads {
        let icfg = InvokerConfig {
            depth,
            max_output: 64,
            // Small inputs only: no input region per invoker.
            max_input: 0,
            timeout: WAIT,
            mode,
            explain_gone: None,
        };
        let inv = Invoker::connect(
            &fabric,
            addr,
            TOKEN,
            invoke::library_source(lib),
            &["noop"],
            icfg,
        )
        .with_context(|| format!("connecting client {i}"))?;
        invokers.push(inv);
    }
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = invokers
        .into_iter()
        .enumerate()
        .map(|(i, inv)| {
            let barrier = barrier.clone();
            let cpu = placement(cpus, i).0;
            std::thread::Builder::new()
                .name(format!("rfx-client-{i}"))
                .spawn(move || {
                    pin::pin(cpu);
                    barrier.wait();
                    client(inv, duration)
                })
        })
        .collect::<Result<_, _>>()
        .context("spawning client threads")?;
    let mut per_thread = Vec::with_capacity(threads);
    let mut latency = Recorder::new();
    let mut first_err = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok((n, elapsed, rec))) => {
                let (client_cpu, executor_cpu) = placement(cpus, i);
                let secs = elapsed.as_secs_f64();
                per_thread.push(ThreadStats {
                    invocations: n,
                    elapsed_s: secs,
                    per_s: if secs > 0.0 { n as f64 / secs } else { 0.0 },
                    client_cpu,
                    executor_cpu,
                });
                latency.merge(&rec);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e.context(format!("client {i}")));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("client {i} panicked"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let usage = invoke::join_executor(server)?;
    ensure!(
        usage.failed == 0,
        "the executor counted {} failed invocations",
        usage.failed
    );
    Ok(Run {
        depth,
        threads: per_thread,
        latency: latency.summary(),
    })
}

/// Keeps the invoker's depth of `noop`s in flight for `duration`; returns
/// the invocations completed, the time they took, and the sampled latencies.
fn client(mut inv: Invoker, duration: Duration) -> anyhow::Result<(u64, Duration, Recorder)> {
    let depth = inv.depth();
    let mut rec = Recorder::new();
    let mut window: VecDeque<(Ticket, Option<Instant>)> = VecDeque::with_capacity(depth);
    let mut submitted = 0u64;
    let mut done = 0u64;
    let start = Instant::now();
    let end = start + duration;
    let mut elapsed = None;
    while done < MAX_INVOCATIONS {
        while window.len() < depth {
            let t0 = (submitted % SAMPLE_EVERY == 0).then(Instant::now);
            window.push_back((inv.submit("noop", &[])?, t0));
            submitted += 1;
        }
        let Some((ticket, t0)) = window.pop_front() else {
            bail!("empty window");
        };
        let out = inv.wait(ticket)?;
        ensure!(out.is_empty(), "noop returned {} bytes", out.len());
        done += 1;
        // The clock is read only for the sampled invocations; the duration
        // is checked then too.
        if let Some(t0) = t0 {
            let now = Instant::now();
            rec.record(now.duration_since(t0).as_nanos() as u64);
            if now >= end {
                elapsed = Some(now.duration_since(start));
                break;
            }
        }
    }
    let elapsed = elapsed.unwrap_or_else(|| start.elapsed());
    // Those still in flight are collected, not counted.
    for (ticket, _) in window.drain(..) {
        inv.wait(ticket)?;
    }
    Ok((done, elapsed, rec))
}

#[cfg(test)]
mod tests {
    use super::placement;

    #[test]
    fn clients_and_workers_on_different_cpus() {
        assert_eq!(placement(&[0, 1], 0), (Some(0), Some(1)));
        assert_eq!(placement(&[0, 1], 1), (Some(1), Some(0)));
        assert_eq!(placement(&[3], 0), (Some(3), Some(3)));
        assert_eq!(placement(&[], 2), (None, None));
    }
}
