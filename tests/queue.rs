//! Queued lease requests and quotas end to end: a real lease manager and
//! executor manager, the tenant API and the CLI, a lease manager killed
//! with requests waiting.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rfx::leases::proto::{LeaseRequest, TicketOutcome};
use rfx::local::LocalCluster;
use rfx::tenant::{Tenant, TenantError};
use support::*;

const KEY: &str = "cluster-key-for-queue-tests";

fn rfx(args: &[&str], env: &[(&str, &str)]) -> Output {
    rfx_cli(KEY, args, env)
}

/// One executor manager with one core: one lease fills the cluster.
fn cluster() -> LocalCluster {
    LocalCluster::builder(RFX)
        .cluster_key(KEY)
        .cores(1)
        .executor_manager_args(["--gpu", "0"])
        .start()
        .unwrap()
}

fn one_core() -> LeaseRequest {
    LeaseRequest::new(1, 120_000)
}

#[test]
fn a_waiting_request_is_granted_when_capacity_frees_and_survives_a_killed_lease_manager() {
    let mut c = cluster();
    let lms = c.lease_manager().to_string();
    let (alice_token, bob_token) = (c.add_tenant("alice").unwrap(), c.add_tenant("bob").unwrap());
    let alice = Tenant::connect(&lms, &alice_token).unwrap();
    let bob = Tenant::connect(&lms, &bob_token).unwrap();
    let held = alice.lease(&one_core()).unwrap();

    // Without a wait the request is refused at once; with one it queues.
    assert!(bob.lease(&one_core()).is_err());
    let queued = bob.client().queue_lease(&one_core(), 1, 60_000).unwrap();
    assert!(queued.ticket.is_waiting());
    assert!(
        queued.reason.as_deref().unwrap().contains("free cores"),
        "{queued:?}"
    );

    // kill -9 the lease manager: the request is still queued after restart.
    c.restart_lease_manager().unwrap();
    let bob = Tenant::connect(&lms, &bob_token).unwrap();
    let t = bob.client().ticket(queued.ticket.id).unwrap();
    assert!(t.ticket.is_waiting(), "{t:?}");

    // Capacity frees: the waiting request gets it, and its executor serves.
    let alice = Tenant::connect(&lms, &alice_token).unwrap();
    alice.client().release(held.info().lease.id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let granted = loop {
        let t = bob.client().ticket(queued.ticket.id).unwrap();
        if let Some(TicketOutcome::Granted(ids)) = &t.ticket.outcome {
            assert_eq!(ids.len(), 1);
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "never granted: {t:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(granted.leases.len(), 1);
    let lease = bob.existing(granted.leases[0].lease.id).unwrap();
    lease.release().unwrap();
}

#[test]
fn lease_wait_returns_when_another_tenant_releases_and_times_out_otherwise() {
    let c = cluster();
    let lms = c.lease_manager().to_string();
    let alice = Tenant::connect(&lms, &c.add_tenant("alice").unwrap()).unwrap();
    let bob = Tenant::connect(&lms, &c.add_tenant("bob").unwrap()).unwrap();
    let held = alice.lease(&one_core()).unwrap();

    // Nothing frees: not granted, with the ticket and the reason.
    let t0 = Instant::now();
    match bob.lease_wait(&one_core(), Duration::from_millis(700)) {
        Err(TenantError::NotGranted { reason, .. }) => assert_eq!(reason, "timed out"),
        other => panic!("granted with no free core: {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Released while bob waits: bob gets the core within moments.
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let lease = bob
            .lease_wait(&one_core(), Duration::from_secs(30))
            .unwrap();
        (t.elapsed(), lease)
    });
    std::thread::sleep(Duration::from_millis(500));
    let released_at = Instant::now();
    held.release().unwrap();
    let (_, lease) = waiter.join().unwrap();
    let lag = released_at.elapsed();
    assert!(
        lag < Duration::from_secs(3),
        "granted {lag:?} after the release"
    );
    lease.release().unwrap();
}

#[test]
fn quotas_and_queues_from_the_cli() {
    let c = cluster();
    let lms = c.lease_manager().to_string();
    let token = c.add_tenant("dora").unwrap();
    let env = [
        ("RFX_TENANT_TOKEN", token.as_str()),
        ("RFX_LEASE_MANAGER", lms.as_str()),
    ];

    // Over the quota: refused with the reason, not queued.
    let out = rfx(
        &[
            "tenant",
            "set-quota",
            "dora",
            "--leases",
            "1",
            "--lease-manager",
            &lms,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rfx(&["lease", "create", "--count", "2", "--wait-s", "5"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over the tenant's quota: 2 leases > 1"),
        "{err}"
    );
    let out = rfx(
        &[
            "tenant",
            "set-quota",
            "nobody",
            "--cores",
            "1",
            "--lease-manager",
            &lms,
        ],
        &[],
    );
    assert!(!out.status.success());

    // One lease fills the cluster; a second waits and times out, visibly.
    let out = rfx(&["lease", "create", "--json"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = held["lease"]["id"].as_u64().unwrap().to_string();
    let out = rfx(
        &["tenant", "set-quota", "dora", "--lease-manager", &lms],
        &[],
    );
    assert!(out.status.success());
    let out = rfx(&["lease", "create", "--wait-s", "0.5"], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not granted within"), "{err}");
    let out = rfx(&["lease", "tickets", "--json"], &env);
    let tickets: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tickets[0]["ticket"]["outcome"], "TimedOut", "{tickets}");

    // A waiting request shows in the operator's queue, and is cancelled.
    let mut waiter = Command::new(RFX)
        .args(["lease", "create", "--wait-s", "30", "--json"])
        .env("RFX_TENANT_TOKEN", &token)
        .env("RFX_LEASE_MANAGER", &lms)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ticket = loop {
        let out = rfx(&["tenant", "queue", "--json", "--lease-manager", &lms], &[]);
        let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(t) = q.as_array().unwrap().first() {
            break t["ticket"]["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "never queued");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = rfx(&["lease", "cancel", &format!("t{ticket}")], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = waiter.wait().unwrap();
    assert!(!status.success());
    let out = rfx(&["lease", "show", &format!("t{ticket}")], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    let out = rfx(&["lease", "release", &id], &env);
    assert!(out.status.success());
}
