//! The cases: each takes the transport under test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rfx_fabric::wire::{
    self, Accept, Challenge, ClientHello, FrameHeader, HandshakeKind, Hello, Op,
};
use rfx_fabric::{
    Caps, Completion, ConnectOptions, FabricError, PollMode, RemoteBuffer, TransportKind,
    WriteCompletion, WriteData,
};

use rfx_fabric::auth::AuthError;

use crate::util::*;

fn expect_write(r: Result<Completion, FabricError>) -> WriteCompletion {
    match r {
        Ok(Completion::Write(w)) => w,
        other => panic!("expected a write completion, got {other:?}"),
    }
}

fn expect_recv(r: Result<Completion, FabricError>) -> bytes::Bytes {
    match r {
        Ok(Completion::Recv(b)) => b,
        other => panic!("expected a message, got {other:?}"),
    }
}

pub fn write_imm_lands(kind: TransportKind) {
    let f = fabric(kind);
    let server_mr = f.register(4096).unwrap();
    let client_mr = f.register(256).unwrap();
    let (mut s, mut c) = pair(
        kind,
        std::slice::from_ref(&server_mr),
        std::slice::from_ref(&client_mr),
    );
    assert_eq!(c.peer_buffers(), &[server_mr.remote()]);
    assert_eq!(s.peer_buffers(), &[client_mr.remote()]);
    let rb = c.peer_buffers()[0];
    c.write_imm(b"abc", &rb, 100, 0xdead_beef).unwrap();
    let w = expect_write(s.wait(PollMode::Hot, T));
    assert_eq!(
        w,
        WriteCompletion {
            imm: 0xdead_beef,
            rkey: server_mr.rkey(),
            offset: 100,
            len: 3
        }
    );
    assert_eq!(server_mr.to_vec(99, 5).unwrap(), b"\0abc\0");
    // The other way, into a sub-range of the client's buffer.
    let sub = s.peer_buffers()[0].slice(128, 64).unwrap();
    s.write_imm(b"result", &sub, 10, 7).unwrap();
    let w = expect_write(c.wait(PollMode::Hot, T));
    assert_eq!((w.imm, w.offset, w.len), (7, 138, 6));
    assert_eq!(client_mr.to_vec(138, 6).unwrap(), b"result");
}

/// `Endpoint::take_write`: on shm every write is offered, in order with
/// the rest: a small one with its bytes (taken, it is consumed and its
/// bytes do not land), a large one landed in the region already; declined,
/// `poll` delivers it as usual. Other providers offer nothing, and `poll`
/// delivers all.
pub fn writes_offered_in_order(kind: TransportKind) {
    let offers = kind == TransportKind::Shm;
    let f = fabric(kind);
    let mr = f.register(16384).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let rb = c.peer_buffers()[0];
    let big = vec![7u8; 4000];
    let big2 = vec![9u8; 3000];
    c.write_imm(b"abc", &rb, 100, 1).unwrap();
    c.write_imm(&big, &rb, 1000, 2).unwrap();
    c.write_imm(b"xyz", &rb, 200, 3).unwrap();
    c.write_imm(b"keep", &rb, 300, 4).unwrap();
    c.write_imm(&big2, &rb, 8000, 5).unwrap();
    // What was offered: the completion and the inline bytes (`None`:
    // landed). Offered until taken (the write may still be on its way).
    type Seen = Option<(WriteCompletion, Option<Vec<u8>>)>;
    let offer = |s: &mut rfx_fabric::Endpoint, take: bool| -> (Seen, bool) {
        let deadline = Instant::now() + T;
        loop {
            let mut seen = None;
            let r = s.take_write(|w, data| {
                let bytes = match data {
                    WriteData::Inline(b) => Some(b.to_vec()),
                    WriteData::Landed => None,
                };
                seen = Some((*w, bytes));
                take.then_some(())
            });
            if seen.is_some() || Instant::now() > deadline {
                return (seen, r.is_some());
            }
            std::thread::yield_now();
        }
    };
    if offers {
        let (seen, taken) = offer(&mut s, true);
        let (w, bytes) = seen.expect("the small write is offered");
        assert!(taken);
        assert_eq!((w.imm, w.rkey, w.offset, w.len), (1, mr.rkey(), 100, 3));
        assert_eq!(bytes.as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            mr.to_vec(100, 3).unwrap(),
            [0; 3],
            "taken bytes do not land"
        );
        // The large write: offered landed, its data in the region.
        let (seen, taken) = offer(&mut s, false);
        let (w, bytes) = seen.expect("the large write is offered");
        assert!(!taken);
        assert_eq!((w.imm, w.offset, w.len, bytes), (2, 1000, 4000, None));
        assert_eq!(mr.to_vec(1000, 4000).unwrap(), big);
    } else {
        assert!(s.take_write(|_, _| Some(())).is_none());
        let w = expect_write(s.wait(PollMode::Hot, T));
        assert_eq!((w.imm, w.offset, w.len), (1, 100, 3));
        assert_eq!(mr.to_vec(100, 3).unwrap(), b"abc");
    }
    // Declined, the large write is still there: poll delivers it.
    let w = expect_write(s.wait(PollMode::Hot, T));
    assert_eq!((w.imm, w.offset, w.len), (2, 1000, 4000));
    assert_eq!(mr.to_vec(1000, 4000).unwrap(), big);
    // Declined: still there, and poll lands it.
    if offers {
        let (seen, taken) = offer(&mut s, false);
        assert_eq!(seen.expect("offered").0.imm, 3);
        assert!(!taken);
    }
    let w = expect_write(s.wait(PollMode::Hot, T));
    assert_eq!((w.imm, w.offset, w.len), (3, 200, 3));
    assert_eq!(mr.to_vec(200, 3).unwrap(), b"xyz");
    if offers {
        let (seen, taken) = offer(&mut s, true);
        assert_eq!(seen.expect("offered").1.as_deref(), Some(&b"keep"[..]));
        assert!(taken);
        // A large write taken: consumed, its data where it landed.
        let (seen, taken) = offer(&mut s, true);
        let (w, bytes) = seen.expect("offered");
        assert!(taken);
        assert_eq!((w.imm, w.offset, w.len, bytes), (5, 8000, 3000, None));
        assert_eq!(mr.to_vec(8000, 3000).unwrap(), big2);
    } else {
        assert_eq!(expect_write(s.wait(PollMode::Hot, T)).imm, 4);
        assert_eq!(expect_write(s.wait(PollMode::Hot, T)).imm, 5);
    }
    assert!(s.poll().unwrap().is_none(), "nothing else arrived");
}

