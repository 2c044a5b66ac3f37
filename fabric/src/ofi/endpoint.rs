//! The ofi endpoint: records over one RDM endpoint, writes by
//! `fi_writedata`, completions delivered in posting order.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::domain::Domain;
use super::proto::{encode_cq_data, Credits, Inbox, Kind, Rec, MORE, REC_HDR};
use super::sys::{self, Conn, Event, LentMr, Mr, Posted, ReadEnd};
use crate::completion::{Completion, WriteCompletion};
use crate::error::FabricError;
use crate::loan::{LentBuffer, Loan};
use crate::mr::RegionTable;
use crate::provider::Provider;
use crate::wire::WireError;

/// Empty polls between two looks at the control socket (one syscall).
const LIVENESS_EVERY: u32 = 4096;
/// After the control socket's end, how long records already in flight
/// may still arrive before the peer counts as gone.
const GRACE: Duration = Duration::from_millis(100);
/// Bound on an orderly close: waiting for the peer's answering close
/// record (a peer busy elsewhere answers at its next poll).
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The byte each side writes on the control socket when it is done with
/// the data path of a closing connection (see [`OfiEndpoint::quiesce`]).
const DONE: u8 = 0xD0;

/// Longest a closing endpoint drains its sends before it says it is done
/// (from `poll`, where the peer closed first).
const QUIESCE_WAIT: Duration = Duration::from_millis(200);
/// Warm mode without a wait fd: poll this long, then sleep
/// [`FALLBACK_SLEEP`] between polls (under 20% of a CPU while idle).
const FALLBACK_SPIN: Duration = Duration::from_micros(20);
/// See [`FALLBACK_SPIN`].
const FALLBACK_SLEEP: Duration = Duration::from_micros(100);
/// Writes up to this size travel inside one record (copied at the
/// target): one operation instead of descriptor + `fi_writedata`.
pub(super) const INLINE_MAX: usize = 4096;
/// Largest single `fi_read`, and so the bound of the staging buffer that
/// reads land in; longer reads go in chunks.
const READ_CHUNK: usize = 4 << 20;

/// A peer region as its owner registered it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerRegion {
    pub(super) rkey: u32,
    pub(super) addr: u64,
    pub(super) len: u64,
    /// The provider key.
    pub(super) key: u64,
    /// RMA addresses are virtual addresses (FI_MR_VIRT_ADDR), else offsets.
    pub(super) virt: bool,
}

#[derive(Debug)]
struct State {
    credits: Credits,
    inbox: Inbox,
    regions: RegionTable,
    peer: Vec<PeerRegion>,
    next_wseq: u32,
    hello_seen: bool,
    peer_closed: bool,
    /// Our close record went out (on drop, or as the answer to the peer's).
    close_sent: bool,
    /// We wrote [`DONE`] on the control socket.
    done_sent: bool,
    /// The peer's [`DONE`] came (and was taken off the socket).
    peer_done: bool,
    /// We touch libfabric no more for this connection (the peer closed
    /// first and we said we are done): its shared memory may be gone.
    quiesced: bool,
    eof_at: Option<Instant>,
    gone: Option<String>,
    idle: u32,
    max_message: usize,
    op_timeout: Duration,
    max_write: usize,
    /// The error of the read in flight, if it failed: (libfabric's error
    /// number, text).
    read_failed: Option<(i32, String)>,
    /// Slots whose re-post the provider deferred (`FI_EAGAIN`).
    repost: Vec<(usize, Kind)>,
    events: Vec<Event>,
}

#[derive(Debug)]
pub(crate) struct OfiEndpoint {
    conn: Conn,
    st: State,
    /// The handshake's TCP connection, kept as the liveness channel.
    ctrl: TcpStream,
    _mrs: Vec<Arc<Mr>>,
    _domain: Arc<Domain>,
    /// The provider lends buffers ([`super::lends`]).
    lends: bool,
}

fn malformed(e: WireError) -> FabricError {
    FabricError::Malformed(e)
}

