//! `rfx lease-manager`, `rfx tenant ...` and `rfx lease ...`: the control
//! plane, for operators and tenants.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rfx::leases::audit::AuditLog;
use rfx::leases::client::blocking::{AdminClient, TenantClient};
use rfx::leases::daemon::{self, DaemonConfig};
use rfx::leases::proto::{LeaseId, LeaseRequest, LeaseState, Quota, TicketId, TicketOutcome};
use rfx::leases::wire::{LeaseInfo, TicketInfo, CLUSTER_KEY_ENV};
use serde_json::json;

/// Default address of the lease manager (`RFX_LEASE_MANAGER` overrides).
pub(crate) const DEFAULT_LEASE_MANAGER: &str = "127.0.0.1:7600";
/// Where a tenant's secret token comes from.
pub(crate) const TENANT_TOKEN_ENV: &str = "RFX_TENANT_TOKEN";

/// The lease manager's address, from the command line, the environment or the default.
#[derive(Debug, Args, Clone)]
pub(crate) struct ManagerAddr {
    /// Address of the lease manager.
    #[arg(long = "lease-manager", env = "RFX_LEASE_MANAGER", default_value = DEFAULT_LEASE_MANAGER)]
    pub(crate) addr: String,
}

pub(crate) fn cluster_key() -> anyhow::Result<String> {
    let k =
        std::env::var(CLUSTER_KEY_ENV).with_context(|| format!("{CLUSTER_KEY_ENV} is not set"))?;
    if k.is_empty() {
        bail!("{CLUSTER_KEY_ENV} is empty");
    }
    Ok(k)
}

pub(crate) fn tenant_token() -> anyhow::Result<String> {
    std::env::var(TENANT_TOKEN_ENV).with_context(|| {
        format!("{TENANT_TOKEN_ENV} is not set: create a tenant with `rfx tenant add NAME`")
    })
}

/// `rfx lease-manager`.
#[derive(Debug, Args)]
pub(crate) struct LeaseManagerArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LEASE_MANAGER)]
    listen: SocketAddr,
    /// The durable store (redb file); created if missing.
    #[arg(long, default_value = "rfx-leases.redb")]
    db: PathBuf,
    /// A host that misses heartbeats this long is marked down.
    #[arg(long, default_value_t = 3000)]
    heartbeat_timeout_ms: u64,
    /// Serve TLS with this certificate chain (PEM); clients then need
    /// RFX_TLS_CA.
    #[arg(long, env = "RFX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "RFX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Replace the lease log with a checkpoint of the state once it holds
    /// this many operations (usage reports and renewals are operations).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    compact_after_ops: u64,
    /// Append an audit log of tenant, host and operator actions to this
    /// file: one JSON object per line (leases granted, refused, renewed,
    /// released, expired, lost; tenants added; hosts registered,
    /// deregistered, down; executor crashes; refused credentials), never a
    /// secret. Created with mode 0600 if missing, only ever appended to.
    /// Without it, nothing is audited.
    #[arg(long, env = "RFX_AUDIT_LOG", value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Serve Prometheus metrics (OpenMetrics text) at
    /// `http://ADDR/metrics`: leases by state, the queue and its wait
    /// times, hosts, cores, and per tenant leases, cores and usage.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    provider: ProviderArgs,
}

/// Elastic capacity: hosts asked from a batch scheduler.
#[derive(Debug, Args)]
pub(crate) struct ProviderArgs {
    /// Ask this scheduler for hosts when lease requests wait, and give
    /// idle ones back: `slurm` (sbatch, scancel, squeue on PATH).
    #[arg(long, value_parser = ["slurm"])]
    provider: Option<String>,
    /// Hosts kept even when idle.
    #[arg(long, default_value_t = 0, requires = "provider")]
    min_hosts: u32,
    /// Hosts at most (jobs pending included).
    #[arg(long, default_value_t = 4, requires = "provider")]
    max_hosts: u32,
    /// A provided host without a lease for this long is given back.
    #[arg(long, default_value_t = 300.0, requires = "provider")]
    idle_timeout_s: f64,
    /// Arguments of every `sbatch` (partition, account, time, CPUs...),
    /// split at white space.
    #[arg(
        long,
        default_value = "",
        allow_hyphen_values = true,
        requires = "provider"
    )]
    sbatch_args: String,
    /// Extra arguments of the executor manager each job runs, split at
    /// white space (e.g. `--sandbox off --gpu 0`).
    #[arg(
        long,
        default_value = "",
        allow_hyphen_values = true,
        requires = "provider"
    )]
    provider_executor_args: String,
    /// The address jobs register with (default: --listen).
    #[arg(long, requires = "provider")]
    provider_lease_manager: Option<String>,
    /// The jobs' name, how this lease manager finds them (default
    /// `rfx-em-PORT`).
    #[arg(long, requires = "provider")]
    provider_job_name: Option<String>,
    /// How often the scheduler is asked for its jobs' states.
    #[arg(long, default_value_t = 2.0, requires = "provider")]
    provider_poll_s: f64,
}

