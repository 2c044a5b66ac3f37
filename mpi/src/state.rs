//! The process's MPI state behind one lock: communicators, derived types,
//! user ops, requests and info objects, each in a table of handles, and
//! how a failure reaches the program (the communicator's error handler).
//!
//! One lock serializes MPI calls: rfx provides `MPI_THREAD_SERIALIZED`.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::io::Write;

use rfx_collectives::Communicator;

use crate::abi::{self, Handle};
use crate::datatype::{self, Datatype};
use crate::error::{self, Failure};
use crate::group::Table;
use crate::op::MpiOp;
use crate::request::Pending;

/// Handles of one kind: `base + 16 * slot`, far from the predefined ones.
#[derive(Debug)]
pub(crate) struct Handles<T> {
    base: Handle,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Handles<T> {
    const fn new(base: Handle) -> Handles<T> {
        Handles {
            base,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, v: T) -> Handle {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(v);
                s
            }
            None => {
                self.slots.push(Some(v));
                self.slots.len() - 1
            }
        };
        self.base + (slot << 4)
    }

    fn slot(&self, h: Handle) -> Option<usize> {
        let off = h.checked_sub(self.base)?;
        (off & 15 == 0).then_some(off >> 4)
    }

    pub(crate) fn get(&self, h: Handle) -> Option<&T> {
        self.slots.get(self.slot(h)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        let s = self.slot(h)?;
        self.slots.get_mut(s)?.as_mut()
    }

    pub(crate) fn remove(&mut self, h: Handle) -> Option<T> {
        let s = self.slot(h)?;
        let v = self.slots.get_mut(s)?.take()?;
        self.free.push(s);
        Some(v)
    }
}

/// What carries a communicator's traffic.
#[derive(Debug)]
pub(crate) enum Backend {
    /// rfx's communicator (a program under `rfx run`, `srun`, `mpirun`).
    Own(Communicator),
    /// A function's group, through the executor's table.
    Group(Table),
}

/// A communicator and what MPI attaches to it.
#[derive(Debug)]
pub(crate) struct Comm {
    pub(crate) ep: Backend,
    pub(crate) errhandler: Handle,
    pub(crate) name: String,
}

impl Comm {
    pub(crate) fn new(comm: Communicator, name: &str) -> Comm {
        Comm::with(Backend::Own(comm), name)
    }

    pub(crate) fn group(table: Table, name: &str) -> Comm {
        Comm::with(Backend::Group(table), name)
    }

    fn with(ep: Backend, name: &str) -> Comm {
        Comm {
            ep,
            errhandler: abi::MPI_ERRORS_ARE_FATAL,
            name: name.to_string(),
        }
    }

    pub(crate) fn rank(&self) -> usize {
        match &self.ep {
            Backend::Own(c) => c.rank(),
            Backend::Group(t) => t.rank(),
        }
    }

    pub(crate) fn size(&self) -> usize {
        match &self.ep {
            Backend::Own(c) => c.size(),
            Backend::Group(t) => t.size(),
        }
    }

    /// rfx's communicator; inside a function only what the group table
    /// offers is available.
    pub(crate) fn rfx(&mut self) -> Result<&mut Communicator, Failure> {
        match &mut self.ep {
            Backend::Own(c) => Ok(c),
            Backend::Group(_) => Err(Failure::new(
                abi::MPI_ERR_UNSUPPORTED_OPERATION,
                "not available on a function's group: send, recv, barrier, bcast, reduce, \
                 allreduce and allgather are",
            )),
        }
    }
}

/// Everything between `MPI_Init` and `MPI_Finalize`.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) comms: Handles<Comm>,
    pub(crate) types: Handles<Datatype>,
    pub(crate) ops: Handles<MpiOp>,
    pub(crate) requests: Handles<Box<dyn Pending>>,
    pub(crate) infos: Handles<BTreeMap<String, String>>,
    /// `MPI_Init_thread`'s answer.
    pub(crate) thread_level: c_int,
}

/// Where the process is in MPI's life.
#[derive(Debug)]
pub(crate) enum Phase {
    Before,
    Running(Box<State>),
    After,
}

/// The lock every MPI call takes: a spin lock, because taking it is one
/// atomic instruction and releasing it a plain store (a mutex's release is
/// a second atomic, ~9 ns on the 2-vCPU VM, twice per round trip of
/// `osu_latency`). Under `MPI_THREAD_SERIALIZED` calls do not overlap, so
/// it is never contended; a thread that finds it taken anyway yields.
pub(crate) static PHASE: spin::mutex::SpinMutex<Phase, spin::relax::Yield> =
    spin::mutex::SpinMutex::new(Phase::Before);

impl State {
    pub(crate) fn new(world: Communicator, me: Communicator, thread_level: c_int) -> State {
        State::of(
            Comm::new(world, "MPI_COMM_WORLD"),
            Comm::new(me, "MPI_COMM_SELF"),
            thread_level,
        )
    }

    /// The state of a function's group: the group is `MPI_COMM_WORLD`,
    /// `MPI_COMM_SELF` this process.
    pub(crate) fn with_group(table: Table, thread_level: c_int) -> State {
        let me = rfx_collectives::CollConfig::from_env()
            .and_then(Communicator::solo)
            .map_or_else(
                |_| Comm::group(table, "MPI_COMM_SELF"),
                |c| Comm::new(c, "MPI_COMM_SELF"),
            );
        State::of(Comm::group(table, "MPI_COMM_WORLD"), me, thread_level)
    }

    fn of(world: Comm, me: Comm, thread_level: c_int) -> State {
        let mut comms = Handles::new(0x1000_0000);
        let world = comms.insert(world);
        let me = comms.insert(me);
        debug_assert_eq!((world, me), (COMM_WORLD_SLOT, COMM_SELF_SLOT));
        State {
            comms,
            types: Handles::new(0x2000_0000),
            ops: Handles::new(0x3000_0000),
            requests: Handles::new(0x5000_0000),
            infos: Handles::new(0x4000_0000),
            thread_level,
        }
    }

