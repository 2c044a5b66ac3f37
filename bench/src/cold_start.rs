//! `rfx-bench cold-start`: from nothing to the first result of a `noop`,
//! split into phases, against the floor of spawning a trivial process.
//!
//! Each iteration starts an `rfx executor` process (the binary beside this
//! one), reads its address from its stderr, connects, ships the library,
//! invokes `noop` once, then kills and reaps the process. Connect, load and
//! the first invocation speak the client protocol by hand
//! ([`rfx_executors::session`] and [`rfx_fabric::invocation`], as
//! [`rfx_executors::client::Invoker`] does) so that each phase has its own
//! time.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::poll::{PollFd, PollFlags};
use rfx::local::LocalCluster;
use rfx_executors::lookup::{lookup_executor, LookupError};
use rfx_executors::session::{
    self, ExecutorHello, LibrarySource, ResultGeometry, Setup, SetupReply,
};
use rfx_fabric::invocation::{self, Status, DESCRIPTOR_LEN};
use rfx_fabric::{Completion, ConnectOptions, Fabric, PollMode, TransportKind};
use rfx_leases::client::blocking::TenantClient;
use rfx_leases::proto::{LeaseId, LeaseRequest};
use serde::{Deserialize, Serialize};

use crate::invoke::{self, TOKEN};
use crate::results::{f64_or_nan, nan};

/// Bound on the executor's start-up and on each wait.
const WAIT: Duration = Duration::from_secs(10);

/// The client's result region: one result buffer, for slot 0.
const RESULT_BYTES: u32 = 64;

/// The set-up's result geometry: `RESULT_BYTES` for slot 0's result.
const RESULTS: ResultGeometry = ResultGeometry {
    stride: RESULT_BYTES,
    slots: 1,
};

/// What the executor prints once bound (`src/cli/exec.rs`).
const LISTENING: &str = "rfx executor: listening on ";

/// The phases, in order.
pub const PHASES: [&str; 6] = [
    "spawn",
    "listen",
    "connect",
    "load",
    "first_result",
    "total",
];

/// The `rfx` binary beside this one.
pub fn rfx_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating rfx-bench")?;
    let rfx = exe.with_file_name("rfx");
    if !rfx.is_file() {
        bail!(
            "no `rfx` binary at {}: cold-start spawns `rfx executor` from beside rfx-bench; \
             build it first with `cargo build --release` (or `cargo build --release -p rfx` \
             for a release rfx-bench, `cargo build -p rfx` for a debug one)",
            rfx.display()
        );
    }
    Ok(rfx)
}

/// A child process that is killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nanoseconds of each phase ([`PHASES`] order) of one iteration.
pub type Sample = [u64; 6];

