//! A bounded fuzz pass over everything rfx reads from the network, run in
//! CI: every decoder fed random and mutated input (proptest), then live
//! services (`rfx lease-manager`, `rfx executor`, a fabric listener, a
//! collectives rendezvous) fed garbage over real sockets, and checked to
//! serve a well-behaved client afterwards. Nothing may panic or die.
//!
//! `RFX_FUZZ_CASES` scales both passes (default 2000 decoder cases per
//! target, a tenth of that in connections per service).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rfx::executors::session::{self, ExecutorHello, GroupSpec, ResultGeometry, Setup, SetupReply};
use rfx::fabric::invocation::{self, FunctionField, Input, InputDescriptor};
use rfx::fabric::wire::{self, Accept, Challenge, ClientHello, FrameHeader, HandshakeKind, Hello};
use support::*;

fn cases() -> u32 {
    std::env::var("RFX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// A valid handshake, to mutate.
fn valid_hello() -> Vec<u8> {
    wire::encode_handshake(
        HandshakeKind::Hello,
        &ClientHello {
            hello: Hello {
                host: "host".into(),
                pid: 7,
                forced: None,
                providers: Vec::new(),
                buffers: Vec::new(),
                user: b"user".to_vec(),
            },
            nonce: [3; 32],
            proof: Some([4; 32]),
        },
    )
}

fn valid_setup() -> Vec<u8> {
    session::encode(&Setup {
        library: session::LibrarySource::Path("/lib.so".into()),
        functions: vec!["echo".into()],
        results: ResultGeometry {
            stride: 4096,
            slots: 32,
        },
        group: Some(GroupSpec {
            rank: 0,
            size: 2,
            rendezvous: "127.0.0.1:1".into(),
            key: vec![1; 16],
        }),
    })
}

/// Flips, inserts and truncates bytes of `base` as `ops` say.
fn mutate(base: &[u8], ops: &[(u16, u8, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(at, kind, byte) in ops {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = at as usize % v.len();
        match kind % 4 {
            0 => v[i] ^= byte | 1,
            1 => v.insert(i, byte),
            2 => v.truncate(i),
            _ => v[i] = byte,
        }
    }
    v
}

/// Every decoder of network input, on `b`: results are ignored, a panic
/// fails the test.
fn decode_everything(b: &[u8]) {
    let _ = FrameHeader::decode(b);
    // An invocation's slot: the bare input, or a remote input's descriptor.
    let _ = InputDescriptor::decode(b);
    let _ = Input::decode(true, b.len(), b);
    let _ = Input::decode(false, b.len(), b);
    if let Ok((_, len)) = wire::decode_handshake_header(b) {
        let body = b.get(wire::HANDSHAKE_HEADER_LEN..).unwrap_or_default();
        let body = &body[..len.min(body.len())];
        let _ = wire::decode_body::<Challenge>(body);
        let _ = wire::decode_body::<ClientHello>(body);
        let _ = wire::decode_body::<Hello>(body);
        let _ = wire::decode_body::<Accept>(body);
        let _ = wire::decode_body::<String>(body);
    }
    let _ = wire::decode_body::<Challenge>(b);
    let _ = wire::decode_body::<ClientHello>(b);
    let _ = wire::decode_body::<Hello>(b);
    let _ = wire::decode_body::<Accept>(b);
    if let Ok(setup) = session::decode::<Setup>(b) {
        // A set-up's result geometry, checked against any buffer length.
        let g = setup.results;
        for len in [0, 1, b.len() as u64, u64::from(u32::MAX), u64::MAX] {
            if g.check(len).is_ok() {
                let last = g.offset(g.slots as usize - 1).unwrap();
                assert!(last + u64::from(g.stride) <= len, "{g:?} in {len}");
            }
        }
        let _ = g.offset(b.len());
    }
    let _ = session::decode::<SetupReply>(b);
    let _ = session::decode::<ExecutorHello>(b);
    let _ = rfx::leases::wire::decode_client(b);
    let _ = rfx::leases::wire::decode_server(b);
    let _ = serde_json::from_slice::<rfx::executors::manager::LookupRequest>(b);
    let _ = serde_json::from_slice::<rfx::executors::manager::LookupReply>(b);
    if let Ok(head) = <[u8; 4]>::try_from(b.get(..4).unwrap_or_default()) {
        let _ = rfx::collectives::bootstrap::proto::decode_len(head);
    }
    let _ = rfx::collectives::bootstrap::proto::decode_body::<
        rfx::collectives::bootstrap::proto::Register,
    >(b);
    let _ = rfx::collectives::bootstrap::proto::decode_body::<
        rfx::collectives::bootstrap::proto::Reply,
    >(b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoders_survive_random_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&b);
    }

    #[test]
    fn decoders_survive_mutated_valid_messages(
        which in 0u8..5,
        ops in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let base = match which {
            0 => valid_hello(),
            1 => valid_setup(),
            2 => br#"{"Tenant":{"id":1,"token":"a.b","req":"List"}}"#.to_vec(),
            3 => serde_json::to_vec(&rfx::executors::manager::LookupRequest::new(
                rfx::leases::proto::LeaseId(7),
                &"ab".repeat(32),
            ))
            .unwrap(),
            _ => FrameHeader::write(64, 3, 9, 100).encode().to_vec(),
        };
        decode_everything(&mutate(&base, &ops));
    }
}

/// Garbage one connection may carry: random bytes, a huge length prefix, a
/// plausible length with a random body, a mutated valid handshake.
fn garbage(i: u32, seed: &mut u64) -> Vec<u8> {
    let mut next = || {
        // xorshift64*: reproducible from the printed seed.
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let len = (next() % 300) as usize;
    let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
    match i % 5 {
        0 => body,
        1 => {
            let mut v = u32::MAX.to_be_bytes().to_vec();
            v.append(&mut body);
            v
        }
        2 => {
            let mut v = (len as u32).to_be_bytes().to_vec();
            v.append(&mut body);
            v
        }
        3 => {
            let ops: Vec<(u16, u8, u8)> = (0..3)
                .map(|_| (next() as u16, next() as u8, next() as u8))
                .collect();
            mutate(&valid_hello(), &ops)
        }
        _ => {
            let mut v = valid_hello();
            v.truncate(len.min(v.len()));
            v
        }
    }
}

/// Sends `n` connections of garbage to `addr`, each read briefly then closed.
fn pound(addr: SocketAddr, n: u32, seed: u64) {
    println!("pounding {addr} with {n} connections, seed {seed:#x}");
    let mut s = seed | 1;
    for i in 0..n {
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            panic!("{addr} stopped accepting after {i} connections (seed {seed:#x})");
        };
        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = c.set_read_timeout(Some(Duration::from_millis(20)));
        let _ = c.write_all(&garbage(i, &mut s));
        let mut buf = [0u8; 256];
        let _ = c.read(&mut buf);
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lease_manager_survives_garbage() {
    let dir = std::env::temp_dir().join(format!("rfx-fuzz-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = free_port();
    let mut lm = Proc(
        Command::new(RFX)
            .args(["lease-manager", "--listen", &addr.to_string(), "--db"])
            .arg(dir.join("leases.redb"))
            .env("RFX_CLUSTER_KEY", "fuzz-key")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    pound(addr, cases() / 10, seed());
    assert!(lm.0.try_wait().unwrap().is_none(), "the lease manager died");
    let admin =
        rfx::leases::client::blocking::AdminClient::connect(&addr.to_string(), "fuzz-key").unwrap();
    let token = admin.add_tenant("after-fuzz").unwrap();
    assert!(token.starts_with("after-fuzz."));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn executor_survives_garbage() {
    let (mut exec, addr) = executor("fuzz-token", "auto", &[]);
    pound(addr, cases() / 10, seed());
    assert!(exec.0.try_wait().unwrap().is_none(), "the executor died");
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default()).unwrap();
    let lib = rfx::executors::session::LibrarySource::Path(examples().rust.display().to_string());
    let mut inv = rfx::client::Invoker::connect(
        &fabric,
        addr,
        b"fuzz-token",
        lib,
        &["echo"],
        rfx::client::InvokerConfig::default(),
    )
    .unwrap();
    assert_eq!(inv.invoke("echo", b"still here").unwrap(), b"still here");
}

/// Random invocation writes from a client that passed the handshake and
/// set-up: any offset, length, flag, function and bytes (forged
/// descriptors included). The worker answers or drops each, and then
/// serves a well-formed invocation.
#[test]
fn executor_survives_random_invocations() {
    use rfx::fabric::{Completion, ConnectOptions, PollMode};
    for kind in ["shm", "tcp"] {
        let (mut exec, addr) = executor(
            "fuzz-token",
            kind,
            &["--slots", "4", "--slot-size", "256", "--connections", "1"],
        );
        let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config {
            transport: rfx::fabric::TransportChoice::Forced(kind.parse().unwrap()),
            ..rfx::fabric::Config::default()
        })
        .unwrap();
        let results = fabric.register(4 * 64).unwrap();
        let mut ep = fabric
            .connect(
                addr,
                &ConnectOptions::new().expose(&results).secret(b"fuzz-token"),
            )
            .unwrap();
        let slots = ep.peer_buffers()[0];
        let lib = session::LibrarySource::Path(examples().rust.display().to_string());
        let setup = Setup {
            library: lib,
            functions: vec!["echo".into(), "noop".into()],
            results: ResultGeometry {
                stride: 64,
                slots: 4,
            },
            group: None,
        };
        ep.send(&session::encode(&setup)).unwrap();
        match ep.wait(PollMode::Warm, Duration::from_secs(30)).unwrap() {
            Completion::Recv(m) => {
                assert_eq!(session::decode::<SetupReply>(&m), Ok(SetupReply::Ready))
            }
            other => panic!("{other:?}"),
        }
        let seed = seed();
        println!("{kind}: random invocations, seed {seed:#x}");
        let mut s = seed | 1;
        let mut next = || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _ in 0..cases() / 10 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly inside the slots' buffer (the fabric refuses the
            // rest before sending), sometimes off a slot's start.
            let off = next() % (slots.len - len.min(256) as u64 + 1);
            let low = next() as u16;
            // Ids below 0x8000: the well-formed one below is 0xbeef.
            let id = (next() as u16) & 0x7fff;
            let _ = ep.write_imm(&bytes, &slots, off, invocation::pack_imm(id, low));
            // Drain results (and serve reads on tcp) as they come.
            while let Ok(Some(_)) = ep.poll() {}
        }
        // A well-formed invocation is answered (after any late results).
        let id = 0xbeef;
        let low = FunctionField {
            index: 0,
            remote_input: false,
        }
        .encode()
        .unwrap();
        ep.write_imm(b"still serving", &slots, 0, invocation::pack_imm(id, low))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "{kind}: no answer (seed {seed:#x})"
            );
            match ep.wait(PollMode::Warm, Duration::from_secs(30)).unwrap() {
                Completion::Write(w) if invocation::unpack_imm(w.imm).0 == id => {
                    assert_eq!(w.offset, 0);
                    assert_eq!(results.to_vec(0, w.len as usize).unwrap(), b"still serving");
                    break;
                }
                _ => {}
            }
        }
        assert!(
            exec.0.try_wait().unwrap().is_none(),
            "{kind}: the executor died"
        );
    }
}

#[test]
fn fabric_listener_survives_garbage() {
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::default()).unwrap();
    let listener = fabric.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let n = cases() / 10;
    // Serve every connection: garbage ones must fail their handshake with
    // an error (never a panic), then one real peer must get through. With a
    // secret, so that mutated hellos reach the proof check too.
    let server = std::thread::spawn(move || {
        let opts = rfx::fabric::ConnectOptions::new().secret(b"fuzz-secret");
        for _ in 0..n {
            let inc = listener.incoming(Some(Duration::from_secs(10))).unwrap();
            let _ = inc.accept(&opts, |_| Ok(()));
        }
        let mut ep = listener.accept(&opts).unwrap();
        ep.send(b"hello after garbage").unwrap();
        // Until the peer has read it.
        let _ = ep.wait(rfx::fabric::PollMode::Warm, Duration::from_secs(10));
    });
    pound(addr, n, seed());
    let mut ep = fabric
        .connect(
            addr,
            &rfx::fabric::ConnectOptions::new().secret(b"fuzz-secret"),
        )
        .unwrap();
    match ep
        .wait(rfx::fabric::PollMode::Warm, Duration::from_secs(10))
        .unwrap()
    {
        rfx::fabric::Completion::Recv(m) => assert_eq!(&m[..], b"hello after garbage"),
        other => panic!("unexpected {other:?}"),
    }
    drop(ep);
    server.join().unwrap();
}

#[test]
fn rendezvous_survives_garbage() {
    use rfx::collectives::{CollConfig, Communicator, JoinOptions, Rendezvous};
    let key = vec![9u8; 16];
    let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), 2, key.clone()).unwrap();
    let addr = rv.local_addr().unwrap();
    let served = rv.spawn(Duration::from_secs(120));
    pound(addr, cases() / 10, seed());
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let key = key.clone();
            std::thread::spawn(move || {
                let mut c = Communicator::join(JoinOptions {
                    rank,
                    size: 2,
                    rendezvous: addr,
                    key,
                    bind: Some("127.0.0.1".parse().unwrap()),
                    config: CollConfig::default(),
                })
                .unwrap();
                let mut v = [rank as u64 + 1];
                c.allreduce(&mut v, rfx::collectives::ReduceOp::Sum)
                    .unwrap();
                v[0]
            })
        })
        .collect();
    for r in ranks {
        assert_eq!(r.join().unwrap(), 3);
    }
    served.join().unwrap().unwrap();
}
