//! End to end: invocations whose input is larger than an executor slot
//! travel by one-sided read (issue 6). A real `rfx executor` process reads
//! them from the client's input region over tcp and shm; pipelined with
//! small ones; refused by the client above its limit (nothing sent) and by
//! an executor above its own bound (error status, the executor goes on);
//! forged descriptors from a hand-rolled client get an error status too.
//! The same hand-rolled client checks the header-free wire format: a bad
//! result geometry is refused at set-up, and writes outside the slots or
//! the declared result buffers are dropped while the worker goes on.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use rfx::client::{InvokeError, Invoker, InvokerConfig, Ticket};
use rfx::executors::executor::{ExecutorUsage, MAX_INPUT_ENV};
use rfx::executors::session::{
    self, ExecutorHello, LibrarySource, ResultGeometry, Setup, SetupReply,
};
use rfx::fabric::invocation::{self, FunctionField, InputDescriptor, Status};
use rfx::fabric::{
    Completion, Config, ConnectOptions, Fabric, PollMode, TransportChoice, TransportKind,
};
use support::*;

const TOKEN: &str = "lease-token-for-large-inputs";
const MIB: usize = 1 << 20;
/// Outputs as large as the largest echo.
const MAX_OUTPUT: usize = 8 * MIB + 64;

fn fabric(kind: TransportKind) -> Fabric {
    Fabric::open(Config {
        transport: TransportChoice::Forced(kind),
        ..Config::default()
    })
    .unwrap()
}

fn shipped() -> LibrarySource {
    let path = &examples().rust;
    LibrarySource::Bytes {
        name: path.display().to_string(),
        bytes: std::fs::read(path).unwrap(),
    }
}

fn cfg(mode: PollMode) -> InvokerConfig {
    InvokerConfig {
        depth: 4,
        max_output: MAX_OUTPUT,
        timeout: Duration::from_secs(30),
        mode,
        ..InvokerConfig::default()
    }
}