/// Reads the executor's stderr until it announces its address.
fn read_address(stderr: &mut ChildStderr) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // Only complete lines count: the address may still be arriving.
        let complete = seen
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|end| String::from_utf8_lossy(&seen[..end]).into_owned());
        if let Some(addr) = complete
            .as_deref()
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix(LISTENING)))
        {
            return addr
                .trim()
                .parse()
                .with_context(|| format!("unparsable executor address {addr:?}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the executor did not print its address within {WAIT:?}; its stderr:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        let ms = left.as_millis().clamp(1, 1000) as u16;
        let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll on the executor's stderr"),
        }
        let n = stderr
            .read(&mut buf)
            .context("reading the executor's stderr")?;
        if n == 0 {
            bail!(
                "the executor exited before printing its address; its stderr:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Connects to the executor at `addr` with `token`, ships `setup`, invokes
/// `noop` once: the instants the connection, the set-up and the result were
/// done. The connection is closed before this returns.
fn first_result(
    fabric: &Fabric,
    addr: SocketAddr,
    token: &[u8],
    setup: &Setup,
    mode: PollMode,
) -> anyhow::Result<(Instant, Instant, Instant)> {
    let results = fabric.register(RESULT_BYTES as usize)?;
    // As the invoker: the lease token is the handshake's shared secret.
    let mut ep = fabric
        .connect(addr, &ConnectOptions::new().expose(&results).secret(token))
        .context("connecting to the executor")?;
    let eh: ExecutorHello = session::decode(ep.peer_user_data()).map_err(anyhow::Error::msg)?;
    let slots = *ep
        .peer_buffers()
        .first()
        .context("the executor exposed no slots")?;
    ensure!(
        eh.slots >= 1 && eh.slot_size as usize >= DESCRIPTOR_LEN,
        "the executor's slot geometry is unusable"
    );
    let t_connect = Instant::now();

    ep.send(&session::encode(setup))?;
    match ep.wait(PollMode::Warm, WAIT)? {
        Completion::Recv(m) => {
            match session::decode::<SetupReply>(&m).map_err(anyhow::Error::msg)? {
                SetupReply::Ready => {}
                SetupReply::Failed(why) => bail!("the executor refused the set-up: {why}"),
            }
        }
        Completion::Write(_) => bail!("a result before the set-up reply"),
    }
    let t_load = Instant::now();

    // An empty input into slot 0: its result goes to `results` (the
    // set-up's geometry), so the write carries nothing at all.
    let id = 1u16;
    ep.write_imm(&[], &slots, 0, invocation::pack_imm(id, 0))?;
    match ep.wait(mode, WAIT)? {
        Completion::Write(w) => {
            let (got, status) = invocation::unpack_imm(w.imm);
            ensure!(
                got == id && Status::from_u16(status) == Some(Status::Ok) && w.len == 0,
                "unexpected result: id {got}, status {status}, {} bytes",
                w.len
            );
        }
        Completion::Recv(_) => bail!("a message instead of the result"),
    }
    let t_first = Instant::now();
    drop(ep);
    Ok((t_connect, t_load, t_first))
}

/// One cold start; the child is killed and reaped before this returns.
fn once(
    rfx: &Path,
    kind: TransportKind,
    mode: PollMode,
    executor_cpu: Option<usize>,
    fabric: &Fabric,
    lib_name: &str,
    lib_bytes: &[u8],
) -> anyhow::Result<Sample> {
    let setup = Setup {
        library: LibrarySource::Bytes {
            name: lib_name.to_string(),
            bytes: lib_bytes.to_vec(),
        },
        functions: vec!["noop".into()],
        results: RESULTS,
        group: None,
    };
    let mut cmd = Command::new(rfx);
    cmd.args(["--transport", kind.name(), "executor"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--connections",
            "1",
        ])
        .args(["--hot-timeout-ms", hot_timeout_ms(mode)])
        .env("RFX_LEASE_TOKEN", std::str::from_utf8(TOKEN)?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(cpu) = executor_cpu {
        cmd.args(["--cpus", &cpu.to_string()]);
    }

    let t0 = Instant::now();
    let mut child = Reaped(
        cmd.spawn()
            .with_context(|| format!("spawning {}", rfx.display()))?,
    );
    let t_spawn = Instant::now();
    let mut stderr = child.0.stderr.take().context("no stderr pipe")?;
    let addr = read_address(&mut stderr)?;
    let t_listen = Instant::now();

    let (t_connect, t_load, t_first) = first_result(fabric, addr, TOKEN, &setup, mode)?;
    drop(child);

    let ns = |a: Instant, b: Instant| b.duration_since(a).as_nanos() as u64;
    Ok([
        ns(t0, t_spawn),
        ns(t_spawn, t_listen),
        ns(t_listen, t_connect),
        ns(t_connect, t_load),
        ns(t_load, t_first),
        ns(t0, t_first),
    ])
}

/// The executor's `--hot-timeout-ms` for a client polling mode: hot for
/// 10 ms after set-up (the default), or always warm.
fn hot_timeout_ms(mode: PollMode) -> &'static str {
    match mode {
        PollMode::Hot => "10",
        PollMode::Warm => "0",
    }
}

/// `iters` cold starts over `kind`; the caller's thread is the client (pin
/// it first), the executor's worker is pinned to `executor_cpu`.
pub fn run(
    rfx: &Path,
    kind: TransportKind,
    mode: PollMode,
    executor_cpu: Option<usize>,
    iters: u64,
    lib: &Path,
) -> anyhow::Result<Vec<Sample>> {
    let bytes = std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?;
    let name = lib.to_string_lossy().into_owned();
    let fabric = invoke::open_fabric(kind)?;
    (0..iters)
        .map(|i| {
            once(rfx, kind, mode, executor_cpu, &fabric, &name, &bytes)
                .with_context(|| format!("cold start {i} over {kind}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The full chain: lease, spawn by the executor manager, connect, load, result.

/// The phases of a cold start through a lease, in order.
pub const LEASE_PHASES: [&str; 6] = ["lease", "spawn", "connect", "load", "first_result", "total"];

/// What the lookup service answers for a lease it does not know
/// (`rfx_executors::manager` lookup).
const UNKNOWN_LEASE: &str = "unknown lease";

/// A lease granted to the bench.
struct Granted {
    /// The lease.
    lease: LeaseId,
    /// Its token (hex): proved to the lookup, presented to the executor.
    token: String,
    /// The executor manager's lookup address.
    host: String,
    core_ids: Vec<usize>,
}

/// A lease manager and an executor manager, children of `rfx`
/// ([`LocalCluster`]), with a tenant; stopped (executor manager first) and
/// reaped when dropped.
pub struct Cluster {
    /// Dropped after `conn`: the tenant's connection closes first.
    conn: Option<TenantClient>,
    local: LocalCluster,
    /// The cores the leases get (the first lease's).
    pub executor_cpus: Vec<usize>,
    /// Release waits that hit their bound.
    release_timeouts: u64,
}

/// `ms` for the leases' `hot_timeout_ms`, as the direct mode's executors.
fn lease_hot_timeout(mode: PollMode) -> i64 {
    hot_timeout_ms(mode).parse().unwrap_or(10)
}

impl Cluster {
    /// Starts the managers, adds a tenant, and grants and releases one
    /// lease (untimed).
    /// `sandbox`: the executor manager's `--sandbox` (`strict`, `off`), or
    /// `None` for its default; `standby`: its `--sandbox-standby`.
    pub fn start(
        rfx: &Path,
        mode: PollMode,
        sandbox: Option<&str>,
        standby: Option<usize>,
    ) -> anyhow::Result<Cluster> {
        let mut args = vec!["--gpu".to_owned(), "0".to_owned()];
        if let Some(s) = sandbox {
            args.extend(["--sandbox".to_owned(), s.to_owned()]);
        }
        if let Some(n) = standby {
            args.extend(["--sandbox-standby".to_owned(), n.to_string()]);
        }
        let local = LocalCluster::builder(rfx)
            .executor_managers(1)
            .executor_manager_args(args)
            .start_wait(WAIT)
            .start()
            .context("starting the lease manager and the executor manager")?;
        let token = local.add_tenant("rfx-bench")?;
        let conn = TenantClient::connect(&local.lease_manager().to_string(), &token)?;
        let mut cluster = Cluster {
            conn: Some(conn),
            local,
            executor_cpus: Vec::new(),
            release_timeouts: 0,
        };
        let probe = cluster
            .create_lease(mode)
            .context("no lease granted to the bench (probe)")?;
        cluster.executor_cpus = probe.core_ids.clone();
        cluster.release(&probe)?;
        cluster.release_timeouts = 0;
        Ok(cluster)
    }

    /// The end of each manager's log, for errors.
    pub fn logs(&self) -> String {
        self.local.logs()
    }

    fn conn(&self) -> anyhow::Result<&TenantClient> {
        self.conn
            .as_ref()
            .context("no connection to the lease manager")
    }

    /// One `CreateLease` round trip: one core for ten minutes.
    fn create_lease(&mut self, mode: PollMode) -> anyhow::Result<Granted> {
        let req = LeaseRequest::new(1, 600_000).with_hot_timeout(lease_hot_timeout(mode));
        let info = self.conn()?.create_lease(&req)?;
        Ok(Granted {
            lease: info.lease.id,
            token: info.token.to_hex(),
            host: info.host_addr,
            core_ids: info.lease.core_ids.iter().map(|&c| c as usize).collect(),
        })
    }

    /// Releases `g`, then waits (bounded) until its lookup says unknown.
    fn release(&mut self, g: &Granted) -> anyhow::Result<()> {
        self.conn()?.release(g.lease)?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match lookup_executor(&g.host, g.lease, &g.token, Duration::from_secs(1)) {
                Err(LookupError::LookupRefused { message, .. }) if message == UNKNOWN_LEASE => {
                    return Ok(())
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        self.release_timeouts += 1;
        Ok(())
    }

    /// Release waits that hit their bound, since [`Cluster::start`].
    pub fn release_timeouts(&self) -> u64 {
        self.release_timeouts
    }
}

/// Polls the lookup until it answers with the executor's address.
fn executor_address(g: &Granted) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lookup_executor(&g.host, g.lease, &g.token, left) {
            Ok(addr) => return Ok(addr),
            Err(LookupError::LookupRefused { message, .. })
                if message == UNKNOWN_LEASE && !left.is_zero() =>
            {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e).context(format!("looking up the executor at {}", g.host)),
        }
    }
}

/// One cold start through a lease; the lease is released (untimed) before
/// this returns.
fn once_leased(
    cluster: &mut Cluster,
    mode: PollMode,
    fabric: &Fabric,
    setup: &Setup,
) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let g = cluster.create_lease(mode)?;
    let t_lease = Instant::now();
    let timed = (|| {
        let addr = executor_address(&g)?;
        let t_spawn = Instant::now();
        let (t_connect, t_load, t_first) =
            first_result(fabric, addr, g.token.as_bytes(), setup, mode)?;
        Ok::<_, anyhow::Error>((t_spawn, t_connect, t_load, t_first))
    })();
    let released = cluster.release(&g);
    let (t_spawn, t_connect, t_load, t_first) = timed?;
    released?;
    let ns = |a: Instant, b: Instant| b.duration_since(a).as_nanos() as u64;
    Ok([
        ns(t0, t_lease),
        ns(t_lease, t_spawn),
        ns(t_spawn, t_connect),
        ns(t_connect, t_load),
        ns(t_load, t_first),
        ns(t0, t_first),
    ])
}

/// `iters` cold starts over `kind` through leases of `cluster`; the
/// caller's thread is the client (pin it first, off the leased cores).
pub fn run_leased(
    cluster: &mut Cluster,
    kind: TransportKind,
    mode: PollMode,
    iters: u64,
    lib: &Path,
) -> anyhow::Result<Vec<Sample>> {
    let bytes = std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?;
    let setup = Setup {
        library: LibrarySource::Bytes {
            name: lib.to_string_lossy().into_owned(),
            bytes,
        },
        functions: vec!["noop".into()],
        results: RESULTS,
        group: None,
    };
    let fabric = invoke::open_fabric(kind)?;
    (0..iters)
        .map(|i| {
            once_leased(cluster, mode, &fabric, &setup).with_context(|| {
                format!(
                    "cold start {i} over {kind} through a lease\n{}",
                    cluster.logs()
                )
            })
        })
        .collect()
}

/// Nanoseconds to spawn `program args` and wait for it, `iters` times.
pub fn spawn_floor(program: &Path, args: &[&str], iters: u64) -> anyhow::Result<Vec<u64>> {
    (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            let status = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| format!("running {}", program.display()))?;
            let dt = t0.elapsed().as_nanos() as u64;
            ensure!(status.success(), "{} failed: {status}", program.display());
            Ok(dt)
        })
        .collect()
}

/// Percentiles (nearest rank) and mean of some nanosecond samples, in
/// microseconds. (Read back by `rfx-bench report`: a figure written as
/// `null` reads as NaN, and the ones files from before they were added
/// lack are NaN.)
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spread {
    #[serde(deserialize_with = "f64_or_nan")]
    pub p50_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p90_us: f64,
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub p99_us: f64,
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub p999_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_us: f64,
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub mean_us: f64,
}

impl Spread {
    /// Nearest-rank percentiles.
    pub fn of(samples: &[u64]) -> Spread {
        let mut v = samples.to_vec();
        v.sort_unstable();
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        let mean_us = if v.is_empty() {
            0.0
        } else {
            v.iter().map(|&ns| ns as f64).sum::<f64>() / v.len() as f64 / 1000.0
        };
        Spread {
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
            mean_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_nearest_rank() {
        let s = Spread::of(&(1..=10).map(|i| i * 1000).collect::<Vec<_>>());
        assert_eq!((s.p50_us, s.p90_us, s.max_us), (5.0, 9.0, 10.0));
        assert_eq!((s.p99_us, s.p999_us, s.mean_us), (10.0, 10.0, 5.5));
        let one = Spread::of(&[2500]);
        assert_eq!((one.p50_us, one.p90_us, one.max_us), (2.5, 2.5, 2.5));
        assert_eq!(Spread::of(&[]).max_us, 0.0);
    }
}
