//! Operations as tasks the engine progresses, and [`Request`], the handle
//! of a non-blocking one.

// Block lists of one range are still block lists.
#![allow(clippy::single_range_in_vec_init)]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::element::{Element, Op};
use crate::engine::{Claimed, Engine, Piece};
use crate::error::CollError;
use crate::matching::Status;
use crate::schedule::{Combine, Step};

/// The engine of a process, shared by its communicators and requests. A
/// spin lock: taking it is one atomic operation and releasing it a plain
/// store, which matters on a path of ~100 ns per call; contention (threads
/// driving communicators of one process at once) is rare and yields.
pub(crate) type EngineLock = spin::mutex::SpinMutex<Engine>;

pub(crate) fn lock(engine: &EngineLock) -> spin::mutex::SpinMutexGuard<'_, Engine> {
    loop {
        if let Some(g) = engine.try_lock() {
            return g;
        }
        std::thread::yield_now();
    }
}

/// An operation in progress: advanced by [`Task::step`] until it yields
/// its output.
pub(crate) trait Task: Send {
    type Output;
    /// Advances as far as arrived messages and credit allow.
    fn step(&mut self, e: &mut Engine) -> Result<Option<Self::Output>, CollError>;
    /// A counter that grows whenever the task advances (for the timeout).
    fn position(&self) -> usize;
    /// The world rank the task waits on, if one.
    fn waiting_for(&self) -> Option<usize>;
    /// The operation's name, for errors.
    fn name(&self) -> &'static str;
    /// The id its receives claim messages with (0: none).
    fn claimer(&self) -> u64 {
        0
    }
    /// The (context, tag) of all its messages, for a collective: an
    /// operation consumes its own messages in its own order, so they are
    /// never copied out of the inbox while it waits.
    fn traffic(&self) -> Option<(u32, u32)> {
        None
    }
    /// The task failed or is abandoned: hand borrowed data over to the
    /// engine and drop claims, so that later operations are not stuck.
    fn abort(&mut self, _e: &mut Engine) {}
}

/// Runs `task` to completion, progressing the engine; fails after
/// `timeout` without the task advancing.
pub(crate) fn drive<K: Task + ?Sized>(
    engine: &EngineLock,
    task: &mut K,
    timeout: Duration,
) -> Result<K::Output, CollError> {
    let mut pos = task.position();
    let mut deadline: Option<Instant> = None;
    let mut spins = 0u32;
    let mut e = lock(engine);
    e.busy();
    loop {
        match step_once(&mut e, task) {
            Ok(Some(out)) => return Ok(out),
            Ok(None) => {}
            Err(err) => {
                task.abort(&mut e);
                return Err(err);
            }
        }
        if task.position() != pos {
            pos = task.position();
            deadline = None;
            spins = 0;
            e.busy();
            continue;
        }
        spins += 1;
        if e.relieve_due(spins) {
            e.relieve(task.claimer(), task.traffic());
        }
        // The clock is read only once a wait lasts a while, and then only
        // every 256 sweeps (a read costs tens of ns in a VM).
        if spins % 256 == 0 {
            let now = Instant::now();
            let d = *deadline.get_or_insert(now + timeout);
            if now >= d {
                task.abort(&mut e);
                return Err(CollError::Timeout {
                    op: task.name(),
                    after: timeout,
                    waiting_for: task.waiting_for(),
                });
            }
        }
        e.idle(Duration::from_millis(50));
        // Other threads of this process may drive the engine too: let them
        // in now and then (taking the lock on every sweep costs an atomic).
        if spins % e.relock_every() == 0 {
            drop(e);
            e = lock(engine);
        }
    }
}

/// Steps the task, progresses the engine, steps again if anything moved.
fn step_once<K: Task + ?Sized>(
    e: &mut Engine,
    task: &mut K,
) -> Result<Option<K::Output>, CollError> {
    if let Some(out) = task.step(e)? {
        return Ok(Some(out));
    }
    if e.progress() {
        return task.step(e);
    }
    Ok(None)
}

/// The handle of a non-blocking operation; [`Request::wait`] hands back
/// its result (the buffers, for collectives).
///
/// Dropping an unfinished request abandons it: its messages may then
/// confuse later operations on the same communicator, so wait for every
/// request.
#[must_use = "a request does nothing unless waited for or tested"]
pub struct Request<R> {
    engine: Arc<EngineLock>,
    task: Box<dyn Task<Output = R>>,
    done: Option<R>,
    timeout: Duration,
}

impl<R> fmt::Debug for Request<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("op", &self.task.name())
            .field("done", &self.done.is_some())
            .finish()
    }
}

impl<R> Request<R> {
    pub(crate) fn new(
        engine: Arc<EngineLock>,
        task: Box<dyn Task<Output = R>>,
        timeout: Duration,
    ) -> Self {
        Request {
            engine,
            task,
            done: None,
            timeout,
        }
    }

