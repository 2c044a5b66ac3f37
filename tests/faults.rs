//! Fault injection on real processes (`support::fault`): a lease manager
//! killed with SIGKILL in the middle of a stream of lease operations, an
//! executor killed mid-invocation, a lost executor manager, expiry and
//! release returning their slots without leaking processes or shared
//! memory, and dropped, delayed and black-holed connections. Each asserts
//! zero lost acknowledged leases and zero lost or duplicated results.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rfx::client::{InvokeError, Invoker, InvokerConfig};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, PollMode, TransportChoice, TransportKind};
use rfx::leases::client::blocking::TenantClient;
use rfx::leases::proto::{Event, Lease, LeaseId, LeaseRequest, LeaseState, LostReason};
use rfx::tenant::Tenant;
use support::fault::*;
use support::*;

fn req(cores: u32) -> LeaseRequest {
    LeaseRequest::new(cores, 600_000).with_hot_timeout(0)
}

fn cfg() -> InvokerConfig {
    InvokerConfig {
        timeout: Duration::from_secs(20),
        mode: PollMode::Warm,
        depth: 16,
        max_output: 64 << 10,
        ..InvokerConfig::default()
    }
}

fn lib() -> LibrarySource {
    shipped(&examples().rust)
}

fn tenant(lm: &LeaseManager, token: &str) -> Tenant {
    retry(Duration::from_secs(10), "tenant connect", || {
        Tenant::connect(&lm.addr.to_string(), token)
    })
}

/// A lease manager (its heartbeat timeout in ms), one executor manager of
/// `cores` cores and tenant alice: where most fault tests start. Destructure
/// in this field order so that they drop as locals would (alice first).
struct Site {
    dir: Scratch,
    lm: LeaseManager,
    em: ExecutorManager,
    token: String,
    alice: Tenant,
}

impl Site {
    fn start(name: &str, cores: u32, heartbeat_ms: u64) -> Site {
        let dir = Scratch::new(name);
        let lm = LeaseManager::start(&dir.0, free_addr(), heartbeat_ms);
        let em = ExecutorManager::start(&dir.0, "em", lm.addr, free_addr(), cores);
        let token = lm.add_tenant("alice");
        let alice = tenant(&lm, &token);
        Site {
            dir,
            lm,
            em,
            token,
            alice,
        }
    }
}

/// Waits until every executor of `em` stopped.
fn executors_stop(em: &ExecutorManager) {
    wait_for(Duration::from_secs(20), "executors stopped", || {
        em.executors().is_empty().then_some(())
    });
}

fn events(lm: &LeaseManager, token: &str) -> TenantClient {
    retry(Duration::from_secs(10), "event connection", || {
        TenantClient::connect(&lm.addr.to_string(), token)
    })
}

/// A unique payload per (client, sequence number), so a result that
/// belongs to another invocation is caught.
fn payload(client: u32, seq: u32) -> Vec<u8> {
    let mut v = client.to_le_bytes().to_vec();
    v.extend(seq.to_le_bytes());
    v.extend(std::iter::repeat_n((seq % 251) as u8, (seq % 64) as usize));
    v
}

/// Waits for the next event about `lease`, skipping others.
fn event_about(ev: &mut TenantClient, lease: LeaseId, limit: Duration) -> Event {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no event about lease {lease} in {limit:?}");
        match ev.next_event(left) {
            Some(e @ Event::LeaseLost { lease: l, .. }) if l == lease => return e,
            Some(e @ Event::LeaseExpired { lease: l }) if l == lease => return e,
            Some(_) => {}
            None => panic!("no event about lease {lease} in {limit:?}"),
        }
    }
}

/// What one client thread was told: acknowledged operations only.
#[derive(Default)]
struct Journal {
    granted: Vec<Lease>,
    released: Vec<LeaseId>,
    renewed: BTreeMap<LeaseId, u64>,
    ops: u64,
    errors: u64,
}