/// `Endpoint::peer_memory`: over shm, between processes that may read
/// each other's memory (as here), every read carries the peer's canary,
/// so it proves by itself that it read the peer; other providers have
/// none.
pub fn peer_memory_reads_prove_themselves(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(4096).unwrap();
    let (s, c) = pair(kind, std::slice::from_ref(&mr), &[]);
    if kind != TransportKind::Shm {
        assert!(s.peer_memory().is_none() && c.peer_memory().is_none());
        return;
    }
    let data: Vec<u8> = (0..=255u8).collect();
    for ep in [&s, &c] {
        let mem = ep
            .peer_memory()
            .expect("cross-memory attach to a process of this user is permitted here");
        assert!(mem.reads_verified(), "no canary from the shm set-up");
        let mut out = [0u8; 16];
        mem.read(&[(data.as_ptr() as u64, 256)], 100, &mut out)
            .unwrap();
        assert_eq!(out.to_vec(), (100..116u8).collect::<Vec<_>>());
    }
}

pub fn payload_sizes(kind: TransportKind) {
    const MAX: usize = 16 << 20;
    let f = fabric(kind);
    let mr = f.register(MAX + 64).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let sizes = [
        0usize,
        1,
        8,
        63,
        64,
        65,
        4095,
        4096,
        65536,
        (1 << 20) + 7,
        MAX,
    ];
    let writer = std::thread::spawn(move || {
        let rb = c.peer_buffers()[0];
        for (i, &n) in sizes.iter().enumerate() {
            c.write_imm(&pattern(n, i as u8), &rb, 64, i as u32)
                .unwrap();
            c.send(&pattern(n, i as u8 ^ 0x55)).unwrap();
            // Wait for the ack so the next write does not overwrite this one.
            assert_eq!(&expect_recv(c.wait(PollMode::Hot, T))[..], b"ack");
        }
    });
    for (i, &n) in sizes.iter().enumerate() {
        let w = expect_write(s.wait(PollMode::Hot, T));
        assert_eq!((w.imm, w.offset, w.len as usize), (i as u32, 64, n));
        assert!(
            mr.to_vec(64, n).unwrap() == pattern(n, i as u8),
            "write of {n} bytes differs"
        );
        let m = expect_recv(s.wait(PollMode::Hot, T));
        assert!(
            m[..] == pattern(n, i as u8 ^ 0x55)[..],
            "message of {n} bytes differs"
        );
        s.send(b"ack").unwrap();
    }
    writer.join().unwrap();
}

pub fn ordered_with_many_in_flight(kind: TransportKind) {
    const N: u32 = 20_000;
    let f = fabric(kind);
    let mr = f.register(N as usize * 8).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    // Post everything before the receiver looks at anything.
    let writer = std::thread::spawn(move || {
        let rb = c.peer_buffers()[0];
        for i in 0..N {
            c.write_imm(&u64::from(i).to_le_bytes(), &rb, u64::from(i) * 8, i)
                .unwrap();
            if i % 1000 == 0 {
                c.send(&i.to_le_bytes()).unwrap();
            }
        }
        c
    });
    let mut next = 0u32;
    while next < N {
        match s.wait(PollMode::Hot, T).unwrap() {
            Completion::Write(w) => {
                assert_eq!(w.imm, next, "writes delivered out of order");
                assert_eq!(
                    mr.to_vec(next as usize * 8, 8).unwrap(),
                    u64::from(next).to_le_bytes()
                );
                next += 1;
            }
            Completion::Recv(m) => assert_eq!(
                &m[..],
                &(next - 1).to_le_bytes(),
                "send out of order with writes"
            ),
        }
    }
    drop(writer.join().unwrap());
}

pub fn bidirectional_flood(kind: TransportKind) {
    // Each side posts far more than socket buffers or rings hold before
    // reading anything: posting must drain incoming traffic, not deadlock.
    const N: usize = 1500;
    const LEN: usize = 32 << 10;
    let (s, c) = pair(kind, &[], &[]);
    let run = |mut ep: rfx_fabric::Endpoint, seed: u8| {
        std::thread::spawn(move || {
            let msg = pattern(LEN, seed);
            for _ in 0..N {
                ep.send(&msg).unwrap();
            }
            for _ in 0..N {
                let m = expect_recv(ep.wait(PollMode::Hot, T));
                assert!(m[..] == pattern(LEN, seed ^ 1)[..]);
            }
        })
    };
    let a = run(s, 2);
    let b = run(c, 3);
    a.join().unwrap();
    b.join().unwrap();
}

pub fn write_ring_does_not_deadlock(kind: TransportKind) {
    // Three nodes in a ring, each with its own thread and two endpoints:
    // each writes large messages to the next before it reads what the one
    // before wrote, as an allgather or alltoall does. A post that waits
    // for its target's progress, while the target waits in a post to the
    // third node, must not wait for ever: the cycle spans three endpoints,
    // so draining the endpoint posted on is not enough (libfabric's shm
    // provider deadlocked here until the op timeout).
    const NODES: usize = 3;
    const ROUNDS: usize = 4;
    const LEN: usize = 1 << 20;
    let f = fabric(kind);
    let regions: Vec<rfx_fabric::MemoryRegion> = (0..NODES)
        .map(|_| f.register(ROUNDS * LEN).unwrap())
        .collect();
    // Link i: node i writes into node i+1's region.
    let mut outs = Vec::new();
    let mut ins = Vec::new();
    for i in 0..NODES {
        let target = &regions[(i + 1) % NODES];
        let (server, client) = pair(kind, std::slice::from_ref(target), &[]);
        ins.push(Some(server));
        outs.push(Some(client));
    }
    let threads: Vec<_> = (0..NODES)
        .map(|i| {
            let mut out = outs[i].take().unwrap();
            let mut inp = ins[(i + NODES - 1) % NODES].take().unwrap();
            std::thread::spawn(move || {
                let to = out.peer_buffers()[0];
                for r in 0..ROUNDS {
                    let msg = pattern(LEN, (i * ROUNDS + r) as u8);
                    out.write_imm(&msg, &to, (r * LEN) as u64, r as u32)
                        .unwrap_or_else(|e| panic!("node {i}, round {r}: {e}"));
                    let w = expect_write(inp.wait(PollMode::Hot, T));
                    assert_eq!((w.imm, w.len as usize), (r as u32, LEN));
                }
                (out, inp)
            })
        })
        .collect();
    let _keep: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, region) in regions.iter().enumerate() {
        let from = (i + NODES - 1) % NODES;
        for r in 0..ROUNDS {
            let got = region.to_vec(r * LEN, LEN).unwrap();
            assert!(
                got == pattern(LEN, (from * ROUNDS + r) as u8),
                "node {i}: round {r} from node {from} arrived wrong"
            );
        }
    }
}

