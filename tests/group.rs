//! End to end: group invocations on real `rfx executor` processes. The
//! instances get their rank and a communicator, and run collectives peer to
//! peer (the distributed dot product of `examples/functions`, an allreduce
//! from C); a member that dies fails the group's invocation, never hangs it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use rfx::client::{InvokeError, InvokerConfig};
use rfx::executors::group::{Group, Member};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, TransportChoice, TransportKind};
use support::*;

fn fabric(kind: TransportKind) -> Fabric {
    Fabric::open(Config {
        transport: TransportChoice::Forced(kind),
        ..Config::default()
    })
    .unwrap()
}

fn cfg() -> InvokerConfig {
    InvokerConfig {
        timeout: Duration::from_secs(40),
        ..InvokerConfig::default()
    }
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `n` executors, each with its own lease token.
fn executors(n: usize, kind: TransportKind) -> (Vec<Proc>, Vec<Member>) {
    (0..n)
        .map(|i| {
            let token = format!("group-token-{i}");
            let (p, addr) = executor(&token, kind.name(), &["--hot-timeout-ms", "0"]);
            (
                p,
                Member {
                    addr,
                    token: token.into_bytes(),
                },
            )
        })
        .unzip()
}

fn dot_product_over(kind: TransportKind, n: usize) {
    let ex = examples();
    let (_procs, members) = executors(n, kind);
    let lib = LibrarySource::Path(ex.rust.display().to_string());
    let mut g = Group::connect(&fabric(kind), &members, lib, &["dot", "rank_info"], cfg()).unwrap();
    assert_eq!(g.size(), n);
    assert!(g.transports().iter().all(|t| *t == kind));

    let ranks = g.invoke_all("rank_info", b"").unwrap();
    for (r, out) in ranks.iter().enumerate() {
        let rank = u32::from_le_bytes(out[..4].try_into().unwrap());
        let size = u32::from_le_bytes(out[4..].try_into().unwrap());
        assert_eq!((rank as usize, size as usize), (r, n));
    }

    // x = 0..len, y = 2 everywhere, split into n contiguous pieces.
    let len = 1000;
    let x: Vec<f64> = (0..len).map(f64::from).collect();
    let want: f64 = x.iter().map(|v| v * 2.0).sum();
    let bounds: Vec<usize> = (0..=n).map(|r| r * len as usize / n).collect();
    let inputs: Vec<Vec<u8>> = (0..n)
        .map(|r| {
            let piece = &x[bounds[r]..bounds[r + 1]];
            let mut v = f64s(piece);
            v.extend(f64s(&vec![2.0; piece.len()]));
            v
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    for _ in 0..3 {
        let outs = g.invoke("dot", &refs).unwrap();
        for out in outs {
            assert_eq!(f64::from_le_bytes(out.try_into().unwrap()), want);
        }
    }
}

#[test]
fn block_collectives_go_through_the_comm_table() {
    let ex = examples();
    let n = 3;
    let (_procs, members) = executors(n, TransportKind::Shm);
    let lib = LibrarySource::Path(ex.rust.display().to_string());
    let mut g = Group::connect(
        &fabric(TransportKind::Shm),
        &members,
        lib,
        &["blocks"],
        cfg(),
    )
    .unwrap();
    // Rank r's input: byte b is 10 * r + b.
    let inputs: Vec<Vec<u8>> = (0..n as u8)
        .map(|r| (0..n as u8).map(|b| 10 * r + b).collect())
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let outs = g.invoke("blocks", &refs).unwrap();
    for (r, out) in outs.iter().enumerate() {
        let r = r as u8;
        let all: Vec<u8> = (0..n as u8).map(|from| 10 * from + r).collect();
        assert_eq!(&out[..n], &all[..], "alltoall at rank {r}");
        if r == 0 {
            assert_eq!(&out[n..2 * n], &[0, 10, 20], "gather at the root");
        }
        assert_eq!(*out.last().unwrap(), 100 + r, "scatter to rank {r}");
    }
}

#[test]
fn dot_product_as_a_group_over_shm() {
    dot_product_over(TransportKind::Shm, 3);
}

#[test]
fn dot_product_as_a_group_over_tcp() {
    dot_product_over(TransportKind::Tcp, 2);
}

#[test]
fn c_function_allreduces_through_the_comm_table() {
    let ex = examples();
    let (_procs, members) = executors(2, TransportKind::Shm);
    let lib = LibrarySource::Bytes {
        name: "c".into(),
        bytes: std::fs::read(&ex.c).unwrap(),
    };
    let mut g = Group::connect(
        &fabric(TransportKind::Shm),
        &members,
        lib,
        &["group_sum_c"],
        cfg(),
    )
    .unwrap();
    let a = f64s(&[1.0, 2.0]);
    let b = f64s(&[10.0]);
    let outs = g.invoke("group_sum_c", &[&a, &b]).unwrap();
    for out in outs {
        assert_eq!(f64::from_le_bytes(out.try_into().unwrap()), 13.0);
    }
}

#[test]
fn outside_a_group_there_is_no_communicator() {
    let ex = examples();
    let (_p, addr) = executor("single", "shm", &[]);
    let mut inv = rfx::client::Invoker::connect(
        &fabric(TransportKind::Shm),
        addr,
        b"single",
        LibrarySource::Path(ex.rust.display().to_string()),
        &["dot"],
        cfg(),
    )
    .unwrap();
    assert!(matches!(
        inv.invoke("dot", &f64s(&[1.0, 1.0])),
        Err(InvokeError::FunctionFailed { .. })
    ));
}

#[test]
fn a_member_that_dies_fails_the_invocation_without_a_hang() {
    let ex = examples();
    let (mut procs, members) = executors(2, TransportKind::Tcp);
    let lib = LibrarySource::Path(ex.rust.display().to_string());
    let mut g =
        Group::connect(&fabric(TransportKind::Tcp), &members, lib, &["dot"], cfg()).unwrap();
    let input = f64s(&[1.0, 1.0]);
    g.invoke("dot", &[&input, &input]).unwrap();
    procs[1].0.kill().unwrap();
    procs[1].0.wait().unwrap();
    let t = Instant::now();
    // Member 0 waits in its allreduce for a peer that is gone: it must
    // fail (peer gone), and member 1's invocation fails at once.
    let r = g.invoke("dot", &[&input, &input]);
    assert!(r.is_err(), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(35),
        "took {:?}",
        t.elapsed()
    );
    // The survivor still serves single invocations.
    let m0 = &mut g.members()[0];
    assert!(matches!(
        m0.invoke("dot", &input),
        Err(InvokeError::FunctionFailed { .. })
    ));
}
