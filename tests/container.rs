//! Executors in containers (`rfx::executors::sandbox::container`) with a
//! real podman, as root: an image made here without any registry (the
//! shared libraries `rfx` links, the dynamic loader, a static busybox), the
//! command line the module builds, and what the executor sees inside:
//! limits, identity, files, devices, environment and the handoff on
//! descriptor 3; a real executor serving invocations over tcp and shm; out
//! of memory, stop and kill; the start time.
//!
//! Needs root, podman (`apt-get install podman runc uidmap`) and
//! busybox-static; without them each test fails with the reason.
//! `RFX_TEST_SKIP_CONTAINERS=1` skips them.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rfx::client::{Invoker, InvokerConfig};
use rfx::executors::sandbox::container::{
    ContainerError, ContainerRuntime, ContainerSpec, RuntimeKind, EXECUTOR_IN_CONTAINER,
};
use rfx::executors::sandbox::Handoff;
use rfx::fabric::{Config, Fabric, TransportChoice, TransportKind};
use support::*;

/// The lease token of these tests (hex, as a manager hands it).
const TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// One container test at a time: a 2-core host, and start times measured
/// without a neighbour.
static SERIAL: Mutex<()> = Mutex::new(());

/// The runtime, `None` (and a note) when skipped; panics with the reason
/// when this machine cannot run the tests.
fn podman() -> Option<ContainerRuntime> {
    if std::env::var("RFX_TEST_SKIP_CONTAINERS").as_deref() == Ok("1") {
        eprintln!("skipped: RFX_TEST_SKIP_CONTAINERS=1");
        return None;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the container tests need root (rootful podman, uids per lease); \
         set RFX_TEST_SKIP_CONTAINERS=1 to skip"
    );
    match ContainerRuntime::detect(RuntimeKind::Podman) {
        Ok(rt) => Some(rt),
        Err(e) => panic!("{e}; set RFX_TEST_SKIP_CONTAINERS=1 to skip"),
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `rt`'s program with its global flags and `args`; panics on failure.
fn podman_cmd(rt: &ContainerRuntime, args: &[&str]) -> String {
    let out = Command::new(rt.program())
        .args(rt.global_args())
        .args(args)
        .env_clear()
        .envs(rt.runtime_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("container-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A podman image made from a directory, removed on drop.
struct Image<'a> {
    rt: &'a ContainerRuntime,
    name: String,
    _dir: TempDir,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.rt.program())
            .args(self.rt.global_args())
            .args(["rmi", "-f", &self.name])
            .env_clear()
            .envs(self.rt.runtime_env())
            .output();
    }
}

/// The absolute paths `ldd` lists for `file` (libraries and the loader).
fn ldd(file: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let p = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// `p` without `.` and `..` (lexically).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Copies the host's file `p` into `root` at the same path, recreating the
/// symlinks on the way (Debian's merged `/usr`: `/lib -> usr/lib`,
/// `/lib64/ld-linux-x86-64.so.2 -> ../lib/x86_64-linux-gnu/...`).
fn install(root: &Path, p: &Path, depth: u32) {
    assert!(depth < 16, "symlink loop at {}", p.display());
    let comps: Vec<Component> = p.components().skip(1).collect();
    let mut host = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        host.push(c);
        let inside = root.join(host.strip_prefix("/").unwrap());
        let meta = std::fs::symlink_metadata(&host).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).unwrap();
            if std::fs::symlink_metadata(&inside).is_err() {
                std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&target, &inside).unwrap();
            }
            let mut resolved = host.parent().unwrap().join(&target);
            resolved.extend(&comps[i + 1..]);
            install(root, &normalize(&resolved), depth + 1);
            return;
        }
        if i + 1 == comps.len() {
            std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
            std::fs::copy(&host, &inside).unwrap();
        }
    }
}

/// The host's static busybox.
fn busybox() -> PathBuf {
    let p = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("busybox is not installed: apt-get install busybox-static");
    assert!(
        ldd(&p).is_empty(),
        "{} is not statically linked: apt-get install busybox-static",
        p.display()
    );
    p
}

