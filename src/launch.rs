//! `rfx run`: start the N ranks of an MPI-like program, wire them up through
//! a rendezvous the launcher hosts, and supervise them.
//!
//! Each rank gets the environment that
//! [`Communicator::from_env`](rfx_collectives::Communicator::from_env) reads:
//!
//! | variable | value |
//! |---|---|
//! | `RFX_RANK`, `RFX_SIZE` | the rank and the number of ranks |
//! | `RFX_RENDEZVOUS` | `host:port` of the rendezvous the launcher serves |
//! | `RFX_RENDEZVOUS_EXTERNAL` | `1`: rank 0 does not host the rendezvous itself |
//! | `RFX_JOB_KEY` | a fresh random key: processes of other jobs cannot join |
//! | `RFX_BIND_ADDR` | the address the rank listens on (its host) |
//! | `LD_LIBRARY_PATH` | ranks on this machine: rfx's `libmpi_abi.so.1` first |
//!
//! Ranks are placed on `--hosts` in blocks (ranks 0..k on the first host,
//! and so on), so that neighbours share a host and its shared memory. A host
//! that is an address of this machine (loopback included) is started
//! directly; any other through the remote shell (`ssh -o BatchMode=yes` by
//! default, `RFX_RSH` to change it), as `mpirun`'s rsh launcher does. A
//! remote rank's job key travels on the remote shell's stdin, never on a
//! command line (which any user of either host could read with `ps`).
//!
//! Supervision follows MPI: when a rank fails (non-zero exit or a signal),
//! the others are terminated (SIGTERM, then SIGKILL after a grace period)
//! and the launcher exits with the failed rank's status.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rfx_collectives::Rendezvous;

/// How long the rendezvous waits for every rank to register.
const RENDEZVOUS_WAIT: Duration = Duration::from_secs(120);

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Number of ranks.
    pub ranks: usize,
    /// Hosts to place ranks on (blocks of ranks per host); empty: this host.
    pub hosts: Vec<String>,
    /// The program and its arguments.
    pub program: OsString,
    /// Arguments of the program.
    pub args: Vec<OsString>,
    /// Prefix every output line with `[rank] `.
    pub tag_output: bool,
    /// Kill the job after this long.
    pub timeout: Option<Duration>,
    /// Remote shell for hosts that are not this machine, e.g. `["ssh"]`.
    pub rsh: Vec<String>,
    /// Extra environment for every rank.
    pub env: Vec<(String, String)>,
    /// rfx's MPI library (`libmpi_abi.so`) for ranks on this machine: a
    /// program built against the MPI standard ABI loads it instead of
    /// another implementation's ([`MpiLibrary`]).
    pub mpi: Option<PathBuf>,
    /// Bind each rank on this machine to one CPU (rank r to the r-th CPU
    /// this launcher may use, round robin), as `mpirun --bind-to core`.
    pub bind_to_core: bool,
}

/// A directory holding `libmpi_abi.so.1` as a link to rfx's MPI library,
/// for the job's `LD_LIBRARY_PATH`; removed when dropped.
#[derive(Debug)]
pub struct MpiLibrary {
    dir: PathBuf,
}

impl MpiLibrary {
    /// The library next to the running `rfx` (where cargo builds both), or
    /// `RFX_MPI_LIB`; `None` if there is none.
    pub fn find() -> Option<PathBuf> {
        // A missing RFX_MPI_LIB is reported by `link`, not passed over.
        std::env::var_os("RFX_MPI_LIB")
            .map(PathBuf::from)
            .or_else(rfx_executors::mpi::library)
    }

    /// Links `lib` as `libmpi_abi.so.1` in a fresh directory.
    pub fn link(lib: &Path) -> Result<MpiLibrary, LaunchError> {
        let lib = lib
            .canonicalize()
            .map_err(|e| LaunchError::Invalid(format!("MPI library {}: {e}", lib.display())))?;
        let dir =
            std::env::temp_dir().join(format!("rfx-mpi-{}-{:x}", std::process::id(), rand_u64()));
        let made = std::fs::create_dir(&dir)
            .and_then(|_| std::os::unix::fs::symlink(&lib, dir.join("libmpi_abi.so.1")));
        made.map_err(|e| {
            LaunchError::Invalid(format!("MPI library link in {}: {e}", dir.display()))
        })?;
        Ok(MpiLibrary { dir })
    }

    /// `LD_LIBRARY_PATH` with this directory first.
    pub fn library_path(&self) -> String {
        match std::env::var("LD_LIBRARY_PATH") {
            Ok(p) if !p.is_empty() => format!("{}:{p}", self.dir.display()),
            _ => self.dir.display().to_string(),
        }
    }
}

