//! What the ranks do. Each role panics (non-zero exit) on a wrong result.

use std::time::{Duration, Instant};

use rfx_collectives::{CollError, Communicator, Element, Op, ReduceOp, Source, TagMatch};

/// Element types the tests build from small integers.
pub trait Gen: Element {
    fn from_u64(x: u64) -> Self;
    const FLOAT: bool;
}

macro_rules! gen {
    ($($t:ty => $f:expr),*) => {$(
        impl Gen for $t {
            fn from_u64(x: u64) -> Self { x as $t }
            const FLOAT: bool = $f;
        }
    )*};
}
gen!(u8 => false, i16 => false, i32 => false, u64 => false, i64 => false, usize => false,
     f32 => true, f64 => true);

fn input<T: Gen>(r: usize, j: usize) -> T {
    T::from_u64(((r * 7 + j * 3) % 5 + 1) as u64)
}

fn inputs<T: Gen>(r: usize, count: usize) -> Vec<T> {
    (0..count).map(|j| input(r, j)).collect()
}

fn fold<T: Gen>(ranks: std::ops::Range<usize>, count: usize, op: &Op<T>) -> Vec<T> {
    let mut acc = inputs::<T>(ranks.start, count);
    for r in ranks.start + 1..ranks.end {
        op.apply(&mut acc, &inputs::<T>(r, count)).unwrap();
    }
    acc
}

fn ops<T: Gen>() -> Vec<ReduceOp> {
    if T::FLOAT {
        vec![ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max]
    } else {
        ReduceOp::ALL.to_vec()
    }
}

/// Every collective against the sequential reference, for one type.
fn check_all<T: Gen>(c: &mut Communicator, count: usize, all_ops: bool) {
    let (me, n) = (c.rank(), c.size());
    let roots: Vec<usize> = if n > 1 { vec![0, n - 1] } else { vec![0] };
    let ops = if all_ops {
        ops::<T>()
    } else {
        vec![ReduceOp::Sum]
    };
    for &root in &roots {
        let mut b = if me == root {
            inputs::<T>(root, count)
        } else {
            vec![T::default(); count]
        };
        c.bcast(&mut b, root).unwrap();
        assert_eq!(
            b,
            inputs::<T>(root, count),
            "bcast root {root} count {count}"
        );
        for &op in &ops {
            let mut b = inputs::<T>(me, count);
            c.reduce(&mut b, root, op).unwrap();
            if me == root {
                assert_eq!(
                    b,
                    fold(0..n, count, &op.into()),
                    "reduce {op:?} root {root}"
                );
            }
            // Two buffers, as MPI_Reduce.
            let mut out = vec![T::default(); if me == root { count } else { 0 }];
            c.reduce_to(&inputs::<T>(me, count), &mut out, root, op)
                .unwrap();
            if me == root {
                assert_eq!(
                    out,
                    fold(0..n, count, &op.into()),
                    "reduce_to {op:?} root {root}"
                );
            }
        }
        let mut g = vec![T::default(); if me == root { n * count } else { 0 }];
        c.gather(&inputs::<T>(me, count), &mut g, root).unwrap();
        if me == root {
            let want: Vec<T> = (0..n).flat_map(|r| inputs::<T>(r, count)).collect();
            assert_eq!(g, want, "gather root {root}");
        }
        let all: Vec<T> = (0..n).flat_map(|r| inputs::<T>(r + 10, count)).collect();
        let mut s = vec![T::default(); count];
        c.scatter(if me == root { &all } else { &[] }, &mut s, root)
            .unwrap();
        assert_eq!(s, inputs::<T>(me + 10, count), "scatter root {root}");
    }
    for &op in &ops {
        let mut b = inputs::<T>(me, count);
        c.allreduce(&mut b, op).unwrap();
        assert_eq!(
            b,
            fold(0..n, count, &op.into()),
            "allreduce {op:?} count {count}"
        );
        // Two buffers, as MPI_Allreduce; the output starts as garbage.
        let mut out = inputs::<T>(me + 77, count);
        c.allreduce_to(&inputs::<T>(me, count), &mut out, op)
            .unwrap();
        assert_eq!(out, b, "allreduce_to {op:?} count {count}");
    }
    let mut ag = vec![T::default(); n * count];
    c.allgather(&inputs::<T>(me, count), &mut ag).unwrap();
    let want: Vec<T> = (0..n).flat_map(|r| inputs::<T>(r, count)).collect();
    assert_eq!(ag, want, "allgather");
    // reduce_scatter: rank q's input is inputs(q, n*count); rank r gets block r.
    let mut rs = vec![T::default(); count];
    c.reduce_scatter(&inputs::<T>(me, n * count), &mut rs, ReduceOp::Sum)
        .unwrap();
    let full = fold::<T>(0..n, n * count, &ReduceOp::Sum.into());
    assert_eq!(rs, full[me * count..(me + 1) * count], "reduce_scatter");
    // alltoall: block j of rank r's input is inputs(r*n+j).
    let send: Vec<T> = (0..n)
        .flat_map(|j| inputs::<T>(me * n + j, count))
        .collect();
    let mut recv = vec![T::default(); n * count];
    c.alltoall(&send, &mut recv).unwrap();
    let want: Vec<T> = (0..n)
        .flat_map(|q| inputs::<T>(q * n + me, count))
        .collect();
    assert_eq!(recv, want, "alltoall");
    let mut sc = inputs::<T>(me, count);
    c.scan(&mut sc, ReduceOp::Sum).unwrap();
    assert_eq!(sc, fold(0..me + 1, count, &ReduceOp::Sum.into()), "scan");
    let mut ex = inputs::<T>(me, count);
    c.exscan(&mut ex, ReduceOp::Max).unwrap();
    if me > 0 {
        assert_eq!(ex, fold(0..me, count, &ReduceOp::Max.into()), "exscan");
    }
    // Two buffers, as MPI_Scan and MPI_Exscan; the outputs start as garbage.
    let mut out = inputs::<T>(me + 55, count);
    c.scan_to(&inputs::<T>(me, count), &mut out, ReduceOp::Sum)
        .unwrap();
    assert_eq!(out, sc, "scan_to");
    let mut out = inputs::<T>(me + 66, count);
    c.exscan_to(&inputs::<T>(me, count), &mut out, ReduceOp::Max)
        .unwrap();
    let want = match me {
        0 => inputs::<T>(0, count),
        _ => ex,
    };
    assert_eq!(out, want, "exscan_to");
    c.barrier().unwrap();
}

