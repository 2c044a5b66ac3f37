//! Collective algorithms as data: for one rank, the list of [`Step`]s
//! (send these element ranges of the working buffer to rank P, receive
//! from rank Q into these ranges, replacing or reducing, copy locally).
//!
//! Pure code, no I/O: `rank, size, count -> Vec<Step>`. The engine runs the
//! steps over endpoints; the tests in `tests.rs` run every rank's schedule
//! in memory and compare with a sequential reference.
//!
//! Rules every schedule keeps, and the tests check:
//! - sends never wait (the engine buffers them), so a rank may send before
//!   it receives in the same round without deadlock;
//! - for every ordered pair (a, b), the sends of a to b and the receives of
//!   b from a appear in the same order with the same lengths (messages of
//!   one collective are matched first-in first-out per pair).
//!
//! Ranks are communicator ranks. `count` is in elements. Each algorithm
//! documents the layout of its working buffer.

// Vectors of one range are block lists that happen to hold one block.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

mod choose;
#[cfg(test)]
mod tests;

pub use choose::{choose, Algorithm, Collective};

/// How a received message lands in the working buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Overwrite.
    Replace,
    /// `buf = buf ⊕ msg`.
    Reduce,
    /// `buf = msg ⊕ buf` (the message comes from lower ranks; matters for
    /// non-commutative operations, used by scan).
    ReduceLeft,
    /// `buf = input ⊕ msg` (or `msg ⊕ input` with `left`), where each
    /// element's input lies `back` elements before it: a plan from the
    /// input ([`reduce_from_input`]) reduces into the output in one pass,
    /// without copying the input there first.
    ReduceFrom {
        /// Elements between an output element and its input.
        back: usize,
        /// The message comes from lower ranks (as [`Combine::ReduceLeft`]).
        left: bool,
    },
}

/// One step of a rank's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the concatenation of `blocks` to rank `to`.
    Send {
        /// Destination rank.
        to: usize,
        /// Element ranges of the working buffer, concatenated.
        blocks: Vec<Range<usize>>,
    },
    /// Receive a message from rank `from` into `blocks` (concatenated).
    Recv {
        /// Source rank.
        from: usize,
        /// Element ranges of the working buffer, concatenated.
        blocks: Vec<Range<usize>>,
        /// Replace or reduce.
        combine: Combine,
    },
    /// Copy elements `from` to the range starting at `to`.
    Copy {
        /// Source range.
        from: Range<usize>,
        /// Destination start.
        to: usize,
    },
}

impl Step {
    /// Elements moved by a send or receive.
    pub fn elements(&self) -> usize {
        match self {
            Step::Send { blocks, .. } | Step::Recv { blocks, .. } => {
                blocks.iter().map(|r| r.len()).sum()
            }
            Step::Copy { from, .. } => from.len(),
        }
    }
}

fn send(to: usize, r: Range<usize>) -> Step {
    Step::Send {
        to,
        blocks: vec![r],
    }
}

fn recv(from: usize, r: Range<usize>, combine: Combine) -> Step {
    Step::Recv {
        from,
        blocks: vec![r],
        combine,
    }
}

/// Start of block `i` when `count` elements are cut into `parts` nearly
/// equal blocks.
pub fn block_start(count: usize, parts: usize, i: usize) -> usize {
    // count * i / parts without overflow for realistic sizes.
    ((count as u128 * i as u128) / parts.max(1) as u128) as usize
}

fn block(count: usize, parts: usize, i: usize) -> Range<usize> {
    block_start(count, parts, i)..block_start(count, parts, i + 1)
}

/// The element ranges holding the blocks (of `count` elements each) of
/// relative ranks `a..b` in a buffer laid out by absolute rank, where
/// relative rank `v` is absolute rank `(v + root) % n`.
fn rel_blocks(a: usize, b: usize, root: usize, n: usize, count: usize) -> Vec<Range<usize>> {
    let len = b - a;
    let s = (a + root) % n;
    if s + len <= n {
        vec![s * count..(s + len) * count]
    } else {
        vec![s * count..n * count, 0..(s + len - n) * count]
    }
}

fn rel(me: usize, root: usize, n: usize) -> usize {
    (me + n - root) % n
}

