//! `rfx-bench queue`: the lease manager's queue under load. Hosts that
//! register but run nothing (executor managers stand-ins: the grants
//! themselves are measured, not executors) are filled by one lease each;
//! `--tenants` tenants queue `--requests` one-core requests between them,
//! tenant after tenant (the worst order for fairness); the filling leases
//! are released and the queue is served. Reports the queueing rate, the
//! grant rate (leases/s, each grant durable before the release is
//! answered) and whether grants went round robin between tenants.
//!
//! ```text
//! rfx-bench queue [--requests 10000] [--tenants 100] [--json [FILE|-]]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rfx::local::LocalCluster;
use rfx_leases::client::blocking::{AdminClient, TenantClient};
use rfx_leases::client::HostClient;
use rfx_leases::proto::{Capacity, LeaseRequest};
use serde::Serialize;

/// `rfx-bench queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// One-core lease requests queued in all.
    #[arg(long, default_value_t = 10_000)]
    requests: u32,
    /// Tenants they come from (equal shares).
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Cores per stand-in host (at most the lease manager's 4096).
    #[arg(long, default_value_t = 4096)]
    cores_per_host: u32,
    /// The `rfx` binary (default: beside rfx-bench).
    #[arg(long)]
    rfx: Option<std::path::PathBuf>,
    /// Write the report as JSON to FILE, or to stdout with `-` or no value.
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
}

/// `queue.json`.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    /// Requests queued.
    pub requests: u32,
    /// Tenants.
    pub tenants: u32,
    /// Stand-in hosts.
    pub hosts: u32,
    /// Seconds to queue them all (one client thread per tenant).
    pub queue_s: f64,
    /// Requests queued per second.
    pub queued_per_s: f64,
    /// Seconds from the first release to the last grant.
    pub grant_s: f64,
    /// Leases granted per second.
    pub granted_per_s: f64,
    /// Whether every run of `tenants` consecutive grants served each
    /// tenant once.
    pub round_robin: bool,
}

pub fn run(args: QueueArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tenants >= 1 && args.requests >= args.tenants,
        "need at least one request per tenant"
    );
    let rfx = match &args.rfx {
        Some(p) => p.clone(),
        None => crate::cold_start::rfx_binary()?,
    };
    let cluster = LocalCluster::builder(&rfx)
        .executor_managers(0)
        .start()
        .context("starting the lease manager")?;
    let lm = cluster.lease_manager().to_string();
    let key = cluster.cluster_key().to_owned();
    let hosts = args.requests.div_ceil(args.cores_per_host);

    // Stand-in hosts: registered, heartbeating, ignoring their commands.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for i in 0..hosts {
        let (lm, key) = (lm.clone(), key.clone());
        let (host, mut commands) = rt.block_on(HostClient::register(
            lm.as_str(),
            &key,
            &format!("127.0.0.1:{}", 20_000 + i),
            Capacity::new(args.cores_per_host, 1 << 30),
        ))?;
        let beats = host.clone();
        rt.spawn(async move { beats.run_heartbeats().await });
        rt.spawn(async move { while commands.recv().await.is_some() {} });
    }
    let filler_token = cluster.add_tenant("filler")?;
    let filler = TenantClient::connect(&lm, &filler_token)?;
    let fills: Vec<_> = (0..hosts)
        .map(|_| filler.create_lease(&LeaseRequest::new(args.cores_per_host, 3_600_000)))
        .collect::<Result<_, _>>()?;

    // Tenants queue, all at once, each its share in order.
    let share = args.requests / args.tenants;
    let clients: Vec<(String, TenantClient)> = (0..args.tenants)
        .map(|t| {
            let name = format!("t{t:04}");
            let token = cluster.add_tenant(&name)?;
            Ok((name, TenantClient::connect(&lm, &token)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let req = LeaseRequest::new(1, 3_600_000);
    let t0 = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = clients
            .iter()
            .map(|(_, c)| {
                s.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..share {
                        c.queue_lease(&req, 1, 3_600_000)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        }
        Ok(())
    })?;
    let queue_s = t0.elapsed().as_secs_f64();
    let queued = share * args.tenants;

    // Release the fillers: the queue is served.
    let admin = AdminClient::connect(&lm, &key)?;
    let t1 = Instant::now();
    for f in &fills {
        filler.release(f.lease.id)?;
    }
    let deadline = t1 + Duration::from_secs(300);
    while !admin.queue()?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the queue was not served within 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let grant_s = t1.elapsed().as_secs_f64();

    // Grant order: lease ids are given in grant order.
    let mut order: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, (_, c)) in clients.iter().enumerate() {
        for l in c.list()? {
            if l.lease.is_active() {
                order.insert(l.lease.id.0, i);
            }
        }
    }
    let seq: Vec<usize> = order.into_values().collect();
    anyhow::ensure!(
        seq.len() == queued as usize,
        "{} of {queued} granted",
        seq.len()
    );
    let n = args.tenants as usize;
    let round_robin = seq.chunks(n).filter(|w| w.len() == n).all(|w| {
        let mut seen = vec![false; n];
        w.iter().all(|&t| !std::mem::replace(&mut seen[t], true))
    });
    let report = QueueReport {
        requests: queued,
        tenants: args.tenants,
        hosts,
        queue_s,
        queued_per_s: f64::from(queued) / queue_s,
        grant_s,
        granted_per_s: f64::from(queued) / grant_s,
        round_robin,
    };
    let line = format!(
        "{} requests of {} tenants: queued in {:.2} s ({:.0}/s); granted in {:.3} s ({:.0} leases/s) after the release; round robin: {}",
        report.requests, report.tenants, report.queue_s, report.queued_per_s, report.grant_s, report.granted_per_s, report.round_robin
    );
    match args.json.as_deref() {
        Some("-") => {
            eprintln!("{line}");
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(path) => {
            println!("{line}");
            std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        }
        None => println!("{line}"),
    }
    drop(rt);
    Ok(())
}