fn sizes() -> Vec<usize> {
    std::env::var("RFX_COLL_TEST_COUNTS")
        .unwrap_or_else(|_| "0,1,7,1000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

pub fn all(c: &mut Communicator) {
    let big = std::env::var("RFX_COLL_TEST_TYPES").as_deref() == Ok("one");
    for count in sizes() {
        check_all::<i32>(c, count, !big);
        if !big {
            check_all::<f64>(c, count, true);
            check_all::<u8>(c, count, true);
            check_all::<u64>(c, count, false);
            check_all::<f32>(c, count, false);
            check_all::<i16>(c, count, false);
            check_all::<usize>(c, count, false);
        }
    }
    // A user-defined op: the maximum of absolute values.
    let absmax = Op::<i64>::custom(|acc, x| {
        for (a, b) in acc.iter_mut().zip(x) {
            *a = (*a).abs().max(b.abs());
        }
    });
    let me = c.rank() as i64;
    let mut v = vec![-me, me * 2];
    c.allreduce(&mut v, absmax).unwrap();
    let top = c.size() as i64 - 1;
    assert_eq!(v, vec![top, top * 2]);
    // Non-commutative user op in scan: keep the left operand -> rank 0's.
    let first = Op::<i64>::custom(|_acc, _x| {});
    let mut v = vec![me + 100];
    c.scan(&mut v, first.clone()).unwrap();
    assert_eq!(v, vec![100]);
    let mut w = vec![0];
    c.scan_to(&[me + 100], &mut w, first).unwrap();
    assert_eq!(w, vec![100]);
    point_to_point(c);
}

fn point_to_point(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    if n < 2 {
        return;
    }
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    // A ring exchange with sendrecv, large enough to fragment.
    let out: Vec<u32> = (0..100_000).map(|i| i + me as u32).collect();
    let mut got = vec![0u32; 100_000];
    let st = c.sendrecv(&out, right, 5, &mut got, left, 5u32).unwrap();
    assert_eq!(st.source, left);
    assert_eq!(got[7], 7 + left as u32);
    // Any-source gather at rank 0, tags matched.
    if me == 0 {
        let mut seen = vec![false; n];
        for _ in 1..n {
            let mut b = [0u16; 4];
            let st = c.recv(&mut b, Source::Any, TagMatch::Tag(9)).unwrap();
            assert_eq!(st.len, 2);
            assert_eq!(b[0] as usize, st.source);
            seen[st.source] = true;
        }
        assert!(seen[1..].iter().all(|&s| s));
    } else {
        c.send(&[me as u16, 0], 0, 9).unwrap();
    }
    // Truncation is an error, not a silent cut.
    if me == 1 {
        c.send(&[1u8; 10], 0, 11).unwrap();
    } else if me == 0 {
        let mut b = [0u8; 4];
        assert!(matches!(
            c.recv(&mut b, 1usize, 11u32),
            Err(CollError::Truncated { .. })
        ));
    }
    c.barrier().unwrap();
}

pub fn nonblocking(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    // Several collectives and receives in flight at once, completed in
    // an order different from the posting order.
    let r1 = c.iallreduce(vec![me as u64; 1000], ReduceOp::Sum).unwrap();
    let r2 = c
        .ibcast(
            if me == n - 1 {
                vec![42i32; 70_000]
            } else {
                vec![0; 70_000]
            },
            n - 1,
        )
        .unwrap();
    let rb = c.ibarrier();
    let r3 = c.iallgather(vec![me as u8; 3]);
    let recv = c.irecv(vec![0u64; 4], (me + n - 1) % n, 77u32).unwrap();
    let send = c.isend(vec![me as u64; 4], (me + 1) % n, 77).unwrap();
    let r4 = c.iscan(vec![1u32; 5], ReduceOp::Sum).unwrap();
    let r5 = c.ialltoall((0..n as u32).collect::<Vec<_>>()).unwrap();
    let r6 = c.ireduce_scatter(vec![1i32; n * 2], ReduceOp::Sum).unwrap();
    let r7 = c.igather(vec![me as u16], 0).unwrap();
    let r8 = c.iscatter((0..n as i64).collect(), 1, 0).unwrap();
    let r9 = c.ireduce(vec![2.0f64; 3], 0, ReduceOp::Prod).unwrap();
    let r10 = c.iexscan(vec![1u32], ReduceOp::Sum).unwrap();
    let mut r1 = r1;
    let _ = r1.test().unwrap();
    assert_eq!(
        r10.wait().unwrap(),
        vec![if me == 0 { 1 } else { me as u32 }]
    );
    let v9 = r9.wait().unwrap();
    if me == 0 {
        assert_eq!(v9, vec![2f64.powi(n as i32); 3]);
    }
    assert_eq!(r8.wait().unwrap(), vec![me as i64]);
    let g = r7.wait().unwrap();
    if me == 0 {
        assert_eq!(g, (0..n as u16).collect::<Vec<_>>());
    }
    assert_eq!(r6.wait().unwrap(), vec![n as i32; 2]);
    assert_eq!(r5.wait().unwrap(), vec![me as u32; n]);
    assert_eq!(r4.wait().unwrap(), vec![me as u32 + 1; 5]);
    assert_eq!(send.wait().unwrap(), vec![me as u64; 4]);
    let (b, st) = recv.wait().unwrap();
    assert_eq!((b, st.len), (vec![((me + n - 1) % n) as u64; 4], 4));
    assert_eq!(
        r3.wait().unwrap(),
        (0..n).flat_map(|r| [r as u8; 3]).collect::<Vec<_>>()
    );
    rb.wait().unwrap();
    assert_eq!(r2.wait().unwrap(), vec![42; 70_000]);
    let s = (n * (n - 1) / 2) as u64;
    assert_eq!(r1.wait().unwrap(), vec![s; 1000]);
}

pub fn split(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    // Even and odd ranks, reversed order by key.
    let mut sub = c
        .split(Some((me % 2) as u32), -(me as i32))
        .unwrap()
        .unwrap();
    let members: Vec<usize> = (0..n).filter(|r| r % 2 == me % 2).rev().collect();
    assert_eq!(sub.size(), members.len());
    assert_eq!(members[sub.rank()], me);
    let mut v = vec![me as u64];
    sub.allreduce(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v[0], members.iter().map(|&r| r as u64).sum::<u64>());
    // A rank with no color takes no part.
    let none = c.split(if me == 0 { None } else { Some(1) }, 0).unwrap();
    assert_eq!(none.is_none(), me == 0);
    if let Some(mut rest) = none {
        assert_eq!(rest.size(), n - 1);
        let mut b = vec![0u8; 3];
        if rest.rank() == 0 {
            b = vec![9; 3];
        }
        rest.bcast(&mut b, 0).unwrap();
        assert_eq!(b, vec![9; 3]);
    }
    // dup: same group, separate traffic. Messages on the dup with the same
    // tag never match receives on the parent.
    let mut d = c.dup().unwrap();
    assert_eq!((d.rank(), d.size()), (me, n));
    assert_ne!(d.context(), c.context());
    if n > 1 {
        if me == 0 {
            d.send(&[1u32], 1, 3).unwrap();
            c.send(&[2u32], 1, 3).unwrap();
        } else if me == 1 {
            let mut b = [0u32];
            c.recv(&mut b, 0usize, 3u32).unwrap();
            assert_eq!(b[0], 2, "parent receive matched the dup's message");
            d.recv(&mut b, 0usize, 3u32).unwrap();
            assert_eq!(b[0], 1);
        }
    }
    // Collectives on parent and child interleave without mixing.
    let r = d.iallreduce(vec![1u32], ReduceOp::Sum).unwrap();
    let mut v = vec![2u32];
    c.allreduce(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v[0], 2 * n as u32);
    assert_eq!(r.wait().unwrap()[0], n as u32);
    c.barrier().unwrap();
}

/// The last rank exits in the middle of the job; the others must fail
/// with an error naming it (or time out), not hang.
pub fn die(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    c.barrier().unwrap();
    if me == n - 1 {
        std::process::exit(7);
    }
    let start = Instant::now();
    let mut v = vec![1u64; 1 << 16];
    let mut err = None;
    for _ in 0..1000 {
        if let Err(e) = c.allreduce(&mut v, ReduceOp::Sum) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("allreduce with a dead rank succeeded");
    eprintln!("rank {me}: {e} after {:?}", start.elapsed());
    assert!(e.is_peer_gone() || e.is_timeout(), "unexpected error {e:?}");
    assert!(start.elapsed() < Duration::from_secs(20));
    // Exit without waiting to flush to the dead rank.
    std::process::exit(0);
}

/// Point to point beyond the flow-control window: blocking sends of a few
/// MiB both ways before any receive (sends never wait for the matching
/// receive), receives in another order than the sends, and non-blocking
/// collectives of large buffers completed in reverse order.
pub fn p2p_stress(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    if n < 2 {
        return;
    }
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let big: Vec<u64> = (0..400_000).map(|i| i * 3 + me as u64).collect();
    c.send(&big, right, 1).unwrap();
    c.send(&big[..100_000], right, 2).unwrap();
    c.send(&[me as u8; 3], right, 3).unwrap();
    let mut small = [0u8; 3];
    c.recv(&mut small, left, 3u32).unwrap();
    assert_eq!(small, [left as u8; 3]);
    let mut b2 = vec![0u64; 100_000];
    let st = c.recv(&mut b2, left, 2u32).unwrap();
    assert_eq!((st.source, st.len), (left, 100_000));
    assert!(b2
        .iter()
        .enumerate()
        .all(|(i, &x)| x == i as u64 * 3 + left as u64));
    let mut b1 = vec![0u64; 400_000];
    c.recv(&mut b1, left, 1u32).unwrap();
    assert!(b1
        .iter()
        .enumerate()
        .all(|(i, &x)| x == i as u64 * 3 + left as u64));
    // Large non-blocking collectives, waited in reverse order.
    let r1 = c
        .iallreduce(vec![me as u64 + 1; 300_000], ReduceOp::Sum)
        .unwrap();
    let r2 = c
        .ibcast(
            if me == 0 {
                vec![7u32; 500_000]
            } else {
                vec![0; 500_000]
            },
            0,
        )
        .unwrap();
    let r3 = c.iallgather(vec![me as u16; 200_000]);
    let g = r3.wait().unwrap();
    assert!(g
        .chunks(200_000)
        .enumerate()
        .all(|(r, b)| b.iter().all(|&x| x == r as u16)));
    assert_eq!(r2.wait().unwrap(), vec![7u32; 500_000]);
    let s = (n * (n + 1) / 2) as u64;
    assert_eq!(r1.wait().unwrap(), vec![s; 300_000]);
    // Blocking collectives right after, on a duplicate and the parent.
    let mut d = c.dup().unwrap();
    let mut v = vec![1i64; 250_000];
    d.allreduce(&mut v, ReduceOp::Sum).unwrap();
    assert!(v.iter().all(|&x| x == n as i64));
    let mut a = vec![0u8; n * 70_000];
    let send: Vec<u8> = (0..n * 70_000)
        .map(|i| (i / 70_000 + me * 10) as u8)
        .collect();
    c.alltoall(&send, &mut a).unwrap();
    for q in 0..n {
        assert!(a[q * 70_000..(q + 1) * 70_000]
            .iter()
            .all(|&x| x == (me + q * 10) as u8));
    }
    c.barrier().unwrap();
}

/// Small blocking collectives in a loop allocate nothing once warm: no
/// per-call buffers, schedules or messages on the heap.
pub fn no_alloc(c: &mut Communicator) {
    use std::sync::atomic::Ordering;
    let (me, n) = (c.rank(), c.size());
    let mut b = [me as u64; 1];
    let mut f = [me as f64; 4];
    let mut g = vec![0u32; 2 * n];
    let s = vec![me as u32; 2 * n];
    let mut r = [0u32; 2];
    let mut round = |c: &mut Communicator| {
        c.barrier().unwrap();
        c.bcast(&mut b, 0).unwrap();
        c.reduce(&mut f, n - 1, ReduceOp::Sum).unwrap();
        c.allreduce(&mut f, ReduceOp::Max).unwrap();
        c.gather(&s[..2], &mut g, 0).unwrap();
        c.scatter(&s, &mut r, 0).unwrap();
        c.allgather(&s[..2], &mut g).unwrap();
        c.alltoall(&s, &mut g).unwrap();
        c.scan(&mut f, ReduceOp::Sum).unwrap();
        f.iter_mut().for_each(|x| *x = x.rem_euclid(5.0));
    };
    for _ in 0..100 {
        round(c);
    }
    let before = crate::ALLOCS.load(Ordering::Relaxed);
    for _ in 0..300 {
        round(c);
    }
    let allocs = crate::ALLOCS.load(Ordering::Relaxed) - before;
    c.barrier().unwrap();
    assert_eq!(allocs, 0, "rank {me}: {allocs} allocations in 300 rounds");
}

/// Large messages between processes: read in place on shm (one copy)
/// unless turned off, through the inbox otherwise; the same bytes either
/// way. `RFX_COLL_TEST_READS` says which the stats must show.
pub fn single_copy(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let out: Vec<u64> = (0..(1 << 17)).map(|i| i * 5 + me as u64).collect();
    let mut got = vec![0u64; 1 << 17];
    c.sendrecv(&out, right, 1, &mut got, left, 1u32).unwrap();
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &x)| x == i as u64 * 5 + left as u64));
    let mut b: Vec<u8> = if me == 0 {
        (0..300_000).map(|i| (i % 253) as u8).collect()
    } else {
        vec![0; 300_000]
    };
    c.bcast(&mut b, 0).unwrap();
    assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 253) as u8));
    let mine = vec![me as u32 + 1; 50_000];
    let mut all = vec![0u32; 50_000 * n];
    c.allgather(&mine, &mut all).unwrap();
    for (r, blk) in all.chunks(50_000).enumerate() {
        assert!(blk.iter().all(|&x| x == r as u32 + 1), "block {r}");
    }
    // A receiver busy elsewhere: the large send still completes (the
    // receiver reads it out while it waits for the small one).
    if n == 2 {
        if me == 0 {
            c.send(&out, 1, 7).unwrap();
            c.send(&[9u8], 1, 8).unwrap();
        } else {
            let mut one = [0u8; 1];
            c.recv(&mut one, 0usize, 8u32).unwrap();
            c.recv(&mut got, 0usize, 7u32).unwrap();
            assert_eq!(one, [9]);
            assert!(got.iter().enumerate().all(|(i, &x)| x == i as u64 * 5));
        }
    }
    // A gather of 1 MiB blocks: the root copies its own block while the
    // peers write theirs into its buffer (PUSH), where they may.
    let root = n - 1;
    let block: Vec<u32> = (0..1u32 << 18).map(|i| i ^ (me as u32) << 24).collect();
    let mut gathered = vec![0u32; if me == root { block.len() * n } else { 0 }];
    for _ in 0..2 {
        gathered.fill(0);
        c.gather(&block, &mut gathered, root).unwrap();
    }
    if me == root {
        for (r, blk) in gathered.chunks(block.len()).enumerate() {
            let ok = blk
                .iter()
                .enumerate()
                .all(|(i, &x)| x == i as u32 ^ (r as u32) << 24);
            assert!(ok, "gathered block {r}");
        }
    }
    c.barrier().unwrap();
    let st = c.stats();
    let pushes = std::env::var("RFX_COLL_PUSH_MIN").as_deref() != Ok("0");
    match std::env::var("RFX_COLL_TEST_READS").as_deref() {
        Ok("yes") => {
            assert!(
                st.messages_read_in_place >= 2 && st.bytes_read_in_place >= 1 << 20,
                "{st:?}"
            );
            if me == root && pushes {
                // A block that came while the root was still in the
                // previous operation is read out there instead.
                let w = st.messages_written_in_place;
                assert!((1..=2 * (n as u64 - 1)).contains(&w), "{st:?}");
                assert_eq!(st.bytes_written_in_place, w << 20, "{st:?}");
            } else {
                assert_eq!(st.messages_written_in_place, 0, "{st:?}");
            }
        }
        Ok("no") => assert_eq!(
            st.messages_read_in_place + st.messages_written_in_place,
            0,
            "{st:?}"
        ),
        other => panic!("RFX_COLL_TEST_READS={other:?}"),
    }
}