pub fn access_violations_refused(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(4096).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let rb = c.peer_buffers()[0];
    let bad_key = RemoteBuffer {
        rkey: rb.rkey ^ 0x100,
        ..rb
    };
    let forged = RemoteBuffer { len: 1 << 20, ..rb };
    let refused = |r: Result<(), FabricError>| {
        assert!(
            matches!(r, Err(FabricError::RemoteAccess { .. })),
            "expected a refusal, got {r:?}"
        )
    };
    refused(c.write_imm(&[0xff; 8], &bad_key, 0, 1));
    refused(c.write_imm(&[0xff; 10], &rb, 4090, 2));
    refused(c.write_imm(&[0xff; 1], &rb, 4096, 3));
    refused(c.write_imm(&[0xff; 8], &forged, 8192, 4));
    refused(c.write_imm(&[0xff; 8], &rb, u64::MAX - 3, 5));
    // The endpoint is still fine, and only the valid write arrives.
    c.write_imm(&[0xaa], &rb, 0, 6).unwrap();
    let w = expect_write(s.wait(PollMode::Hot, T));
    assert_eq!(w.imm, 6);
    assert!(matches!(s.wait(PollMode::Hot, Duration::from_millis(50)), Err(e) if e.is_timeout()));
    let mem = mr.to_vec(0, 4096).unwrap();
    assert_eq!(mem[0], 0xaa);
    assert!(
        mem[1..].iter().all(|&b| b == 0),
        "refused writes touched memory"
    );
}

/// Serves the peer's reads (tcp needs the owner polled) until a message
/// arrives; returns it.
fn serve_until_message(ep: &mut rfx_fabric::Endpoint) -> bytes::Bytes {
    let deadline = Instant::now() + T;
    loop {
        match ep.poll() {
            Ok(Some(Completion::Recv(m))) => return m,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => assert!(Instant::now() < deadline, "no message"),
            Err(e) => panic!("{e}"),
        }
    }
}

/// One-sided reads of the peer's exposed memory, sizes 1 B to 4 MiB at
/// odd offsets, with traffic arriving meanwhile kept for `poll`.
pub fn reads_one_sided(kind: TransportKind) {
    const LEN: usize = (4 << 20) + 4096;
    let f = fabric(kind);
    let server_mr = f.register(LEN).unwrap();
    server_mr.write_at(0, &pattern(LEN, 3)).unwrap();
    let client_mr = f.register(4096).unwrap();
    let (mut s, mut c) = pair(
        kind,
        std::slice::from_ref(&server_mr),
        std::slice::from_ref(&client_mr),
    );
    // Posted before the reads: must still be delivered, in order, after them.
    let crb = s.peer_buffers()[0];
    s.send(b"before").unwrap();
    s.write_imm(b"wrote", &crb, 8, 42).unwrap();
    let server = std::thread::spawn(move || {
        let m = serve_until_message(&mut s);
        (s, m)
    });
    let rb = c.peer_buffers()[0];
    let whole = pattern(LEN, 3);
    for (off, n) in [
        (0usize, 1usize),
        (1, 8),
        (4095, 64),
        (7, 4096),
        (1000, 65536),
        (4096, 4 << 20),
    ] {
        let mut out = vec![0u8; n];
        c.read(&rb, off as u64, &mut out).unwrap();
        assert!(
            out == whole[off..off + n],
            "read of {n} bytes at {off} differs"
        );
    }
    // A read into nothing is a no-op, not an error.
    c.read(&rb, 0, &mut []).unwrap();
    assert_eq!(&expect_recv(c.wait(PollMode::Hot, T))[..], b"before");
    let w = expect_write(c.wait(PollMode::Hot, T));
    assert_eq!((w.imm, w.offset, w.len), (42, 8, 5));
    assert_eq!(client_mr.to_vec(8, 5).unwrap(), b"wrote");
    // The owner's later stores are what a later read sees.
    server_mr.write_at(100, b"changed").unwrap();
    let mut out = [0u8; 7];
    c.read(&rb, 100, &mut out).unwrap();
    assert_eq!(&out, b"changed");
    c.send(b"done").unwrap();
    let (_s, m) = server.join().unwrap();
    assert_eq!(&m[..], b"done");
}

/// Both sides read each other at once: each serves the other while it
/// waits, so neither hangs.
pub fn crossed_reads(kind: TransportKind) {
    const LEN: usize = 1 << 20;
    let f = fabric(kind);
    let a_mr = f.register(LEN).unwrap();
    let b_mr = f.register(LEN).unwrap();
    a_mr.write_at(0, &pattern(LEN, 1)).unwrap();
    b_mr.write_at(0, &pattern(LEN, 2)).unwrap();
    let (mut a, mut b) = pair(
        kind,
        std::slice::from_ref(&a_mr),
        std::slice::from_ref(&b_mr),
    );
    let reader = |ep: &mut rfx_fabric::Endpoint, seed: u8| {
        let rb = ep.peer_buffers()[0];
        let want = pattern(LEN, seed);
        let mut out = vec![0u8; 64 << 10];
        for i in 0..64usize {
            let off = (i * 12_345) % (LEN - out.len());
            ep.read(&rb, off as u64, &mut out).unwrap();
            assert!(out[..] == want[off..off + out.len()], "read {i} differs");
        }
        ep.send(b"done").unwrap();
        serve_until_message(ep);
    };
    let t = std::thread::spawn(move || {
        reader(&mut b, 1);
        b
    });
    reader(&mut a, 2);
    t.join().unwrap();
}

