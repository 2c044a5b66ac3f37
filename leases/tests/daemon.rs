//! The daemon over real TCP: tenants, hosts, operators, restarts, bad peers.

mod util;

use futures::{SinkExt, StreamExt};
use rfx_leases::client::{blocking, AdminClient, HostClient, TenantClient};
use rfx_leases::daemon;
use rfx_leases::proto::{
    Capacity, Event, LeaseId, LeaseRequest, LeaseState, LostReason, UsageReport,
};
use rfx_leases::wire::{
    self, ClientMsg, Command, ErrorCode, Hello, LeaseKey, ServerMsg, TenantRequest,
};
use rfx_leases::DaemonError;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use util::{host, next_command, tenant, within, Env, TestDaemon, KEY};

fn code(r: Result<impl std::fmt::Debug, DaemonError>) -> ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("not a refusal: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

#[test]
fn tenant_lifecycle() {
    let env = Env::new();
    let token = env.tenant("alice");
    let names: Vec<String> = daemon::list_tenants(&env.db())
        .expect("list tenants")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alice"]);
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let (h, mut cmds) = host(d.addr, "node1:7500", Capacity::new(8, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        assert_eq!(alice.tenant().as_str(), "alice");

        let req = LeaseRequest::new(2, 60_000).with_memory(1024);
        let info = within("create", alice.create_lease(&req))
            .await
            .expect("granted");
        assert_eq!(info.host_addr, "node1:7500");
        assert_eq!(info.lease.cores, 2);
        assert_eq!(info.lease.state, LeaseState::Active);
        assert_eq!(info.token.to_hex().len(), 64);
        match next_command(&mut cmds).await {
            Command::Start(s) => {
                assert_eq!(s.lease, info.lease);
                // The host gets no secret: it derives the tenant's token.
                assert_eq!(LeaseKey::from_cluster_key(KEY).token(&s.lease), info.token);
                assert_ne!(
                    LeaseKey::from_cluster_key("other").token(&s.lease),
                    info.token
                );
                let frame = wire::encode(&ServerMsg::Command(Command::Start(s))).expect("encodes");
                let text = String::from_utf8_lossy(&frame);
                assert!(!text.contains(&info.token.to_hex()), "{text}");
            }
            other => panic!("expected a start, got {other:?}"),
        }
        let id = info.lease.id;

        let list = within("list", alice.list()).await.expect("list");
        assert_eq!(list, vec![info.clone()]);
        assert_eq!(within("show", alice.show(id)).await.expect("show"), info);

        let expires = within("renew", alice.renew(id, 1_000))
            .await
            .expect("renew");
        assert_eq!(expires, info.lease.expires_at_ms + 1_000);

        let delta = UsageReport {
            invocations: 5,
            exec_ms: 3,
            ..UsageReport::default()
        };
        within("report", h.report_usage(id, &delta))
            .await
            .expect("usage report");
        let usage = within("usage", alice.usage(id)).await.expect("usage");
        assert_eq!((usage.invocations, usage.exec_ms), (5, 3));

        let fin = within("release", alice.release(id)).await.expect("release");
        assert_eq!(fin.invocations, 5);
        assert_eq!(next_command(&mut cmds).await, Command::Stop { lease: id });
        let shown = within("show", alice.show(id)).await.expect("show");
        assert_eq!(shown.lease.state, LeaseState::Released);
        assert_eq!(
            code(within("renew", alice.renew(id, 1)).await),
            ErrorCode::NotActive
        );
        assert_eq!(
            code(within("release", alice.release(id)).await),
            ErrorCode::NotActive
        );
    });
    d.stop().expect("graceful stop");
}

#[test]
fn wrong_credentials_are_refused() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let forged = format!("alice.{}", "0".repeat(64));
        for bad in [forged.as_str(), "garbage", ""] {
            let err = within("connect", TenantClient::connect(d.addr, bad))
                .await
                .expect_err("refused");
            assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
            assert!(err.to_string().contains("unknown tenant token"), "{err}");
        }
        let cap = Capacity::new(4, 1024);
        let err = within(
            "register",
            HostClient::register(d.addr, "wrong", "n:1", cap),
        )
        .await
        .expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
        assert!(err.to_string().contains("wrong cluster key"), "{err}");
        let admin = within("admin", AdminClient::connect(d.addr, "wrong"))
            .await
            .expect("connects");
        assert_eq!(
            code(within("add", admin.add_tenant("mallory")).await),
            ErrorCode::Unauthorized
        );
        // The right token still works after refusals.
        tenant(d.addr, &token).await;
    });
}

