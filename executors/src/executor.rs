//! The executor: serves the invocations of one lease, one worker thread per
//! leased core, each with its own endpoint (rFaaS's thread and queue pair
//! per core).
//!
//! A worker accepts only the lease holder (the lease token is the fabric
//! handshake's shared secret, proven by challenge-response, never sent),
//! loads the functions the client names and checks where its results go
//! (the [`ResultGeometry`] of its set-up), then serves invocations: the
//! client's `write_imm` puts the bare input into a slot of the worker's
//! exposed buffer; the worker runs the function on the slot in place and
//! `write_imm`s the output straight into the client's result buffer of
//! that slot, with `id << 16 | status` as the immediate. It busy-polls while work comes,
//! and after `hot_timeout` without work sleeps until the next arrival.
//!
//! An input larger than a slot stays in the client's input region: the slot
//! holds a descriptor of it, and the worker reads it with a one-sided
//! [`Endpoint::read`] into a buffer it reuses, up to its bound
//! ([`Executor::max_input`], [`MAX_INPUT_ENV`], 64 MiB by default); a longer
//! or unreadable input is answered with an error status and the worker goes
//! on (see [`rfx_fabric::invocation`]).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use parking_lot::{Condvar, Mutex};
use rfx_fabric::invocation::{self, FunctionField, Input, InputDescriptor, Status, DESCRIPTOR_LEN};
use rfx_fabric::{
    Completion, ConnectOptions, Endpoint, Fabric, FabricError, Listener, MemoryRegion, PollMode,
    RemoteBuffer,
};
use serde::{Deserialize, Serialize};

use rfx_collectives::{CollConfig, Communicator, JoinOptions};

use crate::abi::{with_region_bytes, Function, GroupComm, Library};
use crate::context::CallContext;
use crate::error::{CallError, ExecError};
use crate::session::{
    self, ExecutorHello, GroupSpec, LibrarySource, ResultGeometry, Setup, SetupReply,
    MAX_LIBRARY_BYTES,
};

/// When a worker stops busy polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HotTimeout {
    /// Busy poll forever (`-1`).
    AlwaysHot,
    /// Always block (`0`).
    AlwaysWarm,
    /// Busy poll until this long without work, then block.
    After(Duration),
}

impl HotTimeout {
    /// From rFaaS's convention: `-1` always hot, `0` always warm, else ms.
    pub fn from_millis(ms: i64) -> HotTimeout {
        match ms {
            ..=-1 => HotTimeout::AlwaysHot,
            0 => HotTimeout::AlwaysWarm,
            ms => HotTimeout::After(Duration::from_millis(ms as u64)),
        }
    }
}

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The lease token clients must present.
    pub token: Vec<u8>,
    /// Worker threads (leased cores); one connection each.
    pub workers: usize,
    /// CPUs to pin workers to, round robin; empty: no pinning.
    pub cpus: Vec<usize>,
    /// Invocation slots per worker.
    pub slots: u32,
    /// Bytes per slot: the largest inline input (at least
    /// [`DESCRIPTOR_LEN`], for a remote input's descriptor).
    pub slot_size: usize,
    /// Largest output of one invocation.
    pub max_output: usize,
    /// When workers stop busy polling.
    pub hot_timeout: HotTimeout,
    /// Stop after this many connections have ended (tests); `None`: serve
    /// until the process is stopped.
    pub connections: Option<usize>,
    /// Print the usage so far as a JSON line on stdout this often (for the
    /// executor manager's accounting). When that write fails, the manager
    /// is gone, and the executor exits rather than run unaccounted.
    pub usage_every: Option<Duration>,
    /// Longest run of one function: past it the executor says so on stderr
    /// ([`TIMED_OUT_PREFIX`]) and exits with [`TIMED_OUT_EXIT`], since a
    /// thread stuck in tenant code cannot be stopped alone; its manager
    /// restarts it. `None`: no limit.
    pub exec_timeout: Option<Duration>,
}

