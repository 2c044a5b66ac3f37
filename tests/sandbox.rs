//! The executor sandbox against hostile tenant functions
//! (`tests/hostile/hostile.c`), on a real cluster (`LocalCluster`: lease
//! manager and executor manager as processes, the manager in strict mode):
//! every attempt is refused or contained, and the test asserts what the
//! tenant sees.
//!
//! Needs root and cgroups (v1 or v2 with the memory, cpuset and pids
//! controllers); without them each test fails with the reason.
//! `RFX_TEST_SKIP_SANDBOX=1` skips them.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rfx::client::{InvokeError, Invoker, InvokerConfig};
use rfx::fabric::{Config, Fabric};
use rfx::leases::proto::{LeaseRequest, LeaseState, LostReason};
use rfx::local::LocalCluster;
use rfx::tenant::{Lease, Tenant};
use support::fault::{alive, children, cmdline, parent, wait_for};
use support::*;

const FUNCTIONS: &[&str] = &[
    "env_dump",
    "proc_scan",
    "attack_pid",
    "write_file",
    "whoami_c",
    "hog",
    "fork_bomb",
    "escape_calls",
    "spin",
];

/// Most processes per executor in these tests.
const PIDS: u64 = 64;

/// `false` (and a note) when skipped; panics with the reason when the
/// machine cannot sandbox.
fn sandbox_here() -> bool {
    if std::env::var("RFX_TEST_SKIP_SANDBOX").as_deref() == Ok("1") {
        eprintln!("skipped: RFX_TEST_SKIP_SANDBOX=1");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbox tests need root (uids per lease, cgroups); set RFX_TEST_SKIP_SANDBOX=1 to skip"
    );
    true
}

/// `tests/hostile/hostile.c` as a shared library, built once.
fn hostile() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        build_c(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/hostile.c"),
            &Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile"),
            "libhostile.so",
        )
    })
}

/// The host's cap on a lease's time limit in these tests, ms.
const MAX_EXEC_MS: u64 = 5_000;

/// One host of 2 cores, strict sandbox, `PIDS` processes per executor,
/// time limits capped at `MAX_EXEC_MS`.
fn cluster() -> (LocalCluster, Audit) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let audit = Audit(std::env::temp_dir().join(format!(
        "rfx-sandbox-audit-{}-{n}.jsonl",
        std::process::id()
    )));
    let c = LocalCluster::builder(RFX)
        .cores(2)
        .executor_manager_args([
            "--gpu",
            "0",
            "--sandbox",
            "strict",
            "--sandbox-pids",
            &PIDS.to_string(),
            "--max-exec-timeout-ms",
            &MAX_EXEC_MS.to_string(),
            "--audit-log",
            audit.0.to_str().unwrap(),
        ])
        .start()
        .unwrap();
    (c, audit)
}

/// The executor manager's audit log, removed on drop.
struct Audit(PathBuf);

