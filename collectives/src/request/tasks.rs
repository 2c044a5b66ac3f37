//! The tasks: a schedule over a buffer, a receive, a send, and their
//! combinators.

use super::*;

/// A borrowed send still going out: step `pc`'s blocks to `dest`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outgoing {
    pc: usize,
    dest: usize,
    token: u64,
}

/// Receive steps after the current one that may be served out of order.
pub(super) const AHEAD: usize = 8;

/// A collective: a schedule run over a working buffer `B`. The schedule
/// `S` and the group `G` are borrowed by blocking operations (no reference
/// counting per call) and shared by requests.
pub(crate) struct SchedTask<T: Element, B, S = Arc<[Step]>, G = Arc<[usize]>> {
    name: &'static str,
    steps: S,
    pc: usize,
    buf: Option<B>,
    group: G,
    ctx: u32,
    tag: u32,
    op: Option<Op<T>>,
    /// Sends may stay in the caller's buffer until done (blocking
    /// operations, driven to the end); otherwise the engine copies them.
    borrow: bool,
    claimer: u64,
    cur: Option<Claimed>,
    outgoing: Vec<Outgoing>,
    /// Bit k: step `pc + k` was served ahead of its turn (see
    /// [`look_ahead`]); its message, if partly served, stays claimed.
    ahead_done: u16,
    /// Receives answered with PUSH, their senders writing: the task is
    /// done when they all wrote.
    pushing: Vec<Claimed>,
    pos: usize,
}

impl<T: Element, B: TaskBuf<T>, S: AsRef<[Step]> + Send, G: AsRef<[usize]> + Send>
    SchedTask<T, B, S, G>
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &'static str,
        steps: S,
        buf: B,
        group: G,
        ctx: u32,
        tag: u32,
        op: Option<Op<T>>,
        borrow: bool,
        claimer: u64,
    ) -> Self {
        SchedTask {
            name,
            steps,
            pc: 0,
            buf: Some(buf),
            group,
            ctx,
            tag,
            op,
            borrow,
            claimer,
            cur: None,
            outgoing: Vec::new(),
            ahead_done: 0,
            pushing: Vec::new(),
            pos: 0,
        }
    }
}

/// The receive steps right after step `pc` that can be served in any
/// order with it: receives that replace (no reduction), from distinct
/// ranks, into disjoint ranges; up to [`AHEAD`] of them. While step `pc`
/// waits, what arrived for them is consumed, so a rank that runs late
/// (more ranks than cores) holds up nobody else's data: gather and
/// all-to-all roots drain whichever sender is running.
#[allow(clippy::too_many_arguments)]
pub(super) fn look_ahead<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    group: &[usize],
    buf: &mut B,
    (ctx, tag, claimer): (u32, u32, u64),
    pc: usize,
    done_mask: &mut u16,
    outgoing: &mut Vec<Outgoing>,
    pushing: &mut Vec<Claimed>,
    pos: &mut usize,
) -> Result<(), CollError> {
    let recv = |j: usize| match steps.get(j) {
        Some(Step::Recv {
            from,
            blocks,
            combine: Combine::Replace,
        }) => Some((group[*from], blocks)),
        _ => None,
    };
    if recv(pc + 1).is_none() || recv(pc).is_none() {
        return Ok(());
    }
    for j in pc + 1..=pc + AHEAD {
        let Some((src, blocks)) = recv(j) else { break };
        let clash = (pc..j).any(|i| recv(i).is_some_and(|(s, b)| s == src || overlaps(b, blocks)));
        if clash {
            break;
        }
        let bit = 1u16 << (j - pc);
        if *done_mask & bit != 0 {
            continue;
        }
        // The window holds one step per source: what we claimed for this
        // step before is the first message of `src` this claim finds.
        let Some(c) = e.claim(Some(src), ctx, Some(tag), claimer) else {
            continue;
        };
        let want = steps[j].elements() * T::SIZE;
        if c.total != want {
            e.discard(&c);
            return Err(CollError::Mismatch {
                rank: src,
                got: c.total,
                want,
            });
        }
        if !outgoing.is_empty() {
            protect(e, steps, &*buf, outgoing, blocks);
        }
        if try_push(e, steps, j, buf, blocks, &c)? {
            pushing.push(c);
            *done_mask |= bit;
            continue;
        }
        // A rank that only receives (a gather's root) takes whole messages
        // ahead; part of several at once would only keep all their senders
        // busy on the cores it needs. One that also sends (all-to-all)
        // takes what arrived: its peers drain its own sends meanwhile.
        if outgoing.is_empty() && !e.arrived_all(&c) {
            continue;
        }
        let (got, done) = e.consume(&c, |off, piece, scratch| {
            deliver(buf, blocks, Combine::Replace, None, off, piece, scratch)
        })?;
        *pos += got;
        if done {
            *done_mask |= bit;
        }
    }
    Ok(())
}