/// Reads outside what the peer exposed are refused before anything is
/// sent; the endpoint stays usable.
pub fn read_access_refused(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(4096).unwrap();
    mr.write_at(0, b"ok").unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let server = std::thread::spawn(move || serve_until_message(&mut s));
    let rb = c.peer_buffers()[0];
    let refused = |r: Result<(), FabricError>| {
        assert!(
            matches!(r, Err(FabricError::RemoteAccess { .. })),
            "expected a refusal, got {r:?}"
        )
    };
    let mut out = [0u8; 16];
    refused(c.read(
        &RemoteBuffer {
            rkey: rb.rkey ^ 0x100,
            ..rb
        },
        0,
        &mut out,
    ));
    refused(c.read(&rb, 4090, &mut out));
    refused(c.read(&RemoteBuffer { len: 1 << 20, ..rb }, 8192, &mut out));
    refused(c.read(&rb, u64::MAX - 3, &mut out));
    let mut ok = [0u8; 2];
    c.read(&rb, 0, &mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    c.send(b"done").unwrap();
    assert_eq!(&server.join().unwrap()[..], b"done");
}

pub fn waits_are_bounded(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(64).unwrap();
    let (mut s, mut c) = pair(kind, &[mr], &[]);
    for mode in [PollMode::Hot, PollMode::Warm] {
        let r = s.wait(mode, Duration::from_millis(50));
        assert!(
            matches!(r, Err(FabricError::Timeout { .. })),
            "{mode:?}: {r:?}"
        );
    }
    assert!(s.poll().unwrap().is_none());
    let rb = c.peer_buffers()[0];
    c.write_imm(b"x", &rb, 0, 1).unwrap();
    assert_eq!(expect_write(s.wait(PollMode::Warm, T)).imm, 1);
}

fn thread_cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

pub fn warm_wakes_on_arrival(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(64).unwrap();
    let (mut s, mut c) = pair(kind, &[mr], &[]);
    let waiter = std::thread::spawn(move || {
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let w = expect_write(s.wait(PollMode::Warm, T));
        (w.imm, t0.elapsed(), thread_cpu() - cpu0)
    });
    std::thread::sleep(Duration::from_millis(400));
    let rb = c.peer_buffers()[0];
    c.write_imm(b"wake", &rb, 0, 99).unwrap();
    let (imm, waited, cpu) = waiter.join().unwrap();
    assert_eq!(imm, 99);
    assert!(waited < T, "woke only at the timeout");
    // Warm means asleep: a busy poll would have used the whole 400 ms.
    assert!(
        cpu < waited / 2,
        "warm wait burned {cpu:?} of CPU in {waited:?}"
    );
}

/// An event loop's way to wait: arm, sleep on the event fd, disarm, poll.
pub fn event_fd_wakes_an_armed_sleeper(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(64).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let rb = c.peer_buffers()[0];
        c.write_imm(b"evt", &rb, 0, 77).unwrap();
        c
    });
    let t0 = Instant::now();
    let got = loop {
        assert!(t0.elapsed() < T, "no completion through the event fd");
        if let Some(got) = s.poll().unwrap() {
            break got;
        }
        if s.arm().unwrap() {
            let mut fds = [nix::poll::PollFd::new(
                s.event_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16)).unwrap();
            s.disarm();
            assert_eq!(n, 1, "the event fd did not wake");
        }
    };
    assert!(matches!(got, Completion::Write(w) if w.imm == 77));
    // The peer leaving wakes an armed sleeper too, and polls as gone.
    drop(writer.join().unwrap());
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < T, "the peer's end never woke the event fd");
        match s.poll() {
            Err(e) if e.is_peer_gone() => break,
            Err(e) => panic!("{e}"),
            Ok(Some(c)) => panic!("unexpected {c:?}"),
            Ok(None) => {}
        }
        if s.arm().unwrap_or(false) {
            let mut fds = [nix::poll::PollFd::new(
                s.event_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16));
            s.disarm();
        }
    }
}

pub fn advertised_caps_work(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(64).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let caps = c.caps();
    assert_eq!(caps, s.caps());
    // Every provider implements one-sided reads.
    assert!(caps.contains(Caps::READ), "READ not advertised: {caps:?}");
    if caps.contains(Caps::SEND) {
        c.send(b"two-sided").unwrap();
        assert_eq!(&expect_recv(s.wait(PollMode::Hot, T))[..], b"two-sided");
    }
    if caps.contains(Caps::WRITE_IMM) {
        let rb = c.peer_buffers()[0];
        c.write_imm(b"one-sided", &rb, 0, 5).unwrap();
        let mode = if caps.contains(Caps::WAIT_FD) {
            PollMode::Warm
        } else {
            PollMode::Hot
        };
        let w = expect_write(s.wait(mode, T));
        if caps.contains(Caps::ZERO_COPY) || caps.contains(Caps::WRITE_IMM) {
            assert_eq!(mr.to_vec(0, w.len as usize).unwrap(), b"one-sided");
        }
    }
    if caps.contains(Caps::INTER_NODE) {
        // shm is the one provider that cannot leave the host.
        assert_ne!(kind, TransportKind::Shm);
    }
}

