//! [`Communicator`]: point to point and collectives over the engine.

use std::sync::{Arc, Mutex};

use rfx_fabric::TransportKind;

use crate::config::CollConfig;
use crate::element::{Element, Op};
use crate::engine::{Engine, Msg};
use crate::error::CollError;
use crate::request::{drive, lock, MapTask, MatchTask, Ready, Request, SchedTask, Task};
use crate::schedule::{self as sched, Step};

/// Context bit of collective traffic (point to point uses the bare context).
const COLL: u32 = 1 << 31;

/// Where a receive takes its message from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Any rank of the communicator.
    Any,
    /// This rank.
    Rank(usize),
}

/// Which tags a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    /// Any tag.
    Any,
    /// This tag.
    Tag(u32),
}

impl From<u32> for TagMatch {
    fn from(t: u32) -> Self {
        TagMatch::Tag(t)
    }
}

impl From<usize> for Source {
    fn from(r: usize) -> Self {
        Source::Rank(r)
    }
}

/// What a receive got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The sender's rank in the communicator.
    pub source: usize,
    /// The message's tag.
    pub tag: u32,
    /// Elements received.
    pub len: usize,
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
    engine: Arc<Mutex<Engine>>,
    /// World rank of each rank of this communicator.
    group: Arc<[usize]>,
    rank: usize,
    ctx: u32,
    seq: u32,
    cfg: Arc<CollConfig>,
}

fn check_op<T: Element>(op: &Op<T>) -> Result<(), CollError> {
    op.check()
}

