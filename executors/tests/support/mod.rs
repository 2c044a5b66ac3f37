//! Harness of the executor manager tests: an in-process lease daemon with a
//! temp store, an in-process executor manager, each on its own runtime; the
//! executor processes are this test binary re-executed (see
//! [`executor_command`]); helpers that look at processes through `/proc`.

#![allow(dead_code, unreachable_pub)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rfx_executors::executor::{Executor, ExecutorConfig, HotTimeout};
use rfx_executors::lookup::LookupError;
use rfx_executors::manager::{self, ManagerConfig, ManagerError};
use rfx_executors::sandbox::{Handoff, SandboxMode};
use rfx_fabric::{Config, Fabric, TransportChoice, TransportKind};
use rfx_leases::client::blocking::{AdminClient, TenantClient};
use rfx_leases::daemon::{self, Daemon, DaemonConfig};
use rfx_leases::proto::{Capacity, LeaseId};
use rfx_leases::DaemonError;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

pub const KEY: &str = "test-cluster-key";

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Set in the executor processes the manager starts: the test binary then
/// runs [`executor_main`] in `executor_entry`.
pub const ENTRY_ENV: &str = "RFX_TEST_MANAGER_EXECUTOR";

/// The transport of the tests' invocations (the transports have their own
/// tests; this one is the same everywhere).
pub const TRANSPORT: TransportKind = TransportKind::Tcp;

// ---------------------------------------------------------------------------
// The executor side.

/// This test binary re-executed to run only `executor_entry`; the manager
/// appends the lease's flags after the `--`, which libtest takes as filters
/// that match no test.
pub fn executor_command() -> Vec<OsString> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = vec![exe.into_os_string()];
    for a in [
        "--exact",
        "executor_entry",
        "--nocapture",
        "--quiet",
        "--test-threads",
        "1",
        "--",
    ] {
        cmd.push(a.into());
    }
    cmd
}

/// The environment that makes [`executor_command`] an executor.
pub fn executor_env() -> Vec<(OsString, OsString)> {
    vec![
        (ENTRY_ENV.into(), "1".into()),
        ("RFX_TRANSPORT".into(), TRANSPORT.name().into()),
    ]
}

/// What `rfx executor` does (`src/cli/exec.rs`), with the flags the manager
/// passes: bind, announce the address on stderr, serve, print usage lines.
pub fn executor_main() {
    // A crash test segfaults on purpose: no core file.
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let args: Vec<String> = std::env::args().collect();
    let flags = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => &[][..],
    };
    let mut cfg = ExecutorConfig::new("127.0.0.1:0".parse().expect("addr"), Vec::new());
    for pair in flags.chunks(2) {
        let [flag, value] = pair else {
            panic!("flag without value: {pair:?}");
        };
        match flag.as_str() {
            "--listen" => cfg.listen = value.parse().expect("--listen ADDR"),
            "--workers" => cfg.workers = value.parse().expect("--workers N"),
            "--cpus" => {
                cfg.cpus = value
                    .split(',')
                    .map(|c| c.parse().expect("--cpus LIST"))
                    .collect()
            }
            "--hot-timeout-ms" => {
                cfg.hot_timeout = HotTimeout::from_millis(value.parse().expect("--hot-timeout-ms"))
            }
            "--usage-every-ms" => {
                cfg.usage_every = Some(Duration::from_millis(
                    value.parse().expect("--usage-every-ms"),
                ))
            }
            "--exec-timeout-ms" => {
                cfg.exec_timeout = Some(Duration::from_millis(
                    value.parse().expect("--exec-timeout-ms"),
                ))
            }
            "--handoff-fd" => {
                let handoff = Handoff::take(value.parse().expect("--handoff-fd N"))
                    .expect("the manager's handoff");
                assert!(handoff.confinement.is_none(), "these tests run unsandboxed");
                cfg.token = handoff.token.into_bytes();
            }
            other => panic!("unknown executor flag {other}"),
        }
    }
    assert!(!cfg.token.is_empty(), "no token handed off");
    let fabric = Fabric::open(Config::from_env().expect("fabric config")).expect("fabric");
    let exec = Executor::bind(fabric, cfg).expect("executor binds");
    eprintln!(
        "rfx executor: listening on {}",
        exec.local_addr().expect("local addr")
    );
    let usage = exec.serve().expect("executor serves");
    println!("{}", serde_json::to_string(&usage).expect("usage encodes"));
}