pub fn lent_memory_is_read(kind: TransportKind) {
    // A buffer of the caller's (not a registered region) lent to the peer,
    // read one-sided by it, refused outside the loan, unreachable after.
    const LEN: usize = 3 << 20;
    let (mut s, mut c) = pair(kind, &[], &[]);
    let data = pattern(LEN, 9);
    let loan = s.lend(data.as_ptr(), data.len()).unwrap();
    if !s.caps().contains(Caps::LEND) {
        assert!(loan.is_none(), "{kind:?} lent without Caps::LEND");
        let lent = rfx_fabric::LentBuffer {
            addr: data.as_ptr() as u64,
            len: LEN as u64,
            key: 1,
        };
        let mut out = [0u8; 8];
        assert!(matches!(
            c.read_lent(&lent, 0, &mut out),
            Err(FabricError::RemoteAccess { .. })
        ));
        return;
    }
    let loan = loan.expect("Caps::LEND but no loan");
    let lent = loan.lent();
    // Named by address, or by offset where the provider addresses its
    // registrations so (libfabric's tcp).
    assert!(
        lent.addr == data.as_ptr() as u64 || lent.addr == 0,
        "{lent:?}"
    );
    assert_eq!(lent.len, LEN as u64);
    let mut all = vec![0u8; LEN];
    c.read_lent(&lent, 0, &mut all).unwrap();
    assert!(all == data, "the lent bytes arrived changed");
    let mut mid = vec![0u8; 4097];
    c.read_lent(&lent, 12345, &mut mid).unwrap();
    assert_eq!(mid[..], data[12345..12345 + 4097]);
    // Outside the loan: refused before anything is posted; the endpoint
    // lives on.
    let mut past = [0u8; 2];
    assert!(matches!(
        c.read_lent(&lent, LEN as u64 - 1, &mut past),
        Err(FabricError::RemoteAccess { .. })
    ));
    let mut last = [0u8; 1];
    c.read_lent(&lent, LEN as u64 - 1, &mut last).unwrap();
    assert_eq!(last[0], data[LEN - 1]);
    // An ended loan is out of reach: the device refuses the READ.
    let (mut s2, mut c2) = pair(kind, &[], &[]);
    let ended = s2.lend(data.as_ptr(), LEN).unwrap().unwrap();
    let ended_at = ended.lent();
    drop(ended);
    let mut after = vec![0u8; 4096];
    assert!(c2.read_lent(&ended_at, 0, &mut after).is_err());
    assert!(after.iter().all(|&b| b == 0), "read an ended loan");
    drop((s2, c2));
    // A lie about the range reaches the device, which refuses it: an
    // error, not other memory (the connection is over then).
    let mut beyond = vec![0u8; 4096];
    let forged = rfx_fabric::LentBuffer {
        len: lent.len + 4096,
        ..lent
    };
    assert!(c.read_lent(&forged, LEN as u64, &mut beyond).is_err());
    assert!(beyond.iter().all(|&b| b == 0), "read past the loan");
    drop(loan);
    drop(s);
}

pub fn oversized_send_refused(kind: TransportKind) {
    let mut cfg = config(kind);
    cfg.max_message = 1 << 16;
    let f = rfx_fabric::Fabric::open(cfg).unwrap();
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || listener.accept(&ConnectOptions::new()));
    let mut c = f.connect(addr, &ConnectOptions::new()).unwrap();
    let mut s = server.join().unwrap().unwrap();
    let r = c.send(&vec![0u8; (1 << 16) + 1]);
    assert!(matches!(r, Err(FabricError::TooLarge { .. })), "{r:?}");
    c.send(&vec![1u8; 1 << 16]).unwrap();
    assert_eq!(expect_recv(s.wait(PollMode::Hot, T)).len(), 1 << 16);
}

/// The peer process dies after three writes: they are delivered, then the
/// death is reported, in hot and warm mode.
pub fn peer_death_detected(kind: TransportKind) {
    for mode in [PollMode::Hot, PollMode::Warm] {
        let f = fabric(kind);
        let mr = f.register(64).unwrap();
        let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let _peer = PeerProcess::spawn("die_after_writes", kind, listener.local_addr().unwrap());
        let mut s = listener
            .incoming(Some(T))
            .unwrap()
            .accept(&ConnectOptions::new().expose(&mr), |_| Ok(()))
            .unwrap();
        for imm in 1..=3 {
            assert_eq!(expect_write(s.wait(mode, T)).imm, imm);
        }
        let t0 = Instant::now();
        let r = s.wait(mode, T);
        assert!(matches!(&r, Err(e) if e.is_peer_gone()), "{mode:?}: {r:?}");
        assert!(t0.elapsed() < T);
        // Dead stays dead.
        assert!(matches!(s.poll(), Err(e) if e.is_peer_gone()));
        let rb = s.peer_buffers().first().copied();
        assert!(rb.is_none());
        assert!(s.send(b"anyone?").is_err());
    }
}

/// A peer writes, then dies; a post of ours finds it gone before we
/// polled: its writes are still delivered, in order, then `PeerGone`.
pub fn last_words_survive_a_failed_post(kind: TransportKind) {
    let f = fabric(kind);
    let mr = f.register(64).unwrap();
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut peer = PeerProcess::spawn("die_after_writes", kind, listener.local_addr().unwrap());
    let mut s = listener
        .incoming(Some(T))
        .unwrap()
        .accept(&ConnectOptions::new().expose(&mr), |_| Ok(()))
        .unwrap();
    peer.0.wait().unwrap();
    // Post until a post notices (bounded); a provider may accept a few
    // into its buffers first.
    let mut failed = false;
    for _ in 0..200 {
        if s.send(b"anyone?").is_err() {
            failed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = Vec::new();
    let t0 = Instant::now();
    let end = loop {
        match s.poll() {
            Ok(Some(c)) => got.push(expect_write(Ok(c)).imm),
            Ok(None) if t0.elapsed() < T => std::thread::yield_now(),
            other => break other,
        }
    };
    assert_eq!(
        got,
        vec![1, 2, 3],
        "{kind:?}: the peer's writes (post failed: {failed})"
    );
    assert!(
        matches!(&end, Err(e) if e.is_peer_gone()),
        "{kind:?}: {end:?}"
    );
}

/// A sender that closes in order (`close_start`, then `close_done`
/// until true) loses nothing, though it had input it never read and its
/// receiver was slow: more than the kernel buffers hold goes out, the
/// receiver starts late and answers every write (input the sender leaves
/// unread, which makes a plain tcp close a reset that drops the rest).
pub fn orderly_close_loses_nothing(kind: TransportKind) {
    const N: u32 = 48;
    const LEN: usize = 1 << 20;
    let f = fabric(kind);
    let mr = f.register(LEN).unwrap();
    let (mut s, mut c) = pair(kind, std::slice::from_ref(&mr), &[]);
    let sender = std::thread::spawn(move || {
        let rb = c.peer_buffers()[0];
        for i in 0..N {
            c.write_imm(&pattern(LEN, i as u8), &rb, 0, i).unwrap();
        }
        c.close_start();
        let t0 = Instant::now();
        while !c.close_done() && t0.elapsed() < T {
            std::thread::sleep(Duration::from_millis(1));
        }
        c.close_done()
    });
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..N {
        let w = expect_write(s.wait(PollMode::Warm, T));
        assert_eq!(w.imm, i, "{kind:?}: writes lost or reordered");
        if i == N - 1 {
            assert!(mr.to_vec(0, LEN).unwrap() == pattern(LEN, i as u8));
        }
        let _ = s.send(b"ack");
    }
    let end = s.wait(PollMode::Warm, T);
    assert!(
        matches!(&end, Err(e) if e.is_peer_gone()),
        "{kind:?}: {end:?}"
    );
    assert!(sender.join().unwrap(), "{kind:?}: the close never finished");
}

/// The peer process is killed (SIGKILL) while we sleep in warm mode.
pub fn peer_killed_while_waiting(kind: TransportKind) {
    let f = fabric(kind);
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut peer = PeerProcess::spawn("hang", kind, listener.local_addr().unwrap());
    let mut s = listener
        .incoming(Some(T))
        .unwrap()
        .accept(&ConnectOptions::new(), |_| Ok(()))
        .unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        peer.0.kill().unwrap();
        peer
    });
    let r = s.wait(PollMode::Warm, T);
    assert!(matches!(&r, Err(e) if e.is_peer_gone()), "{r:?}");
    drop(killer.join().unwrap());
}

