//! [`Communicator`]: point to point and collectives over the engine.

use std::sync::Arc;

use rfx_fabric::TransportKind;

use crate::config::CollConfig;
use crate::element::{Element, Op};
use crate::engine::{Engine, Lend};
use crate::error::CollError;
use crate::matching::{Source, Status, TagMatch};
use crate::request::{
    drive, Both, EngineLock, FlushTask, HeldSend, MapTask, ReadOnly, Ready, RecvTask, Request,
    SchedTask, SendTask, Senders, Split, TaskBuf, Whole,
};
use crate::schedule::{self as sched, Algorithm, Collective, Step};

/// Context bit of collective traffic (point to point uses the bare context).
pub(crate) const COLL: u32 = 1 << 31;

/// Context bit of device-buffer traffic (staged chunks, see `device`):
/// it never matches a receive into host memory, nor one into device
/// memory a host send.
pub(crate) const DEV: u32 = 1 << 30;

/// Schedules kept per communicator (a loop of one collective finds its
/// schedule here instead of computing it on every call).
const PLANS: usize = 16;
/// Receives of a reduction from the input of at least this many bytes
/// reduce the input and the message into the output in one pass; smaller
/// ones copy the input first, while the message is still on its way (on
/// 2 ranks of the 2-vCPU VM, the fused pass measured 8% faster at 256 KiB,
/// 9% slower at 32 KiB; docs/collectives.md). Where the peers' messages
/// are read whole before the combining instead ([`fuse_min`]),
/// nothing overlaps the copy and the one pass starts lower.
const FUSE_MIN_BYTES: usize = 64 << 10;

/// From how many bytes a reduce's or scan's receives from the input are
/// fused (see [`FUSE_MIN_BYTES`]) for `me` (communicator rank) of `group`
/// (world ranks): from where every peer's messages go as read requests,
/// read whole before the combining, where that is lower and each rank has
/// a core.
#[cold]
#[inline(never)]
fn fuse_min(engine: &EngineLock, group: &[usize], me: usize) -> usize {
    let e = engine.lock();
    if e.oversubscribed() {
        return FUSE_MIN_BYTES;
    }
    group
        .iter()
        .enumerate()
        .filter(|&(r, _)| r != me)
        .try_fold(0, |m, (_, &w)| Some(m.max(e.read_min(w)?)))
        .map_or(FUSE_MIN_BYTES, |m| m.min(FUSE_MIN_BYTES))
}

/// The id a receive claims messages with: unique among the operations in
/// flight in this process (context ids are, and so are the sequence
/// numbers within one context), never 0.
fn claimer(ctx: u32, seq: u32) -> u64 {
    ((u64::from(ctx) << 32) | u64::from(seq)).wrapping_add(1)
}

/// Which schedule a cached plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanOp {
    Barrier,
    Bcast,
    Reduce,
    Allreduce,
    Gather,
    /// A gather's root reading its own block from its input.
    GatherFromInput,
    Scatter,
    Allgather,
    AllgatherFromInput,
    /// Reduce and allreduce from the caller's input into its output.
    ReduceFromInput,
    AllreduceFromInput,
    ReduceScatter,
    Alltoall,
    Scan,
    Exscan,
    /// Scan and exscan from the caller's input into its output.
    ScanFromInput,
    ExscanFromInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlanKey {
    op: PlanOp,
    root: usize,
    count: usize,
    elem: usize,
}

/// A schedule in the cache of a communicator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan(usize);

/// The last schedules used, replaced round-robin.
#[derive(Debug, Default)]
struct Plans {
    entries: Vec<(PlanKey, Arc<[Step]>)>,
    next: usize,
}

impl Plans {
    /// The index of the schedule for `key`, made by `make` if missing.
    fn get(&mut self, key: PlanKey, make: impl FnOnce() -> Vec<Step>) -> usize {
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            return i;
        }
        let s: Arc<[Step]> = make().into();
        if self.entries.len() < PLANS {
            self.entries.push((key, s));
            self.entries.len() - 1
        } else {
            let i = self.next;
            self.entries[i] = (key, s);
            self.next = (i + 1) % PLANS;
            i
        }
    }
}