    /// Progresses once without waiting; true once the operation is done
    /// (then [`Request::wait`] returns at once).
    pub fn test(&mut self) -> Result<bool, CollError> {
        if self.done.is_some() {
            return Ok(true);
        }
        let mut e = lock(&self.engine);
        match step_once(&mut e, self.task.as_mut()) {
            Ok(Some(out)) => {
                self.done = Some(out);
                Ok(true)
            }
            Ok(None) => {
                // A caller polling with `test` must not leave a sender
                // blocked on our inbox for good either.
                e.relieve(self.task.claimer(), self.task.traffic());
                Ok(false)
            }
            Err(err) => {
                self.task.abort(&mut e);
                Err(err)
            }
        }
    }

    /// Waits for the operation (bounded by the op timeout without
    /// progress) and returns its result.
    pub fn wait(mut self) -> Result<R, CollError> {
        if let Some(out) = self.done.take() {
            return Ok(out);
        }
        drive(&self.engine, self.task.as_mut(), self.timeout)
    }
}

/// Waits for every request, in order; the first error is returned.
pub fn wait_all<R>(reqs: Vec<Request<R>>) -> Result<Vec<R>, CollError> {
    reqs.into_iter().map(Request::wait).collect()
}

// ----- buffers a task works on ------------------------------------------------

/// The working buffer of a schedule, addressed by the schedule's element
/// ranges (which never straddle two parts of a split buffer).
pub(crate) trait TaskBuf<T>: Send {
    /// Elements of range `r`, to read.
    fn read(&self, r: Range<usize>) -> &[T];
    /// Elements of range `r`, to write.
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError>;
    /// Copies `from` to the range starting at `to`.
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError>;
}

fn shift(r: &Range<usize>, base: usize) -> Range<usize> {
    r.start - base..r.end - base
}

/// A whole buffer whose element 0 is the schedule's element `base`.
#[derive(Debug)]
pub(crate) struct Whole<B> {
    pub(crate) buf: B,
    pub(crate) base: usize,
}

impl<T: Copy, B: AsRef<[T]> + AsMut<[T]> + Send> TaskBuf<T> for Whole<B> {
    fn read(&self, r: Range<usize>) -> &[T] {
        &self.buf.as_ref()[shift(&r, self.base)]
    }
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError> {
        let r = shift(&r, self.base);
        Ok(&mut self.buf.as_mut()[r])
    }
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError> {
        let from = shift(&from, self.base);
        self.buf.as_mut().copy_within(from, to - self.base);
        Ok(())
    }
}

/// A read-only buffer (a schedule that only sends).
#[derive(Debug)]
pub(crate) struct ReadOnly<'a, T> {
    pub(crate) buf: &'a [T],
    pub(crate) base: usize,
}

fn read_only() -> CollError {
    CollError::InvalidArgument("a schedule writes into a read-only buffer".into())
}

impl<T: Sync> TaskBuf<T> for ReadOnly<'_, T> {
    fn read(&self, r: Range<usize>) -> &[T] {
        &self.buf[shift(&r, self.base)]
    }
    fn write(&mut self, _r: Range<usize>) -> Result<&mut [T], CollError> {
        Err(read_only())
    }
    fn copy(&mut self, _from: Range<usize>, _to: usize) -> Result<(), CollError> {
        Err(read_only())
    }
}

/// Input elements `[0, a.len())` read-only, output elements after them
/// (all-to-all's layout, without copying either side).
#[derive(Debug)]
pub(crate) struct Split<'a, T> {
    pub(crate) a: &'a [T],
    pub(crate) b: &'a mut [T],
}

impl<T: Copy + Send + Sync> TaskBuf<T> for Split<'_, T> {
    fn read(&self, r: Range<usize>) -> &[T] {
        let n = self.a.len();
        if r.start >= n && r.end > n {
            &self.b[shift(&r, n)]
        } else {
            &self.a[r]
        }
    }
    fn write(&mut self, r: Range<usize>) -> Result<&mut [T], CollError> {
        let n = self.a.len();
        if r.start < n && !r.is_empty() {
            return Err(read_only());
        }
        Ok(&mut self.b[r.start.saturating_sub(n)..r.end.saturating_sub(n)])
    }
    fn copy(&mut self, from: Range<usize>, to: usize) -> Result<(), CollError> {
        let n = self.a.len();
        let len = from.len();
        if len == 0 {
            return Ok(());
        }
        if to < n {
            return Err(read_only());
        }
        if from.end <= n {
            let a = self.a;
            self.b[to - n..to - n + len].copy_from_slice(&a[from]);
        } else {
            self.b.copy_within(shift(&from, n), to - n);
        }
        Ok(())
    }
}