impl Audit {
    /// Its lines' `action` fields for `lease`, waiting up to 10 s for
    /// `last` to appear.
    fn actions(&self, lease: u64, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let actions: Vec<String> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["lease"] == lease)
                .map(|v| v["action"].as_str().unwrap().to_owned())
                .collect();
            if actions.iter().any(|a| a == last) || Instant::now() > deadline {
                return actions;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tenant(c: &LocalCluster, name: &str) -> (Tenant, String) {
    let token = c.add_tenant(name).unwrap();
    let t = Tenant::connect(&c.lease_manager().to_string(), &token).unwrap();
    (t, token)
}

/// A lease, retried while the host is not there yet or cores are busy.
fn lease(t: &Tenant, req: &LeaseRequest) -> Lease {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match t.lease(req) {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "no lease: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn connect(l: &Lease) -> Invoker {
    let fabric = Fabric::open(Config::default()).unwrap();
    let cfg = InvokerConfig {
        max_output: 64 << 10,
        ..InvokerConfig::default()
    };
    l.invoker(&fabric, shipped(hostile()), FUNCTIONS, cfg)
        .unwrap()
}

fn call(inv: &mut Invoker, f: &str, input: &str) -> String {
    let out = inv
        .invoke(f, input.as_bytes())
        .unwrap_or_else(|e| panic!("{f}({input:?}): {e}"));
    String::from_utf8(out).unwrap()
}

impl Audit {
    /// The `executor_started` record of `lease` (waiting up to 10 s).
    fn started(&self, lease: u64) -> serde_json::Value {
        wait_for(Duration::from_secs(10), "executor_started", || {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|v| v["lease"] == lease && v["action"] == "executor_started")
        })
    }

    /// The host pids of the processes serving `lease`: the one its manager
    /// started (the relay; a standby's, or a fresh one's), as the audit
    /// says, and the confined executor, its child.
    fn pids_of_lease(&self, lease: u64) -> Vec<u32> {
        let started = self.started(lease);
        let relay = started["pid"].as_u64().expect("a pid in executor_started") as u32;
        let mut pids = vec![relay];
        pids.extend(children(relay));
        pids
    }
}

#[test]
fn secrets_are_out_of_the_executors_reach() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (t, tenant_token) = tenant(&c, "mallory");
    let l = lease(&t, &LeaseRequest::new(1, 60_000));
    let lease_token = l.info().token.to_hex();
    let mut inv = connect(&l);

    let env = call(&mut inv, "env_dump", "");
    for secret in [c.cluster_key(), &lease_token, &tenant_token] {
        assert!(!env.contains(secret), "a secret in the environment:\n{env}");
    }
    assert!(!env.contains("RFX_CLUSTER_KEY"), "{env}");
    assert!(
        env.contains(&format!("RFX_LEASE_ID={}", l.info().lease.id.0)),
        "{env}"
    );

    // Its own pid namespace: nothing of the host (the managers' environ
    // included) is even visible.
    let scan = call(&mut inv, "proc_scan", "");
    assert!(scan.contains("no key"), "{scan}");
    let visible: usize = scan
        .lines()
        .find_map(|l| l.strip_prefix("visible "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(visible, 1, "only the executor itself:\n{scan}");

    // Nor on the command line of its processes, seen from the host.
    let pids = audit.pids_of_lease(l.info().lease.id.0);
    assert_eq!(pids.len(), 2, "the relay and the executor: {pids:?}");
    for pid in pids {
        let args = cmdline(pid);
        assert!(args.iter().all(|a| !a.contains(&lease_token)), "{args:?}");
    }

    // The executor manager's audit names the lease, never a secret.
    let actions = audit.actions(l.info().lease.id.0, "invocation_session_opened");
    assert_eq!(actions, ["executor_started", "invocation_session_opened"]);
    let log = std::fs::read_to_string(&audit.0).unwrap();
    for secret in [c.cluster_key(), &lease_token, &tenant_token] {
        assert!(!log.contains(secret), "a secret in the audit log");
    }
}

#[test]
fn each_lease_runs_as_its_own_user_and_writes_only_its_private_tmp() {
    if !sandbox_here() {
        return;
    }
    let (c, _audit) = cluster();
    let (t, _) = tenant(&c, "mallory");
    let a = lease(&t, &LeaseRequest::new(1, 60_000));
    let b = lease(&t, &LeaseRequest::new(1, 60_000));
    let (mut ia, mut ib) = (connect(&a), connect(&b));
    let uid = |who: String| -> u32 {
        who.strip_prefix("uid ")
            .and_then(|r| r.split(' ').next())
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("{who}"))
    };
    let (ua, ub) = (
        uid(call(&mut ia, "whoami_c", "")),
        uid(call(&mut ib, "whoami_c", "")),
    );
    assert!((60000..=60999).contains(&ua), "{ua}");
    assert!((60000..=60999).contains(&ub), "{ub}");
    assert_ne!(ua, ub, "two leases, two users");

    let tag = format!("rfx-sandbox-test-{}", std::process::id());
    for path in [
        format!("/etc/{tag}"),
        format!("/usr/{tag}"),
        format!("/{tag}"),
        format!("/root/{tag}"),
        format!("/var/tmp/{tag}"),
        format!("/proc/{tag}"),
    ] {
        let got = call(&mut ia, "write_file", &path);
        assert_ne!(got, "ok", "wrote {path}");
        assert!(!Path::new(&path).exists(), "{path} on the host");
    }
    assert_eq!(call(&mut ia, "write_file", &format!("/tmp/{tag}")), "ok");
    assert_eq!(
        call(&mut ia, "write_file", &format!("/dev/shm/{tag}")),
        "ok"
    );
    // Private: neither the host nor the other lease sees it.
    assert!(!Path::new(&format!("/tmp/{tag}")).exists());
    assert!(!Path::new(&format!("/dev/shm/{tag}")).exists());
    assert_eq!(
        call(&mut ib, "write_file", &format!("/tmp/{tag}/x")),
        "No such file or directory"
    );
}

#[test]
fn another_leases_executor_is_out_of_reach() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (mallory, _) = tenant(&c, "mallory");
    let (alice, _) = tenant(&c, "alice");
    let m = lease(&mallory, &LeaseRequest::new(1, 60_000));
    let a = lease(&alice, &LeaseRequest::new(1, 60_000));
    let mut im = connect(&m);
    let mut ia = connect(&a);
    assert!(call(&mut ia, "whoami_c", "").starts_with("uid "));

    let victims = audit.pids_of_lease(a.info().lease.id.0);
    assert!(!victims.is_empty(), "alice's executor processes");
    for pid in victims {
        let got = call(&mut im, "attack_pid", &pid.to_string());
        for line in got.lines() {
            assert!(
                [
                    "No such file or directory",
                    "No such process",
                    "Operation not permitted"
                ]
                .iter()
                .any(|refused| line.ends_with(refused)),
                "pid {pid} reachable: {got}"
            );
        }
    }
    let got = call(&mut im, "escape_calls", "");
    for call in ["unshare", "ptrace", "setuid0", "chroot"] {
        assert!(
            got.contains(&format!("{call}: Operation not permitted")),
            "{call}: {got}"
        );
    }
    // Alice's executor is untouched.
    assert!(call(&mut ia, "whoami_c", "").starts_with("uid "));
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !sandbox_here() {
        return;
    }
    let (c, _audit) = cluster();
    let (t, _) = tenant(&c, "mallory");
    let l = lease(&t, &LeaseRequest::new(1, 60_000));
    let mut inv = connect(&l);
    let got = call(&mut inv, "fork_bomb", "");
    let forked: u64 = got
        .strip_prefix("forked ")
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{got}"));
    assert!(forked < PIDS, "{got}");
    assert!(got.ends_with("Resource temporarily unavailable"), "{got}");
    // The executor serves on.
    assert!(call(&mut inv, "whoami_c", "").starts_with("uid "));
}

#[test]
fn memory_over_the_lease_ends_it_as_out_of_memory_and_frees_its_cores() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (t, _) = tenant(&c, "mallory");
    // Both cores of the host.
    let l = lease(&t, &LeaseRequest::new(2, 60_000).with_memory(64));
    let id = l.info().lease.id;
    let mut inv = connect(&l);
    assert_eq!(call(&mut inv, "hog", "16"), "touched 16 MiB");
    match inv.invoke("hog", b"256") {
        Err(InvokeError::ExecutorGone(_)) => {}
        other => panic!("256 MiB under a 64 MiB lease: {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let s = t.client().show(id).unwrap().lease.state;
        if s != LeaseState::Active || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        state,
        LeaseState::Lost {
            reason: LostReason::OutOfMemory { limit_mib: 64 }
        }
    );
    assert_eq!(
        state.to_string(),
        "lost (out of memory: over the lease's 64 MiB)"
    );
    let actions = audit.actions(id.0, "sandbox_kill");
    assert_eq!(
        actions,
        [
            "executor_started",
            "invocation_session_opened",
            "sandbox_kill"
        ],
        "the executor manager's audit"
    );
    drop(inv);
    drop(l);
    // The cores came back: a new lease of both, and it works.
    let again = lease(&t, &LeaseRequest::new(2, 60_000).with_memory(64));
    let mut inv = connect(&again);
    assert_eq!(call(&mut inv, "hog", "16"), "touched 16 MiB");
}

#[test]
fn a_function_past_the_time_limit_is_stopped_and_the_lease_serves_on() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (t, _) = tenant(&c, "mallory");
    let l = lease(&t, &LeaseRequest::new(1, 60_000).with_exec_timeout(300));
    let id = l.info().lease.id;
    let mut inv = connect(&l);
    assert!(call(&mut inv, "whoami_c", "").starts_with("uid "));

