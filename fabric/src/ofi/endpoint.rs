//! The ofi endpoint: records over one RDM endpoint, writes by
//! `fi_writedata`, completions delivered in posting order.

use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::domain::Domain;
use super::proto::{encode_cq_data, Credits, Inbox, Kind, Rec, MORE, REC_HDR};
use super::sys::{Conn, Event, Mr, Posted};
use crate::completion::{Completion, WriteCompletion};
use crate::error::FabricError;
use crate::mr::RegionTable;
use crate::wire::WireError;

/// Empty polls between two looks at the control socket (one syscall).
const LIVENESS_EVERY: u32 = 4096;
/// After the control socket's end, how long records already in flight
/// may still arrive before the peer counts as gone.
const GRACE: Duration = Duration::from_millis(100);
/// Bound on an orderly close: waiting for the peer's answering close
/// record (a peer busy elsewhere answers at its next poll).
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Warm mode without a wait fd: poll this long, then sleep
/// [`FALLBACK_SLEEP`] between polls (under 20% of a CPU while idle).
const FALLBACK_SPIN: Duration = Duration::from_micros(20);
/// See [`FALLBACK_SPIN`].
const FALLBACK_SLEEP: Duration = Duration::from_micros(100);
/// Writes up to this size travel inside one record (copied at the
/// target): one operation instead of descriptor + `fi_writedata`.
pub(super) const INLINE_MAX: usize = 4096;

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
    eof_at: Option<Instant>,
    gone: Option<String>,
    idle: u32,
    max_message: usize,
    op_timeout: Duration,
    max_write: usize,
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
                eof_at: None,
                gone: None,
                idle: 0,
                max_message,
                op_timeout,
                max_write,
                repost: Vec::new(),
                events: Vec::with_capacity(16),
            },
            ctrl,
            _mrs: mrs,
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

    pub(crate) fn write(
        &mut self,
        addr: u64,
        rkey: u32,
        imm: u32,
        data: &[u8],
    ) -> Result<(), FabricError> {
        let len = data.len() as u64;
        let pr = *self
            .st
            .peer
            .iter()
            .find(|p| {
                p.rkey == rkey
                    && addr >= p.addr
                    && addr.checked_add(len).is_some_and(|e| e <= p.addr + p.len)
            })
            .ok_or(FabricError::RemoteAccess {
                rkey,
                addr,
                len,
                reason: "no registered peer region covers the access",
            })?;
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
        let mut deferred = std::mem::take(&mut self.st.events);
        deferred.clear();
        let ctrl = &self.ctrl;
        let r = self.conn.write_blocking(
            data,
            target,
            pr.key,
            encode_cq_data(imm, wseq),
            deadline,
            |ev| {
                deferred.push(ev);
                Ok(())
            },
            || match peer_closed(ctrl) {
                true => Err(FabricError::PeerGone(
                    "peer closed while a write was in flight".into(),
                )),
                false => Ok(()),
            },
        );
        // A failed write leaves the peer with a descriptor whose data never
        // comes: the connection is over.
        if let Err(e) = &r {
            self.st
                .gone
                .get_or_insert_with(|| format!("write failed: {e}"));
        }
        let mut first_err = r.err();
        for ev in deferred.drain(..) {
            if let Err(e) = self.handle(ev) {
                first_err.get_or_insert(e);
            }
        }
        self.st.events = deferred;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError> {
        let _ = (addr, rkey, out);
        Err(FabricError::Unavailable {
            kind: crate::caps::TransportKind::Ofi,
            reason: "one-sided read is not implemented on this provider yet".into(),
        })
    }

    pub(crate) fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
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

    /// Reads the CQ dry (bounded) and handles what it held.
    fn progress(&mut self) -> Result<(), FabricError> {
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
            Event::SendDone | Event::WriteDone => Ok(()),
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
        if self.st.close_sent || peer_closed(&self.ctrl) {
            return Ok(());
        }
        let close = Rec::new(Kind::Close).encode();
        if self.conn.send(&[&close], true)? == Posted::Done {
            self.st.close_sent = true;
        }
        Ok(())
    }

    fn check_ctrl(&mut self) {
        if self.st.eof_at.is_none() && peer_closed(&self.ctrl) {
            self.st.eof_at = Some(Instant::now());
        }
    }

    pub(crate) fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
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

    pub(crate) fn event_fd(&self) -> BorrowedFd<'_> {
        self.conn.wait_fd().unwrap_or(self.ctrl.as_fd())
    }

    /// Ready to sleep on the event fd? (`fi_trywait` after a drain.)
    pub(crate) fn arm(&mut self) -> Result<bool, FabricError> {
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

    pub(crate) fn disarm(&mut self) {}

    pub(crate) fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
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

/// True when the peer closed the control connection (or it broke).
fn peer_closed(ctrl: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match ctrl.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

impl Drop for OfiEndpoint {
    fn drop(&mut self) {
        // A peer that already left gets nothing: posting to a closed peer
        // crashes libfabric's shm when both ends live in one process.
        if self.st.gone.is_some() || !self.st.hello_seen || peer_closed(&self.ctrl) {
            return;
        }
        // Orderly close, best effort and bounded: a close record behind
        // everything we posted, then wait for the peer's close (its answer)
        // and for our sends to leave, so that the peer has everything and
        // is done with our endpoint before we close it.
        let deadline = Instant::now() + CLOSE_WAIT;
        while !self.st.close_sent && Instant::now() < deadline {
            if self.send_close().is_err() || peer_closed(&self.ctrl) {
                return;
            }
            if !self.st.close_sent && self.progress().is_err() {
                return;
            }
        }
        while (!self.st.peer_closed || self.conn.tx_in_flight() > 0) && Instant::now() < deadline {
            if self.progress().is_err() || self.st.gone.is_some() || peer_closed(&self.ctrl) {
                return;
            }
            std::thread::yield_now();
        }
        // The control socket's end goes out before the endpoint closes (in
        // the fields' drop): a peer that sees it sends nothing more.
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
    }
}
