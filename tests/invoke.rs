//! End to end: a real `rfx executor` process serving invocations from the
//! client library and from `rfx invoke`, over shm and tcp, with the bad
//! inputs a tenant can throw at it.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use rfx::client::{InvokeError, Invoker, InvokerConfig};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, TransportChoice, TransportKind};
use support::*;

const TOKEN: &str = "lease-token-for-tests";

fn fabric(kind: TransportKind) -> Fabric {
    Fabric::open(Config {
        transport: TransportChoice::Forced(kind),
        ..Config::default()
    })
    .unwrap()
}

fn shipped(path: &std::path::Path) -> LibrarySource {
    LibrarySource::Bytes {
        name: path.display().to_string(),
        bytes: std::fs::read(path).unwrap(),
    }
}

/// An invoker holding the lease's token, shipping the Rust example
/// library and asking for `fns`.
fn connect_rust(
    f: &Fabric,
    addr: std::net::SocketAddr,
    fns: &[&str],
) -> Result<Invoker, InvokeError> {
    connect_rust_with(f, addr, fns, cfg())
}

/// [`connect_rust`] with the client configuration `config`.
fn connect_rust_with(
    f: &Fabric,
    addr: std::net::SocketAddr,
    fns: &[&str],
    config: InvokerConfig,
) -> Result<Invoker, InvokeError> {
    Invoker::connect(
        f,
        addr,
        TOKEN.as_bytes(),
        shipped(&examples().rust),
        fns,
        config,
    )
}

fn cfg() -> InvokerConfig {
    InvokerConfig {
        timeout: Duration::from_secs(20),
        max_output: 64 << 10,
        ..InvokerConfig::default()
    }
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn invocations_work_over(kind: TransportKind) {
    let ex = examples();
    let (_exec, addr) = executor(
        TOKEN,
        kind.name(),
        &["--connections", "2", "--hot-timeout-ms", "5"],
    );
    let f = fabric(kind);
    let fns = ["echo", "sum_f64", "matmul", "noop", "panics", "overclaim"];
    let mut inv = connect_rust(&f, addr, &fns).unwrap();
    assert_eq!(inv.transport(), kind);
    assert_eq!(inv.invoke("echo", b"hello rfx").unwrap(), b"hello rfx");
    // An empty input is a zero-byte write: it runs, and echoes nothing.
    assert_eq!(inv.invoke("echo", b"").unwrap(), b"");
    // Between results of other sizes in the same slots.
    let t1 = inv.submit("echo", b"").unwrap();
    let t2 = inv.submit("echo", b"x").unwrap();
    let t3 = inv.submit("echo", b"").unwrap();
    assert_eq!(inv.wait(t1).unwrap(), b"");
    assert_eq!(inv.wait(t2).unwrap(), b"x");
    assert_eq!(inv.wait(t3).unwrap(), b"");
    assert_eq!(inv.invoke("echo", b"").unwrap(), b"");
    assert_eq!(inv.invoke("noop", b"ignored").unwrap(), b"");
    let sum = inv.invoke("sum_f64", &f64s(&[1.5, 2.5, 3.0])).unwrap();
    assert_eq!(f64::from_le_bytes(sum.try_into().unwrap()), 7.0);
    // 2x2 matmul: [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]].
    let mut m = 2u32.to_le_bytes().to_vec();
    m.extend(f64s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]));
    assert_eq!(
        inv.invoke("matmul", &m).unwrap(),
        f64s(&[19.0, 22.0, 43.0, 50.0])
    );
    // Failures are per invocation, with the function's reason; the
    // connection goes on.
    assert!(matches!(
        inv.invoke("panics", b""),
        Err(InvokeError::FunctionFailed { reason, .. }) if reason == "this function panics on purpose"
    ));
    assert!(matches!(
        inv.invoke("sum_f64", b"abc"),
        Err(InvokeError::FunctionFailed { reason, .. }) if reason == "input is not a whole number of f64"
    ));
    assert!(matches!(
        inv.invoke("overclaim", b""),
        Err(InvokeError::OutputTooLarge { .. })
    ));
    assert!(matches!(
        inv.invoke("nonexistent", b""),
        Err(InvokeError::UnknownFunction(_))
    ));
    let big = vec![0u8; inv.max_input() + 1];
    assert!(matches!(
        inv.invoke("echo", &big),
        Err(InvokeError::PayloadTooLarge { .. })
    ));
    let max = vec![7u8; inv.max_inline_input()];
    assert_eq!(inv.invoke("echo", &max).unwrap(), max);
    // Pipelined: more invocations than slots, results in order.
    let inputs: Vec<Vec<u8>> = (0..200u32)
        .map(|i| i.to_le_bytes().repeat(i as usize % 7 + 1))
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
    let outs = inv.batch("echo", &refs).unwrap();
    for (o, i) in outs.into_iter().zip(&inputs) {
        assert_eq!(&o.unwrap(), i);
    }
    drop(inv);
    // A second client, the C library named by path on the executor's host.
    let lib = LibrarySource::Path(ex.c.display().to_string());
    let mut inv = Invoker::connect(
        &f,
        addr,
        TOKEN.as_bytes(),
        lib,
        &["echo_c", "sum_u32"],
        cfg(),
    )
    .unwrap();
    assert_eq!(inv.invoke("echo_c", b"from C").unwrap(), b"from C");
    assert_eq!(inv.invoke("echo_c", b"").unwrap(), b"");
    let s = inv
        .invoke(
            "sum_u32",
            &[1u32, 2, 3, 4]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert_eq!(u32::from_le_bytes(s.try_into().unwrap()), 10);
}

