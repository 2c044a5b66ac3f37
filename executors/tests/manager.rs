//! The executor manager with real processes and sockets: an in-process lease
//! daemon, an in-process manager, and executor processes that are this test
//! binary re-executed into `executor_entry` (a real `Executor`, parsing the
//! flags the manager passes as `rfx executor` does). Tenants use the blocking
//! lease client, the lookup client and an `Invoker`; processes are checked
//! through `/proc` (an executor is a child of this process, so its `/proc`
//! entry disappears only once the manager reaps it).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use rfx_executors::client::{Invoker, InvokerConfig};
use rfx_executors::lookup::{lookup_executor, LookupError, MAX_LINE};
use rfx_executors::manager;
use rfx_executors::session::LibrarySource;
use rfx_fabric::PollMode;
use rfx_leases::client::blocking::TenantClient;
use rfx_leases::proto::{Capacity, Event, LeaseId, LeaseRequest, LeaseState, LostReason};
use rfx_leases::wire::LeaseInfo;
use support::*;

/// Entry point of the executor processes, not a test: the manager under test
/// runs this binary with `--exact executor_entry` and `ENTRY_ENV` set, and
/// this then serves as `rfx executor` would until it is stopped. Without
/// `ENTRY_ENV` (a normal test run) it returns at once.
#[test]
fn executor_entry() {
    if std::env::var_os(ENTRY_ENV).is_some() {
        executor_main();
    }
}

/// A warm (never busy-polling) lease of `cores` for a minute.
fn request(cores: u32) -> LeaseRequest {
    LeaseRequest::new(cores, 60_000).with_hot_timeout(0)
}

fn invoker(info: &LeaseInfo, addr: std::net::SocketAddr, functions: &[&str]) -> Invoker {
    let cfg = InvokerConfig {
        depth: 4,
        max_output: 4096,
        timeout: WAIT,
        mode: PollMode::Warm,
        ..InvokerConfig::default()
    };
    let lib = LibrarySource::Path(example_functions().display().to_string());
    Invoker::connect(
        &fabric(),
        addr,
        info.token.to_hex().as_bytes(),
        lib,
        functions,
        cfg,
    )
    .expect("the tenant connects to its executor")
}

/// The refusal a lookup gets.
fn refusal(r: Result<std::net::SocketAddr, LookupError>) -> String {
    match r {
        Err(LookupError::LookupRefused { message, .. }) => message,
        other => panic!("expected a refused lookup, got {other:?}"),
    }
}

/// Waits until the lookup of `info`'s lease is refused as unknown.
fn wait_unknown(info: &LeaseInfo) {
    let hex = info.token.to_hex();
    wait_for("the lookup refuses the lease", || {
        let r = lookup_executor(&info.host_addr, info.lease.id, &hex, WAIT);
        match r {
            Ok(_) => None,
            r => (refusal(r) == "unknown lease").then_some(()),
        }
    });
}

/// The next event, bounded.
fn next_event(t: &mut TenantClient) -> Event {
    t.next_event(WAIT).expect("an event in time")
}