#[test]
fn another_tenants_lease_is_not_found() {
    let env = Env::new();
    let (a, b) = (env.tenant("alice"), env.tenant("bob"));
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let _host = host(d.addr, "node1:7500", Capacity::new(8, 4096)).await;
        let alice = tenant(d.addr, &a).await;
        let bob = tenant(d.addr, &b).await;
        let id = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted")
            .lease
            .id;
        assert_eq!(
            code(within("show", bob.show(id)).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(within("renew", bob.renew(id, 5)).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(within("usage", bob.usage(id)).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(within("release", bob.release(id)).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(within("show", bob.show(LeaseId(999))).await),
            ErrorCode::NotFound
        );
        assert!(within("list", bob.list()).await.expect("list").is_empty());
        // Untouched for its owner.
        let shown = within("show", alice.show(id)).await.expect("show");
        assert_eq!(shown.lease.state, LeaseState::Active);
    });
}

#[test]
fn accelerator_aware_placement() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let (_cpu, mut cpu_cmds) = host(d.addr, "cpu:7500", Capacity::new(16, 65_536)).await;
        let gpu_cap = Capacity::new(8, 32_768).with_accelerators("gpu", 2);
        let (gpu, mut gpu_cmds) = host(d.addr, "gpu:7500", gpu_cap).await;
        let alice = tenant(d.addr, &token).await;

        let req = LeaseRequest::new(2, 60_000).with_accelerators("gpu", 1);
        let first = within("gpu lease", alice.create_lease(&req))
            .await
            .expect("granted");
        let second = within("gpu lease", alice.create_lease(&req))
            .await
            .expect("granted");
        for (info, device) in [(&first, "0"), (&second, "1")] {
            assert_eq!(info.host_addr, "gpu:7500");
            assert_eq!(info.lease.host, gpu.host_id());
            assert_eq!(info.lease.visible_devices("gpu"), device);
            match next_command(&mut gpu_cmds).await {
                Command::Start(s) => {
                    let derived = LeaseKey::from_cluster_key(KEY).token(&s.lease);
                    assert_eq!((s.lease.id, &derived), (info.lease.id, &info.token))
                }
                other => panic!("expected a start, got {other:?}"),
            }
        }
        assert_ne!(first.token, second.token);
        let err = within("third gpu", alice.create_lease(&req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Placement));
        assert!(err.to_string().contains("gpu"), "{err}");

        // CPU-only work goes to the host with the most free cores.
        let cpu = within(
            "cpu lease",
            alice.create_lease(&LeaseRequest::new(4, 60_000)),
        )
        .await
        .expect("granted");
        assert_eq!(cpu.host_addr, "cpu:7500");
        assert!(matches!(
            next_command(&mut cpu_cmds).await,
            Command::Start(_)
        ));

        let bad = LeaseRequest::new(0, 60_000);
        assert_eq!(
            code(within("bad", alice.create_lease(&bad)).await),
            ErrorCode::InvalidArgument
        );

        let admin = within("admin", AdminClient::connect(d.addr, KEY))
            .await
            .expect("admin");
        let hosts = within("hosts", admin.list_hosts()).await.expect("hosts");
        let g = hosts
            .iter()
            .find(|h| h.id == gpu.host_id())
            .expect("gpu host listed");
        assert_eq!(g.free.free_devices("gpu"), 0);
    });
}