    /// The slot handle of a communicator handle (the predefined ones map
    /// to the first two slots).
    fn comm_slot(h: Handle) -> Handle {
        match h {
            abi::MPI_COMM_WORLD => COMM_WORLD_SLOT,
            abi::MPI_COMM_SELF => COMM_SELF_SLOT,
            h => h,
        }
    }

    /// The communicator of `h`.
    pub(crate) fn comm(&mut self, h: Handle) -> Result<&mut Comm, Failure> {
        if h == abi::MPI_COMM_NULL {
            return Err(Failure::new(abi::MPI_ERR_COMM, "MPI_COMM_NULL"));
        }
        self.comms
            .get_mut(Self::comm_slot(h))
            .ok_or_else(|| Failure::new(abi::MPI_ERR_COMM, format!("no communicator {h:#x}")))
    }

    /// True inside a function: the world is the group the executor attached
    /// (MPI_Init and MPI_Finalize are then the executor's business).
    pub(crate) fn in_group(&self) -> bool {
        self.comms
            .get(COMM_WORLD_SLOT)
            .is_some_and(|c| matches!(c.ep, Backend::Group(_)))
    }

    /// rfx's communicator of `h` (see [`Comm::rfx`]).
    pub(crate) fn rfx(&mut self, h: Handle) -> Result<&mut Communicator, Failure> {
        self.comm(h)?.rfx()
    }

    /// Frees a communicator; the predefined ones cannot be.
    pub(crate) fn free_comm(&mut self, h: Handle) -> Result<(), Failure> {
        if matches!(h, abi::MPI_COMM_WORLD | abi::MPI_COMM_SELF) {
            return Err(Failure::new(abi::MPI_ERR_COMM, "a predefined communicator"));
        }
        self.comms
            .remove(h)
            .map(drop)
            .ok_or_else(|| Failure::new(abi::MPI_ERR_COMM, format!("no communicator {h:#x}")))
    }

    /// The datatype of `h`, predefined or derived.
    pub(crate) fn datatype(&self, h: Handle) -> Result<&Datatype, Failure> {
        if let Some(t) = datatype::predefined_ref(h) {
            return Ok(t);
        }
        self.types
            .get(h)
            .ok_or_else(|| Failure::new(abi::MPI_ERR_TYPE, format!("no datatype {h:#x}")))
    }

    /// The operation of `h`.
    pub(crate) fn op(&self, h: Handle) -> Result<MpiOp, Failure> {
        match h {
            abi::MPI_SUM..=abi::MPI_NO_OP if h != abi::MPI_OP_NULL => Ok(MpiOp::Builtin(h)),
            h => self
                .ops
                .get(h)
                .copied()
                .ok_or_else(|| Failure::new(abi::MPI_ERR_OP, format!("no operation {h:#x}"))),
        }
    }
}

const COMM_WORLD_SLOT: Handle = 0x1000_0000;
const COMM_SELF_SLOT: Handle = 0x1000_0010;

/// Runs `f` on the running state. A failure goes to the error handler of
/// `comm` (the world's if `comm` is no communicator): returned as a code
/// under `MPI_ERRORS_RETURN`, fatal otherwise.
pub(crate) fn call(
    name: &'static str,
    comm: Handle,
    f: impl FnOnce(&mut State) -> Result<(), Failure>,
) -> c_int {
    let mut phase = PHASE.lock();
    let r = match &mut *phase {
        Phase::Running(st) => match f(st) {
            Ok(()) => return abi::MPI_SUCCESS,
            Err(e) => Err((e, handler_of(st, comm))),
        },
        Phase::Before => Err((
            Failure::new(abi::MPI_ERR_OTHER, "called before MPI_Init"),
            abi::MPI_ERRORS_ARE_FATAL,
        )),
        Phase::After => Err((
            Failure::new(abi::MPI_ERR_OTHER, "called after MPI_Finalize"),
            abi::MPI_ERRORS_ARE_FATAL,
        )),
    };
    drop(phase);
    match r {
        Ok(()) => abi::MPI_SUCCESS,
        Err((e, handler)) => deliver(name, e, handler),
    }
}

fn handler_of(st: &mut State, comm: Handle) -> Handle {
    match st.comm(comm) {
        Ok(c) => c.errhandler,
        Err(_) => st
            .comm(abi::MPI_COMM_WORLD)
            .map_or(abi::MPI_ERRORS_ARE_FATAL, |c| c.errhandler),
    }
}

/// A failure outside any communicator's call (an unsupported function):
/// the world's handler decides.
pub(crate) fn fail_world(e: Failure) -> c_int {
    let handler = match &mut *PHASE.lock() {
        Phase::Running(st) => handler_of(st, abi::MPI_COMM_WORLD),
        _ => abi::MPI_ERRORS_ARE_FATAL,
    };
    deliver("", e, handler)
}

fn deliver(name: &str, e: Failure, handler: Handle) -> c_int {
    if handler == abi::MPI_ERRORS_RETURN {
        return error::code(&e);
    }
    let what = if name.is_empty() {
        e.message.clone()
    } else {
        format!("{name}: {}", e.message)
    };
    abort_process(&format!(
        "rfx MPI: {what} ({}); the error handler is fatal",
        error::class_text(e.class)
    ));
}

/// Ends the process as MPI_Abort does: the message on stderr, exit code 1
/// (peers see this rank gone and fail their calls, never hang).
pub(crate) fn abort_process(message: &str) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
    let _ = err.flush();
    std::process::exit(1)
}