/// Whether step `pc`'s receive into `blocks` should ask its sender to
/// write the message in itself (PUSH) instead of reading it: this rank's
/// schedule sends nothing (it would otherwise make every copy itself), it
/// copies locally after this step (work to overlap with the sender's
/// write), and no later step touches `blocks` (they change under us until
/// the sender says it wrote them). A gather's root, in short.
pub(super) fn push_for(steps: &[Step], pc: usize, blocks: &[Range<usize>]) -> bool {
    if steps.iter().any(|s| matches!(s, Step::Send { .. })) {
        return false;
    }
    let later = steps.get(pc + 1..).unwrap_or_default();
    later.iter().any(|s| matches!(s, Step::Copy { .. }))
        && !later.iter().any(|s| match s {
            Step::Recv { blocks: rb, .. } => overlaps(rb, blocks),
            Step::Copy { from, to } => {
                overlaps(std::slice::from_ref(from), blocks)
                    || overlaps(&[*to..*to + from.len()], blocks)
            }
            Step::Send { .. } => false,
        })
}

/// Answers the claimed message `c` of step `pc` (a replacing receive into
/// `blocks`) with PUSH when [`push_for`] says so and `c` is a read request
/// whose sender may write our memory. True if pushed: the message is then
/// the sender's to write.
pub(super) fn try_push<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    pc: usize,
    buf: &mut B,
    blocks: &[Range<usize>],
    c: &Claimed,
) -> Result<bool, CollError> {
    // Cheapest first: every replacing receive passes here.
    if !e.push_worth(c) || !e.is_read_request(c) || !push_for(steps, pc, blocks) {
        return Ok(false);
    }
    let mut segs = Vec::with_capacity(blocks.len());
    for r in blocks {
        let Some(bytes) = T::wire_mut(buf.write(r.clone())?) else {
            return Ok(false);
        };
        segs.push((bytes.as_mut_ptr() as u64, bytes.len() as u64));
    }
    e.push(c, &segs)
}

/// Shares the copy of the claimed message `c`, a read request that a
/// replacing receive into `blocks` takes, with its sender: asks it to
/// write the first half into our buffer while we read the second, so that
/// both cores copy at once. Only where this rank's schedule sends nothing
/// (a bcast's or a scatter's leaf): its sender is then idle until the
/// message is read, while a rank that also sends would put its own
/// copying on a sender busy with its own receives. True if asked: the
/// receive then reads the rest and waits for the sender's WROTE.
pub(super) fn try_share<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    buf: &mut B,
    blocks: &[Range<usize>],
    c: &Claimed,
) -> Result<bool, CollError> {
    if !e.share_worth(c)
        || !e.is_read_request(c)
        || steps.iter().any(|s| matches!(s, Step::Send { .. }))
    {
        return Ok(false);
    }
    share(e, buf, blocks, c)
}

