//! The verbs endpoint: an RC queue pair, our inbound ring (written by the
//! peer), and the peer's ring (written by us), driven by the bookkeeping of
//! [`super::proto`].

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::proto::{
    self, Ack, Checksum, Credits, ExposedRegion, Header, Inbound, Kind, RingRx, RingTx, SetupMsg,
    Staging, Unconsumed, REC_ALIGN, REC_HDR, RING_IMM, TRAILER, WRITE_IN_RECORD_MAX,
};
use super::sys::{LandingMr, LentMr, Mr, QueuePair, SendKind, Source};
use super::{Domain, STAGING};
use crate::completion::{Completion, WriteCompletion};
use crate::config::Config;
use crate::error::FabricError;
use crate::loan::{LentBuffer, Loan};
use crate::mr::RegionTable;
use crate::provider::Provider;
use crate::wire::WireError;

/// Requests between two signalled ones.
const SIGNAL_EVERY: u64 = 16;
/// Largest RDMA WRITE staged at once (direct writes).
const CHUNK: usize = STAGING / 4;
/// Largest RDMA WRITE straight from registered memory.
const ZC_CHUNK: usize = 8 << 20;
/// Empty polls between two rounds of housekeeping (reaping the CQs,
/// reading the control block).
const HOUSEKEEP_EVERY: u32 = 32;
/// Receives re-posted at once (one `ibv_post_recv` per batch; the peer's
/// credits never count on the ones held back).
const REPOST_BATCH: u32 = 16;
/// Empty polls between two liveness checks of the peer (one syscall).
const LIVENESS_EVERY: u32 = 2048;
/// After the control socket closed: how long completions still in flight
/// may take to show up before the peer is declared gone.
const GRACE: Duration = Duration::from_millis(50);
/// Bytes of the stack buffer an inline record is assembled in.
const INLINE_BUF: usize = super::WANT_INLINE as usize;

/// Where a request's bytes come from (resolved against the staging Mr).
#[derive(Debug, Clone, Copy)]
enum Src<'a> {
    Inline(&'a [u8]),
    Staged(usize, usize),
    Registered(&'a Mr, usize, usize),
    Landing(&'a LandingMr<'a>),
}

/// Empty rounds of a read's wait between two looks at the clock and at
/// the peer's liveness (one syscall).
const READ_CHECK_EVERY: u32 = 256;

/// What [`super::establish`] hands over.
pub(super) struct Parts<'a> {
    pub(super) qp: QueuePair,
    pub(super) ring_mr: Mr,
    pub(super) ring_key: u64,
    pub(super) ctl_mr: Mr,
    pub(super) stage_mr: Mr,
    pub(super) exposed: Vec<Arc<Mr>>,
    pub(super) domain: Arc<Domain>,
    pub(super) regions: RegionTable,
    pub(super) recv_depth: u32,
    pub(super) peer: SetupMsg,
    pub(super) sock: TcpStream,
    pub(super) cfg: &'a Config,
}

/// Fields drop in declaration order: the QP goes first, so the device
/// never touches a registration or its memory after they are freed.
#[derive(Debug)]
pub(crate) struct VerbsEndpoint {
    qp: QueuePair,
    /// Our inbound ring and control block: only the peer writes them.
    ring_mr: Mr,
    ctl_mr: Mr,
    stage_mr: Mr,
    /// Where RDMA READs land before they are copied out (grown lazily, see
    /// [`proto::read_bounce_size`]); no READ into it is outstanding once a
    /// read returned, unless the endpoint failed.
    read_mr: Option<Arc<Mr>>,
    _exposed: Vec<Arc<Mr>>,
    /// Registrations a zero-copy write reads from, until its completion.
    pinned: VecDeque<(u64, Arc<Mr>)>,
    domain: Arc<Domain>,
    regions: RegionTable,
    peer_regions: Vec<ExposedRegion>,
    /// The peer's ring (address, device rkey, stamp key) and control block.
    peer_ring: (u64, u32, u64),
    peer_ctl: (u64, u32),
    tx: RingTx,
    rx: RingRx,
    rx_cap: u64,
    /// Largest record we write into the peer's ring, and read from ours.
    tx_max_record: usize,
    rx_max_inline: usize,
    credits: Credits,
    /// Where our last write record told the peer to put direct writes,
    /// and how many direct writes we posted (see proto's "Direct writes").
    peer_target: Option<(u32, u64)>,
    directs_sent: u16,
    /// Our write records whose bytes the peer has yet to copy into place.
    unconsumed: Unconsumed,
    /// The order of inbound records and direct writes.
    inbound: Inbound,
    recv_depth: u32,
    /// Receives we re-posted (cumulative), records consumed since the last
    /// reap of the receive CQ, and the state last told the peer.
    reposted: u32,
    unposted: u32,
    advertised: Ack,
    /// The control block's word last acted on.
    last_ctl: u64,
    staging: Staging,
    /// Signalled requests not yet completed: (id, staging mark).
    signaled: VecDeque<(u64, u64)>,
    posted: u64,
    completed: u64,
    last_signaled: u64,
    send_depth: u64,
    max_inline: usize,
    ready: VecDeque<Completion>,
    assembling: Option<BytesMut>,
    closed: bool,
    gone: Option<String>,
    eof_at: Option<Instant>,
    idle: u32,
    max_message: usize,
    op_timeout: Duration,
    /// Reads of at least this many bytes into unregistered memory land
    /// there directly (0: never; `RFX_VERBS_LANDING_MIN`).
    landing_min: usize,
    sock: TcpStream,
    epoll: Epoll,
}

