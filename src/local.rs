//! [`LocalCluster`]: a whole rfx deployment on this host, as child
//! processes of the `rfx` binary: one lease manager and N executor
//! managers on loopback, with a fresh cluster key and store. For demos,
//! benchmarks and tests (and a user's own), one call instead of a script.
//!
//! ```no_run
//! use rfx::local::LocalCluster;
//! let cluster = LocalCluster::builder("target/release/rfx").executor_managers(2).start()?;
//! let token = cluster.add_tenant("alice")?;
//! let tenant = rfx::tenant::Tenant::connect(&cluster.lease_manager().to_string(), &token)?;
//! // ... lease, invoke, release; the processes stop when `cluster` drops.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rfx_leases::client::blocking::AdminClient;
use rfx_leases::wire::{LeaseToken, CLUSTER_KEY_ENV};
use rfx_leases::DaemonError;

/// How long a stopped process may take before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What can go wrong starting or driving a [`LocalCluster`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A file, directory or process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A process exited while the cluster started.
    #[error("the {name} exited ({status}) before the cluster came up\n{logs}")]
    Exited {
        /// Which process.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of every process's log.
        logs: String,
    },
    /// A process did not listen, or the hosts did not register, in time.
    #[error("{what} within {after:?}\n{logs}")]
    NotUp {
        /// What did not happen.
        what: String,
        /// The bound.
        after: Duration,
        /// The end of every process's log.
        logs: String,
    },
    /// The lease manager refused or failed an operator request.
    #[error(transparent)]
    Control(#[from] DaemonError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// How to start a [`LocalCluster`]; see [`LocalCluster::builder`].
#[derive(Debug, Clone)]
pub struct LocalClusterBuilder {
    rfx: PathBuf,
    executor_managers: usize,
    cores: Option<usize>,
    lease_manager_args: Vec<String>,
    executor_manager_args: Vec<String>,
    key: Option<String>,
    dir: Option<PathBuf>,
    wait: Duration,
    env: Vec<(String, String)>,
}

impl LocalClusterBuilder {
    /// A variable of every process's environment (e.g. `RFX_PYTHON_HOST`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Executor managers to start (default 1), each its own "host".
    pub fn executor_managers(mut self, n: usize) -> Self {
        self.executor_managers = n;
        self
    }

    /// Cores each executor manager offers (default: this machine's).
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }

    /// Extra arguments of `rfx lease-manager`.
    pub fn lease_manager_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.lease_manager_args
            .extend(a.into_iter().map(Into::into));
        self
    }

    /// Extra arguments of every `rfx executor-manager` (e.g. `--gpu 0`).
    pub fn executor_manager_args<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        a: I,
    ) -> Self {
        self.executor_manager_args
            .extend(a.into_iter().map(Into::into));
        self
    }

    /// The cluster key (default: a fresh random one).
    pub fn cluster_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Where the store and the logs go (default: a fresh directory under
    /// the temp dir, removed when the cluster drops).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Bound on each start-up step (default 20 s).
    pub fn start_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Starts the lease manager, then the executor managers, and returns
    /// once every executor manager has registered with the lease manager.
    pub fn start(self) -> Result<LocalCluster, LocalError> {
        let (dir, own_dir) = match &self.dir {
            Some(d) => (d.clone(), false),
            None => {
                let tag = LeaseToken::random()
                    .map_err(|e| io("random directory name")(e.into()))?
                    .to_hex();
                let d = std::env::temp_dir().join(format!(
                    "rfx-local-{}-{}",
                    std::process::id(),
                    &tag[..8]
                ));
                (d, true)
            }
        };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let key = match &self.key {
            Some(k) => k.clone(),
            None => LeaseToken::random()
                .map_err(|e| io("random cluster key")(e.into()))?
                .to_hex(),
        };
        let lease_manager = free_port()?;
        let mut c = LocalCluster {
            rfx: self.rfx.clone(),
            dir,
            own_dir,
            key,
            lease_manager,
            executor_managers: Vec::new(),
            children: Vec::new(),
            lease_manager_args: self.lease_manager_args.clone(),
            wait: self.wait,
            env: self.env.clone(),
        };
        c.spawn_lease_manager()?;
        let cores = self.cores.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        for i in 0..self.executor_managers {
            let addr = free_port()?;
            let mut args: Vec<String> = vec![
                "executor-manager".into(),
                "--lease-manager".into(),
                c.lease_manager.to_string(),
                "--listen".into(),
                addr.to_string(),
                "--cores".into(),
                cores.to_string(),
            ];
            args.extend(self.executor_manager_args.iter().cloned());
            c.spawn(&format!("executor manager {i}"), &args)?;
            c.wait_listening(addr, &format!("executor manager {i}"))?;
            c.executor_managers.push(addr);
        }
        c.wait_registered()?;
        Ok(c)
    }
}

