//! The fault-injection harness of the end-to-end tests: signals (kill -9,
//! SIGSTOP/SIGCONT), the process table (children, executors, liveness),
//! shared-memory checks (`/dev/shm`, memfds), a TCP proxy that passes,
//! delays, black-holes, refuses or cuts connections, and a local cluster
//! (lease manager, executor managers, tenants) whose processes can be
//! killed and restarted on the same store and addresses.
//!
//! Everything is bounded in time: every wait takes a deadline and panics
//! with what it waited for when it runs out.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Proc, RFX};

/// The cluster key of every harness cluster.
pub const KEY: &str = "fault-harness-cluster-key";

// --- signals and the process table -----------------------------------------

/// Sends `sig` to `pid`; false if the process is gone.
pub fn signal(pid: u32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// `kill -9`.
pub fn kill9(pid: u32) -> bool {
    signal(pid, Signal::SIGKILL)
}

/// Freezes a process (SIGSTOP): it holds its sockets but answers nothing.
pub fn freeze(pid: u32) -> bool {
    signal(pid, Signal::SIGSTOP)
}

/// Thaws a frozen process (SIGCONT).
pub fn thaw(pid: u32) -> bool {
    signal(pid, Signal::SIGCONT)
}

/// `(state, ppid)` from `/proc/PID/stat`, or `None` if there is no such process.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The parent of `pid`, if it exists.
pub fn parent(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, ppid)| ppid)
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// True if `pid` is stopped (SIGSTOP).
pub fn stopped(pid: u32) -> bool {
    matches!(stat(pid), Some(('T', _)))
}

/// The arguments `pid` was started with (empty if it is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process, from the process table.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live children of `ppid`.
pub fn children(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(stat(p), Some((s, pp)) if pp == ppid && s != 'Z'))
        .collect()
}

/// True if `pid` runs `rfx executor` (the binary under test).
pub fn is_rfx_executor(pid: u32) -> bool {
    let args = cmdline(pid);
    args.first()
        .is_some_and(|a| a == RFX || a.ends_with("/rfx"))
        && args.iter().any(|a| a == "executor")
}

/// The real uid of `pid`.
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// True for a standby executor that no lease has claimed yet: `rfx
/// executor --standby` still running as root (a claimed one takes its
/// lease's uid before it serves).
pub fn is_waiting_standby(pid: u32) -> bool {
    cmdline(pid).iter().any(|a| a == "--standby") && uid_of(pid) == Some(0)
}