impl Drop for MpiLibrary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CPUs this process may run on, in order.
fn usable_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect()
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b)
}

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchReport {
    /// Exit code per rank (`128 + signal` for a rank killed by a signal).
    pub codes: Vec<i32>,
    /// The first rank that failed, if any.
    pub first_failure: Option<usize>,
    /// The job ran out of time.
    pub timed_out: bool,
}

impl LaunchReport {
    /// The launcher's exit code: 0, the first failed rank's code, or 124
    /// on a timeout (as `timeout(1)`).
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        self.first_failure.map_or(0, |r| self.codes[r].max(1))
    }
}

/// Why a job could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A spec that cannot run.
    #[error("invalid launch: {0}")]
    Invalid(String),
    /// The rendezvous could not start.
    #[error("rendezvous: {0}")]
    Rendezvous(#[from] rfx_collectives::CollError),
    /// A process could not be started.
    #[error("cannot start rank {rank} ({what}): {source}")]
    Spawn {
        /// The rank.
        rank: usize,
        /// The command.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The host (index into `hosts`) of each of `ranks` ranks: contiguous blocks,
/// the first `ranks % hosts` hosts one rank more.
///
/// ```
/// assert_eq!(rfx::launch::placement(5, 2), vec![0, 0, 0, 1, 1]);
/// assert_eq!(rfx::launch::placement(2, 3), vec![0, 1]);
/// ```
pub fn placement(ranks: usize, hosts: usize) -> Vec<usize> {
    let hosts = hosts.max(1);
    let (base, extra) = (ranks / hosts, ranks % hosts);
    (0..hosts)
        .flat_map(|h| std::iter::repeat_n(h, base + usize::from(h < extra)))
        .collect()
}

/// True if `ip` is an address of this machine (so a rank there is started
/// directly). Loopback always is; others are checked by binding to them.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok()
}

/// The address other hosts reach this machine at when talking to `peer`
/// (the source address the kernel routes from; no packet is sent).
fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((any, 0)).ok()?;
    s.connect((peer, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

fn resolve(host: &str) -> Result<IpAddr, LaunchError> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| LaunchError::Invalid(format!("cannot resolve host {host}")))
}

struct Rank {
    child: Child,
    code: Option<i32>,
    forwarders: Vec<std::thread::JoinHandle<()>>,
}

fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Copies `from` to our stdout or stderr, line by line, with a rank tag.
fn forward(
    rank: usize,
    from: impl Read + Send + 'static,
    to_err: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(from);
        let mut line = Vec::new();
        // Bounded by the child: EOF when it exits.
        while lines.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let mut out: Box<dyn Write> = if to_err {
                Box::new(std::io::stderr().lock())
            } else {
                Box::new(std::io::stdout().lock())
            };
            let _ = write!(out, "[{rank}] ");
            let _ = out.write_all(&line);
            if !line.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
            line.clear();
        }
    })
}