#[test]
fn a_lease_gets_its_own_executor_until_released() {
    let (d, token) = TestDaemon::start();
    let m = TestManager::start(manager_config(d.addr, Capacity::new(4, 4096)));
    let alice = d.tenant(&token);
    let info = alice.create_lease(&request(2)).expect("granted");
    assert_eq!(
        info.host_addr, m.addr,
        "the manager registers its lookup address"
    );
    let (id, hex) = (info.lease.id, info.token.to_hex());

    let addr = lookup(&info.host_addr, id, &hex);
    let pid = executor_pid(info.lease.id);
    let args = cmdline(pid);
    let flag = |name: &str| {
        let i = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("{name} in {args:?}"));
        args.get(i + 1).cloned().unwrap_or_default()
    };
    assert_eq!(flag("--workers"), "2");
    let cpus: Vec<String> = info.lease.core_ids.iter().map(u32::to_string).collect();
    assert_eq!(flag("--cpus"), cpus.join(","));
    assert_eq!(flag("--hot-timeout-ms"), "0");
    assert_eq!(flag("--usage-every-ms"), "100");
    assert!(flag("--listen").starts_with("127.0.0.1:"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.contains(&hex)),
        "the token is not on the command line"
    );

    // A wrong token and an unknown lease get the same answer.
    let wrong = "0".repeat(64);
    assert_eq!(
        refusal(lookup_executor(&m.addr, id, &wrong, WAIT)),
        "unknown lease"
    );
    assert_eq!(
        refusal(lookup_executor(&m.addr, id, "zz", WAIT)),
        "unknown lease"
    );
    assert_eq!(
        refusal(lookup_executor(&m.addr, LeaseId(999), &hex, WAIT)),
        "unknown lease"
    );

    // Invocations go to the executor directly.
    let mut inv = invoker(&info, addr, &["echo", "noop"]);
    assert_eq!(
        inv.invoke("echo", b"hello rfx").expect("echo"),
        b"hello rfx"
    );
    assert_eq!(inv.invoke("noop", b"x").expect("noop"), b"");
    let usage = wait_for("usage reaches the lease manager", || {
        let u = alice.usage(id).expect("usage");
        (u.invocations >= 2).then_some(u)
    });
    assert!(usage.bytes_in > 0 && usage.bytes_out >= 9, "{usage:?}");
    drop(inv);

    alice.release(id).expect("released");
    wait_gone(pid);
    wait_unknown(&info);
    m.stop().expect("the manager stops cleanly");
}

#[test]
fn the_lookup_service_survives_garbage() {
    let (d, token) = TestDaemon::start();
    let m = TestManager::start(manager_config(d.addr, Capacity::new(2, 1024)));
    let alice = d.tenant(&token);
    let info = alice.create_lease(&request(1)).expect("granted");
    let addr = lookup(&m.addr, info.lease.id, &info.token.to_hex());

    let mut s = TcpStream::connect(&m.addr).expect("connects");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut ask = |line: &[u8]| {
        s.write_all(line).expect("writes");
        let mut reply = String::new();
        r.read_line(&mut reply).expect("reads");
        reply
    };
    for garbage in [
        &b"garbage\n"[..],
        b"{\"lease\": -1, \"token\": 5}\n",
        b"\xff\xfe\x00\n",
        b"[1,2,3]\n",
    ] {
        let reply = ask(garbage);
        assert!(
            reply.starts_with("{\"error\":\"malformed request"),
            "{reply}"
        );
    }
    // The raw token (the version 1 request) is no proof: "unknown lease",
    // as for a lease that does not exist.
    let raw = format!(
        "{{\"lease\": {}, \"token\": \"{}\"}}\n",
        info.lease.id,
        info.token.to_hex()
    );
    assert_eq!(ask(raw.as_bytes()), "{\"error\":\"unknown lease\"}\n");
    // The same connection still answers well-formed requests: the proof.
    let good = format!(
        "{{\"lease\": {}, \"proof\": \"{}\"}}\n",
        info.lease.id,
        info.token.lookup_proof_hex(info.lease.id)
    );
    assert_eq!(
        ask(good.as_bytes()),
        format!("{{\"executor\":\"{addr}\"}}\n")
    );
    // An overlong line is refused, then the connection closes.
    let mut long = vec![b'x'; MAX_LINE + 10];
    long.push(b'\n');
    let reply = ask(&long);
    assert!(reply.contains("longer than"), "{reply}");
    assert_eq!(ask(b"more\n"), "", "closed after an overlong line");

    // Nobody listening: a clear error, fast.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let err = lookup_executor(&dead_addr, info.lease.id, "x", Duration::from_secs(2))
        .expect_err("nobody listens");
    assert!(matches!(err, LookupError::Unreachable { .. }), "{err}");

    assert_eq!(lookup(&m.addr, info.lease.id, &info.token.to_hex()), addr);
    m.stop().expect("the manager stops cleanly");
}