fn abs(v: usize, root: usize, n: usize) -> usize {
    (v + root) % n
}

/// Dissemination barrier: round k sends to `me + 2^k` and receives from
/// `me - 2^k`; empty messages. ceil(log2 n) rounds.
pub fn barrier_dissemination(me: usize, n: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut d = 1;
    while d < n {
        steps.push(Step::Send {
            to: (me + d) % n,
            blocks: vec![],
        });
        steps.push(Step::Recv {
            from: (me + n - d) % n,
            blocks: vec![],
            combine: Combine::Replace,
        });
        d <<= 1;
    }
    steps
}

/// Linear barrier: every rank tells rank 0, which then releases them all.
pub fn barrier_linear(me: usize, n: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    if me == 0 {
        for r in 1..n {
            steps.push(recv(r, 0..0, Combine::Replace));
        }
        for r in 1..n {
            steps.push(Step::Send {
                to: r,
                blocks: vec![],
            });
        }
    } else {
        steps.push(Step::Send {
            to: 0,
            blocks: vec![],
        });
        steps.push(recv(0, 0..0, Combine::Replace));
    }
    steps
}

/// Binomial-tree broadcast of `count` elements from `root`.
/// Buffer: `count` elements.
pub fn bcast_binomial(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let v = rel(me, root, n);
    let mut mask = 1;
    while mask < n {
        if v & mask != 0 {
            steps.push(recv(abs(v - mask, root, n), 0..count, Combine::Replace));
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if v + mask < n {
            steps.push(send(abs(v + mask, root, n), 0..count));
        }
        mask >>= 1;
    }
    steps
}

/// Flat broadcast: `root` sends to every rank in turn.
/// Buffer: `count` elements.
pub fn bcast_linear(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    if me != root {
        return vec![recv(root, 0..count, Combine::Replace)];
    }
    (1..n).map(|v| send(abs(v, root, n), 0..count)).collect()
}

/// Pipelined chain broadcast: the buffer is cut into chunks of `chunk`
/// elements that flow root -> root+1 -> ... ; every rank forwards chunk c
/// as soon as it has it. Buffer: `count` elements.
pub fn bcast_chain(me: usize, n: usize, root: usize, count: usize, chunk: usize) -> Vec<Step> {
    let v = rel(me, root, n);
    let chunk = chunk.max(1);
    let mut steps = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + chunk).min(count);
        if v > 0 {
            steps.push(recv(abs(v - 1, root, n), start..end, Combine::Replace));
        }
        if v + 1 < n {
            steps.push(send(abs(v + 1, root, n), start..end));
        }
        start = end;
        if start >= count {
            break;
        }
    }
    steps
}

/// Flat reduce: every rank sends straight to `root`, which combines the
/// messages in rank order relative to the root (as the binomial tree's
/// order). Buffer: `count` elements; the result is on the root.
pub fn reduce_linear(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    if me != root {
        return vec![send(root, 0..count)];
    }
    (1..n)
        .map(|v| recv(abs(v, root, n), 0..count, Combine::Reduce))
        .collect()
}

/// Binomial-tree reduce to `root` (the mirror of [`bcast_binomial`]).
/// Buffer: `count` elements; the result is on the root.
pub fn reduce_binomial(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let v = rel(me, root, n);
    let mut mask = 1;
    while mask < n {
        if v & mask != 0 {
            steps.push(send(abs(v - mask, root, n), 0..count));
            break;
        }
        if v + mask < n {
            steps.push(recv(abs(v + mask, root, n), 0..count, Combine::Reduce));
        }
        mask <<= 1;
    }
    steps
}

/// Pipelined chain reduce: chunks flow from the far end of the chain
/// toward the root, each rank reducing its part on the way.
/// Buffer: `count` elements; the result is on the root.
pub fn reduce_chain(me: usize, n: usize, root: usize, count: usize, chunk: usize) -> Vec<Step> {
    let v = rel(me, root, n);
    let chunk = chunk.max(1);
    let mut steps = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + chunk).min(count);
        if v + 1 < n {
            steps.push(recv(abs(v + 1, root, n), start..end, Combine::Reduce));
        }
        if v > 0 {
            steps.push(send(abs(v - 1, root, n), start..end));
        }
        start = end;
        if start >= count {
            break;
        }
    }
    steps
}

