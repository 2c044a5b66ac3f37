//! Shared by the end-to-end tests: child processes killed on drop, the
//! example function libraries built once, and an `rfx executor` launcher.

#![allow(dead_code, clippy::unwrap_used)]

pub mod fault;
pub mod mpi;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const RFX: &str = env!("CARGO_BIN_EXE_rfx");

/// Runs the `rfx` CLI with the cluster key `key` and `env`; its output.
pub fn rfx_cli(key: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(RFX);
    cmd.args(args).env("RFX_CLUSTER_KEY", key);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits up to `t` for the process to exit.
    pub fn wait_timeout(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Spawns `cmd` with stderr piped and waits for a line starting with
/// `prefix`; returns the process and the rest of that line.
pub fn spawn_until(mut cmd: Command, prefix: &str) -> (Proc, String) {
    cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
    let mut child = Proc(cmd.spawn().expect("spawn"));
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, rest.trim().to_string());
        }
    }
    panic!("child never printed {prefix:?}");
}

pub struct Examples {
    /// `examples/functions` as a cdylib.
    pub rust: PathBuf,
    /// `examples/c/functions.c` as a shared library.
    pub c: PathBuf,
}

/// Builds the example function libraries once per test binary.
pub fn examples() -> &'static Examples {
    static EX: OnceLock<Examples> = OnceLock::new();
    EX.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("examples-functions");
        let rust = rfx_examples::build(&target, false).unwrap_or_else(|e| panic!("{e}"));
        let c = build_c(
            &root.join("examples/c/functions.c"),
            &target.join("c"),
            "libfunctions_c_e2e.so",
        );
        Examples { rust, c }
    })
}

/// Builds the C function library `source` (with `examples/c/rfx.h`) as
/// `out/name`: written privately, then renamed into place, since test
/// processes build in parallel.
pub fn build_c(source: &Path, out: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(out).unwrap();
    let lib = out.join(name);
    let tmp = out.join(format!("{name}.tmp{}", std::process::id()));
    run(Command::new("cc")
        .args(["-Wall", "-Werror", "-fPIC", "-shared", "-I"])
        .arg(root.join("examples/c"))
        .arg(source)
        .arg("-o")
        .arg(&tmp));
    std::fs::rename(&tmp, &lib).unwrap();
    lib
}

/// `path` shipped to the executor with the set-up, as a tenant does: a
/// sandboxed executor sees none of the test's files.
pub fn shipped(path: &Path) -> rfx::executors::session::LibrarySource {
    rfx::executors::session::LibrarySource::Bytes {
        name: path.display().to_string(),
        bytes: std::fs::read(path).unwrap(),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `rfx executor` for `token` with extra arguments; returns it and
/// its address.
pub fn executor(token: &str, transport: &str, args: &[&str]) -> (Proc, std::net::SocketAddr) {
    let mut cmd = Command::new(RFX);
    cmd.args([
        "--transport",
        transport,
        "executor",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(args)
    .env("RFX_LEASE_TOKEN", token);
    let (p, addr) = spawn_until(cmd, "rfx executor: listening on ");
    (p, addr.parse().unwrap())
}

/// The `allreduce` example (`examples/allreduce.rs`), next to `rfx`: built
/// here, since a filtered test run does not build examples (quick when up
/// to date).
pub fn allreduce_example() -> PathBuf {
    let p = Path::new(RFX).parent().unwrap().join("examples/allreduce");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-q", "--example", "allreduce", "-p", "rfx"])
        .status()
        .unwrap();
    assert!(st.success() && p.exists(), "{} not built", p.display());
    p
}