/// Reductions between processes with a core each (2 ranks): the root of
/// a reduce of up to 256 KiB reads the message whole in the sender's
/// memory (`RFX_COLL_TEST_READS=yes`), straight into its output, and
/// combines it there with its input; 1 MiB, and the pairwise exchange of
/// an allreduce, go through the inbox. A scan with an operation that is not
/// commutative (keep the left operand) combines in place too, in rank
/// order. Results checked either way.
fn reduce_reads(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    let reads_on = test_flag("RFX_COLL_TEST_READS", "yes", "no");
    let want = |i: usize| (0..n).map(|r| (i as i32) ^ (r as i32) << 20).sum::<i32>();
    // i32 elements: 32 KiB (the root reduces it with its input in one
    // pass only when read whole), 256 KiB and 1 MiB.
    for (count, read) in [(1usize << 13, true), (1 << 16, true), (1 << 18, false)] {
        let input: Vec<i32> = (0..count).map(|i| (i as i32) ^ (me as i32) << 20).collect();
        let mut out = vec![0i32; if me == 0 { count } else { 0 }];
        let before = c.stats().messages_read_in_place;
        let before_in_place = c.stats().messages_combined_in_place;
        for _ in 0..3 {
            out.fill(0);
            c.reduce_to(&input, &mut out, 0, ReduceOp::Sum).unwrap();
            assert!(out.iter().enumerate().all(|(i, &x)| x == want(i)));
        }
        c.barrier().unwrap();
        let reads = c.stats().messages_read_in_place - before;
        let in_place = c.stats().messages_combined_in_place - before_in_place;
        if me == 0 && read && reads_on {
            assert_eq!(reads, 3, "reduce of {count} i32: {:?}", c.stats());
            assert_eq!(in_place, 3, "reduce of {count} i32: {:?}", c.stats());
        } else {
            assert_eq!(reads, 0, "reduce of {count} i32: {:?}", c.stats());
            assert_eq!(in_place, 0, "reduce of {count} i32: {:?}", c.stats());
        }
        let first = rfx_collectives::Op::<i32>::custom(|acc, x| {
            let _ = (acc, x);
        });
        let mut prefix = vec![0i32; count];
        let before = c.stats().messages_combined_in_place;
        c.scan_to(&input, &mut prefix, first).unwrap();
        // Keep-the-left over ranks 0..=me is rank 0's input everywhere.
        assert!(prefix.iter().enumerate().all(|(i, &x)| x == i as i32));
        c.barrier().unwrap();
        let in_place = c.stats().messages_combined_in_place - before;
        if me == 1 && read && reads_on {
            assert_eq!(in_place, 1, "scan of {count} i32: {:?}", c.stats());
        }
        let mut all = vec![0i32; count];
        let before = c.stats().messages_read_in_place;
        c.allreduce_to(&input, &mut all, ReduceOp::Sum).unwrap();
        assert!(all.iter().enumerate().all(|(i, &x)| x == want(i)));
        c.barrier().unwrap();
        let reads = c.stats().messages_read_in_place - before;
        assert_eq!(reads, 0, "allreduce of {count} i32: {:?}", c.stats());
    }
}