#[test]
fn silent_host_is_marked_down_and_tenant_told() {
    let env = Env::new();
    let token = env.tenant("alice");
    let mut cfg = env.config();
    cfg.heartbeat_timeout = Duration::from_millis(300);
    let d = TestDaemon::start(cfg);
    env.block_on(async {
        let (h, mut cmds) = host(d.addr, "node1:7500", Capacity::new(4, 1024)).await;
        assert_eq!(h.heartbeat_timeout(), Duration::from_millis(300));
        assert_eq!(h.heartbeat_interval(), Duration::from_millis(100));
        let beats = h.clone();
        let beating = tokio::spawn(async move { beats.run_heartbeats().await });
        let mut alice = tenant(d.addr, &token).await;
        let id = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted")
            .lease
            .id;
        assert!(matches!(next_command(&mut cmds).await, Command::Start(_)));
        beating.abort();
        // The host stops beating: within 300 ms (plus scheduling) it is down.
        let event = within("lease lost", alice.next_event())
            .await
            .expect("event");
        match event {
            Event::LeaseLost {
                lease,
                host,
                reason,
            } => {
                assert_eq!(
                    (lease, host, reason),
                    (id, h.host_id(), LostReason::HostDown)
                );
            }
            other => panic!("expected a lost lease, got {other:?}"),
        }
        let shown = within("show", alice.show(id)).await.expect("show");
        assert!(matches!(shown.lease.state, LeaseState::Lost { .. }));
        assert_eq!(
            code(within("beat", h.heartbeat()).await),
            ErrorCode::HostDown
        );
        let err = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect_err("no host up");
        assert_eq!(err.code(), Some(ErrorCode::Placement));

        // Registering again brings it back, empty, and heartbeats keep it up.
        assert_eq!(
            within("again", h.register_again())
                .await
                .expect("registers"),
            h.host_id()
        );
        assert_eq!(next_command(&mut cmds).await, Command::Sync(vec![]));
        let beats = h.clone();
        let beating = tokio::spawn(async move { beats.run_heartbeats().await });
        let info = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        assert_eq!(info.lease.host, h.host_id());
        beating.abort();
    });
}

#[test]
fn expiry_and_crash_notify_tenant_and_host() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let (h, mut cmds) = host(d.addr, "node1:7500", Capacity::new(4, 1024)).await;
        let alice = tenant(d.addr, &token).await;
        let mut alice = alice;
        let mut events = alice.take_events().expect("events");
        assert!(alice.take_events().is_none());

        let short = within("create", alice.create_lease(&LeaseRequest::new(1, 200)))
            .await
            .expect("granted");
        assert!(matches!(next_command(&mut cmds).await, Command::Start(_)));
        let id = short.lease.id;
        assert_eq!(
            within("expiry", events.recv()).await,
            Some(Event::LeaseExpired { lease: id })
        );
        assert_eq!(next_command(&mut cmds).await, Command::Stop { lease: id });

        let long = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        assert!(matches!(next_command(&mut cmds).await, Command::Start(_)));
        within("crash", h.report_crash(long.lease.id, "killed by signal 9"))
            .await
            .expect("crash reported");
        match within("lost", events.recv()).await {
            Some(Event::LeaseLost {
                lease,
                reason: LostReason::ExecutorCrashed { reason },
                ..
            }) => {
                assert_eq!(lease, long.lease.id);
                assert_eq!(reason, "killed by signal 9");
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        assert_eq!(
            code(within("crash twice", h.report_crash(long.lease.id, "x")).await),
            ErrorCode::NotActive
        );
    });
}

/// Three one-core leases, the one at `release` released; their ids.
async fn three_leases_one_released(alice: &TenantClient, release: usize) -> Vec<LeaseId> {
    let mut ids = vec![];
    for _ in 0..3 {
        let info = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        ids.push(info.lease.id);
    }
    within("release", alice.release(ids[release]))
        .await
        .expect("released");
    ids
}

#[test]
fn restart_keeps_every_granted_lease() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    let before = env.block_on(async {
        let _host = host(d.addr, "node1:7500", Capacity::new(8, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        three_leases_one_released(&alice, 1).await;
        within("list", alice.list()).await.expect("list")
    });
    d.kill();
    // No lease secret at rest: neither in hex nor as bytes.
    let file = std::fs::read(env.db()).expect("reads the store");
    for i in &before {
        let hex = i.token.to_hex();
        assert!(
            !file.windows(64).any(|w| w == hex.as_bytes()),
            "hex token stored"
        );
        assert!(
            !file.windows(32).any(|w| w == i.token.as_bytes()),
            "token stored"
        );
    }

    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let alice = tenant(d.addr, &token).await;
        let after = within("list", alice.list()).await.expect("list");
        // Tokens included: derivation is stable across restarts.
        assert_eq!(after, before);
        for i in &after {
            assert_eq!(i.token, LeaseKey::from_cluster_key(KEY).token(&i.lease));
        }
        // The host comes back and is told to run exactly the active ones.
        let (_h, mut cmds) = within(
            "register",
            HostClient::register(d.addr, KEY, "node1:7500", Capacity::new(8, 4096)),
        )
        .await
        .expect("registers");
        match next_command(&mut cmds).await {
            Command::Sync(run) => {
                let active: Vec<_> = before.iter().filter(|i| i.lease.is_active()).collect();
                assert_eq!(run.len(), active.len());
                for (s, i) in run.iter().zip(active) {
                    let derived = LeaseKey::from_cluster_key(KEY).token(&s.lease);
                    assert_eq!((&s.lease, &derived), (&i.lease, &i.token));
                }
            }
            other => panic!("expected a sync, got {other:?}"),
        }
        let next = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        assert_eq!(next.lease.id, LeaseId(4), "lease ids are never reused");
    });
}