// ----- moving data between buffers and messages -------------------------------

/// Up to four blocks as byte slices (wire layout), or `None` when they
/// must be encoded.
fn wire_parts<'a, T: Element, B: TaskBuf<T>>(
    buf: &'a B,
    blocks: &[Range<usize>],
) -> Option<([&'a [u8]; 4], usize)> {
    if blocks.len() > 4 {
        return None;
    }
    let mut parts: [&[u8]; 4] = [&[]; 4];
    for (p, r) in parts.iter_mut().zip(blocks) {
        *p = T::wire(buf.read(r.clone()))?;
    }
    Some((parts, blocks.len()))
}

fn encode_blocks<T: Element, B: TaskBuf<T>>(buf: &B, blocks: &[Range<usize>]) -> Vec<u8> {
    let n: usize = blocks.iter().map(|r| r.len()).sum();
    let mut bytes = Vec::with_capacity(n * T::SIZE);
    for r in blocks {
        T::encode(buf.read(r.clone()), &mut bytes);
    }
    bytes
}

/// Posts the blocks of `buf` to `dest`; a token if the send is borrowed
/// and not done yet.
#[allow(clippy::too_many_arguments)]
fn post_blocks<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    buf: &B,
    blocks: &[Range<usize>],
    dest: usize,
    ctx: u32,
    tag: u32,
    borrow: bool,
) -> Result<Option<u64>, CollError> {
    match wire_parts(buf, blocks) {
        Some((parts, n)) => e.post(dest, ctx, tag, &parts[..n], borrow),
        None => {
            let bytes = encode_blocks(buf, blocks);
            e.post(dest, ctx, tag, &[&bytes], false)
        }
    }
}

/// Lands `piece` (payload bytes from `off`) in the element ranges
/// `blocks` of `buf`, replacing or reducing.
fn deliver<T: Element, B: TaskBuf<T>>(
    buf: &mut B,
    blocks: &[Range<usize>],
    combine: Combine,
    op: Option<&Op<T>>,
    off: usize,
    piece: Piece<'_>,
    scratch: &mut [u64],
) -> Result<(), CollError> {
    let s = T::SIZE;
    let mut e0 = off / s;
    let mut n = piece.len() / s;
    let mut at = 0;
    let mut cum = 0;
    for r in blocks {
        if n == 0 {
            break;
        }
        let blen = r.len();
        if e0 >= cum + blen {
            cum += blen;
            continue;
        }
        let start = e0 - cum;
        let k = (blen - start).min(n);
        let dst = buf.write(r.start + start..r.start + start + k)?;
        land(dst, combine, op, piece.sub(at, k * s), scratch)?;
        at += k * s;
        e0 += k;
        n -= k;
        cum += blen;
    }
    Ok(())
}

fn region_err(source: rfx_fabric::FabricError) -> CollError {
    CollError::Fabric {
        rank: usize::MAX,
        source,
    }
}

/// Lands one piece of `dst.len()` elements in `dst`.
fn land<T: Element>(
    dst: &mut [T],
    combine: Combine,
    op: Option<&Op<T>>,
    piece: Piece<'_>,
    scratch: &mut [u64],
) -> Result<(), CollError> {
    let left = combine == Combine::ReduceLeft;
    let op = match (combine, op) {
        (Combine::Replace, _) | (_, None) => None,
        (_, Some(op)) => Some(op),
    };
    match (piece, op) {
        (Piece::Region { mr, off, .. }, None) => match T::wire_mut(dst) {
            Some(bytes) => mr.read_at(off, bytes).map_err(region_err),
            None => {
                let step = scratch.len() * 8 / T::SIZE;
                for (i, d) in dst.chunks_mut(step).enumerate() {
                    let nb = d.len() * T::SIZE;
                    let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(scratch)[..nb];
                    mr.read_at(off + i * step * T::SIZE, bytes)
                        .map_err(region_err)?;
                    T::decode(d, bytes);
                }
                Ok(())
            }
        },
        (Piece::Bytes(b), None) => {
            match T::wire_mut(dst) {
                Some(bytes) => bytes.copy_from_slice(b),
                None => T::decode(dst, b),
            }
            Ok(())
        }
        (Piece::Region { mr, off, .. }, Some(op)) => {
            let step = scratch.len() * 8 / T::SIZE;
            for (i, d) in dst.chunks_mut(step).enumerate() {
                let nb = d.len() * T::SIZE;
                let words = &mut scratch[..nb.div_ceil(8)];
                mr.read_at(
                    off + i * step * T::SIZE,
                    &mut bytemuck::cast_slice_mut::<u64, u8>(words)[..nb],
                )
                .map_err(region_err)?;
                match T::view(words) {
                    Some(x) => op.combine_slice(d, &x[..d.len()], left)?,
                    None => {
                        op.combine_bytes(d, &bytemuck::cast_slice::<u64, u8>(words)[..nb], left)?
                    }
                }
            }
            Ok(())
        }
        (Piece::Bytes(b), Some(op)) => op.combine_bytes(dst, b, left),
    }
}