/// The schedules, seen through the messages each rank sends: with more
/// ranks than cores (`RFX_COLL_CORES`) a linear barrier and flat small
/// bcasts and reduces; otherwise dissemination and binomial trees.
fn flat_schedules(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    let linear = test_flag("RFX_COLL_TEST_FLAT", "linear", "dissemination");
    const ROUNDS: u64 = 20;
    let before = c.stats().messages_sent;
    for _ in 0..ROUNDS {
        c.barrier().unwrap();
    }
    let sent = c.stats().messages_sent - before;
    let per = if !linear {
        (n as f64).log2().ceil() as u64
    } else if me == 0 {
        n as u64 - 1
    } else {
        1
    };
    assert_eq!(sent, ROUNDS * per, "rank {me} of {n}: {:?}", c.stats());
    // Whichever the schedule, a barrier still waits for everyone: no rank
    // leaves it before the last one, which sleeps first, has entered. The
    // host's monotonic clock is the same in every rank. (Each rank timing
    // its own 200 ms from the previous barrier failed under load: a rank
    // that left that one late measured less, with the barrier correct.)
    let now_ns = || {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    };
    let mut entered = [0u64];
    if me == n - 1 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        entered[0] = now_ns();
    }
    c.barrier().unwrap();
    let left = now_ns();
    c.bcast(&mut entered, n - 1).unwrap();
    assert!(
        left >= entered[0],
        "rank {me} left the barrier {} ns before rank {} entered it",
        entered[0] - left,
        n - 1
    );
    // Small bcasts and reduces go flat with it: from / to the root alone.
    let mut b = [me as u64; 8];
    let before = c.stats().messages_sent;
    c.bcast(&mut b, 0).unwrap();
    assert_eq!(b, [0; 8]);
    let sent = c.stats().messages_sent - before;
    // Binomial: a rank sends to `me + m` for each power of two `m` below
    // its lowest set bit (every one for the root).
    let low = if me == 0 {
        n.next_power_of_two()
    } else {
        1 << me.trailing_zeros()
    };
    let bin_bcast = (0..usize::BITS)
        .map(|k| 1usize << k)
        .take_while(|&m| m < low)
        .filter(|&m| me + m < n)
        .count();
    let want = match (linear, me) {
        (true, 0) => n - 1,
        (true, _) => 0,
        (false, _) => bin_bcast,
    };
    assert_eq!(sent, want as u64, "bcast: rank {me} of {n}");
    let mut out = [0u64; 8];
    let before = c.stats().messages_sent;
    c.reduce_to(&[me as u64 + 1; 8], &mut out, 0, ReduceOp::Sum)
        .unwrap();
    if me == 0 {
        assert_eq!(out, [(n * (n + 1) / 2) as u64; 8]);
    }
    let sent = c.stats().messages_sent - before;
    // Every rank but the root sends once, flat or in a tree.
    assert_eq!(sent, u64::from(me != 0), "reduce: rank {me} of {n}");
}