/// A fabric for the tenant side.
pub fn fabric() -> Fabric {
    Fabric::open(Config {
        transport: TransportChoice::Forced(TRANSPORT),
        ..Config::default()
    })
    .expect("fabric")
}

/// `librfx_example_functions.so`, built once per test binary (as
/// `tests/abi.rs` does, into `target/examples-functions`).
pub fn example_functions() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("CARGO_TARGET_TMPDIR is inside the target directory")
            .join("examples-functions");
        rfx_examples::build(&target, false).unwrap_or_else(|e| panic!("{e}"))
    })
}

// ---------------------------------------------------------------------------
// The lease manager.

/// A lease daemon on 127.0.0.1 with a temp-dir store, on its own runtime.
pub struct TestDaemon {
    pub addr: SocketAddr,
    rt: Option<Runtime>,
    _stop: Option<oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Starts a daemon on a free port, with tenant `alice`; returns it and
    /// alice's token.
    pub fn start() -> (Self, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("leases.redb");
        let token = daemon::add_tenant(&db, "alice").expect("tenant");
        let (rt, addr, stop) = launch(&db, "127.0.0.1:0".parse().expect("addr")).expect("daemon");
        let d = Self {
            addr,
            rt: Some(rt),
            _stop: Some(stop),
            dir,
        };
        (d, token)
    }