/// Asks the sender of `c` (a read request) to write the message's first
/// part ([`crate::engine::shared_part`]) into `blocks` of `buf`; the receive
/// reads the rest.
pub(super) fn share<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    buf: &mut B,
    blocks: &[Range<usize>],
    c: &Claimed,
) -> Result<bool, CollError> {
    let mut left = crate::engine::shared_part(c.total);
    let mut segs = Vec::with_capacity(blocks.len());
    for r in blocks {
        if left == 0 {
            break;
        }
        let Some(bytes) = T::wire_mut(buf.write(r.clone())?) else {
            return Ok(false);
        };
        let k = bytes.len().min(left);
        segs.push((bytes.as_mut_ptr() as u64, k as u64));
        left -= k;
    }
    e.push(c, &segs)
}

/// Whether a reduction's send, step `pc` to `to` (exposed if the peer
/// reads in place), may be read in place at all; else it is copied into
/// the peer's inbox.
/// - Up to [`STAGED_READ_MAX`] bytes the receiver reads it whole and frees
///   us before it combines ([`Engine::consume_with`]); beyond that it
///   combines as it reads, which a copy into its inbox overlaps and a
///   read in place would not.
/// - In a pairwise exchange, where we combine what `to` sends us in the
///   next or previous transfer (recursive halving, a ring of two), both sides
///   copying into each other's inbox at once measured faster on 2 ranks
///   at 32-256 KiB than both reading.
/// - With more ranks than cores, a sender waiting for its reader keeps a
///   core from it: 4 ranks on 2 cores measured reduce and scan 32-256 KiB
///   1.4-1.7x slower read in place.
fn reduction_reads(
    e: &Engine,
    steps: &[Step],
    pc: usize,
    to: usize,
    blocks: &[Range<usize>],
    size: usize,
) -> bool {
    // The neighbouring transfers: local copies between them (an input
    // copied under a receive) do not count.
    let moves = |s: &&Step| !matches!(s, Step::Copy { .. });
    let before = steps.get(..pc).unwrap_or_default().iter().rev().find(moves);
    let after = steps.get(pc + 1..).unwrap_or_default().iter().find(moves);
    let exchange = [before, after].into_iter().flatten().any(|s| {
        matches!(s, Step::Recv { from, combine, .. }
            if *from == to && *combine != Combine::Replace)
    });
    !exchange && !e.oversubscribed() && bytes_of(blocks, size) <= STAGED_READ_MAX
}

/// Bytes of `blocks` of elements of `size` bytes.
fn bytes_of(blocks: &[Range<usize>], size: usize) -> usize {
    blocks.iter().map(|r| r.len()).sum::<usize>() * size
}

/// How step `pc`'s send of `blocks` lends them (`borrow`: at all):
/// exposed to a receiver that reads in place only if no later step of the
/// schedule writes them (a send read in place cannot be handed over as a
/// copy while the receiver may be reading it).
pub(super) fn lend_for(
    e: &Engine,
    steps: &[Step],
    pc: usize,
    blocks: &[Range<usize>],
    dest: usize,
    borrow: bool,
    size: usize,
) -> Lend {
    if !borrow {
        return Lend::Copy;
    }
    let bytes = bytes_of(blocks, size);
    if !e.reads_in_place(dest, bytes) {
        return Lend::Borrow;
    }
    let written = steps
        .get(pc + 1..)
        .unwrap_or_default()
        .iter()
        .any(|s| match s {
            Step::Recv { blocks: rb, .. } => overlaps(rb, blocks),
            Step::Copy { from, to } => overlaps(&[*to..*to + from.len()], blocks),
            Step::Send { .. } => false,
        });
    if written {
        Lend::Borrow
    } else {
        Lend::Expose
    }
}

/// Hands borrowed sends that overlap `blocks` to the engine before those
/// elements change.
pub(super) fn protect<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    buf: &B,
    outgoing: &mut Vec<Outgoing>,
    blocks: &[Range<usize>],
) {
    outgoing.retain(|o| {
        let Some(Step::Send { blocks: sb, .. }) = steps.get(o.pc) else {
            return false;
        };
        if !overlaps(sb, blocks) {
            return true;
        }
        if let Some((parts, n)) = wire_parts(buf, sb) {
            e.unborrow(o.dest, o.token, &parts[..n]);
        }
        false
    });
}

