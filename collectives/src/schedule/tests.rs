//! Every rank's schedule run in memory, checked against a sequential
//! reference, for 1..=17 ranks, several counts (including fewer elements
//! than ranks) and roots.

use std::collections::{HashMap, VecDeque};

use super::*;

type F = fn(u64, u64) -> u64;

fn sum(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}
fn max(a: u64, b: u64) -> u64 {
    a.max(b)
}
/// Associative, not commutative: keeps the left operand.
fn first(a: u64, _b: u64) -> u64 {
    a
}
/// Associative, not commutative: keeps the right operand.
fn last(_a: u64, b: u64) -> u64 {
    b
}

/// A message in flight: its elements, and what its sender knew.
type Msg = (Vec<u64>, u64);

/// Runs the schedules of all ranks over FIFO channels; panics on a
/// deadlock, a length mismatch or a message left over. Returns what each
/// rank knows at its end: the set of ranks it heard from, directly or
/// through others (each message carries what its sender knew).
fn simulate(scheds: &[Vec<Step>], bufs: &mut [Vec<u64>], f: F) -> Vec<u64> {
    let n = scheds.len();
    let mut know: Vec<u64> = (0..n).map(|r| 1 << r).collect();
    let mut chans: HashMap<(usize, usize), VecDeque<Msg>> = HashMap::new();
    let mut pc = vec![0usize; n];
    loop {
        let mut moved = false;
        for me in 0..n {
            while let Some(step) = scheds[me].get(pc[me]) {
                match step {
                    Step::Send { to, blocks } => {
                        assert!(*to < n && *to != me, "rank {me} sends to {to}");
                        let data: Vec<u64> = blocks
                            .iter()
                            .flat_map(|r| bufs[me][r.clone()].to_vec())
                            .collect();
                        chans
                            .entry((me, *to))
                            .or_default()
                            .push_back((data, know[me]));
                    }
                    Step::Recv {
                        from,
                        blocks,
                        combine,
                    } => {
                        let Some((msg, k)) = chans.entry((*from, me)).or_default().pop_front()
                        else {
                            break;
                        };
                        know[me] |= k;
                        assert_eq!(msg.len(), step.elements(), "rank {me} from {from}");
                        let mut it = msg.into_iter();
                        let b = &mut bufs[me];
                        for r in blocks {
                            for i in r.clone() {
                                let m = it.next().expect("length checked");
                                b[i] = match *combine {
                                    Combine::Replace => m,
                                    Combine::Reduce => f(b[i], m),
                                    Combine::ReduceLeft => f(m, b[i]),
                                    Combine::ReduceFrom { back, left } => {
                                        let inp = b[i - back];
                                        if left {
                                            f(m, inp)
                                        } else {
                                            f(inp, m)
                                        }
                                    }
                                };
                            }
                        }
                    }
                    Step::Copy { from, to } => {
                        bufs[me].copy_within(from.clone(), *to);
                    }
                }
                pc[me] += 1;
                moved = true;
            }
        }
        if (0..n).all(|r| pc[r] == scheds[r].len()) {
            break;
        }
        assert!(moved, "deadlock at {pc:?}");
    }
    for ((a, b), q) in chans {
        assert!(
            q.is_empty(),
            "{} messages from {a} to {b} never received",
            q.len()
        );
    }
    know
}

fn input(r: usize, j: usize) -> u64 {
    (r as u64 + 1) * 1_000_003 + j as u64 * 7919
}

fn fold(n: usize, j: usize, f: F) -> u64 {
    (1..n).fold(input(0, j), |acc, r| f(acc, input(r, j)))
}

const COUNTS: [usize; 5] = [0, 1, 3, 17, 64];

/// Elements a schedule over `[input | output]` copies out of the input
/// (`count` each); panics on a copy into the input.
fn copied_from_input(steps: &[Step], count: usize) -> usize {
    steps
        .iter()
        .map(|st| match st {
            Step::Copy { from, to } => {
                assert!(*to >= count, "a copy into the input");
                if from.end <= count {
                    from.len()
                } else {
                    0
                }
            }
            _ => 0,
        })
        .sum()
}

/// Every rank's buffer of its input then an output of garbage.
fn input_then_output(n: usize, count: usize) -> Vec<Vec<u64>> {
    (0..n)
        .map(|r| {
            let mut b: Vec<u64> = (0..count).map(|j| input(r, j)).collect();
            b.resize(2 * count, 7);
            b
        })
        .collect()
}

fn ranks() -> impl Iterator<Item = usize> {
    1..=17
}

