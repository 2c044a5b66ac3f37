//! Lease tokens derived from the cluster key, end to end on real processes:
//! the executor manager derives the token the lease manager gave the tenant
//! (no secret between them), a lease manager killed with SIGKILL and
//! restarted keeps every token valid, one lease's token neither finds nor
//! opens another lease's executor, and the lookup service answers a raw
//! token (the version 1 request) or a wrong proof exactly as it answers an
//! unknown lease.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use rfx::client::{Invoker, InvokerConfig};
use rfx::executors::lookup::{lookup_executor, LookupError};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, PollMode};
use rfx::leases::proto::{LeaseId, LeaseRequest};
use rfx::leases::wire::{LeaseKey, LeaseToken};
use rfx::tenant::Tenant;
use support::fault::*;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn req() -> LeaseRequest {
    LeaseRequest::new(1, 600_000).with_hot_timeout(0)
}

fn cfg() -> InvokerConfig {
    InvokerConfig {
        timeout: Duration::from_secs(20),
        mode: PollMode::Warm,
        depth: 4,
        max_output: 64 << 10,
        ..InvokerConfig::default()
    }
}

fn lib() -> LibrarySource {
    shipped(&examples().rust)
}

fn tenant(lm: &LeaseManager, token: &str) -> Tenant {
    retry(WAIT, "tenant connect", || {
        Tenant::connect(&lm.addr.to_string(), token)
    })
}

/// The lookup service's answer to one raw request line.
fn ask(manager: &str, line: &str) -> String {
    let mut s = TcpStream::connect(manager).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply
}

fn refusal(r: Result<std::net::SocketAddr, LookupError>) -> String {
    match r {
        Err(LookupError::LookupRefused { message, .. }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// One echo through a fresh connection presenting `token`.
fn echo(fabric: &Fabric, addr: std::net::SocketAddr, token: &LeaseToken) -> Vec<u8> {
    let hex = token.to_hex();
    let mut inv = Invoker::connect(fabric, addr, hex.as_bytes(), lib(), &["echo"], cfg()).unwrap();
    inv.invoke("echo", b"derived").unwrap()
}

#[test]
fn derived_tokens_survive_restarts_and_stay_per_lease() {
    let dir = Scratch::new("lease-tokens");
    let mut lm = LeaseManager::start(&dir.0, free_addr(), 60_000);
    let em = ExecutorManager::start(&dir.0, "em", lm.addr, free_addr(), 2);
    let manager = em.listen.to_string();
    let alice_token = lm.add_tenant("alice");
    let bob_token = lm.add_tenant("bob");
    wait_for(WAIT, "host registered", || {
        lm.hosts().iter().any(|h| h.up).then_some(())
    });
    let fabric = Fabric::open(Config::default()).unwrap();

    let alice = tenant(&lm, &alice_token);
    let bob = tenant(&lm, &bob_token);
    let a = alice.lease(&req()).unwrap();
    let b = bob.lease(&req()).unwrap();
    let (ia, ib) = (a.info().clone(), b.info().clone());
    assert_ne!(ia.token, ib.token);
    // The lease manager's token is the derivation from the cluster key; the
    // executor manager derived the same (the executors accept it below).
    let key = LeaseKey::from_cluster_key(KEY);
    assert_eq!(ia.token, key.token(&ia.lease));
    assert_eq!(ib.token, key.token(&ib.lease));
    assert_ne!(
        ia.token,
        LeaseKey::from_cluster_key("another key").token(&ia.lease)
    );
    assert_eq!(echo(&fabric, a.executor(), &ia.token), b"derived");
    assert_eq!(echo(&fabric, b.executor(), &ib.token), b"derived");

    // A's token neither finds nor opens B's executor.
    let a_hex = ia.token.to_hex();
    assert_eq!(
        refusal(lookup_executor(&manager, ib.lease.id, &a_hex, WAIT)),
        "unknown lease"
    );
    let stolen = Invoker::connect(
        &fabric,
        b.executor(),
        a_hex.as_bytes(),
        lib(),
        &["echo"],
        cfg(),
    );
    assert!(stolen.is_err(), "lease A's token opened lease B's executor");
    // A token forged for B with another cluster key: the same.
    let forged = LeaseKey::from_cluster_key("guess")
        .token(&ib.lease)
        .to_hex();
    assert_eq!(
        refusal(lookup_executor(&manager, ib.lease.id, &forged, WAIT)),
        "unknown lease"
    );
    assert!(Invoker::connect(
        &fabric,
        b.executor(),
        forged.as_bytes(),
        lib(),
        &["echo"],
        cfg()
    )
    .is_err());

    // On the wire: the raw token (version 1), a wrong proof, B's proof for
    // A, A's proof for another id, and an unknown lease all get the same
    // line; only A's proof for A finds A.
    let unknown = "{\"error\":\"unknown lease\"}\n";
    let (ida, idb) = (ia.lease.id.0, ib.lease.id.0);
    for line in [
        format!(r#"{{"lease":{ida},"token":"{a_hex}"}}"#),
        format!(r#"{{"lease":{ida},"proof":"{a_hex}"}}"#),
        format!(r#"{{"lease":{ida},"proof":"{}"}}"#, "0".repeat(64)),
        format!(
            r#"{{"lease":{ida},"proof":"{}"}}"#,
            ib.token.lookup_proof_hex(ia.lease.id)
        ),
        format!(
            r#"{{"lease":{idb},"proof":"{}"}}"#,
            ia.token.lookup_proof_hex(ia.lease.id)
        ),
        format!(
            r#"{{"lease":999999,"proof":"{}"}}"#,
            ia.token.lookup_proof_hex(LeaseId(999_999))
        ),
    ] {
        assert_eq!(ask(&manager, &line), unknown, "{line}");
    }
    let good = format!(
        r#"{{"lease":{ida},"proof":"{}"}}"#,
        ia.token.lookup_proof_hex(ia.lease.id)
    );
    assert_eq!(
        ask(&manager, &good),
        format!("{{\"executor\":\"{}\"}}\n", a.executor())
    );

    // The lease manager dies (SIGKILL) and comes back on the same store:
    // the same tokens, still accepted by lookups and executors; a lease
    // granted afterwards works end to end too.
    drop((a, b));
    lm.kill9();
    lm.restart();
    let alice = tenant(&lm, &alice_token);
    let a = retry(WAIT, "lease A after the restart", || {
        alice.existing(ia.lease.id)
    });
    assert_eq!(a.info().token, ia.token);
    assert_eq!(
        a.executor(),
        lookup_executor(&manager, ia.lease.id, &a_hex, WAIT).unwrap()
    );
    assert_eq!(echo(&fabric, a.executor(), &ia.token), b"derived");
    wait_for(WAIT, "host registered again", || {
        lm.hosts().iter().any(|h| h.up).then_some(())
    });
    drop(a);
    alice.client().release(ia.lease.id).unwrap();
    let c = retry(WAIT, "a lease after the restart", || alice.lease(&req()));
    let ic = c.info().clone();
    assert_eq!(ic.token, key.token(&ic.lease));
    assert!(ic.lease.id > ib.lease.id, "lease ids are never reused");
    assert_eq!(echo(&fabric, c.executor(), &ic.token), b"derived");
    // B's token is no key to the new lease either.
    assert_eq!(
        refusal(lookup_executor(
            &manager,
            ic.lease.id,
            &ib.token.to_hex(),
            WAIT
        )),
        "unknown lease"
    );
}