/// Sends more of the borrowed sends; true when none is left.
pub(super) fn pump<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    buf: &B,
    outgoing: &mut Vec<Outgoing>,
    pos: &mut usize,
) -> Result<bool, CollError> {
    let mut i = 0;
    while i < outgoing.len() {
        let o = outgoing[i];
        let Some(Step::Send { blocks, .. }) = steps.get(o.pc) else {
            outgoing.swap_remove(i);
            continue;
        };
        let Some((parts, n)) = wire_parts(buf, blocks) else {
            outgoing.swap_remove(i);
            continue;
        };
        let (sent, done) = e.pump(o.dest, o.token, &parts[..n])?;
        *pos += sent;
        if done {
            outgoing.swap_remove(i);
        } else {
            i += 1;
        }
    }
    Ok(outgoing.is_empty())
}

impl<T, B, S, G> Task for SchedTask<T, B, S, G>
where
    T: Element,
    B: TaskBuf<T>,
    S: AsRef<[Step]> + Send,
    G: AsRef<[usize]> + Send,
{
    type Output = B;
    fn step(&mut self, e: &mut Engine) -> Result<Option<B>, CollError> {
        let SchedTask {
            steps,
            pc,
            buf,
            group,
            ctx,
            tag,
            op,
            borrow,
            claimer,
            cur,
            outgoing,
            ahead_done,
            pushing,
            pos,
            ..
        } = self;
        let (steps, group) = (steps.as_ref(), group.as_ref());
        let Some(bufm) = buf.as_mut() else {
            return Err(CollError::InvalidArgument(
                "request polled after completion".into(),
            ));
        };
        while let Some(step) = steps.get(*pc) {
            match step {
                Step::Send { to, blocks } => {
                    let dest = group[*to];
                    let lend = lend_for(e, steps, *pc, blocks, dest, *borrow, T::SIZE);
                    let lend = match op {
                        Some(_)
                            if lend != Lend::Expose
                                || !reduction_reads(e, steps, *pc, *to, blocks, T::SIZE) =>
                        {
                            Lend::Copy
                        }
                        _ => lend,
                    };
                    if let Some(token) = post_blocks(e, &*bufm, blocks, dest, *ctx, *tag, lend)? {
                        outgoing.push(Outgoing {
                            pc: *pc,
                            dest,
                            token,
                        });
                    }
                }
                Step::Recv {
                    from,
                    blocks,
                    combine,
                } => {
                    let src = group[*from];
                    if *ahead_done & 1 != 0 {
                        // Served ahead of its turn.
                        *ahead_done >>= 1;
                        *pc += 1;
                        *pos += 1;
                        continue;
                    }
                    let c = match *cur {
                        Some(c) => c,
                        None => {
                            let want = step.elements() * T::SIZE;
                            let aside = !outgoing.is_empty();
                            // The landing's outcome: a message set aside, or
                            // an error (see RecvTask::step on its size).
                            let mut got: Result<Option<Inline>, CollError> = Ok(None);
                            let small = e.take_small(
                                src,
                                (*ctx, Some(*tag)),
                                *claimer,
                                false,
                                want,
                                |_, piece| {
                                    if piece.len() != want {
                                        got = Err(CollError::Mismatch {
                                            rank: src,
                                            got: piece.len(),
                                            want,
                                        });
                                    } else if aside {
                                        // Borrowed sends may still read these
                                        // blocks and are handed over first,
                                        // which takes the engine: a small
                                        // message waits aside, others queue.
                                        let Piece::Bytes(b) = piece else {
                                            return None;
                                        };
                                        got = Ok(Some(Inline::copy_of(b)?));
                                    } else {
                                        let op = op.as_ref();
                                        got = deliver_whole(bufm, blocks, *combine, op, piece)
                                            .map(|()| None);
                                    }
                                    Some(())
                                },
                            );
                            if let Small::Taken(()) = small {
                                // Whole already: no claim, no consume.
                                if let Some(small) = got? {
                                    protect(e, steps, &*bufm, outgoing, blocks);
                                    let piece = Piece::Bytes(small.bytes());
                                    deliver_whole(bufm, blocks, *combine, op.as_ref(), piece)?;
                                }
                                *pc += 1;
                                *pos += 1 + want;
                                *ahead_done >>= 1;
                                continue;
                            }
                            let claimed = match small {
                                Small::Empty => None,
                                _ => e.claim(Some(src), *ctx, Some(*tag), *claimer),
                            };
                            let Some(c) = claimed else {
                                e.gone_err(src)?;
                                look_ahead(
                                    e,
                                    steps,
                                    group,
                                    bufm,
                                    (*ctx, *tag, *claimer),
                                    *pc,
                                    ahead_done,
                                    outgoing,
                                    pushing,
                                    pos,
                                )?;
                                pump(e, steps, &*bufm, outgoing, pos)?;
                                return Ok(None);
                            };
                            if c.total != want {
                                e.discard(&c);
                                return Err(CollError::Mismatch {
                                    rank: src,
                                    got: c.total,
                                    want,
                                });
                            }
                            if !outgoing.is_empty() {
                                protect(e, steps, &*bufm, outgoing, blocks);
                            }
                            if *combine == Combine::Replace
                                && try_push(e, steps, *pc, bufm, blocks, &c)?
                            {
                                pushing.push(c);
                                *pc += 1;
                                *pos += 1;
                                *ahead_done >>= 1;
                                continue;
                            }
                            if *combine == Combine::Replace {
                                // Shared or not, the receive below takes it.
                                try_share(e, steps, bufm, blocks, &c)?;
                            }
                            *cur = Some(c);
                            c
                        }
                    };
                    let sink = Delivery {
                        buf: &mut *bufm,
                        blocks,
                        combine: *combine,
                        op: op.as_ref(),
                    };
                    let (got, done) = e.consume_with(&c, sink)?;
                    *pos += got;
                    if !done {
                        e.gone_err(src)?;
                        look_ahead(
                            e,
                            steps,
                            group,
                            bufm,
                            (*ctx, *tag, *claimer),
                            *pc,
                            ahead_done,
                            outgoing,
                            pushing,
                            pos,
                        )?;
                        pump(e, steps, &*bufm, outgoing, pos)?;
                        return Ok(None);
                    }
                    *cur = None;
                }
                Step::Copy { from, to } => {
                    if !outgoing.is_empty() {
                        protect(e, steps, &*bufm, outgoing, &[*to..*to + from.len()]);
                    }
                    bufm.copy(from.clone(), *to)?;
                }
            }
            *pc += 1;
            *pos += 1;
            *ahead_done >>= 1;
        }
        if !outgoing.is_empty() && !pump(e, steps, &*bufm, outgoing, pos)? {
            return Ok(None);
        }
        while let Some(c) = pushing.last() {
            let (got, done) = e.consume(c, |_, _, _| Ok(()))?;
            *pos += got;
            if !done {
                e.gone_err(c.src)?;
                return Ok(None);
            }
            pushing.pop();
        }
        Ok(buf.take())
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn waiting_for(&self) -> Option<usize> {
        match self.steps.as_ref().get(self.pc) {
            Some(Step::Recv { from, .. }) => self.group.as_ref().get(*from).copied(),
            _ => self
                .outgoing
                .first()
                .map(|o| o.dest)
                .or_else(|| self.pushing.last().map(|c| c.src)),
        }
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn claimer(&self) -> u64 {
        self.claimer
    }
    fn traffic(&self) -> Option<(u32, u32)> {
        Some((self.ctx, self.tag))
    }
    fn abort(&mut self, e: &mut Engine) {
        if let Some(c) = self.cur.take() {
            e.unclaim(&c);
        }
        // Waits for the senders still writing into our buffer (see
        // `Engine::discard`).
        self.pushing.clear();
        e.drop_claims(self.claimer);
        let Some(buf) = self.buf.as_ref() else { return };
        for o in self.outgoing.drain(..) {
            if let Some(Step::Send { blocks, .. }) = self.steps.as_ref().get(o.pc) {
                if let Some((parts, n)) = wire_parts(buf, blocks) {
                    e.unborrow(o.dest, o.token, &parts[..n]);
                }
            }
        }
    }
}

/// The senders a [`RecvTask`] takes a message from.
#[derive(Debug, Clone)]
pub(crate) enum Senders {
    /// One: its rank in the communicator.
    Rank(usize),
    /// Any: the world ranks of the communicator.
    Any(Arc<[usize]>),
}

/// A receive into a buffer: the first message matching (source, context,
/// tag), streamed in as it arrives.
pub(crate) struct RecvTask<T, B> {
    pub(crate) buf: Option<B>,
    pub(crate) cap: usize,
    pub(crate) src: Option<usize>,
    pub(crate) ctx: u32,
    pub(crate) tag: Option<u32>,
    /// Where the message may come from: the communicator's rank of `src`
    /// for a receive from one rank (no reference count to take per
    /// receive), or, from any, the world ranks of the communicator.
    pub(crate) from: Senders,
    pub(crate) claimer: u64,
    pub(crate) cur: Option<Claimed>,
    /// The engine's matching epoch when a claim last found nothing: until
    /// it moves, no message can match (a waiting receive's sweeps then
    /// skip the matching).
    pub(crate) seen: Option<u64>,
    pub(crate) pos: usize,
    pub(crate) _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Element, B: TaskBuf<T>> RecvTask<T, B> {
    /// Delivers a message taken whole ([`Engine::take_small`]).
    #[inline]
    fn small(
        &mut self,
        src: usize,
        tag: u32,
        piece: Piece<'_>,
    ) -> Result<Option<(B, Status)>, CollError> {
        let len = piece.len();
        let n = len / T::SIZE;
        if len % T::SIZE != 0 {
            return Err(CollError::Truncated {
                got: len,
                cap: self.cap * T::SIZE,
            });
        }
        let Some(mut buf) = self.buf.take() else {
            return Err(CollError::InvalidArgument(
                "request polled after completion".into(),
            ));
        };
        land_whole(buf.write(0..n)?, piece)?;
        self.pos += len;
        let st = Status {
            source: self.source_of(src),
            tag,
            len: n,
        };
        Ok(Some((buf, st)))
    }

    /// The communicator rank of world rank `w`.
    fn source_of(&self, w: usize) -> usize {
        match &self.from {
            Senders::Rank(r) => *r,
            Senders::Any(group) => group.iter().position(|&g| g == w).unwrap_or(usize::MAX),
        }
    }
}

impl<T: Element, B: TaskBuf<T>> Task for RecvTask<T, B> {
    type Output = (B, Status);
    fn step(&mut self, e: &mut Engine) -> Result<Option<(B, Status)>, CollError> {
        let c = match self.cur {
            Some(c) => c,
            None => {
                if let Some(src) = self.src {
                    let max = self.cap * T::SIZE;
                    let (want, claimer) = ((self.ctx, self.tag), self.claimer);
                    // The landing's result waits here: passed back through
                    // the link's layers, its size would cost a copy in each.
                    let mut got = None;
                    let small = e.take_small(src, want, claimer, true, max, |tag, piece| {
                        got = Some(self.small(src, tag, piece));
                        Some(())
                    });
                    match small {
                        Small::Taken(()) => {
                            if let Some(got) = got {
                                return got;
                            }
                        }
                        Small::Empty => {
                            e.gone_err(src)?;
                            return Ok(None);
                        }
                        Small::Other => {}
                    }
                }
                let epoch = e.epoch();
                let claimed = if self.seen == Some(epoch) {
                    None
                } else {
                    e.claim(self.src, self.ctx, self.tag, self.claimer)
                };
                let Some(c) = claimed else {
                    self.seen = Some(epoch);
                    let check: &[usize] = match &self.src {
                        Some(s) => std::slice::from_ref(s),
                        None => match &self.from {
                            Senders::Any(group) => group,
                            Senders::Rank(_) => &[],
                        },
                    };
                    for &r in check {
                        e.gone_err(r)?;
                    }
                    return Ok(None);
                };
                if c.total % T::SIZE != 0 || c.total > self.cap * T::SIZE {
                    e.discard(&c);
                    return Err(CollError::Truncated {
                        got: c.total,
                        cap: self.cap * T::SIZE,
                    });
                }
                let blocks = [0..c.total / T::SIZE];
                if let Some(buf) = self.buf.as_mut() {
                    // A blocking sender waits for us anyway: it writes the
                    // first half while we read the second.
                    if e.share_worth(&c) && e.sender_waits(&c) {
                        share(e, buf, &blocks, &c)?;
                    }
                }
                self.cur = Some(c);
                c
            }
        };
        let Some(buf) = self.buf.as_mut() else {
            return Err(CollError::InvalidArgument(
                "request polled after completion".into(),
            ));
        };
        let blocks = [0..c.total / T::SIZE];
        let (got, done) = e.consume(&c, |off, piece, scratch| {
            deliver(buf, &blocks, Combine::Replace, None, off, piece, scratch)
        })?;
        self.pos += got;
        if !done {
            e.gone_err(c.src)?;
            return Ok(None);
        }
        self.cur = None;
        let st = Status {
            source: self.source_of(c.src),
            tag: c.tag,
            len: c.total / T::SIZE,
        };
        Ok(self.buf.take().map(|b| (b, st)))
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn waiting_for(&self) -> Option<usize> {
        self.src
    }
    fn name(&self) -> &'static str {
        "recv"
    }
    fn claimer(&self) -> u64 {
        self.claimer
    }
    fn abort(&mut self, e: &mut Engine) {
        if let Some(c) = self.cur.take() {
            e.unclaim(&c);
        }
        e.unpost(self.claimer);
    }
}

/// A blocking send of bytes still in the caller's buffer.
pub(crate) struct SendTask<'a> {
    pub(crate) dest: usize,
    /// `None` once done (or never borrowed).
    pub(crate) token: Option<u64>,
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl Task for SendTask<'_> {
    type Output = ();
    fn step(&mut self, e: &mut Engine) -> Result<Option<()>, CollError> {
        let Some(token) = self.token else {
            return Ok(Some(()));
        };
        let (sent, done) = e.pump(self.dest, token, &[self.bytes])?;
        self.pos += sent;
        if done {
            self.token = None;
            return Ok(Some(()));
        }
        Ok(None)
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn waiting_for(&self) -> Option<usize> {
        Some(self.dest)
    }
    fn name(&self) -> &'static str {
        "send"
    }
    fn abort(&mut self, e: &mut Engine) {
        if let Some(t) = self.token.take() {
            e.unborrow(self.dest, t, &[self.bytes]);
        }
    }
}

/// A non-blocking send straight from a buffer the task holds until every
/// byte went out; the buffer is its output.
pub(crate) struct HeldSend<B> {
    pub(crate) dest: usize,
    /// `None` once done (or never borrowed).
    pub(crate) token: Option<u64>,
    pub(crate) data: Option<B>,
    pub(crate) pos: usize,
}

impl<B: AsRef<[u8]> + Send> Task for HeldSend<B> {
    type Output = B;
    fn step(&mut self, e: &mut Engine) -> Result<Option<B>, CollError> {
        let Some(data) = self.data.as_ref() else {
            return Err(CollError::InvalidArgument(
                "request polled after completion".into(),
            ));
        };
        if let Some(token) = self.token {
            let (sent, done) = e.pump(self.dest, token, &[data.as_ref()])?;
            self.pos += sent;
            if !done {
                return Ok(None);
            }
            self.token = None;
        }
        Ok(self.data.take())
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn waiting_for(&self) -> Option<usize> {
        Some(self.dest)
    }
    fn name(&self) -> &'static str {
        "isend"
    }
    fn abort(&mut self, e: &mut Engine) {
        if let (Some(t), Some(data)) = (self.token.take(), self.data.as_ref()) {
            e.unborrow(self.dest, t, &[data.as_ref()]);
        }
    }
}

/// Two tasks at once; done when both are.
pub(crate) struct Both<A: Task, B: Task> {
    pub(crate) a: A,
    pub(crate) b: B,
    pub(crate) a_out: Option<A::Output>,
    pub(crate) b_out: Option<B::Output>,
}

impl<A: Task, B: Task> Task for Both<A, B>
where
    A::Output: Send,
    B::Output: Send,
{
    type Output = (A::Output, B::Output);
    fn step(&mut self, e: &mut Engine) -> Result<Option<Self::Output>, CollError> {
        if self.a_out.is_none() {
            self.a_out = self.a.step(e)?;
        }
        if self.b_out.is_none() {
            self.b_out = self.b.step(e)?;
        }
        if self.a_out.is_some() && self.b_out.is_some() {
            return Ok(self.a_out.take().zip(self.b_out.take()));
        }
        Ok(None)
    }
    fn position(&self) -> usize {
        self.a.position() + self.b.position()
    }
    fn waiting_for(&self) -> Option<usize> {
        self.b.waiting_for().or(self.a.waiting_for())
    }
    fn name(&self) -> &'static str {
        self.b.name()
    }
    fn claimer(&self) -> u64 {
        self.b.claimer()
    }
    fn traffic(&self) -> Option<(u32, u32)> {
        self.b.traffic()
    }
    fn abort(&mut self, e: &mut Engine) {
        self.a.abort(e);
        self.b.abort(e);
    }
}

/// Waits until the messages queued to a peer went out (credit came back).
pub(crate) struct FlushTask {
    pub(crate) dest: usize,
}

impl Task for FlushTask {
    type Output = ();
    fn step(&mut self, e: &mut Engine) -> Result<Option<()>, CollError> {
        e.gone_err(self.dest)?;
        Ok((!e.has_pending(self.dest)).then_some(()))
    }
    fn position(&self) -> usize {
        0
    }
    fn waiting_for(&self) -> Option<usize> {
        Some(self.dest)
    }
    fn name(&self) -> &'static str {
        "send"
    }
}

