//! `rfx-bench load`: a bounded load test of the whole control and data
//! path. One lease manager and several executor managers run as child
//! processes on loopback; many tenants, each with several client threads,
//! lease a slot, find its executor, connect, invoke `echo` pipelined and
//! release, over and over, for a fixed time. Every invocation carries a
//! unique payload, so a result that is lost, duplicated or delivered to the
//! wrong invocation is counted; lost and wrong results must be 0.
//! Latency percentiles under load (hdrhistogram) and the counts go to a
//! table and, with `--json`, to a JSON report.
//!
//! ```text
//! rfx-bench load [--duration-s 20] [--hosts 3] [--cores-per-host 4] [--tenants 4]
//!                [--clients-per-tenant 2] [--invocations-per-lease 200] [--depth 4]
//!                [--transport auto] [--lib PATH] [--json [FILE|-]]
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rfx::local::LocalCluster;
use rfx_executors::client::{InvokeError, Invoker, InvokerConfig};
use rfx_executors::lookup::{lookup_executor, LookupError};
use rfx_executors::session::LibrarySource;
use rfx_fabric::{Config, Fabric, PollMode, TransportChoice};
use rfx_leases::client::blocking::{AdminClient, TenantClient};
use rfx_leases::proto::{LeaseId, LeaseRequest};
use rfx_leases::DaemonError;
use serde::Serialize;

use crate::stats::{Recorder, Summary};

/// Bound on a child coming up.
const START_WAIT: Duration = Duration::from_secs(30);

/// `rfx-bench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Seconds of load (clients stop starting leases after this; in-flight
    /// work finishes, bounded by the invocation timeout).
    #[arg(long, default_value_t = 20.0)]
    duration_s: f64,
    /// Executor managers ("hosts") on loopback.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Cores each executor manager offers (may exceed the machine's).
    #[arg(long, default_value_t = 4)]
    cores_per_host: u32,
    /// Tenants.
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    /// Client threads per tenant, each leasing one core at a time.
    #[arg(long, default_value_t = 2)]
    clients_per_tenant: usize,
    /// Invocations per lease before it is released.
    #[arg(long, default_value_t = 200)]
    invocations_per_lease: u32,
    /// Invocations in flight per client.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Payload bytes per invocation (at least 8: client and sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Transport of the clients: auto (shm on one host), tcp, shm.
    #[arg(long, default_value = "auto")]
    transport: TransportChoice,
    /// Executors' hot timeout in ms (-1 always hot, 0 always warm: the
    /// default, since executors outnumber cores here).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    hot_timeout_ms: i64,
    /// Function library with `echo` (default: build examples/functions in
    /// release mode).
    #[arg(long)]
    lib: Option<PathBuf>,
    /// The `rfx` binary (default: beside rfx-bench).
    #[arg(long)]
    rfx: Option<PathBuf>,
    /// Write the report as JSON to FILE, or to stdout with `-` or no value
    /// (the table then goes to stderr).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
}

/// What the clients counted.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    /// Leases granted (and released).
    pub leases: u64,
    /// Lease requests refused (no free core): back-pressure, not errors.
    pub lease_refusals: u64,
    /// Invocations submitted.
    pub submitted: u64,
    /// Invocations whose output came back and matched their input.
    pub ok: u64,
    /// Invocations with no result (timeout, executor gone): lost.
    pub lost: u64,
    /// Results that did not match their invocation's input (misrouted or
    /// duplicated).
    pub wrong: u64,
    /// Failed steps of any kind (lease, lookup, connect, invoke, release).
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.leases += o.leases;
        self.lease_refusals += o.lease_refusals;
        self.submitted += o.submitted;
        self.ok += o.ok;
        self.lost += o.lost;
        self.wrong += o.wrong;
        self.errors += o.errors;
        for s in &o.error_samples {
            if self.error_samples.len() < 10 {
                self.error_samples.push(s.clone());
            }
        }
    }

    fn error(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < 10 {
            self.error_samples.push(format!("{what}: {e}"));
        }
    }
}

#[derive(Serialize)]
struct Report {
    machine: crate::machine::Machine,
    duration_s: f64,
    hosts: usize,
    cores_per_host: u32,
    tenants: usize,
    clients: usize,
    invocations_per_lease: u32,
    depth: usize,
    size: usize,
    transport: String,
    counts: Counts,
    invocations_per_s: f64,
    leases_per_s: f64,
    /// Submit to result of each invocation, under load (µs).
    invoke: Summary,
    /// Lease granted + executor found + connected and library loaded (µs).
    lease_to_ready: Summary,
    /// Release round trip (µs).
    release: Summary,
}

/// What one client thread does and measures.
struct Client {
    id: u32,
    lm: String,
    token: String,
    /// The function library, shipped with each set-up (a sandboxed
    /// executor sees none of the bench's files).
    lib: std::sync::Arc<(String, Vec<u8>)>,
    req: LeaseRequest,
    per_lease: u32,
    depth: usize,
    size: usize,
    transport: TransportChoice,
}