/// `len` bytes that differ from one input to the next.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// `rfx executor` with outputs as large as [`MAX_OUTPUT`], `env` set.
fn exec(
    kind: TransportKind,
    connections: usize,
    env: &[(&str, &str)],
) -> (Proc, std::net::SocketAddr) {
    let mut cmd = Command::new(RFX);
    cmd.args([
        "--transport",
        kind.name(),
        "executor",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(["--connections", &connections.to_string()])
    .args(["--max-output", &MAX_OUTPUT.to_string()])
    .args(["--hot-timeout-ms", "5"])
    .env("RFX_LEASE_TOKEN", TOKEN)
    .env_remove(MAX_INPUT_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (p, addr) = spawn_until(cmd, "rfx executor: listening on ");
    (p, addr.parse().unwrap())
}

/// Waits for the executor to end (its connections are done) and returns
/// the usage it printed last.
fn usage_at_exit(mut p: Proc) -> ExecutorUsage {
    let status = p
        .wait_timeout(Duration::from_secs(20))
        .expect("executor exits after its connections");
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let line = out.lines().last().expect("a usage line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// A connected invoker for `functions`, shipping the example library.
fn connect(
    kind: TransportKind,
    addr: std::net::SocketAddr,
    functions: &[&str],
    cfg: InvokerConfig,
) -> Invoker {
    Invoker::connect(
        &fabric(kind),
        addr,
        TOKEN.as_bytes(),
        shipped(),
        functions,
        cfg,
    )
    .unwrap()
}

fn large_echo_over(kind: TransportKind, mode: PollMode) {
    let (exec, addr) = exec(kind, 1, &[]);
    let mut inv = connect(kind, addr, &["echo", "noop"], cfg(mode));
    assert_eq!(inv.max_input(), 16 * MIB);
    let inline = inv.max_inline_input();
    assert!(inline < MIB, "{inline}");
    let mut n = 0u64;
    // Both sides of the slot boundary, then the sizes of the issue.
    for (i, len) in [inline, inline + 1, MIB + 7, 8 * MIB]
        .into_iter()
        .enumerate()
    {
        let input = pattern(len, i as u8);
        let out = inv.invoke("echo", &input).unwrap();
        assert!(out == input, "{kind} {mode:?}: echo of {len} B differs");
        n += 1;
    }
    // The region is reused: a second large input in a row.
    assert_eq!(inv.invoke("noop", &pattern(3 * MIB, 9)).unwrap(), b"");
    n += 1;
    // A pipelined mix, depth 4: large inputs wait for the region, small
    // ones pipeline around them; every ticket gets its own output.
    let inputs: Vec<Vec<u8>> = (0..24u8)
        .map(|i| match i % 4 {
            0 => pattern(MIB + usize::from(i), i),
            2 => pattern(2 * MIB + 3, i),
            _ => pattern(usize::from(i) * 13 + 1, i),
        })
        .collect();
    let tickets: Vec<Ticket> = inputs
        .iter()
        .map(|input| inv.submit("echo", input).unwrap())
        .collect();
    for (t, input) in tickets.into_iter().zip(&inputs) {
        assert!(
            inv.wait(t).unwrap() == *input,
            "{kind}: pipelined echo differs"
        );
    }
    n += inputs.len() as u64;
    // And through `batch`, which keeps a window of depth in flight.
    let refs: Vec<&[u8]> = inputs.iter().rev().map(Vec::as_slice).collect();
    let outs = inv.batch("echo", &refs).unwrap();
    for (o, i) in outs.into_iter().zip(&refs) {
        assert!(o.unwrap() == *i, "{kind}: batched echo differs");
    }
    n += inputs.len() as u64;
    drop(inv);
    let u = usage_at_exit(exec);
    assert_eq!((u.invocations, u.failed), (n, 0), "{u:?}");
    assert!(u.bytes_in > 30 * MIB as u64, "{u:?}");
}

#[test]
fn large_echo_over_tcp() {
    large_echo_over(TransportKind::Tcp, PollMode::Hot);
}

#[test]
fn large_echo_over_shm() {
    large_echo_over(TransportKind::Shm, PollMode::Hot);
}

/// Warm waits sleep on the endpoint's fd: on tcp that fd must still wake
/// the client to serve the executor's read.
#[test]
fn large_echo_over_tcp_warm() {
    large_echo_over(TransportKind::Tcp, PollMode::Warm);
}

/// `invoke_async` sleeps in the tokio reactor: the executor's read must
/// wake it (tcp) and be served.
#[test]
fn large_invoke_async() {
    for kind in [TransportKind::Tcp, TransportKind::Shm] {
        let (exec, addr) = exec(kind, 1, &[]);
        let mut inv = connect(kind, addr, &["echo"], cfg(PollMode::Warm));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..4u8 {
                let input = pattern(MIB + usize::from(i) * 4099, i);
                let out = inv.invoke_async("echo", &input).await.unwrap();
                assert!(out == input, "{kind}: async echo differs");
            }
        });
        drop(inv);
        let u = usage_at_exit(exec);
        assert_eq!((u.invocations, u.failed), (4, 0), "{u:?}");
    }
}

#[test]
fn inputs_above_the_client_limit_are_refused_with_nothing_sent() {
    let (exec, addr) = exec(TransportKind::Tcp, 2, &[]);
    let small = InvokerConfig {
        max_input: 2 * MIB,
        ..cfg(PollMode::Hot)
    };
    let mut inv = connect(TransportKind::Tcp, addr, &["echo"], small);
    assert_eq!(inv.max_input(), 2 * MIB);
    let r = inv.invoke("echo", &vec![1u8; 2 * MIB + 1]);
    assert!(
        matches!(r, Err(InvokeError::PayloadTooLarge { len, max }) if len == 2 * MIB + 1 && max == 2 * MIB),
        "{r:?}"
    );
    let at_limit = pattern(2 * MIB, 5);
    assert!(inv.invoke("echo", &at_limit).unwrap() == at_limit);
    drop(inv);
    // No input region at all: the slot is the limit.
    let none = InvokerConfig {
        max_input: 0,
        ..cfg(PollMode::Hot)
    };
    let mut inv = connect(TransportKind::Tcp, addr, &["echo"], none);
    assert_eq!(inv.max_input(), inv.max_inline_input());
    let r = inv.invoke("echo", &vec![1u8; inv.max_inline_input() + 1]);
    assert!(
        matches!(r, Err(InvokeError::PayloadTooLarge { .. })),
        "{r:?}"
    );
    assert_eq!(inv.invoke("echo", b"small").unwrap(), b"small");
    drop(inv);
    // The executor saw only the two invocations that were sent.
    let u = usage_at_exit(exec);
    assert_eq!((u.invocations, u.failed), (2, 0), "{u:?}");
}

#[test]
fn more_functions_than_the_immediate_names_are_refused() {
    let names: Vec<String> = (0..=invocation::MAX_FUNCTIONS)
        .map(|i| format!("f{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // Refused before connecting: nobody listens on port 1.
    let r = Invoker::connect(
        &fabric(TransportKind::Tcp),
        "127.0.0.1:1".parse().unwrap(),
        TOKEN.as_bytes(),
        shipped(),
        &refs,
        cfg(PollMode::Hot),
    );
    assert!(
        matches!(r, Err(InvokeError::TooManyFunctions { count, max }) if count == 0x8001 && max == 0x8000),
        "{r:?}"
    );
}

#[test]
fn an_executor_with_a_smaller_bound_answers_and_keeps_serving() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let bound = MIB.to_string();
        let (exec, addr) = exec(kind, 1, &[(MAX_INPUT_ENV, &bound)]);
        let mut inv = connect(kind, addr, &["echo"], cfg(PollMode::Hot));
        let r = inv.invoke("echo", &vec![3u8; 2 * MIB]);
        assert!(
            matches!(r, Err(InvokeError::InputTooLarge { len, max: Some(m) }) if len == 2 * MIB && m == MIB as u64),
            "{kind}: {r:?}"
        );
        // At the bound it reads; small ones as ever; and refused again.
        let at = pattern(MIB, 1);
        assert!(inv.invoke("echo", &at).unwrap() == at, "{kind}");
        assert_eq!(inv.invoke("echo", b"still here").unwrap(), b"still here");
        let t = inv.submit("echo", &vec![4u8; MIB + 1]).unwrap();
        let s = inv.submit("echo", b"behind it").unwrap();
        assert!(matches!(
            inv.wait(t),
            Err(InvokeError::InputTooLarge { .. })
        ));
        assert_eq!(inv.wait(s).unwrap(), b"behind it");
        drop(inv);
        let u = usage_at_exit(exec);
        assert_eq!((u.invocations, u.failed), (5, 2), "{kind}: {u:?}");
    }
}

#[test]
fn a_bad_bound_in_the_environment_is_an_error() {
    let out = Command::new(RFX)
        .args(["--transport", "tcp", "executor", "--listen", "127.0.0.1:0"])
        .env("RFX_LEASE_TOKEN", TOKEN)
        .env(MAX_INPUT_ENV, "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(MAX_INPUT_ENV), "{err}");
}

/// A hand-rolled client: set-up as the `Invoker` does, then raw writes.
struct RawClient {
    ep: rfx::fabric::Endpoint,
    slots: rfx::fabric::RemoteBuffer,
    slot_size: u64,
    region: rfx::fabric::MemoryRegion,
}

/// Where the raw client's results land (one result buffer, for slot 0),
/// and its inputs start.
const RAW_RESULT: u32 = 2048;

/// The raw client's region: its result buffer, then room for inputs.
const RAW_REGION: usize = 8192;

impl RawClient {
    fn connect(kind: TransportKind, addr: std::net::SocketAddr) -> RawClient {
        let results = ResultGeometry {
            stride: RAW_RESULT,
            slots: 1,
        };
        Self::try_connect(kind, addr, results).unwrap()
    }

    /// Connects with `results` as the set-up's result geometry; the
    /// executor's refusal as `Err`.
    fn try_connect(
        kind: TransportKind,
        addr: std::net::SocketAddr,
        results: ResultGeometry,
    ) -> Result<RawClient, String> {
        let f = fabric(kind);
        let region = f.register(RAW_REGION).unwrap();
        let mut ep = f
            .connect(
                addr,
                &ConnectOptions::new()
                    .expose(&region)
                    .secret(TOKEN.as_bytes()),
            )
            .unwrap();
        let slots = ep.peer_buffers()[0];
        let hello: ExecutorHello = session::decode(ep.peer_user_data()).unwrap();
        let setup = Setup {
            library: shipped(),
            functions: vec!["echo".into()],
            results,
            group: None,
        };
        ep.send(&session::encode(&setup)).unwrap();
        match ep.wait(PollMode::Warm, Duration::from_secs(30)).unwrap() {
            Completion::Recv(m) => match session::decode::<SetupReply>(&m).unwrap() {
                SetupReply::Ready => {}
                SetupReply::Failed(why) => return Err(why),
            },
            other => panic!("{other:?}"),
        }
        Ok(RawClient {
            ep,
            slots,
            slot_size: u64::from(hello.slot_size),
            region,
        })
    }

    /// Writes `descriptor` (or any bytes) into slot 0 with the remote-input
    /// flag as `id`; returns the status and the output.
    fn invoke(&mut self, id: u16, descriptor: &[u8]) -> (Status, Vec<u8>) {
        self.write(id, true, 0, descriptor);
        self.result(id)
    }

    /// Writes `bytes` at `offset` of the executor's slots, nothing else,
    /// as invocation `id` of function 0.
    fn write(&mut self, id: u16, remote_input: bool, offset: u64, bytes: &[u8]) {
        let low = FunctionField {
            index: 0,
            remote_input,
        }
        .encode()
        .unwrap();
        self.ep
            .write_imm(bytes, &self.slots, offset, invocation::pack_imm(id, low))
            .unwrap();
    }

    /// Waits for the result of `id`: its status and output.
    fn result(&mut self, id: u16) -> (Status, Vec<u8>) {
        // Waiting polls the endpoint, which serves the executor's read on tcp.
        match self
            .ep
            .wait(PollMode::Hot, Duration::from_secs(30))
            .unwrap()
        {
            Completion::Write(w) => {
                let (got, status) = invocation::unpack_imm(w.imm);
                assert_eq!(got, id);
                // Slot 0's result buffer, as the set-up fixed it.
                assert_eq!(w.offset, 0);
                let out = self.region.to_vec(0, w.len as usize).unwrap();
                (Status::from_u16(status).unwrap(), out)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn forged_descriptors_get_an_error_status_not_a_dead_worker() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let (exec, addr) = exec(kind, 1, &[]);
        let mut c = RawClient::connect(kind, addr);
        let input = pattern(1000, 7);
        c.region.write_at(RAW_RESULT as usize, &input).unwrap();
        let good = InputDescriptor {
            addr: c.region.addr() + u64::from(RAW_RESULT),
            rkey: c.region.rkey(),
            len: input.len() as u32,
        };
        // A well-formed descriptor is read: the protocol without the Invoker.
        assert_eq!(c.invoke(1, &good.encode()), (Status::Ok, input.clone()));
        // Wrong rkey; a range past the region; memory it never exposed.
        let forged = [
            InputDescriptor {
                rkey: good.rkey ^ 0x100,
                ..good
            },
            InputDescriptor { len: 8192, ..good },
            InputDescriptor {
                addr: 0x1000,
                ..good
            },
        ];
        for (i, d) in forged.iter().enumerate() {
            let (s, out) = c.invoke(2 + i as u16, &d.encode());
            assert_eq!(
                (s, out.len()),
                (Status::InputUnreadable, 0),
                "{kind}: {d:?}"
            );
        }
        // A descriptor with bytes after it is malformed.
        let mut long = good.encode().to_vec();
        long.push(0);
        assert_eq!(c.invoke(9, &long).0, Status::BadRequest, "{kind}");
        // The worker still serves.
        assert_eq!(c.invoke(10, &good.encode()), (Status::Ok, input), "{kind}");
        drop(c);
        let u = usage_at_exit(exec);
        assert_eq!((u.invocations, u.failed), (6, 4), "{kind}: {u:?}");
        assert!(u.bytes_in >= 2000, "{u:?}");
    }
}

/// A set-up whose result geometry does not fit the buffer the client
/// exposed is refused, with the reason; the executor goes on serving the
/// next client.
#[test]
fn a_bad_result_geometry_is_refused_and_the_executor_goes_on() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let (exec, addr) = exec(kind, 4, &[]);
        let g = |stride, slots| ResultGeometry { stride, slots };
        let refused = |results, want: &str| {
            let why = RawClient::try_connect(kind, addr, results)
                .err()
                .unwrap_or_else(|| panic!("{kind}: {results:?} accepted"));
            assert!(
                why.contains("bad result geometry") && why.contains(want),
                "{kind}: {results:?}: {why}"
            );
        };
        refused(g(0, 1), "stride is 0");
        // 4 x 4096 > the 8192 bytes exposed; and a product past u32.
        refused(g(4096, 4), "need 16384 bytes");
        refused(
            g(u32::MAX, u32::MAX),
            "but the client's result region has 8192",
        );
        // The whole region, exactly: accepted, and it serves.
        let mut c = RawClient::try_connect(kind, addr, g(4096, 2)).unwrap();
        c.write(1, false, 0, b"exactly");
        assert_eq!(c.result(1), (Status::Ok, b"exactly".to_vec()), "{kind}");
        drop(c);
        let u = usage_at_exit(exec);
        assert_eq!((u.invocations, u.failed), (1, 0), "{kind}: {u:?}");
    }
}

/// The wire format without a header, by hand: an inline input is the
/// whole write (an empty one too) and its result lands in the slot's
/// result buffer; writes off a slot's start, or into a slot the set-up
/// gave no result buffer, are dropped unanswered and the worker goes on.
#[test]
fn bare_writes_are_invocations_and_stray_ones_are_dropped() {
    for kind in [TransportKind::Shm, TransportKind::Tcp] {
        let (exec, addr) = exec(kind, 1, &[]);
        let mut c = RawClient::connect(kind, addr);
        // An empty input: a zero-byte write, an empty echo back.
        c.write(1, false, 0, &[]);
        assert_eq!(c.result(1), (Status::Ok, Vec::new()), "{kind}");
        // A descriptor-sized input without the flag is inline, not remote.
        let sixteen = pattern(16, 3);
        c.write(2, false, 0, &sixteen);
        assert_eq!(c.result(2), (Status::Ok, sixteen), "{kind}");
        // A flagged write too short for a descriptor is a bad request.
        c.write(3, true, 0, &[1, 2, 3]);
        assert_eq!(c.result(3), (Status::BadRequest, Vec::new()), "{kind}");
        // Off a slot's start; and slot 1, which has no result buffer.
        c.write(4, false, 1, b"stray");
        c.write(5, false, c.slot_size, b"no result buffer");
        // Nothing answers them: the next result is the next invocation's.
        c.write(6, false, 0, b"still serving");
        assert_eq!(
            c.result(6),
            (Status::Ok, b"still serving".to_vec()),
            "{kind}"
        );
        drop(c);
        let u = usage_at_exit(exec);
        assert_eq!((u.invocations, u.failed), (6, 3), "{kind}: {u:?}");
        // Only the inputs crossed: 0 + 16 + 3 + 5 + 16 + 13 bytes, no header.
        assert_eq!(u.bytes_in, 53, "{kind}: {u:?}");
    }
}