/// Large bcasts and scatters on 2 ranks, and receives from blocking
/// sends: the receiver shares each copy with the sender
/// (`RFX_COLL_TEST_SHARE=yes`): the sender writes the first half into the
/// receiver's buffer while the receiver reads the second. Not from a
/// held-buffer send, whose sender may be away. The bytes are checked
/// either way, odd lengths included.
fn shared_copies(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    assert_eq!(n, 2);
    let sharing = test_flag("RFX_COLL_TEST_SHARE", "yes", "no");
    let before = c.stats();
    for len in [1usize << 20, 200_003] {
        for round in 0..2u8 {
            let want: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ round).collect();
            let mut b = if me == 0 {
                want.clone()
            } else {
                vec![0u8; len]
            };
            c.bcast(&mut b, 0).unwrap();
            assert!(b == want, "bcast of {len} bytes, round {round}");
        }
    }
    let block = 256 << 10;
    let all: Vec<u32> = (0..2 * block as u32 / 4)
        .map(|i| i.wrapping_mul(7))
        .collect();
    let mut mine = vec![0u32; block / 4];
    c.scatter(if me == 0 { &all[..] } else { &[] }, &mut mine, 0)
        .unwrap();
    assert!(mine == all[me * block / 4..(me + 1) * block / 4], "scatter");
    // Point to point: a blocking send waits for its receiver, which then
    // shares the copy; a held-buffer send (non-blocking) is only read.
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 241) as u8).collect();
    let odd: Vec<u8> = (0..300_001usize).map(|i| (i % 239) as u8).collect();
    if me == 0 {
        c.send(&big, 1, 1).unwrap();
        let mut got = vec![0u8; odd.len()];
        c.recv(&mut got, 1usize, 2u32).unwrap();
        assert!(got == odd, "recv from a blocking send");
        c.isend_held(big.clone(), 1, 3).unwrap().wait().unwrap();
    } else {
        let mut got = vec![0u8; big.len()];
        c.recv(&mut got, 0usize, 1u32).unwrap();
        assert!(got == big, "recv from a blocking send");
        c.send(&odd, 0, 2).unwrap();
        got.fill(0);
        c.recv(&mut got, 0usize, 3u32).unwrap();
        assert!(got == big, "recv from a held-buffer send");
    }
    c.barrier().unwrap();
    let st = c.stats();
    let shared = st.messages_shared - before.messages_shared;
    let (want, bytes) = match (sharing, me) {
        (false, _) => (0, 0),
        // bcasts, the scatter's block, the blocking send's message.
        (true, 1) => (6, 2 * (1 << 20) + 2 * 200_003 + block as u64 + (1 << 20)),
        (true, _) => (1, 300_001),
    };
    assert_eq!(shared, want, "rank {me}: {st:?}");
    assert_eq!(st.bytes_shared - before.bytes_shared, bytes, "{st:?}");
}

