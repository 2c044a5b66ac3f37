//! The whole control plane over TLS on real processes: a lease manager and
//! an executor manager serving TLS (one configured by flags, the other by
//! `RFX_TLS_CERT`/`RFX_TLS_KEY`), a tenant trusting their CA through
//! `RFX_TLS_CA` that leases, finds its executor and invokes; and the
//! failures an operator would meet at the lookup service (a plain client,
//! an untrusted certificate) as clear errors, not hangs.
//!
//! One test: `RFX_TLS_CA` is process-wide.

#![allow(clippy::unwrap_used)]

#[path = "../leases/tests/util/pki.rs"]
mod pki;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pki::pki;
use rfx::client::InvokerConfig;
use rfx::executors::lookup::{lookup_executor, lookup_executor_with, LookupError};
use rfx::fabric::{Config, Fabric, PollMode};
use rfx::leases::proto::LeaseRequest;
use rfx::leases::tls::{TlsClient, TLS_CA_ENV};
use rfx::tenant::Tenant;
use support::fault::*;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn log(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()
}

#[test]
fn lookups_over_tls() {
    let dir = Scratch::new("lookup-tls");
    let (ca, cert, key) = pki(&dir.0, "good");
    let (other_ca, _, _) = pki(&dir.0, "other");
    let (lm_addr, em_addr) = (free_addr(), free_addr());

    // The lease manager: TLS by flags.
    let _lm = Proc(
        Command::new(RFX)
            .args(["lease-manager", "--listen", &lm_addr.to_string()])
            .arg("--db")
            .arg(dir.join("leases.redb"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("RFX_CLUSTER_KEY", KEY)
            .env_remove("RFX_TLS_CERT")
            .env_remove("RFX_TLS_KEY")
            .stderr(log(&dir.0, "lease-manager"))
            .spawn()
            .unwrap(),
    );
    wait_listening(lm_addr, WAIT);
    // The executor manager: TLS by environment, for its lookups; the CA to
    // reach the lease manager.
    let _em = Proc(
        Command::new(RFX)
            .args(["executor-manager", "--lease-manager", &lm_addr.to_string()])
            .args([
                "--listen",
                &em_addr.to_string(),
                "--cores",
                "1",
                "--gpu",
                "0",
            ])
            .env("RFX_CLUSTER_KEY", KEY)
            .env("RFX_TLS_CERT", &cert)
            .env("RFX_TLS_KEY", &key)
            .env(TLS_CA_ENV, &ca)
            .stderr(log(&dir.0, "executor-manager"))
            .spawn()
            .unwrap(),
    );
    wait_listening(em_addr, WAIT);

    // The tenant trusts the CA: lease, find the executor, invoke.
    std::env::set_var(TLS_CA_ENV, &ca);
    let admin = retry(WAIT, "admin over TLS", || {
        rfx::leases::client::blocking::AdminClient::connect(&lm_addr.to_string(), KEY)
    });
    let token = admin.add_tenant("alice").unwrap();
    wait_for(WAIT, "host registered over TLS", || {
        admin
            .list_hosts()
            .unwrap()
            .iter()
            .any(|h| h.up)
            .then_some(())
    });
    let alice = Tenant::connect(&lm_addr.to_string(), &token).unwrap();
    let lease = alice
        .lease(&LeaseRequest::new(1, 600_000).with_hot_timeout(0))
        .unwrap();
    let info = lease.info().clone();
    let fabric = Fabric::open(Config::default()).unwrap();
    let lib = shipped(&examples().rust);
    let cfg = InvokerConfig {
        timeout: Duration::from_secs(20),
        mode: PollMode::Warm,
        ..InvokerConfig::default()
    };
    let mut inv = lease.invoker(&fabric, lib, &["echo"], cfg).unwrap();
    assert_eq!(inv.invoke("echo", b"over tls").unwrap(), b"over tls");
    drop(inv);

    let manager = em_addr.to_string();
    let hex = info.token.to_hex();
    let trusted = TlsClient::from_ca_file(&ca, None).unwrap();
    let found = lookup_executor_with(&manager, info.lease.id, &hex, WAIT, Some(&trusted)).unwrap();
    assert_eq!(found, lease.executor());
    assert_eq!(
        lookup_executor(&manager, info.lease.id, &hex, WAIT).unwrap(),
        found
    );
    // A wrong proof over TLS: refused as over TCP.
    match lookup_executor_with(&manager, info.lease.id, "0", WAIT, Some(&trusted)) {
        Err(LookupError::LookupRefused { message, .. }) => assert_eq!(message, "unknown lease"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A certificate from another CA: refused by the client, clearly.
    let untrusting = TlsClient::from_ca_file(&other_ca, None).unwrap();
    let t = Instant::now();
    let err =
        lookup_executor_with(&manager, info.lease.id, &hex, WAIT, Some(&untrusting)).unwrap_err();
    assert!(matches!(err, LookupError::Tls { .. }), "{err}");
    assert!(t.elapsed() < WAIT, "took {:?}", t.elapsed());

    // A plain client against a TLS lookup service: an error, not a hang,
    // and never an address.
    let t = Instant::now();
    let r = lookup_executor_with(&manager, info.lease.id, &hex, Duration::from_secs(3), None);
    assert!(r.is_err(), "a plain client got an answer: {r:?}");
    assert!(t.elapsed() < WAIT, "took {:?}", t.elapsed());

    // A missing CA file in the environment: a TLS error, before connecting.
    std::env::set_var(TLS_CA_ENV, dir.join("missing.pem"));
    let err = lookup_executor(&manager, info.lease.id, &hex, WAIT).unwrap_err();
    assert!(matches!(err, LookupError::Tls { .. }), "{err}");
    std::env::set_var(TLS_CA_ENV, &ca);

    lease.release().unwrap();
}