impl ProviderArgs {
    fn config(
        &self,
        listen: SocketAddr,
        db: &std::path::Path,
    ) -> anyhow::Result<Option<daemon::ProviderConfig>> {
        let Some(kind) = &self.provider else {
            return Ok(None);
        };
        anyhow::ensure!(kind == "slurm", "unknown provider {kind}");
        anyhow::ensure!(
            self.max_hosts >= self.min_hosts,
            "--max-hosts is below --min-hosts"
        );
        let lm = self
            .provider_lease_manager
            .clone()
            .unwrap_or_else(|| listen.to_string());
        let loopback = lm
            .parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false);
        let rfx = std::env::current_exe()?.display().to_string();
        let extra: Vec<String> = self
            .provider_executor_args
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let job_name = self
            .provider_job_name
            .clone()
            .unwrap_or_else(|| format!("rfx-em-{}", listen.port()));
        // Beside the store (which may not exist yet).
        let db = std::path::absolute(db)?;
        let dir = db
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let slurm = rfx::leases::provision::slurm::Slurm {
            output: dir.join(format!("{job_name}-%j.out")).display().to_string(),
            job_name,
            sbatch_args: self
                .sbatch_args
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            command: rfx::leases::provision::slurm::Slurm::executor_manager_command(
                &rfx,
                &lm,
                loopback.then_some("127.0.0.1"),
                &extra,
            ),
        };
        Ok(Some(daemon::ProviderConfig {
            provider: std::sync::Arc::new(slurm),
            policy: rfx::leases::provision::Policy {
                min_hosts: self.min_hosts,
                max_hosts: self.max_hosts,
                idle_timeout_ms: (self.idle_timeout_s.max(0.0) * 1000.0) as u64,
            },
            poll_every: Duration::from_secs_f64(self.provider_poll_s.max(0.1)),
        }))
    }
}

/// `rfx hosts`.
#[derive(Debug, Args)]
pub(crate) struct HostsArgs {
    /// The running lease manager (with `RFX_CLUSTER_KEY`).
    #[arg(long)]
    lease_manager: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn hosts(args: HostsArgs) -> anyhow::Result<()> {
    let addr = args.lease_manager.unwrap_or_else(manager_from_env);
    let admin = AdminClient::connect(&addr, &cluster_key()?)?;
    let hosts = admin.list_hosts()?;
    let jobs = admin.jobs()?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"hosts": hosts, "jobs": jobs}))?
        );
        return Ok(());
    }
    for h in &hosts {
        let job = jobs
            .iter()
            .find(|j| j.host == Some(h.id))
            .map(|j| format!(" job {} ({})", j.job, j.state))
            .unwrap_or_default();
        println!(
            "host {} {} {} cores ({} free){job}",
            h.id,
            if h.up { "up" } else { "down" },
            h.capacity.cores,
            h.free.free_cores()
        );
    }
    for j in jobs.iter().filter(|j| j.host.is_none()) {
        println!("job {} {} (no host yet)", j.job, j.state);
    }
    Ok(())
}

pub(crate) fn lease_manager(args: LeaseManagerArgs) -> anyhow::Result<()> {
    let mut cfg = DaemonConfig::new(args.listen, args.db, cluster_key()?);
    cfg.heartbeat_timeout = Duration::from_millis(args.heartbeat_timeout_ms);
    cfg.compact_after_ops = usize::try_from(args.compact_after_ops).unwrap_or(usize::MAX);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some(rfx::leases::tls::TlsServer::from_pem_files(cert, key)?);
    }
    if let Some(path) = &args.audit_log {
        cfg.audit = AuditLog::open(path)?;
    }
    cfg.metrics_listen = args.metrics_listen;
    cfg.provider = args.provider.config(args.listen, &cfg.db_path)?;
    daemon::serve(cfg)?;
    Ok(())
}