/// The test's setting `var`: `yes` (true) or `no` (false); anything else
/// is a mistake in the test.
fn test_flag(var: &str, yes: &str, no: &str) -> bool {
    match std::env::var(var).as_deref() {
        Ok(v) if v == yes => true,
        Ok(v) if v == no => false,
        other => panic!("{var}={other:?}: expected {yes} or {no}"),
    }
}

/// Messages over shm whole in one write (8 B and 128 B with their bytes in
/// the ring's record, 1 KiB landed in the inbox) that a waiting receive
/// can take are taken straight from the link
/// (`EngineStats::messages_taken_direct`), past the queue (and, from the
/// record, past the inbox); the others (another tag first, nobody
/// receiving yet) are queued as before and keep MPI's order. Over tcp none
/// are.
pub fn small_inline(c: &mut Communicator) {
    let (me, n) = (c.rank(), c.size());
    assert_eq!(n, 2, "a role for 2 ranks");
    let peer = 1 - me;
    let shm = c.transport(peer) == Some(rfx_fabric::TransportKind::Shm);
    for words in [1usize, 16, 128] {
        let before = c.stats().messages_taken_direct;
        let mut x = vec![0u64; words];
        for i in 0..1000u64 {
            let v: Vec<u64> = (0..words as u64).map(|k| i * 1000 + k).collect();
            if me == 0 {
                c.send(&v, peer, 5).unwrap();
                c.recv(&mut x, peer, 5u32).unwrap();
                assert!(x.iter().zip(&v).all(|(a, b)| *a == b + 1));
            } else {
                c.recv(&mut x, peer, 5u32).unwrap();
                assert_eq!(x, v);
                let back: Vec<u64> = x.iter().map(|a| a + 1).collect();
                c.send(&back, peer, 5).unwrap();
            }
        }
        let taken = c.stats().messages_taken_direct - before;
        let bytes = words * 8;
        eprintln!("rank {me}: {taken} of 1000 messages of {bytes} B taken from the link");
        if shm {
            // Most find their receive waiting; a few arrive while it polls
            // the other way (or while this rank is off its core).
            assert!(taken >= 100, "rank {me}: only {taken} of {bytes} B taken");
        } else {
            assert_eq!(taken, 0, "rank {me}: taken from a link over tcp");
        }
    }
    // Sent with tags 1, 2, 3 (and an empty one), received 3, 1, 2: the
    // receive of 3 finds 1 and 2 first, which must wait in the queue.
    if me == 0 {
        for t in 1..=3u32 {
            c.send(&[t as u8; 7], peer, t).unwrap();
        }
        c.send::<u8>(&[], peer, 9).unwrap();
    } else {
        for t in [3u32, 1, 2] {
            let mut b = [0u8; 7];
            let st = c.recv(&mut b, peer, t).unwrap();
            assert_eq!((b, st.tag, st.len), ([t as u8; 7], t, 7));
        }
        let st = c.recv::<u8>(&mut [], peer, 9u32).unwrap();
        assert_eq!((st.tag, st.len), (9, 0));
    }
    c.barrier().unwrap();
}

pub fn dispatch(role: &str) {
    let mut c = Communicator::from_env().expect("join the job");
    match role {
        "all" => all(&mut c),
        "nonblocking" => nonblocking(&mut c),
        "split" => split(&mut c),
        "die" => die(&mut c),
        "device" => crate::device::device(&mut c),
        "p2p_stress" => p2p_stress(&mut c),
        "no_alloc" => no_alloc(&mut c),
        "single_copy" => single_copy(&mut c),
        "reduce_reads" => reduce_reads(&mut c),
        "flat_schedules" => flat_schedules(&mut c),
        "shared_copies" => shared_copies(&mut c),
        "small_inline" => small_inline(&mut c),
        other => panic!("unknown role {other}"),
    }
}