/// The element range a schedule touches, if any.
fn span(steps: &[Step]) -> Option<(usize, usize)> {
    let mut lo = usize::MAX;
    let mut hi = 0;
    let mut see = |r: &std::ops::Range<usize>| {
        if !r.is_empty() {
            lo = lo.min(r.start);
            hi = hi.max(r.end);
        }
    };
    for s in steps {
        match s {
            Step::Send { blocks, .. } | Step::Recv { blocks, .. } => {
                blocks.iter().for_each(&mut see)
            }
            Step::Copy { from, to } => {
                see(from);
                see(&(*to..*to + from.len()));
            }
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// True if the schedule touches nothing outside `[lo, hi)`.
/// A non-root rank's part of gather or scatter.
enum Part<'a, T> {
    /// Its block, to send (gather).
    Send(&'a [T]),
    /// Its block, to receive (scatter).
    Recv(&'a mut [T]),
}

fn within(steps: &[Step], lo: usize, hi: usize) -> bool {
    span(steps).is_none_or(|(a, b)| a >= lo && b <= hi)
}

/// A group of ranks that message each other: MPI's communicator.
///
/// Made by [`Communicator::from_env`], [`Communicator::join`], or from
/// another by [`Communicator::split`] / [`Communicator::dup`] (which share
/// the parent's endpoints under a new context id, so they cost no new
/// connections). All ranks must call collectives in the same order.
///
/// Blocking operations fail with [`CollError::PeerGone`] when a rank they
/// wait on died, and with [`CollError::Timeout`] after
/// [`CollConfig::op_timeout`] without progress; they never hang.
#[derive(Debug)]
pub struct Communicator {
    engine: Arc<EngineLock>,
    /// World rank of each rank of this communicator.
    group: Arc<[usize]>,
    rank: usize,
    ctx: u32,
    seq: u32,
    /// Sequence of point-to-point receives (their claimer ids).
    recv_seq: u32,
    cfg: Arc<CollConfig>,
    /// More ranks on this host than cores ([`crate::engine`]): waits yield,
    /// and small rooted collectives and the barrier run flat.
    oversubscribed: bool,
    plans: Plans,
    /// Scratch for intermediate buffers (gather, scatter, reduce_scatter).
    work: Vec<u64>,
    /// Pinned slots of the last device used (a `device::stage::Staging`).
    pub(crate) staging: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// The operation, checked before anything is sent.
fn checked<T: Element>(op: impl Into<Op<T>>) -> Result<Op<T>, CollError> {
    let op = op.into();
    op.check()?;
    Ok(op)
}

impl Communicator {
    pub(crate) fn from_engine(engine: Engine, cfg: CollConfig) -> Communicator {
        let size = engine.size();
        let rank = engine.rank();
        let oversubscribed = engine.oversubscribed();
        Communicator {
            engine: Arc::new(EngineLock::new(engine)),
            group: (0..size).collect(),
            rank,
            ctx: 0,
            seq: 0,
            recv_seq: 0,
            cfg: Arc::new(cfg),
            oversubscribed,
            plans: Plans::default(),
            work: Vec::new(),
            staging: None,
        }
    }

    /// A communicator of this process alone (MPI's singleton start, or
    /// `MPI_COMM_SELF`): collectives complete at once, sends to rank 0 come
    /// back to it. No network.
    pub fn solo(cfg: CollConfig) -> Result<Communicator, CollError> {
        let ecfg = crate::engine::EngineConfig::of(&cfg);
        let engine = Engine::new(0, vec![None], ecfg)?;
        Ok(Communicator::from_engine(engine, cfg))
    }

    /// The world rank of each rank of this communicator, in rank order
    /// (the identity for the world itself).
    pub fn members(&self) -> &[usize] {
        &self.group
    }

    /// This process's rank in the communicator.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.group.len()
    }

    /// The context id (0 for the world communicator).
    pub fn context(&self) -> u32 {
        self.ctx
    }

    /// The configuration in use.
    pub fn config(&self) -> &CollConfig {
        &self.cfg
    }

    /// What this process's engine moved so far (all its communicators):
    /// messages read in place from peers' memory, messages spilled.
    pub fn stats(&self) -> crate::EngineStats {
        self.engine.lock().stats
    }

    /// The transport to `rank` (`None` for ourselves or a bad rank).
    pub fn transport(&self, rank: usize) -> Option<TransportKind> {
        let w = *self.group.get(rank)?;
        self.engine.lock().transport(w)
    }

    /// The transports in use to the other ranks, deduplicated (e.g. "shm",
    /// or "shm+tcp" across hosts), for logs.
    pub fn transport_summary(&self) -> String {
        let mut kinds: Vec<TransportKind> =
            (0..self.size()).filter_map(|r| self.transport(r)).collect();
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            return "self".into();
        }
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join("+")
    }

    pub(crate) fn world(&self, rank: usize) -> Result<usize, CollError> {
        // `ok_or_else`: on every send and receive, where building and
        // dropping the unused error showed in profiles.
        self.group
            .get(rank)
            .copied()
            .ok_or_else(|| CollError::InvalidRank {
                rank,
                size: self.size(),
            })
    }

    pub(crate) fn next_tag(&mut self) -> u32 {
        let t = self.seq;
        self.seq = self.seq.wrapping_add(1);
        t
    }

    // ----- point to point -------------------------------------------------

    /// Sends `buf` to `dest` with `tag`. Returns once the data is handed to
    /// the transport (written to the receiver, or copied). A large message
    /// to a process of this host that reads it in place (one copy; see the
    /// crate docs) returns once the receiver read it: when its receive
    /// claims it, or as soon as the receiver waits in the library on
    /// anything else, as MPI's rendezvous.
    pub fn send<T: Element>(&mut self, buf: &[T], dest: usize, tag: u32) -> Result<(), CollError> {
        self.send_in(self.ctx, buf, dest, tag)
    }

    /// [`Communicator::send`] on context `ctx` (this one's, with flag bits).
    pub(crate) fn send_in<T: Element>(
        &mut self,
        ctx: u32,
        buf: &[T],
        dest: usize,
        tag: u32,
    ) -> Result<(), CollError> {
        let w = self.world(dest)?;
        match T::wire(buf) {
            Some(bytes) => {
                // The send waits below: its receiver may share the copy.
                let token = self
                    .engine
                    .lock()
                    .post(w, ctx, tag, &[bytes], Lend::ExposeWaiting)?;
                if token.is_none() {
                    // Written whole already (a small message): nothing to
                    // wait for.
                    return Ok(());
                }
                let mut t = SendTask {
                    dest: w,
                    token,
                    bytes,
                    pos: 0,
                };
                drive(&self.engine, &mut t, self.cfg.op_timeout)
            }
            None => {
                let mut bytes = Vec::with_capacity(buf.len() * T::SIZE);
                T::encode(buf, &mut bytes);
                self.engine
                    .lock()
                    .post(w, ctx, tag, &[&bytes], Lend::Copy)?;
                // Bound the memory queued for a slow receiver: wait until the
                // window took the message.
                let mut t = FlushTask { dest: w };
                drive(&self.engine, &mut t, self.cfg.op_timeout)
            }
        }
    }

    fn recv_task<T: Element, B: TaskBuf<T>>(
        &mut self,
        ctx: u32,
        buf: B,
        cap: usize,
        source: Source,
        tag: TagMatch,
    ) -> Result<RecvTask<T, B>, CollError> {
        let (src, from) = match source {
            Source::Any => (None, Senders::Any(self.group.clone())),
            Source::Rank(r) => (Some(self.world(r)?), Senders::Rank(r)),
        };
        let tag = match tag {
            TagMatch::Any => None,
            TagMatch::Tag(t) => Some(t),
        };
        let seq = self.recv_seq;
        self.recv_seq = seq.wrapping_add(1);
        // Posted now: it matches before any receive posted after it.
        self.engine
            .lock()
            .post_recv(src, ctx, tag, claimer(ctx, seq));
        Ok(RecvTask {
            buf: Some(buf),
            cap,
            src,
            ctx,
            tag,
            from,
            claimer: claimer(ctx, seq),
            cur: None,
            seen: None,
            pos: 0,
            _t: std::marker::PhantomData,
        })
    }

    /// Receives into `buf` a message from `source` with a matching tag.
    /// The message may be shorter than `buf` ([`Status::len`] says how
    /// long); a longer one is [`CollError::Truncated`].
    pub fn recv<T: Element>(
        &mut self,
        buf: &mut [T],
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Status, CollError> {
        self.recv_in(self.ctx, buf, source.into(), tag.into())
    }

    /// [`Communicator::recv`] on context `ctx` (this one's, with flag bits).
    pub(crate) fn recv_in<T: Element>(
        &mut self,
        ctx: u32,
        buf: &mut [T],
        source: Source,
        tag: TagMatch,
    ) -> Result<Status, CollError> {
        let cap = buf.len();
        let mut t = self.recv_task(ctx, Whole { buf, base: 0 }, cap, source, tag)?;
        drive(&self.engine, &mut t, self.cfg.op_timeout).map(|(_, st)| st)
    }

    /// Sends `send` to `dest` and receives into `recv` from `source`, both
    /// at once (no deadlock when two ranks exchange).
    pub fn sendrecv<T: Element>(
        &mut self,
        send: &[T],
        dest: usize,
        send_tag: u32,
        recv: &mut [T],
        source: impl Into<Source>,
        recv_tag: impl Into<TagMatch>,
    ) -> Result<Status, CollError> {
        let w = self.world(dest)?;
        let cap = recv.len();
        let rt = self.recv_task(
            self.ctx,
            Whole { buf: recv, base: 0 },
            cap,
            source.into(),
            recv_tag.into(),
        )?;
        let encoded;
        let (bytes, lend) = match T::wire(send) {
            Some(b) => (b, Lend::Expose),
            None => {
                let mut v = Vec::with_capacity(send.len() * T::SIZE);
                T::encode(send, &mut v);
                encoded = v;
                (&encoded[..], Lend::Copy)
            }
        };
        let token = self
            .engine
            .lock()
            .post(w, self.ctx, send_tag, &[bytes], lend)?;
        let mut t = Both {
            a: SendTask {
                dest: w,
                token,
                bytes,
                pos: 0,
            },
            b: rt,
            a_out: None,
            b_out: None,
        };
        drive(&self.engine, &mut t, self.cfg.op_timeout).map(|(_, (_, st))| st)
    }

    /// Non-blocking send of an owned buffer; `wait` hands it back.
    pub fn isend<T: Element>(
        &mut self,
        buf: Vec<T>,
        dest: usize,
        tag: u32,
    ) -> Result<Request<Vec<T>>, CollError> {
        let w = self.world(dest)?;
        {
            let mut e = self.engine.lock();
            match T::wire(&buf) {
                Some(bytes) => e.post(w, self.ctx, tag, &[bytes], Lend::Copy)?,
                None => {
                    let mut bytes = Vec::with_capacity(buf.len() * T::SIZE);
                    T::encode(&buf, &mut bytes);
                    e.post(w, self.ctx, tag, &[&bytes], Lend::Copy)?
                }
            };
        }
        Ok(Request::new(
            self.engine.clone(),
            Box::new(Ready(Some(buf), "isend")),
            self.cfg.op_timeout,
        ))
    }

    /// Non-blocking send straight from `data`, which the request holds:
    /// no copy, the bytes go out as the receiver's window allows (or the
    /// receiver reads them in place), and the request completes (handing
    /// `data` back) once every byte is written or read.
    /// Dropped before, it hands the rest over to the engine as a copy.
    pub fn isend_held<B: AsRef<[u8]> + Send + 'static>(
        &mut self,
        data: B,
        dest: usize,
        tag: u32,
    ) -> Result<Request<B>, CollError> {
        let w = self.world(dest)?;
        let token = self
            .engine
            .lock()
            .post(w, self.ctx, tag, &[data.as_ref()], Lend::Expose)?;
        let task = HeldSend {
            dest: w,
            token,
            data: Some(data),
            pos: 0,
        };
        Ok(Request::new(
            self.engine.clone(),
            Box::new(task),
            self.cfg.op_timeout,
        ))
    }

    /// Non-blocking receive into an owned buffer; `wait` hands back the
    /// buffer and the status.
    pub fn irecv<T: Element>(
        &mut self,
        buf: Vec<T>,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<(Vec<T>, Status)>, CollError> {
        self.irecv_into(buf, source, tag)
    }

    /// Non-blocking receive straight into `buf`, which the request holds
    /// until the message is in it; `wait` hands back the buffer and the
    /// status.
    pub fn irecv_into<T: Element, B>(
        &mut self,
        buf: B,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<(B, Status)>, CollError>
    where
        B: AsRef<[T]> + AsMut<[T]> + Send + 'static,
    {
        let cap = buf.as_ref().len();
        let t = self.recv_task(
            self.ctx,
            Whole { buf, base: 0 },
            cap,
            source.into(),
            tag.into(),
        )?;
        let task = MapTask {
            inner: t,
            f: Some(|(w, st): (Whole<B>, Status)| Ok((w.buf, st))),
        };
        Ok(Request::new(
            self.engine.clone(),
            Box::new(task),
            self.cfg.op_timeout,
        ))
    }

    // ----- collectives: plumbing -----------------------------------------

    fn plan(
        &mut self,
        op: PlanOp,
        root: usize,
        count: usize,
        elem: usize,
        make: impl FnOnce(usize, usize) -> Vec<Step>,
    ) -> Plan {
        let (me, n) = (self.rank, self.size());
        Plan(self.plans.get(
            PlanKey {
                op,
                root,
                count,
                elem,
            },
            || make(me, n),
        ))
    }

    fn steps(&self, p: Plan) -> &[Step] {
        &self.plans.entries[p.0].1
    }

    /// The steps of `p`, shared (to run them while the communicator is
    /// borrowed mutably).
    pub(crate) fn steps_shared(&self, p: Plan) -> Arc<[Step]> {
        self.plans.entries[p.0].1.clone()
    }

    /// Reduce-scatter's ring of `count` elements per block.
    pub(crate) fn plan_reduce_scatter<T: Element>(&mut self, count: usize) -> Plan {
        self.plan(PlanOp::ReduceScatter, 0, count, T::SIZE, |me, n| {
            sched::reduce_scatter_ring(me, n, count)
        })
    }

    fn run<T: Element, B: TaskBuf<T>>(
        &mut self,
        name: &'static str,
        plan: Plan,
        buf: B,
        op: Option<Op<T>>,
    ) -> Result<B, CollError> {
        let tag = self.next_tag();
        let ctx = self.ctx | COLL;
        let mut t = SchedTask::new(
            name,
            &self.plans.entries[plan.0].1[..],
            buf,
            &self.group[..],
            ctx,
            tag,
            op,
            true,
            claimer(ctx, tag),
        );
        drive(&self.engine, &mut t, self.cfg.op_timeout)
    }

    /// `run` for its effect on the buffers only.
    fn exec<T: Element, B: TaskBuf<T>>(
        &mut self,
        name: &'static str,
        plan: Plan,
        buf: B,
        op: Option<Op<T>>,
    ) -> Result<(), CollError> {
        self.run(name, plan, buf, op).map(|_| ())
    }

    /// Runs gather or scatter on a rank other than the root, whose part is
    /// its own block: on that block alone when the steps touch nothing else
    /// (a leaf of the tree), else over scratch of all blocks, the block
    /// copied in before (a contribution) or out after (a result).
    fn run_part<T: Element>(
        &mut self,
        name: &'static str,
        plan: Plan,
        part: Part<'_, T>,
    ) -> Result<(), CollError> {
        let (me, n) = (self.rank, self.size());
        let c = match &part {
            Part::Send(s) => s.len(),
            Part::Recv(r) => r.len(),
        };
        let (lo, hi) = (me * c, (me + 1) * c);
        if within(self.steps(plan), lo, hi) {
            return match part {
                Part::Send(buf) => self.exec(name, plan, ReadOnly { buf, base: lo }, None),
                Part::Recv(buf) => self.exec(name, plan, Whole { buf, base: lo }, None),
            };
        }
        self.with_work(n * c, |comm, work: &mut [T]| {
            if let Part::Send(s) = &part {
                work[lo..hi].copy_from_slice(s);
            }
            comm.exec(
                name,
                plan,
                Whole {
                    buf: &mut *work,
                    base: 0,
                },
                None,
            )?;
            if let Part::Recv(r) = part {
                r.copy_from_slice(&work[lo..hi]);
            }
            Ok(())
        })
    }

    fn request<T: Element, R: Send + 'static>(
        &mut self,
        name: &'static str,
        plan: Plan,
        buf: Vec<T>,
        op: Option<Op<T>>,
        finish: impl FnOnce(Vec<T>) -> Result<R, CollError> + Send + 'static,
    ) -> Request<R> {
        let tag = self.next_tag();
        let ctx = self.ctx | COLL;
        let t: SchedTask<T, Whole<Vec<T>>> = SchedTask::new(
            name,
            self.plans.entries[plan.0].1.clone(),
            Whole { buf, base: 0 },
            self.group.clone(),
            ctx,
            tag,
            op,
            false,
            claimer(ctx, tag),
        );
        let task = MapTask {
            inner: t,
            f: Some(move |w: Whole<Vec<T>>| finish(w.buf)),
        };
        Request::new(self.engine.clone(), Box::new(task), self.cfg.op_timeout)
    }

    /// Runs `f` with `len` elements of scratch (reused across calls).
    fn with_work<T: Element, R>(
        &mut self,
        len: usize,
        f: impl FnOnce(&mut Self, &mut [T]) -> Result<R, CollError>,
    ) -> Result<R, CollError> {
        let mut work = std::mem::take(&mut self.work);
        let words = (len * T::SIZE).div_ceil(8);
        if work.len() < words {
            work.resize(words, 0);
        }
        let r = match T::view_mut(&mut work[..words]) {
            Some(v) => f(self, &mut v[..len]),
            None => {
                let mut v = vec![T::default(); len];
                f(self, &mut v)
            }
        };
        self.work = work;
        r
    }

    pub(crate) fn check_root(&self, root: usize) -> Result<(), CollError> {
        self.world(root).map(|_| ())
    }

    pub(crate) fn len_check(what: &str, got: usize, want: usize) -> Result<(), CollError> {
        if got == want {
            Ok(())
        } else {
            Err(CollError::InvalidArgument(format!(
                "{what} holds {got} elements where {want} are needed"
            )))
        }
    }

    // ----- schedules chosen by size (`schedule::choose`, thresholds in `CollConfig`)

    /// The algorithm of `op` for `count` elements of `T` per rank (per block).
    fn choose<T: Element>(&self, op: Collective, count: usize) -> Algorithm {
        sched::choose(
            op,
            count * T::SIZE,
            count,
            self.size(),
            self.oversubscribed,
            &self.cfg.thresholds,
        )
    }

    /// Elements per chunk of a chain of `chunk` bytes.
    fn chunk<T: Element>(chunk: usize) -> usize {
        (chunk / T::SIZE).max(1)
    }

    /// The barrier's plan. With a core per rank, dissemination: log2(n)
    /// rounds, every rank sends and receives in each. With more ranks than
    /// cores, linear (all to rank 0, then 0 to all), as Open MPI's is on
    /// such a host: there every round waits for each rank to be scheduled,
    /// and linear needs each rank on a core twice, however many ranks. Its
    /// root also leaves first, so a rooted collective after it (OSU's loop)
    /// starts from the root (docs/collectives.md).
    fn plan_barrier(&mut self) -> Plan {
        let barrier = if self.oversubscribed {
            sched::barrier_linear
        } else {
            sched::barrier_dissemination
        };
        self.plan(PlanOp::Barrier, 0, 0, 0, barrier)
    }

    pub(crate) fn plan_bcast<T: Element>(&mut self, root: usize, count: usize) -> Plan {
        let alg = self.choose::<T>(Collective::Bcast, count);
        self.plan(PlanOp::Bcast, root, count, T::SIZE, |me, n| match alg {
            Algorithm::Chain { chunk } => {
                sched::bcast_chain(me, n, root, count, Self::chunk::<T>(chunk))
            }
            Algorithm::Linear => sched::bcast_linear(me, n, root, count),
            _ => sched::bcast_binomial(me, n, root, count),
        })
    }

    /// The reduce's plan: in place, or from the input into the output.
    pub(crate) fn plan_reduce<T: Element>(
        &mut self,
        root: usize,
        count: usize,
        from_input: bool,
    ) -> Plan {
        let alg = self.choose::<T>(Collective::Reduce, count);
        let ops = (PlanOp::Reduce, PlanOp::ReduceFromInput);
        self.reducing_plan::<T>(
            ops,
            Some(root),
            count,
            from_input,
            true,
            |me, n| match alg {
                Algorithm::Chain { chunk } => {
                    sched::reduce_chain(me, n, root, count, Self::chunk::<T>(chunk))
                }
                Algorithm::Rabenseifner => sched::reduce_rabenseifner(me, n, root, count),
                Algorithm::Linear => sched::reduce_linear(me, n, root, count),
                _ => sched::reduce_binomial(me, n, root, count),
            },
        )
    }

    /// A reducing operation's plan: the schedule `make` builds (cached
    /// under `ops.0`), or with `from_input` that schedule rewritten to run
    /// from the caller's input into its output (under `ops.1`); the output
    /// is whole on every rank, or on `root`'s only. With `reads` (reduce,
    /// scan) the receives are fused from where the peers' messages go as
    /// read requests if that is lower than [`FUSE_MIN_BYTES`]: those
    /// receives read each message whole before combining
    /// ([`crate::engine::Engine::consume_with`]), so no copy of the input
    /// overlaps its arrival. Found when the plan is made, not per call.
    fn reducing_plan<T: Element>(
        &mut self,
        ops: (PlanOp, PlanOp),
        root: Option<usize>,
        count: usize,
        from_input: bool,
        reads: bool,
        make: impl FnOnce(usize, usize) -> Vec<Step>,
    ) -> Plan {
        let op = if from_input { ops.1 } else { ops.0 };
        let (me, n) = (self.rank, self.size());
        let (engine, group) = (&self.engine, &self.group);
        let key = PlanKey {
            op,
            root: root.unwrap_or(0),
            count,
            elem: T::SIZE,
        };
        Plan(self.plans.get(key, || {
            let steps = make(me, n);
            if !from_input {
                return steps;
            }
            let fuse_min = match reads {
                true => fuse_min(engine, group, me),
                false => FUSE_MIN_BYTES,
            };
            sched::reduce_from_input(
                steps,
                count,
                root.is_none_or(|r| r == me),
                fuse_min.div_ceil(T::SIZE),
            )
        }))
    }

    /// The allreduce's plan: in place, or from the input into the output.
    pub(crate) fn plan_allreduce<T: Element>(&mut self, count: usize, from_input: bool) -> Plan {
        let alg = self.choose::<T>(Collective::Allreduce, count);
        let ops = (PlanOp::Allreduce, PlanOp::AllreduceFromInput);
        self.reducing_plan::<T>(ops, None, count, from_input, false, |me, n| match alg {
            Algorithm::Rabenseifner => sched::allreduce_rabenseifner(me, n, count),
            Algorithm::Ring => sched::allreduce_ring(me, n, count),
            _ => sched::allreduce_recursive_doubling(me, n, count),
        })
    }

    pub(crate) fn plan_allgather<T: Element>(&mut self, count: usize) -> Plan {
        let alg = self.choose::<T>(Collective::Allgather, count);
        self.plan(PlanOp::Allgather, 0, count, T::SIZE, |me, n| match alg {
            Algorithm::Ring => sched::allgather_ring(me, n, count),
            _ => sched::allgather_recursive_doubling(me, n, count),
        })
    }

    /// The gather's plan: over one buffer of all blocks, or (`from_input`)
    /// reading this rank's block from its input.
    fn plan_gather<T: Element>(&mut self, root: usize, count: usize, from_input: bool) -> Plan {
        let alg = self.choose::<T>(Collective::Gather, count);
        let op = if from_input {
            PlanOp::GatherFromInput
        } else {
            PlanOp::Gather
        };
        self.plan(op, root, count, T::SIZE, |me, n| {
            let steps = match alg {
                Algorithm::Linear => sched::gather_linear(me, n, root, count),
                _ => sched::gather_binomial(me, n, root, count),
            };
            match from_input {
                true => sched::allgather_from_input(steps, me, count),
                false => steps,
            }
        })
    }

    fn plan_scatter<T: Element>(&mut self, root: usize, count: usize) -> Plan {
        let alg = self.choose::<T>(Collective::Scatter, count);
        self.plan(PlanOp::Scatter, root, count, T::SIZE, |me, n| match alg {
            Algorithm::Linear => sched::scatter_linear(me, n, root, count),
            _ => sched::scatter_binomial(me, n, root, count),
        })
    }

    /// The scan's plan: in place, or from the input into the output.
    fn plan_scan<T: Element>(&mut self, count: usize, from_input: bool) -> Plan {
        let alg = self.choose::<T>(Collective::Scan, count);
        let ops = (PlanOp::Scan, PlanOp::ScanFromInput);
        self.reducing_plan::<T>(ops, None, count, from_input, true, |me, n| match alg {
            Algorithm::Chain { .. } => sched::scan_chain(me, n, count),
            _ => sched::scan_recursive_doubling(me, n, count),
        })
    }

    /// The exscan's plan: in place, or from the input into the output.
    fn plan_exscan<T: Element>(&mut self, count: usize, from_input: bool) -> Plan {
        let ops = (PlanOp::Exscan, PlanOp::ExscanFromInput);
        self.reducing_plan::<T>(ops, None, count, from_input, false, |me, n| {
            sched::exscan(me, n, count)
        })
    }

    fn plan_alltoall<T: Element>(&mut self, count: usize) -> Plan {
        let alg = self.choose::<T>(Collective::Alltoall, count);
        self.plan(PlanOp::Alltoall, 0, count, T::SIZE, |me, n| match alg {
            Algorithm::Pairwise => sched::alltoall_pairwise(me, n, count),
            _ => sched::alltoall_linear(me, n, count),
        })
    }

    // ----- collectives: blocking ------------------------------------------

    /// Waits until every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<(), CollError> {
        let steps = self.plan_barrier();
        let nothing = Whole {
            buf: &mut [][..],
            base: 0,
        };
        self.exec::<u8, _>("barrier", steps, nothing, None)
    }

    /// Broadcasts `buf` of `root` into `buf` of every rank.
    pub fn bcast<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<(), CollError> {
        self.check_root(root)?;
        let steps = self.plan_bcast::<T>(root, buf.len());
        self.exec("bcast", steps, Whole { buf, base: 0 }, None)
    }

    /// Reduces every rank's `send` with `op` into `recv` of `root`, as
    /// `MPI_Reduce` with its two buffers: `send` is left as it is on every
    /// rank, `recv` is written on the root only (`recv.len() ==
    /// send.len()` there; ignored elsewhere). Nothing copies `send` whole
    /// first: sends read it where no step has written yet, and a reducing
    /// receive combines it with the message into `recv` in one pass (from
    /// 64 KiB) or copies only the part it reduces into. A rank whose part of
    /// the schedule only sends (a leaf of the tree, every rank but the
    /// root on 2) sends straight from `send`; other ranks off the root work
    /// in the communicator's scratch.
    ///
    /// ```no_run
    /// # fn f(c: &mut rfx_collectives::Communicator) -> Result<(), rfx_collectives::CollError> {
    /// use rfx_collectives::ReduceOp;
    /// let mine = vec![c.rank() as f64; 4];
    /// let mut sum = vec![0.0; if c.rank() == 0 { 4 } else { 0 }];
    /// c.reduce_to(&mine, &mut sum, 0, ReduceOp::Sum)?;
    /// # Ok(()) }
    /// ```
    pub fn reduce_to<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        root: usize,
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let op = checked(op)?;
        let c = send.len();
        let steps = self.plan_reduce::<T>(root, c, true);
        if self.rank == root {
            Self::len_check("reduce's receive buffer", recv.len(), c)?;
            return self.exec("reduce", steps, Split { a: send, b: recv }, Some(op));
        }
        let only_input = self.steps(steps).iter().all(|s| match s {
            Step::Send { blocks, .. } => blocks.iter().all(|b| b.end <= c),
            _ => false,
        });
        if only_input {
            let buf = ReadOnly { buf: send, base: 0 };
            return self.exec("reduce", steps, buf, Some(op));
        }
        self.with_work(c, |comm, work: &mut [T]| {
            comm.exec("reduce", steps, Split { a: send, b: work }, Some(op))
        })
    }

    /// Reduces every rank's `buf` with `op` into `buf` of `root`. On the
    /// other ranks `buf` serves as scratch and holds partial results after
    /// ([`Communicator::reduce_to`] leaves the input alone).
    pub fn reduce<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let op = checked(op)?;
        let steps = self.plan_reduce::<T>(root, buf.len(), false);
        self.exec("reduce", steps, Whole { buf, base: 0 }, Some(op))
    }

    /// Reduces every rank's `buf` with `op`; every rank gets the result in
    /// `buf`.
    pub fn allreduce<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = checked(op)?;
        let steps = self.plan_allreduce::<T>(buf.len(), false);
        self.exec("allreduce", steps, Whole { buf, base: 0 }, Some(op))
    }

    /// Reduces every rank's `send` with `op` into `recv` of every rank
    /// (`recv.len() == send.len()`), as `MPI_Allreduce` with its two
    /// buffers. Nothing copies `send` whole first: sends read it where no
    /// step has written yet, a reducing receive combines it with the
    /// message into `recv` in one pass (from 64 KiB) or copies only the part
    /// it reduces into, and a replacing one copies nothing (Rabenseifner's
    /// first round thus copies half at most, and the allgather rounds
    /// nothing).
    ///
    /// ```no_run
    /// # fn f(c: &mut rfx_collectives::Communicator) -> Result<(), rfx_collectives::CollError> {
    /// use rfx_collectives::ReduceOp;
    /// let mine = vec![1.0f64; 1 << 17];
    /// let mut sum = vec![0.0; mine.len()];
    /// c.allreduce_to(&mine, &mut sum, ReduceOp::Sum)?;
    /// # Ok(()) }
    /// ```
    pub fn allreduce_to<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.reduce_into("allreduce", send, recv, op, Self::plan_allreduce::<T>)
    }

    /// A reduction of `send` into `recv` (as long) on every rank, by the
    /// plan `plan` makes from the input (`from_input` set).
    fn reduce_into<T: Element>(
        &mut self,
        name: &'static str,
        send: &[T],
        recv: &mut [T],
        op: impl Into<Op<T>>,
        plan: fn(&mut Self, usize, bool) -> Plan,
    ) -> Result<(), CollError> {
        let op = checked(op)?;
        Self::len_check("the receive buffer", recv.len(), send.len())?;
        let steps = plan(self, send.len(), true);
        self.exec(name, steps, Split { a: send, b: recv }, Some(op))
    }

    /// Gathers every rank's `send` into `recv` of `root`, in rank order
    /// (`recv.len() == size * send.len()` at the root; ignored elsewhere).
    pub fn gather<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        root: usize,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let (me, n, c) = (self.rank, self.size(), send.len());
        if me == root {
            Self::len_check("gather's receive buffer", recv.len(), n * c)?;
            // The root only receives, never into its own block, so it
            // copies its own block last: the peers' sends complete sooner,
            // and peers that write their blocks in themselves (PUSH) do so
            // while it copies.
            let steps = self.plan_gather::<T>(root, c, true);
            return self.exec("gather", steps, Split { a: send, b: recv }, None);
        }
        let steps = self.plan_gather::<T>(root, c, false);
        self.run_part("gather", steps, Part::Send(send))
    }

    /// Scatters block i of `root`'s `send` (`size * recv.len()` elements)
    /// to `recv` of rank i.
    pub fn scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        root: usize,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let (me, n, c) = (self.rank, self.size(), recv.len());
        let steps = self.plan_scatter::<T>(root, c);
        if me == root {
            Self::len_check("scatter's send buffer", send.len(), n * c)?;
            // The root only sends.
            self.run("scatter", steps, ReadOnly { buf: send, base: 0 }, None)?;
            recv.copy_from_slice(&send[me * c..(me + 1) * c]);
            return Ok(());
        }
        self.run_part("scatter", steps, Part::Recv(recv))
    }

    /// Gathers every rank's `send` into `recv` of every rank
    /// (`recv.len() == size * send.len()`).
    pub fn allgather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<(), CollError> {
        let (n, c) = (self.size(), send.len());
        Self::len_check("allgather's receive buffer", recv.len(), n * c)?;
        let alg = self.choose::<T>(Collective::Allgather, c);
        let steps = self.plan(PlanOp::AllgatherFromInput, 0, c, T::SIZE, |me, n| {
            let steps = match alg {
                Algorithm::Ring => sched::allgather_ring(me, n, c),
                _ => sched::allgather_recursive_doubling(me, n, c),
            };
            sched::allgather_from_input(steps, me, c)
        });
        self.exec("allgather", steps, Split { a: send, b: recv }, None)
    }

    /// Reduces `send` (`size` equal blocks) with `op` and gives rank i the
    /// reduced block i in `recv` (`send.len() == size * recv.len()`).
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let (me, n, c) = (self.rank, self.size(), recv.len());
        Self::len_check("reduce_scatter's send buffer", send.len(), n * c)?;
        let op = checked(op)?;
        let steps = self.plan_reduce_scatter::<T>(c);
        self.with_work(n * c, |comm, work: &mut [T]| {
            work.copy_from_slice(send);
            comm.run(
                "reduce_scatter",
                steps,
                Whole {
                    buf: &mut *work,
                    base: 0,
                },
                Some(op),
            )?;
            recv.copy_from_slice(&work[me * c..(me + 1) * c]);
            Ok(())
        })
    }

    /// Sends block i of `send` to rank i and receives rank i's block into
    /// block i of `recv` (both `size * count` elements).
    pub fn alltoall<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<(), CollError> {
        let n = self.size();
        if send.len() % n != 0 {
            return Err(CollError::InvalidArgument(format!(
                "alltoall's send buffer of {} elements is not {n} equal blocks",
                send.len()
            )));
        }
        Self::len_check("alltoall's receive buffer", recv.len(), send.len())?;
        let c = send.len() / n;
        let steps = self.plan_alltoall::<T>(c);
        self.exec("alltoall", steps, Split { a: send, b: recv }, None)
    }

    /// Inclusive prefix reduction: rank i gets `buf_0 ⊕ ... ⊕ buf_i`,
    /// combined in rank order (non-commutative operations are fine).
    pub fn scan<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = checked(op)?;
        let c = buf.len();
        let steps = self.plan_scan::<T>(c, false);
        self.exec("scan", steps, Whole { buf, base: 0 }, Some(op))
    }

    /// [`Communicator::scan`] of `send` into `recv`, as `MPI_Scan` with
    /// two buffers: `send` is left as it is, and never copied whole first
    /// (sends read it where no step has written yet; a combining receive
    /// reads it in the same pass from 64 KiB, and below copies only what it
    /// combines into, as late as it can).
    ///
    /// ```no_run
    /// # fn f(c: &mut rfx_collectives::Communicator) -> Result<(), rfx_collectives::CollError> {
    /// use rfx_collectives::ReduceOp;
    /// let mine = vec![1u64; 4];
    /// let mut prefix = vec![0; 4];
    /// c.scan_to(&mine, &mut prefix, ReduceOp::Sum)?;
    /// assert_eq!(prefix[0], c.rank() as u64 + 1);
    /// # Ok(()) }
    /// ```
    pub fn scan_to<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.reduce_into("scan", send, recv, op, Self::plan_scan::<T>)
    }

    /// Exclusive prefix reduction: rank i > 0 gets `buf_0 ⊕ ... ⊕ buf_{i-1}`;
    /// rank 0's buffer is left as it was.
    pub fn exscan<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = checked(op)?;
        let steps = self.plan_exscan::<T>(buf.len(), false);
        self.exec("exscan", steps, Whole { buf, base: 0 }, Some(op))
    }

    /// [`Communicator::exscan`] of `send` into `recv`, as `MPI_Exscan`
    /// with two buffers: `send` is left as it is, never copied whole
    /// first; rank 0's `recv` gets a copy of its `send` (MPI leaves it
    /// undefined).
    pub fn exscan_to<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.reduce_into("exscan", send, recv, op, Self::plan_exscan::<T>)
    }

    // ----- collectives: non-blocking --------------------------------------

    /// Non-blocking [`Communicator::barrier`].
    pub fn ibarrier(&mut self) -> Request<()> {
        let steps = self.plan_barrier();
        self.request::<u8, ()>("ibarrier", steps, Vec::new(), None, |_| Ok(()))
    }

    /// Non-blocking [`Communicator::bcast`]; `wait` hands back the buffer.
    pub fn ibcast<T: Element>(
        &mut self,
        buf: Vec<T>,
        root: usize,
    ) -> Result<Request<Vec<T>>, CollError> {
        self.check_root(root)?;
        let steps = self.plan_bcast::<T>(root, buf.len());
        Ok(self.request("ibcast", steps, buf, None, Ok))
    }

    /// Non-blocking [`Communicator::reduce`].
    pub fn ireduce<T: Element>(
        &mut self,
        buf: Vec<T>,
        root: usize,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        self.check_root(root)?;
        let op = checked(op)?;
        let steps = self.plan_reduce::<T>(root, buf.len(), false);
        Ok(self.request("ireduce", steps, buf, Some(op), Ok))
    }

    /// Non-blocking [`Communicator::allreduce`].
    pub fn iallreduce<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let op = checked(op)?;
        let steps = self.plan_allreduce::<T>(buf.len(), false);
        Ok(self.request("iallreduce", steps, buf, Some(op), Ok))
    }

    /// Non-blocking [`Communicator::gather`]: the gathered vector at the
    /// root, an empty one elsewhere.
    pub fn igather<T: Element>(
        &mut self,
        send: Vec<T>,
        root: usize,
    ) -> Result<Request<Vec<T>>, CollError> {
        self.check_root(root)?;
        let (me, n, c) = (self.rank, self.size(), send.len());
        let mut work = vec![T::default(); n * c];
        work[me * c..(me + 1) * c].copy_from_slice(&send);
        let steps = self.plan_gather::<T>(root, c, false);
        Ok(self.request("igather", steps, work, None, move |w| {
            Ok(if me == root { w } else { Vec::new() })
        }))
    }

    /// Non-blocking [`Communicator::scatter`] of blocks of `count`
    /// elements (`send` is read at the root only).
    pub fn iscatter<T: Element>(
        &mut self,
        send: Vec<T>,
        count: usize,
        root: usize,
    ) -> Result<Request<Vec<T>>, CollError> {
        self.check_root(root)?;
        let (me, n) = (self.rank, self.size());
        let work = if me == root {
            Self::len_check("iscatter's send buffer", send.len(), n * count)?;
            send
        } else {
            vec![T::default(); n * count]
        };
        let steps = self.plan_scatter::<T>(root, count);
        Ok(self.request("iscatter", steps, work, None, move |w| {
            Ok(w[me * count..(me + 1) * count].to_vec())
        }))
    }

    /// Non-blocking [`Communicator::allgather`].
    pub fn iallgather<T: Element>(&mut self, send: Vec<T>) -> Request<Vec<T>> {
        let (me, n, c) = (self.rank, self.size(), send.len());
        let mut work = vec![T::default(); n * c];
        work[me * c..(me + 1) * c].copy_from_slice(&send);
        let steps = self.plan_allgather::<T>(c);
        self.request("iallgather", steps, work, None, Ok)
    }

    /// Non-blocking [`Communicator::reduce_scatter`]: hands back this
    /// rank's reduced block.
    pub fn ireduce_scatter<T: Element>(
        &mut self,
        send: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let (me, n) = (self.rank, self.size());
        if send.len() % n != 0 {
            return Err(CollError::InvalidArgument(
                "ireduce_scatter's send buffer is not size equal blocks".into(),
            ));
        }
        let c = send.len() / n;
        let op = checked(op)?;
        let steps = self.plan_reduce_scatter::<T>(c);
        Ok(
            self.request("ireduce_scatter", steps, send, Some(op), move |w| {
                Ok(w[me * c..(me + 1) * c].to_vec())
            }),
        )
    }

    /// Non-blocking [`Communicator::alltoall`].
    pub fn ialltoall<T: Element>(
        &mut self,
        mut send: Vec<T>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let n = self.size();
        if send.len() % n != 0 {
            return Err(CollError::InvalidArgument(
                "ialltoall's send buffer is not size equal blocks".into(),
            ));
        }
        let c = send.len() / n;
        send.resize(2 * n * c, T::default());
        let steps = self.plan_alltoall::<T>(c);
        Ok(self.request("ialltoall", steps, send, None, move |mut w| {
            w.drain(..n * c);
            Ok(w)
        }))
    }

    /// Non-blocking [`Communicator::scan`].
    pub fn iscan<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let op = checked(op)?;
        let steps = self.plan_scan::<T>(buf.len(), false);
        Ok(self.request("iscan", steps, buf, Some(op), Ok))
    }

    /// Non-blocking [`Communicator::exscan`].
    pub fn iexscan<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let op = checked(op)?;
        let steps = self.plan_exscan::<T>(buf.len(), false);
        Ok(self.request("iexscan", steps, buf, Some(op), Ok))
    }

    // ----- sub-communicators ----------------------------------------------

    /// Splits into sub-communicators, one per `color`; ranks are ordered
    /// by `key`, then by rank here. `None` takes no part (gets `Ok(None)`).
    /// Collective over this communicator. The new communicators reuse the
    /// endpoints under a fresh context id.
    pub fn split(
        &mut self,
        color: Option<u32>,
        key: i32,
    ) -> Result<Option<Communicator>, CollError> {
        let next = i64::from(self.engine.lock().next_ctx);
        let mine = [color.map_or(-1, i64::from), i64::from(key), next];
        let n = self.size();
        let mut all = vec![0i64; 3 * n];
        self.allgather(&mine, &mut all)?;
        let ctx = all.chunks_exact(3).map(|c| c[2]).max().unwrap_or(next);
        let ctx = u32::try_from(ctx)
            .ok()
            .filter(|&c| c < DEV)
            .ok_or_else(|| CollError::InvalidArgument("context ids exhausted".into()))?;
        {
            let mut e = self.engine.lock();
            e.next_ctx = e.next_ctx.max(ctx + 1);
        }
        let Some(color) = color else { return Ok(None) };
        let mut members: Vec<(i64, usize)> = all
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, c)| c[0] == i64::from(color))
            .map(|(i, c)| (c[1], i))
            .collect();
        members.sort_unstable();
        let group: Arc<[usize]> = members.iter().map(|&(_, i)| self.group[i]).collect();
        let rank = members
            .iter()
            .position(|&(_, i)| i == self.rank)
            .ok_or_else(|| CollError::InvalidArgument("split lost this rank".into()))?;
        Ok(Some(Communicator {
            engine: self.engine.clone(),
            group,
            rank,
            ctx,
            seq: 0,
            recv_seq: 0,
            cfg: self.cfg.clone(),
            oversubscribed: self.oversubscribed,
            plans: Plans::default(),
            work: Vec::new(),
            staging: None,
        }))
    }

    /// A copy of this communicator with its own context: its messages
    /// never match this one's. Collective.
    pub fn dup(&mut self) -> Result<Communicator, CollError> {
        let key = i32::try_from(self.rank).unwrap_or(i32::MAX);
        self.split(Some(0), key)?
            .ok_or_else(|| CollError::InvalidArgument("dup lost this rank".into()))
    }
}