fn roots(n: usize) -> Vec<usize> {
    let mut r = vec![0, n - 1, n / 2, (n * 2) / 3];
    r.dedup();
    r
}

#[test]
fn barriers_complete_and_wait_for_everyone() {
    // A rank may leave only once it heard, directly or not, from every
    // rank: then every rank entered.
    type Make = fn(usize, usize) -> Vec<Step>;
    for (name, make) in [
        ("dissemination", barrier_dissemination as Make),
        ("linear", barrier_linear as Make),
    ] {
        for n in ranks() {
            let s: Vec<_> = (0..n).map(|me| make(me, n)).collect();
            let mut bufs = vec![vec![]; n];
            for (me, k) in simulate(&s, &mut bufs, sum).into_iter().enumerate() {
                assert_eq!(k, (1u64 << n) - 1, "{name} on {n}: rank {me}");
            }
        }
    }
    // Dissemination: ceil(log2 n) rounds of one send and one receive.
    for n in ranks() {
        let rounds = barrier_dissemination(0, n).len() / 2;
        assert_eq!(rounds, (n as f64).log2().ceil() as usize);
    }
    // Linear: each rank but 0 sends once and receives once.
    for n in ranks().filter(|&n| n > 1) {
        assert_eq!(barrier_linear(n - 1, n).len(), 2);
        assert_eq!(barrier_linear(0, n).len(), 2 * (n - 1));
    }
}

#[test]
fn bcast_algorithms() {
    for n in ranks() {
        for root in roots(n) {
            for count in COUNTS {
                for algo in 0..4 {
                    let s: Vec<_> = (0..n)
                        .map(|me| match algo {
                            0 => bcast_binomial(me, n, root, count),
                            1 => bcast_chain(me, n, root, count, 5),
                            2 => bcast_linear(me, n, root, count),
                            _ => bcast_chain(me, n, root, count, 1 << 20),
                        })
                        .collect();
                    let mut bufs: Vec<Vec<u64>> = (0..n)
                        .map(|r| {
                            if r == root {
                                (0..count).map(|j| input(r, j)).collect()
                            } else {
                                vec![0; count]
                            }
                        })
                        .collect();
                    simulate(&s, &mut bufs, sum);
                    let want: Vec<u64> = (0..count).map(|j| input(root, j)).collect();
                    for b in &bufs {
                        assert_eq!(b, &want, "bcast algo {algo} n={n} root={root}");
                    }
                }
            }
        }
    }
}

#[test]
fn reduce_algorithms() {
    for n in ranks() {
        for root in roots(n) {
            for count in COUNTS {
                for f in [sum as F, max] {
                    for algo in 0..4 {
                        let s: Vec<_> = (0..n)
                            .map(|me| match algo {
                                0 => reduce_binomial(me, n, root, count),
                                1 => reduce_rabenseifner(me, n, root, count),
                                2 => reduce_linear(me, n, root, count),
                                _ => reduce_chain(me, n, root, count, 4),
                            })
                            .collect();
                        let mut bufs: Vec<Vec<u64>> = (0..n)
                            .map(|r| (0..count).map(|j| input(r, j)).collect())
                            .collect();
                        simulate(&s, &mut bufs, f);
                        let want: Vec<u64> = (0..count).map(|j| fold(n, j, f)).collect();
                        assert_eq!(bufs[root], want, "reduce algo {algo} n={n} root={root}");
                    }
                }
            }
        }
    }
}