    /// Kills the daemon abruptly (no graceful shutdown) and starts it again
    /// on the same port and store.
    pub fn restart(&mut self) {
        drop(self.rt.take());
        self._stop = None;
        let db = self.dir.path().join("leases.redb");
        let deadline = Instant::now() + WAIT;
        let (rt, addr, stop) = loop {
            match launch(&db, self.addr) {
                Ok(d) => break d,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("daemon restart: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("the daemon does not restart: {e}"),
            }
        };
        assert_eq!(addr, self.addr);
        self.rt = Some(rt);
        self._stop = Some(stop);
    }

    /// A blocking tenant client of alice.
    pub fn tenant(&self, token: &str) -> TenantClient {
        let mut t = TenantClient::connect(&self.addr.to_string(), token).expect("tenant connects");
        t.set_timeout(WAIT);
        t
    }
}

fn launch(
    db: &Path,
    listen: SocketAddr,
) -> Result<(Runtime, SocketAddr, oneshot::Sender<()>), DaemonError> {
    let mut cfg = DaemonConfig::new(listen, db.to_owned(), KEY.to_owned());
    cfg.heartbeat_timeout = Duration::from_secs(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("daemon runtime");
    let daemon = rt.block_on(Daemon::bind(cfg))?;
    let addr = daemon.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    rt.spawn(daemon.run(stopped));
    Ok((rt, addr, stop))
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// The executor manager.

/// A manager config for the daemon at `lease_manager`: lookup on
/// 127.0.0.1:0, executors from [`executor_command`], usage every 100 ms,
/// 2 s of grace.
pub fn manager_config(lease_manager: SocketAddr, capacity: Capacity) -> ManagerConfig {
    let mut cfg = ManagerConfig::new(
        lease_manager.to_string(),
        KEY,
        "127.0.0.1:0".parse().expect("addr"),
        capacity,
        executor_command(),
    );
    cfg.executor_env = executor_env();
    // The executor here is this test binary, whose harness runs threads:
    // the sandbox (tests/sandbox.rs) needs a single-threaded `rfx executor`.
    cfg.sandbox.mode = SandboxMode::Off;
    cfg.usage_every = Duration::from_millis(100);
    cfg.stop_grace = Duration::from_secs(2);
    cfg
}

/// An executor manager on its own runtime. Dropping it drops the runtime,
/// which kills its executors (SIGKILL on drop of their handles).
pub struct TestManager {
    /// Its lookup address, as registered.
    pub addr: String,
    rt: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), ManagerError>>>,
}

impl TestManager {
    /// Starts the manager; returns once the daemon lists its host (whose
    /// address is the manager's lookup address).
    pub fn start(cfg: ManagerConfig) -> Self {
        let daemon = cfg.lease_manager.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("manager runtime");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = rt.spawn(manager::run(cfg, async move {
            let _ = stopped.await;
        }));
        let mut m = Self {
            addr: String::new(),
            rt: Some(rt),
            stop: Some(stop),
            done: Some(done),
        };
        let mut admin = AdminClient::connect(&daemon, KEY).expect("admin connects");
        admin.set_timeout(WAIT);
        m.addr = wait_for("the manager registers", || {
            assert!(!m.finished(), "the executor manager stopped at start");
            let hosts = admin.list_hosts().expect("list hosts");
            hosts.into_iter().find(|h| h.up).map(|h| h.address)
        });
        m
    }

    /// Completes the shutdown future and returns how `run` ended.
    pub fn stop(mut self) -> Result<(), ManagerError> {
        let rt = self.rt.take().expect("running");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.take().expect("running");
        let r = rt
            .block_on(async { tokio::time::timeout(WAIT, done).await })
            .expect("the manager stops in time")
            .expect("the manager task");
        rt.shutdown_background();
        r
    }

    /// Whether `run` has returned (it fails only at start).
    pub fn finished(&self) -> bool {
        self.done.as_ref().is_none_or(|d| d.is_finished())
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// Waiting and looking.

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Looks the executor of `lease` up until the manager knows it (the Start
/// command may trail the tenant's grant).
pub fn lookup(manager: &str, lease: LeaseId, token: &str) -> SocketAddr {
    wait_for(
        "the manager knows the lease",
        || match manager::lookup_executor(manager, lease, token, WAIT) {
            Ok(a) => Some(a),
            Err(LookupError::LookupRefused { message, .. }) if message == "unknown lease" => None,
            Err(e) => panic!("lookup failed: {e}"),
        },
    )
}

/// The pids of processes whose environment names `lease` (`RFX_LEASE_ID`).
pub fn pids_of_lease(lease: LeaseId) -> Vec<u32> {
    let needle = format!("RFX_LEASE_ID={}", lease.0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| environ(*pid).is_some_and(|env| env.iter().any(|v| v == &needle)))
        .collect()
}

/// The executor process of `lease`: exactly one child of this test process
/// (which runs the managers) has it.
pub fn executor_pid(lease: LeaseId) -> u32 {
    let me = std::process::id();
    wait_for("one executor process", || {
        let children: Vec<u32> = pids_of_lease(lease)
            .into_iter()
            .filter(|&pid| parent(pid) == Some(me))
            .collect();
        match children[..] {
            [pid] => Some(pid),
            _ => None,
        }
    })
}

/// The parent of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The environment of process `pid` (`None` if it is gone or unreadable).
pub fn environ(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
    )
}

/// The value of `var` in the environment of `pid`.
pub fn env_of(pid: u32, var: &str) -> Option<String> {
    let prefix = format!("{var}=");
    environ(pid)?
        .into_iter()
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_owned))
}

/// The command line of `pid`.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `pid` no longer exists. The executors are children of this
/// test process, so a pid disappears only once it is reaped: a zombie still
/// has its `/proc` entry.
pub fn wait_gone(pid: u32) {
    wait_for("the executor is reaped", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}