struct ClientResult {
    counts: Counts,
    invoke: Recorder,
    ready: Recorder,
    release: Recorder,
}

/// The input of invocation `seq` of client `id`: both numbers, then filler
/// derived from them.
fn payload(id: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(12));
    v.extend(id.to_le_bytes());
    v.extend(seq.to_le_bytes());
    let fill = (seq as u8) ^ (id as u8);
    v.resize(size.max(12), fill);
    v
}

/// Asks the lease's host where its executor listens, retrying while the
/// lease has not reached the host yet (bounded).
fn find_executor(host: &str, lease: LeaseId, token: &str) -> Result<SocketAddr, LookupError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lookup_executor(host, lease, token, Duration::from_secs(10)) {
            Err(LookupError::LookupRefused { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

impl Client {
    fn run(self, stop: &AtomicBool) -> ClientResult {
        let mut r = ClientResult {
            counts: Counts::default(),
            invoke: Recorder::new(),
            ready: Recorder::new(),
            release: Recorder::new(),
        };
        let fabric = match Fabric::open(Config {
            transport: self.transport,
            ..Config::default()
        }) {
            Ok(f) => f,
            Err(e) => {
                r.counts.error("open the fabric", e);
                return r;
            }
        };
        let tenant = match TenantClient::connect(&self.lm, &self.token) {
            Ok(mut t) => {
                t.set_timeout(Duration::from_secs(20));
                t
            }
            Err(e) => {
                r.counts.error("connect to the lease manager", e);
                return r;
            }
        };
        let cfg = InvokerConfig {
            depth: self.depth,
            max_output: self.size.max(12),
            // Small inputs only: no input region per invoker.
            max_input: 0,
            timeout: Duration::from_secs(20),
            mode: PollMode::Warm,
            explain_gone: None,
        };
        let mut seq = 0u64;
        // Bounded: each pass takes at least one round trip to the lease
        // manager, and the loop ends at `stop` (or after a run of errors).
        let mut consecutive_errors = 0u32;
        while !stop.load(Ordering::Relaxed) && consecutive_errors < 50 {
            let t0 = Instant::now();
            let info = match tenant.create_lease(&self.req) {
                Ok(i) => i,
                Err(DaemonError::Remote { .. }) => {
                    r.counts.lease_refusals += 1;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => {
                    r.counts.error("create lease", e);
                    consecutive_errors += 1;
                    continue;
                }
            };
            r.counts.leases += 1;
            let token = info.token.to_hex();
            let ok = self.use_lease(
                &fabric,
                &info,
                &token,
                cfg.clone(),
                t0,
                &mut seq,
                &mut r,
                stop,
            );
            let t1 = Instant::now();
            match tenant.release(info.lease.id) {
                Ok(_) => r.release.record(t1.elapsed().as_nanos() as u64),
                Err(e) => r.counts.error("release", e),
            }
            consecutive_errors = if ok { 0 } else { consecutive_errors + 1 };
        }
        r
    }

    /// Finds, connects and invokes on one lease; false on an error.
    #[allow(clippy::too_many_arguments)]
    fn use_lease(
        &self,
        fabric: &Fabric,
        info: &rfx_leases::wire::LeaseInfo,
        token: &str,
        cfg: InvokerConfig,
        t0: Instant,
        seq: &mut u64,
        r: &mut ClientResult,
        stop: &AtomicBool,
    ) -> bool {
        let addr = match find_executor(&info.host_addr, info.lease.id, token) {
            Ok(a) => a,
            Err(e) => {
                r.counts.error("find the executor", e);
                return false;
            }
        };
        let lib = LibrarySource::Bytes {
            name: self.lib.0.clone(),
            bytes: self.lib.1.clone(),
        };
        let mut inv = match Invoker::connect(fabric, addr, token.as_bytes(), lib, &["echo"], cfg) {
            Ok(i) => i,
            Err(e) => {
                r.counts.error("connect to the executor", e);
                return false;
            }
        };
        r.ready.record(t0.elapsed().as_nanos() as u64);
        let mut pending = std::collections::VecDeque::new();
        let mut sent = 0u32;
        let mut ok = true;
        // Bounded by `per_lease` submissions, each waited for once.
        while sent < self.per_lease || !pending.is_empty() {
            let can_send = sent < self.per_lease && !stop.load(Ordering::Relaxed);
            if can_send && pending.len() < self.depth {
                let input = payload(self.id, *seq, self.size);
                *seq += 1;
                sent += 1;
                match inv.submit("echo", &input) {
                    Ok(t) => {
                        r.counts.submitted += 1;
                        pending.push_back((t, input, Instant::now()));
                    }
                    Err(e) => {
                        r.counts.error("submit", e);
                        ok = false;
                        break;
                    }
                }
                continue;
            }
            let Some((t, input, at)) = pending.pop_front() else {
                break;
            };
            match inv.wait(t) {
                Ok(out) if out == input => {
                    r.counts.ok += 1;
                    r.invoke.record(at.elapsed().as_nanos() as u64);
                }
                Ok(_) => r.counts.wrong += 1,
                Err(e) => {
                    if matches!(e, InvokeError::Timeout(_) | InvokeError::ExecutorGone(_)) {
                        r.counts.lost += 1;
                    }
                    r.counts.error("invocation", e);
                    ok = false;
                }
            }
        }
        // Anything still pending after an error has no result: lost.
        r.counts.lost += pending.len() as u64;
        ok
    }
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let rfx = match &args.rfx {
        Some(p) => p.clone(),
        None => crate::cold_start::rfx_binary()?,
    };
    let lib = crate::library::resolve(args.lib.as_deref())?;
    let cluster = LocalCluster::builder(&rfx)
        .executor_managers(args.hosts)
        .cores(args.cores_per_host as usize)
        .executor_manager_args(["--gpu", "0"])
        .start_wait(START_WAIT)
        .start()
        .context("starting the lease manager and the executor managers")?;
    let lm = cluster.lease_manager().to_string();
    let admin = AdminClient::connect(&lm, cluster.cluster_key())?;
    let req = LeaseRequest::new(1, 120_000).with_hot_timeout(args.hot_timeout_ms);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut id = 0u32;
    let shipped = std::sync::Arc::new((lib.display().to_string(), std::fs::read(&lib)?));
    for t in 0..args.tenants {
        let token = admin.add_tenant(&format!("load-{t}"))?;
        for _ in 0..args.clients_per_tenant {
            let c = Client {
                id,
                lm: lm.clone(),
                token: token.clone(),
                lib: shipped.clone(),
                req: req.clone(),
                per_lease: args.invocations_per_lease.max(1),
                depth: args.depth.max(1),
                size: args.size,
                transport: args.transport,
            };
            id += 1;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || c.run(&stop)));
        }
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration_s.max(0.1)));
    stop.store(true, Ordering::Relaxed);
    let mut counts = Counts::default();
    let (mut invoke, mut ready, mut release) = (Recorder::new(), Recorder::new(), Recorder::new());
    for t in threads {
        match t.join() {
            Ok(r) => {
                counts.add(&r.counts);
                invoke.merge(&r.invoke);
                ready.merge(&r.ready);
                release.merge(&r.release);
            }
            Err(_) => counts.error("client thread", "panicked"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Every lease was released: no host may hold a core any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hosts = admin.list_hosts()?;
        let held: u32 = hosts
            .iter()
            .map(|h| h.capacity.cores - h.free.free_cores())
            .sum();
        if held == 0 {
            break;
        }
        if Instant::now() > deadline {
            counts.error("after the run", format!("{held} cores still leased"));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(admin);
    drop(cluster);
    let report = Report {
        machine: crate::machine::describe(),
        duration_s: elapsed,
        hosts: args.hosts,
        cores_per_host: args.cores_per_host,
        tenants: args.tenants,
        clients: args.tenants * args.clients_per_tenant,
        invocations_per_lease: args.invocations_per_lease,
        depth: args.depth,
        size: args.size,
        transport: args.transport.to_string(),
        invocations_per_s: counts.ok as f64 / elapsed,
        leases_per_s: counts.leases as f64 / elapsed,
        counts,
        invoke: invoke.summary(),
        lease_to_ready: ready.summary(),
        release: release.summary(),
    };
    let to_stdout = args.json.as_deref() == Some("-");
    let mut table: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let c = &report.counts;
    writeln!(
        table,
        "load: {:.1} s, {} hosts x {} cores, {} tenants, {} clients, transport {}",
        report.duration_s,
        report.hosts,
        report.cores_per_host,
        report.tenants,
        report.clients,
        report.transport
    )?;
    writeln!(
        table,
        "  leases {} ({:.1}/s, {} refused for capacity), invocations {} ok of {} ({:.0}/s)",
        c.leases,
        report.leases_per_s,
        c.lease_refusals,
        c.ok,
        c.submitted,
        report.invocations_per_s
    )?;
    writeln!(
        table,
        "  errors {}, lost results {}, wrong results {}",
        c.errors, c.lost, c.wrong
    )?;
    for (name, s) in [
        ("invoke", &report.invoke),
        ("lease to ready", &report.lease_to_ready),
        ("release", &report.release),
    ] {
        writeln!(
            table,
            "  {name:>14} µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n={})",
            s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us, s.iters
        )?;
    }
    for e in &c.error_samples {
        writeln!(table, "  error: {e}")?;
    }
    if let Some(dest) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if to_stdout {
            println!("{json}");
        } else {
            if let Some(dir) = Path::new(dest)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(dest, json).with_context(|| format!("writing {dest}"))?;
        }
    }
    if c.lost > 0 || c.wrong > 0 || c.errors > 0 {
        bail!(
            "load test failed: {} errors, {} lost and {} wrong results",
            c.errors,
            c.lost,
            c.wrong
        );
    }
    if c.ok == 0 {
        bail!("load test failed: no invocation completed");
    }
    Ok(())
}