/// `rfx tenant ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCmd {
    /// Creates a tenant and prints its secret token (shown once).
    Add {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        target: StoreOrDaemon,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists tenants (never their tokens).
    List {
        #[command(flatten)]
        target: StoreOrDaemon,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Limits what a tenant's active leases hold at once (no flag: unlimited).
    SetQuota {
        /// The tenant's name.
        name: String,
        /// Cores.
        #[arg(long)]
        cores: Option<u32>,
        /// Accelerators (GPUs and others, all kinds together).
        #[arg(long)]
        accelerators: Option<u32>,
        /// Active leases.
        #[arg(long)]
        leases: Option<u32>,
        /// The running lease manager (with `RFX_CLUSTER_KEY`).
        #[arg(long)]
        lease_manager: Option<String>,
    },
    /// Every waiting lease request, all tenants'.
    Queue {
        /// The running lease manager (with `RFX_CLUSTER_KEY`).
        #[arg(long)]
        lease_manager: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Either the store file (lease manager stopped) or the running lease
/// manager (needs `RFX_CLUSTER_KEY`).
#[derive(Debug, Args)]
pub(crate) struct StoreOrDaemon {
    /// Work on this store file directly (the lease manager must be stopped).
    #[arg(long, conflicts_with = "lease_manager")]
    db: Option<PathBuf>,
    /// Ask this running lease manager (with `RFX_CLUSTER_KEY`).
    #[arg(long)]
    lease_manager: Option<String>,
}

pub(crate) fn tenant(cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add { name, target, json } => {
            let token = match (&target.db, &target.lease_manager) {
                (Some(db), _) => daemon::add_tenant(db, &name)?,
                (None, addr) => {
                    let addr = addr.clone().unwrap_or_else(manager_from_env);
                    AdminClient::connect(&addr, &cluster_key()?)?.add_tenant(&name)?
                }
            };
            if json {
                println!("{}", json!({"tenant": name, "token": token}));
            } else {
                println!("tenant {name} created; its token (shown once):\n{token}");
                eprintln!("use it with: export {TENANT_TOKEN_ENV}={token}");
            }
        }
        TenantCmd::List { target, json } => {
            let tenants = match (&target.db, &target.lease_manager) {
                (Some(db), _) => daemon::list_tenants(db)?,
                (None, addr) => {
                    let addr = addr.clone().unwrap_or_else(manager_from_env);
                    AdminClient::connect(&addr, &cluster_key()?)?.list_tenants()?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                for t in tenants {
                    println!("{}", serde_json::to_string(&t)?);
                }
            }
        }
        TenantCmd::SetQuota {
            name,
            cores,
            accelerators,
            leases,
            lease_manager,
        } => {
            let addr = lease_manager.unwrap_or_else(manager_from_env);
            let quota = Quota {
                cores,
                accelerators,
                leases,
            };
            AdminClient::connect(&addr, &cluster_key()?)?.set_quota(&name, &quota)?;
            println!("tenant {name}: quota {}", serde_json::to_string(&quota)?);
        }
        TenantCmd::Queue {
            lease_manager,
            json,
        } => {
            let addr = lease_manager.unwrap_or_else(manager_from_env);
            let queue = AdminClient::connect(&addr, &cluster_key()?)?.queue()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&queue)?);
            } else {
                for t in &queue {
                    print_ticket(t);
                }
            }
        }
    }
    Ok(())
}

fn manager_from_env() -> String {
    std::env::var("RFX_LEASE_MANAGER").unwrap_or_else(|_| DEFAULT_LEASE_MANAGER.to_string())
}