/// Builds and imports the image: what `rfx` and the example functions
/// need to run (their libraries and the loader), a static busybox at
/// `/bin/busybox`, `/etc/passwd` and `/etc/group`, a 1777 `/tmp`, and the
/// mount points.
fn image<'a>(rt: &'a ContainerRuntime, tag: &str) -> Image<'a> {
    let dir = TempDir::new(tag);
    let root = dir.0.join("rootfs");
    let mut libs: BTreeSet<PathBuf> = ldd(Path::new(RFX)).into_iter().collect();
    assert!(!libs.is_empty(), "ldd lists nothing for {RFX}");
    libs.extend(ldd(&examples().rust));
    for lib in &libs {
        install(&root, lib, 0);
    }
    for d in ["bin", "etc", "dev", "proc", "sys", "rfx", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/busybox\nnobody:x:65534:65534:nobody:/nonexistent:/bin/busybox\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let tar = dir.0.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    let name = format!("localhost/rfx-test-rootfs:{tag}-{}", std::process::id());
    podman_cmd(rt, &["import", tar.to_str().unwrap(), &name]);
    Image {
        rt,
        name,
        _dir: dir,
    }
}

/// The owned parts of a spec.
struct Parts {
    name: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    devices: Vec<PathBuf>,
    ro: Vec<PathBuf>,
    cpus: Vec<u32>,
    memory: u64,
    pids: u64,
    uid: u32,
    tmp: u64,
}

impl Parts {
    fn new(tag: &str, args: &[&str]) -> Parts {
        Parts {
            name: format!("rfx-test-{tag}-{}", std::process::id()),
            args: args.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/tmp".into()),
                ("RFX_LEASE_ID".into(), "42".into()),
            ],
            devices: Vec::new(),
            ro: Vec::new(),
            cpus: Vec::new(),
            memory: 256 << 20,
            pids: 256,
            uid: 60123,
            tmp: 8 << 20,
        }
    }

    fn spec<'a>(&'a self, image: &'a Image<'_>) -> ContainerSpec<'a> {
        ContainerSpec {
            image: &image.name,
            name: &self.name,
            executor: Path::new(RFX),
            args: &self.args,
            env: &self.env,
            memory_bytes: self.memory,
            cpus: &self.cpus,
            pids_max: self.pids,
            devices: &self.devices,
            uid: self.uid,
            gid: self.uid,
            tmp_bytes: self.tmp,
            ro_paths: &self.ro,
        }
    }
}

/// Removes the container on drop, whatever happened.
struct Reap<'a>(&'a ContainerRuntime, String);

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        let _ = self.0.reap(&self.1);
    }
}

/// Spawns `argv` as a manager would: a cleared environment plus the
/// runtime's own variables and, to prove they stay outside, a cluster key
/// and a proxy; the handoff at descriptor 3; stdin null; stdout and stderr
/// piped.
fn spawn(rt: &ContainerRuntime, argv: &[OsString], handoff: &OwnedFd) -> Proc {
    assert!(
        !argv
            .iter()
            .any(|a| a.to_string_lossy().contains(&TOKEN[..16])),
        "the token is on the command line"
    );
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(rt.runtime_env())
        .env("RFX_CLUSTER_KEY", "secret-cluster-key")
        .env("HTTP_PROXY", "http://proxy.invalid:3128")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // conmon writes a file `oom` into its working directory when the
    // OOM killer fires: a directory of the test's own.
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"));
    rfx::executors::sandbox::handoff::pass_to_std(&mut cmd, handoff);
    Proc(cmd.spawn().unwrap())
}

fn handoff() -> OwnedFd {
    Handoff {
        token: TOKEN.to_owned(),
        confinement: None,
    }
    .to_memfd()
    .unwrap()
}

/// The module's command with the entrypoint swapped for the image's
/// busybox (everything else as built).
fn with_busybox(mut argv: Vec<OsString>) -> Vec<OsString> {
    let i = argv.iter().position(|a| a == "--entrypoint").unwrap();
    assert_eq!(argv[i + 1], EXECUTOR_IN_CONTAINER);
    argv[i + 1] = "/bin/busybox".into();
    argv
}