/// Entry of the child processes (see [`PeerProcess`]).
pub fn peer_main(role: &str) {
    let kind: TransportKind = std::env::var("RFX_TRANSPORT").unwrap().parse().unwrap();
    let addr = std::env::var("RFX_CONFORMANCE_ADDR")
        .unwrap()
        .parse()
        .unwrap();
    let f = fabric(kind);
    let mut c = f.connect(addr, &ConnectOptions::new()).unwrap();
    match role {
        "die_after_writes" => {
            let rb = c.peer_buffers()[0];
            for imm in 1..=3 {
                c.write_imm(&[imm as u8], &rb, 0, imm).unwrap();
            }
            // No close, no destructors: as a crash.
            std::process::abort();
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        other => panic!("unknown role {other}"),
    }
}

/// Reads one handshake message of `kind` off a raw socket.
fn read_raw<T: serde::de::DeserializeOwned>(sock: &mut TcpStream, kind: HandshakeKind) -> T {
    let mut head = [0u8; wire::HANDSHAKE_HEADER_LEN];
    sock.read_exact(&mut head).unwrap();
    let (k, len) = wire::decode_handshake_header(&head).unwrap();
    assert_eq!(k, kind);
    let mut body = vec![0; len];
    sock.read_exact(&mut body).unwrap();
    wire::decode_body(&body).unwrap()
}

/// A hand-made tcp client that completes the handshake (no secret), for
/// sending what a real endpoint never would.
fn raw_client(addr: std::net::SocketAddr) -> (TcpStream, Accept) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    // The server speaks first.
    let challenge: Challenge = read_raw(&mut sock, HandshakeKind::Challenge);
    assert_ne!(challenge.nonce, [0; 32]);
    let hello = ClientHello {
        hello: Hello {
            host: "a-host-far-away".into(),
            pid: 1,
            forced: Some(TransportKind::Tcp),
            providers: fabric(TransportKind::Tcp).providers().to_vec(),
            buffers: vec![],
            user: vec![],
        },
        nonce: [7; 32],
        proof: None,
    };
    sock.write_all(&wire::encode_handshake(HandshakeKind::Hello, &hello))
        .unwrap();
    let accept: Accept = read_raw(&mut sock, HandshakeKind::Accept);
    assert_eq!(
        accept.proof, None,
        "a server without a secret proves nothing"
    );
    (sock, accept)
}

/// tcp receive-side checks: a peer that bypasses the writer's checks gets
/// its connection closed and memory stays untouched.
pub fn tcp_hostile_frames() {
    let bad: [fn(&RemoteBuffer) -> Vec<u8>; 4] = [
        |rb| {
            FrameHeader {
                op: Op::Write,
                flags: 0,
                imm: 1,
                rkey: rb.rkey ^ 1,
                len: 4,
                addr: rb.addr,
            }
            .encode()
            .to_vec()
        },
        |rb| {
            FrameHeader {
                op: Op::Write,
                flags: 0,
                imm: 1,
                rkey: rb.rkey,
                len: 65,
                addr: rb.addr,
            }
            .encode()
            .to_vec()
        },
        |_| vec![0xee; 24],
        |_| {
            FrameHeader {
                len: u32::MAX,
                ..FrameHeader::new(Op::Send)
            }
            .encode()
            .to_vec()
        },
    ];
    for make in bad {
        let f = fabric(TransportKind::Tcp);
        let mr = f.register(64).unwrap();
        let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = ConnectOptions::new().expose(&mr);
        let server = std::thread::spawn(move || listener.accept(&opts));
        let (mut sock, accept) = raw_client(addr);
        let mut s = server.join().unwrap().unwrap();
        let rb = accept.hello.buffers[0];
        let mut frame = make(&rb);
        frame.extend_from_slice(&[0xff; 65]);
        sock.write_all(&frame).unwrap();
        let r = s.wait(PollMode::Hot, T);
        assert!(matches!(r, Err(FabricError::Malformed(_))), "{r:?}");
        assert!(s.poll().is_err(), "endpoint must stay closed");
        assert!(mr.to_vec(0, 64).unwrap().iter().all(|&b| b == 0));
    }
}

