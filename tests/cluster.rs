//! End to end: `rfx lease-manager`, `rfx executor-manager`, the tenant CLI
//! and `rfx invoke --lease` as real processes on loopback; then `rfx demo`.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "cluster-key-for-tests";

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr}");
}

fn rfx(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(RFX);
    cmd.args(args).env("RFX_CLUSTER_KEY", KEY);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn lease_manager(addr: SocketAddr, db: &std::path::Path) -> Proc {
    let p = Proc(
        Command::new(RFX)
            .args([
                "lease-manager",
                "--listen",
                &addr.to_string(),
                "--heartbeat-timeout-ms",
                "2000",
                "--db",
            ])
            .arg(db)
            .env("RFX_CLUSTER_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    p
}

/// A lease manager and an executor manager on loopback, stopped on drop.
struct Cluster {
    dir: std::path::PathBuf,
    db: std::path::PathBuf,
    lm: SocketAddr,
    lm_proc: Proc,
    _em_proc: Proc,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("rfx-cluster-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("leases.redb");
        let lm = free_port();
        let em = free_port();
        let lm_proc = lease_manager(lm, &db);
        let (lms, ems) = (lm.to_string(), em.to_string());
        let args = [
            "executor-manager",
            "--lease-manager",
            &lms,
            "--listen",
            &ems,
            "--cores",
            "2",
            "--gpu",
            "0",
        ];
        let em_proc = Proc(
            Command::new(RFX)
                .args(args)
                .env("RFX_CLUSTER_KEY", KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(em);
        Cluster {
            dir,
            db,
            lm,
            lm_proc,
            _em_proc: em_proc,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn tenant_api_leases_invokes_and_releases() {
    let c = Cluster::start("api");
    let lms = c.lm.to_string();
    let added = ok_json(rfx(
        &["tenant", "add", "carol", "--lease-manager", &lms, "--json"],
        &[],
    ));
    let tenant = rfx::tenant::Tenant::connect(&lms, added["token"].as_str().unwrap()).unwrap();
    let req = rfx::leases::proto::LeaseRequest::new(1, 600_000);
    // The executor manager registers right after it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        match tenant.lease(&req) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default()).unwrap();
    let lib = rfx::executors::session::LibrarySource::Path(examples().rust.display().to_string());
    let mut inv = lease
        .invoker(
            &fabric,
            lib,
            &["echo"],
            rfx::client::InvokerConfig::default(),
        )
        .unwrap();
    assert_eq!(inv.invoke("echo", b"one call").unwrap(), b"one call");
    let t = inv.submit("echo", b"ticket").unwrap();
    assert_eq!(inv.wait(t).unwrap(), b"ticket");
    drop(inv);
    let again = tenant.existing(lease.info().lease.id).unwrap();
    assert_eq!(again.executor(), lease.executor());
    let usage = lease.release().unwrap();
    assert!(usage.core_ms > 0);
    assert!(
        matches!(again.release(), Err(rfx::tenant::TenantError::Lease(_))),
        "released twice"
    );
}

#[test]
fn lease_invoke_release_and_survive_a_killed_lease_manager() {
    let mut c = Cluster::start("cli");
    let (dir, db, lm) = (c.dir.clone(), c.db.clone(), c.lm);
    let lms = lm.to_string();
    let tenant = ok_json(rfx(
        &["tenant", "add", "alice", "--lease-manager", &lms, "--json"],
        &[],
    ));
    let token = tenant["token"].as_str().unwrap().to_string();
    let env = [
        ("RFX_TENANT_TOKEN", token.as_str()),
        ("RFX_LEASE_MANAGER", lms.as_str()),
    ];

    // The executor manager registers right after it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        let out = rfx(
            &[
                "lease",
                "create",
                "--cores",
                "1",
                "--duration-s",
                "600",
                "--json",
            ],
            &env,
        );
        if out.status.success() {
            break ok_json(out);
        }
        assert!(
            Instant::now() < deadline,
            "no lease: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = lease["lease"]["id"].as_u64().unwrap().to_string();

    // Invoke through the lease: lookup at the host's manager, then peer to peer.
    let lib = examples().rust.clone();
    let input = dir.join("input");
    std::fs::write(&input, b"through the lease").unwrap();
    let out = Command::new(RFX)
        .args(["invoke", "--lease", &id, "--function", "echo", "--lib"])
        .arg(&lib)
        .arg("--input")
        .arg(&input)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"through the lease");

    // Another tenant sees nothing of it.
    let bob = ok_json(rfx(
        &["tenant", "add", "bob", "--lease-manager", &lms, "--json"],
        &[],
    ));
    let bob_env = [
        ("RFX_TENANT_TOKEN", bob["token"].as_str().unwrap()),
        ("RFX_LEASE_MANAGER", lms.as_str()),
    ];
    let out = rfx(&["lease", "show", &id], &bob_env);
    assert!(!out.status.success());
    let out = rfx(
        &[
            "invoke",
            "--lease",
            &id,
            "--function",
            "echo",
            "--lib",
            lib.to_str().unwrap(),
        ],
        &bob_env,
    );
    assert!(!out.status.success());
    let out = rfx(&["lease", "release", &id], &bob_env);
    assert!(!out.status.success());

    // Usage arrives from the executor manager.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = ok_json(rfx(&["lease", "usage", &id, "--json"], &env));
        if u["usage"]["invocations"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "usage never reported: {u}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // kill -9 the lease manager; a restart on the same store knows the lease.
    c.lm_proc.0.kill().unwrap();
    c.lm_proc.0.wait().unwrap();
    let _lm2 = lease_manager(lm, &db);
    let list = ok_json(rfx(&["lease", "list", "--json"], &env));
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lease"]["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&id.parse().unwrap()), "{list}");

    let rel = ok_json(rfx(&["lease", "release", &id, "--json"], &env));
    assert_eq!(rel["released"], true);
}

#[test]
fn demo_runs_end_to_end() {
    let lib = examples().rust.clone();
    let out = Command::new(RFX)
        .args(["demo", "--iters", "300", "--lib"])
        .arg(&lib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "shm   noop 8 B",
        "tcp   noop 8 B",
        "invocations/s",
        "usage of lease",
        "released",
        "dot product of 2048 f64, result checked",
        "group leases released",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}