#[test]
fn a_crashing_function_loses_the_lease() {
    let (d, token) = TestDaemon::start();
    let m = TestManager::start(manager_config(d.addr, Capacity::new(2, 1024)));
    let mut alice = d.tenant(&token);
    let info = alice.create_lease(&request(1)).expect("granted");
    let (id, hex) = (info.lease.id, info.token.to_hex());
    let addr = lookup(&m.addr, id, &hex);
    let pid = executor_pid(info.lease.id);

    let mut inv = invoker(&info, addr, &["echo", "crash"]);
    assert_eq!(inv.invoke("echo", b"before").expect("echo"), b"before");
    inv.invoke("crash", b"").expect_err("the executor dies");

    match next_event(&mut alice) {
        Event::LeaseLost {
            lease,
            reason: LostReason::ExecutorCrashed { reason },
            ..
        } => {
            assert_eq!(lease, id);
            assert_eq!(reason, "executor exited: signal 11 (SIGSEGV)");
        }
        other => panic!("expected a crashed lease, got {other:?}"),
    }
    let shown = alice.show(id).expect("show");
    assert!(
        matches!(
            &shown.lease.state,
            LeaseState::Lost { reason: LostReason::ExecutorCrashed { reason } } if reason.contains("SIGSEGV")
        ),
        "{:?}",
        shown.lease.state
    );
    wait_gone(pid);
    wait_unknown(&info);

    // The host still serves new leases.
    let next = alice.create_lease(&request(1)).expect("granted");
    let addr = lookup(&m.addr, next.lease.id, &next.token.to_hex());
    let mut inv = invoker(&next, addr, &["echo"]);
    assert_eq!(inv.invoke("echo", b"after").expect("echo"), b"after");
    m.stop().expect("the manager stops cleanly");
}

#[test]
fn accelerators_are_partitioned_between_leases() {
    let (d, token) = TestDaemon::start();
    let cap = Capacity::new(4, 4096).with_accelerators("gpu", 2);
    let m = TestManager::start(manager_config(d.addr, cap));
    let alice = d.tenant(&token);
    let mut seen = vec![];
    for (gpus, visible) in [(1, "0"), (1, "1"), (0, "")] {
        let info = alice
            .create_lease(&request(1).with_accelerators("gpu", gpus))
            .expect("granted");
        let hex = info.token.to_hex();
        lookup(&m.addr, info.lease.id, &hex);
        let pid = executor_pid(info.lease.id);
        assert_eq!(
            env_of(pid, "CUDA_VISIBLE_DEVICES").as_deref(),
            Some(visible),
            "lease {} with {gpus} gpu",
            info.lease.id
        );
        seen.push(pid);
    }
    m.stop().expect("the manager stops cleanly");
    for pid in seen {
        wait_gone(pid);
    }
}

#[test]
fn stopping_the_manager_stops_its_executors() {
    let (d, token) = TestDaemon::start();
    let m = TestManager::start(manager_config(d.addr, Capacity::new(4, 4096)));
    let mut alice = d.tenant(&token);
    let leases: Vec<LeaseInfo> = (0..2)
        .map(|_| alice.create_lease(&request(1)).expect("granted"))
        .collect();
    let pids: Vec<u32> = leases
        .iter()
        .map(|info| {
            let hex = info.token.to_hex();
            lookup(&m.addr, info.lease.id, &hex);
            executor_pid(info.lease.id)
        })
        .collect();
    let lookup_addr = m.addr.clone();

    m.stop().expect("the manager stops cleanly");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "executor {pid} reaped"
        );
    }
    // It deregistered: the leases are lost, the tenant told.
    let mut lost = vec![];
    for _ in &leases {
        match next_event(&mut alice) {
            Event::LeaseLost {
                lease,
                reason: LostReason::HostDeregistered,
                ..
            } => lost.push(lease),
            other => panic!("expected a lost lease, got {other:?}"),
        }
    }
    lost.sort();
    let ids: Vec<LeaseId> = leases.iter().map(|i| i.lease.id).collect();
    assert_eq!(lost, ids);
    // And the lookup service is gone with it.
    let err = lookup_executor(&lookup_addr, ids[0], "x", Duration::from_secs(2))
        .expect_err("no lookup service");
    assert!(matches!(err, LookupError::Unreachable { .. }), "{err}");
}

