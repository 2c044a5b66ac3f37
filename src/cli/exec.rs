//! `rfx executor` (serve one lease's invocations) and `rfx invoke` (call a
//! function on an executor).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rfx::executors::client::{Invoker, InvokerConfig};
use rfx::executors::executor::{Executor, ExecutorConfig, HotTimeout};
use rfx::executors::sandbox::Handoff;
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric};

/// Where the lease token comes from: never the command line, which other
/// users can read in the process table.
const TOKEN_ENV: &str = "RFX_LEASE_TOKEN";

fn token() -> anyhow::Result<Vec<u8>> {
    let t = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    if t.is_empty() {
        anyhow::bail!("{TOKEN_ENV} is empty");
    }
    Ok(t.into_bytes())
}

/// Where the lease's executor listens (see [`rfx::tenant::find_executor`]).
pub(crate) fn find_executor(
    host: &str,
    lease: rfx::leases::proto::LeaseId,
    token: &str,
) -> anyhow::Result<SocketAddr> {
    Ok(rfx::tenant::find_executor(host, lease, token)?)
}

/// `rfx executor`: serve invocations for the holder of `RFX_LEASE_TOKEN`.
#[derive(Debug, Args)]
pub(crate) struct ExecutorArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Worker threads (leased cores), one client connection each.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPUs to pin workers to, e.g. `2,3`.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Invocation slots per worker.
    #[arg(long, default_value_t = 32)]
    slots: u32,
    /// Bytes per slot: the largest inline input (at least 16, a remote input's descriptor).
    #[arg(long, default_value_t = 64 << 10)]
    slot_size: usize,
    /// Largest output per invocation.
    #[arg(long, default_value_t = 1 << 20)]
    max_output: usize,
    /// Busy-poll this long without work before blocking; -1 always hot, 0 always warm.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    hot_timeout_ms: i64,
    /// Exit after this many client connections have ended.
    #[arg(long)]
    connections: Option<usize>,
    /// Print the usage so far as a JSON line on stdout this often.
    #[arg(long)]
    usage_every_ms: Option<u64>,
    /// Largest input (bytes) read from a client for one invocation when it
    /// does not fit a slot; 0 refuses such inputs [default: 64 MiB, or
    /// RFX_EXECUTOR_MAX_INPUT].
    #[arg(long)]
    max_input: Option<usize>,
    /// Read the lease token (and, in a sandbox, how to confine this
    /// process) from this inherited descriptor, as the executor manager
    /// passes them; without it the token comes from RFX_LEASE_TOKEN.
    #[arg(long)]
    handoff_fd: Option<i32>,
    /// Longest run of one function, ms: past it the executor exits (code
    /// 125) saying which invocation ran over, for its manager to restart it.
    #[arg(long)]
    exec_timeout_ms: Option<u64>,
    /// Start ahead of any lease (an executor manager's standby): confine
    /// this process as the handoff says, then wait on descriptor 4 for the
    /// lease's claim, which brings the token, the uid and these arguments.
    #[arg(long, requires = "handoff_fd")]
    standby: bool,
}

/// A claim's arguments, parsed as a fresh executor's command line.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
struct Claimed {
    #[command(flatten)]
    args: ExecutorArgs,
}

pub(crate) fn executor(args: ExecutorArgs, cfg: Config) -> anyhow::Result<()> {
    if args.standby {
        return standby(args, cfg);
    }
    let token = match args.handoff_fd {
        Some(fd) => {
            let handoff = Handoff::take(fd)?;
            if let Some(c) = &handoff.confinement {
                // Before any thread, fabric or tenant code: returns in the
                // confined child only.
                let confined = rfx::executors::sandbox::confine(c)?;
                tracing::debug!(?confined, "executor confined");
            }
            handoff.token.into_bytes()
        }
        None => token()?,
    };
    serve(args, token, cfg)
}

/// `--standby`: the sandbox first, then the lease when one claims this
/// process; exits quietly if the manager closes the pipe without a claim.
fn standby(args: ExecutorArgs, cfg: Config) -> anyhow::Result<()> {
    use rfx::executors::sandbox::handoff::{Claim, CLAIM_FD};
    use rfx::executors::sandbox::STANDBY_LINE;
    let fd = args.handoff_fd.context("--standby needs --handoff-fd")?;
    let handoff = Handoff::take(fd)?;
    let c = handoff
        .confinement
        .context("a standby executor needs a confinement in its handoff")?;
    // Before any thread: returns in the confined child only.
    let entered = rfx::executors::sandbox::confine::enter(&c)?;
    eprintln!("{STANDBY_LINE}");
    let Some(claim) = Claim::wait(CLAIM_FD)? else {
        return Ok(());
    };
    // Started under SCHED_IDLE (see `idle_until_claimed`); the lease's own
    // from here, set while still privileged.
    rfx::executors::sandbox::handoff::schedule_normally(0)
        .context("the normal scheduling policy")?;
    let confined = entered.become_user(claim.uid, claim.gid)?;
    tracing::debug!(?confined, "standby executor claimed and confined");
    for (key, value) in &claim.env {
        // Still a single thread: nothing reads the environment concurrently.
        std::env::set_var(key, value);
    }
    let lease = <Claimed as clap::Parser>::try_parse_from(&claim.args)
        .context("the claim's executor arguments")?
        .args;
    serve(lease, claim.token.into_bytes(), cfg)
}