/// Rows in the store's lease log (the daemon stopped).
fn log_len(env: &Env) -> u64 {
    use redb::{ReadableTableMetadata, TableDefinition};
    let db = redb::Database::open(env.db()).expect("opens the store");
    let tx = db.begin_read().expect("read tx");
    let ops: TableDefinition<u64, &[u8]> = TableDefinition::new("ops");
    tx.open_table(ops).expect("ops table").len().expect("len")
}

#[test]
fn a_long_log_is_replaced_by_a_checkpoint() {
    let env = Env::new();
    let token = env.tenant("alice");
    let mut cfg = env.config();
    cfg.compact_after_ops = 20;
    let d = TestDaemon::start(cfg.clone());
    let before = env.block_on(async {
        let _host = host(d.addr, "node1:7500", Capacity::new(8, 4096)).await;
        let alice = tenant(d.addr, &token).await;
        let ids = three_leases_one_released(&alice, 2).await;
        // Every renewal is an op: 200 of them would be the log's length.
        for _ in 0..200 {
            within("renew", alice.renew(ids[0], 10))
                .await
                .expect("renewed");
        }
        within("list", alice.list()).await.expect("list")
    });
    d.stop().expect("clean stop");
    let len = log_len(&env);
    assert!(len <= 40, "the log holds {len} ops after 205 changes");

    // The checkpoint brings back the same leases, and ids go on.
    let d = TestDaemon::start(cfg);
    env.block_on(async {
        let alice = tenant(d.addr, &token).await;
        let after = within("list", alice.list()).await.expect("list");
        assert_eq!(after, before);
        let _host = host(d.addr, "node1:7500", Capacity::new(8, 4096)).await;
        let next = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
            .await
            .expect("granted");
        assert_eq!(next.lease.id, LeaseId(4), "lease ids are never reused");
    });
}

/// Opens a raw connection.
async fn raw(
    addr: std::net::SocketAddr,
) -> Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec> {
    let s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connects");
    Framed::new(s, wire::reply_codec())
}