/// tcp: the owner checks a read itself. A forged request gets a refusal
/// (and the connection lives on); a valid one gets the bytes; a reply to
/// no read closes the connection.
pub fn tcp_owner_checks_reads() {
    let f = fabric(TransportKind::Tcp);
    let mr = f.register(64).unwrap();
    mr.write_at(0, b"owner data").unwrap();
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ConnectOptions::new().expose(&mr);
    let server = std::thread::spawn(move || listener.accept(&opts));
    let (mut sock, accept) = raw_client(addr);
    let mut s = server.join().unwrap().unwrap();
    let rb = accept.hello.buffers[0];
    let read = |id: u32, rkey: u32, len: u32, addr: u64| FrameHeader {
        op: Op::Read,
        flags: 0,
        imm: id,
        rkey,
        len,
        addr,
    };
    let reply = |sock: &mut TcpStream, s: &mut rfx_fabric::Endpoint| {
        // The owner answers from its poll loop.
        let mut head = [0u8; wire::FRAME_HEADER_LEN];
        sock.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + T;
        let mut got = 0;
        while got < head.len() {
            assert!(s.poll().unwrap().is_none());
            match sock.read(&mut head[got..]) {
                Ok(0) => panic!("owner closed"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no reply")
                }
                Err(e) => panic!("{e}"),
            }
        }
        sock.set_nonblocking(false).unwrap();
        let h = FrameHeader::decode(&head).unwrap();
        let mut data = vec![0u8; h.len as usize];
        sock.read_exact(&mut data).unwrap();
        (h, data)
    };
    for forged in [
        read(1, rb.rkey ^ 1, 4, rb.addr),
        read(2, rb.rkey, 65, rb.addr),
        read(3, rb.rkey, 8, rb.addr + 60),
    ] {
        sock.write_all(&forged.encode()).unwrap();
        let (h, data) = reply(&mut sock, &mut s);
        assert_eq!(
            (h.op, h.imm, h.flags),
            (Op::ReadReply, forged.imm, wire::FLAG_REFUSED)
        );
        assert!(data.is_empty());
    }
    sock.write_all(&read(4, rb.rkey, 10, rb.addr).encode())
        .unwrap();
    let (h, data) = reply(&mut sock, &mut s);
    assert_eq!((h.op, h.imm, h.flags), (Op::ReadReply, 4, 0));
    assert_eq!(data, b"owner data");
    // A reply nobody asked for is a protocol violation.
    let stray = FrameHeader {
        imm: 9,
        ..FrameHeader::new(Op::ReadReply)
    };
    sock.write_all(&stray.encode()).unwrap();
    let r = s.wait(PollMode::Hot, T);
    assert!(matches!(r, Err(FabricError::Malformed(_))), "{r:?}");
}