impl VerbsEndpoint {
    pub(super) fn new(p: Parts<'_>) -> Result<Self, FabricError> {
        p.sock
            .set_nonblocking(true)
            .map_err(|e| FabricError::os("set_nonblocking", e))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(crate::error::nix_err("epoll_create"))?;
        epoll
            .add(p.qp.channel_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))
            .map_err(crate::error::nix_err("epoll_ctl"))?;
        epoll
            .add(
                p.sock.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, 2),
            )
            .map_err(crate::error::nix_err("epoll_ctl"))?;
        let max_inline = (p.qp.max_inline() as usize).min(INLINE_BUF);
        let rx_cap = p.ring_mr.region().len() as u64;
        Ok(VerbsEndpoint {
            tx: RingTx::new(p.peer.ring_cap),
            rx: RingRx::new(rx_cap, p.ring_key),
            rx_cap,
            tx_max_record: (p.peer.ring_cap / 4) as usize,
            rx_max_inline: proto::max_inline_in((rx_cap / 4) as usize),
            credits: Credits::new(p.peer.recv_depth),
            peer_target: None,
            directs_sent: 0,
            unconsumed: Unconsumed::default(),
            inbound: Inbound::default(),
            recv_depth: p.recv_depth,
            reposted: 0,
            unposted: 0,
            advertised: Ack::default(),
            last_ctl: 0,
            staging: Staging::new(p.stage_mr.region().len()),
            signaled: VecDeque::new(),
            posted: 0,
            completed: 0,
            last_signaled: 0,
            send_depth: u64::from(super::SEND_DEPTH),
            max_inline,
            ready: VecDeque::new(),
            assembling: None,
            closed: false,
            gone: None,
            eof_at: None,
            idle: 0,
            max_message: p.cfg.max_message,
            op_timeout: p.cfg.op_timeout,
            landing_min: p.cfg.verbs_landing_min,
            peer_ring: (p.peer.ring_addr, p.peer.ring_rkey, p.peer.ring_key),
            peer_ctl: (p.peer.ctl_addr, p.peer.ctl_rkey),
            peer_regions: p.peer.regions,
            qp: p.qp,
            ring_mr: p.ring_mr,
            ctl_mr: p.ctl_mr,
            stage_mr: p.stage_mr,
            read_mr: None,
            _exposed: p.exposed,
            pinned: VecDeque::new(),
            domain: p.domain,
            regions: p.regions,
            sock: p.sock,
            epoll,
        })
    }

    #[inline]
    fn dead(&self) -> Result<(), FabricError> {
        match &self.gone {
            Some(why) => Err(FabricError::PeerGone(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: FabricError) -> FabricError {
        if self.gone.is_none() {
            self.gone = Some(e.to_string());
        }
        e
    }

    // ---- posting -------------------------------------------------------

    /// Largest payload a record in the peer's ring may carry.
    fn tx_max_inline(&self) -> usize {
        proto::max_inline_in(self.tx_max_record)
    }

    /// Whether the device may place `len` bytes at `addr` now (see
    /// [`Unconsumed`]); if not by what we know, by the peer's control
    /// block, which it writes before a direct write while it owes us that
    /// news (a ping-pong learns it there, before the reply's completion).
    fn may_place_now(&mut self, rkey: u32, addr: u64, len: u64) -> Result<bool, FabricError> {
        if self.unconsumed.may_place(self.tx.acked(), rkey, addr, len) {
            return Ok(true);
        }
        self.read_control_block()?;
        Ok(self.unconsumed.may_place(self.tx.acked(), rkey, addr, len))
    }

    /// A write to the place of our previous write record: one
    /// WRITE_WITH_IMM of the bare bytes, carrying `imm` (see proto's
    /// "Direct writes"). Inline when small, else from the caller's
    /// registered memory (waiting for the device, as
    /// [`Self::write_registered`]) or from the staging ring. False if it
    /// does not fit one work request: the caller sends a record instead.
    fn write_direct(
        &mut self,
        addr: u64,
        device_rkey: u32,
        imm: u32,
        data: &[u8],
    ) -> Result<bool, FabricError> {
        let n = data.len();
        let inline = n <= self.max_inline;
        let registered = if inline {
            None
        } else {
            self.domain.registered(data)
        };
        let fits = match registered {
            Some(_) => n <= ZC_CHUNK,
            None => inline || n <= CHUNK,
        };
        if !fits {
            return Ok(false);
        }
        // A direct write carries no ack: records we consumed are acked
        // first (RC order: the peer sees it by the write's completion), or
        // the peer's next write to these bytes could not go direct.
        self.maybe_return_ack(true)?;
        let mut deadline = None;
        let staged = loop {
            if self.credits.available() > 0 && self.sq_room() {
                if inline || registered.is_some() {
                    break None;
                }
                if let Some(off) = self.staging.alloc(n) {
                    break Some(off);
                }
            }
            self.stall(&mut deadline, "verbs write (credits or queue full)")?;
        };
        let took = self.credits.take();
        debug_assert!(took, "a credit was checked above");
        let kind = SendKind::WriteImm {
            remote_addr: addr,
            rkey: device_rkey,
            imm,
        };
        let (src, signal) = match (staged, &registered) {
            (Some(off), _) => {
                self.stage_mr.region().write_at(off, data)?;
                let signal = self.signal_due() || self.staging.over_half();
                (Src::Staged(off, n), signal)
            }
            (None, Some((mr, off))) => (Src::Registered(mr.as_ref(), *off, n), true),
            (None, None) => (Src::Inline(data), self.signal_due()),
        };
        self.post(kind, src, signal)?;
        // Counted as soon as it is posted: every later record says so.
        self.directs_sent = self.directs_sent.wrapping_add(1);
        if let Some((mr, _)) = registered {
            let id = self.posted - 1;
            self.pinned.push_back((id, mr));
            self.wait_completed(id, &mut deadline)?;
        }
        Ok(true)
    }

    /// The peer device's key for `len` bytes at `addr` under rfx's `rkey`
    /// (the handshake told which device rkey goes with each region).
    fn device_rkey(&self, rkey: u32, addr: u64, len: u64) -> Result<u32, FabricError> {
        self.peer_regions
            .iter()
            .find(|r| r.buffer.rkey == rkey && r.buffer.contains(addr, len))
            .map(|r| r.device_rkey)
            .ok_or(FabricError::RemoteAccess {
                rkey,
                addr,
                len,
                reason: "no registered peer region covers the access",
            })
    }

    /// A large write from memory that is registered already (a slice of a
    /// `MemoryRegion` of this process): no copy. The caller may reuse its
    /// buffer when we return, so we wait for the device to have sent it.
    fn write_registered(
        &mut self,
        mr: &Arc<Mr>,
        off: usize,
        len: usize,
        addr: u64,
        device_rkey: u32,
        hdr: Header,
    ) -> Result<(), FabricError> {
        let mut deadline = None;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZC_CHUNK);
            while !self.sq_room() {
                self.stall(&mut deadline, "verbs write (send queue full)")?;
            }
            let kind = SendKind::Write {
                remote_addr: addr + done as u64,
                rkey: device_rkey,
            };
            let last = done + n == len;
            self.post(kind, Src::Registered(mr.as_ref(), off + done, n), last)?;
            done += n;
        }
        let id = self.posted - 1;
        self.pinned.push_back((id, mr.clone()));
        self.push(hdr, &[], false)?;
        self.wait_completed(id, &mut deadline)
    }

    /// Waits until the device completed request `id` (a write from the
    /// caller's registered memory, which the caller may reuse afterwards).
    fn wait_completed(
        &mut self,
        id: u64,
        deadline: &mut Option<Instant>,
    ) -> Result<(), FabricError> {
        while self.completed <= id {
            self.stall(deadline, "verbs write (waiting for the device)")?;
        }
        Ok(())
    }

    /// A read straight into registered memory of this process (`len`
    /// bytes at `off` of `mr`): no copy. The pieces go back to back, only
    /// the last signalled (the send queue completes in order, and a failed
    /// request completes with an error whether signalled or not).
    fn read_registered(
        &mut self,
        mr: &Arc<Mr>,
        off: usize,
        len: usize,
        addr: u64,
        device_rkey: u32,
    ) -> Result<(), FabricError> {
        let mut last = None;
        for (raddr, done, n) in proto::read_pieces(addr, len, ZC_CHUNK) {
            let signal = done + n == len;
            match self.post_read(
                raddr,
                device_rkey,
                Src::Registered(mr, off + done, n),
                signal,
            ) {
                Ok(id) => last = Some(id),
                Err(e) => {
                    if let Some(id) = last {
                        // Earlier pieces are with the device, writing the
                        // caller's memory: the endpoint cannot go on.
                        self.pinned.push_back((id, mr.clone()));
                        self.end_reading(&e);
                    }
                    return Err(e);
                }
            }
        }
        let last = last.expect("a non-empty read has at least one piece");
        // The registration stays alive until the device is done with it,
        // even if we return early.
        self.pinned.push_back((last, mr.clone()));
        self.wait_read(last)
    }

    /// RDMA READs of `out.len()` bytes at the peer's `addr` under the
    /// device key `device_rkey`: straight into `out` when it lies in
    /// registered memory of this process or is large enough to register
    /// for the call (`landing_min`), else through the bounce buffer.
    fn read_device(
        &mut self,
        addr: u64,
        device_rkey: u32,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        if out.is_empty() {
            return Ok(());
        }
        if let Some((mr, off)) = self.domain.registered(out) {
            return self.read_registered(&mr, off, out.len(), addr, device_rkey);
        }
        if self.landing_min > 0 && out.len() >= self.landing_min {
            return self.read_landing(addr, device_rkey, out);
        }
        self.read_bounced(addr, device_rkey, out)
    }

    /// Reads into `out` registered for the call, piece by piece: each
    /// piece's registration overlaps the READ of the one before, and
    /// every piece is deregistered before this returns (so the device
    /// writes nothing into `out` afterwards, even after a failure). A
    /// registration the kernel refuses (a memlock limit) sends the rest
    /// through the bounce buffer.
    fn read_landing(
        &mut self,
        addr: u64,
        device_rkey: u32,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        let len = out.len();
        let mut landed = Vec::with_capacity(len.div_ceil(proto::LANDING_PIECE));
        let mut last = None;
        let mut done = 0usize;
        for piece in out.chunks_mut(proto::LANDING_PIECE) {
            let mr = match LandingMr::register(&self.domain.pd, piece) {
                Ok(mr) => mr,
                Err(e) => {
                    tracing::debug!(done, len, "verbs read lands in the bounce buffer: {e}");
                    break;
                }
            };
            match self.post_read(addr + done as u64, device_rkey, Src::Landing(&mr), true) {
                Ok(id) => last = Some(id),
                Err(e) => {
                    // Pieces still in flight fail once deregistered below:
                    // the queue pair is done for.
                    if last.is_some() {
                        self.end_reading(&e);
                    }
                    return Err(e);
                }
            }
            done += mr.len();
            landed.push(mr);
        }
        if let Some(id) = last {
            // RC completes a queue's requests in order: the last READ's
            // completion says every piece landed.
            self.wait_read(id)?;
        }
        drop(landed);
        if done < len {
            self.read_bounced(addr + done as u64, device_rkey, &mut out[done..])?;
        }
        Ok(())
    }

    /// Reads through the endpoint's registered bounce buffer, a piece at
    /// a time, each copied into `out`.
    fn read_bounced(
        &mut self,
        addr: u64,
        device_rkey: u32,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        let have = self.read_mr.as_ref().map_or(0, |m| m.region().len());
        let size = proto::read_bounce_size(have, out.len());
        let mr = match &self.read_mr {
            Some(mr) if size <= have => mr.clone(),
            _ => {
                // No READ into the old buffer is outstanding (reads complete
                // before they return, or the endpoint failed; `pinned` keeps
                // it registered until then anyway).
                self.read_mr = None;
                let region = crate::mr::MemoryRegion::new(size)?;
                let mr = Arc::new(Mr::register(&self.domain.pd, region)?);
                tracing::debug!(size, "verbs read bounce buffer registered");
                self.read_mr = Some(mr.clone());
                mr
            }
        };
        for (raddr, off, n) in proto::read_pieces(addr, out.len(), size) {
            let id = self.post_read(raddr, device_rkey, Src::Registered(&mr, 0, n), true)?;
            self.pinned.push_back((id, mr.clone()));
            self.wait_read(id)?;
            mr.region().read_at(0, &mut out[off..off + n])?;
        }
        Ok(())
    }

    /// Posts one RDMA READ from the peer's `raddr` into `dst` (registered
    /// memory: a range of an `Mr` or a landing registration), as many
    /// bytes as `dst` holds, once the send queue has room; returns its
    /// request id.
    fn post_read(
        &mut self,
        raddr: u64,
        device_rkey: u32,
        dst: Src<'_>,
        signal: bool,
    ) -> Result<u64, FabricError> {
        let mut deadline = None;
        while !self.sq_room() {
            self.stall(&mut deadline, "verbs read (send queue full)")?;
        }
        let kind = SendKind::Read {
            remote_addr: raddr,
            rkey: device_rkey,
        };
        self.post(kind, dst, signal)?;
        Ok(self.posted - 1)
    }

    /// Waits for request `id` (a READ) to complete, bounded by the op
    /// timeout, while consuming the inbound ring: records that arrive are
    /// kept, in order, for [`Self::poll`], and our acks keep the peer's
    /// writes flowing (the peer's device serves our READ without its CPU,
    /// so two peers reading each other never wait on one another).
    ///
    /// A failed READ (the peer's device refused it, the peer died, the
    /// queue pair broke) leaves the queue pair in the error state: that is
    /// [`FabricError::PeerGone`] and ends the endpoint. So does running out
    /// of time, since the device may still write the destination.
    fn wait_read(&mut self, id: u64) -> Result<(), FabricError> {
        let r = self.wait_read_loop(id);
        if let Err(e) = &r {
            if self.completed <= id {
                // Whatever failed, the device still holds the READ.
                self.end_reading(e);
            }
        }
        r
    }

    /// Ends the endpoint after `e` failed a read the device still holds
    /// (it may yet write the destination).
    fn end_reading(&mut self, e: &FabricError) {
        if self.gone.is_none() {
            self.gone = Some(format!("a read failed while still posted: {e}"));
        }
    }

    fn wait_read_loop(&mut self, id: u64) -> Result<(), FabricError> {
        let mut deadline = None;
        let mut rounds = 0u32;
        loop {
            self.reap_send()?;
            if self.completed > id {
                return Ok(());
            }
            while let Some(done) = self.next_event()? {
                self.ready.extend(done);
            }
            rounds = rounds.wrapping_add(1);
            if rounds % HOUSEKEEP_EVERY == 0 {
                self.housekeeping()?;
            }
            if rounds % READ_CHECK_EVERY == 0 {
                let now = Instant::now();
                if now >= *deadline.get_or_insert(now + self.op_timeout) {
                    return Err(self.fail(FabricError::Timeout {
                        op: "verbs read",
                        after: self.op_timeout,
                    }));
                }
                self.check_peer();
                self.gone_now()?;
            }
            std::hint::spin_loop();
        }
    }

    /// Test hook: direct writes posted so far (wrapping).
    #[cfg(test)]
    pub(super) fn directs_sent(&self) -> u16 {
        self.directs_sent
    }

    /// Test hook: makes every device rkey of the peer's regions wrong, as
    /// a peer that lied in its set-up message (or deregistered) would, so
    /// that the peer's device refuses our one-sided accesses.
    #[cfg(test)]
    pub(super) fn corrupt_peer_device_rkeys(&mut self) {
        for r in &mut self.peer_regions {
            r.device_rkey ^= 0x5a5a_0000;
        }
    }

    /// Bytes of the read bounce buffer, 0 before the first read that
    /// needed it.
    #[cfg(test)]
    pub(super) fn bounce_len(&self) -> usize {
        self.read_mr.as_ref().map_or(0, |m| m.region().len())
    }

    /// Selective signalling: one request in [`SIGNAL_EVERY`] asks for a
    /// completion (which also completes every request before it).
    #[inline]
    fn signal_due(&self) -> bool {
        self.posted - self.last_signaled >= SIGNAL_EVERY
    }

    #[inline]
    fn sq_room(&self) -> bool {
        self.posted - self.completed + 1 < self.send_depth
    }

    /// One round of waiting for credits, ring or queue space: makes
    /// progress on both directions (so two peers posting at each other never
    /// deadlock), and gives up after the op timeout or when the peer died.
    fn stall(
        &mut self,
        deadline: &mut Option<Instant>,
        op: &'static str,
    ) -> Result<(), FabricError> {
        self.progress()?;
        self.dead()?;
        if self.closed {
            return Err(FabricError::PeerGone("peer closed the connection".into()));
        }
        let now = Instant::now();
        let d = *deadline.get_or_insert(now + self.op_timeout);
        if now >= d {
            return Err(FabricError::Timeout {
                op,
                after: self.op_timeout,
            });
        }
        self.check_peer();
        if let Some(t) = self.eof_at {
            if t.elapsed() >= GRACE {
                return Err(self.fail(FabricError::PeerGone(
                    "peer closed the connection while we waited to send".into(),
                )));
            }
        }
        std::hint::spin_loop();
        Ok(())
    }

    /// Writes one record into the peer's ring (one RDMA WRITE_WITH_IMM),
    /// once the ring has room and the peer a receive for it.
    fn push(
        &mut self,
        mut hdr: Header,
        payload: &[u8],
        force_signal: bool,
    ) -> Result<(), FabricError> {
        let size = proto::record_size(payload.len());
        debug_assert!(size <= self.tx_max_record);
        let inline = size <= self.max_inline;
        let mut deadline = None;
        let staged = loop {
            if self.credits.available() > 0 && self.sq_room() && self.tx.fits(size) {
                if inline {
                    break None;
                }
                if let Some(off) = self.staging.alloc(size) {
                    break Some(off);
                }
            }
            self.stall(
                &mut deadline,
                "verbs post (peer ring, credits or queue full)",
            )?;
        };
        let pos = self.tx.reserve(size).expect("room was checked above");
        let took = self.credits.take();
        debug_assert!(took, "a credit was checked above");
        hdr.ack = self.ack_now();
        hdr.directs = self.directs_sent;
        self.advertised = hdr.ack;
        let (ring_addr, ring_rkey, key) = self.peer_ring;
        let head = hdr.encode(key, pos);
        let kind = SendKind::WriteImm {
            remote_addr: ring_addr + self.tx.offset(pos),
            rkey: ring_rkey,
            imm: RING_IMM,
        };
        if matches!(hdr.kind, Kind::Write | Kind::WriteDirect) {
            // Set before posting: a failed post ends the endpoint anyway.
            self.peer_target = Some((hdr.rkey, hdr.addr));
        }
        if hdr.kind == Kind::Write {
            self.unconsumed
                .push(pos + size as u64, hdr.rkey, hdr.addr, u64::from(hdr.len));
        }
        let mut sum = Checksum::new(key, pos);
        let body = (size - TRAILER) / 8;
        match staged {
            None => {
                let mut buf = [0u8; INLINE_BUF];
                let words = proto::record_words(&head, payload, size);
                for (chunk, w) in buf[..size - TRAILER].chunks_exact_mut(8).zip(words) {
                    sum.word(w);
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
                buf[size - TRAILER..size].copy_from_slice(&sum.finish().to_le_bytes());
                let signal = force_signal || self.signal_due();
                self.post(kind, Src::Inline(&buf[..size]), signal)
            }
            Some(off) => {
                self.stage_mr
                    .write_record(off, &head, payload, body, &mut sum)?;
                let check = sum.finish().to_le_bytes();
                self.stage_mr
                    .region()
                    .map()
                    .write_array(off + size - TRAILER, &check)?;
                let signal = force_signal || self.signal_due() || self.staging.over_half();
                self.post(kind, Src::Staged(off, size), signal)
            }
        }
    }

    fn post(&mut self, kind: SendKind, src: Src<'_>, signaled: bool) -> Result<(), FabricError> {
        let id = self.posted;
        let src = match src {
            Src::Inline(a) => Source::Inline(a, &[]),
            Src::Staged(off, len) => Source::Registered(&self.stage_mr, off, len),
            Src::Registered(mr, off, len) => Source::Registered(mr, off, len),
            Src::Landing(mr) => Source::Landing(mr),
        };
        if let Err(e) = self.qp.post_send(id, kind, src, signaled) {
            return Err(self.fail(e));
        }
        self.posted += 1;
        if signaled {
            self.signaled.push_back((id, self.staging.mark()));
            self.last_signaled = id;
        }
        // Keep the send queue from filling with unreaped completions.
        if self.posted - self.completed > self.send_depth / 2 {
            self.reap_send()?;
        }
        Ok(())
    }

    /// Our consumer state, as the peer needs it.
    #[inline]
    fn ack_now(&self) -> Ack {
        Ack {
            head_units: self.rx.head_units(),
            reposted: self.reposted,
        }
    }

    /// Tells the peer how far we consumed and how many receives we
    /// re-posted, by an RDMA WRITE into its control block, when it may be
    /// short of ring space or credits and we have sent it nothing lately
    /// (every record we send carries the same news).
    fn maybe_return_ack(&mut self, idle: bool) -> Result<(), FabricError> {
        let now = self.ack_now();
        let consumed =
            u64::from(now.head_units.wrapping_sub(self.advertised.head_units)) * REC_ALIGN as u64;
        let reposted = now.reposted.wrapping_sub(self.advertised.reposted);
        // Idle with records consumed but not acknowledged: the peer may wait
        // for that news (a large write behind a small one, see proto's
        // "Direct writes").
        let due = consumed >= self.rx_cap / 4
            || reposted >= self.recv_depth / 2
            || (idle && consumed > 0);
        if !due || !self.sq_room() {
            return Ok(());
        }
        let block = now.control_block();
        let (addr, rkey) = self.peer_ctl;
        let signal = self.signal_due();
        self.post(
            SendKind::Write {
                remote_addr: addr,
                rkey,
            },
            Src::Inline(&block),
            signal,
        )?;
        self.advertised = now;
        Ok(())
    }

    // ---- completions ---------------------------------------------------

    /// Frees send resources of the requests the device completed.
    fn reap_send(&mut self) -> Result<(), FabricError> {
        while !self.signaled.is_empty() {
            let mut failed = None;
            let mut done = None;
            let n = self
                .qp
                .poll_send(16, |wc| {
                    if !wc.ok && failed.is_none() {
                        failed = Some(wc);
                    }
                    // The send queue completes in order.
                    done = Some(wc.wr_id);
                })
                .map_err(|e| self.fail(e))?;
            if let Some(wc) = failed {
                let e = FabricError::PeerGone(if wc.is_remote_access_error() {
                    format!(
                        "the peer's device refused a one-sided access ({}); \
                         the queue pair is in the error state",
                        wc.status_text()
                    )
                } else {
                    format!("RDMA operation failed: {}", wc.status_text())
                });
                return Err(self.fail(e));
            }
            if let Some(last) = done {
                while let Some(&(id, mark)) = self.signaled.front() {
                    if id > last {
                        break;
                    }
                    self.signaled.pop_front();
                    self.staging.release(mark);
                    self.completed = id + 1;
                }
            }
            if n < 16 {
                break;
            }
        }
        while self
            .pinned
            .front()
            .is_some_and(|(id, _)| *id < self.completed)
        {
            self.pinned.pop_front();
        }
        Ok(())
    }

    /// Reaps the receive CQ: each of the peer's WRITE_WITH_IMMs (a record,
    /// or a direct write, filed with [`Inbound`]) used one receive; posts
    /// as many new ones. Returns the completions reaped.
    fn poll_recv_cq(&mut self) -> Result<usize, FabricError> {
        let mut total = 0u32;
        loop {
            let mut bad = None;
            let inbound = &mut self.inbound;
            let n = self
                .qp
                .poll_recv(16, |wc| {
                    if !wc.ok || !wc.is_recv {
                        bad.get_or_insert(wc);
                    } else {
                        inbound.on_receive(wc.imm, wc.byte_len);
                    }
                })
                .map_err(|e| self.fail(e))?;
            if let Some(wc) = bad {
                let e = if wc.ok {
                    FabricError::Malformed(WireError::Invalid("unexpected receive completion"))
                } else {
                    FabricError::PeerGone(format!("receive failed: {}", wc.status_text()))
                };
                return Err(self.fail(e));
            }
            total += n as u32;
            if n < 16 || total >= self.recv_depth {
                break;
            }
        }
        self.unposted += total;
        if self.unposted >= REPOST_BATCH.min(self.recv_depth) {
            let n = std::mem::take(&mut self.unposted);
            self.qp
                .post_empty_recvs(n as usize)
                .map_err(|e| self.fail(e))?;
            self.reposted = self.reposted.wrapping_add(n);
        }
        Ok(total as usize)
    }

    /// The peer's news about our records (ring space, credits).
    fn handle_ack(&mut self, ack: Ack) -> Result<(), FabricError> {
        self.tx.ack(ack.head_units);
        self.credits
            .handle_reposted(ack.reposted)
            .map_err(|e| self.fail(FabricError::Malformed(e)))
    }

    /// Reaps both CQs, reads the control block, returns our ack if due.
    fn housekeeping(&mut self) -> Result<(), FabricError> {
        self.dead()?;
        self.reap_send()?;
        self.poll_recv_cq()?;
        self.read_control_block()?;
        self.maybe_return_ack(true)
    }

    /// Applies the ack the peer last wrote into our control block, if new.
    fn read_control_block(&mut self) -> Result<(), FabricError> {
        let map = self.ctl_mr.region().map();
        let (a, b) = (
            map.atomic_u64(0).load(Ordering::Acquire),
            map.atomic_u64(8).load(Ordering::Acquire),
        );
        // Only news counts: the initial zeros, or a block read before, are
        // not re-applied (wrapping counters must not meet stale values).
        if a != self.last_ctl {
            if let Some(ack) = Ack::from_control_block(a, b) {
                self.last_ctl = a;
                self.handle_ack(ack)?;
            }
        }
        Ok(())
    }

    /// Everything there is to do without blocking: consume the inbound
    /// ring into the ready queue, then housekeeping.
    fn progress(&mut self) -> Result<(), FabricError> {
        while let Some(done) = self.next_event()? {
            self.ready.extend(done);
        }
        self.housekeeping()
    }

    /// The next inbound event in the peer's order (a direct write, or the
    /// record at the ring's head): `None` if nothing is complete, else the
    /// completion it finishes, if any.
    ///
    /// Every record and direct write completes a receive, after its bytes
    /// are placed: the receive CQ says what is there, so an idle round is
    /// one look at the CQ, and the ring is read only for a record the CQ
    /// announced.
    fn next_event(&mut self) -> Result<Option<Option<Completion>>, FabricError> {
        for _ in 0..2 {
            if let Some(c) = self.take_direct()? {
                return Ok(Some(Some(c)));
            }
            if self.inbound.records_pending() {
                if let Some(done) = self.consume()? {
                    return Ok(Some(done));
                }
            }
            if self.poll_recv_cq()? == 0 {
                break;
            }
        }
        Ok(None)
    }

    /// The next direct write, if every record posted before it was taken.
    fn take_direct(&mut self) -> Result<Option<Completion>, FabricError> {
        let next = self
            .inbound
            .next_direct()
            .map_err(|e| self.fail(FabricError::Malformed(e)))?;
        let Some((d, rkey, addr)) = next else {
            return Ok(None);
        };
        let resolved = self
            .regions
            .resolve(rkey, addr, u64::from(d.len))
            .map(|(_, offset)| offset);
        let offset =
            resolved.map_err(|why| self.fail(FabricError::Malformed(WireError::Invalid(why))))?;
        self.maybe_return_ack(false)?;
        Ok(Some(Completion::Write(WriteCompletion {
            imm: d.imm,
            rkey,
            offset: offset as u64,
            len: d.len,
        })))
    }

    /// Consumes one record: `None` if none is complete at the head, else
    /// the completion it finishes, if any.
    fn consume(&mut self) -> Result<Option<Option<Completion>>, FabricError> {
        self.dead()?;
        let map = self.ring_mr.region().map();
        let mut off = self.rx.offset();
        let expected = self.rx.expected();
        if map.atomic_u64(off).load(Ordering::Acquire) != expected {
            // The producer may have skipped the end of the ring: then the
            // next lap starts with a record. Seeing it proves a skip only if
            // the head is still empty afterwards (a record at the head was
            // posted earlier, so it lands first).
            match self.rx.next_lap() {
                Some((pos, stamp)) if map.atomic_u64(0).load(Ordering::Acquire) == stamp => {
                    if map.atomic_u64(off).load(Ordering::Acquire) != expected {
                        self.rx.skip_to(pos);
                        off = 0;
                    }
                }
                _ => return Ok(None),
            }
        }
        // A stamp is there: the record may still be arriving. It counts
        // only once its checksum (over the header bytes read here and the
        // rest read in place) matches; a header that does not decode or a
        // size beyond the ring end is a record not finished yet.
        let head = map.read_array::<REC_HDR>(off)?;
        let Ok(hdr) = Header::decode(&head, self.rx_max_inline) else {
            return Ok(None);
        };
        let size = hdr.record_size();
        if size > self.rx.to_end() {
            return Ok(None);
        }
        let mut sum = Checksum::new(self.rx.key(), self.rx.head());
        sum.bytes(&head);
        self.ring_mr
            .fold_words(off + REC_HDR, (size - REC_HDR - TRAILER) / 8, |w| {
                sum.word(w)
            })?;
        let trailer = u64::from_le(map.atomic_u64(off + size - TRAILER).load(Ordering::Acquire));
        if sum.finish() != trailer || !self.inbound.record_ready(hdr.directs) {
            // Not complete, or direct writes posted before it are still
            // to be delivered (their completions are in the CQ).
            return Ok(None);
        }
        let done = self.take_record(&hdr, off).map_err(|e| self.fail(e))?;
        self.inbound.record_taken(
            matches!(hdr.kind, Kind::Write | Kind::WriteDirect).then_some((hdr.rkey, hdr.addr)),
        );
        self.rx.advance(size);
        self.maybe_return_ack(false)?;
        Ok(Some(done))
    }

    /// Acts on a complete record at ring offset `off`.
    fn take_record(&mut self, hdr: &Header, off: usize) -> Result<Option<Completion>, FabricError> {
        self.handle_ack(hdr.ack)?;
        let bad = |why| FabricError::Malformed(WireError::Invalid(why));
        let payload = off + REC_HDR;
        Ok(match hdr.kind {
            Kind::Write | Kind::WriteDirect => {
                let (target, offset) = self
                    .regions
                    .resolve(hdr.rkey, hdr.addr, u64::from(hdr.len))
                    .map_err(bad)?;
                if hdr.kind == Kind::Write {
                    self.ring_mr
                        .copy_to(payload, hdr.len as usize, target, offset)?;
                }
                Some(Completion::Write(WriteCompletion {
                    imm: hdr.imm,
                    rkey: hdr.rkey,
                    offset: offset as u64,
                    len: hdr.len,
                }))
            }
            Kind::SendMore | Kind::SendLast => {
                let n = hdr.len as usize;
                let mut buf = self.assembling.take().unwrap_or_default();
                if buf.len() + n > self.max_message {
                    return Err(FabricError::Malformed(WireError::TooLarge {
                        len: (buf.len() + n) as u64,
                        max: self.max_message as u64,
                    }));
                }
                let start = buf.len();
                buf.resize(start + n, 0);
                self.ring_mr.region().read_at(payload, &mut buf[start..])?;
                if hdr.kind == Kind::SendMore {
                    self.assembling = Some(buf);
                    None
                } else {
                    Some(Completion::Recv(buf.freeze()))
                }
            }
            Kind::Close => {
                self.closed = true;
                None
            }
        })
    }

    /// Looks at the control socket (one syscall): EOF or an error means the
    /// peer process is gone or closed; completions still in flight get
    /// [`GRACE`] to arrive before we say so.
    fn check_peer(&mut self) {
        if self.eof_at.is_some() {
            return;
        }
        let mut b = [0u8; 1];
        let gone = match self.sock.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        };
        if gone {
            self.eof_at = Some(Instant::now());
        }
    }

    /// `Err(PeerGone)` once the peer is known gone and nothing is left.
    fn gone_now(&mut self) -> Result<(), FabricError> {
        if self.closed {
            return Err(self.fail(FabricError::PeerGone("peer closed the connection".into())));
        }
        if let Some(t) = self.eof_at {
            if t.elapsed() >= GRACE {
                return Err(self.fail(FabricError::PeerGone(
                    "peer process exited or closed the connection".into(),
                )));
            }
        }
        Ok(())
    }
}

