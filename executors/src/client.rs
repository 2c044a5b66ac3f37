//! The client side of invocations: connect to an executor worker, ship the
//! library, then invoke functions peer to peer, one at a time, pipelined or
//! in batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rfx_fabric::invocation::{self, FunctionField, InputDescriptor, Status, DESCRIPTOR_LEN};
use rfx_fabric::{
    Completion, ConnectOptions, Endpoint, Fabric, FabricError, MemoryRegion, PollMode,
    RemoteBuffer, TransportKind,
};

use crate::lookup::TimedOut;
use crate::session::{
    self, ExecutorHello, GroupSpec, LibrarySource, ResultGeometry, Setup, SetupReply,
};

/// Why an invocation produced no output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The function is not among those named at set-up.
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    /// The function ran and reported a failure (or panicked).
    #[error("function `{function}` failed{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    FunctionFailed {
        /// The function.
        function: String,
        /// Why, as the function said (its `Err`, its panic's message, or
        /// the NUL-terminated text a C function wrote before returning
        /// `RFX_FAILED`); empty if it said nothing.
        reason: String,
    },
    /// The function claimed more output than the result buffer holds.
    #[error("function `{function}` produced more output than the {capacity}-byte result buffer")]
    OutputTooLarge {
        /// The function.
        function: String,
        /// The result buffer's size.
        capacity: usize,
    },
    /// The input exceeds [`Invoker::max_input`]; nothing was sent.
    #[error("payload of {len} bytes exceeds the largest input of {max}")]
    PayloadTooLarge {
        /// The input's length.
        len: usize,
        /// The largest input.
        max: usize,
    },
    /// The executor refused a remote input longer than its own bound
    /// ([`Status::InputTooLarge`]); the connection goes on.
    #[error("the executor refused an input of {len} bytes (its bound: {max:?})")]
    InputTooLarge {
        /// The input's length.
        len: usize,
        /// The executor's bound, if the result buffer could carry it.
        max: Option<u64>,
    },
    /// The executor could not read a remote input from this client's input
    /// region ([`Status::InputUnreadable`]): typically this client did not
    /// poll its endpoint (wait for results) within the executor's op
    /// timeout on tcp. The connection goes on.
    #[error("the executor could not read the input of `{function}`")]
    InputUnreadable {
        /// The function.
        function: String,
    },
    /// More functions than an invocation can name
    /// ([`invocation::MAX_FUNCTIONS`]); nothing was sent.
    #[error("{count} functions named; at most {max}")]
    TooManyFunctions {
        /// Functions named.
        count: usize,
        /// The most a session may name.
        max: usize,
    },
    /// The executor refused the set-up (library or function problem).
    #[error("executor refused the set-up: {0}")]
    SetupFailed(String),
    /// The executor process is gone (crashed, killed, lease ended).
    #[error("executor gone: {0}")]
    ExecutorGone(String),
    /// The function ran past its lease's time limit: its executor was
    /// stopped and restarted within the lease. This connection is over;
    /// connect again to go on (the lease's slots serve again).
    #[error("function `{function}` ran past its lease's time limit ({after_ms} ms); the executor was restarted")]
    FunctionTimedOut {
        /// The function.
        function: String,
        /// How long it had run, ms.
        after_ms: u64,
    },
    /// Another invocation ran past the lease's time limit and the executor
    /// was restarted under this one; connect again and retry it.
    #[error("the executor was restarted: {0}")]
    ExecutorRestarted(String),
    /// No result within the timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The executor answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A transport error.
    #[error(transparent)]
    Fabric(FabricError),
}

impl From<FabricError> for InvokeError {
    fn from(e: FabricError) -> Self {
        match e {
            FabricError::PeerGone(why) => InvokeError::ExecutorGone(why),
            FabricError::Timeout { after, .. } => InvokeError::Timeout(after),
            e => InvokeError::Fabric(e),
        }
    }
}

/// Settings of an [`Invoker`].
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// Invocations in flight at most (capped by the executor's slots).
    pub depth: usize,
    /// Largest output accepted per invocation.
    pub max_output: usize,
    /// Largest input: inputs above the executor's slot are copied into an
    /// input region of this size, registered and exposed at connect, and
    /// the executor reads them from there (one at a time). 0: no region;
    /// inputs are bounded by the slot.
    pub max_input: usize,
    /// Bound on each wait for a result.
    pub timeout: Duration,
    /// How to wait for results.
    pub mode: PollMode,
    /// Asked once when the executor is gone, to tell a restart for a time
    /// limit from a crash (`rfx::tenant`'s invokers ask the executor
    /// manager); `None`: every loss is [`InvokeError::ExecutorGone`].
    pub explain_gone: Option<GoneProbe>,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        InvokerConfig {
            depth: 32,
            max_output: 1 << 20,
            max_input: 16 << 20,
            timeout: Duration::from_secs(30),
            mode: PollMode::Hot,
            explain_gone: None,
        }
    }
}

