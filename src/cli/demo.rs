//! `rfx demo`: the whole system on one machine in one command: a lease
//! manager and an executor manager as child processes, a tenant, a lease,
//! the example functions shipped to the leased executor, invocations over
//! each transport with a latency summary, and the lease's usage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rfx::client::{Invoker, InvokerConfig};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, PollMode, TransportChoice, TransportKind};
use rfx::leases::client::blocking::TenantClient;
use rfx::leases::proto::{LeaseId, LeaseRequest};
use rfx::local::LocalCluster;

/// `rfx demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The function library to ship (default: build `examples/functions`
    /// with cargo).
    #[arg(long)]
    lib: Option<PathBuf>,
    /// Round trips per measurement.
    #[arg(long, default_value_t = 20_000)]
    iters: u32,
    /// Transports to invoke over.
    #[arg(long, value_delimiter = ',', default_value = "shm,tcp")]
    transports: Vec<TransportKind>,
    /// The executor sandbox (`strict` or `off`) [default: strict as root,
    /// off otherwise].
    #[arg(long)]
    sandbox: Option<rfx::executors::sandbox::SandboxMode>,
}

/// Builds `examples/functions` with cargo, for a demo run from the source tree.
fn build_examples() -> anyhow::Result<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/examples-functions");
    eprintln!("demo: building the example functions (examples/functions) ...");
    rfx_examples::build(&target, true).map_err(|e| anyhow::anyhow!("{e} (or pass --lib)"))
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn measure(
    inv: &mut Invoker,
    function: &str,
    input: &[u8],
    iters: u32,
) -> anyhow::Result<(f64, f64)> {
    for _ in 0..iters / 10 {
        inv.invoke(function, input)?;
    }
    let mut v = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let t = Instant::now();
        inv.invoke(function, input)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    Ok((pct(&v, 0.5), pct(&v, 0.99)))
}

pub(crate) fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let lib = match &args.lib {
        Some(p) => p.clone(),
        None => build_examples()?,
    };
    let sandbox = args
        .sandbox
        .unwrap_or_else(rfx::executors::sandbox::SandboxMode::default_for_this_process);
    let cluster = LocalCluster::builder(&exe)
        .cores(cores)
        .executor_manager_args(["--sandbox".to_owned(), sandbox.to_string()])
        .start()
        .context("starting the lease manager and the executor manager")?;
    let (lm, em) = (cluster.lease_manager(), cluster.executor_managers()[0]);
    println!(
        "rfx demo: lease manager on {lm}, executor manager on {em} ({cores} cores, sandbox {sandbox}), store in {}",
        cluster.dir().display()
    );
    let token = cluster.add_tenant("demo")?;
    let tenant = TenantClient::connect(&lm.to_string(), &token)?;
    // The executor manager registers right after it listens: retry briefly.
    let req = LeaseRequest::new(1, 600_000).with_hot_timeout(50);
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        match tenant.create_lease(&req) {
            Ok(i) => break i,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("lease not granted yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).context("creating the demo lease"),
        }
    };
    let lease = info.lease.id;
    println!(
        "tenant `demo` holds lease {} : {} core {:?} on {}",
        lease.0, info.lease.cores, info.lease.core_ids, info.host_addr
    );
    let exec = crate::cli::exec::find_executor(&info.host_addr, lease, &info.token.to_hex())?;
    println!(
        "its executor listens on {exec}; the lease manager is out of the data path from here\n"
    );
    // Busy-polling peers on one CPU crawl: keep the client off the leased cores.
    let leased: Vec<usize> = info.lease.core_ids.iter().map(|&c| c as usize).collect();
    if let Some(cpu) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|c| !leased.contains(&c.id))
    {
        core_affinity::set_for_current(cpu);
    }

    let bytes = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
    let fns = ["noop", "echo", "sum_f64", "matmul"];
    println!(
        "{:<5} {:<24} {:>10} {:>10}",
        "via", "invocation", "p50 us", "p99 us"
    );
    for &kind in &args.transports {
        let fabric = Fabric::open(Config {
            transport: TransportChoice::Forced(kind),
            ..Config::from_env()?
        })?;
        let library = LibrarySource::Bytes {
            name: lib.display().to_string(),
            bytes: bytes.clone(),
        };
        let cfg = InvokerConfig {
            mode: PollMode::Hot,
            ..InvokerConfig::default()
        };
        let mut inv = Invoker::connect(
            &fabric,
            exec,
            info.token.to_hex().as_bytes(),
            library,
            &fns,
            cfg,
        )?;
        let sum: Vec<u8> = [1.5f64, 2.5, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let got = f64::from_le_bytes(
            inv.invoke("sum_f64", &sum)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad sum output"))?,
        );
        if got != 7.0 {
            bail!("sum_f64 returned {got}, expected 7");
        }
        let n = 16u32;
        let mut mm = n.to_le_bytes().to_vec();
        mm.extend((0..2 * n * n).flat_map(|i| f64::from(i % 7).to_le_bytes()));
        for (label, f, input, iters) in [
            ("noop 8 B", "noop", vec![0u8; 8], args.iters),
            ("echo 4 KiB", "echo", vec![7u8; 4096], args.iters / 2),
            ("matmul 16x16 f64", "matmul", mm.clone(), args.iters / 10),
        ] {
            let (p50, p99) = measure(&mut inv, f, &input, iters.max(10))?;
            println!(
                "{:<5} {:<24} {:>10.2} {:>10.2}",
                kind.name(),
                label,
                p50,
                p99
            );
        }
        let t = Instant::now();
        let inputs: Vec<&[u8]> = vec![&[0u8; 8][..]; 100_000];
        let outs = inv.batch("noop", &inputs)?;
        let ok = outs.iter().filter(|r| r.is_ok()).count();
        let rate = ok as f64 / t.elapsed().as_secs_f64();
        println!(
            "{:<5} {:<24} {:>10.0} invocations/s pipelined ({} in flight)",
            kind.name(),
            "noop batch of 100000",
            rate,
            inv.depth()
        );
    }
    // Usage is reported by the executor manager every half second.
    std::thread::sleep(Duration::from_millis(1200));
    let usage = tenant.usage(lease)?;
    println!(
        "\nusage of lease {}: {} invocations, {} ms executing, {} ms hot polling, {} core-ms held, {} B in, {} B out",
        lease.0, usage.invocations, usage.exec_ms, usage.hot_poll_ms, usage.core_ms, usage.bytes_in, usage.bytes_out
    );
    tenant.release(LeaseId(lease.0))?;
    println!("lease {} released", lease.0);
    group_dot(&lm.to_string(), &token, &bytes, &lib, cores)?;
    println!("stopping the managers");
    drop(cluster);
    Ok(())
}