    // The spinning invocation, and one queued behind it on the same worker.
    let started = Instant::now();
    let spinning = inv.submit("spin", b"").unwrap();
    let behind = inv.submit("whoami_c", b"").unwrap();
    match inv.wait(spinning) {
        Err(InvokeError::FunctionTimedOut { function, after_ms }) => {
            assert_eq!(function, "spin");
            assert!((300..5_000).contains(&after_ms), "{after_ms} ms");
        }
        other => panic!("a function past its limit: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    match inv.wait(behind) {
        Err(InvokeError::ExecutorRestarted(why)) => assert!(why.contains("time limit"), "{why}"),
        other => panic!("an invocation behind it: {other:?}"),
    }

    // The lease goes on; its restarted executor serves a new connection.
    assert_eq!(t.client().show(id).unwrap().lease.state, LeaseState::Active);
    let mut again = connect(&l);
    assert!(call(&mut again, "whoami_c", "").starts_with("uid "));
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.client().usage(id).unwrap().function_timeouts != 1 {
        assert!(Instant::now() < deadline, "usage never counted the stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(again);
    let actions = audit.actions(id.0, "invocation_session_closed");
    assert_eq!(
        actions,
        [
            "executor_started",
            "invocation_session_opened",
            "function_timeout",
            "executor_started",
            "invocation_session_opened",
            "invocation_session_closed"
        ],
        "the executor manager's audit"
    );
}

#[test]
fn the_host_caps_a_leases_time_limit() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (t, _) = tenant(&c, "mallory");
    // The limit the manager gave the executor (on its command line, or in
    // a standby's claim), as its audit records it.
    let asked = |ms: u64| {
        let l = lease(&t, &LeaseRequest::new(1, 60_000).with_exec_timeout(ms));
        let mut inv = connect(&l);
        assert!(call(&mut inv, "whoami_c", "").starts_with("uid "));
        let limit = audit.started(l.info().lease.id.0)["exec_timeout_ms"].as_u64();
        l.release().unwrap();
        limit
    };
    assert_eq!(asked(60_000), Some(MAX_EXEC_MS));
    assert_eq!(asked(0), Some(MAX_EXEC_MS));
    assert_eq!(asked(1_000), Some(1_000));
}

/// The standby executors among the children of `manager` (claimed ones
/// included: their command line stays `rfx executor --standby`).
fn standbys(manager: u32) -> Vec<u32> {
    children(manager)
        .into_iter()
        .filter(|&p| cmdline(p).iter().any(|a| a == "--standby"))
        .collect()
}

/// Whether the standby `relay` stands by: its confined child runs under
/// seccomp and blocks reading its claim pipe (it has printed the line its
/// manager waits for). Then a short pause for the manager to read it.
fn standing_by(relay: u32) -> bool {
    let ready = children(relay).into_iter().any(|child| {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
        let wchan = std::fs::read_to_string(format!("/proc/{child}/wchan")).unwrap_or_default();
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"]))
            && wchan.contains("pipe")
    });
    if ready {
        std::thread::sleep(Duration::from_millis(200));
    }
    ready
}

/// How long the standby test waits for a standby: they start under
/// `SCHED_IDLE`, slowly on a loaded machine.
const STANDBY_WAIT: Duration = Duration::from_secs(30);

/// The memory limit of the cgroup of `pid`, bytes (v1 or v2).
fn memory_limit(pid: u32) -> Option<u64> {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let file = groups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            Some(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        } else if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            Some(format!("/sys/fs/cgroup{path}/memory.max"))
        } else {
            None
        }
    })?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Executors started and confined ahead of their lease (`--sandbox-standby`,
/// 1 by default): a lease takes one and it serves with the lease's limits,
/// uid and environment; a replacement stands by with the host's defaults
/// and serves the next lease as another uid; a standby killed while it
/// waits costs the next lease nothing but a fresh spawn.
#[test]
fn a_standby_executor_serves_one_lease_with_its_limits() {
    if !sandbox_here() {
        return;
    }
    let (c, audit) = cluster();
    let (mallory, _) = tenant(&c, "mallory");
    let (alice, _) = tenant(&c, "alice");
    let manager = wait_for(STANDBY_WAIT, "executor manager", || {
        children(std::process::id())
            .into_iter()
            .find(|&p| cmdline(p).iter().any(|a| a == "executor-manager"))
    });
    let first = wait_for(STANDBY_WAIT, "standby", || {
        standbys(manager).first().copied()
    });
    wait_for(STANDBY_WAIT, "standby standing by", || {
        standing_by(first).then_some(())
    });
    let a = lease(&mallory, &LeaseRequest::new(1, 60_000).with_memory(256));
    let id_a = a.info().lease.id.0;
    let mut ia = connect(&a);
    let started_a = audit.started(id_a);
    assert!(
        started_a["standby"].is_u64(),
        "a standby served: {started_a}"
    );
    assert_eq!(started_a["pid"].as_u64(), Some(u64::from(first)));
    let uid_a = call(&mut ia, "whoami_c", "");
    assert!(uid_a.starts_with("uid 60"), "{uid_a}");
    let env = call(&mut ia, "env_dump", "");
    assert!(env.contains(&format!("RFX_LEASE_ID={id_a}")), "{env}");
    let relay_a = started_a["pid"].as_u64().unwrap() as u32;
    assert_eq!(memory_limit(relay_a), Some(256 << 20), "the lease's memory");
    for pid in children(relay_a) {
        assert_eq!(memory_limit(pid), Some(256 << 20), "the executor's memory");
    }

    assert_eq!(parent(relay_a), Some(manager));
    let spare = wait_for(STANDBY_WAIT, "replacement standby", || {
        standbys(manager).into_iter().find(|&p| p != relay_a)
    });
    wait_for(STANDBY_WAIT, "replacement standing by", || {
        standing_by(spare).then_some(())
    });
    // Standing by, it has joined its cgroup.
    assert_eq!(memory_limit(spare), Some(1024 << 20), "the host's default");
    let b = lease(&alice, &LeaseRequest::new(1, 60_000).with_memory(128));
    let mut ib = connect(&b);
    let started_b = audit.started(b.info().lease.id.0);
    assert_eq!(
        started_b["pid"].as_u64(),
        Some(u64::from(spare)),
        "{started_b}"
    );
    assert_ne!(started_b["standby"], started_a["standby"]);
    assert_eq!(memory_limit(spare), Some(128 << 20), "claimed: the lease's");
    let uid_b = call(&mut ib, "whoami_c", "");
    assert!(
        uid_b.starts_with("uid 60") && uid_b != uid_a,
        "{uid_a} / {uid_b}"
    );

    // A standby killed while it waits.
    let taken = [relay_a, started_b["pid"].as_u64().unwrap() as u32];
    let waiting = wait_for(STANDBY_WAIT, "third standby", || {
        standbys(manager).into_iter().find(|p| !taken.contains(p))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(waiting as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // SIGKILL takes effect when the kernel next runs the process: on a
    // loaded machine a lease could come before it died (and find it alive).
    wait_for(STANDBY_WAIT, "the killed standby to exit", || {
        (!alive(waiting)).then_some(())
    });
    drop(ia);
    a.release().unwrap();
    let l = lease(&mallory, &LeaseRequest::new(1, 60_000));
    let mut inv = connect(&l);
    assert!(call(&mut inv, "whoami_c", "").starts_with("uid 60"));
    let started = audit.started(l.info().lease.id.0);
    assert_ne!(
        started["pid"].as_u64(),
        Some(u64::from(waiting)),
        "{started}"
    );
    assert!(
        call(&mut ib, "whoami_c", "").starts_with("uid 60"),
        "B serves on"
    );
}

/// A manager that is not root confines its executors in a user namespace:
/// run here as `nobody` (setpriv) with such a confinement, the executor's
/// functions see uid 1000 of their namespace, a read-only system, one
/// process, and the escapes refused.
#[test]
fn without_root_the_executor_confines_itself_in_a_user_namespace() {
    use rfx::executors::sandbox::{handoff, Confinement, Handoff, BASE_DEVICES, SYSTEM_DIRS};
    if !sandbox_here() {
        return;
    }
    let staging =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("userns-{}", std::process::id()));
    std::fs::create_dir_all(&staging).unwrap();
    let token = "5e".repeat(32);
    let h = Handoff {
        token: token.clone(),
        confinement: Some(Confinement {
            uid: 1000,
            gid: 1000,
            user_namespace: true,
            cgroup_procs: Vec::new(),
            tmp_bytes: 16 << 20,
            ro_paths: SYSTEM_DIRS.iter().map(PathBuf::from).collect(),
            devices: BASE_DEVICES.iter().map(PathBuf::from).collect(),
            staging: staging.clone(),
            seccomp: None,
        }),
    };
    let fd = h.to_memfd().unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        RFX,
    ])
    .args(["executor", "--listen", "127.0.0.1:0", "--handoff-fd", "3"])
    .env_clear()
    .env("PATH", "/usr/bin:/bin");
    handoff::pass_to_std(&mut cmd, &fd);
    let (relay, addr) = spawn_until(cmd, "rfx executor: listening on ");
    drop(fd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.0.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    let fabric = Fabric::open(Config::default()).unwrap();
    let cfg = InvokerConfig {
        max_output: 64 << 10,
        ..InvokerConfig::default()
    };
    let mut inv = Invoker::connect(
        &fabric,
        addr.parse().unwrap(),
        token.as_bytes(),
        shipped(hostile()),
        FUNCTIONS,
        cfg,
    )
    .unwrap();
    assert_eq!(call(&mut inv, "whoami_c", ""), "uid 1000 gid 1000");
    assert_ne!(call(&mut inv, "write_file", "/etc/rfx-userns-test"), "ok");
    assert_eq!(call(&mut inv, "write_file", "/tmp/ok"), "ok");
    let scan = call(&mut inv, "proc_scan", "");
    assert!(scan.contains("visible 1\n"), "{scan}");
    let got = call(&mut inv, "escape_calls", "");
    for call in ["unshare", "ptrace", "chroot"] {
        assert!(
            got.contains(&format!("{call}: Operation not permitted")),
            "{call}: {got}"
        );
    }
    // Root is not even mapped in the namespace.
    assert!(got.contains("setuid0: Invalid argument"), "{got}");
    drop(inv);
    drop(relay);
    let _ = std::fs::remove_dir(&staging);
}

/// MPI inside functions, confined: the executor manager binds rfx's MPI
/// library read-only into the executors' root, and an unchanged MPI kernel
/// (`examples/c/mpi_kernel.c`) runs as a group function on two sandboxed
/// executors, `MPI_COMM_WORLD` being the group.
#[test]
fn an_mpi_kernel_runs_in_sandboxed_group_functions() {
    if !sandbox_here() || support::mpi::skip() {
        return;
    }
    // rfx's libmpi_abi.so next to rfx, where executors look for it.
    support::mpi::rfx_library();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libmpi_kernel_sandbox.so");
    let o = Command::new(&support::mpi::toolchain().mpicc)
        .args(["-shared", "-fPIC", "-O1", "-I"])
        .arg(root.join("examples/c"))
        .arg("-o")
        .arg(&lib)
        .arg(root.join("examples/c/mpi_kernel.c"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", support::mpi::text(&o));
    let (c, _audit) = cluster();
    let (t, _) = tenant(&c, "mpi");
    let deadline = Instant::now() + Duration::from_secs(20);
    let group = loop {
        match t.lease_group(2, &LeaseRequest::new(1, 60_000)) {
            Ok(g) => break g,
            Err(e) => {
                assert!(Instant::now() < deadline, "no group: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let fabric = Fabric::open(Config::default()).unwrap();
    let source = rfx::executors::session::LibrarySource::Bytes {
        name: "mpi_kernel".into(),
        bytes: std::fs::read(&lib).unwrap(),
    };
    let mut g = group
        .group(&fabric, source, &["mpi_sum"], InvokerConfig::default())
        .unwrap();
    let a: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let b: Vec<u8> = 40.0f64.to_le_bytes().to_vec();
    let outs = g.invoke("mpi_sum", &[&a, &b]).unwrap();
    for (r, out) in outs.iter().enumerate() {
        assert_eq!(out.len(), 20, "rank {r}");
        assert_eq!(f64::from_le_bytes(out[..8].try_into().unwrap()), 43.0);
        let int = |i: usize| i32::from_le_bytes(out[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        assert_eq!(
            (int(0), int(1), int(2)),
            (1 - r as i32, r as i32, 2),
            "rank {r}"
        );
    }
    drop(g);
    group.release().unwrap();
}