#[test]
fn invocations_work_over_shm() {
    invocations_work_over(TransportKind::Shm)
}

#[test]
fn invocations_work_over_tcp() {
    invocations_work_over(TransportKind::Tcp)
}

/// Invocation ids are u16 and name their slot: a ticket left unredeemed
/// keeps its id (and its result) while the one slot serves 70 000 later
/// invocations, past a full turn of the ids.
#[test]
fn an_unredeemed_ticket_keeps_its_id_across_a_turn_of_the_ids() {
    let (_exec, addr) = executor(TOKEN, "shm", &["--hot-timeout-ms", "5"]);
    let f = fabric(TransportKind::Shm);
    let mut inv =
        connect_rust_with(&f, addr, &["echo"], InvokerConfig { depth: 1, ..cfg() }).unwrap();
    assert_eq!(inv.depth(), 1);
    let old = inv.submit("echo", b"old").unwrap();
    for i in 0..70_000u32 {
        let input = i.to_le_bytes();
        assert_eq!(inv.invoke("echo", &input).unwrap(), input, "invocation {i}");
    }
    assert_eq!(inv.pending(), 1);
    assert_eq!(inv.wait(old).unwrap(), b"old");
    assert_eq!(inv.pending(), 0);
}

/// An executor is the tenant's code: one that answers with forged
/// invocation ids (never submitted, or naming a busy slot with another
/// id) gets a protocol error from the client, never a panic or a result
/// taken for another invocation's.
#[test]
fn results_with_forged_ids_are_refused() {
    use rfx::executors::session::{self, ExecutorHello, Setup, SetupReply};
    use rfx::fabric::invocation::{pack_imm, unpack_imm, Status};
    use rfx::fabric::{Completion, ConnectOptions, PollMode};

    // Another id on the same (busy) slot; an id on a slot with nothing in flight.
    for forge in [|id: u16| id ^ 0x8000, |id: u16| id.wrapping_add(1)] {
        let f = fabric(TransportKind::Shm);
        let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let inbox = f.register(4 * 64).unwrap();
            let hello = ExecutorHello {
                slots: 4,
                slot_size: 64,
                worker: 0,
            };
            let opts = ConnectOptions::new()
                .expose(&inbox)
                .user_data(session::encode(&hello))
                .secret(TOKEN.as_bytes());
            let mut ep = listener.accept(&opts).unwrap();
            let wait = Duration::from_secs(20);
            let Completion::Recv(m) = ep.wait(PollMode::Warm, wait).unwrap() else {
                panic!("no set-up")
            };
            let _: Setup = session::decode(&m).unwrap();
            ep.send(&session::encode(&SetupReply::Ready)).unwrap();
            let results = ep.peer_buffers()[0];
            let Completion::Write(w) = ep.wait(PollMode::Warm, wait).unwrap() else {
                panic!("no invocation")
            };
            let (id, _) = unpack_imm(w.imm);
            let forged = pack_imm(forge(id), Status::Ok as u16);
            ep.write_imm(b"forged", &results, 0, forged).unwrap();
            // Held open until the client has judged the result.
            let _ = ep.wait(PollMode::Warm, wait);
        });
        let shm = fabric(TransportKind::Shm);
        let config = InvokerConfig { depth: 4, ..cfg() };
        let mut inv = connect_rust_with(&shm, addr, &["echo"], config).unwrap();
        let r = inv.invoke("echo", b"real");
        assert!(
            matches!(&r, Err(InvokeError::Protocol(why)) if why.contains("unknown invocation")),
            "{r:?}"
        );
        drop(inv);
        fake.join().unwrap();
    }
}