/// The next frame as a server message, or `None` at EOF.
async fn read(
    f: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Option<ServerMsg> {
    let frame = within("read", f.next()).await?.ok()?;
    Some(wire::decode_server(&frame).expect("daemon frames decode"))
}

fn refused_with(msg: Option<ServerMsg>, code: ErrorCode) -> String {
    match msg {
        Some(ServerMsg::Error(e)) if e.code == code && e.id.is_none() => e.message,
        other => panic!("expected a {code} error, got {other:?}"),
    }
}

#[test]
fn bad_peers_are_refused_and_others_served() {
    let env = Env::new();
    let token = env.tenant("alice");
    let mut cfg = env.config();
    cfg.hello_timeout = Duration::from_millis(300);
    let d = TestDaemon::start(cfg);
    env.block_on(async {
        let alice = tenant(d.addr, &token).await;
        let hello = |version| {
            wire::encode(&ClientMsg::Hello(Hello {
                version,
                agent: "test".into(),
            }))
            .expect("encodes")
        };

        // Another protocol version: a clear error, then EOF.
        let mut f = raw(d.addr).await;
        f.send(hello(99)).await.expect("sends");
        let msg = refused_with(read(&mut f).await, ErrorCode::VersionMismatch);
        let ours = format!("version {}", wire::PROTOCOL_VERSION);
        assert!(msg.contains("99") && msg.contains(&ours), "{msg}");
        assert_eq!(read(&mut f).await, None);

        // Version 1 (lease secrets sent to hosts) is gone too.
        let mut f = raw(d.addr).await;
        f.send(hello(1)).await.expect("sends");
        refused_with(read(&mut f).await, ErrorCode::VersionMismatch);

        // Garbage as the first frame.
        let mut f = raw(d.addr).await;
        f.send(bytes::Bytes::from_static(b"\x00\xffnot json"))
            .await
            .expect("sends");
        refused_with(read(&mut f).await, ErrorCode::Malformed);
        assert_eq!(read(&mut f).await, None);

        // A request before the hello.
        let mut f = raw(d.addr).await;
        let req = ClientMsg::Tenant {
            id: 1,
            token: token.clone(),
            req: TenantRequest::ListLeases,
        };
        f.send(wire::encode(&req).expect("encodes"))
            .await
            .expect("sends");
        refused_with(read(&mut f).await, ErrorCode::Protocol);

        // A good hello, a good request, then garbage.
        let mut f = raw(d.addr).await;
        f.send(hello(wire::PROTOCOL_VERSION)).await.expect("sends");
        assert_eq!(
            read(&mut f).await,
            Some(ServerMsg::Welcome {
                version: wire::PROTOCOL_VERSION
            })
        );
        f.send(wire::encode(&req).expect("encodes"))
            .await
            .expect("sends");
        assert!(matches!(
            read(&mut f).await,
            Some(ServerMsg::Reply { id: 1, .. })
        ));
        f.send(bytes::Bytes::from_static(b"{\"Tenant\":{\"id\":"))
            .await
            .expect("sends");
        let msg = refused_with(read(&mut f).await, ErrorCode::Malformed);
        assert!(msg.contains("malformed"), "{msg}");
        assert_eq!(read(&mut f).await, None);

        // A second hello.
        let mut f = raw(d.addr).await;
        f.send(hello(wire::PROTOCOL_VERSION)).await.expect("sends");
        assert!(matches!(
            read(&mut f).await,
            Some(ServerMsg::Welcome { .. })
        ));
        f.send(hello(wire::PROTOCOL_VERSION)).await.expect("sends");
        refused_with(read(&mut f).await, ErrorCode::Protocol);
        assert_eq!(read(&mut f).await, None);

        // A frame header announcing more than the limit.
        let mut s = within("connect", TcpStream::connect(d.addr))
            .await
            .expect("connects");
        tokio::io::AsyncWriteExt::write_all(&mut s, &(64u32 << 20).to_be_bytes())
            .await
            .expect("writes");
        let mut f = Framed::new(s, wire::reply_codec());
        let msg = refused_with(read(&mut f).await, ErrorCode::Malformed);
        assert!(msg.contains("frame"), "{msg}");

        // Silence: closed after the hello timeout.
        let mut f = raw(d.addr).await;
        refused_with(read(&mut f).await, ErrorCode::Protocol);

        // The well-behaved client never noticed.
        assert!(within("list", alice.list())
            .await
            .expect("still served")
            .is_empty());
        tenant(d.addr, &token).await;
    });
}

#[test]
fn operators_add_tenants_through_the_running_daemon() {
    let env = Env::new();
    env.tenant("alice");
    let d = TestDaemon::start(env.config());
    match daemon::add_tenant(&env.db(), "bob") {
        Err(e @ DaemonError::StoreLocked { .. }) => {
            assert!(e.to_string().contains("lease manager running"), "{e}");
        }
        other => panic!("expected a locked store, got {other:?}"),
    }
    env.block_on(async {
        let admin = within("admin", AdminClient::connect(d.addr, KEY))
            .await
            .expect("admin");
        let token = within("add", admin.add_tenant("carol"))
            .await
            .expect("added");
        assert!(token.starts_with("carol."));
        let carol = tenant(d.addr, &token).await;
        assert_eq!(carol.tenant().as_str(), "carol");
        assert_eq!(
            code(within("dup", admin.add_tenant("carol")).await),
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            code(within("bad", admin.add_tenant("no spaces")).await),
            ErrorCode::InvalidArgument
        );
        let names: Vec<String> = within("list", admin.list_tenants())
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["alice", "carol"]);
    });
    d.stop().expect("graceful stop");
    // Persisted, and the store is free again.
    let names: Vec<String> = daemon::list_tenants(&env.db())
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alice", "carol"]);
    assert!(matches!(
        daemon::add_tenant(&env.db(), "alice"),
        Err(DaemonError::TenantExists(_))
    ));
}

#[test]
fn blocking_clients_work_from_plain_threads() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    let addr = d.addr.to_string();
    let host = env.block_on(host(d.addr, "node1:7500", Capacity::new(2, 1024)));
    std::thread::spawn(move || {
        let admin = blocking::AdminClient::connect(&addr, KEY).expect("admin");
        assert_eq!(admin.list_hosts().expect("hosts").len(), 1);
        let mut alice = blocking::TenantClient::connect(&addr, &token).expect("connects");
        alice.set_timeout(util::WAIT);
        let info = alice
            .create_lease(&LeaseRequest::new(1, 60_000))
            .expect("granted");
        assert_eq!(alice.list().expect("list").len(), 1);
        alice.release(info.lease.id).expect("released");
        assert_eq!(alice.next_event(Duration::from_millis(10)), None);
        let err = blocking::TenantClient::connect(&addr, "alice.x").expect_err("refused");
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    })
    .join()
    .expect("blocking client thread");
    drop(host);
}

