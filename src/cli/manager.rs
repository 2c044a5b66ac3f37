//! `rfx executor-manager`: one per host; registers with the lease manager
//! and runs one executor process per lease.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use rfx::executors::manager::{self, ManagerConfig};
use rfx::executors::sandbox::container::RuntimeKind;
use rfx::executors::sandbox::{SandboxConfig, SandboxMode, UidRange};
use rfx::leases::proto::Capacity;

/// `rfx executor-manager` (cluster key in RFX_CLUSTER_KEY).
#[derive(Debug, Args)]
pub(crate) struct ExecutorManagerArgs {
    #[command(flatten)]
    lease_manager: crate::cli::lease::ManagerAddr,
    /// Address of this manager's lookup service (registered as the host's address).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Address to register instead, when clients reach this host by another name.
    #[arg(long)]
    advertise: Option<String>,
    /// Where executors listen (port chosen per executor).
    #[arg(long)]
    executor_host: Option<IpAddr>,
    /// Cores offered (default: all of this host's).
    #[arg(long)]
    cores: Option<u32>,
    /// Memory offered, MiB.
    #[arg(long, default_value_t = 4096)]
    memory_mib: u64,
    /// GPUs offered: a count, or `auto` to detect NVIDIA GPUs with `nvidia-smi -L`.
    #[arg(long, default_value = "auto")]
    gpu: String,
    /// Other accelerators, `kind=count` (repeatable).
    #[arg(long = "accel", value_parser = crate::cli::lease::parse_accel)]
    accels: Vec<(String, u32)>,
    /// Serve lookups over TLS with this certificate chain (PEM); clients
    /// then need RFX_TLS_CA.
    #[arg(long, env = "RFX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "RFX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Executor sandbox: `strict` (namespaces, a uid per lease, cgroup
    /// limits, seccomp, Landlock) or `off` (see docs/security.md) [default:
    /// strict as root, off otherwise].
    #[arg(long)]
    sandbox: Option<SandboxMode>,
    /// Uids (and gids) given to leases, one each, e.g. 60000-60999.
    #[arg(long, default_value = "60000-60999")]
    sandbox_uids: UidRange,
    /// Size of each executor's private /tmp and /dev/shm, MiB.
    #[arg(long, default_value_t = 64)]
    sandbox_tmp_mib: u64,
    /// Memory limit of a lease that states none, MiB.
    #[arg(long, default_value_t = 1024)]
    sandbox_default_memory_mib: u64,
    /// Most processes and threads of one executor.
    #[arg(long, default_value_t = 1024)]
    sandbox_pids: u64,
    /// A host path executors may read (repeatable), besides the system
    /// directories: for example a shared directory of function libraries.
    #[arg(long = "sandbox-ro")]
    sandbox_ro: Vec<std::path::PathBuf>,
    /// Executors started and confined ahead of any lease (strict mode as
    /// root): a lease without GPUs or a container takes one and skips the
    /// spawn; 0 starts each executor at its lease.
    #[arg(long, default_value_t = 1)]
    sandbox_standby: usize,
    /// The longest time limit per invocation a lease may ask, ms, and the
    /// limit of a lease that asks none; 0: no cap.
    #[arg(long, default_value_t = 900_000)]
    max_exec_timeout_ms: u64,
    /// Append an audit log of executor starts, stops, crashes, sandbox
    /// kills, time limits and invocation sessions to this file (JSON lines).
    #[arg(long)]
    audit_log: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics`: executors
    /// running, started, ended, restarted; invocations and bytes.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// The container runtime of leases that ask for an image: podman,
    /// docker or apptainer.
    #[arg(long, default_value = "podman")]
    container_runtime: RuntimeKind,
    /// Run every lease that asks for no image in this one (instead of the
    /// built-in sandbox).
    #[arg(long)]
    default_container: Option<String>,
}

pub(crate) fn executor_manager(args: ExecutorManagerArgs) -> anyhow::Result<()> {
    let cores = match args.cores {
        Some(c) => c,
        None => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    };
    let gpus = match args.gpu.as_str() {
        "auto" => manager::detect_gpus(),
        n => n.parse().map_err(|e| anyhow::anyhow!("--gpu {n:?}: {e}"))?,
    };
    let mut capacity = Capacity::new(cores, args.memory_mib);
    if gpus > 0 {
        capacity = capacity.with_accelerators("gpu", gpus);
    }
    for (k, n) in args.accels {
        capacity = capacity.with_accelerators(k, n);
    }
    let exe = std::env::current_exe()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(rfx::leases::tls::TlsServer::from_pem_files(cert, key)?),
        _ => None,
    };
    let cfg = ManagerConfig {
        lease_manager: args.lease_manager.addr,
        cluster_key: crate::cli::lease::cluster_key()?,
        listen: args.listen,
        advertise: args.advertise,
        capacity,
        executor_command: vec![exe.into_os_string(), "executor".into()],
        executor_env: Vec::new(),
        executor_host: args.executor_host.unwrap_or(args.listen.ip()),
        usage_every: Duration::from_millis(500),
        stop_grace: Duration::from_secs(2),
        tls,
        sandbox: SandboxConfig {
            mode: args
                .sandbox
                .unwrap_or_else(SandboxMode::default_for_this_process),
            uids: args.sandbox_uids,
            tmp_mib: args.sandbox_tmp_mib,
            default_memory_mib: args.sandbox_default_memory_mib,
            pids_max: args.sandbox_pids,
            extra_ro: args.sandbox_ro,
            container_runtime: args.container_runtime,
            default_container: args.default_container,
            standby: args.sandbox_standby,
            ..SandboxConfig::default()
        },
        max_exec_timeout: Duration::from_millis(args.max_exec_timeout_ms),
        audit: match &args.audit_log {
            Some(p) => rfx::leases::audit::AuditLog::open(p)?,
            None => rfx::leases::audit::AuditLog::disabled(),
        },
        metrics_listen: args.metrics_listen,
        // Started by a batch job (by hand, or by a lease manager's provider).
        job: std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty()),
    };
    manager::serve(cfg)?;
    Ok(())
}