/// Why an executor went away, asked of whoever knows (its manager's
/// lookup service): called with the address of the executor that went
/// away, it answers which invocation ran past the time limit if that is
/// why (`None`: not a time limit, or unknown).
#[derive(Clone)]
pub struct GoneProbe(Arc<dyn Fn(SocketAddr) -> Option<TimedOut> + Send + Sync>);

impl GoneProbe {
    /// A probe calling `f`.
    pub fn new(f: impl Fn(SocketAddr) -> Option<TimedOut> + Send + Sync + 'static) -> Self {
        GoneProbe(Arc::new(f))
    }
}

impl std::fmt::Debug for GoneProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GoneProbe")
    }
}

/// A collected result: the invocation id and its outcome.
type Collected = (u16, Result<Vec<u8>, InvokeError>);

/// Invocation ids are small and distinct: hash them as themselves.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = u64::from(v);
    }
}

/// A pending invocation, redeemed with [`Invoker::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u16);

/// An invocation's ticket and how it ended ([`Invoker::wait_any`]).
pub type Outcome = (Ticket, Result<Vec<u8>, InvokeError>);

impl Ticket {
    /// Its number, unique among the invocations of its invoker not yet
    /// redeemed (for a caller's own bookkeeping, e.g. a map to futures).
    pub fn id(&self) -> u16 {
        self.0
    }
}

#[derive(Debug)]
struct InFlight {
    id: u16,
    function: u16,
    /// The input's length, for a remote input (it holds the input region).
    remote_len: Option<usize>,
}

/// A connection to one executor worker.
///
/// # Large inputs
///
/// An input up to [`Invoker::max_inline_input`] travels in the invocation's
/// write into an executor slot. A larger one, up to
/// [`InvokerConfig::max_input`] (16 MiB by default), is copied into this
/// client's input region and the executor reads it from there, one-sided
/// (RDMA READ on verbs; see [`rfx_fabric::invocation`]). There is one such
/// region, so one large input is in flight at a time: a second large
/// [`Invoker::submit`] first collects results until the first one's has
/// arrived, as a submit does when every slot is busy; small invocations
/// pipeline around it. Inputs above [`Invoker::max_input`] are
/// [`InvokeError::PayloadTooLarge`], with nothing sent; an executor with a
/// smaller bound answers [`InvokeError::InputTooLarge`].
///
/// On tcp the executor's read is served by this client's endpoint whenever
/// the invoker polls it, which every wait for a result does ([`Invoker::wait`],
/// [`Invoker::invoke`], [`Invoker::batch`], [`Invoker::invoke_async`]): a
/// client that leaves a large invocation in flight and does not wait for
/// results for longer than the executor's op timeout gets
/// [`InvokeError::InputUnreadable`].
///
/// ```no_run
/// # use rfx_executors::client::{Invoker, InvokerConfig};
/// # use rfx_executors::session::LibrarySource;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let fabric = rfx_fabric::Fabric::open(rfx_fabric::Config::from_env()?)?;
/// let lib = LibrarySource::Path("/opt/functions/libfunctions.so".into());
/// let mut inv = Invoker::connect(&fabric, "127.0.0.1:7800".parse()?, b"lease-token", lib, &["echo"], InvokerConfig::default())?;
/// assert_eq!(inv.invoke("echo", b"hi")?, b"hi");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Invoker {
    ep: Endpoint,
    results: MemoryRegion,
    /// Where inputs larger than a slot wait for the executor's read.
    input: Option<MemoryRegion>,
    /// The invocation whose input is in `input` until its result arrives.
    input_busy: Option<u16>,
    slots: RemoteBuffer,
    slot_size: usize,
    depth: usize,
    cfg: InvokerConfig,
    names: Vec<String>,
    free: Vec<usize>,
    /// The invocation in each slot. An id names its slot (`id % depth`),
    /// so the result path finds it by index, not by a hash probe.
    in_flight: Vec<Option<InFlight>>,
    /// Slots in use.
    flying: usize,
    done: HashMap<u16, Result<Vec<u8>, InvokeError>, IdHash>,
    next_round: u16,
    /// The executor's address and this connection's worker there.
    addr: SocketAddr,
    worker: u32,
    /// What [`InvokerConfig::explain_gone`] said, once asked.
    explained: Option<Option<TimedOut>>,
}