impl Communicator {
    pub(crate) fn from_engine(engine: Engine, cfg: CollConfig) -> Communicator {
        let size = engine.size();
        let rank = engine.rank();
        Communicator {
            engine: Arc::new(Mutex::new(engine)),
            group: (0..size).collect(),
            rank,
            ctx: 0,
            seq: 0,
            cfg: Arc::new(cfg),
        }
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

    /// The transport to `rank` (`None` for ourselves or a bad rank).
    pub fn transport(&self, rank: usize) -> Option<TransportKind> {
        let w = *self.group.get(rank)?;
        lock(&self.engine).transport(w)
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

    fn world(&self, rank: usize) -> Result<usize, CollError> {
        self.group.get(rank).copied().ok_or(CollError::InvalidRank {
            rank,
            size: self.size(),
        })
    }

    fn next_tag(&mut self) -> u32 {
        let t = self.seq;
        self.seq = self.seq.wrapping_add(1);
        t
    }

    // ----- point to point -------------------------------------------------

    /// Sends `buf` to `dest` with `tag`. Returns once the data is handed to
    /// the transport (copied); never waits for the matching receive.
    pub fn send<T: Element>(&mut self, buf: &[T], dest: usize, tag: u32) -> Result<(), CollError> {
        let w = self.world(dest)?;
        let mut bytes = Vec::with_capacity(buf.len() * T::SIZE);
        T::encode(buf, &mut bytes);
        lock(&self.engine).post(w, self.ctx, tag, &bytes)?;
        // Bound the memory queued for a slow receiver: wait until the
        // window took the message.
        let mut t = FlushTask { dest: w };
        drive(&self.engine, &mut t, self.cfg.op_timeout)
    }

    fn match_task(&self, source: Source, tag: TagMatch) -> Result<MatchTask, CollError> {
        let src = match source {
            Source::Any => None,
            Source::Rank(r) => Some(self.world(r)?),
        };
        let tag = match tag {
            TagMatch::Any => None,
            TagMatch::Tag(t) => Some(t),
        };
        Ok(MatchTask {
            src,
            ctx: self.ctx,
            tag,
            group: self.group.clone(),
        })
    }

    fn status_of<T: Element>(group: &[usize], m: &Msg, cap: usize) -> Result<Status, CollError> {
        if m.data.len() % T::SIZE != 0 || m.data.len() > cap * T::SIZE {
            return Err(CollError::Truncated {
                got: m.data.len(),
                cap: cap * T::SIZE,
            });
        }
        let source = group.iter().position(|&w| w == m.src).unwrap_or(usize::MAX);
        Ok(Status {
            source,
            tag: m.tag,
            len: m.data.len() / T::SIZE,
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
        let mut t = self.match_task(source.into(), tag.into())?;
        let m = drive(&self.engine, &mut t, self.cfg.op_timeout)?;
        let st = Self::status_of::<T>(&self.group, &m, buf.len())?;
        T::decode(&mut buf[..st.len], &m.data);
        Ok(st)
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
        let mut bytes = Vec::with_capacity(send.len() * T::SIZE);
        T::encode(send, &mut bytes);
        lock(&self.engine).post(w, self.ctx, send_tag, &bytes)?;
        self.recv(recv, source, recv_tag)
    }

    /// Non-blocking send of an owned buffer; `wait` hands it back.
    pub fn isend<T: Element>(
        &mut self,
        buf: Vec<T>,
        dest: usize,
        tag: u32,
    ) -> Result<Request<Vec<T>>, CollError> {
        let w = self.world(dest)?;
        let mut bytes = Vec::with_capacity(buf.len() * T::SIZE);
        T::encode(&buf, &mut bytes);
        lock(&self.engine).post(w, self.ctx, tag, &bytes)?;
        Ok(Request::new(
            self.engine.clone(),
            Box::new(Ready(Some(buf), "isend")),
            self.cfg.op_timeout,
        ))
    }

    /// Non-blocking receive into an owned buffer; `wait` hands back the
    /// buffer and the status.
    pub fn irecv<T: Element>(
        &mut self,
        mut buf: Vec<T>,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Request<(Vec<T>, Status)>, CollError> {
        let t = self.match_task(source.into(), tag.into())?;
        let group = self.group.clone();
        let task = MapTask {
            inner: t,
            f: Some(move |m: Msg| {
                let st = Self::status_of::<T>(&group, &m, buf.len())?;
                T::decode(&mut buf[..st.len], &m.data);
                Ok((buf, st))
            }),
        };
        Ok(Request::new(
            self.engine.clone(),
            Box::new(task),
            self.cfg.op_timeout,
        ))
    }

    // ----- collectives: plumbing -----------------------------------------

    fn coll_task<T: Element, B: AsMut<[T]> + Send>(
        &mut self,
        name: &'static str,
        steps: Vec<Step>,
        buf: B,
        op: Option<Op<T>>,
    ) -> SchedTask<T, B> {
        let tag = self.next_tag();
        SchedTask::new(
            name,
            steps,
            buf,
            self.group.clone(),
            self.ctx | COLL,
            tag,
            op,
        )
    }

    fn run<T: Element>(
        &mut self,
        name: &'static str,
        steps: Vec<Step>,
        buf: &mut [T],
        op: Option<Op<T>>,
    ) -> Result<(), CollError> {
        let mut t = self.coll_task(name, steps, buf, op);
        drive(&self.engine, &mut t, self.cfg.op_timeout).map(|_| ())
    }

    fn request<T: Element, R: Send + 'static>(
        &mut self,
        name: &'static str,
        steps: Vec<Step>,
        buf: Vec<T>,
        op: Option<Op<T>>,
        finish: impl FnOnce(Vec<T>) -> Result<R, CollError> + Send + 'static,
    ) -> Request<R> {
        let t = self.coll_task(name, steps, buf, op);
        let task = MapTask {
            inner: t,
            f: Some(finish),
        };
        Request::new(self.engine.clone(), Box::new(task), self.cfg.op_timeout)
    }

    fn check_root(&self, root: usize) -> Result<(), CollError> {
        self.world(root).map(|_| ())
    }

    fn len_check(what: &str, got: usize, want: usize) -> Result<(), CollError> {
        if got == want {
            Ok(())
        } else {
            Err(CollError::InvalidArgument(format!(
                "{what} holds {got} elements where {want} are needed"
            )))
        }
    }

    // ----- schedules chosen by size (thresholds in `CollConfig`) ----------

    fn plan_bcast<T: Element>(&self, root: usize, count: usize) -> Vec<Step> {
        let t = &self.cfg.thresholds;
        let (me, n) = (self.rank, self.size());
        if count * T::SIZE >= t.bcast_pipeline_min && n > 2 {
            sched::bcast_chain(me, n, root, count, (t.pipeline_chunk / T::SIZE).max(1))
        } else {
            sched::bcast_binomial(me, n, root, count)
        }
    }

    fn plan_reduce<T: Element>(&self, root: usize, count: usize) -> Vec<Step> {
        let t = &self.cfg.thresholds;
        let (me, n) = (self.rank, self.size());
        if count * T::SIZE >= t.reduce_pipeline_min && n > 2 {
            sched::reduce_chain(me, n, root, count, (t.pipeline_chunk / T::SIZE).max(1))
        } else {
            sched::reduce_binomial(me, n, root, count)
        }
    }

    fn plan_allreduce<T: Element>(&self, count: usize) -> Vec<Step> {
        let t = &self.cfg.thresholds;
        let (me, n) = (self.rank, self.size());
        let bytes = count * T::SIZE;
        if bytes < t.allreduce_large_min || count < n {
            sched::allreduce_recursive_doubling(me, n, count)
        } else if bytes < t.allreduce_ring_min || n.is_power_of_two() {
            sched::allreduce_rabenseifner(me, n, count)
        } else {
            sched::allreduce_ring(me, n, count)
        }
    }

    fn plan_allgather<T: Element>(&self, count: usize) -> Vec<Step> {
        let (me, n) = (self.rank, self.size());
        if count * T::SIZE >= self.cfg.thresholds.allgather_ring_min {
            sched::allgather_ring(me, n, count)
        } else {
            sched::allgather_recursive_doubling(me, n, count)
        }
    }

    // ----- collectives: blocking ------------------------------------------

    /// Waits until every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<(), CollError> {
        let steps = sched::barrier_dissemination(self.rank, self.size());
        self.run::<u8>("barrier", steps, &mut [], None)
    }

    /// Broadcasts `buf` of `root` into `buf` of every rank.
    pub fn bcast<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<(), CollError> {
        self.check_root(root)?;
        let steps = self.plan_bcast::<T>(root, buf.len());
        self.run("bcast", steps, buf, None)
    }

    /// Reduces every rank's `buf` with `op` into `buf` of `root`. On the
    /// other ranks `buf` serves as scratch and holds partial results after.
    pub fn reduce<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let op = op.into();
        check_op(&op)?;
        let steps = self.plan_reduce::<T>(root, buf.len());
        self.run("reduce", steps, buf, Some(op))
    }

    /// Reduces every rank's `buf` with `op`; every rank gets the result in
    /// `buf`.
    pub fn allreduce<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = op.into();
        check_op(&op)?;
        let steps = self.plan_allreduce::<T>(buf.len());
        self.run("allreduce", steps, buf, Some(op))
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
        let steps = sched::gather_binomial(me, n, root, c);
        if me == root {
            Self::len_check("gather's receive buffer", recv.len(), n * c)?;
            recv[me * c..(me + 1) * c].copy_from_slice(send);
            self.run("gather", steps, recv, None)
        } else {
            let mut work = vec![T::default(); n * c];
            work[me * c..(me + 1) * c].copy_from_slice(send);
            self.run("gather", steps, &mut work, None)
        }
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
        let steps = sched::scatter_binomial(me, n, root, c);
        let mut work = if me == root {
            Self::len_check("scatter's send buffer", send.len(), n * c)?;
            send.to_vec()
        } else {
            vec![T::default(); n * c]
        };
        self.run("scatter", steps, &mut work, None)?;
        recv.copy_from_slice(&work[me * c..(me + 1) * c]);
        Ok(())
    }

    /// Gathers every rank's `send` into `recv` of every rank
    /// (`recv.len() == size * send.len()`).
    pub fn allgather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<(), CollError> {
        let (me, n, c) = (self.rank, self.size(), send.len());
        Self::len_check("allgather's receive buffer", recv.len(), n * c)?;
        recv[me * c..(me + 1) * c].copy_from_slice(send);
        let steps = self.plan_allgather::<T>(c);
        self.run("allgather", steps, recv, None)
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
        let op = op.into();
        check_op(&op)?;
        let mut work = send.to_vec();
        let steps = sched::reduce_scatter_ring(me, n, c);
        self.run("reduce_scatter", steps, &mut work, Some(op))?;
        recv.copy_from_slice(&work[me * c..(me + 1) * c]);
        Ok(())
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
        let mut work = Vec::with_capacity(2 * n * c);
        work.extend_from_slice(send);
        work.resize(2 * n * c, T::default());
        let steps = sched::alltoall_pairwise(self.rank, n, c);
        self.run("alltoall", steps, &mut work, None)?;
        recv.copy_from_slice(&work[n * c..]);
        Ok(())
    }

    /// Inclusive prefix reduction: rank i gets `buf_0 ⊕ ... ⊕ buf_i`,
    /// combined in rank order (non-commutative operations are fine).
    pub fn scan<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = op.into();
        check_op(&op)?;
        let steps = sched::scan_recursive_doubling(self.rank, self.size(), buf.len());
        self.run("scan", steps, buf, Some(op))
    }

