//! Operations as tasks the engine progresses, and [`Request`], the handle
//! of a non-blocking one: the buffers a task works on (`buffers`), moving
//! data between them and messages (`transfer`), the tasks (`tasks`).

// Block lists of one range are still block lists.
#![allow(clippy::single_range_in_vec_init)]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::element::{Element, Op, WIDE_MIN_BYTES};
use crate::engine::{
    Claimed, Engine, Inline, Lend, Piece, Sink, Small, INLINE_MAX, STAGED_READ_MAX,
};
use crate::error::CollError;
use crate::matching::Status;
use crate::schedule::{Combine, Step};

mod buffers;
mod tasks;
mod transfer;

pub(crate) use buffers::{ReadOnly, Split, TaskBuf, Whole};
pub(crate) use tasks::{
    Both, FlushTask, HeldSend, MapTask, Ready, RecvTask, SchedTask, SendTask, Senders,
};
use transfer::*;

/// The engine of a process, shared by its communicators and requests. A
/// spin lock: taking it is one atomic operation and releasing it a plain
/// store, which matters on a path of ~100 ns per call; contention (threads
/// driving communicators of one process at once) is rare and yields.
pub(crate) type EngineLock = spin::mutex::SpinMutex<Engine, spin::relax::Yield>;

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
    let mut e = engine.lock();
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
            e = engine.lock();
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
/// Dropping an unfinished request abandons it (a receive gives up its
/// place in the matching order); the messages of an abandoned collective
/// may then confuse later operations on the same communicator, so wait for
/// every request.
#[must_use = "a request does nothing unless waited for or tested"]
pub struct Request<R> {
    engine: Arc<EngineLock>,
    task: Box<dyn Task<Output = R>>,
    done: Option<R>,
    timeout: Duration,
    /// Completed or failed: nothing to abandon on drop.
    settled: bool,
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
            settled: false,
        }
    }

    /// Progresses once without waiting; true once the operation is done
    /// (then [`Request::wait`] returns at once).
    pub fn test(&mut self) -> Result<bool, CollError> {
        if self.done.is_some() {
            return Ok(true);
        }
        let mut e = self.engine.lock();
        match step_once(&mut e, self.task.as_mut()) {
            Ok(Some(out)) => {
                self.done = Some(out);
                self.settled = true;
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
                self.settled = true;
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
        // drive aborts the task itself when it fails.
        self.settled = true;
        drive(&self.engine, self.task.as_mut(), self.timeout)
    }
}

impl<R> Drop for Request<R> {
    fn drop(&mut self) {
        if !self.settled {
            let mut e = self.engine.lock();
            self.task.abort(&mut e);
        }
    }
}

/// Waits for every request, in order; the first error is returned.
pub fn wait_all<R>(reqs: Vec<Request<R>>) -> Result<Vec<R>, CollError> {
    reqs.into_iter().map(Request::wait).collect()
}