fn overlaps(a: &[Range<usize>], b: &[Range<usize>]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| !x.is_empty() && !y.is_empty() && x.start < y.end && y.start < x.end)
    })
}

// ----- tasks ----------------------------------------------------------------------

/// A borrowed send still going out: step `pc`'s blocks to `dest`.
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    pc: usize,
    dest: usize,
    token: u64,
}

/// Receive steps after the current one that may be served out of order.
const AHEAD: usize = 8;

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
fn look_ahead<T: Element, B: TaskBuf<T>>(
    e: &mut Engine,
    steps: &[Step],
    group: &[usize],
    buf: &mut B,
    (ctx, tag, claimer): (u32, u32, u64),
    pc: usize,
    done_mask: &mut u16,
    outgoing: &mut Vec<Outgoing>,
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

/// Hands borrowed sends that overlap `blocks` to the engine before those
/// elements change.
fn protect<T: Element, B: TaskBuf<T>>(
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
fn pump<T: Element, B: TaskBuf<T>>(
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

fn gone_error(e: &Engine, r: usize) -> Result<(), CollError> {
    match e.gone(r) {
        Some(why) => Err(CollError::PeerGone {
            rank: r,
            reason: why.to_string(),
        }),
        None => Ok(()),
    }
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
                    if let Some(token) = post_blocks(e, &*bufm, blocks, dest, *ctx, *tag, *borrow)?
                    {
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
                            let Some(c) = e.claim(Some(src), *ctx, Some(*tag), *claimer) else {
                                gone_error(e, src)?;
                                look_ahead(
                                    e,
                                    steps,
                                    group,
                                    bufm,
                                    (*ctx, *tag, *claimer),
                                    *pc,
                                    ahead_done,
                                    outgoing,
                                    pos,
                                )?;
                                pump(e, steps, &*bufm, outgoing, pos)?;
                                return Ok(None);
                            };
                            let want = step.elements() * T::SIZE;
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
                            *cur = Some(c);
                            c
                        }
                    };
                    let op = op.as_ref();
                    let (got, done) = e.consume(&c, |off, piece, scratch| {
                        deliver(bufm, blocks, *combine, op, off, piece, scratch)
                    })?;
                    *pos += got;
                    if !done {
                        gone_error(e, src)?;
                        look_ahead(
                            e,
                            steps,
                            group,
                            bufm,
                            (*ctx, *tag, *claimer),
                            *pc,
                            ahead_done,
                            outgoing,
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
        Ok(buf.take())
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn waiting_for(&self) -> Option<usize> {
        match self.steps.as_ref().get(self.pc) {
            Some(Step::Recv { from, .. }) => self.group.as_ref().get(*from).copied(),
            _ => self.outgoing.first().map(|o| o.dest),
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

/// A receive into a buffer: the first message matching (source, context,
/// tag), streamed in as it arrives.
pub(crate) struct RecvTask<T, B> {
    pub(crate) buf: Option<B>,
    pub(crate) cap: usize,
    pub(crate) src: Option<usize>,
    pub(crate) ctx: u32,
    pub(crate) tag: Option<u32>,
    /// World ranks of the communicator.
    pub(crate) group: Arc<[usize]>,
    pub(crate) claimer: u64,
    pub(crate) cur: Option<Claimed>,
    pub(crate) pos: usize,
    pub(crate) _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Element, B: TaskBuf<T>> Task for RecvTask<T, B> {
    type Output = (B, Status);
    fn step(&mut self, e: &mut Engine) -> Result<Option<(B, Status)>, CollError> {
        let c = match self.cur {
            Some(c) => c,
            None => {
                let Some(c) = e.claim(self.src, self.ctx, self.tag, self.claimer) else {
                    let check: &[usize] = match &self.src {
                        Some(s) => std::slice::from_ref(s),
                        None => &self.group,
                    };
                    for &r in check {
                        if let Some(why) = e.gone(r) {
                            return Err(CollError::PeerGone {
                                rank: r,
                                reason: why.to_string(),
                            });
                        }
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
            if let Some(why) = e.gone(c.src) {
                return Err(CollError::PeerGone {
                    rank: c.src,
                    reason: why.to_string(),
                });
            }
            return Ok(None);
        }
        self.cur = None;
        let source = self
            .group
            .iter()
            .position(|&w| w == c.src)
            .unwrap_or(usize::MAX);
        let st = Status {
            source,
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
        if let Some(why) = e.gone(self.dest) {
            return Err(CollError::PeerGone {
                rank: self.dest,
                reason: why.to_string(),
            });
        }
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