/// `rfx lease ...` (the tenant's token in `RFX_TENANT_TOKEN`).
#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCmd {
    /// Leases executor slots.
    Create {
        /// Cores (one executor worker each).
        #[arg(long, default_value_t = 1)]
        cores: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 0)]
        memory_mib: u64,
        /// GPUs.
        #[arg(long, default_value_t = 0)]
        gpu: u32,
        /// Other accelerators, `kind=count` (repeatable).
        #[arg(long = "accel", value_parser = parse_accel)]
        accels: Vec<(String, u32)>,
        /// Busy-poll this long without work before blocking; -1 always hot, 0 always warm.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
        hot_timeout_ms: i64,
        /// Lease duration in seconds.
        #[arg(long, default_value_t = 600)]
        duration_s: u64,
        /// Longest run of one invocation, ms: past it the executor is
        /// restarted and the invocation fails as timed out (0: the host's
        /// maximum, which also caps this).
        #[arg(long, default_value_t = 0)]
        exec_timeout_ms: u64,
        /// Run the executor in this container image (local to the host's
        /// runtime, e.g. `localhost/fn-env:1`); default: the host's.
        #[arg(long)]
        container: Option<String>,
        /// Wait up to this long for capacity if none is free now (the
        /// request is queued in the lease manager); 0: refuse at once.
        #[arg(long, default_value_t = 0.0)]
        wait_s: f64,
        /// Leases granted together, all or nothing (a group's).
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// This tenant's queued lease requests (waiting and recently ended).
    Tickets {
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdraws a waiting lease request.
    Cancel {
        /// The ticket (`t5` or `5`).
        ticket: String,
        #[command(flatten)]
        manager: ManagerAddr,
    },
    /// Lists this tenant's leases.
    List {
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows one lease (with its token), or a queued request (`tN`: its
    /// state, why it waits, the hosts asked for it).
    Show {
        /// The lease, or `tN` for a queued request.
        id: String,
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Extends a lease.
    Renew {
        /// The lease.
        id: u64,
        /// Seconds to add.
        #[arg(long, default_value_t = 600)]
        extend_s: u64,
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ends a lease; its slots return to the pool.
    Release {
        /// The lease.
        id: u64,
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a lease used.
    Usage {
        /// The lease.
        id: u64,
        #[command(flatten)]
        manager: ManagerAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn parse_accel(s: &str) -> Result<(String, u32), String> {
    let (k, n) = s
        .split_once('=')
        .ok_or("expected kind=count, e.g. gpu=2 or fpga=1")?;
    Ok((
        k.trim().to_string(),
        n.trim().parse().map_err(|e| format!("{e}"))?,
    ))
}

pub(crate) fn connect_tenant(manager: &str) -> anyhow::Result<TenantClient> {
    TenantClient::connect(manager, &tenant_token()?)
        .with_context(|| format!("connecting to the lease manager at {manager}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn state(s: &LeaseState) -> String {
    match s {
        LeaseState::Active => "active".into(),
        LeaseState::Released => "released".into(),
        LeaseState::Expired => "expired".into(),
        LeaseState::Lost { reason } => format!("lost ({reason})"),
    }
}

fn print_lease(info: &LeaseInfo, with_token: bool) {
    let l = &info.lease;
    let left = l.expires_at_ms.saturating_sub(now_ms()) / 1000;
    let accel: Vec<String> = l
        .accelerators
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    println!(
        "lease {} on {} (host {}): {} cores {:?}, {} MiB{}{}, hot timeout {} ms, {}, expires in {} s",
        l.id.0,
        info.host_addr,
        l.host.0,
        l.cores,
        l.core_ids,
        l.memory_mib,
        if accel.is_empty() { "" } else { ", " },
        accel.join(" "),
        l.hot_timeout_ms,
        state(&l.state),
        left
    );
    if with_token {
        println!("token {}", info.token.to_hex());
    }
}

pub(crate) fn lease(cmd: LeaseCmd) -> anyhow::Result<()> {
    match cmd {
        LeaseCmd::Create {
            cores,
            memory_mib,
            gpu,
            accels,
            hot_timeout_ms,
            duration_s,
            exec_timeout_ms,
            container,
            wait_s,
            count,
            manager,
            json,
        } => {
            let mut req = LeaseRequest::new(cores, duration_s.saturating_mul(1000))
                .with_memory(memory_mib)
                .with_hot_timeout(hot_timeout_ms)
                .with_exec_timeout(exec_timeout_ms);
            if let Some(image) = container {
                req = req.with_container(image);
            }
            if gpu > 0 {
                req = req.with_accelerators("gpu", gpu);
            }
            for (k, n) in accels {
                req = req.with_accelerators(k, n);
            }
            let client = connect_tenant(&manager.addr)?;
            if wait_s <= 0.0 && count == 1 {
                let info = client.create_lease(&req)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else {
                    print_lease(&info, true);
                }
                return Ok(());
            }
            let wait = Duration::try_from_secs_f64(wait_s.max(0.0))
                .map_err(|e| anyhow::anyhow!("--wait-s: {e}"))?;
            let ticket = wait_for_grant(&client, &req, count, wait, json)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ticket.leases)?);
            } else {
                for info in &ticket.leases {
                    print_lease(info, true);
                }
            }
        }
        LeaseCmd::Tickets { manager, json } => {
            let tickets = connect_tenant(&manager.addr)?.tickets()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tickets)?);
            } else {
                for t in &tickets {
                    print_ticket(t);
                }
            }
        }
        LeaseCmd::Cancel { ticket, manager } => {
            let id = ticket
                .trim_start_matches('t')
                .parse()
                .map_err(|_| anyhow::anyhow!("{ticket}: not a ticket (t5 or 5)"))?;
            connect_tenant(&manager.addr)?.cancel_ticket(TicketId(id))?;
            println!("ticket t{id} cancelled");
        }
        LeaseCmd::List { manager, json } => {
            let list = connect_tenant(&manager.addr)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for info in &list {
                    print_lease(info, false);
                }
            }
        }
        LeaseCmd::Show { id, manager, json } => {
            let client = connect_tenant(&manager.addr)?;
            if let Some(t) = id.strip_prefix('t') {
                let t: u64 = t
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{id}: not a lease (5) nor a ticket (t5)"))?;
                let info = client.ticket(TicketId(t))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else {
                    print_ticket(&info);
                    for l in &info.leases {
                        print_lease(l, true);
                    }
                }
                return Ok(());
            }
            let id: u64 = id
                .parse()
                .map_err(|_| anyhow::anyhow!("{id}: not a lease (5) nor a ticket (t5)"))?;
            let info = client.show(LeaseId(id))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_lease(&info, true);
            }
        }
        LeaseCmd::Renew {
            id,
            extend_s,
            manager,
            json,
        } => {
            let expires =
                connect_tenant(&manager.addr)?.renew(LeaseId(id), extend_s.saturating_mul(1000))?;
            if json {
                println!("{}", json!({"lease": id, "expires_at_ms": expires}));
            } else {
                println!(
                    "lease {id} renewed; expires in {} s",
                    expires.saturating_sub(now_ms()) / 1000
                );
            }
        }
        LeaseCmd::Release { id, manager, json } => {
            let usage = connect_tenant(&manager.addr)?.release(LeaseId(id))?;
            if json {
                println!("{}", json!({"lease": id, "released": true, "usage": usage}));
            } else {
                println!(
                    "lease {id} released; usage {}",
                    serde_json::to_string(&usage)?
                );
            }
        }
        LeaseCmd::Usage { id, manager, json } => {
            let usage = connect_tenant(&manager.addr)?.usage(LeaseId(id))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"lease": id, "usage": usage}))?
                );
            } else {
                println!(
                    "lease {id}: {} invocations, {} core-ms, {:.3} GPU-s, {} ms executing, {} ms hot polling, {} B in, {} B out, {} stopped at the time limit",
                    usage.invocations, usage.core_ms, usage.gpu_ms as f64 / 1e3, usage.exec_ms, usage.hot_poll_ms, usage.bytes_in, usage.bytes_out, usage.function_timeouts
                );
            }
        }
    }
    Ok(())
}