#[test]
fn executors_that_do_not_start_or_ignore_sigterm() {
    let (d, token) = TestDaemon::start();
    let mut alice = d.tenant(&token);
    let lost_reason = |alice: &mut TenantClient, id: LeaseId| match next_event(alice) {
        Event::LeaseLost {
            lease,
            reason: LostReason::ExecutorCrashed { reason },
            ..
        } if lease == id => reason,
        other => panic!("expected lease {id} crashed, got {other:?}"),
    };

    // An executor that exits before saying where it listens.
    let mut cfg = manager_config(d.addr, Capacity::new(2, 1024));
    cfg.executor_command = ["sh", "-c", "exit 3", "sh"].map(Into::into).to_vec();
    let m = TestManager::start(cfg);
    let info = alice.create_lease(&request(1)).expect("granted");
    assert_eq!(
        lost_reason(&mut alice, info.lease.id),
        "executor exited before listening: code 3"
    );
    m.stop().expect("the manager stops cleanly");

    // A program that does not exist.
    let mut cfg = manager_config(d.addr, Capacity::new(2, 1024));
    cfg.executor_command = vec!["/nonexistent/rfx-executor".into()];
    let m = TestManager::start(cfg);
    let info = alice.create_lease(&request(1)).expect("granted");
    let reason = lost_reason(&mut alice, info.lease.id);
    assert!(
        reason.starts_with("executor not started: cannot run /nonexistent/rfx-executor"),
        "{reason}"
    );
    m.stop().expect("the manager stops cleanly");

    // An executor that ignores SIGTERM is killed after the grace period; a
    // release is not a crash.
    let script = "trap '' TERM; echo 'rfx executor: listening on 0.0.0.0:9' >&2; \
                  while :; do sleep 0.2; done";
    let mut cfg = manager_config(d.addr, Capacity::new(2, 1024));
    cfg.executor_command = ["sh", "-c", script, "sh"].map(Into::into).to_vec();
    cfg.stop_grace = Duration::from_millis(300);
    let m = TestManager::start(cfg);
    let info = alice.create_lease(&request(1)).expect("granted");
    let hex = info.token.to_hex();
    // Bound to 0.0.0.0: announced at the manager's own address.
    assert_eq!(
        lookup(&m.addr, info.lease.id, &hex).to_string(),
        "127.0.0.1:9"
    );
    let pid = executor_pid(info.lease.id);
    alice.release(info.lease.id).expect("released");
    wait_gone(pid);
    let shown = alice.show(info.lease.id).expect("show");
    assert_eq!(shown.lease.state, LeaseState::Released);
    assert_eq!(
        alice.next_event(Duration::from_millis(300)),
        None,
        "no crash reported"
    );
    m.stop().expect("the manager stops cleanly");
}

#[test]
fn executors_survive_a_lease_manager_restart() {
    let (mut d, token) = TestDaemon::start();
    let m = TestManager::start(manager_config(d.addr, Capacity::new(2, 1024)));
    let info = d.tenant(&token).create_lease(&request(1)).expect("granted");
    let (id, hex) = (info.lease.id, info.token.to_hex());
    let addr = lookup(&m.addr, id, &hex);
    let pid = executor_pid(info.lease.id);

    d.restart();
    // The manager registers again; the lease is still active, its executor
    // the same process.
    let alice = d.tenant(&token);
    wait_for("the manager is back", || {
        let mut admin =
            rfx_leases::client::blocking::AdminClient::connect(&d.addr.to_string(), KEY)
                .expect("admin");
        admin.set_timeout(WAIT);
        let hosts = admin.list_hosts().expect("hosts");
        hosts.iter().any(|h| h.up).then_some(())
    });
    assert!(alice.show(id).expect("show").lease.is_active());
    assert_eq!(executor_pid(info.lease.id), pid);
    assert_eq!(lookup(&m.addr, id, &hex), addr);
    let mut inv = invoker(&info, addr, &["echo"]);
    assert_eq!(
        inv.invoke("echo", b"still here").expect("echo"),
        b"still here"
    );
    drop(inv);

    // Commands arrive on the new connection.
    alice.release(id).expect("released");
    wait_gone(pid);
    m.stop().expect("the manager stops cleanly");
}

#[test]
fn gpu_detection_never_fails() {
    let n = manager::detect_gpus();
    let has_smi = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_smi {
        assert_eq!(n, 0);
    }
}