/// A lease manager and executor managers running as child processes on
/// loopback; stopped (SIGTERM, executor managers first, SIGKILL after
/// 10 s) and reaped when dropped. Each process's stderr goes to
/// `<dir>/<name>.log`.
pub struct LocalCluster {
    rfx: PathBuf,
    dir: PathBuf,
    own_dir: bool,
    key: String,
    lease_manager: SocketAddr,
    executor_managers: Vec<SocketAddr>,
    /// In start order; the lease manager first.
    children: Vec<(String, Child)>,
    lease_manager_args: Vec<String>,
    wait: Duration,
    env: Vec<(String, String)>,
}

impl fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir)
            .field("lease_manager", &self.lease_manager)
            .field("executor_managers", &self.executor_managers)
            .finish_non_exhaustive()
    }
}

const LEASE_MANAGER: &str = "lease manager";

impl LocalCluster {
    /// A cluster of `rfx` (the path of the `rfx` binary) processes: one
    /// executor manager with this machine's cores unless told otherwise.
    pub fn builder(rfx: impl Into<PathBuf>) -> LocalClusterBuilder {
        LocalClusterBuilder {
            rfx: rfx.into(),
            executor_managers: 1,
            cores: None,
            lease_manager_args: Vec::new(),
            executor_manager_args: Vec::new(),
            key: None,
            dir: None,
            wait: Duration::from_secs(20),
            env: Vec::new(),
        }
    }

    /// Where the lease manager listens.
    pub fn lease_manager(&self) -> SocketAddr {
        self.lease_manager
    }

    /// Where the executor managers listen (their lookup services).
    pub fn executor_managers(&self) -> &[SocketAddr] {
        &self.executor_managers
    }

    /// The cluster key shared by the managers (operators use it too).
    pub fn cluster_key(&self) -> &str {
        &self.key
    }

    /// The directory of the store and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lease store (redb file).
    pub fn store(&self) -> PathBuf {
        self.dir.join("leases.redb")
    }

    /// Adds a tenant; returns its secret token.
    pub fn add_tenant(&self, name: &str) -> Result<String, LocalError> {
        Ok(AdminClient::connect(&self.lease_manager.to_string(), &self.key)?.add_tenant(name)?)
    }

    /// Kills the lease manager (SIGKILL: no clean shutdown) and starts it
    /// again on the same address and store, as an operator restarting a
    /// crashed one would.
    pub fn restart_lease_manager(&mut self) -> Result<(), LocalError> {
        if let Some(i) = self.children.iter().position(|(n, _)| n == LEASE_MANAGER) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn_lease_manager()
    }

    /// The end of every process's log (for error messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(10)..];
            if !tail.is_empty() {
                out += &format!("--- {name} (log end)\n{}\n", tail.join("\n"));
            }
        }
        out
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.log", name.replace(' ', "-")))
    }

    fn spawn_lease_manager(&mut self) -> Result<(), LocalError> {
        let mut args: Vec<String> = vec![
            "lease-manager".into(),
            "--listen".into(),
            self.lease_manager.to_string(),
            "--db".into(),
            self.store().display().to_string(),
        ];
        args.extend(self.lease_manager_args.iter().cloned());
        // The lease manager goes first in the stop order's reverse: it
        // stops last, after the executor managers deregistered.
        self.spawn(LEASE_MANAGER, &args)?;
        let last = self.children.pop().expect("just spawned");
        self.children.insert(0, last);
        self.wait_listening(self.lease_manager, LEASE_MANAGER)
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<(), LocalError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .map_err(io(format!("creating the log of the {name}")))?;
        let child = Command::new(&self.rfx)
            .args(args)
            .env(CLUSTER_KEY_ENV, &self.key)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting the {name} ({})", self.rfx.display())))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    fn wait_listening(&mut self, addr: SocketAddr, what: &str) -> Result<(), LocalError> {
        let deadline = Instant::now() + self.wait;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            self.check_alive()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LocalError::NotUp {
            what: format!("the {what} did not listen on {addr}"),
            after: self.wait,
            logs: self.logs(),
        })
    }

    /// Every executor manager registered (a lease can be granted on it).
    fn wait_registered(&mut self) -> Result<(), LocalError> {
        let want = self.executor_managers.len();
        if want == 0 {
            return Ok(());
        }
        let admin = AdminClient::connect(&self.lease_manager.to_string(), &self.key)?;
        let deadline = Instant::now() + self.wait;
        loop {
            let up = admin.list_hosts()?.iter().filter(|h| h.up).count();
            if up >= want {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(LocalError::NotUp {
                    what: format!("{up} of {want} executor managers registered"),
                    after: self.wait,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_alive(&mut self) -> Result<(), LocalError> {
        let exited = self
            .children
            .iter_mut()
            .find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s)));
        match exited {
            Some((name, status)) => Err(LocalError::Exited {
                name,
                status,
                logs: self.logs(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Newest first: executor managers stop their executors while the
        // lease manager is still there to hear them deregister.
        for (name, c) in self.children.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + STOP_WAIT;
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = c.try_wait() {
                tracing::warn!("the {name} did not stop within {STOP_WAIT:?}; killing it");
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A free loopback port (bound, then released: a small race, fine on one
/// host).
fn free_port() -> Result<SocketAddr, LocalError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("finding a free port"))
}