/// Queues `count` leases of `req` and waits up to `wait` for their grant;
/// an error if the request ends otherwise.
fn wait_for_grant(
    client: &TenantClient,
    req: &LeaseRequest,
    count: u32,
    wait: Duration,
    quiet: bool,
) -> anyhow::Result<TicketInfo> {
    let started = std::time::Instant::now();
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let mut info = client.queue_lease(req, count, wait_ms)?;
    let id = info.ticket.id;
    if info.ticket.is_waiting() && !quiet {
        eprintln!(
            "queued as {id} ({}); waiting up to {:.0} s",
            info.reason.as_deref().unwrap_or("waiting"),
            wait.as_secs_f64()
        );
    }
    let mut pause = Duration::from_millis(10);
    while info.ticket.is_waiting() && started.elapsed() < wait + Duration::from_secs(5) {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
        info = client.ticket(id)?;
    }
    match &info.ticket.outcome {
        Some(TicketOutcome::Granted(_)) => Ok(info),
        Some(TicketOutcome::Cancelled) => anyhow::bail!("queued request {id} was cancelled"),
        _ => anyhow::bail!(
            "not granted within {:.1} s (queued request {id}: {})",
            started.elapsed().as_secs_f64(),
            info.reason.as_deref().unwrap_or("timed out")
        ),
    }
}

/// One line per queued request.
fn print_ticket(t: &TicketInfo) {
    let tk = &t.ticket;
    let state = match &tk.outcome {
        None => format!(
            "waiting ({}; {} ahead)",
            t.reason.as_deref().unwrap_or("-"),
            t.ahead.unwrap_or(0)
        ),
        Some(TicketOutcome::Granted(l)) => format!(
            "granted: leases {}",
            l.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(TicketOutcome::TimedOut) => "timed out".into(),
        Some(TicketOutcome::Cancelled) => "cancelled".into(),
    };
    println!(
        "{} {} {}x{} cores, deadline in {} s: {state}",
        tk.id,
        tk.tenant,
        tk.count,
        tk.request.cores,
        tk.deadline_ms.saturating_sub(now_ms()) as i64 / 1000
    );
}