/// The live `rfx executor` children of `ppid` (an executor manager) that
/// serve a lease (standbys still waiting for one left out).
pub fn executors_of(ppid: u32) -> Vec<u32> {
    children(ppid)
        .into_iter()
        .filter(|&p| is_rfx_executor(p))
        // A sandboxed executor is the child of its relay (outside its pid
        // namespace): the process that serves is the relay's child.
        .map(|p| {
            children(p)
                .into_iter()
                .find(|&c| is_rfx_executor(c))
                .unwrap_or(p)
        })
        .filter(|&p| !is_waiting_standby(p))
        .collect()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`;
/// panics naming `what` after that.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until none of `pids` is alive.
pub fn wait_gone(pids: &[u32], limit: Duration, what: &str) {
    wait_for(limit, what, || {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        left.is_empty().then_some(())
    });
}

/// The entries of `/dev/shm`.
pub fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Entries of `/dev/shm` now that were not in `before` and look like
/// rfx's (contain `rfx`); other programs on the machine may come and go.
pub fn new_rfx_shm(before: &BTreeSet<String>) -> Vec<String> {
    shm_entries()
        .difference(before)
        .filter(|n| n.contains("rfx"))
        .cloned()
        .collect()
}

/// How many memfds process `pid` holds open.
pub fn memfds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("/memfd:"))
                .count()
        })
        .unwrap_or(0)
}

// --- a TCP proxy that injects faults ---------------------------------------

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Read and discard everything (a partition that keeps sockets open).
    Blackhole,
    /// Close new connections at once (existing ones keep their mode).
    Refuse,
}

struct ProxyState {
    fault: Mutex<Fault>,
    /// Bumped by `cut`: connections of older generations close.
    generation: AtomicU64,
    stop: AtomicBool,
    accepted: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of `target`, stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            fault: Mutex::new(Fault::Pass),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if *st.fault.lock().unwrap() == Fault::Refuse {
                            drop(client);
                            continue;
                        }
                        st.accepted.fetch_add(1, Ordering::Relaxed);
                        let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let generation = st.generation.load(Ordering::SeqCst);
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let st = st.clone();
                            std::thread::spawn(move || pump(from, to, &st, generation));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what happens to traffic from now on.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Closes every connection open now (both directions); new ones work.
    pub fn cut(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` under the proxy's current fault until either side
/// closes, the connection is cut or the proxy stops.
fn pump(mut from: TcpStream, mut to: TcpStream, st: &ProxyState, generation: u64) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if st.stop.load(Ordering::Relaxed) || st.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        // Cut while this read waited: what it read must not pass (a request
        // sent after `cut` returned would otherwise get through).
        if st.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        let fault = *st.fault.lock().unwrap();
        match fault {
            Fault::Blackhole => continue,
            Fault::Delay(d) => std::thread::sleep(d),
            Fault::Pass | Fault::Refuse => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// --- a local cluster of real processes --------------------------------------

/// A free loopback address (bound, then released).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) {
    wait_for(limit, &format!("a listener on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(100))
            .ok()
            .map(|_| ())
    });
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `$TMPDIR/rfx-fault-TAG-PID-N`, empty: N counts the scratch
    /// directories of this process, so that tests of one binary run in
    /// threads (`cargo test`) never share one.
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("rfx-fault-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn log_file(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let f = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    (f.try_clone().unwrap().into(), f.into())
}

/// Spawns a daemon of the cluster (its output in `dir/name.log`) and
/// waits until it listens on `addr`.
fn daemon(mut cmd: Command, dir: &Path, name: &str, addr: SocketAddr) -> Proc {
    let (out, err) = log_file(dir, name);
    let p = cmd
        .env("RFX_CLUSTER_KEY", KEY)
        .env("RFX_LOG", "info")
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let p = Proc(p);
    wait_listening(addr, Duration::from_secs(20));
    p
}

/// The last `n` lines of every log in `dir`, for failure messages.
pub fn logs(dir: &Path, n: usize) -> String {
    let mut out = String::new();
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let s = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = s.lines().collect();
                out += &format!("--- {}\n", p.display());
                for l in &lines[lines.len().saturating_sub(n)..] {
                    out += l;
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A lease manager process on a fixed address and store, restartable.
pub struct LeaseManager {
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub heartbeat_timeout_ms: u64,
    dir: PathBuf,
    pub proc: Option<Proc>,
}

impl LeaseManager {
    /// Starts `rfx lease-manager` on `addr` with the store `dir/leases.redb`.
    pub fn start(dir: &Path, addr: SocketAddr, heartbeat_timeout_ms: u64) -> LeaseManager {
        let mut lm = LeaseManager {
            addr,
            db: dir.join("leases.redb"),
            heartbeat_timeout_ms,
            dir: dir.to_path_buf(),
            proc: None,
        };
        lm.restart();
        lm
    }

    /// Starts it (again) on the same address and store.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "the lease manager runs already");
        let mut cmd = Command::new(RFX);
        cmd.args(["lease-manager", "--listen", &self.addr.to_string()])
            .args([
                "--heartbeat-timeout-ms",
                &self.heartbeat_timeout_ms.to_string(),
            ])
            .arg("--db")
            .arg(&self.db);
        self.proc = Some(daemon(cmd, &self.dir, "lease-manager", self.addr));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").0.id()
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        let mut p = self.proc.take().expect("running");
        kill9(p.0.id());
        p.0.wait().unwrap();
    }

    /// Adds a tenant through the running daemon; its token.
    pub fn add_tenant(&self, name: &str) -> String {
        rfx::leases::client::blocking::AdminClient::connect(&self.addr.to_string(), KEY)
            .unwrap()
            .add_tenant(name)
            .unwrap()
    }

    /// The hosts as the lease manager knows them.
    pub fn hosts(&self) -> Vec<rfx::leases::proto::Host> {
        rfx::leases::client::blocking::AdminClient::connect(&self.addr.to_string(), KEY)
            .unwrap()
            .list_hosts()
            .unwrap()
    }
}

/// An executor manager process, restartable on the same address.
pub struct ExecutorManager {
    pub listen: SocketAddr,
    pub lease_manager: SocketAddr,
    pub cores: u32,
    dir: PathBuf,
    name: String,
    pub proc: Option<Proc>,
}

impl ExecutorManager {
    /// Starts `rfx executor-manager` with `cores` on `listen`.
    pub fn start(
        dir: &Path,
        name: &str,
        lease_manager: SocketAddr,
        listen: SocketAddr,
        cores: u32,
    ) -> ExecutorManager {
        let mut em = ExecutorManager {
            listen,
            lease_manager,
            cores,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            proc: None,
        };
        em.restart();
        em
    }

    /// Starts it (again).
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "the executor manager runs already");
        let mut cmd = Command::new(RFX);
        cmd.args([
            "executor-manager",
            "--lease-manager",
            &self.lease_manager.to_string(),
            "--listen",
            &self.listen.to_string(),
            "--cores",
            &self.cores.to_string(),
            "--gpu",
            "0",
        ]);
        self.proc = Some(daemon(cmd, &self.dir, &self.name, self.listen));
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").0.id()
    }

    /// Its live executor processes.
    pub fn executors(&self) -> Vec<u32> {
        executors_of(self.pid())
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        let mut p = self.proc.take().expect("running");
        kill9(p.0.id());
        p.0.wait().unwrap();
    }

    /// SIGTERM (a clean stop: deregisters, stops its executors), bounded.
    pub fn stop(&mut self) {
        let mut p = self.proc.take().expect("running");
        signal(p.0.id(), Signal::SIGTERM);
        if p.wait_timeout(Duration::from_secs(20)).is_none() {
            panic!("executor manager {} ignored SIGTERM", self.name);
        }
    }
}

/// Retries `f` (every 50 ms, at most `limit`) until it succeeds.
pub fn retry<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