/// The power-of-two core of `n` ranks: `rem = n - p` ranks are folded
/// into partners before the core runs and get the result after.
#[derive(Debug, Clone, Copy)]
struct Fold {
    p: usize,
    rem: usize,
}

impl Fold {
    fn new(n: usize) -> Fold {
        let p = if n == 0 {
            1
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        Fold { p, rem: n - p }
    }

    /// The virtual rank of `me` in the core, or `None` for a folded rank
    /// (even ranks below `2 * rem`).
    fn virt(self, me: usize) -> Option<usize> {
        if me < 2 * self.rem {
            (me % 2 == 1).then_some(me / 2)
        } else {
            Some(me - self.rem)
        }
    }

    /// The real rank of virtual rank `v`.
    fn real(self, v: usize) -> usize {
        if v < self.rem {
            2 * v + 1
        } else {
            v + self.rem
        }
    }

    /// First real rank whose block virtual rank `v` stands for.
    fn lo(self, v: usize) -> usize {
        if v < self.rem {
            2 * v
        } else {
            v + self.rem
        }
    }
}

/// Recursive-doubling allreduce with the non-power-of-two fix-up: even
/// ranks below `2 * rem` hand their data to the next rank, the `2^k` core
/// exchanges and reduces whole buffers in log2 rounds, and the folded
/// ranks get the result back. Buffer: `count` elements.
pub fn allreduce_recursive_doubling(me: usize, n: usize, count: usize) -> Vec<Step> {
    let f = Fold::new(n);
    let mut steps = Vec::new();
    let Some(v) = f.virt(me) else {
        steps.push(send(me + 1, 0..count));
        steps.push(recv(me + 1, 0..count, Combine::Replace));
        return steps;
    };
    if me < 2 * f.rem {
        steps.push(recv(me - 1, 0..count, Combine::ReduceLeft));
    }
    let mut mask = 1;
    while mask < f.p {
        let partner = f.real(v ^ mask);
        steps.push(send(partner, 0..count));
        let combine = if partner < me {
            Combine::ReduceLeft
        } else {
            Combine::Reduce
        };
        steps.push(recv(partner, 0..count, combine));
        mask <<= 1;
    }
    if me < 2 * f.rem {
        steps.push(send(me - 1, 0..count));
    }
    steps
}

/// Rabenseifner's allreduce: reduce-scatter by recursive halving, then
/// allgather by recursive doubling, over the power-of-two core (with the
/// same fix-up as [`allreduce_recursive_doubling`]). Moves ~2x the buffer
/// per rank instead of log2(n) x. Buffer: `count` elements.
pub fn allreduce_rabenseifner(me: usize, n: usize, count: usize) -> Vec<Step> {
    let f = Fold::new(n);
    let mut steps = Vec::new();
    let Some(v) = f.virt(me) else {
        steps.push(send(me + 1, 0..count));
        steps.push(recv(me + 1, 0..count, Combine::Replace));
        return steps;
    };
    if me < 2 * f.rem {
        steps.push(recv(me - 1, 0..count, Combine::ReduceLeft));
    }
    let p = f.p;
    let range = |a: usize, b: usize| block_start(count, p, a)..block_start(count, p, b);
    let (mut lo, mut hi) = reduce_scatter_halving(&mut steps, f, me, v, count);
    // Allgather: double the window back.
    let mut mask = 1;
    while mask < p {
        let partner_v = v ^ mask;
        let partner = f.real(partner_v);
        let size = hi - lo;
        let (plo, phi) = if v & mask == 0 {
            (hi, hi + size)
        } else {
            (lo - size, lo)
        };
        steps.push(send(partner, range(lo, hi)));
        steps.push(recv(partner, range(plo, phi), Combine::Replace));
        lo = lo.min(plo);
        hi = hi.max(phi);
        mask <<= 1;
    }
    if me < 2 * f.rem {
        steps.push(send(me - 1, 0..count));
    }
    steps
}

/// Rabenseifner's reduce-scatter by recursive halving over the
/// power-of-two core of `f`, for rank `me` (virtual rank `v`): each round
/// it keeps half of its window of `f.p` blocks and reduces the partner's
/// copy of that half into it. Returns its final window, block `v`.
fn reduce_scatter_halving(
    steps: &mut Vec<Step>,
    f: Fold,
    me: usize,
    v: usize,
    count: usize,
) -> (usize, usize) {
    let range = |a: usize, b: usize| block_start(count, f.p, a)..block_start(count, f.p, b);
    let (mut lo, mut hi) = (0, f.p);
    let mut mask = f.p / 2;
    while mask > 0 {
        let partner = f.real(v ^ mask);
        let mid = lo + (hi - lo) / 2;
        let (keep, give) = if v & mask == 0 {
            ((lo, mid), (mid, hi))
        } else {
            ((mid, hi), (lo, mid))
        };
        steps.push(send(partner, range(give.0, give.1)));
        let combine = if partner < me {
            Combine::ReduceLeft
        } else {
            Combine::Reduce
        };
        steps.push(recv(partner, range(keep.0, keep.1), combine));
        (lo, hi) = keep;
        mask >>= 1;
    }
    (lo, hi)
}

/// Rabenseifner's reduce for a power-of-two `n`: the reduce-scatter of
/// [`allreduce_rabenseifner`], then each rank sends its reduced block
/// straight to `root`. Every rank combines 1/n of the buffer per round at
/// once, where a binomial tree's root combines all of it. Buffer: `count`
/// elements; other sizes of `n` get [`reduce_binomial`].
pub fn reduce_rabenseifner(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    let f = Fold::new(n);
    if f.rem != 0 || count < n {
        return reduce_binomial(me, n, root, count);
    }
    let mut steps = Vec::new();
    let (lo, hi) = reduce_scatter_halving(&mut steps, f, me, me, count);
    let range = |a: usize, b: usize| block_start(count, n, a)..block_start(count, n, b);
    if me != root {
        steps.push(send(root, range(lo, hi)));
        return steps;
    }
    // Block v ends at rank v (the halving keeps the half its bit names).
    steps.extend(
        (1..n)
            .map(|s| (root + s) % n)
            .map(|r| recv(r, range(r, r + 1), Combine::Replace)),
    );
    steps
}

/// Ring allreduce: a ring reduce-scatter (n-1 rounds) then a ring
/// allgather (n-1 rounds) over n blocks. Bandwidth-optimal for any n.
/// Buffer: `count` elements.
pub fn allreduce_ring(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    if n == 1 {
        return steps;
    }
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let b = |i: usize| block(count, n, i % n);
    for s in 0..n - 1 {
        steps.push(send(right, b(me + n - s)));
        steps.push(recv(left, b(me + 2 * n - s - 1), Combine::Reduce));
    }
    for s in 0..n - 1 {
        steps.push(send(right, b(me + 1 + n - s)));
        steps.push(recv(left, b(me + n - s), Combine::Replace));
    }
    steps
}

/// Ring reduce-scatter with equal blocks: rank r ends with the reduction
/// of block r. Buffer: `n * count` elements (block i at `i * count`).
pub fn reduce_scatter_ring(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let b = |i: usize| {
        let i = i % n;
        i * count..(i + 1) * count
    };
    for s in 0..n.saturating_sub(1) {
        steps.push(send(right, b(me + 2 * n - s - 1)));
        steps.push(recv(left, b(me + 2 * n - s - 2), Combine::Reduce));
    }
    steps
}

/// Binomial gather to `root`. Buffer: `n * count` elements, block of rank
/// i at `i * count`; each rank's own block holds its input.
pub fn gather_binomial(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let v = rel(me, root, n);
    let mut mask = 1;
    while mask < n {
        if v & mask != 0 {
            let end = (v + mask).min(n);
            steps.push(Step::Send {
                to: abs(v - mask, root, n),
                blocks: rel_blocks(v, end, root, n, count),
            });
            break;
        }
        if v + mask < n {
            let end = (v + 2 * mask).min(n);
            steps.push(Step::Recv {
                from: abs(v + mask, root, n),
                blocks: rel_blocks(v + mask, end, root, n, count),
                combine: Combine::Replace,
            });
        }
        mask <<= 1;
    }
    steps
}

/// Binomial scatter from `root` (the mirror of [`gather_binomial`]).
/// Buffer: `n * count` elements; rank i's block ends at `i * count`.
pub fn scatter_binomial(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let v = rel(me, root, n);
    let mut mask = 1;
    while mask < n {
        if v & mask != 0 {
            let end = (v + mask).min(n);
            steps.push(Step::Recv {
                from: abs(v - mask, root, n),
                blocks: rel_blocks(v, end, root, n, count),
                combine: Combine::Replace,
            });
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if v + mask < n {
            let end = (v + 2 * mask).min(n);
            steps.push(Step::Send {
                to: abs(v + mask, root, n),
                blocks: rel_blocks(v + mask, end, root, n, count),
            });
        }
        mask >>= 1;
    }
    steps
}

/// Linear gather to `root`: every rank sends its block straight to the
/// root, which receives them in rank order. Less data moved than the
/// binomial tree (no forwarding), so better for large blocks and few
/// ranks. Same buffer layout as [`gather_binomial`].
pub fn gather_linear(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    if me != root {
        return vec![send(root, me * count..(me + 1) * count)];
    }
    (1..n)
        .map(|s| {
            let from = (root + s) % n;
            recv(from, from * count..(from + 1) * count, Combine::Replace)
        })
        .collect()
}

/// Linear scatter from `root` (the mirror of [`gather_linear`]). Same
/// buffer layout as [`scatter_binomial`].
pub fn scatter_linear(me: usize, n: usize, root: usize, count: usize) -> Vec<Step> {
    if me != root {
        return vec![recv(root, me * count..(me + 1) * count, Combine::Replace)];
    }
    (1..n)
        .map(|s| {
            let to = (root + s) % n;
            send(to, to * count..(to + 1) * count)
        })
        .collect()
}

/// Recursive-doubling allgather with the non-power-of-two fix-up (folded
/// ranks give their block to a partner and get everything back).
/// Buffer: `n * count` elements, rank i's input at `i * count`.
pub fn allgather_recursive_doubling(me: usize, n: usize, count: usize) -> Vec<Step> {
    let f = Fold::new(n);
    let mut steps = Vec::new();
    let all = 0..n * count;
    let Some(v) = f.virt(me) else {
        steps.push(send(me + 1, me * count..(me + 1) * count));
        steps.push(recv(me + 1, all, Combine::Replace));
        return steps;
    };
    if me < 2 * f.rem {
        steps.push(recv(me - 1, (me - 1) * count..me * count, Combine::Replace));
    }
    // Virtual ranks [a, b) own real blocks [lo(a), lo(b)).
    let lo = |x: usize| if x >= f.p { n } else { f.lo(x) };
    let mut mask = 1;
    while mask < f.p {
        let partner_v = v ^ mask;
        let mine = v & !(mask - 1);
        let theirs = partner_v & !(mask - 1);
        steps.push(send(
            f.real(partner_v),
            lo(mine) * count..lo(mine + mask) * count,
        ));
        steps.push(recv(
            f.real(partner_v),
            lo(theirs) * count..lo(theirs + mask) * count,
            Combine::Replace,
        ));
        mask <<= 1;
    }
    if me < 2 * f.rem {
        steps.push(send(me - 1, all));
    }
    steps
}

/// An allgather schedule over output elements `[0, n * count)` rewritten
/// for the caller's input at `[0, count)` and the output after it (the
/// layout of all-to-all, no copy of either). Sends of exactly this rank's
/// block read the input, and the copy of the input into the output comes
/// as late as it can: before the first send that reads this rank's block
/// as part of a larger range, or last. A peer that reads in place thus
/// reads the input, which this call never writes, while this rank copies.
pub fn allgather_from_input(steps: Vec<Step>, me: usize, count: usize) -> Vec<Step> {
    let own = me * count..(me + 1) * count;
    let up = |r: &Range<usize>| r.start + count..r.end + count;
    let mut out = Vec::with_capacity(steps.len() + 1);
    let mut copied = false;
    for step in steps {
        let step = match step {
            Step::Send { to, blocks } if blocks.len() == 1 && blocks[0] == own => Step::Send {
                to,
                blocks: vec![0..count],
            },
            Step::Send { to, blocks } => {
                let reads_own = blocks
                    .iter()
                    .any(|b| b.start < own.end && own.start < b.end && !own.is_empty());
                if reads_own && !copied {
                    out.push(Step::Copy {
                        from: 0..count,
                        to: count + own.start,
                    });
                    copied = true;
                }
                Step::Send {
                    to,
                    blocks: blocks.iter().map(up).collect(),
                }
            }
            Step::Recv {
                from,
                blocks,
                combine,
            } => Step::Recv {
                from,
                blocks: blocks.iter().map(up).collect(),
                combine,
            },
            Step::Copy { from, to } => Step::Copy {
                from: up(&from),
                to: to + count,
            },
        };
        out.push(step);
    }
    if !copied {
        out.push(Step::Copy {
            from: 0..count,
            to: count + own.start,
        });
    }
    out
}

/// A schedule over a working buffer of `count` elements that starts as
/// the caller's input (a reduction's), rewritten for the caller's input at
/// `[0, count)`, read only, and the output after it (as
/// [`allgather_from_input`]), so that the input is never copied whole
/// first. A send reads the output where a step wrote it and the input
/// elsewhere. A reducing receive of at least `fuse_min` elements into a
/// part no step wrote yet combines the input with the message in one pass
/// ([`Combine::ReduceFrom`]); any other reducing receive copies the input
/// under it first, as late as it can, so that the copy overlaps the wait
/// for the message (cheaper for small messages than a fused pass after
/// it). A replacing receive needs no copy at all. With `finish`,
/// what no step wrote is copied from the input last, so the output holds
/// the whole result; without, the output holds only what the steps wrote
/// (a reduce's rank off the root).
pub fn reduce_from_input(
    steps: Vec<Step>,
    count: usize,
    finish: bool,
    fuse_min: usize,
) -> Vec<Step> {
    let up = |r: &Range<usize>| r.start + count..r.end + count;
    // Copies of the input under the parts of `r` no step wrote yet.
    let fill = |out: &mut Vec<Step>, done: &Written, r: Range<usize>| {
        for (r, w) in done.split(r) {
            if !w && !r.is_empty() {
                out.push(Step::Copy {
                    to: r.start + count,
                    from: r,
                });
            }
        }
    };
    let mut done = Written::default();
    let mut out = Vec::with_capacity(steps.len() + 2);
    for step in steps {
        match step {
            Step::Send { to, blocks } => {
                let blocks = blocks
                    .iter()
                    .flat_map(|b| done.split(b.clone()))
                    .map(|(r, w)| if w { up(&r) } else { r })
                    .collect();
                out.push(Step::Send { to, blocks });
            }
            Step::Recv {
                from,
                blocks,
                combine,
            } => {
                let len: usize = blocks.iter().map(Range::len).sum();
                let fresh = len >= fuse_min
                    && blocks
                        .iter()
                        .all(|b| done.split(b.clone()).into_iter().all(|(_, w)| !w));
                let combine = match combine {
                    Combine::Reduce | Combine::ReduceLeft if fresh => Combine::ReduceFrom {
                        back: count,
                        left: combine == Combine::ReduceLeft,
                    },
                    other => other,
                };
                for b in &blocks {
                    if matches!(combine, Combine::Reduce | Combine::ReduceLeft) {
                        fill(&mut out, &done, b.clone());
                    }
                    done.add(b.clone());
                }
                out.push(Step::Recv {
                    from,
                    blocks: blocks.iter().map(up).collect(),
                    combine,
                });
            }
            Step::Copy { from, to } => {
                let mut at = to;
                for (r, w) in done.split(from.clone()) {
                    let len = r.len();
                    out.push(Step::Copy {
                        from: if w { up(&r) } else { r },
                        to: at + count,
                    });
                    at += len;
                }
                done.add(to..to + from.len());
            }
        }
    }
    if finish {
        fill(&mut out, &done, 0..count);
    }
    out
}

/// Element ranges of the output a schedule wrote so far (sorted,
/// disjoint, merged).
#[derive(Debug, Default)]
struct Written(Vec<Range<usize>>);

impl Written {
    fn add(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.0.push(r);
        self.0.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.0 = merged;
    }

    /// `r` cut into consecutive pieces, each written (true) or not.
    fn split(&self, r: Range<usize>) -> Vec<(Range<usize>, bool)> {
        let mut pieces = Vec::new();
        let mut at = r.start;
        for w in &self.0 {
            if w.end <= at {
                continue;
            }
            if w.start >= r.end {
                break;
            }
            if w.start > at {
                pieces.push((at..w.start, false));
            }
            let end = w.end.min(r.end);
            pieces.push((at.max(w.start)..end, true));
            at = end;
        }
        if at < r.end || pieces.is_empty() {
            pieces.push((at..r.end, false));
        }
        pieces
    }
}

/// Ring allgather: n-1 rounds, each passing one block to the right.
/// Buffer: `n * count` elements, rank i's input at `i * count`.
pub fn allgather_ring(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let b = |i: usize| {
        let i = i % n;
        i * count..(i + 1) * count
    };
    for s in 0..n.saturating_sub(1) {
        steps.push(send(right, b(me + n - s)));
        steps.push(recv(left, b(me + 2 * n - s - 1), Combine::Replace));
    }
    steps
}

/// Pairwise-exchange all-to-all: round s sends to `me + s` and receives
/// from `me - s`. Buffer: `2 * n * count` elements: the input blocks
/// (block i for rank i) at `0..n*count`, the output blocks (block i from
/// rank i) at `n*count..2*n*count`.
pub fn alltoall_pairwise(me: usize, n: usize, count: usize) -> Vec<Step> {
    let out = n * count;
    let mut steps = vec![Step::Copy {
        from: me * count..(me + 1) * count,
        to: out + me * count,
    }];
    for s in 1..n {
        let to = (me + s) % n;
        let from = (me + n - s) % n;
        steps.push(send(to, to * count..(to + 1) * count));
        steps.push(recv(
            from,
            out + from * count..out + (from + 1) * count,
            Combine::Replace,
        ));
    }
    steps
}

/// Linear all-to-all: every send first (to `me + 1`, `me + 2`, ...), then
/// every receive (from `me - 1`, `me - 2`, ...), so that no round waits
/// for the previous one: the better choice for small blocks, and when
/// ranks outnumber cores. Same buffer layout as [`alltoall_pairwise`].
pub fn alltoall_linear(me: usize, n: usize, count: usize) -> Vec<Step> {
    let out = n * count;
    let mut steps = vec![Step::Copy {
        from: me * count..(me + 1) * count,
        to: out + me * count,
    }];
    for s in 1..n {
        let to = (me + s) % n;
        steps.push(send(to, to * count..(to + 1) * count));
    }
    for s in 1..n {
        let from = (me + n - s) % n;
        steps.push(recv(
            from,
            out + from * count..out + (from + 1) * count,
            Combine::Replace,
        ));
    }
    steps
}

/// Inclusive scan (Hillis-Steele): round k sends the running prefix to
/// `me + 2^k` and folds in the one from `me - 2^k` on the left, so
/// operations are combined in rank order. Buffer: `count` elements.
pub fn scan_recursive_doubling(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut d = 1;
    while d < n {
        if me + d < n {
            steps.push(send(me + d, 0..count));
        }
        if me >= d {
            steps.push(recv(me - d, 0..count, Combine::ReduceLeft));
        }
        d <<= 1;
    }
    steps
}

/// Inclusive scan along a chain: rank i folds in the prefix of rank i-1
/// on the left and passes its own prefix to rank i+1. n-1 messages in
/// all (against n log n for [`scan_recursive_doubling`]), so better when
/// ranks are few or outnumber cores. Buffer: `count` elements.
pub fn scan_chain(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    if me > 0 {
        steps.push(recv(me - 1, 0..count, Combine::ReduceLeft));
    }
    if me + 1 < n {
        steps.push(send(me + 1, 0..count));
    }
    steps
}

/// Exclusive scan: the inclusive scan, then a shift by one rank. Rank 0's
/// buffer is left with its own input. Buffer: `count` elements.
pub fn exscan(me: usize, n: usize, count: usize) -> Vec<Step> {
    let mut steps = scan_recursive_doubling(me, n, count);
    if me + 1 < n {
        steps.push(send(me + 1, 0..count));
    }
    if me > 0 {
        // Restore rank 0's input is not needed: it only sends.
        steps.push(recv(me - 1, 0..count, Combine::Replace));
    }
    steps
}