impl Invoker {
    /// Connects with the lease `token`, ships `library` and resolves
    /// `functions` on the executor.
    pub fn connect(
        fabric: &Fabric,
        addr: SocketAddr,
        token: &[u8],
        library: LibrarySource,
        functions: &[&str],
        cfg: InvokerConfig,
    ) -> Result<Invoker, InvokeError> {
        Self::connect_member(fabric, addr, token, library, functions, cfg, None)
    }

    /// As [`Invoker::connect`], for a member of a group (see
    /// [`crate::group::Group`]): the executor joins the group's
    /// communicator before it answers the set-up.
    pub(crate) fn connect_member(
        fabric: &Fabric,
        addr: SocketAddr,
        token: &[u8],
        library: LibrarySource,
        functions: &[&str],
        cfg: InvokerConfig,
        group: Option<GroupSpec>,
    ) -> Result<Invoker, InvokeError> {
        if functions.len() > invocation::MAX_FUNCTIONS {
            return Err(InvokeError::TooManyFunctions {
                count: functions.len(),
                max: invocation::MAX_FUNCTIONS,
            });
        }
        let results = fabric.register(cfg.depth.max(1) * cfg.max_output)?;
        // One region for every large input (verbs pins registered memory);
        // memfd pages cost nothing until an input is copied in.
        let input = match cfg.max_input {
            0 => None,
            n => Some(fabric.register(n)?),
        };
        // The token is the handshake's shared secret: the executor and this
        // client prove to each other that they hold it, without sending it.
        let mut ep = fabric.connect(
            addr,
            &input
                .iter()
                .fold(ConnectOptions::new().expose(&results), |o, r| o.expose(r))
                .secret(token),
        )?;
        let eh: ExecutorHello =
            session::decode(ep.peer_user_data()).map_err(InvokeError::Protocol)?;
        let slots = *ep
            .peer_buffers()
            .first()
            .ok_or_else(|| InvokeError::Protocol("executor exposed no slots".into()))?;
        let slot_size = eh.slot_size as usize;
        if eh.slots == 0
            || slot_size < DESCRIPTOR_LEN
            || slots.len < u64::from(eh.slots) * u64::from(eh.slot_size)
        {
            return Err(InvokeError::Protocol(
                "executor's slot geometry does not match its buffer".into(),
            ));
        }
        let depth = cfg.depth.max(1).min(eh.slots as usize);
        // Slot k's result goes to `results` at k * max_output: fixed here,
        // so that an invocation carries nothing but its input.
        let stride = u32::try_from(cfg.max_output)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                InvokeError::Protocol(format!(
                    "max_output of {} bytes: need 1..={}",
                    cfg.max_output,
                    u32::MAX
                ))
            })?;
        let setup = Setup {
            library,
            functions: functions.iter().map(|f| f.to_string()).collect(),
            results: ResultGeometry {
                stride,
                slots: depth as u32,
            },
            group,
        };
        ep.send(&session::encode(&setup))?;
        match ep.wait(PollMode::Warm, cfg.timeout.max(Duration::from_secs(30)))? {
            Completion::Recv(m) => {
                match session::decode::<SetupReply>(&m).map_err(InvokeError::Protocol)? {
                    SetupReply::Ready => {}
                    SetupReply::Failed(why) => return Err(InvokeError::SetupFailed(why)),
                }
            }
            Completion::Write(_) => {
                return Err(InvokeError::Protocol("result before set-up".into()))
            }
        }
        let names: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
        Ok(Invoker {
            ep,
            results,
            input,
            input_busy: None,
            slots,
            slot_size,
            depth,
            names,
            free: (0..depth).rev().collect(),
            in_flight: (0..depth).map(|_| None).collect(),
            flying: 0,
            done: HashMap::default(),
            next_round: 0,
            addr,
            worker: eh.worker,
            explained: None,
            cfg,
        })
    }

    /// The transport in use.
    pub fn transport(&self) -> TransportKind {
        self.ep.kind()
    }

    /// Largest input of one invocation: [`InvokerConfig::max_input`], or
    /// the executor's slot when that is larger (or the region disabled).
    /// The executor may still refuse a remote input above its own bound
    /// ([`InvokeError::InputTooLarge`]).
    pub fn max_input(&self) -> usize {
        self.max_inline_input()
            .max(self.input.as_ref().map_or(0, MemoryRegion::len))
    }

    /// Largest input that travels inline, as the whole of the invocation's
    /// write into the executor's slot: the slot's size. Larger ones are read
    /// by the executor from this client's input region.
    pub fn max_inline_input(&self) -> usize {
        self.slot_size
    }

    /// Invocations that can be in flight at once.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Invokes `function` on `input` and waits for its output.
    pub fn invoke(&mut self, function: &str, input: &[u8]) -> Result<Vec<u8>, InvokeError> {
        let t = self.submit(function, input)?;
        self.wait(t)
    }

    /// Starts an invocation without waiting; when all slots are busy it first
    /// collects a result (kept for its [`Invoker::wait`]).
    pub fn submit(&mut self, function: &str, input: &[u8]) -> Result<Ticket, InvokeError> {
        // A session resolves a handful of functions: a scan of short names
        // is cheaper than hashing the name on every invocation.
        let index = self
            .names
            .iter()
            .position(|n| n == function)
            .ok_or_else(|| InvokeError::UnknownFunction(function.to_string()))?
            as u16;
        let remote = input.len() > self.max_inline_input();
        if remote && input.len() > self.input.as_ref().map_or(0, MemoryRegion::len) {
            return Err(InvokeError::PayloadTooLarge {
                len: input.len(),
                max: self.max_input(),
            });
        }
        // A remote input also needs the input region: its previous user's
        // result must have arrived (the executor has read that input then).
        while self.free.is_empty() || (remote && self.input_busy.is_some()) {
            let (id, r) = self.collect_one().map_err(|e| self.explain(e, None))?;
            self.done.insert(id, r);
        }
        let slot = self.free.pop().expect("a free slot after collecting");
        let id = match self.fresh_id(slot) {
            Ok(id) => id,
            Err(e) => {
                self.free.push(slot);
                return Err(e);
            }
        };
        // The executor answers into this slot's result buffer (fixed at
        // set-up): the write is the input, or its descriptor, alone.
        let desc;
        let data: &[u8] = if remote {
            let region = self.input.as_ref().expect("a remote input has a region");
            if let Err(e) = region.write_at(0, input) {
                self.free.push(slot);
                return Err(e.into());
            }
            desc = InputDescriptor {
                addr: region.addr(),
                rkey: region.rkey(),
                len: input.len() as u32,
            }
            .encode();
            &desc
        } else {
            input
        };
        let low = FunctionField {
            index,
            remote_input: remote,
        }
        .encode()
        .expect("function indices were bounded at connect");
        let posted = self.ep.write_imm(
            data,
            &self.slots,
            (slot * self.slot_size) as u64,
            invocation::pack_imm(id, low),
        );
        if let Err(e) = posted {
            self.free.push(slot);
            return Err(self.explain(e.into(), None));
        }
        if remote {
            self.input_busy = Some(id);
        }
        self.in_flight[slot] = Some(InFlight {
            id,
            function: index,
            remote_len: remote.then_some(input.len()),
        });
        self.flying += 1;
        Ok(Ticket(id))
    }

    /// A fresh id for an invocation in `slot`: `slot + depth * round`, the
    /// rounds taken in turn, skipping ids whose results wait uncollected
    /// (ids name results until they are redeemed).
    fn fresh_id(&mut self, slot: usize) -> Result<u16, InvokeError> {
        let rounds = ((1usize << 16) / self.depth).max(1);
        for _ in 0..rounds {
            self.next_round = self.next_round.wrapping_add(1);
            let id = slot + self.depth * (usize::from(self.next_round) % rounds);
            let id = u16::try_from(id).map_err(|_| {
                InvokeError::Protocol(format!("slot {slot} of {} has no id", self.depth))
            })?;
            if self.done.is_empty() || !self.done.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(InvokeError::Protocol(format!(
            "every id of slot {slot} names a result not yet collected: wait for some tickets"
        )))
    }

    /// The slot of invocation `id` if it is in flight there.
    fn slot_of(&self, id: u16) -> Option<usize> {
        let slot = usize::from(id) % self.depth;
        let f = self.in_flight.get(slot)?.as_ref()?;
        (f.id == id).then_some(slot)
    }

    /// Waits for the result of `ticket`.
    pub fn wait(&mut self, ticket: Ticket) -> Result<Vec<u8>, InvokeError> {
        if !self.done.is_empty() {
            if let Some(r) = self.done.remove(&ticket.0) {
                return r;
            }
        }
        if self.slot_of(ticket.0).is_none() {
            return Err(InvokeError::Protocol("unknown ticket".into()));
        }
        // Each collect is bounded by the timeout; the clock is read only
        // when other results come first (never on the one-in-flight path).
        let mut deadline = None;
        loop {
            let (id, r) = self
                .collect_one()
                .map_err(|e| self.explain(e, Some(ticket.0)))?;
            if id == ticket.0 {
                return r;
            }
            self.done.insert(id, r);
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + self.cfg.timeout) {
                return Err(InvokeError::Timeout(self.cfg.timeout));
            }
        }
    }

    /// The next result to arrive, whichever invocation it belongs to
    /// (one collected earlier by [`Invoker::wait`] first), waiting at most
    /// `timeout`; `None` if none arrived in time or nothing is in flight.
    /// For callers that complete many tickets as they come (futures).
    pub fn wait_any(&mut self, timeout: Duration) -> Result<Option<Outcome>, InvokeError> {
        if let Some(&id) = self.done.keys().next() {
            let r = self.done.remove(&id).expect("a key just seen");
            return Ok(Some((Ticket(id), r)));
        }
        if self.flying == 0 {
            return Ok(None);
        }
        let c = match self.ep.wait(self.cfg.mode, timeout) {
            Ok(c) => c,
            Err(FabricError::Timeout { .. }) => return Ok(None),
            Err(e) => return Err(self.explain(e.into(), None)),
        };
        let (id, r) = self.take(c).map_err(|e| self.explain(e, None))?;
        Ok(Some((Ticket(id), r)))
    }

    /// Invocations submitted and not yet redeemed.
    pub fn pending(&self) -> usize {
        self.flying + self.done.len()
    }

    /// Invokes `function` on every input, pipelined up to the depth; the
    /// outputs come back in input order.
    pub fn batch(
        &mut self,
        function: &str,
        inputs: &[&[u8]],
    ) -> Result<Vec<Result<Vec<u8>, InvokeError>>, InvokeError> {
        let mut out = Vec::with_capacity(inputs.len());
        let mut window = std::collections::VecDeque::with_capacity(self.depth);
        for input in inputs {
            if window.len() == self.depth {
                let oldest = window.pop_front().expect("a full window");
                out.push(self.wait(oldest));
            }
            window.push_back(self.submit(function, input)?);
        }
        for t in window {
            out.push(self.wait(t));
        }
        Ok(out)
    }

    /// Receives one result.
    fn collect_one(&mut self) -> Result<Collected, InvokeError> {
        let c = self.ep.wait(self.cfg.mode, self.cfg.timeout)?;
        self.take(c)
    }

    /// Receives one result if one is there, without blocking.
    fn try_collect(&mut self) -> Result<Option<Collected>, InvokeError> {
        match self.ep.poll()? {
            Some(c) => self.take(c).map(Some),
            None => Ok(None),
        }
    }

    /// Invokes `function` on `input` without blocking the thread while the
    /// result is on its way: the task sleeps on the endpoint's event fd in
    /// the tokio reactor (hot polling is for `invoke`). Must run inside a
    /// tokio runtime (else an error). A submit that finds every slot busy
    /// still collects a result the blocking way first. If the future is
    /// dropped before it completes, its result is kept and dropped with the
    /// invoker.
    pub async fn invoke_async(
        &mut self,
        function: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        // Registered per call: the caller may use another runtime next time
        // (a few microseconds, small beside a reactor wake-up).
        let fd = self.ep.event_fd().try_clone_to_owned().map_err(|e| {
            InvokeError::Fabric(FabricError::Os {
                op: "dup",
                source: e,
            })
        })?;
        let afd = register_with_reactor(fd).map_err(|e| {
            InvokeError::Fabric(FabricError::Os {
                op: "register with the reactor",
                source: e,
            })
        })?;
        let ticket = self.submit(function, input)?;
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        loop {
            if let Some(r) = self.done.remove(&ticket.0) {
                return r;
            }
            while let Some((id, r)) = self
                .try_collect()
                .map_err(|e| self.explain(e, Some(ticket.0)))?
            {
                if id == ticket.0 {
                    return r;
                }
                self.done.insert(id, r);
            }
            if !self.ep.arm()? {
                continue;
            }
            let woke = tokio::time::timeout_at(deadline, afd.readable()).await;
            self.ep.disarm();
            match woke {
                Err(_) => return Err(InvokeError::Timeout(self.cfg.timeout)),
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(e)) => {
                    return Err(InvokeError::Fabric(FabricError::Os {
                        op: "wait for the event fd",
                        source: e,
                    }))
                }
            }
        }
    }

    /// An [`InvokeError::ExecutorGone`] told apart, where the executor's
    /// manager knows it, as a stop at the time limit: of invocation `id`
    /// ([`InvokeError::FunctionTimedOut`]) or of another one
    /// ([`InvokeError::ExecutorRestarted`]). Other errors pass unchanged.
    fn explain(&mut self, e: InvokeError, id: Option<u16>) -> InvokeError {
        let InvokeError::ExecutorGone(why) = e else {
            return e;
        };
        let t = match self.explained {
            Some(t) => t,
            None => {
                let t = self
                    .cfg
                    .explain_gone
                    .as_ref()
                    .and_then(|p| (p.0)(self.addr));
                self.explained = Some(t);
                t
            }
        };
        match t {
            Some(t) if t.worker == self.worker && Some(t.invocation) == id => {
                let function = self
                    .slot_of(t.invocation)
                    .and_then(|s| self.in_flight[s].as_ref())
                    .and_then(|f| self.names.get(usize::from(f.function)))
                    .cloned()
                    .unwrap_or_default();
                InvokeError::FunctionTimedOut {
                    function,
                    after_ms: t.after_ms,
                }
            }
            Some(t) if t.worker == self.worker => InvokeError::ExecutorRestarted(format!(
                "invocation {} of this connection ran past the lease's time limit ({} ms)",
                t.invocation, t.after_ms
            )),
            Some(t) => InvokeError::ExecutorRestarted(format!(
                "an invocation of another connection ran past the lease's time limit ({} ms)",
                t.after_ms
            )),
            None => InvokeError::ExecutorGone(why),
        }
    }

    /// Turns a completion into the result of its invocation.
    fn take(&mut self, c: Completion) -> Result<Collected, InvokeError> {
        let w = match c {
            Completion::Write(w) => w,
            Completion::Recv(_) => {
                return Err(InvokeError::Protocol(
                    "unexpected message from the executor".into(),
                ))
            }
        };
        let (id, status) = invocation::unpack_imm(w.imm);
        let (slot, f) = self
            .slot_of(id)
            .and_then(|s| Some((s, self.in_flight[s].take()?)))
            .ok_or_else(|| InvokeError::Protocol(format!("result for unknown invocation {id}")))?;
        self.flying -= 1;
        if f.remote_len.is_some() {
            // The executor is done with the input: the region is free.
            self.input_busy = None;
        }
        let start = slot * self.cfg.max_output;
        if w.offset as usize != start || w.len as usize > self.cfg.max_output {
            return Err(InvokeError::Protocol("result outside its buffer".into()));
        }
        let name = || {
            self.names
                .get(usize::from(f.function))
                .cloned()
                .unwrap_or_default()
        };
        let r = match Status::from_u16(status) {
            Some(Status::Ok) => Ok(self.results.to_vec(start, w.len as usize)?),
            Some(Status::UnknownFunction) => Err(InvokeError::UnknownFunction(name())),
            Some(Status::FunctionFailed) => Err(InvokeError::FunctionFailed {
                function: name(),
                reason: rfx_abi::status::read_reason(&self.results.to_vec(start, w.len as usize)?),
            }),
            Some(Status::OutputTooLarge) => Err(InvokeError::OutputTooLarge {
                function: name(),
                capacity: self.cfg.max_output,
            }),
            Some(Status::InputTooLarge) => Err(InvokeError::InputTooLarge {
                len: f.remote_len.unwrap_or_default(),
                max: invocation::decode_limit(&self.results.to_vec(start, w.len as usize)?),
            }),
            Some(Status::InputUnreadable) => Err(InvokeError::InputUnreadable { function: name() }),
            Some(Status::BadRequest) | None => {
                Err(InvokeError::Protocol(format!("executor status {status}")))
            }
        };
        self.free.push(slot);
        Ok((id, r))
    }
}

/// Registers an endpoint's event fd (a duplicate, owned here) with the
/// current tokio reactor, for `Invoker::invoke_async`: the client's one
/// `unsafe`.
fn register_with_reactor(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(std::io::Error::other("invoke_async needs a tokio runtime"));
    }
    // SAFETY: the AsyncFd takes ownership of `fd`, an OwnedFd: it is open,
    // nothing else can close it, and `as_raw_fd` returns the same number for
    // the AsyncFd's whole life, which is what `register_with_interest` asks.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}