    /// Exclusive prefix reduction: rank i > 0 gets `buf_0 ⊕ ... ⊕ buf_{i-1}`;
    /// rank 0's buffer is left as it was.
    pub fn exscan<T: Element>(
        &mut self,
        buf: &mut [T],
        op: impl Into<Op<T>>,
    ) -> Result<(), CollError> {
        let op = op.into();
        check_op(&op)?;
        let steps = sched::exscan(self.rank, self.size(), buf.len());
        self.run("exscan", steps, buf, Some(op))
    }

    // ----- collectives: non-blocking --------------------------------------

    /// Non-blocking [`Communicator::barrier`].
    pub fn ibarrier(&mut self) -> Request<()> {
        let steps = sched::barrier_dissemination(self.rank, self.size());
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
        let op = op.into();
        check_op(&op)?;
        let steps = self.plan_reduce::<T>(root, buf.len());
        Ok(self.request("ireduce", steps, buf, Some(op), Ok))
    }

    /// Non-blocking [`Communicator::allreduce`].
    pub fn iallreduce<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let op = op.into();
        check_op(&op)?;
        let steps = self.plan_allreduce::<T>(buf.len());
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
        let steps = sched::gather_binomial(me, n, root, c);
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
        let steps = sched::scatter_binomial(me, n, root, count);
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
        let op = op.into();
        check_op(&op)?;
        let steps = sched::reduce_scatter_ring(me, n, c);
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
        let steps = sched::alltoall_pairwise(self.rank, n, c);
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
        let op = op.into();
        check_op(&op)?;
        let steps = sched::scan_recursive_doubling(self.rank, self.size(), buf.len());
        Ok(self.request("iscan", steps, buf, Some(op), Ok))
    }

    /// Non-blocking [`Communicator::exscan`].
    pub fn iexscan<T: Element>(
        &mut self,
        buf: Vec<T>,
        op: impl Into<Op<T>>,
    ) -> Result<Request<Vec<T>>, CollError> {
        let op = op.into();
        check_op(&op)?;
        let steps = sched::exscan(self.rank, self.size(), buf.len());
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
        let next = i64::from(lock(&self.engine).next_ctx);
        let mine = [color.map_or(-1, i64::from), i64::from(key), next];
        let n = self.size();
        let mut all = vec![0i64; 3 * n];
        self.allgather(&mine, &mut all)?;
        let ctx = all.chunks_exact(3).map(|c| c[2]).max().unwrap_or(next);
        let ctx = u32::try_from(ctx)
            .ok()
            .filter(|&c| c < COLL - 1)
            .ok_or_else(|| CollError::InvalidArgument("context ids exhausted".into()))?;
        {
            let mut e = lock(&self.engine);
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
            cfg: self.cfg.clone(),
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

/// Waits until the frames queued to a peer went out (credit came back).
struct FlushTask {
    dest: usize,
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