#[test]
fn daemon_refuses_an_empty_cluster_key() {
    let env = Env::new();
    let mut cfg = env.config();
    cfg.cluster_key = String::new();
    let err = env
        .block_on(daemon::Daemon::bind(cfg))
        .expect_err("refused");
    assert!(matches!(err, DaemonError::Config(_)), "{err}");
}

/// The variable that turns [`child_daemon`] into a daemon process.
const CHILD_DB: &str = "RFX_LEASES_TEST_CHILD_DB";

/// Not a test by itself: the daemon process that
/// `kill_9_loses_no_acknowledged_lease` starts (by running this test binary
/// again) and kills with SIGKILL.
#[test]
#[ignore = "child process of kill_9_loses_no_acknowledged_lease"]
fn child_daemon() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut cfg = daemon::DaemonConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            db.into(),
            KEY.to_owned(),
        );
        cfg.heartbeat_timeout = Duration::from_secs(60);
        let d = daemon::Daemon::bind(cfg).await.expect("binds");
        println!("\nADDR {}", d.local_addr().expect("addr"));
        d.run(std::future::pending::<()>()).await.expect("serves");
    });
}

/// Kills the child on drop, whatever the test did.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_lease() {
    use std::io::BufRead;
    let env = Env::new();
    let token = env.tenant("alice");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Child(
        std::process::Command::new(exe)
            .args(["child_daemon", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DB, env.db())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("child starts"),
    );
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("ADDR ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr: std::net::SocketAddr = rx
        .recv_timeout(util::WAIT)
        .expect("child daemon listens")
        .parse()
        .expect("an address");

    let acked = env.block_on(async {
        let _host = host(addr, "node1:7500", Capacity::new(16, 4096)).await;
        let alice = tenant(addr, &token).await;
        for i in 0..6 {
            let info = within("create", alice.create_lease(&LeaseRequest::new(1, 60_000)))
                .await
                .expect("granted");
            if i == 2 {
                within("renew", alice.renew(info.lease.id, 5_000))
                    .await
                    .expect("renewed");
            }
            if i == 4 {
                within("release", alice.release(info.lease.id))
                    .await
                    .expect("released");
            }
        }
        within("list", alice.list()).await.expect("list")
    });
    // SIGKILL right after the last acknowledgement: no shutdown code runs.
    child.0.kill().expect("kill -9");
    child.0.wait().expect("reaped");

    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let alice = tenant(d.addr, &token).await;
        let after = within("list", alice.list()).await.expect("list");
        assert_eq!(after, acked);
        assert_eq!(after.iter().filter(|i| i.lease.is_active()).count(), 5);
    });
}

/// A queue served onto one host in one input reaches it as one `Sync`, and
/// neither the host's nor the tenant's connection overflows.
#[test]
fn a_served_queue_reaches_its_host_as_one_sync() {
    let env = Env::new();
    let token = env.tenant("alice");
    let d = TestDaemon::start(env.config());
    env.block_on(async {
        let (h, mut cmds) = host(d.addr, "node1:7500", Capacity::new(500, 1 << 20)).await;
        let alice = tenant(d.addr, &token).await;
        let all = within("fill", alice.create_lease(&LeaseRequest::new(500, 60_000)))
            .await
            .expect("granted");
        assert!(matches!(next_command(&mut cmds).await, Command::Start(_)));
        for _ in 0..500 {
            let t = within(
                "queue",
                alice.queue_lease(&LeaseRequest::new(1, 60_000), 1, 60_000),
            )
            .await
            .expect("queued");
            assert!(t.ticket.is_waiting());
        }
        within("release", alice.release(all.lease.id))
            .await
            .expect("released");
        // One Sync of the 500 new leases (the released one is not in it).
        match next_command(&mut cmds).await {
            Command::Sync(leases) => assert_eq!(leases.len(), 500),
            other => panic!("expected one sync, got {other:?}"),
        }
        // Both connections still work.
        within("heartbeat", h.heartbeat())
            .await
            .expect("host connected");
        let tickets = within("tickets", alice.tickets())
            .await
            .expect("tenant connected");
        assert_eq!(
            tickets.iter().filter(|t| !t.ticket.is_waiting()).count(),
            500
        );
    });
}
