//! End to end: `rfx lease-manager`, `rfx executor-manager`, the tenant CLI
//! and `rfx invoke --lease` as real processes on loopback; then `rfx demo`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rfx::local::LocalCluster;
use support::*;

const KEY: &str = "cluster-key-for-tests";

fn rfx(args: &[&str], env: &[(&str, &str)]) -> Output {
    rfx_cli(KEY, args, env)
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

/// A lease manager and an executor manager (2 cores, no GPU) on loopback,
/// stopped on drop.
fn cluster() -> LocalCluster {
    LocalCluster::builder(RFX)
        .cluster_key(KEY)
        .cores(2)
        .lease_manager_args(["--heartbeat-timeout-ms", "2000"])
        .executor_manager_args(["--gpu", "0"])
        .start()
        .unwrap()
}

#[test]
fn tenant_api_leases_invokes_and_releases() {
    let c = cluster();
    let (tenant, lease) = lease_in(&c, "carol");
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default()).unwrap();
    let lib = shipped(&examples().rust);
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
    let mut c = cluster();
    let (dir, lm) = (c.dir().to_path_buf(), c.lease_manager());
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
    c.restart_lease_manager().unwrap();
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

/// A new tenant `name` of `c` and a one-core lease of it (the executor
/// manager registers right after it listens: asked again until then).
fn lease_in(c: &LocalCluster, name: &str) -> (rfx::tenant::Tenant, rfx::tenant::Lease) {
    let lms = c.lease_manager().to_string();
    let added = ok_json(rfx(
        &["tenant", "add", name, "--lease-manager", &lms, "--json"],
        &[],
    ));
    let tenant = rfx::tenant::Tenant::connect(&lms, added["token"].as_str().unwrap()).unwrap();
    let req = rfx::leases::proto::LeaseRequest::new(1, 600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tenant.lease(&req) {
            Ok(l) => break (tenant, l),
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A device function (examples/c/gpu_functions.c) in a real executor
/// (sandboxed when the tests run as root): with `RFX_DEVICE=host` on the
/// executor manager, its input is staged into the host reference device
/// and its output read back from there; without a device it fails with
/// the reason, and the executor keeps serving.
#[test]
fn device_functions_run_in_executors() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = build_c(
        &root.join("examples/c/gpu_functions.c"),
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpu"),
        "libgpu_functions_e2e.so",
    );
    let mut input = 2.0f32.to_le_bytes().to_vec();
    input.extend_from_slice(&3u32.to_le_bytes());
    for v in [1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0] {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let want: Vec<u8> = [12.0f32, 24.0, 36.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default()).unwrap();
    for device in [Some("host"), None] {
        let mut b = LocalCluster::builder(RFX)
            .cluster_key(KEY)
            .cores(2)
            .executor_manager_args(["--gpu", "0"]);
        if let Some(d) = device {
            b = b.env("RFX_DEVICE", d);
        }
        let c = b.start().unwrap();
        let (_tenant, lease) = lease_in(&c, "dora");
        let mut inv = lease
            .invoker(
                &fabric,
                shipped(&lib),
                &["saxpy"],
                rfx::client::InvokerConfig::default(),
            )
            .unwrap();
        match device {
            Some(_) => assert_eq!(inv.invoke("saxpy", &input).unwrap(), want),
            None => {
                let e = inv.invoke("saxpy", &input).unwrap_err().to_string();
                assert!(e.contains("no CUDA device"), "{e}");
                // The executor is still there: the same error again, fast.
                let e = inv.invoke("saxpy", &input).unwrap_err().to_string();
                assert!(e.contains("no CUDA device"), "{e}");
            }
        }
        drop(inv);
        lease.release().unwrap();
    }
}