/// tcp: the peer vanishes in the middle of a payload.
pub fn tcp_peer_gone_mid_transfer() {
    let f = fabric(TransportKind::Tcp);
    let mr = f.register(1 << 20).unwrap();
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ConnectOptions::new().expose(&mr);
    let server = std::thread::spawn(move || listener.accept(&opts));
    let (mut sock, accept) = raw_client(addr);
    let mut s = server.join().unwrap().unwrap();
    let rb = accept.hello.buffers[0];
    let hdr = FrameHeader {
        op: Op::Write,
        flags: 0,
        imm: 1,
        rkey: rb.rkey,
        len: 1 << 20,
        addr: rb.addr,
    };
    sock.write_all(&hdr.encode()).unwrap();
    sock.write_all(&[7u8; 1000]).unwrap();
    drop(sock);
    let r = s.wait(PollMode::Warm, T);
    match r {
        Err(FabricError::PeerGone(why)) => assert!(why.contains("middle"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// Garbage, wrong versions and refused tokens all end in clear errors on
/// both sides, never a hang.
pub fn malformed_handshakes(kind: TransportKind) {
    let f = fabric(kind);
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();

    // Garbage to the server.
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = listener
        .incoming(Some(T))
        .unwrap()
        .accept(&ConnectOptions::new(), |_| Ok(()));
    assert!(
        matches!(r, Err(FabricError::Malformed(wire::WireError::BadMagic(_)))),
        "{r:?}"
    );

    // Another protocol version: the server says why.
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut msg = wire::encode_handshake(HandshakeKind::Hello, &"whatever");
    msg[4..6].copy_from_slice(&99u16.to_le_bytes());
    sock.write_all(&msg).unwrap();
    let r = listener
        .incoming(Some(T))
        .unwrap()
        .accept(&ConnectOptions::new(), |_| Ok(()));
    assert!(
        matches!(
            r,
            Err(FabricError::Malformed(wire::WireError::Version {
                theirs: 99,
                ..
            }))
        ),
        "{r:?}"
    );
    let _: Challenge = read_raw(&mut sock, HandshakeKind::Challenge);
    let why: String = read_raw(&mut sock, HandshakeKind::Reject);
    assert!(why.contains("version 99"), "{why}");

    // A client that does not wait for the challenge and sends a body that
    // is no client hello.
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    sock.write_all(&wire::encode_handshake(HandshakeKind::Hello, &"whatever"))
        .unwrap();
    let r = listener
        .incoming(Some(T))
        .unwrap()
        .accept(&ConnectOptions::new(), |_| Ok(()));
    assert!(matches!(r, Err(FabricError::Malformed(_))), "{r:?}");
    let _: Challenge = read_raw(&mut sock, HandshakeKind::Challenge);
    let _: String = read_raw(&mut sock, HandshakeKind::Reject);

    // A token the server refuses.
    let server = std::thread::spawn(move || {
        listener
            .incoming(Some(T))
            .unwrap()
            .accept(&ConnectOptions::new(), |h| {
                if h.user == b"good" {
                    Ok(())
                } else {
                    Err("bad token".into())
                }
            })
    });
    let r = f.connect(addr, &ConnectOptions::new().user_data(b"evil".to_vec()));
    assert!(
        matches!(&r, Err(FabricError::Rejected(why)) if why == "bad token"),
        "{r:?}"
    );
    assert!(matches!(
        server.join().unwrap(),
        Err(FabricError::Rejected(_))
    ));

    // A server that answers the hello with another challenge, and one that
    // speaks the old protocol (no challenge, waits for the hello).
    for (first, second) in [
        (
            Some(HandshakeKind::Challenge),
            Some(HandshakeKind::Challenge),
        ),
        (None, None),
    ] {
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let faddr = fake.local_addr().unwrap();
        let j = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            let msg = |k| wire::encode_handshake(k, &Challenge { nonce: [1; 32] });
            if let Some(k) = first {
                s.write_all(&msg(k)).unwrap();
            }
            if let Some(k) = second {
                // After the client's hello.
                let _: ClientHello = read_raw(&mut s, HandshakeKind::Hello);
                s.write_all(&msg(k)).unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut cfg = config(kind);
        cfg.connect_timeout = Duration::from_millis(300);
        let r = rfx_fabric::Fabric::open(cfg)
            .unwrap()
            .connect(faddr, &ConnectOptions::new());
        match first {
            Some(_) => assert!(
                matches!(&r, Err(FabricError::Handshake(why)) if why.contains("Challenge")),
                "{r:?}"
            ),
            None => assert!(matches!(r, Err(FabricError::Timeout { .. })), "{r:?}"),
        }
        j.join().unwrap();
    }

    // A server that is not rfx at all.
    let junk = TcpListener::bind("127.0.0.1:0").unwrap();
    let jaddr = junk.local_addr().unwrap();
    let j = std::thread::spawn(move || {
        let (mut s, _) = junk.accept().unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        std::thread::sleep(Duration::from_millis(200));
    });
    let r = f.connect(jaddr, &ConnectOptions::new());
    assert!(matches!(r, Err(FabricError::Malformed(_))), "{r:?}");
    j.join().unwrap();

    // A server that accepts and says nothing: bounded by the connect timeout.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = mute.local_addr().unwrap();
    let mut cfg = config(kind);
    cfg.connect_timeout = Duration::from_millis(300);
    let f2 = rfx_fabric::Fabric::open(cfg).unwrap();
    let r = f2.connect(maddr, &ConnectOptions::new());
    assert!(matches!(r, Err(FabricError::Timeout { .. })), "{r:?}");
    drop(mute);
}

/// Connects with `client_secret` to a server with `server_secret`: (the
/// client's result, the server's), the server's endpoint having been used
/// (so a server that returned one without a client at the other end fails).
fn secret_pair(
    kind: TransportKind,
    server_secret: Option<&'static [u8]>,
    client_secret: Option<&'static [u8]>,
) -> (
    Result<rfx_fabric::Endpoint, FabricError>,
    Result<(), FabricError>,
) {
    let f = fabric(kind);
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let smr = f.register(64).unwrap();
    let cmr = f.register(64).unwrap();
    let mut sopts = ConnectOptions::new()
        .expose(&smr)
        .user_data(b"srv".to_vec());
    if let Some(s) = server_secret {
        sopts = sopts.secret(s);
    }
    let server = std::thread::spawn(move || -> Result<(), FabricError> {
        let mut ep = listener.incoming(Some(T))?.accept(&sopts, |h| {
            assert_eq!(h.user, b"cli", "the client's user data");
            Ok(())
        })?;
        assert_eq!(ep.peer_user_data(), b"cli");
        // The client sends one message once it accepted us in turn.
        match ep.wait(PollMode::Warm, T)? {
            Completion::Recv(m) if &m[..] == b"hi" => Ok(()),
            other => panic!("unexpected {other:?}"),
        }
    });
    let mut copts = ConnectOptions::new()
        .expose(&cmr)
        .user_data(b"cli".to_vec());
    if let Some(s) = client_secret {
        copts = copts.secret(s);
    }
    let client = f.connect(addr, &copts).map(|mut ep| {
        assert_eq!(ep.peer_user_data(), b"srv");
        assert_eq!(ep.peer_buffers(), &[smr.remote()]);
        ep.send(b"hi").unwrap();
        ep
    });
    // The client's endpoint lives until the server got the message.
    let server = server.join().unwrap();
    (client, server)
}

/// The handshake's challenge-response (`ConnectOptions::secret`): the same
/// secret connects; a wrong or missing proof is refused on the side that
/// asked for one, with clear errors on both sides.
pub fn shared_secret(kind: TransportKind) {
    // Same secret; and no secret at all.
    for secret in [Some(&b"s3cret"[..]), None] {
        let (c, s) = secret_pair(kind, secret, secret);
        let ep = c.unwrap_or_else(|e| panic!("{secret:?}: {e}"));
        assert_eq!(ep.kind(), kind);
        s.unwrap();
    }

    // Wrong secret, and a client without one: the server refuses; the
    // client is told why, the server says what failed.
    for (client, failure) in [
        (Some(&b"wrong"[..]), AuthError::WrongProof),
        (None, AuthError::NoProof),
    ] {
        let f = fabric(kind);
        let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            listener
                .incoming(Some(T))
                .unwrap()
                .accept(&ConnectOptions::new().secret(b"s3cret"), |_| {
                    panic!("verify must not see an unauthenticated hello")
                })
        });
        let mut copts = ConnectOptions::new();
        if let Some(s) = client {
            copts = copts.secret(s);
        }
        let r = f.connect(addr, &copts);
        assert!(
            matches!(&r, Err(FabricError::Rejected(why)) if why.starts_with("authentication failed")),
            "{r:?}"
        );
        let r = server.join().unwrap();
        assert!(
            matches!(&r, Err(FabricError::AuthFailed(e)) if *e == failure),
            "{r:?}"
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .starts_with("authentication failed"));
    }

    // A client with a secret refuses a server that proves nothing (it has
    // none, or another one): it never talks to an impostor. The server's
    // side ends in an error too, never a hang.
    for server in [None, Some(&b"other"[..])] {
        let (c, s) = secret_pair(kind, server, Some(b"s3cret"));
        match (server, c) {
            (None, Err(FabricError::AuthFailed(AuthError::NoProof))) => {}
            // A server with another secret refuses the client first.
            (Some(_), Err(FabricError::Rejected(why))) => {
                assert!(why.starts_with("authentication failed"), "{why}")
            }
            (_, other) => panic!("{server:?}: {:?}", other.map(|_| ())),
        }
        assert!(s.is_err());
    }
    // The client's own check, on a server with another secret that does
    // not check clients: a raw server with a forged accept.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let faddr = fake.local_addr().unwrap();
    let j = std::thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let nonce_s = [5u8; 32];
        s.write_all(&wire::encode_handshake(
            HandshakeKind::Challenge,
            &Challenge { nonce: nonce_s },
        ))
        .unwrap();
        let hello: ClientHello = read_raw(&mut s, HandshakeKind::Hello);
        assert!(hello.proof.is_some());
        let mut accept = Accept {
            hello: hello.hello.clone(),
            transport: TransportKind::Tcp,
            shm: None,
            proof: None,
        };
        accept.proof = Some(rfx_fabric::auth::server_proof(
            b"not-the-secret",
            &nonce_s,
            &hello,
            &accept,
        ));
        s.write_all(&wire::encode_handshake(HandshakeKind::Accept, &accept))
            .unwrap();
        // The client must close without sending anything.
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    });
    let r = fabric(kind).connect(faddr, &ConnectOptions::new().secret(b"s3cret"));
    assert!(
        matches!(r, Err(FabricError::AuthFailed(AuthError::WrongProof))),
        "{r:?}"
    );
    j.join().unwrap();
}