impl Drop for VerbsEndpoint {
    fn drop(&mut self) {
        if self.gone.is_some() || self.closed || self.eof_at.is_some() {
            return;
        }
        // Orderly close: a signalled Close record, and wait (bounded) until
        // it completed, so that everything posted before has landed when
        // the QP is destroyed.
        self.op_timeout = self.op_timeout.min(Duration::from_secs(1));
        if self.push(Header::new(Kind::Close), &[], true).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.completed < self.last_signaled + 1 && Instant::now() < deadline {
            if self.reap_send().is_err() {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

impl Provider for VerbsEndpoint {
    fn write(&mut self, addr: u64, rkey: u32, imm: u32, data: &[u8]) -> Result<(), FabricError> {
        self.dead()?;
        let device_rkey = self.device_rkey(rkey, addr, data.len() as u64)?;
        let len = data.len() as u64;
        if imm != RING_IMM
            && self.peer_target == Some((rkey, addr))
            && self.may_place_now(rkey, addr, len)?
            && self.write_direct(addr, device_rkey, imm, data)?
        {
            return Ok(());
        }
        let hdr = Header {
            len: data.len() as u32,
            imm,
            rkey,
            addr,
            ..Header::new(Kind::Write)
        };
        if data.len() <= WRITE_IN_RECORD_MAX.min(self.tx_max_inline()) {
            // One work request: the bytes travel inside the record.
            return self.push(hdr, data, false);
        }
        let hdr = Header {
            kind: Kind::WriteDirect,
            ..hdr
        };
        // The device places these bytes on arrival: not before the peer
        // copied the bytes of earlier write records to the same place.
        let mut deadline = None;
        while !self.unconsumed.may_place(self.tx.acked(), rkey, addr, len) {
            self.stall(
                &mut deadline,
                "verbs write (peer to consume earlier writes)",
            )?;
        }
        if let Some((mr, off)) = self.domain.registered(data) {
            return self.write_registered(&mr, off, data.len(), addr, device_rkey, hdr);
        }
        // The bytes go straight into the peer's region, from the staging
        // ring (the caller's buffer is free when we return), then the
        // header-only record: RC order makes the data land first.
        let mut deadline = None;
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            let off = loop {
                if self.sq_room() {
                    if let Some(off) = self.staging.alloc(chunk.len()) {
                        break off;
                    }
                }
                self.stall(&mut deadline, "verbs write (staging full)")?;
            };
            self.stage_mr.region().write_at(off, chunk)?;
            let kind = SendKind::Write {
                remote_addr: addr + (i * CHUNK) as u64,
                rkey: device_rkey,
            };
            let signal = self.signal_due() || self.staging.over_half();
            self.post(kind, Src::Staged(off, chunk.len()), signal)?;
        }
        self.push(hdr, &[], false)
    }

    /// A one-sided read: RDMA READs of the peer's memory (the peer's CPU
    /// takes no part), always signalled, into a registered bounce buffer
    /// then copied into `out`; or straight into `out` when it lies in
    /// registered memory of this process. Blocks until the bytes are in
    /// `out`, draining inbound records meanwhile (see [`Self::wait_read`]).
    fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError> {
        self.dead()?;
        let device_rkey = self.device_rkey(rkey, addr, out.len() as u64)?;
        self.read_device(addr, device_rkey, out)
    }

    /// Registers the caller's bytes for remote read (see
    /// [`LentMr::register`]); the peer reads them by `read_lent`.
    fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        self.dead()?;
        let mr = LentMr::register(&self.domain.pd, ptr, len)?;
        let lent = LentBuffer {
            addr: ptr as u64,
            len: len as u64,
            key: u64::from(mr.rkey()),
        };
        Ok(Some(Loan::new(lent, Box::new(mr))))
    }

    /// An RDMA READ of memory the peer lent, with the device key it sent:
    /// the peer's device checks key and range (a refusal breaks the queue
    /// pair: `PeerGone`).
    fn read_lent(&mut self, addr: u64, key: u64, out: &mut [u8]) -> Result<(), FabricError> {
        self.dead()?;
        let device_rkey = u32::try_from(key).map_err(|_| FabricError::RemoteAccess {
            rkey: 0,
            addr,
            len: out.len() as u64,
            reason: "a verbs key has 32 bits",
        })?;
        self.read_device(addr, device_rkey, out)
    }

    fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        self.dead()?;
        if data.is_empty() {
            return self.push(Header::new(Kind::SendLast), &[], false);
        }
        let max = self.tx_max_inline();
        let mut chunks = data.chunks(max).peekable();
        while let Some(chunk) = chunks.next() {
            let kind = if chunks.peek().is_some() {
                Kind::SendMore
            } else {
                Kind::SendLast
            };
            let hdr = Header {
                len: chunk.len() as u32,
                ..Header::new(kind)
            };
            self.push(hdr, chunk, false)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if let Some(c) = self.ready.pop_front() {
            return Ok(Some(c));
        }
        // Send fragments complete nothing by themselves: keep consuming.
        while let Some(done) = self.next_event()? {
            self.idle = 0;
            if done.is_some() {
                return Ok(done);
            }
        }
        self.idle += 1;
        if self.idle % HOUSEKEEP_EVERY == 0 {
            self.housekeeping()?;
        }
        if self.idle >= LIVENESS_EVERY || self.eof_at.is_some() {
            self.idle = 0;
            self.check_peer();
        }
        self.gone_now()?;
        Ok(None)
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Arms the receive CQ (every record and direct write raises a receive
    /// completion); false
    /// if there is work already (or the peer is leaving, which only polling
    /// can finish).
    fn arm(&mut self) -> Result<bool, FabricError> {
        if !self.ready.is_empty() || self.closed || self.gone.is_some() {
            return Ok(false);
        }
        self.qp.arm_recv().map_err(|e| self.fail(e))?;
        // A record that completed before the arming raises no event. One
        // still arriving completes its receive after the arming: it does.
        self.progress()?;
        if !self.ready.is_empty() || self.closed {
            return Ok(false);
        }
        self.check_peer();
        Ok(self.eof_at.is_none())
    }

    fn disarm(&mut self) {
        self.qp.drain_events();
    }

    fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
        if !self.arm()? {
            if self.eof_at.is_some() && self.ready.is_empty() {
                // Let in-flight completions arrive during the grace period.
                std::thread::sleep(timeout.min(Duration::from_millis(5)));
            }
            return Ok(());
        }
        let ms = timeout.as_millis().clamp(1, u16::MAX as u128) as u16;
        let mut events = [EpollEvent::empty(); 2];
        let r = self.epoll.wait(&mut events, EpollTimeout::from(ms));
        self.disarm();
        match r {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(FabricError::os("epoll_wait", std::io::Error::from(e))),
        }
    }
}