/// What an executor prints on stderr when a function ran past
/// [`ExecutorConfig::exec_timeout`], followed by
/// `worker W invocation ID after MS ms`.
pub const TIMED_OUT_PREFIX: &str = "rfx executor: function timed out: ";

/// The exit code of an executor stopped by its time limit.
pub const TIMED_OUT_EXIT: i32 = 125;

/// What an executor prints on stderr when a client proved the token and
/// its set-up succeeded, followed by `worker W` (for its manager's audit).
pub const SESSION_OPENED_PREFIX: &str = "rfx executor: session opened: ";

/// What an executor prints on stderr when that session ended, followed by
/// `worker W`.
pub const SESSION_CLOSED_PREFIX: &str = "rfx executor: session closed: ";

/// Which invocation a worker runs, for the time limit's watchdog: the TSC
/// reading at its start (0: none), and its id.
#[derive(Debug, Default)]
struct InFunction {
    since: std::sync::atomic::AtomicU64,
    id: std::sync::atomic::AtomicU32,
}

impl ExecutorConfig {
    /// Defaults for `listen` and `token`: one worker, 32 slots of 64 KiB,
    /// 1 MiB outputs, hot for 10 ms.
    pub fn new(listen: SocketAddr, token: Vec<u8>) -> Self {
        ExecutorConfig {
            listen,
            token,
            workers: 1,
            cpus: Vec::new(),
            slots: 32,
            slot_size: 64 << 10,
            max_output: 1 << 20,
            hot_timeout: HotTimeout::After(Duration::from_millis(10)),
            connections: None,
            usage_every: None,
            exec_timeout: None,
        }
    }
}

/// What an executor did, for accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorUsage {
    /// Invocations served (whatever their status).
    pub invocations: u64,
    /// Invocations that failed (unknown function, failure, bad request).
    pub failed: u64,
    /// Nanoseconds inside functions.
    pub exec_ns: u64,
    /// Nanoseconds spent busy polling.
    pub hot_poll_ns: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Output bytes sent.
    pub bytes_out: u64,
}

impl ExecutorUsage {
    fn add(&mut self, o: &ExecutorUsage) {
        self.invocations += o.invocations;
        self.failed += o.failed;
        self.exec_ns += o.exec_ns;
        self.hot_poll_ns += o.hot_poll_ns;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// A bound executor, ready to [`Executor::serve`].
#[derive(Debug)]
pub struct Executor {
    fabric: Fabric,
    listener: Listener,
    cfg: ExecutorConfig,
    max_input: usize,
}

/// Environment variable: the largest remote input (bytes) an executor's
/// workers read from a client's input region; `0` refuses every remote
/// input. Read by [`Executor::bind`]; default [`DEFAULT_MAX_INPUT`].
pub const MAX_INPUT_ENV: &str = "RFX_EXECUTOR_MAX_INPUT";

/// The default bound on remote inputs: 64 MiB.
pub const DEFAULT_MAX_INPUT: usize = 64 << 20;

/// The bound on remote inputs from [`MAX_INPUT_ENV`], else the default.
fn max_input_from_env() -> Result<usize, ExecError> {
    match std::env::var(MAX_INPUT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_MAX_INPUT),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| {
                ExecError::Config(format!(
                    "{MAX_INPUT_ENV}={v:?}: expected a byte count up to {}",
                    u32::MAX
                ))
            }),
        Err(e) => Err(ExecError::Config(format!("{MAX_INPUT_ENV}: {e}"))),
    }
}

impl Executor {
    /// Binds the listening address.
    pub fn bind(fabric: Fabric, cfg: ExecutorConfig) -> Result<Executor, ExecError> {
        if cfg.slot_size < DESCRIPTOR_LEN
            || cfg.slot_size > u32::MAX as usize
            || cfg.slots == 0
            || cfg.slots > u32::from(u16::MAX)
            || cfg.workers == 0
        {
            return Err(ExecError::Config(format!(
                "need workers >= 1, 1..=65535 slots and a slot size of {DESCRIPTOR_LEN}..={} bytes",
                u32::MAX
            )));
        }
        let max_input = max_input_from_env()?;
        let listener = fabric.listen(cfg.listen)?;
        Ok(Executor {
            fabric,
            listener,
            cfg,
            max_input,
        })
    }