/// Launches the job and waits for it.
pub fn run(spec: &LaunchSpec) -> Result<LaunchReport, LaunchError> {
    if spec.ranks == 0 {
        return Err(LaunchError::Invalid("at least one rank".into()));
    }
    let hosts: Vec<(String, IpAddr)> = if spec.hosts.is_empty() {
        vec![("127.0.0.1".into(), Ipv4Addr::LOCALHOST.into())]
    } else {
        spec.hosts
            .iter()
            .map(|h| resolve(h).map(|ip| (h.clone(), ip)))
            .collect::<Result<_, _>>()?
    };
    let local: Vec<bool> = hosts.iter().map(|(_, ip)| is_local(*ip)).collect();
    // The rendezvous listens where every rank can reach it.
    let advertised = match hosts.iter().zip(&local).find(|(_, l)| !**l) {
        None if hosts.iter().all(|(_, ip)| ip.is_loopback()) => IpAddr::from(Ipv4Addr::LOCALHOST),
        None => hosts[0].1,
        Some(((_, ip), _)) => route_source(*ip)
            .ok_or_else(|| LaunchError::Invalid(format!("no route to {ip} for the rendezvous")))?,
    };
    let mut key = [0u8; 16];
    getrandom::getrandom(&mut key)
        .map_err(|e| LaunchError::Invalid(format!("no randomness for the job key: {e}")))?;
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let rendezvous = Rendezvous::bind(SocketAddr::new(advertised, 0), spec.ranks, key.to_vec())?;
    let rv_addr = rendezvous.local_addr()?;
    // Ranks register within this bound, else the job fails (no hang).
    let rv_thread = rendezvous.spawn(spec.timeout.unwrap_or(RENDEZVOUS_WAIT).min(RENDEZVOUS_WAIT));

    // Ranks on this machine load rfx's MPI library (the link lives only
    // here: ranks elsewhere use their own LD_LIBRARY_PATH).
    let mpi = spec.mpi.as_deref().map(MpiLibrary::link).transpose()?;
    let cpus = if spec.bind_to_core {
        usable_cpus()
    } else {
        Vec::new()
    };
    let place = placement(spec.ranks, hosts.len());
    let mut ranks: Vec<Rank> = Vec::with_capacity(spec.ranks);
    let mut spawn_error = None;
    for (rank, &h) in place.iter().enumerate() {
        let (name, ip) = &hosts[h];
        let mut env: Vec<(String, String)> = vec![
            ("RFX_RANK".into(), rank.to_string()),
            ("RFX_SIZE".into(), spec.ranks.to_string()),
            ("RFX_RENDEZVOUS".into(), rv_addr.to_string()),
            ("RFX_RENDEZVOUS_EXTERNAL".into(), "1".into()),
            ("RFX_JOB_KEY".into(), key_hex.clone()),
            ("RFX_BIND_ADDR".into(), ip.to_string()),
        ];
        env.extend(spec.env.iter().cloned());
        let mut cmd = if local[h] {
            let mut c = match cpus.get(rank % cpus.len().max(1)) {
                // taskset sets the affinity and execs the program.
                Some(cpu) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", &cpu.to_string()]).arg(&spec.program);
                    c
                }
                None => Command::new(&spec.program),
            };
            c.args(&spec.args).envs(env.iter().map(|(k, v)| (k, v)));
            if let Some(m) = &mpi {
                c.env("LD_LIBRARY_PATH", m.library_path());
            }
            c
        } else {
            let rsh = if spec.rsh.is_empty() {
                vec!["ssh".to_string(), "-o".into(), "BatchMode=yes".into()]
            } else {
                spec.rsh.clone()
            };
            let mut c = Command::new(&rsh[0]);
            c.args(&rsh[1..])
                .arg(name)
                .arg(remote_command(&env, &spec.program, &spec.args));
            c
        };
        // Each rank leads its own process group, so that stopping it stops
        // what it started too (a shell's children, an ssh session). A remote
        // rank reads the job key from its stdin.
        cmd.stdin(if local[h] {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .process_group(0);
        if spec.tag_output {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(mut stdin) = child.stdin.take() {
                    // A remote shell that died early fails its rank: the
                    // supervisor reports that.
                    let _ = writeln!(stdin, "{key_hex}");
                }
                let mut forwarders = Vec::new();
                if let Some(o) = child.stdout.take() {
                    forwarders.push(forward(rank, o, false));
                }
                if let Some(e) = child.stderr.take() {
                    forwarders.push(forward(rank, e, true));
                }
                ranks.push(Rank {
                    child,
                    code: None,
                    forwarders,
                });
            }
            Err(source) => {
                spawn_error = Some(LaunchError::Spawn {
                    rank,
                    what: format!("{cmd:?}"),
                    source,
                });
                break;
            }
        }
    }
    let report = supervise(&mut ranks, spec.timeout, spawn_error.is_some());
    for r in &mut ranks {
        for f in r.forwarders.drain(..) {
            let _ = f.join();
        }
    }
    // The rendezvous ends once every rank registered; ranks that never use
    // it (or a job that failed early) leave it waiting: it dies with us.
    if rv_thread.is_finished() {
        if let Ok(Err(e)) = rv_thread.join() {
            tracing::warn!("rendezvous: {e}");
        }
    }
    match spawn_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// `s` as one word of a POSIX shell command line.
fn sh_word(s: &OsStr) -> OsString {
    let b = s.as_bytes();
    let plain = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_-./=:,@%+".contains(c));
    if plain {
        return s.to_owned();
    }
    let mut out = b"'".to_vec();
    for &c in b {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
    OsString::from_vec(out)
}

/// What a remote rank runs through the remote shell: one command line (as
/// ssh hands it to the login shell) that reads the job key from stdin, never
/// from a command line, where any user of the host could read it (`ps`),
/// then execs the program with the rank's environment.
fn remote_command(env: &[(String, String)], program: &OsStr, args: &[OsString]) -> OsString {
    let mut script = OsString::from("IFS= read -r RFX_JOB_KEY && export RFX_JOB_KEY && exec env");
    for (k, v) in env.iter().filter(|(k, _)| k != "RFX_JOB_KEY") {
        script.push(" ");
        script.push(sh_word(OsStr::new(&format!("{k}={v}"))));
    }
    for word in std::iter::once(program).chain(args.iter().map(OsString::as_os_str)) {
        script.push(" ");
        script.push(sh_word(word));
    }
    // Through `sh -c`, whatever the login shell is.
    let mut cmd = OsString::from("sh -c ");
    cmd.push(sh_word(&script));
    cmd
}

/// Waits for every rank; the first failure (or the timeout, or `abort`)
/// terminates the rest.
fn supervise(ranks: &mut [Rank], timeout: Option<Duration>, abort: bool) -> LaunchReport {
    const GRACE: Duration = Duration::from_secs(3);
    let start = Instant::now();
    // Ranks lead their own process groups, out of reach of the terminal's
    // ^C: an interrupt of the launcher stops the job like a failure.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&interrupted)) {
            tracing::warn!("cannot catch signal {sig}: {e}");
        }
    }
    let mut first_failure = None;
    let mut timed_out = false;
    let mut stopping: Option<Instant> = abort.then(Instant::now);
    if abort {
        signal_all(ranks, Signal::SIGTERM);
    }
    loop {
        for (i, r) in ranks.iter_mut().enumerate() {
            if r.code.is_none() {
                if let Ok(Some(st)) = r.child.try_wait() {
                    let code = code_of(st);
                    r.code = Some(code);
                    if code != 0 && first_failure.is_none() && stopping.is_none() {
                        first_failure = Some(i);
                    }
                }
            }
        }
        if ranks.iter().all(|r| r.code.is_some()) {
            break;
        }
        let now = Instant::now();
        if stopping.is_none() {
            let over = timeout.is_some_and(|t| now - start >= t);
            if first_failure.is_some() || interrupted.load(Ordering::Relaxed) || over {
                timed_out = over && first_failure.is_none();
                signal_all(ranks, Signal::SIGTERM);
                stopping = Some(now);
            }
        } else if stopping.is_some_and(|s| now - s >= GRACE) {
            signal_all(ranks, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let codes: Vec<i32> = ranks.iter().map(|r| r.code.unwrap_or(1)).collect();
    if interrupted.load(Ordering::Relaxed) && first_failure.is_none() {
        first_failure = codes.iter().position(|c| *c != 0);
    }
    LaunchReport {
        codes,
        first_failure,
        timed_out,
    }
}

fn signal_all(ranks: &[Rank], sig: Signal) {
    for r in ranks.iter().filter(|r| r.code.is_none()) {
        if let Ok(pid) = i32::try_from(r.child.id()) {
            // The whole process group the rank leads.
            let _ = kill(Pid::from_raw(-pid), sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remote command through a real shell, as ssh runs it (the login
    /// shell's `-c`), the key on stdin: the program gets the key, the
    /// environment and its arguments intact, and no argument holds the key.
    #[test]
    fn remote_ranks_read_the_job_key_from_stdin() {
        let key = "00112233445566778899aabbccddeeff";
        let env = vec![
            ("RFX_RANK".to_string(), "3".to_string()),
            ("RFX_JOB_KEY".to_string(), key.to_string()),
            ("RFX_X".to_string(), "a b'c".to_string()),
        ];
        let args: Vec<OsString> = [
            "-c",
            r#"printf '%s|%s|%s|%s' "$RFX_JOB_KEY" "$RFX_RANK" "$RFX_X" "$1""#,
            "zero",
            "it's a \"quoted\" $arg; `x`",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let cmd = remote_command(&env, OsStr::new("/bin/sh"), &args);
        assert!(!cmd.to_string_lossy().contains(key));
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{key}|3|a b'c|it's a \"quoted\" $arg; `x`")
        );
    }

    #[test]
    fn placement_is_blocked_and_balanced() {
        assert_eq!(placement(4, 1), vec![0, 0, 0, 0]);
        assert_eq!(placement(4, 2), vec![0, 0, 1, 1]);
        assert_eq!(placement(7, 3), vec![0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(placement(0, 3), Vec::<usize>::new());
        for n in 0..20 {
            for h in 1..6 {
                let p = placement(n, h);
                assert_eq!(p.len(), n);
                assert!(p.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }

    #[test]
    fn exit_code_follows_the_first_failure() {
        let ok = LaunchReport {
            codes: vec![0, 0],
            first_failure: None,
            timed_out: false,
        };
        assert_eq!(ok.exit_code(), 0);
        let failed = LaunchReport {
            codes: vec![143, 3],
            first_failure: Some(1),
            timed_out: false,
        };
        assert_eq!(failed.exit_code(), 3);
    }
}