#[test]
fn allreduce_algorithms() {
    for n in ranks() {
        for count in COUNTS {
            for f in [sum as F, max] {
                for algo in 0..3 {
                    let s: Vec<_> = (0..n)
                        .map(|me| match algo {
                            0 => allreduce_recursive_doubling(me, n, count),
                            1 => allreduce_rabenseifner(me, n, count),
                            _ => allreduce_ring(me, n, count),
                        })
                        .collect();
                    let mut bufs: Vec<Vec<u64>> = (0..n)
                        .map(|r| (0..count).map(|j| input(r, j)).collect())
                        .collect();
                    simulate(&s, &mut bufs, f);
                    let want: Vec<u64> = (0..count).map(|j| fold(n, j, f)).collect();
                    for (r, b) in bufs.iter().enumerate() {
                        assert_eq!(
                            b, &want,
                            "allreduce algo {algo} n={n} count={count} rank {r}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn reductions_from_the_input_never_write_it_and_copy_less() {
    for n in ranks() {
        for count in COUNTS {
            for f in [sum as F, max] {
                // Fused receives always, some (of at least 3 elements), never.
                for (algo, fuse) in (0..6).flat_map(|a| [0usize, 3, usize::MAX].map(|f| (a, f))) {
                    let root = n / 2;
                    let s: Vec<_> = (0..n)
                        .map(|me| {
                            let (steps, finish) = match algo {
                                0 => (allreduce_recursive_doubling(me, n, count), true),
                                1 => (allreduce_rabenseifner(me, n, count), true),
                                2 => (allreduce_ring(me, n, count), true),
                                3 => (reduce_binomial(me, n, root, count), me == root),
                                4 => (reduce_linear(me, n, root, count), me == root),
                                _ => (reduce_rabenseifner(me, n, root, count), me == root),
                            };
                            reduce_from_input(steps, count, finish, fuse)
                        })
                        .collect();
                    for steps in &s {
                        for st in steps {
                            if let Step::Recv { blocks, .. } = st {
                                assert!(blocks.iter().all(|b| b.start >= count || b.is_empty()))
                            }
                        }
                        let copied = copied_from_input(steps, count);
                        assert!(copied <= count, "the input copied {copied} > {count}");
                    }
                    let mut bufs = input_then_output(n, count);
                    simulate(&s, &mut bufs, f);
                    let want: Vec<u64> = (0..count).map(|j| fold(n, j, f)).collect();
                    for (r, b) in bufs.iter().enumerate() {
                        let inp: Vec<u64> = (0..count).map(|j| input(r, j)).collect();
                        assert_eq!(&b[..count], &inp[..], "the input is untouched");
                        if algo <= 2 || r == root {
                            assert_eq!(
                                &b[count..],
                                &want[..],
                                "algo {algo} n={n} count={count} rank {r}"
                            );
                        }
                    }
                }
            }
        }
    }
    // Rabenseifner's first round sends half straight from the input and
    // reduces the other half from the input into the output in one pass:
    // nothing is copied.
    let s = reduce_from_input(allreduce_rabenseifner(0, 2, 8), 8, true, 0);
    assert_eq!(copied_from_input(&s, 8), 0, "{s:?}");
    assert!(
        s.iter().any(|st| matches!(
            st,
            Step::Recv {
                combine: Combine::ReduceFrom {
                    back: 8,
                    left: false
                },
                ..
            }
        )),
        "{s:?}"
    );
    // A receive into a part a step wrote in places still copies the input
    // under the rest first, then reduces in place.
    let steps = vec![
        recv(1, 0..2, Combine::Replace),
        recv(1, 0..4, Combine::Reduce),
    ];
    let s = reduce_from_input(steps.clone(), 4, true, 0);
    assert_eq!(
        s,
        vec![
            recv(1, 4..6, Combine::Replace),
            Step::Copy { from: 2..4, to: 6 },
            recv(1, 4..8, Combine::Reduce),
        ]
    );
    // Below the fusing size, a receive copies the input under it first.
    let s = reduce_from_input(vec![recv(1, 0..4, Combine::Reduce)], 4, true, 5);
    assert_eq!(
        s,
        vec![
            Step::Copy { from: 0..4, to: 4 },
            recv(1, 4..8, Combine::Reduce),
        ]
    );
}

#[test]
fn recursive_doubling_keeps_rank_order() {
    // With `first`/`last` (associative, not commutative), recursive
    // doubling must give rank 0's / rank n-1's value everywhere.
    for n in ranks() {
        for (f, src) in [(first as F, 0), (last as F, n - 1)] {
            let s: Vec<_> = (0..n)
                .map(|me| allreduce_recursive_doubling(me, n, 3))
                .collect();
            let mut bufs: Vec<Vec<u64>> = (0..n)
                .map(|r| (0..3).map(|j| input(r, j)).collect())
                .collect();
            simulate(&s, &mut bufs, f);
            for b in &bufs {
                assert_eq!(b, &(0..3).map(|j| input(src, j)).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn gather_scatter() {
    for n in ranks() {
        for root in roots(n) {
            for count in COUNTS {
                for linear in [false, true] {
                    gather_scatter_one(n, root, count, linear);
                }
            }
        }
    }
}

fn gather_scatter_one(n: usize, root: usize, count: usize, linear: bool) {
    {
        {
            {
                let s: Vec<_> = (0..n)
                    .map(|me| {
                        if linear {
                            gather_linear(me, n, root, count)
                        } else {
                            gather_binomial(me, n, root, count)
                        }
                    })
                    .collect();
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| {
                        let mut b = vec![0; n * count];
                        for j in 0..count {
                            b[r * count + j] = input(r, j);
                        }
                        b
                    })
                    .collect();
                simulate(&s, &mut bufs, sum);
                let want: Vec<u64> = (0..n)
                    .flat_map(|r| (0..count).map(move |j| input(r, j)))
                    .collect();
                assert_eq!(bufs[root], want, "gather n={n} root={root} count={count}");

                let s: Vec<_> = (0..n)
                    .map(|me| {
                        if linear {
                            scatter_linear(me, n, root, count)
                        } else {
                            scatter_binomial(me, n, root, count)
                        }
                    })
                    .collect();
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| {
                        if r == root {
                            want.clone()
                        } else {
                            vec![0; n * count]
                        }
                    })
                    .collect();
                simulate(&s, &mut bufs, sum);
                for (r, b) in bufs.iter().enumerate() {
                    assert_eq!(
                        &b[r * count..(r + 1) * count],
                        &want[r * count..(r + 1) * count],
                        "scatter n={n} root={root} rank {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn allgather_algorithms() {
    for n in ranks() {
        for count in COUNTS {
            for algo in 0..2 {
                let s: Vec<_> = (0..n)
                    .map(|me| match algo {
                        0 => allgather_recursive_doubling(me, n, count),
                        _ => allgather_ring(me, n, count),
                    })
                    .collect();
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| {
                        let mut b = vec![0; n * count];
                        for j in 0..count {
                            b[r * count + j] = input(r, j);
                        }
                        b
                    })
                    .collect();
                simulate(&s, &mut bufs, sum);
                let want: Vec<u64> = (0..n)
                    .flat_map(|r| (0..count).map(move |j| input(r, j)))
                    .collect();
                for b in &bufs {
                    assert_eq!(b, &want, "allgather algo {algo} n={n} count={count}");
                }
            }
        }
    }
}

#[test]
fn allgather_from_the_input_never_writes_it() {
    for n in ranks() {
        for count in COUNTS {
            for algo in 0..2 {
                let s: Vec<_> = (0..n)
                    .map(|me| {
                        let steps = match algo {
                            0 => allgather_recursive_doubling(me, n, count),
                            _ => allgather_ring(me, n, count),
                        };
                        allgather_from_input(steps, me, count)
                    })
                    .collect();
                for (me, steps) in s.iter().enumerate() {
                    for st in steps {
                        if let Step::Recv { blocks, .. } = st {
                            assert!(blocks.iter().all(|b| b.start >= count || b.is_empty()));
                        }
                        if let Step::Copy { to, .. } = st {
                            assert_eq!(*to, count + me * count);
                        }
                    }
                }
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| {
                        let mut b: Vec<u64> = (0..count).map(|j| input(r, j)).collect();
                        b.resize((n + 1) * count, 0);
                        b
                    })
                    .collect();
                simulate(&s, &mut bufs, sum);
                let want: Vec<u64> = (0..n)
                    .flat_map(|r| (0..count).map(move |j| input(r, j)))
                    .collect();
                for (r, b) in bufs.iter().enumerate() {
                    assert_eq!(&b[count..], &want[..], "algo {algo} n={n} count={count}");
                    let inp: Vec<u64> = (0..count).map(|j| input(r, j)).collect();
                    assert_eq!(&b[..count], &inp[..], "the input is untouched");
                }
            }
        }
    }
}

#[test]
fn reduce_scatter_and_alltoall() {
    for n in ranks() {
        for count in COUNTS {
            let s: Vec<_> = (0..n).map(|me| reduce_scatter_ring(me, n, count)).collect();
            let inp = |r: usize, i: usize| input(r, i) ^ (r as u64 * 77);
            let mut bufs: Vec<Vec<u64>> = (0..n)
                .map(|r| (0..n * count).map(|i| inp(r, i)).collect())
                .collect();
            simulate(&s, &mut bufs, sum);
            for (r, b) in bufs.iter().enumerate() {
                for j in 0..count {
                    let i = r * count + j;
                    let want = (0..n).fold(0u64, |a, q| a.wrapping_add(inp(q, i)));
                    assert_eq!(b[i], want, "reduce_scatter n={n} rank {r}");
                }
            }

            for linear in [false, true] {
                let s: Vec<_> = (0..n)
                    .map(|me| {
                        if linear {
                            alltoall_linear(me, n, count)
                        } else {
                            alltoall_pairwise(me, n, count)
                        }
                    })
                    .collect();
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| {
                        let mut b: Vec<u64> = (0..n * count).map(|i| inp(r, i)).collect();
                        b.resize(2 * n * count, 0);
                        b
                    })
                    .collect();
                simulate(&s, &mut bufs, sum);
                for (r, b) in bufs.iter().enumerate() {
                    for q in 0..n {
                        for j in 0..count {
                            assert_eq!(
                                b[n * count + q * count + j],
                                inp(q, r * count + j),
                                "alltoall linear={linear} n={n}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn scans_in_rank_order() {
    for n in ranks() {
        for count in COUNTS {
            for f in [sum as F, first, last] {
                for chain in [false, true] {
                    let s: Vec<_> = (0..n)
                        .map(|me| {
                            if chain {
                                scan_chain(me, n, count)
                            } else {
                                scan_recursive_doubling(me, n, count)
                            }
                        })
                        .collect();
                    let mut bufs: Vec<Vec<u64>> = (0..n)
                        .map(|r| (0..count).map(|j| input(r, j)).collect())
                        .collect();
                    simulate(&s, &mut bufs, f);
                    for (r, b) in bufs.iter().enumerate() {
                        let want: Vec<u64> = (0..count).map(|j| fold(r + 1, j, f)).collect();
                        assert_eq!(b, &want, "scan chain={chain} n={n} rank {r}");
                    }
                }
                let s: Vec<_> = (0..n).map(|me| exscan(me, n, count)).collect();
                let mut bufs: Vec<Vec<u64>> = (0..n)
                    .map(|r| (0..count).map(|j| input(r, j)).collect())
                    .collect();
                simulate(&s, &mut bufs, f);
                for (r, b) in bufs.iter().enumerate().skip(1) {
                    let want: Vec<u64> = (0..count).map(|j| fold(r, j, f)).collect();
                    assert_eq!(b, &want, "exscan n={n} rank {r}");
                }
            }
        }
    }
}

/// `scan_to` and `exscan_to`: from the input into the output, the input
/// never written and copied at most once, the prefixes in rank order.
#[test]
fn scans_from_the_input_never_write_it() {
    for n in ranks() {
        for count in COUNTS {
            for f in [sum as F, first, last] {
                for (kind, fuse) in (0..3).flat_map(|k| [0usize, 3, usize::MAX].map(|f| (k, f))) {
                    let s: Vec<_> = (0..n)
                        .map(|me| {
                            let steps = match kind {
                                0 => scan_recursive_doubling(me, n, count),
                                1 => scan_chain(me, n, count),
                                _ => exscan(me, n, count),
                            };
                            reduce_from_input(steps, count, true, fuse)
                        })
                        .collect();
                    for steps in &s {
                        let copied = copied_from_input(steps, count);
                        assert!(copied <= count, "the input copied {copied} > {count}");
                    }
                    let mut bufs = input_then_output(n, count);
                    simulate(&s, &mut bufs, f);
                    for (r, b) in bufs.iter().enumerate() {
                        let inp: Vec<u64> = (0..count).map(|j| input(r, j)).collect();
                        assert_eq!(&b[..count], &inp[..], "the input is untouched");
                        // exscan: rank 0 gets its own input.
                        let upto = if kind == 2 { r.max(1) } else { r + 1 };
                        let want: Vec<u64> = (0..count).map(|j| fold(upto, j, f)).collect();
                        assert_eq!(&b[count..], &want[..], "kind {kind} n={n} rank {r}");
                    }
                }
            }
        }
    }
}

#[test]
fn blocks_cover_the_buffer() {
    for count in [0usize, 1, 5, 100] {
        for parts in 1..=17 {
            assert_eq!(block_start(count, parts, 0), 0);
            assert_eq!(block_start(count, parts, parts), count);
            for i in 0..parts {
                assert!(block_start(count, parts, i) <= block_start(count, parts, i + 1));
            }
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn allreduce_any_shape(n in 1usize..=24, count in 0usize..200, algo in 0u8..3) {
            let s: Vec<_> = (0..n)
                .map(|me| match algo {
                    0 => allreduce_recursive_doubling(me, n, count),
                    1 => allreduce_rabenseifner(me, n, count),
                    _ => allreduce_ring(me, n, count),
                })
                .collect();
            let mut bufs: Vec<Vec<u64>> = (0..n)
                .map(|r| (0..count).map(|j| input(r, j)).collect())
                .collect();
            simulate(&s, &mut bufs, sum);
            let want: Vec<u64> = (0..count).map(|j| fold(n, j, sum)).collect();
            for b in &bufs {
                prop_assert_eq!(b, &want);
            }
        }
    }
}