/// A group invocation: the distributed dot product of `examples/functions`
/// on one leased slot per core, the instances allreducing their partial
/// sums peer to peer over their own communicator.
fn group_dot(lm: &str, token: &str, bytes: &[u8], lib: &Path, cores: usize) -> anyhow::Result<()> {
    let n = cores.clamp(1, 4);
    let tenant = rfx::tenant::Tenant::connect(lm, token)?;
    // Warm instances: with every core leased, the client would otherwise
    // compete with busy pollers.
    let leases = tenant.lease_group(n, &LeaseRequest::new(1, 600_000).with_hot_timeout(0))?;
    let fabric = Fabric::open(Config::from_env()?)?;
    let library = LibrarySource::Bytes {
        name: lib.display().to_string(),
        bytes: bytes.to_vec(),
    };
    let t = Instant::now();
    let mut group = leases.group(&fabric, library, &["dot"], InvokerConfig::default())?;
    let wired = t.elapsed();
    // Within the executor's 64 KiB slots: 16 bytes per element over the instances.
    let len = 2048;
    let x: Vec<f64> = (0..len).map(|i| f64::from(i % 10)).collect();
    let want: f64 = x.iter().map(|v| v * 0.5).sum();
    let inputs: Vec<Vec<u8>> = (0..n)
        .map(|r| {
            let piece = &x[r * len as usize / n..(r + 1) * len as usize / n];
            piece
                .iter()
                .chain(std::iter::repeat_n(&0.5, piece.len()))
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let outs = group.invoke("dot", &refs)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        for out in outs {
            let got = f64::from_le_bytes(
                out.try_into()
                    .map_err(|_| anyhow::anyhow!("bad dot output"))?,
            );
            if got != want {
                bail!("dot returned {got}, expected {want}");
            }
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "\ngroup of {n} leases (invoked over {}, communicator wired in {:.1} ms): dot product of \
         {len} f64, result checked, p50 {:.1} us per group invocation",
        group_transports(&group),
        wired.as_secs_f64() * 1e3,
        pct(&times, 0.5)
    );
    drop(group);
    leases.release()?;
    println!("group leases released");
    Ok(())
}

fn group_transports(g: &rfx::executors::group::Group) -> String {
    let mut k: Vec<&str> = g.transports().iter().map(|t| t.name()).collect();
    k.dedup();
    k.join("+")
}