#[test]
fn wrong_token_and_bad_libraries_are_refused() {
    let ex = examples();
    let (mut exec, addr) = executor(TOKEN, "auto", &["--connections", "4"]);
    let f = fabric(TransportKind::Shm);
    let r = Invoker::connect(
        &f,
        addr,
        b"someone-else",
        shipped(&ex.rust),
        &["echo"],
        cfg(),
    );
    // The token is the handshake's shared secret: a wrong one fails the
    // executor's challenge-response.
    match r {
        Err(InvokeError::Fabric(rfx::fabric::FabricError::Rejected(why))) => {
            assert!(why.starts_with("authentication failed"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let junk = LibrarySource::Bytes {
        name: "junk".into(),
        bytes: b"not an ELF file at all".to_vec(),
    };
    let r = Invoker::connect(&f, addr, TOKEN.as_bytes(), junk, &["echo"], cfg());
    assert!(
        matches!(&r, Err(InvokeError::SetupFailed(why)) if why.contains("not a shared library")),
        "{r:?}"
    );
    let r = connect_rust(&f, addr, &["no_such_function"]);
    assert!(
        matches!(&r, Err(InvokeError::SetupFailed(why)) if why.contains("no_such_function")),
        "{r:?}"
    );
    // The executor survived all of that and still serves.
    let mut inv = connect_rust(&f, addr, &["echo"]).unwrap();
    assert_eq!(inv.invoke("echo", b"still here").unwrap(), b"still here");
    drop(inv);
    let status = exec
        .wait_timeout(Duration::from_secs(20))
        .expect("executor exits after its connections");
    assert!(status.success());
}

/// A second client finds the one worker busy, but only if it holds the
/// lease's token: a stranger learns nothing but "authentication failed".
#[test]
fn busy_is_said_only_to_the_lease_holder() {
    let ex = examples();
    let (_exec, addr) = executor(TOKEN, "tcp", &["--workers", "1", "--connections", "3"]);
    let f = fabric(TransportKind::Tcp);
    let mut first = connect_rust(&f, addr, &["echo"]).unwrap();
    let refusal =
        |token: &[u8]| match Invoker::connect(&f, addr, token, shipped(&ex.rust), &["echo"], cfg())
        {
            Err(InvokeError::Fabric(rfx::fabric::FabricError::Rejected(why))) => why,
            other => panic!("{other:?}"),
        };
    let why = refusal(TOKEN.as_bytes());
    assert!(why.contains("busy"), "{why}");
    let why = refusal(b"someone-else");
    assert!(why.starts_with("authentication failed"), "{why}");
    assert_eq!(first.invoke("echo", b"still mine").unwrap(), b"still mine");
}

#[test]
fn crashing_function_is_an_error_not_a_hang() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let (mut exec, addr) = executor(TOKEN, kind.name(), &[]);
        let f = fabric(kind);
        let mut inv = connect_rust(&f, addr, &["crash", "echo"]).unwrap();
        let r = inv.invoke("crash", b"");
        assert!(
            matches!(r, Err(InvokeError::ExecutorGone(_))),
            "{kind}: {r:?}"
        );
        let status = exec
            .wait_timeout(Duration::from_secs(10))
            .expect("the executor process died");
        assert!(!status.success());
        // Later calls fail the same way, at once.
        assert!(matches!(
            inv.invoke("echo", b"x"),
            Err(InvokeError::ExecutorGone(_))
        ));
    }
}

#[test]
fn rfx_invoke_cli() {
    let ex = examples();
    let (_exec, addr) = executor(TOKEN, "auto", &["--connections", "3"]);
    let input = std::env::temp_dir().join(format!("rfx-invoke-input-{}", std::process::id()));
    std::fs::write(&input, f64s(&[0.5, 0.25])).unwrap();
    let out = Command::new(RFX)
        .args([
            "invoke",
            "--executor",
            &addr.to_string(),
            "--function",
            "sum_f64",
            "--lib",
        ])
        .arg(&ex.rust)
        .arg("--input")
        .arg(&input)
        .env("RFX_LEASE_TOKEN", TOKEN)
        .output()
        .unwrap();
    std::fs::remove_file(&input).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f64::from_le_bytes(out.stdout.try_into().unwrap()), 0.75);
    let out = Command::new(RFX)
        .args([
            "invoke",
            "--executor",
            &addr.to_string(),
            "--function",
            "nope",
            "--lib",
        ])
        .arg(&ex.rust)
        .env("RFX_LEASE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = Command::new(RFX)
        .args([
            "invoke",
            "--executor",
            &addr.to_string(),
            "--function",
            "echo",
            "--lib",
        ])
        .arg(&ex.rust)
        .env("RFX_LEASE_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authentication failed"), "{err}");
}

#[test]
fn async_invocations_sleep_in_the_reactor() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let (_exec, addr) = executor(
            TOKEN,
            kind.name(),
            &["--connections", "1", "--hot-timeout-ms", "0"],
        );
        let f = fabric(kind);
        let mut inv = connect_rust(&f, addr, &["echo", "panics"]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..200u32 {
                let input = i.to_le_bytes().repeat(i as usize % 5 + 1);
                assert_eq!(
                    inv.invoke_async("echo", &input).await.unwrap(),
                    input,
                    "{kind}"
                );
            }
            assert!(matches!(
                inv.invoke_async("panics", b"").await,
                Err(InvokeError::FunctionFailed { .. })
            ));
            // Other tasks run while an invocation is on its way.
            let other = tokio::spawn(async { 42 });
            assert_eq!(inv.invoke_async("echo", b"x").await.unwrap(), b"x");
            assert_eq!(other.await.unwrap(), 42);
        });
        // Outside a runtime it is an error, not a panic.
        let r = futures_lite_block_on(inv.invoke_async("echo", b"no runtime"));
        assert!(matches!(r, Err(InvokeError::Fabric(_))), "{r:?}");
    }
}

/// Polls a future to completion on this thread with no runtime around.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