    /// The largest remote input a worker reads (see
    /// [`rfx_fabric::invocation`]); longer ones are answered with
    /// [`Status::InputTooLarge`].
    pub fn max_input(&self) -> usize {
        self.max_input
    }

    /// Sets [`Executor::max_input`] (over [`MAX_INPUT_ENV`]), capped at
    /// `u32::MAX`; 0 refuses every remote input.
    pub fn set_max_input(&mut self, bytes: usize) {
        self.max_input = bytes.min(u32::MAX as usize);
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> Result<SocketAddr, ExecError> {
        Ok(self.listener.local_addr()?)
    }

    /// Accepts clients, one worker thread each, until `connections` have
    /// ended (or forever). Returns the summed usage.
    pub fn serve(self) -> Result<ExecutorUsage, ExecError> {
        let total = Arc::new(Mutex::new(ExecutorUsage::default()));
        let busy = Arc::new((Mutex::new(vec![false; self.cfg.workers]), Condvar::new()));
        let mut handles = Vec::new();
        let mut accepted = 0usize;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(every) = self.cfg.usage_every {
            // A managed executor is stopped with SIGTERM (lease released or
            // expired): it says its last usage first, or up to `every` of
            // it would go unbilled. Blocked here, before any thread starts,
            // so that only the waiting thread below takes the signal.
            let mut term = SigSet::empty();
            term.add(Signal::SIGTERM);
            term.thread_block()
                .map_err(|e| ExecError::Config(format!("cannot block SIGTERM: {e}")))?;
            let last = total.clone();
            std::thread::spawn(move || loop {
                if let Ok(Signal::SIGTERM) = term.wait() {
                    // Workers publish within PUBLISH_AFTER once work stops.
                    std::thread::sleep(PUBLISH_AFTER + PUBLISH_AFTER / 2);
                    let u = *last.lock();
                    let _ = print_usage(&u);
                    std::process::exit(0);
                }
            });
            let (total, stop) = (total.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(every);
                    let u = *total.lock();
                    if print_usage(&u).is_err() {
                        // The reader (the executor manager) is gone: nobody
                        // accounts for or stops this executor any more.
                        // No `tracing` here: stderr is usually the same dead
                        // manager's pipe, and tracing-subscriber panics (this
                        // thread, leaving an orphan executor) when it cannot
                        // report a failed write. A best-effort note only.
                        let _ = writeln!(
                            std::io::stderr(),
                            "rfx executor: usage pipe closed; the executor manager is gone, exiting"
                        );
                        std::process::exit(3);
                    }
                }
            });
        }
        // One per worker, with a time limit only.
        let watches: Vec<Arc<InFunction>> = match self.cfg.exec_timeout {
            Some(_) => (0..self.cfg.workers)
                .map(|_| Arc::new(InFunction::default()))
                .collect(),
            None => Vec::new(),
        };
        if let Some(limit) = self.cfg.exec_timeout {
            let (watches, total) = (watches.clone(), total.clone());
            std::thread::Builder::new()
                .name("rfx-watchdog".into())
                .spawn(move || watchdog(&watches, limit, &total))
                .map_err(|e| ExecError::Config(format!("cannot start the watchdog: {e}")))?;
        }
        while self.cfg.connections.is_none_or(|n| accepted < n) {
            let incoming = self.listener.incoming(None)?;
            accepted += 1;
            // A worker that is just finishing counts as free: wait briefly
            // for one before turning the client away.
            let worker = {
                let (lock, freed) = &*busy;
                let mut b = lock.lock();
                let deadline = Instant::now() + WORKER_WAIT;
                let mut free = b.iter().position(|x| !x);
                while free.is_none() && !freed.wait_until(&mut b, deadline).timed_out() {
                    free = b.iter().position(|x| !x);
                }
                if let Some(w) = free {
                    b[w] = true;
                }
                free
            };
            let Some(worker) = worker else {
                let workers = self.cfg.workers;
                // Only the lease's holder learns that the executor is busy:
                // the proof is checked before the refusal.
                let opts = ConnectOptions::new().secret(&self.cfg.token);
                let _ = incoming.accept(&opts, |_| Err(format!("all {workers} workers are busy")));
                continue;
            };
            let (fabric, cfg, total, busy) = (
                self.fabric.clone(),
                self.cfg.clone(),
                total.clone(),
                busy.clone(),
            );
            let max_input = self.max_input;
            let watch = watches.get(worker).cloned();
            handles.push(std::thread::spawn(move || {
                if let Some(&cpu) = cfg.cpus.get(worker % cfg.cpus.len().max(1)) {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                if let Err(e) =
                    serve_connection(&fabric, &cfg, incoming, worker, max_input, total, watch)
                {
                    tracing::warn!(worker, "connection ended: {e}");
                }
                busy.0.lock()[worker] = false;
                busy.1.notify_one();
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let usage = *total.lock();
        Ok(usage)
    }
}

fn serve_connection(
    fabric: &Fabric,
    cfg: &ExecutorConfig,
    incoming: rfx_fabric::Incoming,
    worker: usize,
    max_input: usize,
    total: Arc<Mutex<ExecutorUsage>>,
    watch: Option<Arc<InFunction>>,
) -> Result<(), ExecError> {
    let inbox = fabric.register(cfg.slots as usize * cfg.slot_size)?;
    let hello = ExecutorHello {
        slots: cfg.slots,
        slot_size: cfg.slot_size as u32,
        worker: worker as u32,
    };
    let opts = ConnectOptions::new()
        .expose(&inbox)
        .user_data(session::encode(&hello));
    // The fabric refuses a client that does not prove the lease token
    // (`FabricError::AuthFailed` here, a rejection on its side).
    let ep = incoming.accept(&opts.secret(&cfg.token), |_| Ok(()))?;
    let mut w = Worker {
        ep,
        inbox,
        slot_size: cfg.slot_size,
        results: RemoteBuffer {
            addr: 0,
            len: 0,
            rkey: 0,
        },
        result_slots: ResultGeometry {
            stride: 0,
            slots: 0,
        },
        out: vec![0u8; cfg.max_output],
        max_input,
        large: Vec::new(),
        functions: Vec::new(),
        usage: ExecutorUsage::default(),
        total,
        tsc: tsc_clock(),
        clock: 0,
        published: 0,
        group: None,
        bind: Some(cfg.listen.ip()).filter(|ip| !ip.is_unspecified()),
        coll: CollConfig {
            fabric: fabric.config().clone(),
            ..CollConfig::from_env().unwrap_or_else(|e| {
                tracing::warn!("group communicator settings: {e}; using the defaults");
                CollConfig::default()
            })
        },
        _library: None,
        watch,
    };
    w.setup()?;
    // Best effort: stderr may be a dead manager's pipe.
    let _ = writeln!(std::io::stderr(), "{SESSION_OPENED_PREFIX}worker {worker}");
    w.clock = w.tsc.raw();
    w.published = w.clock;
    let r = w.run(cfg.hot_timeout);
    w.publish();
    let _ = writeln!(std::io::stderr(), "{SESSION_CLOSED_PREFIX}worker {worker}");
    r
}

/// The process's TSC clock. `quanta::Clock::new` calibrates the TSC
/// against the OS clock (millions of instructions, ~1 ms): once per
/// process, not once per connection, which a cold start would pay.
fn tsc_clock() -> quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}

/// One usage line (cumulative JSON) on stdout, for the executor manager.
fn print_usage(u: &ExecutorUsage) -> std::io::Result<()> {
    let line = serde_json::to_string(u).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush())
}

struct Worker {
    ep: Endpoint,
    inbox: MemoryRegion,
    slot_size: usize,
    /// The client's result region (its first exposed buffer), set at
    /// set-up.
    results: RemoteBuffer,
    /// Where in `results` each slot's result goes, checked at set-up.
    result_slots: ResultGeometry,
    out: Vec<u8>,
    /// Bound on remote inputs.
    max_input: usize,
    /// Where remote inputs are read to (grown to the largest, then reused).
    large: Vec<u8>,
    functions: Vec<Function>,
    /// Not yet published to `total`.
    usage: ExecutorUsage,
    total: Arc<Mutex<ExecutorUsage>>,
    /// The end of the last wait or piece of work.
    /// A TSC clock: a read costs a few ns where `Instant::now` costs
    /// ~25 ns on VMs, and the invocation path reads it twice.
    tsc: quanta::Clock,
    clock: u64,
    /// When `usage` was last published.
    published: u64,
    /// The communicator of a group member (dropped before the library).
    group: Option<Box<GroupComm>>,
    /// Where this executor listens: group members listen on its address.
    bind: Option<std::net::IpAddr>,
    /// The group communicator's settings: the environment's, over the
    /// executor's own fabric configuration (a forced transport included).
    coll: CollConfig,
    // Keeps the library loaded while its functions are in use.
    _library: Option<Library>,
    /// Where the watchdog sees which invocation runs (with a time limit).
    watch: Option<Arc<InFunction>>,
}

/// Checks every worker's running invocation against `limit`; on the first
/// past it, says which on stderr, prints the usage it can, and ends the
/// process (the function's thread cannot be stopped alone).
fn watchdog(watches: &[Arc<InFunction>], limit: Duration, total: &Mutex<ExecutorUsage>) {
    use std::sync::atomic::Ordering::Relaxed;
    let tsc = tsc_clock();
    let tick = (limit / 8).clamp(Duration::from_millis(1), Duration::from_millis(50));
    loop {
        std::thread::sleep(tick);
        let now = tsc.raw();
        for (worker, w) in watches.iter().enumerate() {
            let since = w.since.load(Relaxed);
            let ran = tsc.delta(since, now);
            if since == 0 || ran <= limit {
                continue;
            }
            let id = w.id.load(Relaxed);
            let _ = writeln!(
                std::io::stderr(),
                "{TIMED_OUT_PREFIX}worker {worker} invocation {id} after {} ms",
                ran.as_millis()
            );
            if let Some(u) = total.try_lock() {
                let _ = print_usage(&u);
            }
            // SAFETY: _exit(2) ends the process at once, touching no Rust
            // state: no destructors or exit handlers run while other
            // threads are inside tenant code.
            unsafe { libc::_exit(TIMED_OUT_EXIT) };
        }
    }
}

/// Usage is published to the executor's total after this many
/// invocations, or this long, whichever comes first (and when idle).
const PUBLISH_EVERY: u64 = 256;
const PUBLISH_AFTER: Duration = Duration::from_millis(100);
/// How long a new client waits for a busy worker to finish.
const WORKER_WAIT: Duration = Duration::from_secs(1);
const IDLE_WAIT: Duration = Duration::from_secs(3600);
const SETUP_WAIT: Duration = Duration::from_secs(30);

impl Worker {
    fn setup(&mut self) -> Result<(), ExecError> {
        let msg = match self.ep.wait(PollMode::Warm, SETUP_WAIT)? {
            Completion::Recv(m) => m,
            Completion::Write(_) => {
                return Err(ExecError::Protocol("invocation before set-up".into()))
            }
        };
        let reply = match self.load(&msg) {
            Ok(()) => SetupReply::Ready,
            Err(e) => SetupReply::Failed(e.to_string()),
        };
        self.ep.send(&session::encode(&reply))?;
        match reply {
            SetupReply::Ready => Ok(()),
            SetupReply::Failed(why) => Err(ExecError::Protocol(format!("set-up refused: {why}"))),
        }
    }

    fn load(&mut self, msg: &[u8]) -> Result<(), ExecError> {
        let setup: Setup = session::decode(msg).map_err(ExecError::Protocol)?;
        // Where results go, checked before anything is loaded: every later
        // result lands inside the buffer the client exposed for them.
        let results = *self
            .ep
            .peer_buffers()
            .first()
            .ok_or_else(|| ExecError::Protocol("the client exposed no result buffer".into()))?;
        setup
            .results
            .check(results.len)
            .map_err(|e| ExecError::Protocol(format!("bad result geometry: {e}")))?;
        self.results = results;
        self.result_slots = setup.results;
        let lib = match &setup.library {
            LibrarySource::Bytes { bytes, .. } if bytes.len() > MAX_LIBRARY_BYTES => {
                return Err(ExecError::Protocol(format!(
                    "library of {} bytes exceeds {MAX_LIBRARY_BYTES}",
                    bytes.len()
                )))
            }
            LibrarySource::Bytes { name, bytes } => Library::load_bytes(name, bytes)?,
            LibrarySource::Path(p) => Library::load_path(p)?,
            LibrarySource::Python { module, files } => Library::load_python(module, files)?,
        };
        if setup.functions.len() > invocation::MAX_FUNCTIONS {
            return Err(ExecError::Protocol(format!(
                "{} functions named; at most {}",
                setup.functions.len(),
                invocation::MAX_FUNCTIONS
            )));
        }
        self.functions = setup
            .functions
            .iter()
            .map(|f| lib.function(f))
            .collect::<Result<_, _>>()?;
        self._library = Some(lib);
        if let Some(g) = setup.group {
            self.join_group(g)?;
        }
        Ok(())
    }

    /// Joins the group's communicator: every member does, through the
    /// rendezvous the client hosts, before any of them answers its set-up.
    fn join_group(&mut self, g: GroupSpec) -> Result<(), ExecError> {
        if g.size == 0 || g.rank >= g.size {
            return Err(ExecError::Protocol(format!(
                "group rank {} of {} is out of range",
                g.rank, g.size
            )));
        }
        let rendezvous = g
            .rendezvous
            .parse()
            .map_err(|_| ExecError::Protocol(format!("bad rendezvous address {}", g.rendezvous)))?;
        let comm = Communicator::join(JoinOptions {
            rank: g.rank as usize,
            size: g.size as usize,
            rendezvous,
            key: g.key,
            bind: self.bind,
            config: self.coll.clone(),
        })
        .map_err(|e| ExecError::Protocol(format!("joining the group: {e}")))?;
        tracing::info!(rank = g.rank, size = g.size, transports = %comm.transport_summary(), "joined group");
        self.group = Some(GroupComm::new(comm));
        Ok(())
    }

    fn run(&mut self, hot: HotTimeout) -> Result<(), ExecError> {
        loop {
            // Unpublished invocations bound the wait, so that usage reaches
            // the manager within PUBLISH_AFTER even when work stops.
            let pending = self.usage.invocations > 0;
            let cap = if pending { PUBLISH_AFTER } else { IDLE_WAIT };
            let next = match hot {
                HotTimeout::AlwaysHot => self.hot_wait(cap),
                HotTimeout::AlwaysWarm => self.warm_wait(cap),
                HotTimeout::After(t) if pending && t > cap => self.hot_wait(cap),
                HotTimeout::After(t) => match self.hot_wait(t) {
                    Err(e) if e.is_timeout() => self.warm_wait(cap),
                    other => other,
                },
            };
            let idle = next.as_ref().is_err_and(|e| e.is_timeout());
            let r = match next {
                Ok(Completion::Write(w)) => self.invoke(w),
                Ok(Completion::Recv(_)) => Err(ExecError::Protocol(
                    "unexpected message after set-up".into(),
                )),
                Err(e) if e.is_timeout() => Ok(()),
                Err(e) if e.is_peer_gone() => return Ok(()),
                Err(e) => Err(e.into()),
            };
            // Publishing takes a lock: batch it on the hot path.
            if idle
                || r.is_err()
                || self.usage.invocations >= PUBLISH_EVERY
                || self.tsc.delta(self.published, self.clock) > PUBLISH_AFTER
            {
                self.publish();
            }
            r?;
        }
    }

    /// Moves what this worker counted into the executor's total.
    fn publish(&mut self) {
        let d = std::mem::take(&mut self.usage);
        self.total.lock().add(&d);
        self.published = self.clock;
    }

    /// One clock read per wait: the time since the end of the last piece of
    /// work is hot polling.
    fn hot_wait(&mut self, t: Duration) -> Result<Completion, FabricError> {
        let r = self.ep.wait(PollMode::Hot, t);
        let now = self.tsc.raw();
        self.usage.hot_poll_ns += self.tsc.delta_as_nanos(self.clock, now);
        self.clock = now;
        r
    }

    fn warm_wait(&mut self, t: Duration) -> Result<Completion, FabricError> {
        let r = self.ep.wait(PollMode::Warm, t);
        self.clock = self.tsc.raw();
        r
    }

    fn invoke(&mut self, w: rfx_fabric::WriteCompletion) -> Result<(), ExecError> {
        let (id, low) = invocation::unpack_imm(w.imm);
        let field = FunctionField::decode(low);
        let off = w.offset as usize;
        let len = w.len as usize;
        self.usage.invocations += 1;
        self.usage.bytes_in += len as u64;
        // The slot is the write's offset, the input its length: nothing
        // else travels. A write that is not at a slot's start, overflows
        // it, or lands in a slot without a result buffer has nowhere to be
        // answered.
        let slot = off / self.slot_size;
        let result_off =
            (off % self.slot_size == 0 && off < self.inbox.len() && len <= self.slot_size)
                .then(|| self.result_slots.offset(slot))
                .flatten();
        let Some(result_off) = result_off else {
            self.usage.failed += 1;
            tracing::warn!(off, len, "invocation outside slot bounds dropped");
            return Ok(());
        };
        let stride = u64::from(self.result_slots.stride);
        let cap = usize::try_from(stride)
            .unwrap_or(usize::MAX)
            .min(self.out.len());
        let mut head = [0u8; DESCRIPTOR_LEN];
        if field.remote_input && len == DESCRIPTOR_LEN {
            self.inbox.read_at(off, &mut head)?;
        }
        let (status, n) = match Input::decode(field.remote_input, len, &head) {
            Err(e) => {
                tracing::warn!("bad invocation: {e}");
                (Status::BadRequest, 0)
            }
            Ok(Input::Inline { len: n }) => match self.functions.get(usize::from(field.index)) {
                None => (Status::UnknownFunction, 0),
                Some(f) => {
                    let ctx = self.context(id);
                    self.entering(id);
                    let out = &mut self.out[..cap];
                    let r =
                        with_region_bytes(&self.inbox, off, n, |input| f.call(&ctx, input, out))?;
                    self.ran(r)
                }
            },
            Ok(Input::Remote(d)) => self.invoke_remote(id, field.index, d, cap)?,
        };
        if status != Status::Ok {
            self.usage.failed += 1;
        }
        match self.ep.write_imm(
            &self.out[..n],
            &self.results,
            result_off,
            invocation::pack_imm(id, status as u16),
        ) {
            Ok(()) => {
                self.usage.bytes_out += n as u64;
                Ok(())
            }
            Err(e @ FabricError::RemoteAccess { .. }) => {
                // Checked at set-up, so only a client whose region changed
                // under it gets here: its loss.
                self.usage.failed += 1;
                tracing::warn!("result not delivered: {e}");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An input the client left in its input region: bounded, read into the
    /// worker's reusable buffer, then the function runs on it. Returns the
    /// status and output length; an error only when the endpoint died.
    fn invoke_remote(
        &mut self,
        id: u16,
        index: u16,
        d: InputDescriptor,
        cap: usize,
    ) -> Result<(Status, usize), ExecError> {
        let len = d.len as usize;
        if len > self.max_input {
            tracing::debug!(len, max = self.max_input, "remote input refused");
            let limit = invocation::encode_limit(self.max_input as u64);
            let n = if cap >= limit.len() {
                self.out[..limit.len()].copy_from_slice(&limit);
                limit.len()
            } else {
                0
            };
            return Ok((Status::InputTooLarge, n));
        }
        let Some(f) = self.functions.get(usize::from(index)) else {
            // Not worth reading an input nothing will run on.
            return Ok((Status::UnknownFunction, 0));
        };
        // Grows to the largest input seen, then is reused.
        if self.large.len() < len {
            self.large.resize(len, 0);
        }
        let remote = RemoteBuffer {
            addr: d.addr,
            len: u64::from(d.len),
            rkey: d.rkey,
        };
        match self.ep.read(&remote, 0, &mut self.large[..len]) {
            Ok(()) => {}
            Err(
                e @ (FabricError::RemoteAccess { .. }
                | FabricError::OutOfBounds { .. }
                | FabricError::TooLarge { .. }
                | FabricError::Timeout { .. }),
            ) => {
                // The client's problem (a region it does not own, or it did
                // not serve the read in time): tell it, and go on. The time
                // spent trying was on its behalf.
                tracing::warn!(len, "remote input not read: {e}");
                self.account_exec();
                return Ok((Status::InputUnreadable, 0));
            }
            Err(e) => return Err(e.into()),
        }
        self.usage.bytes_in += len as u64;
        let ctx = self.context(id);
        self.entering(id);
        let r = f.call(&ctx, &self.large[..len], &mut self.out[..cap]);
        Ok(self.ran(r))
    }

    /// Tells the watchdog that invocation `id` starts now (two plain
    /// stores; nothing without a time limit).
    fn entering(&self, id: u16) {
        if let Some(w) = &self.watch {
            use std::sync::atomic::Ordering::Relaxed;
            w.id.store(u32::from(id), Relaxed);
            w.since.store(self.tsc.raw().max(1), Relaxed);
        }
    }

    /// Counts the time since the end of the last wait as execution: reading
    /// a descriptor and a remote input are part of an invocation's work.
    fn account_exec(&mut self) {
        let now = self.tsc.raw();
        self.usage.exec_ns += self.tsc.delta_as_nanos(self.clock, now);
        self.clock = now;
    }

    /// The context of invocation `id`: a group member's carries its rank
    /// and communicator.
    fn context(&self, id: u16) -> CallContext {
        match &self.group {
            None => CallContext::new(u64::from(id)),
            Some(g) => {
                let t = g.table();
                CallContext::new(u64::from(id))
                    .in_group(t.rank, t.size)
                    .with_comm(t)
            }
        }
    }

    /// Accounts a function's run and maps its outcome to a status and
    /// output length.
    fn ran(&mut self, r: Result<usize, CallError>) -> (Status, usize) {
        if let Some(w) = &self.watch {
            w.since.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        self.account_exec();
        match r {
            Ok(n) => (Status::Ok, n),
            Err(CallError::OutputTooLarge { .. }) => (Status::OutputTooLarge, 0),
            Err(e) => {
                // The reason goes back as the result's bytes (printable,
                // bounded: see `rfx_abi::status::read_reason`).
                let why = e.reason().as_bytes();
                let n = why.len().min(self.out.len());
                self.out[..n].copy_from_slice(&why[..n]);
                (Status::FunctionFailed, n)
            }
        }
    }
}
