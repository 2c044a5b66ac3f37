//! The lease manager's audit log over real TCP: what is recorded, in which
//! order, with which fields; that it is only appended to; that no secret
//! reaches it.

mod util;

use rfx_leases::audit::{ActorKind, AuditAction, AuditLog, AuditRecord};
use rfx_leases::client::{AdminClient, HostClient, TenantClient};
use rfx_leases::proto::{Capacity, HostId, LeaseId, LeaseRequest};
use rfx_leases::wire::ErrorCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use util::{host, tenant, within, Env, TestDaemon, KEY, WAIT};

fn audit_path(env: &Env) -> PathBuf {
    env.dir.path().join("audit.jsonl")
}

/// `env`'s config, auditing to `audit_path(env)`.
fn audited(env: &Env) -> rfx_leases::daemon::DaemonConfig {
    let mut cfg = env.config();
    cfg.audit = AuditLog::open(audit_path(env)).expect("open the audit log");
    cfg
}

/// Every line of the log: each must be one JSON object, and parse as a
/// record.
fn read_log(path: &Path) -> (String, Vec<AuditRecord>) {
    let text = std::fs::read_to_string(path).expect("read the audit log");
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    let records = text
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            assert!(v["ts_ms"].is_u64(), "{line}");
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a record ({e}): {line}"))
        })
        .collect();
    (text, records)
}