/// Wraps a task with a function of its output.
pub(crate) struct MapTask<K, F> {
    pub(crate) inner: K,
    pub(crate) f: Option<F>,
}

impl<K: Task, R, F: FnOnce(K::Output) -> Result<R, CollError> + Send> Task for MapTask<K, F> {
    type Output = R;
    fn step(&mut self, e: &mut Engine) -> Result<Option<R>, CollError> {
        match self.inner.step(e)? {
            None => Ok(None),
            Some(out) => {
                let f = self.f.take().ok_or_else(|| {
                    CollError::InvalidArgument("request polled after completion".into())
                })?;
                f(out).map(Some)
            }
        }
    }
    fn position(&self) -> usize {
        self.inner.position()
    }
    fn waiting_for(&self) -> Option<usize> {
        self.inner.waiting_for()
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn claimer(&self) -> u64 {
        self.inner.claimer()
    }
    fn traffic(&self) -> Option<(u32, u32)> {
        self.inner.traffic()
    }
    fn abort(&mut self, e: &mut Engine) {
        self.inner.abort(e);
    }
}

/// A task already done (e.g. a buffered send).
pub(crate) struct Ready<R>(pub(crate) Option<R>, pub(crate) &'static str);

impl<R: Send> Task for Ready<R> {
    type Output = R;
    fn step(&mut self, _e: &mut Engine) -> Result<Option<R>, CollError> {
        Ok(self.0.take())
    }
    fn position(&self) -> usize {
        0
    }
    fn waiting_for(&self) -> Option<usize> {
        None
    }
    fn name(&self) -> &'static str {
        self.1
    }
}