/// One tenant's stream of creates, renews and releases until `stop`,
/// reconnecting after errors; leases whose grant or release was not
/// acknowledged are found again with `list` and released.
fn lease_stream(addr: String, token: String, stop: Arc<AtomicBool>) -> Journal {
    let mut j = Journal::default();
    let mut client: Option<TenantClient> = None;
    let mut held: Vec<LeaseId> = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_ref() else {
            match TenantClient::connect(&addr, &token) {
                Ok(mut c) => {
                    c.set_timeout(Duration::from_secs(5));
                    // Adopt leases granted or kept by operations whose reply was lost.
                    match c.list() {
                        Ok(all) => {
                            for l in all.into_iter().filter(|l| l.lease.is_active()) {
                                if !held.contains(&l.lease.id) {
                                    held.push(l.lease.id);
                                }
                            }
                            held.retain(|id| {
                                c.show(*id).map(|l| l.lease.is_active()).unwrap_or(false)
                            });
                            client = Some(c);
                        }
                        Err(_) => j.errors += 1,
                    }
                }
                Err(_) => {
                    j.errors += 1;
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            continue;
        };
        i += 1;
        j.ops += 1;
        let failed = if held.len() < 2 {
            match c.create_lease(&req(1)) {
                Ok(info) => {
                    held.push(info.lease.id);
                    j.granted.push(info.lease);
                    false
                }
                Err(rfx::leases::DaemonError::Remote { .. }) => {
                    // Refused (no free core): not a fault.
                    std::thread::sleep(Duration::from_millis(10));
                    false
                }
                Err(_) => true,
            }
        } else if i % 3 == 0 {
            let id = held[0];
            match c.renew(id, 1_000) {
                Ok(exp) => {
                    j.renewed.insert(id, exp);
                    false
                }
                Err(_) => true,
            }
        } else {
            let id = held[0];
            match c.release(id) {
                Ok(_) => {
                    held.remove(0);
                    j.released.push(id);
                    false
                }
                Err(_) => true,
            }
        };
        if failed {
            j.errors += 1;
            client = None;
        }
    }
    // Release what is left (not part of the checks).
    if let Ok(c) = TenantClient::connect(&addr, &token) {
        for id in held {
            if c.release(id).is_ok() {
                j.released.push(id);
            }
        }
    }
    j
}

#[test]
fn lease_manager_killed_mid_stream_loses_no_acknowledged_lease() {
    let dir = Scratch::new("lm-kill");
    let mut lm = LeaseManager::start(&dir.0, free_addr(), 60_000);
    let em = ExecutorManager::start(&dir.0, "em", lm.addr, free_addr(), 8);
    wait_for(Duration::from_secs(10), "host registered", || {
        lm.hosts().iter().any(|h| h.up).then_some(())
    });
    let tokens: Vec<String> = (0..3).map(|i| lm.add_tenant(&format!("t{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = tokens
        .iter()
        .map(|t| {
            let (a, t, s) = (lm.addr.to_string(), t.clone(), stop.clone());
            std::thread::spawn(move || lease_stream(a, t, s))
        })
        .collect();
    // Two SIGKILLs in the middle of the stream, each restarted on the same store.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        lm.kill9();
        std::thread::sleep(Duration::from_millis(200));
        lm.restart();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let journals: Vec<Journal> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let ops: u64 = journals.iter().map(|j| j.ops).sum();
    let errors: u64 = journals.iter().map(|j| j.errors).sum();
    let granted: usize = journals.iter().map(|j| j.granted.len()).sum();
    eprintln!("{ops} operations, {granted} acknowledged grants, {errors} failed during the kills");
    assert!(granted >= 10, "too few grants to mean anything: {granted}");
    assert!(errors > 0, "the kills interrupted nothing");

    // What the twice-restarted lease manager knows.
    let mut seen_ids = HashSet::new();
    let mut all: Vec<Lease> = Vec::new();
    for (t, j) in tokens.iter().zip(&journals) {
        let c = TenantClient::connect(&lm.addr.to_string(), t).unwrap();
        let known: HashMap<LeaseId, Lease> = c
            .list()
            .unwrap()
            .into_iter()
            .map(|l| (l.lease.id, l.lease))
            .collect();
        for g in &j.granted {
            assert!(seen_ids.insert(g.id), "lease id {} granted twice", g.id);
            let k = known.get(&g.id).unwrap_or_else(|| {
                panic!("acknowledged lease {} lost\n{}", g.id, logs(&dir.0, 20))
            });
            assert_eq!(
                (k.host, &k.core_ids, &k.tenant),
                (g.host, &g.core_ids, &g.tenant)
            );
        }
        for id in &j.released {
            assert_eq!(known[id].state, LeaseState::Released, "lease {id}");
        }
        for (id, exp) in &j.renewed {
            assert!(
                known[id].expires_at_ms >= *exp,
                "renewal of lease {id} lost"
            );
        }
        all.extend(known.into_values());
    }
    // No core was ever held by two leases at once.
    for (x, a) in all.iter().enumerate() {
        for b in &all[x + 1..] {
            let end = |l: &Lease| l.ended_at_ms.unwrap_or(u64::MAX);
            let overlap = a.granted_at_ms < end(b) && b.granted_at_ms < end(a);
            let shared = a.host == b.host && a.core_ids.iter().any(|c| b.core_ids.contains(c));
            assert!(
                !(overlap && shared),
                "core double-booked by leases {} and {}",
                a.id,
                b.id
            );
        }
    }
    // Everything was released at the end: every core is free again and
    // every executor stops.
    let active: Vec<_> = all.iter().filter(|l| l.is_active()).map(|l| l.id).collect();
    assert!(active.is_empty(), "still active: {active:?}");
    let host = lm.hosts().into_iter().find(|h| h.up).unwrap();
    assert_eq!(host.free.free_cores(), 8);
    executors_stop(&em);
}

/// Released right after its last invocation, a lease is still billed for
/// every one: the executor says its last usage when it is stopped, not only
/// at its periodic report.
#[test]
fn usage_of_the_last_moments_before_release_is_kept() {
    let Site {
        dir: _dir,
        lm: _lm,
        em: _em,
        token: _token,
        alice,
    } = Site::start("usage-release", 1, 60_000);
    for round in 0..3u32 {
        let lease = retry(Duration::from_secs(10), "lease", || alice.lease(&req(1)));
        let id = lease.info().lease.id;
        let fabric = Fabric::open(Config::default()).unwrap();
        let mut inv = lease.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
        for s in 0..20 {
            assert_eq!(
                inv.invoke("echo", &payload(round, s)).unwrap(),
                payload(round, s)
            );
        }
        drop(inv);
        lease.release().unwrap();
        wait_for(Duration::from_secs(10), "usage of 20 invocations", || {
            (alice.client().usage(id).unwrap().invocations == 20).then_some(())
        });
    }
}

#[test]
fn executor_killed_mid_invocation_fails_fast_and_returns_its_slot() {
    let Site {
        dir: _dir,
        lm,
        em,
        token,
        alice,
    } = Site::start("exec-kill", 1, 60_000);
    let mut ev = events(&lm, &token);
    let lease = retry(Duration::from_secs(10), "first lease", || {
        alice.lease(&req(1))
    });
    let id = lease.info().lease.id;
    let fabric = Fabric::open(Config::default()).unwrap();
    let mut inv = lease
        .invoker(&fabric, lib(), &["echo", "crash"], cfg())
        .unwrap();
    for s in 0..50 {
        assert_eq!(inv.invoke("echo", &payload(0, s)).unwrap(), payload(0, s));
    }
    // The executor reports its usage every 500 ms: all 50 arrive.
    wait_for(Duration::from_secs(10), "usage of 50 invocations", || {
        (lease.usage().unwrap().invocations == 50).then_some(())
    });

    // Freeze the executor, put invocations in flight, kill it.
    let pids = em.executors();
    assert_eq!(pids.len(), 1, "one executor per lease");
    assert!(freeze(pids[0]));
    wait_for(Duration::from_secs(5), "executor stopped", || {
        stopped(pids[0]).then_some(())
    });
    let tickets: Vec<_> = (0..8)
        .map(|s| inv.submit("echo", &payload(1, s)).unwrap())
        .collect();
    assert!(kill9(pids[0]));
    let t = Instant::now();
    for ticket in tickets {
        match inv.wait(ticket) {
            Err(InvokeError::ExecutorGone(_)) => {}
            other => panic!("an in-flight invocation of a killed executor: {other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(matches!(
        inv.invoke("echo", b"after"),
        Err(InvokeError::ExecutorGone(_))
    ));
    drop(inv);

    // The lease is lost, its tenant is told, its usage is what was served.
    match event_about(&mut ev, id, Duration::from_secs(15)) {
        Event::LeaseLost {
            reason: LostReason::ExecutorCrashed { .. },
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    let shown = alice.client().show(id).unwrap();
    assert!(
        matches!(shown.lease.state, LeaseState::Lost { .. }),
        "{:?}",
        shown.lease.state
    );
    let u1 = lease.usage().unwrap();
    assert_eq!(u1.invocations, 50, "{u1:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lease.usage().unwrap(),
        u1,
        "usage of an ended lease changed"
    );

    // The only core is free again: a function that crashes its executor
    // (`crash`) loses that lease the same way, and the core comes back again.
    let lease2 = retry(Duration::from_secs(10), "lease after the crash", || {
        alice.lease(&req(1))
    });
    let id2 = lease2.info().lease.id;
    let mut inv2 = lease2
        .invoker(&fabric, lib(), &["echo", "crash"], cfg())
        .unwrap();
    assert_eq!(inv2.invoke("echo", b"second").unwrap(), b"second");
    let t = Instant::now();
    assert!(matches!(
        inv2.invoke("crash", b""),
        Err(InvokeError::ExecutorGone(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(20));
    drop(inv2);
    assert!(matches!(
        event_about(&mut ev, id2, Duration::from_secs(15)),
        Event::LeaseLost { .. }
    ));
    let lease3 = retry(
        Duration::from_secs(10),
        "lease after the second crash",
        || alice.lease(&req(1)),
    );
    let mut inv3 = lease3.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
    assert_eq!(inv3.invoke("echo", b"third").unwrap(), b"third");
    drop(inv3);
    lease3.release().unwrap();
    executors_stop(&em);
}

#[test]
fn lost_executor_manager_loses_its_leases_and_registers_again() {
    let Site {
        dir: _dir,
        lm,
        mut em,
        token,
        alice,
    } = Site::start("em-kill", 2, 1500);
    let mut ev = events(&lm, &token);
    let lease = retry(Duration::from_secs(10), "first lease", || {
        alice.lease(&req(1))
    });
    let id = lease.info().lease.id;
    let host = lease.info().lease.host;
    let fabric = Fabric::open(Config::default()).unwrap();
    let mut inv = lease.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
    assert_eq!(inv.invoke("echo", b"before").unwrap(), b"before");
    let pids = em.executors();
    assert_eq!(pids.len(), 1);

    em.kill9();
    // Its executor follows it (its usage pipe breaks): no orphan.
    wait_gone(
        &pids,
        Duration::from_secs(15),
        "executor of a killed manager",
    );
    let t = Instant::now();
    assert!(inv.invoke("echo", b"after").is_err());
    assert!(t.elapsed() < Duration::from_secs(20));
    drop(inv);
    // Marked lost after the heartbeat timeout; the tenant is told.
    match event_about(&mut ev, id, Duration::from_secs(15)) {
        Event::LeaseLost {
            reason: LostReason::HostDown,
            host: h,
            ..
        } => assert_eq!(h, host),
        e => panic!("{e:?}"),
    }
    // ... and sees it with `rfx lease show`.
    let out = Command::new(RFX)
        .args(["lease", "show", &id.to_string(), "--json"])
        .env("RFX_TENANT_TOKEN", &token)
        .env("RFX_LEASE_MANAGER", lm.addr.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lease"]["state"]["Lost"]["reason"], "HostDown", "{v}");
    // In words without --json.
    let out = Command::new(RFX)
        .args(["lease", "show", &id.to_string()])
        .env("RFX_TENANT_TOKEN", &token)
        .env("RFX_LEASE_MANAGER", lm.addr.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lost (host down)"), "{text}");
    // No host, no lease.
    assert!(alice.lease(&req(1)).is_err());

    // A restarted manager registers again (same address, same host id) and serves.
    em.restart();
    let lease2 = retry(
        Duration::from_secs(15),
        "lease after re-registration",
        || alice.lease(&req(2)),
    );
    assert_eq!(lease2.info().lease.host, host);
    let mut inv2 = lease2.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
    assert_eq!(inv2.invoke("echo", b"again").unwrap(), b"again");
    drop(inv2);
    lease2.release().unwrap();
    executors_stop(&em);
}

#[test]
fn expiry_and_release_return_the_slots_and_leak_nothing() {
    let shm_before = shm_entries();
    let Site {
        dir: _dir,
        lm,
        em,
        token,
        alice,
    } = Site::start("expiry", 2, 60_000);
    let mut ev = events(&lm, &token);
    let fabric = Fabric::open(Config::default()).unwrap();
    let self_memfds = memfds(std::process::id());

    // A short lease holding every core expires and frees them.
    let short = LeaseRequest::new(2, 2_000).with_hot_timeout(0);
    let lease = retry(Duration::from_secs(10), "short lease", || {
        alice.lease(&short)
    });
    let id = lease.info().lease.id;
    let mut inv = lease.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
    assert_eq!(inv.invoke("echo", b"x").unwrap(), b"x");
    let pids = em.executors();
    assert_eq!(pids.len(), 1);
    assert!(alice.lease(&req(1)).is_err(), "a core leased twice");
    assert!(matches!(
        event_about(&mut ev, id, Duration::from_secs(15)),
        Event::LeaseExpired { .. }
    ));
    wait_gone(
        &pids,
        Duration::from_secs(15),
        "executor of an expired lease",
    );
    assert!(inv.invoke("echo", b"y").is_err());
    drop(inv);
    assert_eq!(
        alice.client().show(id).unwrap().lease.state,
        LeaseState::Expired
    );

    // Lease, invoke, release, over and over: the cores always come back.
    for round in 0..6u32 {
        let lease = retry(Duration::from_secs(10), "lease", || alice.lease(&req(2)));
        let mut inv = lease.invoker(&fabric, lib(), &["echo"], cfg()).unwrap();
        let p = payload(round, round);
        assert_eq!(inv.invoke("echo", &p).unwrap(), p);
        let pids = em.executors();
        drop(inv);
        lease.release().unwrap();
        wait_gone(
            &pids,
            Duration::from_secs(15),
            "executor of a released lease",
        );
    }
    assert!(em.executors().is_empty());
    let host = lm.hosts().into_iter().find(|h| h.up).unwrap();
    assert_eq!(host.free.free_cores(), 2);
    let leaked = new_rfx_shm(&shm_before);
    assert!(leaked.is_empty(), "left in /dev/shm: {leaked:?}");
    drop(fabric);
    // Memfds are per process: nextest runs each test in its own process, so
    // this one's count is meaningful there (other tests share it otherwise).
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
        assert_eq!(memfds(std::process::id()), self_memfds, "memfds leaked");
    } else {
        eprintln!("skipped the memfd count: not running under nextest (process per test)");
    }
}

#[test]
fn dropped_delayed_and_blackholed_connections_lose_nothing() {
    let dir = Scratch::new("proxy");
    let lm = LeaseManager::start(&dir.0, free_addr(), 60_000);
    let em = ExecutorManager::start(&dir.0, "em", lm.addr, free_addr(), 1);
    let token = lm.add_tenant("alice");
    wait_for(Duration::from_secs(10), "host registered", || {
        lm.hosts().iter().any(|h| h.up).then_some(())
    });

    // Control plane through a proxy: delayed, cut, black-holed.
    let proxy = FaultProxy::start(lm.addr);
    let via = proxy.addr().to_string();
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let alice = Tenant::connect(&via, &token).unwrap();
    let lease = alice.lease(&req(1)).unwrap();
    let id = lease.info().lease.id;
    proxy.set(Fault::Pass);
    proxy.cut();
    let t = Instant::now();
    assert!(
        alice.client().show(id).is_err(),
        "a cut connection answered"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let mut c = TenantClient::connect(&via, &token).unwrap();
    c.set_timeout(Duration::from_secs(1));
    proxy.set(Fault::Blackhole);
    let t = Instant::now();
    assert!(matches!(
        c.show(id),
        Err(rfx::leases::DaemonError::TimedOut(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
    proxy.set(Fault::Refuse);
    assert!(TenantClient::connect(&via, &token).is_err());
    proxy.set(Fault::Pass);
    let alice = Tenant::connect(&via, &token).unwrap();
    let lease = alice.existing(id).unwrap();
    assert!(lease.info().lease.is_active());

    // Data plane through a proxy (tcp forced, so every byte crosses it).
    let tcp = Fabric::open(Config {
        transport: TransportChoice::Forced(TransportKind::Tcp),
        ..Config::default()
    })
    .unwrap();
    let data = FaultProxy::start(lease.executor());
    let token_hex = lease.info().token.to_hex();
    let connect = || {
        Invoker::connect(
            &tcp,
            data.addr(),
            token_hex.as_bytes(),
            lib(),
            &["echo"],
            cfg(),
        )
    };
    let mut inv = connect().unwrap();
    assert_eq!(inv.transport(), TransportKind::Tcp);
    data.set(Fault::Delay(Duration::from_millis(20)));
    let inputs: Vec<Vec<u8>> = (0..40).map(|s| payload(7, s)).collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let outs = inv.batch("echo", &refs).unwrap();
    assert_eq!(outs.len(), inputs.len());
    for (o, i) in outs.into_iter().zip(&inputs) {
        assert_eq!(&o.unwrap(), i, "a result lost, duplicated or misplaced");
    }
    data.set(Fault::Pass);
    let tickets: Vec<_> = (0..4)
        .map(|s| inv.submit("echo", &payload(8, s)).unwrap())
        .collect();
    data.cut();
    let t = Instant::now();
    for (s, ticket) in tickets.into_iter().enumerate() {
        // Either the result made it before the cut, exactly, or an error.
        if let Ok(out) = inv.wait(ticket) {
            assert_eq!(out, payload(8, s as u32));
        }
    }
    assert!(inv.invoke("echo", b"cut").is_err());
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    drop(inv);
    // The executor survived its client's cut connection and serves a new one.
    let mut inv = retry(Duration::from_secs(10), "reconnect", connect);
    assert_eq!(inv.invoke("echo", b"again").unwrap(), b"again");
    drop(inv);
    lease.release().unwrap();
    executors_stop(&em);
}

#[test]
fn retrying_invocations_move_to_a_new_lease_when_the_executor_dies() {
    use rfx::tenant::{RetryPolicy, Retrying, TenantError};
    let Site {
        dir: _dir,
        lm: _lm,
        em,
        token: _token,
        alice,
    } = Site::start("retry", 2, 60_000);
    let fabric = Fabric::open(Config::default()).unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        backoff: Duration::from_millis(20),
    };
    let mut r = retry(Duration::from_secs(10), "a first lease", || {
        let mut r = Retrying::new(
            &alice,
            &fabric,
            req(1),
            lib(),
            &["echo", "panics"],
            cfg(),
            policy,
        );
        r.invoke("echo", b"first").map(|out| (r, out))
    });
    assert_eq!(r.1, b"first");
    let first = r.0.lease().unwrap().info().lease.id;

    // The executor dies between invocations: the next one moves on.
    let pids = em.executors();
    assert_eq!(pids.len(), 1);
    assert!(kill9(pids[0]));
    wait_gone(&pids, Duration::from_secs(5), "the killed executor");
    assert_eq!(r.0.invoke("echo", b"second").unwrap(), b"second");
    assert_eq!(r.0.retries(), 1);
    let second = r.0.lease().unwrap().info().lease.id;
    assert_ne!(first, second, "a new lease");

    // A function's own failure is not retried: it would fail again.
    assert!(matches!(
        r.0.invoke("panics", b""),
        Err(TenantError::Invoke(InvokeError::FunctionFailed { .. }))
    ));
    assert_eq!(r.0.retries(), 1);
    r.0.release().unwrap();
}