fn actions(records: &[AuditRecord]) -> Vec<AuditAction> {
    records.iter().map(|r| r.event.action).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

fn refused<T: std::fmt::Debug>(r: Result<T, rfx_leases::DaemonError>) -> ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("not a refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

#[test]
fn lease_manager_actions_are_audited_in_order() {
    let env = Env::new();
    let token = env.tenant("alice");
    let started = now_ms();
    let d = TestDaemon::start(audited(&env));
    let mut lease_tokens = Vec::new();
    let mut bob_token = String::new();
    let (granted, crashed, deregistered) = env.block_on(async {
        let (h, _cmds) = host(d.addr, "node1:7500", Capacity::new(4, 4096)).await;
        let alice = tenant(d.addr, &token).await;

        // Grant, renew, release.
        let req = LeaseRequest::new(2, 60_000).with_memory(1024);
        let info = within("create", alice.create_lease(&req))
            .await
            .expect("granted");
        lease_tokens.push(info.token.to_hex());
        let id = info.lease.id;
        within("renew", alice.renew(id, 1_000))
            .await
            .expect("renewed");
        within("release", alice.release(id))
            .await
            .expect("released");
        // Renewing an ended lease is refused.
        assert_eq!(
            refused(within("renew", alice.renew(id, 1)).await),
            ErrorCode::NotActive
        );
        // Over capacity.
        let err = within(
            "too big",
            alice.create_lease(&LeaseRequest::new(64, 60_000)),
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Placement));

        // Bad tenant tokens: a known name with a wrong secret, junk, and the
        // cluster key passed as a token.
        let forged = format!("alice.{}", "0".repeat(64));
        let dotted_key = format!("{KEY}.{}", "1".repeat(64));
        for bad in [forged.as_str(), "garbage", KEY, dotted_key.as_str()] {
            let err = within("bad token", TenantClient::connect(d.addr, bad))
                .await
                .expect_err("refused");
            assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
        }
        // A wrong cluster key, from a host and from an operator.
        let err = within(
            "register",
            HostClient::register(d.addr, "wrong-key", "n:1", Capacity::new(1, 1)),
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
        let wrong = within("admin", AdminClient::connect(d.addr, "wrong-key"))
            .await
            .expect("connects");
        assert_eq!(
            refused(within("add", wrong.add_tenant("mallory")).await),
            ErrorCode::Unauthorized
        );
        // An operator adds a tenant (its token is in the reply only).
        let admin = within("admin", AdminClient::connect(d.addr, KEY))
            .await
            .expect("connects");
        bob_token = within("add", admin.add_tenant("bob")).await.expect("added");
        assert_eq!(
            refused(within("add again", admin.add_tenant("bob")).await),
            ErrorCode::AlreadyExists
        );

        // A crash loses its lease.
        let crash = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        lease_tokens.push(crash.token.to_hex());
        within(
            "crash",
            h.report_crash(crash.lease.id, "killed by signal 9"),
        )
        .await
        .expect("crash reported");
        // Deregistering the host loses the leases on it.
        let last = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        lease_tokens.push(last.token.to_hex());
        within("deregister", h.deregister())
            .await
            .expect("deregistered");
        (id, crash.lease.id, last.lease.id)
    });
    d.stop().expect("graceful stop");
    let ended = now_ms();

    let (text, log) = read_log(&audit_path(&env));
    use AuditAction::*;
    assert_eq!(
        actions(&log),
        [
            HostRegistered,
            LeaseGranted,
            LeaseRenewed,
            LeaseReleased,
            RequestRefused,
            LeaseRefused,
            AuthRefused,
            AuthRefused,
            AuthRefused,
            AuthRefused,
            AuthRefused,
            AuthRefused,
            TenantAdded,
            RequestRefused,
            LeaseGranted,
            ExecutorCrashed,
            LeaseLost,
            LeaseGranted,
            HostDeregistered,
            LeaseLost,
        ],
        "{text}"
    );
    let mut last_ts = started;
    for r in &log {
        assert!(r.ts_ms >= last_ts && r.ts_ms <= ended, "{text}");
        last_ts = r.ts_ms;
    }
    let e = |i: usize| &log[i].event;
    let host1 = Some(HostId(1));

    // The host registered.
    assert_eq!(
        (e(0).actor.as_str(), e(0).actor_kind),
        ("host:1", ActorKind::Host)
    );
    assert_eq!(
        (e(0).host, e(0).cores, e(0).memory_mib),
        (host1, Some(4), Some(4096))
    );
    assert_eq!(e(0).fields["addr"], "node1:7500");

    // Granted: tenant, lease, cores, memory, host.
    assert_eq!(
        (e(1).actor.as_str(), e(1).actor_kind),
        ("alice", ActorKind::Tenant)
    );
    assert_eq!(
        (e(1).lease, e(1).host, e(1).cores, e(1).memory_mib),
        (Some(granted), host1, Some(2), Some(1024))
    );
    assert!(e(1).fields["expires_at_ms"].is_u64());
    // Renewed by 1 s.
    assert_eq!((e(2).actor.as_str(), e(2).lease), ("alice", Some(granted)));
    assert_eq!(
        e(2).fields["expires_at_ms"].as_u64(),
        e(1).fields["expires_at_ms"].as_u64().map(|t| t + 1_000)
    );
    // Released, with the final usage.
    assert_eq!((e(3).actor.as_str(), e(3).lease), ("alice", Some(granted)));
    assert!(e(3).fields["usage"]["core_ms"].is_u64());
    // The renewal of the released lease.
    assert_eq!((e(4).actor.as_str(), e(4).lease), ("alice", Some(granted)));
    assert_eq!(e(4).fields["request"], "renew");
    assert_eq!(e(4).detail.as_deref(), Some("lease 1 is released"));
    // Over capacity: what was asked, and why not.
    assert_eq!(
        (e(5).actor.as_str(), e(5).cores, e(5).lease),
        ("alice", Some(64), None)
    );
    assert!(
        e(5).detail.as_deref().is_some_and(|d| !d.is_empty()),
        "{text}"
    );

    // Refused credentials: the claimed tenant only if it exists.
    let auth: Vec<(&str, ActorKind, &str, &str)> = (6..12)
        .map(|i| {
            let ev = e(i);
            (
                ev.actor.as_str(),
                ev.actor_kind,
                ev.detail.as_deref().expect("detail"),
                ev.fields["request"].as_str().expect("request"),
            )
        })
        .collect();
    let un = ActorKind::Unauthenticated;
    assert_eq!(
        auth,
        [
            ("alice", un, "wrong secret in tenant token", "subscribe"),
            ("unknown", un, "unknown tenant token", "subscribe"),
            ("unknown", un, "unknown tenant token", "subscribe"),
            ("unknown", un, "unknown tenant token", "subscribe"),
            ("host", un, "wrong cluster key", "register"),
            ("operator", un, "wrong cluster key", "add_tenant"),
        ]
    );

    // The operator added bob, then was refused adding him again.
    assert_eq!(
        (e(12).actor.as_str(), e(12).actor_kind),
        ("operator", ActorKind::Operator)
    );
    assert_eq!(e(12).fields["tenant"], "bob");
    assert_eq!(e(13).fields["tenant"], "bob");
    assert_eq!(e(13).detail.as_deref(), Some("tenant already exists"));

    // The crash: the host's report, then the tenant's loss.
    assert_eq!(e(14).lease, Some(crashed));
    assert_eq!(
        (e(15).actor.as_str(), e(15).lease, e(15).host),
        ("host:1", Some(crashed), host1)
    );
    assert_eq!(e(15).detail.as_deref(), Some("killed by signal 9"));
    assert_eq!(
        (e(16).actor.as_str(), e(16).lease, e(16).host),
        ("alice", Some(crashed), host1)
    );
    assert_eq!(
        e(16).detail.as_deref(),
        Some("executor crashed: killed by signal 9")
    );

    // The deregistration, then the lease it lost.
    assert_eq!(e(17).lease, Some(deregistered));
    assert_eq!((e(18).actor.as_str(), e(18).host), ("host:1", host1));
    assert_eq!(
        (e(19).actor.as_str(), e(19).lease, e(19).detail.as_deref()),
        ("alice", Some(deregistered), Some("host deregistered"))
    );

    // No secret: tenant tokens (whole or their secret half), lease tokens,
    // the cluster key.
    let secret = token.split_once('.').expect("NAME.SECRET").1;
    let bob_secret = bob_token.split_once('.').expect("NAME.SECRET").1;
    assert_eq!(lease_tokens.len(), 3);
    for s in [
        token.as_str(),
        secret,
        &bob_token,
        bob_secret,
        KEY,
        "0000000000000000",
        "1111111111111111",
    ]
    .into_iter()
    .chain(lease_tokens.iter().map(String::as_str))
    {
        assert!(!text.contains(s), "{s:?} in the audit log:\n{text}");
    }
    assert!(!text.contains("test-cluster"), "{text}");
}

#[test]
fn expiry_and_silent_hosts_are_audited() {
    let env = Env::new();
    let token = env.tenant("alice");
    let mut cfg = audited(&env);
    cfg.heartbeat_timeout = Duration::from_millis(1_500);
    let d = TestDaemon::start(cfg);
    let (short, long) = env.block_on(async {
        // No heartbeats: the host is marked down after 1.5 s.
        let (_h, _cmds) = host(d.addr, "node1:7500", Capacity::new(4, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        let short = within("create", alice.create_lease(&LeaseRequest::new(1, 200)))
            .await
            .expect("granted");
        let long = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        (short.lease.id, long.lease.id)
    });
    let path = audit_path(&env);
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let (text, log) = read_log(&path);
        if log.len() >= 6 {
            break log;
        }
        assert!(Instant::now() < deadline, "timed out; log so far:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    use AuditAction::*;
    assert_eq!(
        actions(&log),
        [
            HostRegistered,
            LeaseGranted,
            LeaseGranted,
            LeaseExpired,
            HostDown,
            LeaseLost
        ]
    );
    let e = |i: usize| &log[i].event;
    assert_eq!(
        (e(3).actor.as_str(), e(3).lease, e(3).host),
        ("alice", Some(short), Some(HostId(1)))
    );
    assert_eq!(
        (e(4).actor.as_str(), e(4).host),
        ("host:1", Some(HostId(1)))
    );
    assert_eq!(e(4).detail.as_deref(), Some("no heartbeat within 1500 ms"));
    assert_eq!(
        (e(5).actor.as_str(), e(5).lease, e(5).detail.as_deref()),
        ("alice", Some(long), Some("host down"))
    );
    d.stop().expect("graceful stop");
}

#[test]
fn a_restarted_daemon_appends_to_its_log() {
    let env = Env::new();
    let token = env.tenant("alice");
    let path = audit_path(&env);
    let d = TestDaemon::start(audited(&env));
    let id: LeaseId = env.block_on(async {
        let _host = host(d.addr, "node1:7500", Capacity::new(4, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted")
            .lease
            .id
    });
    d.stop().expect("graceful stop");
    let (before, first) = read_log(&path);
    assert_eq!(
        actions(&first),
        [AuditAction::HostRegistered, AuditAction::LeaseGranted]
    );

    // Same store, same log.
    let d = TestDaemon::start(audited(&env));
    env.block_on(async {
        let alice = tenant(d.addr, &token).await;
        within("release", alice.release(id))
            .await
            .expect("released");
    });
    d.kill();
    let (after, both) = read_log(&path);
    assert!(after.starts_with(&before), "old lines kept as they were");
    assert_eq!(&both[..2], &first[..]);
    assert_eq!(actions(&both[2..]), [AuditAction::LeaseReleased]);
    assert_eq!(both[2].event.lease, Some(id));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn no_audit_log_by_default() {
    let env = Env::new();
    let cfg = env.config();
    assert!(!cfg.audit.is_enabled());
    let token = env.tenant("alice");
    let d = TestDaemon::start(cfg);
    env.block_on(async {
        let _host = host(d.addr, "node1:7500", Capacity::new(4, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
    });
    d.stop().expect("graceful stop");
    let files: Vec<_> = std::fs::read_dir(env.dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files, ["leases.redb"]);
}
