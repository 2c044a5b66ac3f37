//! Operations as tasks the engine progresses, and [`Request`], the handle
//! of a non-blocking one.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::element::{Element, Op};
use crate::engine::{Engine, Msg};
use crate::error::CollError;
use crate::schedule::{Combine, Step};

pub(crate) fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

/// An operation in progress: advanced by [`Task::step`] until it yields
/// its output.
pub(crate) trait Task: Send {
    type Output;
    /// Advances as far as arrived messages allow.
    fn step(&mut self, e: &mut Engine) -> Result<Option<Self::Output>, CollError>;
    /// A counter that grows whenever the task advances (for the timeout).
    fn position(&self) -> usize;
    /// The world rank the task waits on, if one.
    fn waiting_for(&self) -> Option<usize>;
    /// The operation's name, for errors.
    fn name(&self) -> &'static str;
}

/// Runs `task` to completion, progressing the engine; fails after
/// `timeout` without the task advancing.
pub(crate) fn drive<K: Task + ?Sized>(
    engine: &Mutex<Engine>,
    task: &mut K,
    timeout: Duration,
) -> Result<K::Output, CollError> {
    let mut pos = task.position();
    let mut deadline: Option<Instant> = None;
    let mut spins = 0u32;
    loop {
        let mut e = lock(engine);
        if let Some(out) = task.step(&mut e)? {
            return Ok(out);
        }
        let moved = e.progress();
        if moved {
            if let Some(out) = task.step(&mut e)? {
                return Ok(out);
            }
        }
        if task.position() != pos {
            pos = task.position();
            deadline = None;
            spins = 0;
        }
        spins += 1;
        // The clock is read only once a wait lasts a while.
        if spins >= 256 {
            let now = Instant::now();
            let d = *deadline.get_or_insert(now + timeout);
            if now >= d {
                return Err(CollError::Timeout {
                    op: task.name(),
                    after: timeout,
                    waiting_for: task.waiting_for(),
                });
            }
        }
        if !moved {
            e.idle(Duration::from_millis(50));
        }
        drop(e);
    }
}

/// The handle of a non-blocking operation; [`Request::wait`] hands back
/// its result (the buffers, for collectives).
///
/// Dropping an unfinished request abandons it: its messages may then
/// confuse later operations on the same communicator, so wait for every
/// request.
#[must_use = "a request does nothing unless waited for or tested"]
pub struct Request<R> {
    engine: Arc<Mutex<Engine>>,
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
        engine: Arc<Mutex<Engine>>,
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
        if let Some(out) = self.task.step(&mut e)? {
            self.done = Some(out);
            return Ok(true);
        }
        if e.progress() {
            if let Some(out) = self.task.step(&mut e)? {
                self.done = Some(out);
                return Ok(true);
            }
        }
        Ok(false)
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

/// A receive: the first message matching (source, context, tag).
#[derive(Debug)]
pub(crate) struct MatchTask {
    pub(crate) src: Option<usize>,
    pub(crate) ctx: u32,
    pub(crate) tag: Option<u32>,
    /// World ranks of the communicator (checked for dead peers on `Any`).
    pub(crate) group: Arc<[usize]>,
}

impl Task for MatchTask {
    type Output = Msg;
    fn step(&mut self, e: &mut Engine) -> Result<Option<Msg>, CollError> {
        if let Some(m) = e.take(self.src, self.ctx, self.tag) {
            return Ok(Some(m));
        }
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
        Ok(None)
    }
    fn position(&self) -> usize {
        0
    }
    fn waiting_for(&self) -> Option<usize> {
        self.src
    }
    fn name(&self) -> &'static str {
        "recv"
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

/// A collective: a schedule run over a working buffer `B`.
pub(crate) struct SchedTask<T: Element, B> {
    pub(crate) name: &'static str,
    pub(crate) steps: Vec<Step>,
    pub(crate) pc: usize,
    pub(crate) buf: Option<B>,
    pub(crate) group: Arc<[usize]>,
    pub(crate) ctx: u32,
    pub(crate) tag: u32,
    pub(crate) op: Option<Op<T>>,
    pub(crate) scratch: Vec<u8>,
}

impl<T: Element, B: AsMut<[T]> + Send> SchedTask<T, B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &'static str,
        steps: Vec<Step>,
        buf: B,
        group: Arc<[usize]>,
        ctx: u32,
        tag: u32,
        op: Option<Op<T>>,
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
            scratch: Vec::new(),
        }
    }
}

impl<T: Element, B: AsMut<[T]> + Send> Task for SchedTask<T, B> {
    type Output = B;
    fn step(&mut self, e: &mut Engine) -> Result<Option<B>, CollError> {
        let Some(bufh) = self.buf.as_mut() else {
            return Err(CollError::InvalidArgument(
                "request polled after completion".into(),
            ));
        };
        let buf = bufh.as_mut();
        while let Some(step) = self.steps.get(self.pc) {
            match step {
                Step::Send { to, blocks } => {
                    self.scratch.clear();
                    for r in blocks {
                        T::encode(&buf[r.clone()], &mut self.scratch);
                    }
                    e.post(self.group[*to], self.ctx, self.tag, &self.scratch)?;
                }
                Step::Recv {
                    from,
                    blocks,
                    combine,
                } => {
                    let src = self.group[*from];
                    let Some(msg) = e.take(Some(src), self.ctx, Some(self.tag)) else {
                        if let Some(why) = e.gone(src) {
                            return Err(CollError::PeerGone {
                                rank: src,
                                reason: why.to_string(),
                            });
                        }
                        return Ok(None);
                    };
                    let want = step.elements() * T::SIZE;
                    if msg.data.len() != want {
                        return Err(CollError::Mismatch {
                            rank: src,
                            got: msg.data.len(),
                            want,
                        });
                    }
                    let mut at = 0;
                    for r in blocks {
                        let bytes = &msg.data[at..at + r.len() * T::SIZE];
                        at += r.len() * T::SIZE;
                        let dst = &mut buf[r.clone()];
                        match (combine, &self.op) {
                            (Combine::Replace, _) | (_, None) => T::decode(dst, bytes),
                            (Combine::Reduce, Some(op)) => op.combine_bytes(dst, bytes, false)?,
                            (Combine::ReduceLeft, Some(op)) => {
                                op.combine_bytes(dst, bytes, true)?
                            }
                        }
                    }
                }
                Step::Copy { from, to } => buf.copy_within(from.clone(), *to),
            }
            self.pc += 1;
        }
        Ok(self.buf.take())
    }
    fn position(&self) -> usize {
        self.pc
    }
    fn waiting_for(&self) -> Option<usize> {
        match self.steps.get(self.pc) {
            Some(Step::Recv { from, .. }) => self.group.get(*from).copied(),
            _ => None,
        }
    }
    fn name(&self) -> &'static str {
        self.name
    }
}