/// Serves invocations as `args` say, with the lease `token`.
fn serve(args: ExecutorArgs, token: Vec<u8>, cfg: Config) -> anyhow::Result<()> {
    let ecfg = ExecutorConfig {
        listen: args.listen,
        token,
        workers: args.workers,
        cpus: args.cpus,
        slots: args.slots,
        slot_size: args.slot_size,
        max_output: args.max_output,
        hot_timeout: HotTimeout::from_millis(args.hot_timeout_ms),
        connections: args.connections,
        usage_every: args.usage_every_ms.map(std::time::Duration::from_millis),
        exec_timeout: args
            .exec_timeout_ms
            .filter(|&ms| ms > 0)
            .map(std::time::Duration::from_millis),
    };
    let mut exec = Executor::bind(Fabric::open(cfg)?, ecfg)?;
    if let Some(bytes) = args.max_input {
        exec.set_max_input(bytes);
    }
    eprintln!("rfx executor: listening on {}", exec.local_addr()?);
    let usage = exec.serve()?;
    println!("{}", serde_json::to_string(&usage)?);
    Ok(())
}

/// `rfx invoke`: one invocation on a leased executor.
#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The lease whose executor runs the function (tenant token in
    /// RFX_TENANT_TOKEN).
    #[arg(long, required_unless_present = "executor")]
    lease: Option<u64>,
    #[command(flatten)]
    manager: crate::cli::lease::ManagerAddr,
    /// Or an executor's address directly (lease token in RFX_LEASE_TOKEN).
    #[arg(long, conflicts_with = "lease")]
    executor: Option<SocketAddr>,
    /// Shared library with the function; shipped to the executor.
    #[arg(long, required_unless_present = "python", conflicts_with = "python")]
    lib: Option<PathBuf>,
    /// Name the library by path on the executor's host instead of shipping it.
    #[arg(long, requires = "lib")]
    remote_path: bool,
    /// A Python module with the function instead: a `.py` file, or a
    /// directory shipped whole (then `--module` names the module to import).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The module to import from a `--python` directory.
    #[arg(long, requires = "python")]
    module: Option<String>,
    /// The function.
    #[arg(long)]
    function: String,
    /// Input file, or `-` for standard input (default: empty input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Largest output accepted.
    #[arg(long, default_value_t = 1 << 20)]
    max_output: usize,
}

pub(crate) fn invoke(args: InvokeArgs, cfg: Config) -> anyhow::Result<()> {
    let input = match &args.input {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v)?;
            v
        }
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
    };
    let library = match (&args.lib, &args.python) {
        (_, Some(py)) => rfx::executors::python::ship(py, args.module.as_deref())
            .with_context(|| format!("shipping {}", py.display()))?,
        (Some(lib), None) if args.remote_path => {
            LibrarySource::Path(lib.to_string_lossy().into_owned())
        }
        (Some(lib), None) => LibrarySource::Bytes {
            name: lib.to_string_lossy().into_owned(),
            bytes: std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
        },
        (None, None) => anyhow::bail!("--lib or --python names the function's code"),
    };
    let (addr, token) = match (args.executor, args.lease) {
        (Some(addr), _) => (addr, token()?),
        (None, Some(id)) => {
            let info = crate::cli::lease::connect_tenant(&args.manager.addr)?
                .show(rfx::leases::proto::LeaseId(id))?;
            let token = info.token.to_hex();
            let addr =
                find_executor(&info.host_addr, info.lease.id, &token).with_context(|| {
                    format!("finding the executor of lease {id} at {}", info.host_addr)
                })?;
            (addr, token.into_bytes())
        }
        (None, None) => anyhow::bail!("give --lease ID or --executor ADDR"),
    };
    let fabric = Fabric::open(cfg)?;
    let icfg = InvokerConfig {
        depth: 1,
        max_output: args.max_output,
        ..InvokerConfig::default()
    };
    let mut inv = Invoker::connect(
        &fabric,
        addr,
        &token,
        library,
        &[args.function.as_str()],
        icfg,
    )?;
    let out = inv.invoke(&args.function, &input)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