/// Lines of `pipe`, read by a thread.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `argv` to the end (at most `limit`); its status, stdout and stderr.
fn run(rt: &ContainerRuntime, argv: &[OsString], limit: Duration) -> (ExitStatus, String, String) {
    let h = handoff();
    let mut p = spawn(rt, argv, &h);
    let out = lines(p.0.stdout.take().unwrap());
    let err = lines(p.0.stderr.take().unwrap());
    let status = p
        .wait_timeout(limit)
        .unwrap_or_else(|| panic!("{argv:?} still runs after {limit:?}"));
    let collect = |rx: mpsc::Receiver<String>| {
        let mut s = String::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    };
    (status, collect(out), collect(err))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn detection_says_what_is_missing() {
    // Whatever is installed here: each runtime is found, or the error
    // says plainly that it is not installed or that no engine answers.
    for kind in RuntimeKind::ALL {
        match ContainerRuntime::detect(kind) {
            Ok(rt) => eprintln!(
                "{kind}: {} version {}, handoff {}",
                rt.program().display(),
                rt.version(),
                rt.supports_handoff()
            ),
            Err(e) => {
                let msg = e.to_string();
                eprintln!("{kind}: {msg}");
                let clear = match &e {
                    ContainerError::NotInstalled { .. } => {
                        msg.starts_with(&format!("{kind} is not installed"))
                    }
                    ContainerError::NoEngine { .. } => msg.contains("no Docker engine answers"),
                    _ => false,
                };
                assert!(clear, "{kind}: unclear error {msg:?}");
            }
        }
    }
}

#[test]
fn the_executor_runs_from_the_bind_mount_and_starts_fast() {
    let Some(rt) = podman() else { return };
    let _one = serial();
    let img = image(&rt, "smoke");
    eprintln!(
        "podman {} at {}, global flags {:?}",
        rt.version(),
        rt.program().display(),
        rt.global_args()
    );
    // The host's rfx, bind-mounted, on the image's libraries.
    let parts = Parts::new("smoke", &["--version"]);
    let _reap = Reap(&rt, parts.name.clone());
    let argv = rt.command(&parts.spec(&img)).unwrap();
    eprintln!(
        "argv: {}",
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (st, out, err) = run(&rt, &argv, Duration::from_secs(60));
    assert!(st.success(), "{st}: {out}{err}");
    assert!(out.starts_with("rfx "), "{out:?} {err:?}");
    let r = rt.reap(&parts.name);
    assert!(
        r.removed && !r.out_of_memory && r.exit_code == Some(0),
        "{r:?}"
    );

    // Start time: `podman run ... /bin/busybox true`, then the reap.
    let mut runs = Vec::new();
    let mut reaps = Vec::new();
    for i in 0..5 {
        let parts = Parts::new(&format!("start{i}"), &["true"]);
        let _reap = Reap(&rt, parts.name.clone());
        let argv = with_busybox(rt.command(&parts.spec(&img)).unwrap());
        let t = Instant::now();
        let (st, out, err) = run(&rt, &argv, Duration::from_secs(60));
        runs.push(t.elapsed());
        assert!(st.success(), "{st}: {out}{err}");
        let t = Instant::now();
        assert!(rt.reap(&parts.name).removed);
        reaps.push(t.elapsed());
    }
    eprintln!(
        "container start: `podman run ... /bin/busybox true` median {:?} of {runs:?}; \
         reap (inspect + rm) median {:?}",
        median(runs.clone()),
        median(reaps)
    );
}

#[test]
fn limits_identity_files_and_environment_inside_the_container() {
    let Some(rt) = podman() else { return };
    let _one = serial();
    let img = image(&rt, "limits");
    let ro = TempDir::new("limits-ro");
    std::fs::write(ro.0.join("hello"), "hello from the host\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A device the container does not have by default, where the host has one.
    let device = ["/dev/fuse", "/dev/net/tun", "/dev/loop-control"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let script = r#"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
echo "swap=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.swap.max)"
echo "pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
echo "cpus=$(cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus.effective)"
echo "cgroup=$(cat /proc/self/cgroup | cut -d: -f3 | sort -u | tr '\n' ' ')"
echo "nproc=$(ulimit -u) nofile=$(ulimit -n)"
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "capeff=$(grep CapEff /proc/self/status | cut -f2)"
echo "capbnd=$(grep CapBnd /proc/self/status | cut -f2)"
echo "nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)"
echo "pid=$$"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
echo "environ=$(tr '\0' ' ' < /proc/1/environ)"
echo "handoff=$(cat /proc/self/fd/3)"
(ls /proc/1/fd > /tmp/fds)
echo "fds=$(tr '\n' ' ' < /tmp/fds)"
touch /rootfile 2>/dev/null && echo "root=writable" || echo "root=readonly"
touch /etc/x 2>/dev/null && echo "etc=writable" || echo "etc=readonly"
echo hi > /tmp/f && echo "tmp=$(cat /tmp/f)"
echo hi > /dev/shm/f && echo "shm=$(cat /dev/shm/f)"
echo "tmpmount=$(grep ' /tmp ' /proc/mounts)"
echo "shmmount=$(grep ' /dev/shm ' /proc/mounts)"
echo "ro=$(cat RO/hello)"
touch RO/x 2>/dev/null && echo "rowrite=yes" || echo "rowrite=denied"
"#
    .replace("RO", ro.0.to_str().unwrap());
    let mut parts = Parts::new("limits", &["sh", "-c", &script]);
    parts.memory = 64 << 20;
    parts.pids = 32;
    parts.cpus = vec![0];
    parts.tmp = 8 << 20;
    parts.ro = vec![ro.0.clone()];
    parts.devices = vec!["/dev/null".into(), "/dev/infiniband/uverbs9".into()];
    parts.devices.extend(device.clone());
    let _reap = Reap(&rt, parts.name.clone());
    let argv = with_busybox(rt.command(&parts.spec(&img)).unwrap());
    let (st, out, err) = run(&rt, &argv, Duration::from_secs(60));
    eprintln!("{out}{err}");
    assert!(st.success(), "{st}");
    let got: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| *got.get(k).unwrap_or_else(|| panic!("no {k} in {out}"));

    // Identity: the lease's uid and gid, no other group, no capability.
    assert_eq!(get("uid"), "60123 gid=60123 groups=60123");
    assert_eq!(get("capeff"), "0000000000000000");
    assert_eq!(get("capbnd"), "0000000000000000");
    assert_eq!(get("nnp"), "1");
    // Limits.
    assert_eq!(get("memory"), (64u64 << 20).to_string());
    let swap = get("swap");
    assert!(
        swap == (64u64 << 20).to_string() || swap == "0",
        "swap {swap}"
    );
    assert_eq!(get("pids"), "32");
    assert_eq!(get("cpus"), "0");
    // nofile: the manager's own (the test process's), as outside a container.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let nofile = soft.min(hard.min(1 << 20));
    assert_eq!(get("nproc"), format!("32 nofile={nofile}"));
    // Namespaces: pid 1 of its own, a private cgroup tree.
    assert_eq!(get("pid"), "1");
    let procs: usize = get("procs").parse().unwrap();
    assert!(procs < 8, "{procs} processes visible");
    assert_eq!(get("cgroup").trim(), "/");
    // /dev: the runtime's minimal set and the listed device only.
    let dev: BTreeSet<&str> = get("dev").split_whitespace().collect();
    let mut allowed: BTreeSet<&str> = [
        "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
        "stderr", "stdin", "stdout", "tty", "urandom", "zero",
    ]
    .into();
    if let Some(d) = &device {
        let first = d.strip_prefix("/dev").unwrap().components().next().unwrap();
        let first = first.as_os_str().to_str().unwrap();
        assert!(dev.contains(first), "{} missing from {dev:?}", d.display());
        allowed.insert(first);
    }
    assert!(dev.is_subset(&allowed), "unexpected nodes: {dev:?}");
    assert!(!dev.contains("infiniband"));
    // Environment: exactly the spec's (podman adds HOSTNAME); not the
    // cluster key nor the proxy the podman process had.
    let environ: BTreeMap<&str, &str> = get("environ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let keys: BTreeSet<&str> = environ.keys().copied().collect();
    let mut want: BTreeSet<&str> = ["PATH", "HOME", "RFX_LEASE_ID"].into();
    assert!(want.is_subset(&keys), "{environ:?}");
    want.insert("HOSTNAME");
    assert!(keys.is_subset(&want), "{environ:?}");
    assert_eq!(environ["RFX_LEASE_ID"], "42");
    assert_eq!(environ["HOME"], "/tmp");
    assert!(!out.contains("secret-cluster-key") && !out.contains("proxy.invalid"));
    // The handoff arrived on descriptor 3, and nothing else of ours.
    assert!(get("handoff").contains(TOKEN), "{}", get("handoff"));
    let fds: BTreeSet<u32> = get("fds")
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    // Exactly 0-3. Listed by a child whose output the child itself
    // redirects: read inside a command substitution, the list would race
    // with the shell closing its copy of the substitution's pipe.
    assert_eq!(fds, BTreeSet::from([0, 1, 2, 3]), "{fds:?}");
    // Files: read-only root, private sized /tmp and /dev/shm, the
    // read-only bind.
    assert_eq!(get("root"), "readonly");
    assert_eq!(get("etc"), "readonly");
    assert_eq!(get("tmp"), "hi");
    assert_eq!(get("shm"), "hi");
    assert!(
        get("tmpmount").contains("size=8192k"),
        "{}",
        get("tmpmount")
    );
    assert!(
        get("shmmount").contains("size=8192k"),
        "{}",
        get("shmmount")
    );
    assert_eq!(get("ro"), "hello from the host");
    assert_eq!(get("rowrite"), "denied");
    let r = rt.reap(&parts.name);
    assert!(r.removed && !r.out_of_memory, "{r:?}");
}

/// An executor in a container, as its manager would start it; returns
/// the process, its address, and its stdout lines.
fn start_executor(
    rt: &ContainerRuntime,
    img: &Image<'_>,
    parts: &Parts,
    handoff: &OwnedFd,
) -> (Proc, std::net::SocketAddr, mpsc::Receiver<String>) {
    let argv = rt.command(&parts.spec(img)).unwrap();
    let t = Instant::now();
    let mut p = spawn(rt, &argv, handoff);
    let out = lines(p.0.stdout.take().unwrap());
    let err = lines(p.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = String::new();
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match err.recv_timeout(left) {
            Ok(l) => {
                if let Some(a) = l.strip_prefix("rfx executor: listening on ") {
                    break a.trim().parse().unwrap();
                }
                said.push_str(&l);
                said.push('\n');
            }
            Err(_) => panic!("the executor never said its address: {said}"),
        }
    };
    eprintln!(
        "{}: executor listening on {addr} {:?} after `podman run`",
        parts.name,
        t.elapsed()
    );
    // The rest of stderr, drained.
    std::thread::spawn(move || for _ in err {});
    (p, addr, out)
}

fn invoker(kind: TransportKind, addr: std::net::SocketAddr) -> (Fabric, Invoker) {
    let f = Fabric::open(Config {
        transport: TransportChoice::Forced(kind),
        ..Config::default()
    })
    .unwrap();
    let cfg = InvokerConfig {
        timeout: Duration::from_secs(30),
        max_output: 64 << 10,
        ..InvokerConfig::default()
    };
    let inv = Invoker::connect(
        &f,
        addr,
        TOKEN.as_bytes(),
        shipped(&examples().rust),
        &["echo", "sum_f64"],
        cfg,
    )
    .unwrap();
    (f, inv)
}

#[test]
fn an_executor_in_a_container_serves_invocations() {
    let Some(rt) = podman() else { return };
    let _one = serial();
    let img = image(&rt, "exec");

    // tcp: one connection, then the executor exits by itself.
    let parts = Parts::new(
        "exec-tcp",
        &[
            "--transport",
            "tcp",
            "executor",
            "--listen",
            "127.0.0.1:0",
            "--handoff-fd",
            "3",
            "--connections",
            "1",
        ],
    );
    let _reap = Reap(&rt, parts.name.clone());
    let h = handoff();
    let (mut p, addr, out) = start_executor(&rt, &img, &parts, &h);
    drop(h);
    {
        let (_f, mut inv) = invoker(TransportKind::Tcp, addr);
        assert_eq!(inv.transport(), TransportKind::Tcp);
        assert_eq!(
            inv.invoke("echo", b"hello from a container").unwrap(),
            b"hello from a container"
        );
        let sum = inv
            .invoke(
                "sum_f64",
                &[1.5f64, 2.5]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(f64::from_le_bytes(sum.try_into().unwrap()), 4.0);
    }
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("the executor did not exit after its connection");
    assert!(st.success(), "{st}");
    // Its final usage line came through podman's stdout.
    let usage: Vec<String> = out.try_iter().collect();
    assert!(
        usage.iter().any(|l| l.contains("\"invocations\":2")),
        "{usage:?}"
    );
    let r = rt.reap(&parts.name);
    assert!(
        r.removed && !r.out_of_memory && r.exit_code == Some(0),
        "{r:?}"
    );

    // shm (memfds over an abstract Unix socket of the host's network
    // namespace), usage every 100 ms, stopped by SIGTERM to podman.
    let parts = Parts::new(
        "exec-shm",
        &[
            "--transport",
            "shm",
            "executor",
            "--listen",
            "127.0.0.1:0",
            "--handoff-fd",
            "3",
            "--usage-every-ms",
            "100",
        ],
    );
    let _reap = Reap(&rt, parts.name.clone());
    let h = handoff();
    let (mut p, addr, out) = start_executor(&rt, &img, &parts, &h);
    drop(h);
    let (_f, mut inv) = invoker(TransportKind::Shm, addr);
    assert_eq!(inv.transport(), TransportKind::Shm);
    assert_eq!(inv.invoke("echo", b"over shm").unwrap(), b"over shm");
    // Usage lines flow while it runs (no buffering in between).
    let first = out
        .recv_timeout(Duration::from_secs(10))
        .expect("no usage line within 10 s");
    assert!(
        first.starts_with('{') && first.contains("invocations"),
        "{first}"
    );
    drop(inv);
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("SIGTERM to podman did not stop the executor");
    eprintln!("SIGTERM to podman: exited {st} after {:?}", t.elapsed());
    assert!(st.success(), "{st}");
    let r = rt.reap(&parts.name);
    assert!(
        r.removed && !r.out_of_memory && r.exit_code == Some(0),
        "{r:?}"
    );
}

#[test]
fn out_of_memory_stop_and_kill() {
    let Some(rt) = podman() else { return };
    let _one = serial();
    let img = image(&rt, "oom");

    // `tail /dev/zero` as pid 1 keeps one endless line: over 32 MiB.
    let mut parts = Parts::new("oom", &["tail", "/dev/zero"]);
    parts.memory = 32 << 20;
    let _reap = Reap(&rt, parts.name.clone());
    let argv = with_busybox(rt.command(&parts.spec(&img)).unwrap());
    let (st, out, err) = run(&rt, &argv, Duration::from_secs(120));
    assert_eq!(st.code(), Some(137), "{st}: {out}{err}");
    let r = rt.reap(&parts.name);
    eprintln!("out of memory: {r:?}");
    assert!(
        r.out_of_memory && r.exit_code == Some(137) && r.removed,
        "{r:?}"
    );

    // stop_command: busybox as pid 1 ignores SIGTERM, so the kill after
    // the grace ends it.
    let parts = Parts::new("stop", &["sh", "-c", "echo ready; exec sleep 600"]);
    let _reap = Reap(&rt, parts.name.clone());
    let argv = with_busybox(rt.command(&parts.spec(&img)).unwrap());
    let h = handoff();
    let mut p = spawn(&rt, &argv, &h);
    let out = lines(p.0.stdout.take().unwrap());
    assert_eq!(out.recv_timeout(Duration::from_secs(60)).unwrap(), "ready");
    let stop = rt
        .stop_command(&parts.name, Duration::from_secs(1))
        .unwrap();
    let t = Instant::now();
    let st = Command::new(&stop[0])
        .args(&stop[1..])
        .env_clear()
        .envs(rt.runtime_env())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = p
        .wait_timeout(Duration::from_secs(30))
        .expect("podman run still runs after stop");
    eprintln!("stop -t 1: podman run exited {st} after {:?}", t.elapsed());
    let r = rt.reap(&parts.name);
    assert!(r.removed && r.exit_code == Some(137), "{r:?}");

    // SIGKILL to podman leaves the container running: reap kills and
    // removes it.
    let parts = Parts::new("kill", &["sh", "-c", "echo ready; exec sleep 600"]);
    let _reap = Reap(&rt, parts.name.clone());
    let argv = with_busybox(rt.command(&parts.spec(&img)).unwrap());
    let mut p = spawn(&rt, &argv, &h);
    let out = lines(p.0.stdout.take().unwrap());
    assert_eq!(out.recv_timeout(Duration::from_secs(60)).unwrap(), "ready");
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    // Its process lives on (podman, killed, may not even have recorded it
    // as running: the state can read `initialized`).
    let state = podman_cmd(
        &rt,
        &[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.Pid}}",
            &parts.name,
        ],
    );
    let pid: u32 = state.split_whitespace().nth(1).unwrap().parse().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(
        pid > 0 && proc_dir.exists(),
        "the container died with podman: {state}"
    );
    let t = Instant::now();
    let r = rt.reap(&parts.name);
    eprintln!("reap of a running container: {r:?} in {:?}", t.elapsed());
    assert!(r.removed && r.was_running && r.exit_code.is_none(), "{r:?}");
    let exists = Command::new(rt.program())
        .args(rt.global_args())
        .args(["container", "exists", &parts.name])
        .env_clear()
        .envs(rt.runtime_env())
        .status()
        .unwrap();
    assert_eq!(exists.code(), Some(1), "the container is still there");
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !proc_dir.exists(),
        "the container's process {pid} outlived reap"
    );
}

/// A lease that asks for an image: the executor manager runs its executor
/// in it (podman), and a tenant invokes on it and runs a group invocation
/// over two such leases, through the real cluster.
#[test]
fn leases_run_in_their_container_image_with_groups() {
    let Some(rt) = podman() else { return };
    let _serial = serial();
    let img = image(&rt, "lease");
    let audit = TempDir::new("lease-audit");
    let log = audit.0.join("em.jsonl");
    let c = rfx::local::LocalCluster::builder(RFX)
        .cores(2)
        .executor_manager_args([
            "--gpu",
            "0",
            "--container-runtime",
            "podman",
            "--audit-log",
            log.to_str().unwrap(),
        ])
        .start()
        .unwrap();
    let token = c.add_tenant("carol").unwrap();
    let tenant = rfx::tenant::Tenant::connect(&c.lease_manager().to_string(), &token).unwrap();
    let req = rfx::leases::proto::LeaseRequest::new(1, 120_000)
        .with_hot_timeout(0)
        .with_container(img.name.clone());
    let fabric = Fabric::open(Config::default()).unwrap();
    let lib = shipped(&examples().rust);

    // One lease, one invocation.
    let started = Instant::now();
    let lease = tenant.lease(&req).unwrap();
    let mut inv = lease
        .invoker(&fabric, lib.clone(), &["echo"], InvokerConfig::default())
        .unwrap();
    eprintln!(
        "lease to first connection in a container: {:?}",
        started.elapsed()
    );
    assert_eq!(inv.invoke("echo", b"in a box").unwrap(), b"in a box");
    drop(inv);
    let id = lease.info().lease.id.0;
    lease.release().unwrap();

    // A group of two, its communicator wired between the containers.
    let group = tenant.lease_group(2, &req).unwrap();
    let mut g = group
        .group(&fabric, lib, &["rank_info"], InvokerConfig::default())
        .unwrap();
    let outs = g.invoke("rank_info", &[b"", b""]).unwrap();
    let ranks: Vec<(u32, u32)> = outs
        .iter()
        .map(|o| {
            (
                u32::from_le_bytes(o[..4].try_into().unwrap()),
                u32::from_le_bytes(o[4..8].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(ranks, [(0, 2), (1, 2)]);
    drop(g);
    group.release().unwrap();

    // The executor manager saw it start in the image, and no container is
    // left behind once the leases ended.
    let text = std::fs::read_to_string(&log).unwrap();
    let started: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["action"] == "executor_started")
        .collect();
    assert_eq!(started.len(), 3, "{text}");
    assert!(started
        .iter()
        .all(|v| v["sandbox"] == "container" && v["container"] == img.name.as_str()));
    assert!(started.iter().any(|v| v["lease"] == id));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = podman_cmd(&rt, &["ps", "-a", "-q", "--filter", "label=rfx.executor=1"]);
        if left.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "containers left: {left}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