impl OfiEndpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        conn: Conn,
        ctrl: TcpStream,
        regions: RegionTable,
        peer: Vec<PeerRegion>,
        credits: Credits,
        mrs: Vec<Arc<Mr>>,
        domain: Arc<Domain>,
        max_message: usize,
        op_timeout: Duration,
        max_write: usize,
    ) -> OfiEndpoint {
        OfiEndpoint {
            conn,
            st: State {
                credits,
                inbox: Inbox::default(),
                regions,
                peer,
                next_wseq: 0,
                hello_seen: false,
                peer_closed: false,
                close_sent: false,
                done_sent: false,
                peer_done: false,
                quiesced: false,
                eof_at: None,
                gone: None,
                idle: 0,
                max_message,
                op_timeout,
                max_write,
                read_failed: None,
                repost: Vec::new(),
                events: Vec::with_capacity(16),
            },
            ctrl,
            _mrs: mrs,
            lends: super::lends(&domain.obj.info.provider()),
            _domain: domain,
        }
    }

    /// Exchanges hello records over the data path: both sides' libfabric
    /// connections are up (rxm connects lazily) before the endpoint is
    /// handed out, and an unreachable peer is an error now.
    pub(super) fn hello(&mut self, deadline: Instant) -> Result<(), FabricError> {
        self.post(Rec::new(Kind::Hello), &[], deadline)
            .map_err(|e| match e {
                FabricError::Timeout { .. } => FabricError::Handshake(
                    "the peer's libfabric endpoint is unreachable (hello not sent in time)".into(),
                ),
                e => e,
            })?;
        while !self.st.hello_seen {
            self.progress()?;
            if let Some(why) = &self.st.gone {
                return Err(FabricError::PeerGone(why.clone()));
            }
            if Instant::now() >= deadline {
                return Err(FabricError::Handshake(
                    "the peer's libfabric endpoint did not answer (unreachable?)".into(),
                ));
            }
            std::hint::spin_loop();
        }
        Ok(())
    }

    /// The peer region that covers `len` bytes at `addr` under `rkey`.
    fn peer_region(&self, addr: u64, rkey: u32, len: u64) -> Result<PeerRegion, FabricError> {
        self.st
            .peer
            .iter()
            .find(|p| {
                p.rkey == rkey
                    && addr >= p.addr
                    && addr
                        .checked_add(len)
                        .is_some_and(|e| p.addr.checked_add(p.len).is_some_and(|end| e <= end))
            })
            .copied()
            .ok_or(FabricError::RemoteAccess {
                rkey,
                addr,
                len,
                reason: "no registered peer region covers the access",
            })
    }

    /// Reads `out.len()` bytes from `target`/`key` (the provider's address
    /// and key) through the staging buffer, [`READ_CHUNK`] bytes at a
    /// time, all within one op timeout.
    fn read_staged(&mut self, target: u64, key: u64, out: &mut [u8]) -> Result<(), FabricError> {
        let start = Instant::now();
        let deadline = start + self.st.op_timeout;
        let chunk = READ_CHUNK.min(self.st.max_write).max(1);
        let mut at = target;
        for part in out.chunks_mut(chunk) {
            self.read_chunk(at, key, part, deadline, start)?;
            at += part.len() as u64;
        }
        Ok(())
    }

    /// Reads `out.len()` bytes at `target`/`key` (the provider's address
    /// and key) through the staging buffer, driving our CQ meanwhile:
    /// completions that arrive are queued for `poll`, and the provider
    /// serves the peer's reads of our memory.
    fn read_chunk(
        &mut self,
        target: u64,
        key: u64,
        out: &mut [u8],
        deadline: Instant,
        start: Instant,
    ) -> Result<(), FabricError> {
        self.st.read_failed = None;
        let mut spins = 0u32;
        let mut posted = false;
        loop {
            if let Some(why) = &self.st.gone {
                return Err(FabricError::PeerGone(why.clone()));
            }
            if !posted {
                // A read that timed out earlier may still be in flight:
                // `post_read` waits (Again) until its completion is reaped.
                posted = self.conn.post_read(out.len(), target, key)? == Posted::Done;
                if posted {
                    self.st.read_failed = None;
                }
            }
            self.progress()?;
            if posted {
                if let Some((code, msg)) = self.st.read_failed.take() {
                    return Err(self.read_error(code, msg, target, out.len()));
                }
                if !self.conn.read_pending() {
                    let staged = self.conn.staged(out.len()).ok_or_else(|| {
                        FabricError::os(
                            "fi_read",
                            std::io::Error::other("staging buffer missing after the read"),
                        )
                    })?;
                    out.copy_from_slice(staged);
                    return Ok(());
                }
            }
            self.try_send_credit()?;
            spins += 1;
            self.conn.progress_others(spins);
            if spins % 256 == 0 {
                self.check_ctrl();
                if self.st.eof_at.is_some_and(|t| t.elapsed() > GRACE) || self.st.peer_closed {
                    let why = "peer closed while a read was in flight".to_string();
                    self.st.gone = Some(why.clone());
                    return Err(FabricError::PeerGone(why));
                }
                if Instant::now() >= deadline {
                    return Err(FabricError::Timeout {
                        op: if posted {
                            "ofi read completion"
                        } else {
                            "ofi read post (provider busy)"
                        },
                        after: start.elapsed(),
                    });
                }
            }
        }
    }

    /// A failed read: the provider refused the access (the endpoint
    /// lives on) or the connection broke (the endpoint is gone).
    fn read_error(&mut self, code: i32, msg: String, target: u64, len: usize) -> FabricError {
        if sys::is_refusal(code) && self.st.gone.is_none() {
            tracing::debug!(target, len, "ofi read refused: {msg}");
            return FabricError::RemoteAccess {
                rkey: 0,
                addr: target,
                len: len as u64,
                reason: "the peer's provider refused the read",
            };
        }
        let why = format!("read failed: {msg}");
        self.st.gone.get_or_insert_with(|| why.clone());
        FabricError::PeerGone(why)
    }

    /// Posts one record, waiting (while draining incoming traffic, so two
    /// peers posting at each other never deadlock) for a credit and for
    /// the provider, up to `deadline`.
    fn post(&mut self, mut rec: Rec, payload: &[u8], deadline: Instant) -> Result<(), FabricError> {
        let mut spins = 0u32;
        let start = Instant::now();
        loop {
            if let Some(why) = &self.st.gone {
                return Err(FabricError::PeerGone(why.clone()));
            }
            if self.st.peer_closed {
                return Err(FabricError::PeerGone("peer closed the connection".into()));
            }
            if !rec.kind.uses_credit() || self.st.credits.can_send() {
                rec.credits = self.st.credits.to_return();
                let hdr = rec.encode();
                if self.conn.send(&[&hdr, payload], true)? == Posted::Done {
                    self.st.credits.on_sent(rec.kind, rec.credits);
                    return Ok(());
                }
            }
            self.progress()?;
            self.try_send_credit()?;
            spins += 1;
            // The credit may come from a peer that waits on another
            // endpoint of ours.
            self.conn.progress_others(spins);
            if spins % 256 == 0 {
                self.check_ctrl();
                if self.st.eof_at.is_some_and(|t| t.elapsed() > GRACE) || self.st.peer_closed {
                    let why = "peer closed while we waited to post".to_string();
                    self.st.gone = Some(why.clone());
                    return Err(FabricError::PeerGone(why));
                }
                if Instant::now() >= deadline {
                    return Err(FabricError::Timeout {
                        op: "ofi post (no credit or provider busy)",
                        after: start.elapsed(),
                    });
                }
                std::thread::yield_now();
            }
        }
    }

    /// Sends an explicit credit record if one is due (never waits).
    fn try_send_credit(&mut self) -> Result<(), FabricError> {
        if !self.st.credits.credit_due() {
            return Ok(());
        }
        let rec = Rec {
            credits: self.st.credits.to_return(),
            ..Rec::new(Kind::Credit)
        };
        if self.conn.send(&[&rec.encode()], true)? == Posted::Done {
            self.st.credits.on_sent(Kind::Credit, rec.credits);
        }
        Ok(())
    }

    /// Runs one blocking one-sided call on the connection (`op`, a
    /// `what`), which hands the completions it meets to `other` and asks
    /// `alive` now and then whether the peer is still there; those
    /// completions are handled once it returns, in order. Returns the
    /// call's result and the first error of handling them.
    #[allow(clippy::type_complexity)]
    fn with_deferred<R>(
        &mut self,
        what: &'static str,
        op: impl FnOnce(
            &mut Conn,
            &mut dyn FnMut(Event) -> Result<(), FabricError>,
            &mut dyn FnMut() -> Result<(), FabricError>,
        ) -> Result<R, FabricError>,
    ) -> (Result<R, FabricError>, Option<FabricError>) {
        let mut deferred = std::mem::take(&mut self.st.events);
        deferred.clear();
        let (ctrl, peer_done) = (&self.ctrl, &mut self.st.peer_done);
        let r = op(
            &mut self.conn,
            &mut |ev| {
                deferred.push(ev);
                Ok(())
            },
            &mut || match peer_ctrl(ctrl, peer_done) {
                Ctrl::Open => Ok(()),
                Ctrl::Done | Ctrl::Closed => Err(FabricError::PeerGone(format!(
                    "peer closed while a {what} was in flight"
                ))),
            },
        );
        let mut first_err = None;
        for ev in deferred.drain(..) {
            if let Err(e) = self.handle(ev) {
                first_err.get_or_insert(e);
            }
        }
        self.st.events = deferred;
        (r, first_err)
    }

    /// Reads the CQ dry (bounded) and handles what it held; nothing once
    /// quiesced.
    fn progress(&mut self) -> Result<(), FabricError> {
        if self.st.quiesced {
            return Ok(());
        }
        if !self.st.repost.is_empty() {
            for (slot, kind) in std::mem::take(&mut self.st.repost) {
                self.repost(slot, kind)?;
            }
        }
        let mut events = std::mem::take(&mut self.st.events);
        let mut r = Ok(());
        for _ in 0..8 {
            events.clear();
            if let Err(e) = self.conn.poll_cq(&mut events) {
                r = Err(e);
                break;
            }
            // A short read drained the CQ: no second (empty) read, each
            // of which runs the provider's progress engine.
            let drained = events.len() < super::sys::CQ_BATCH;
            for ev in events.drain(..) {
                if let Err(e) = self.handle(ev) {
                    r = Err(e);
                }
            }
            if r.is_err() || drained {
                break;
            }
        }
        events.clear();
        self.st.events = events;
        r
    }

    fn repost(&mut self, slot: usize, kind: Kind) -> Result<(), FabricError> {
        match self.conn.post_recv(slot)? {
            Posted::Done => {
                self.st.credits.on_consumed(kind);
                Ok(())
            }
            Posted::Again => {
                self.st.repost.push((slot, kind));
                Ok(())
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Result<(), FabricError> {
        match ev {
            Event::Recv { slot, len } => {
                let kind = self.handle_record(slot, len)?;
                self.repost(slot, kind)
            }
            Event::SendDone | Event::WriteDone | Event::ReadDone => Ok(()),
            Event::ReadFailed { code, msg } => {
                self.st.read_failed = Some((code, msg));
                Ok(())
            }
            Event::RemoteWrite { data } => {
                self.st.inbox.handle_remote_write(data).map_err(malformed)
            }
            Event::Error { msg, .. } => {
                self.st.gone = Some(msg.clone());
                Err(FabricError::PeerGone(msg))
            }
        }
    }

    fn handle_record(&mut self, slot: usize, len: usize) -> Result<Kind, FabricError> {
        let st = &mut self.st;
        let buf =
            self.conn
                .rx_slot(slot, len)
                .ok_or(FabricError::Malformed(WireError::Invalid(
                    "receive completion beyond its slot",
                )))?;
        let (rec, payload) = Rec::decode(buf).map_err(malformed)?;
        st.credits.on_grant(rec.credits).map_err(malformed)?;
        match rec.kind {
            Kind::Send => st
                .inbox
                .handle_fragment(payload, rec.flags & MORE != 0, st.max_message)
                .map_err(malformed)?,
            Kind::InlineWrite | Kind::WriteDesc => {
                let (region, offset) = st
                    .regions
                    .resolve(rec.rkey, rec.addr, u64::from(rec.len))
                    .map_err(|why| malformed(WireError::Invalid(why)))?;
                let w = WriteCompletion {
                    imm: rec.imm,
                    rkey: rec.rkey,
                    offset: offset as u64,
                    len: rec.len,
                };
                if rec.kind == Kind::InlineWrite {
                    region.write_at(offset, payload)?;
                    st.inbox.handle_ready(Completion::Write(w));
                } else {
                    st.inbox.handle_desc(w);
                }
            }
            Kind::Credit => {}
            Kind::Hello => st.hello_seen = true,
            Kind::Close => st.peer_closed = true,
        }
        if rec.kind == Kind::Close {
            self.answer_close();
        }
        Ok(rec.kind)
    }

    /// Sends our close record (one try), also as the answer to the
    /// peer's: a side closes its libfabric endpoint only after the peer's
    /// close record, so neither touches an endpoint being torn down
    /// (libfabric's shm crashes when both ends live in one process and one
    /// polls during the other's close).
    fn answer_close(&mut self) {
        let _ = self.send_close();
    }

    /// One try at our close record; `Err` when it can never go out.
    fn send_close(&mut self) -> Result<(), FabricError> {
        // A peer that is done or gone takes nothing more.
        if self.st.close_sent || self.ctrl() != Ctrl::Open {
            return Ok(());
        }
        let close = Rec::new(Kind::Close).encode();
        if self.conn.send(&[&close], true)? == Posted::Done {
            self.st.close_sent = true;
        }
        Ok(())
    }

    /// The peer's state on the control socket.
    fn ctrl(&mut self) -> Ctrl {
        peer_ctrl(&self.ctrl, &mut self.st.peer_done)
    }

    fn check_ctrl(&mut self) {
        match self.ctrl() {
            Ctrl::Open => {}
            // Done with the data path: as final as its close record.
            Ctrl::Done => self.st.peer_closed = true,
            Ctrl::Closed => {
                self.st.eof_at.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// True when the peer closed the control connection (or it broke).
/// What the peer's end of the control socket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctrl {
    /// Nothing yet.
    Open,
    /// It wrote [`DONE`]: done with the data path, its endpoint still open.
    Done,
    /// Closed (its endpoint closed, or its process gone).
    Closed,
}

/// Reads the peer's state from `ctrl` without blocking; `done` remembers a
/// [`DONE`] already taken off the socket (so that its end shows behind it).
fn peer_ctrl(ctrl: &TcpStream, done: &mut bool) -> Ctrl {
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    let mut b = [0u8; 1];
    if !*done {
        match ctrl.peek(&mut b) {
            Ok(0) => return Ctrl::Closed,
            Ok(_) if b[0] == DONE => {
                let _ = (&*ctrl).read(&mut b);
                *done = true;
            }
            // Nothing else is ever written after the set-up.
            Ok(_) => return Ctrl::Closed,
            Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => return Ctrl::Open,
            Err(_) => return Ctrl::Closed,
        }
    }
    match ctrl.peek(&mut b) {
        Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => Ctrl::Done,
        _ => Ctrl::Closed,
    }
}

impl OfiEndpoint {
    /// The peer closed first and we answered: drain our sends (bounded),
    /// say [`DONE`] and touch libfabric no more for this connection.
    ///
    /// Why: libfabric's shm provider (1.17 here) lets two endpoints of one
    /// process use each other's shared-memory region directly, and frees a
    /// region when its endpoint closes. An endpoint that polls while it has
    /// sends in flight to a closed peer of its own process touches freed
    /// memory (SIGSEGV in `pthread_spin_trylock`). So each side closes its
    /// endpoint only once the other has said it is done ([`Drop`]), and
    /// says so only when nothing of it is in flight.
    fn quiesce(&mut self) {
        if self.st.done_sent {
            return;
        }
        let deadline = Instant::now() + QUIESCE_WAIT;
        while self.conn.tx_in_flight() > 0 && Instant::now() < deadline {
            if self.progress().is_err() || self.ctrl() == Ctrl::Closed {
                break;
            }
        }
        self.send_done();
        self.st.quiesced = true;
    }

    /// Writes [`DONE`] on the control socket, once.
    fn send_done(&mut self) {
        if !self.st.done_sent {
            self.st.done_sent = true;
            let _ = (&self.ctrl).write(&[DONE]);
        }
    }
}

impl Drop for OfiEndpoint {
    /// Closes in two phases, each bounded by [`CLOSE_WAIT`] in all: our
    /// close record behind everything we posted, until the peer's close
    /// came and our sends left; then [`DONE`] on the control socket, and
    /// the endpoint closes only once the peer said [`DONE`] too or is gone
    /// (see [`OfiEndpoint::quiesce`] for why).
    fn drop(&mut self) {
        if !self.st.hello_seen {
            return; // nothing was exchanged
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        let open = |ep: &mut Self| ep.ctrl() == Ctrl::Open;
        if !self.st.quiesced && self.st.gone.is_none() && open(self) {
            while !self.st.close_sent && open(self) && Instant::now() < deadline {
                if self.send_close().is_err() || (!self.st.close_sent && self.progress().is_err()) {
                    break;
                }
            }
            while !self.st.peer_closed
                && self.st.gone.is_none()
                && open(self)
                && Instant::now() < deadline
            {
                if self.progress().is_err() {
                    break;
                }
                std::thread::yield_now();
            }
        }
        // Our sends leave while the peer's memory is still there (it
        // closes only after our DONE).
        while !self.st.quiesced
            && self.conn.tx_in_flight() > 0
            && self.ctrl() != Ctrl::Closed
            && Instant::now() < deadline
        {
            if self.progress().is_err() {
                break;
            }
            std::thread::yield_now();
        }
        self.send_done();
        // The peer may still need our answers to drain its own sends:
        // poll on (our sends have left, so this touches only our memory)
        // until it says DONE or goes.
        while open(self) && Instant::now() < deadline {
            if self.st.quiesced || self.progress().is_err() {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = PollTimeout::try_from(left.min(Duration::from_millis(10)))
                    .unwrap_or(PollTimeout::ZERO);
                let mut fds = [PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, wait);
            } else {
                std::thread::yield_now();
            }
        }
        // The control socket's end goes out before the endpoint closes (in
        // the fields' drop): a peer that sees it sends nothing more.
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
    }
}

impl Provider for OfiEndpoint {
    fn write(&mut self, addr: u64, rkey: u32, imm: u32, data: &[u8]) -> Result<(), FabricError> {
        let pr = self.peer_region(addr, rkey, data.len() as u64)?;
        let deadline = Instant::now() + self.st.op_timeout;
        let inline_max = INLINE_MAX.min(self.conn.slot_size() - REC_HDR);
        if data.len() <= inline_max {
            let rec = Rec::write(Kind::InlineWrite, addr, rkey, imm, data.len() as u32);
            return self.post(rec, data, deadline);
        }
        if data.len() > self.st.max_write {
            return Err(FabricError::TooLarge {
                len: data.len(),
                max: self.st.max_write,
            });
        }
        let wseq = self.st.next_wseq;
        let rec = Rec::write(Kind::WriteDesc, addr, rkey, imm, data.len() as u32);
        self.post(rec, &[], deadline)?;
        self.st.next_wseq = wseq.wrapping_add(1);
        let target = if pr.virt { addr } else { addr - pr.addr };
        let imm_data = encode_cq_data(imm, wseq);
        let (r, handled) = self.with_deferred("write", |conn, other, alive| {
            conn.write_blocking(data, target, pr.key, imm_data, deadline, other, alive)
        });
        // A failed write leaves the peer with a descriptor whose data never
        // comes: the connection is over.
        if let Err(e) = &r {
            self.st
                .gone
                .get_or_insert_with(|| format!("write failed: {e}"));
        }
        match r.err().or(handled) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One-sided read: `fi_read` into the staging buffer, chunk by chunk
    /// (at most [`READ_CHUNK`] bytes each), each copied into `out`.
    fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError> {
        let len = out.len() as u64;
        let pr = self.peer_region(addr, rkey, len)?;
        let target = if pr.virt { addr } else { addr - pr.addr };
        self.read_staged(target, pr.key, out).map_err(|e| match e {
            // Report the access as the caller made it.
            FabricError::RemoteAccess { reason, .. } => FabricError::RemoteAccess {
                rkey,
                addr,
                len,
                reason,
            },
            e => e,
        })
    }

    /// Registers the bytes for the peers' `fi_read`s in this endpoint's
    /// domain; the peer names them by address or by offset, as the
    /// provider addresses registrations.
    fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        if let Some(why) = &self.st.gone {
            return Err(FabricError::PeerGone(why.clone()));
        }
        if !self.lends {
            return Ok(None);
        }
        let domain = &self._domain.obj;
        let mr = LentMr::register(domain, ptr, len)?;
        let lent = LentBuffer {
            addr: if domain.info.mr_virt_addr() {
                ptr as u64
            } else {
                0
            },
            len: len as u64,
            key: mr.key(),
        };
        Ok(Some(Loan::new(lent, Box::new(mr))))
    }

    /// `fi_read` of a loan straight into `out` where the provider needs
    /// no local registration, else through the staging buffer. A read
    /// the provider refuses is `RemoteAccess`, and the endpoint lives on.
    fn read_lent(&mut self, addr: u64, key: u64, out: &mut [u8]) -> Result<(), FabricError> {
        if let Some(why) = &self.st.gone {
            return Err(FabricError::PeerGone(why.clone()));
        }
        let len = out.len() as u64;
        let refused = |reason| FabricError::RemoteAccess {
            rkey: 0,
            addr,
            len,
            reason,
        };
        if !self.lends {
            return Err(refused("this provider does not lend memory"));
        }
        if self._domain.obj.info.mr_local() {
            return self.read_staged(addr, key, out).map_err(|e| match e {
                FabricError::RemoteAccess { reason, .. } => refused(reason),
                e => e,
            });
        }
        let deadline = Instant::now() + self.st.op_timeout;
        let chunk = READ_CHUNK.min(self.st.max_write).max(1);
        let mut at = addr;
        for part in out.chunks_mut(chunk) {
            let (r, handled) = self.with_deferred("read", |conn, other, alive| {
                conn.read_blocking(part, at, key, deadline, other, alive)
            });
            let first_err = match r {
                Ok(ReadEnd::Done) => None,
                Ok(ReadEnd::Failed { code, msg }) => {
                    Some(self.read_error(code, msg, at, part.len()))
                }
                Err(e) => {
                    // The read may have been cut short with the endpoint
                    // closed under it: the connection is over.
                    self.st
                        .gone
                        .get_or_insert_with(|| format!("read failed: {e}"));
                    Some(e)
                }
            };
            if let Some(e) = first_err.or(handled) {
                return Err(match e {
                    FabricError::RemoteAccess { reason, .. } => refused(reason),
                    e => e,
                });
            }
            at += part.len() as u64;
        }
        Ok(())
    }

    fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        let deadline = Instant::now() + self.st.op_timeout;
        let max = self.conn.slot_size() - REC_HDR;
        if data.is_empty() {
            return self.post(Rec::new(Kind::Send), &[], deadline);
        }
        let mut chunks = data.chunks(max).peekable();
        while let Some(chunk) = chunks.next() {
            let rec = Rec {
                flags: if chunks.peek().is_some() { MORE } else { 0 },
                len: chunk.len() as u32,
                ..Rec::new(Kind::Send)
            };
            self.post(rec, chunk, deadline)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if let Some(c) = self.st.inbox.poll().map_err(malformed)? {
            return Ok(Some(c));
        }
        self.progress()?;
        if let Some(c) = self.st.inbox.poll().map_err(malformed)? {
            self.st.idle = 0;
            return Ok(Some(c));
        }
        self.try_send_credit()?;
        if let Some(why) = &self.st.gone {
            return Err(FabricError::PeerGone(why.clone()));
        }
        if self.st.peer_closed && self.st.inbox.is_empty() {
            let why = "peer closed the connection".to_string();
            self.st.gone = Some(why.clone());
            self.quiesce();
            return Err(FabricError::PeerGone(why));
        }
        self.st.idle += 1;
        if self.st.idle >= LIVENESS_EVERY {
            self.st.idle = 0;
            self.check_ctrl();
        }
        if self.st.eof_at.is_some_and(|t| t.elapsed() > GRACE) {
            let why = "peer process exited or closed the connection".to_string();
            self.st.gone = Some(why.clone());
            return Err(FabricError::PeerGone(why));
        }
        Ok(None)
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.conn.wait_fd().unwrap_or(self.ctrl.as_fd())
    }

    /// Ready to sleep on the event fd? (`fi_trywait` after a drain.)
    fn arm(&mut self) -> Result<bool, FabricError> {
        self.progress()?;
        if self.st.inbox.has_ready() || self.st.gone.is_some() || self.st.peer_closed {
            return Ok(false);
        }
        self.check_ctrl();
        if self.st.eof_at.is_some() || self.conn.wait_fd().is_none() {
            return Ok(false);
        }
        Ok(self.conn.trywait())
    }

    fn disarm(&mut self) {}

    fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
        if self.st.inbox.has_ready() || self.st.gone.is_some() || self.st.peer_closed {
            return Ok(());
        }
        self.check_ctrl();
        if self.st.eof_at.is_some() || self.conn.wait_fd().is_none() {
            let t0 = Instant::now();
            while t0.elapsed() < FALLBACK_SPIN.min(timeout) {
                self.progress()?;
                if self.st.inbox.has_ready() || self.st.gone.is_some() || self.st.peer_closed {
                    return Ok(());
                }
            }
            std::thread::sleep(timeout.saturating_sub(t0.elapsed()).min(FALLBACK_SLEEP));
            return Ok(());
        }
        if !self.conn.trywait() {
            return Ok(());
        }
        let Some(wait) = self.conn.wait_fd() else {
            return Ok(());
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(wait, PollFlags::POLLIN),
            PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN),
        ];
        let r = nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        let ctrl_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if ctrl_ready {
            self.check_ctrl();
        }
        match r {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(FabricError::os("poll", std::io::Error::from(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::mr::MemoryRegion;
    use std::net::TcpListener;

    const T: Duration = Duration::from_secs(10);

    /// Two ofi endpoints of `provider` over a loopback control connection:
    /// `a` exposes `a_mr`, `b` nothing.
    fn pair(
        provider: &str,
        a_mr: &MemoryRegion,
        op_timeout: Duration,
    ) -> (OfiEndpoint, OfiEndpoint) {
        let cfg = Config {
            ofi_provider: Some(provider.to_string()),
            op_timeout,
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (a_cfg, a_regions) = (cfg.clone(), RegionTable::new(vec![a_mr.clone()]));
        let a = std::thread::spawn(move || {
            let (ctrl, _) = listener.accept().unwrap();
            super::super::establish(ctrl, a_regions, &[], &a_cfg, T).unwrap()
        });
        let ctrl = TcpStream::connect(addr).unwrap();
        let b = super::super::establish(ctrl, RegionTable::default(), &[a_mr.remote()], &cfg, T)
            .unwrap();
        (a.join().unwrap(), b)
    }

    /// Polls `ep` until a message arrives or the peer is gone (bounded).
    fn serve(mut ep: OfiEndpoint) -> OfiEndpoint {
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < T, "no message while serving");
            match ep.poll() {
                Ok(Some(Completion::Recv(_))) | Err(_) => return ep,
                Ok(_) => {}
            }
        }
    }

    /// Reads the provider itself refuses (a key the owner never issued, a
    /// range beyond its region: accesses rfx's own checks stop before
    /// they reach the provider, forged here below them) never hand back
    /// stale bytes, never hang, and leave the endpoint consistent: a
    /// `RemoteAccess` refusal leaves it usable, anything else ends it.
    ///
    /// On libfabric 1.17, `tcp;ofi_rxm` checks keys and drops the
    /// connection (the read completes with `FI_ECANCELED`: `PeerGone`);
    /// `shm` does not check keys, and a range outside any mapping fails
    /// with `FI_EIO` (reported without the read's context: `PeerGone`).
    fn provider_refusals(provider: &str) {
        let mr = MemoryRegion::new(8192).unwrap();
        mr.write_at(100, b"owner's bytes").unwrap();
        mr.write_at(200, b"other bytes!!").unwrap();
        let (a, mut b) = pair(provider, &mr, Duration::from_secs(5));
        let server = std::thread::spawn(move || serve(a));
        let rb = mr.remote();
        let mut out = [0u8; 13];
        b.read(rb.addr + 100, rb.rkey, &mut out).unwrap();
        assert_eq!(&out, b"owner's bytes");
        let good = b.st.peer[0];
        let forgeries: [(&str, PeerRegion, u64); 2] = [
            (
                "forged key",
                PeerRegion {
                    key: good.key ^ 0x5a5a_0000,
                    ..good
                },
                200,
            ),
            (
                "range beyond the region",
                PeerRegion {
                    len: 1 << 50,
                    ..good
                },
                1 << 44,
            ),
        ];
        let mut alive = true;
        for (what, forged, off) in forgeries {
            b.st.peer[0] = forged;
            let mut out = [0u8; 13];
            let t0 = Instant::now();
            let r = b.read(rb.addr + off, rb.rkey, &mut out);
            assert!(t0.elapsed() < T, "{provider}: {what}: read hung");
            b.st.peer[0] = good;
            match r {
                // The provider did not check: the bytes must be real.
                Ok(()) => assert_eq!(&out, b"other bytes!!", "{provider}: {what}: stale bytes"),
                Err(FabricError::RemoteAccess { rkey, .. }) => {
                    assert_eq!(rkey, rb.rkey);
                    b.read(rb.addr + 100, rb.rkey, &mut out).unwrap();
                    assert_eq!(
                        &out, b"owner's bytes",
                        "{provider}: unusable after a refusal"
                    );
                }
                Err(FabricError::PeerGone(_)) => {
                    let r = b.read(rb.addr + 100, rb.rkey, &mut out);
                    assert!(
                        matches!(r, Err(FabricError::PeerGone(_))),
                        "{provider}: {r:?}"
                    );
                    alive = false;
                    break;
                }
                Err(e) => panic!("{provider}: {what}: {e:?}"),
            }
        }
        if alive {
            b.send(b"done").unwrap();
        }
        drop(b);
        drop(server.join().unwrap());
    }

    #[test]
    fn provider_refusals_tcp_rxm() {
        provider_refusals("tcp;ofi_rxm");
    }

    #[test]
    fn provider_refusals_shm() {
        provider_refusals("shm");
    }

    /// Reads longer than one staging buffer go in chunks; each lands at
    /// its place (offset addressing on tcp, virtual addresses on shm).
    fn chunked_read(provider: &str) {
        const LEN: usize = 2 * READ_CHUNK + 12_345;
        let mr = MemoryRegion::new(LEN + 4096).unwrap();
        let bytes: Vec<u8> = (0..LEN + 4096).map(|i| (i * 7 + i / 4099) as u8).collect();
        mr.write_at(0, &bytes).unwrap();
        let (a, mut b) = pair(provider, &mr, T);
        let server = std::thread::spawn(move || serve(a));
        let rb = mr.remote();
        let mut out = vec![0u8; LEN];
        b.read(rb.addr + 4001, rb.rkey, &mut out).unwrap();
        assert!(
            out[..] == bytes[4001..4001 + LEN],
            "{provider}: chunked read differs"
        );
        // The staging buffer grew to the bound, not to the read.
        assert!(
            b.conn.staged(READ_CHUNK).is_some() && b.conn.staged(READ_CHUNK + 1).is_none(),
            "{provider}: staging buffer not bounded by READ_CHUNK"
        );
        b.send(b"done").unwrap();
        drop(server.join().unwrap());
    }

    #[test]
    fn chunked_read_tcp_rxm() {
        chunked_read("tcp;ofi_rxm");
    }

    #[test]
    fn chunked_read_shm() {
        chunked_read("shm");
    }

    /// A loan read straight into the caller's slice that times out (an
    /// owner in another process that does not progress) ends the
    /// endpoint before it returns: when the owner progresses again, the
    /// read's data no longer lands in the slice, which the caller owns
    /// again.
    #[test]
    fn a_timed_out_loan_read_ends_the_endpoint_and_writes_nothing_later() {
        let mr = MemoryRegion::new(4096).unwrap();
        let (mut a, mut b) = pair("tcp;ofi_rxm", &mr, Duration::from_millis(300));
        let lent = vec![0x5au8; 1 << 20];
        let loan = a.lend(lent.as_ptr(), lent.len()).unwrap().unwrap();
        let l = loan.lent();
        // In one process the reader's wait drives the lender too.
        let mut first = vec![0u8; 4096];
        b.read_lent(l.addr, l.key, &mut first).unwrap();
        assert!(first.iter().all(|&x| x == 0x5a));
        a.conn.keep_apart();
        let mut out = vec![0u8; 1 << 20];
        let r = b.read_lent(l.addr, l.key, &mut out);
        assert!(
            matches!(r, Err(FabricError::Timeout { .. })),
            "read without the lender's progress: {r:?}"
        );
        // Gone: no later call touches the connection.
        assert!(matches!(
            b.read_lent(l.addr, l.key, &mut first),
            Err(FabricError::PeerGone(_))
        ));
        // The lender serves reads again, and the reader's side is driven
        // (its calls fail, touching nothing): nothing lands in `out`.
        let server = std::thread::spawn(move || serve(a));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            let _ = b.poll();
            b.conn.progress_others(16);
        }
        assert!(out.iter().all(|&x| x == 0), "a closed read wrote later");
        drop(b);
        drop(server.join().unwrap());
        drop(loan);
    }

    /// tcp;ofi_rxm needs the owner to drive progress: while it does not,
    /// a read times out (bounded by the op timeout); the endpoint stays
    /// usable and, once the owner polls, the next read (behind the stale
    /// one, which still lands in the staging buffer) succeeds.
    #[test]
    fn read_times_out_without_owner_progress_then_recovers() {
        let mr = MemoryRegion::new(1 << 20).unwrap();
        mr.write_at(0, &[7u8; 1 << 20]).unwrap();
        let (a, mut b) = pair("tcp;ofi_rxm", &mr, Duration::from_millis(300));
        let rb = mr.remote();
        // In one process a waiting read drives the owner's endpoint too
        // (the domain's other endpoints): it completes with no owner thread.
        let mut first = [0u8; 16];
        b.read(rb.addr, rb.rkey, &mut first).unwrap();
        assert_eq!(first, [7u8; 16]);
        // An owner in another process that does not poll: no wait in this
        // process drives it any more.
        a.conn.keep_apart();
        let mut out = vec![0u8; 1 << 20];
        let t0 = Instant::now();
        let r = b.read(rb.addr, rb.rkey, &mut out);
        let waited = t0.elapsed();
        assert!(
            matches!(r, Err(FabricError::Timeout { .. })),
            "read without owner progress: {r:?}"
        );
        assert!(waited < Duration::from_secs(3), "timeout took {waited:?}");
        let server = std::thread::spawn(move || serve(a));
        mr.write_at(0, &[9u8; 16]).unwrap();
        let mut small = [0u8; 16];
        b.read(rb.addr, rb.rkey, &mut small).unwrap();
        assert_eq!(small, [9u8; 16]);
        b.send(b"done").unwrap();
        drop(server.join().unwrap());
    }
}
