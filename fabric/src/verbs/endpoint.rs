//! The verbs endpoint: an RC queue pair driven by the bookkeeping of
//! [`super::proto`].

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::proto::{self, Credits, ExposedRegion, Header, Kind, SetupMsg, Staging, HDR_LEN};
use super::sys::{Mr, QueuePair, SendKind, Source, Wc};
use super::STAGING;
use crate::completion::{Completion, WriteCompletion};
use crate::config::Config;
use crate::error::FabricError;
use crate::mr::RegionTable;
use crate::wire::WireError;

/// Inline requests between two signalled ones.
const SIGNAL_EVERY: u64 = 16;
/// Largest RDMA WRITE staged at once.
const CHUNK: usize = STAGING / 4;
/// Empty polls between two liveness checks of the peer (one syscall).
const LIVENESS_EVERY: u32 = 2048;
/// After the control socket closed: how long completions still in flight
/// may take to show up before the peer is declared gone.
const GRACE: Duration = Duration::from_millis(50);

/// Where a request's bytes come from (resolved against the staging Mr).
#[derive(Debug, Clone, Copy)]
enum Src<'a> {
    Inline(&'a [u8], &'a [u8]),
    Staged(usize, usize),
}

/// What [`super::establish`] hands over.
pub(super) struct Parts<'a> {
    pub(super) qp: QueuePair,
    pub(super) recv_mr: Mr,
    pub(super) stage_mr: Mr,
    pub(super) credit_mr: Mr,
    pub(super) exposed: Vec<Arc<Mr>>,
    pub(super) regions: RegionTable,
    pub(super) peer: SetupMsg,
    pub(super) sock: TcpStream,
    pub(super) cfg: &'a Config,
}

/// Fields drop in declaration order: the QP goes first, so the device
/// never touches a registration or its memory after they are freed.
#[derive(Debug)]
pub(crate) struct VerbsEndpoint {
    qp: QueuePair,
    recv_mr: Mr,
    stage_mr: Mr,
    credit_mr: Mr,
    _exposed: Vec<Arc<Mr>>,
    regions: RegionTable,
    peer_regions: Vec<ExposedRegion>,
    peer_credit: (u64, u32),
    sock: TcpStream,
    epoll: Epoll,
    recv_depth: u32,
    recv_len: usize,
    peer_recv_len: usize,
    credits: Credits,
    /// Receives we re-posted (cumulative), and the count last told the peer.
    reposted: u32,
    advertised: u32,
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
    scratch: Vec<(u64, u64)>,
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
        let max_inline = p.qp.max_inline() as usize;
        Ok(VerbsEndpoint {
            recv_depth: super::RECV_DEPTH,
            recv_len: super::RECV_LEN,
            peer_recv_len: p.peer.recv_len as usize,
            credits: Credits::new(p.peer.recv_depth),
            reposted: 0,
            advertised: 0,
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
            scratch: Vec::new(),
            peer_credit: (p.peer.credit_addr, p.peer.credit_rkey),
            peer_regions: p.peer.regions,
            qp: p.qp,
            recv_mr: p.recv_mr,
            stage_mr: p.stage_mr,
            credit_mr: p.credit_mr,
            _exposed: p.exposed,
            regions: p.regions,
            sock: p.sock,
            epoll,
        })
    }

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

    pub(crate) fn write(
        &mut self,
        addr: u64,
        rkey: u32,
        imm: u32,
        data: &[u8],
    ) -> Result<(), FabricError> {
        self.dead()?;
        let len = data.len() as u64;
        let device_rkey = self
            .peer_regions
            .iter()
            .find(|r| r.buffer.rkey == rkey && r.buffer.contains(addr, len))
            .map(|r| r.device_rkey)
            .ok_or(FabricError::RemoteAccess {
                rkey,
                addr,
                len,
                reason: "no registered peer region covers the access",
            })?;
        let hdr = Header {
            imm,
            rkey,
            len: data.len() as u32,
            addr,
            ..Header::new(Kind::Write)
        };
        if HDR_LEN + data.len() <= self.max_inline.min(self.peer_recv_len) {
            return self.post_msg(
                Header {
                    kind: Kind::WriteInline,
                    ..hdr
                },
                data,
            );
        }
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
        self.post_msg(hdr, &[])
    }

    pub(crate) fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        self.dead()?;
        let max = self.peer_recv_len - HDR_LEN;
        if data.is_empty() {
            return self.post_msg(Header::new(Kind::SendLast), &[]);
        }
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
            self.post_msg(hdr, chunk)?;
        }
        Ok(())
    }

    /// Selective signalling: one request in [`SIGNAL_EVERY`] asks for a
    /// completion (which also completes every request before it).
    fn signal_due(&self) -> bool {
        self.posted - self.last_signaled >= SIGNAL_EVERY
    }

    fn sq_room(&self) -> bool {
        self.posted - self.completed + 1 < self.send_depth
    }

    /// One round of waiting for credits or queue space: makes progress on
    /// both directions (so two peers posting at each other never
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

    /// Posts one SEND of `hdr` + `payload` once a credit is there.
    fn post_msg(&mut self, hdr: Header, payload: &[u8]) -> Result<(), FabricError> {
        self.post_msg_signaled(hdr, payload, false)
    }

    fn post_msg_signaled(
        &mut self,
        mut hdr: Header,
        payload: &[u8],
        force_signal: bool,
    ) -> Result<(), FabricError> {
        let total = HDR_LEN + payload.len();
        let inline = total <= self.max_inline;
        let mut deadline = None;
        let staged = loop {
            if self.credits.available() > 0 && self.sq_room() {
                if inline {
                    break None;
                }
                if let Some(off) = self.staging.alloc(total) {
                    break Some(off);
                }
            }
            self.stall(&mut deadline, "verbs send (no credit or queue space)")?;
        };
        let took = self.credits.take();
        debug_assert!(took, "a credit was checked above");
        hdr.credits = self.reposted;
        self.advertised = self.reposted;
        let head = hdr.encode();
        match staged {
            None => {
                let signal = force_signal || self.signal_due();
                self.post(SendKind::Send, Src::Inline(&head, payload), signal)
            }
            Some(off) => {
                let region = self.stage_mr.region();
                region.map().write_array(off, &head)?;
                region.write_at(off + HDR_LEN, payload)?;
                let signal = force_signal || self.signal_due() || self.staging.over_half();
                self.post(SendKind::Send, Src::Staged(off, total), signal)
            }
        }
    }

    fn post(&mut self, kind: SendKind, src: Src<'_>, signaled: bool) -> Result<(), FabricError> {
        let id = self.posted;
        let src = match src {
            Src::Inline(a, b) => Source::Inline(a, b),
            Src::Staged(off, len) => Source::Registered(&self.stage_mr, off, len),
        };
        if let Err(e) = self.qp.post_send(id, kind, src, signaled) {
            return Err(self.fail(e));
        }
        self.posted += 1;
        if signaled {
            self.signaled.push_back((id, self.staging.mark()));
            self.last_signaled = id;
        }
        Ok(())
    }

    /// Returns credits by RDMA-writing our count into the peer's credit
    /// word, when the peer may be short and we have nothing to send.
    fn maybe_return_credits(&mut self) -> Result<(), FabricError> {
        if self.reposted.wrapping_sub(self.advertised) < self.recv_depth / 2 || !self.sq_room() {
            return Ok(());
        }
        let word = proto::credit_word(self.reposted).to_le_bytes();
        let (addr, rkey) = self.peer_credit;
        let signal = self.signal_due();
        self.post(
            SendKind::Write {
                remote_addr: addr,
                rkey,
            },
            Src::Inline(&word, &[]),
            signal,
        )?;
        self.advertised = self.reposted;
        Ok(())
    }

    // ---- completions ---------------------------------------------------

    /// Reaps both CQs: frees send resources, turns receives into ready
    /// completions and re-posts their buffers.
    fn progress(&mut self) -> Result<(), FabricError> {
        self.dead()?;
        let mut wcs = [Wc::default(); 16];
        while !self.signaled.is_empty() {
            let n = self.qp.poll_send(&mut wcs).map_err(|e| self.fail(e))?;
            for wc in &wcs[..n] {
                if !wc.ok {
                    let e = FabricError::PeerGone(format!(
                        "RDMA operation failed: {}",
                        wc.status_text()
                    ));
                    return Err(self.fail(e));
                }
                while let Some(&(id, mark)) = self.signaled.front() {
                    if id > wc.wr_id {
                        break;
                    }
                    self.signaled.pop_front();
                    self.staging.release(mark);
                    self.completed = id + 1;
                }
            }
            if n < wcs.len() {
                break;
            }
        }
        let mut rounds = 0;
        loop {
            let n = self.qp.poll_recv(&mut wcs).map_err(|e| self.fail(e))?;
            for wc in &wcs[..n] {
                if let Err(e) = self.handle_recv(wc) {
                    return Err(self.fail(e));
                }
            }
            rounds += 1;
            if n < wcs.len() || rounds * wcs.len() >= self.recv_depth as usize {
                break;
            }
        }
        if !self.scratch.is_empty() {
            let bufs = std::mem::take(&mut self.scratch);
            let r = self.qp.post_recvs(&self.recv_mr, &bufs, self.recv_len);
            self.reposted = self.reposted.wrapping_add(bufs.len() as u32);
            self.scratch = bufs;
            self.scratch.clear();
            r.map_err(|e| self.fail(e))?;
        }
        let word = self.credit_mr.region().map().read_array::<8>(0)?;
        if let Some(count) = proto::credit_of_word(u64::from_le_bytes(word)) {
            self.credits
                .handle_reposted(count)
                .map_err(|e| self.fail(FabricError::Malformed(e)))?;
        }
        self.maybe_return_credits()
    }

    fn handle_recv(&mut self, wc: &Wc) -> Result<(), FabricError> {
        if !wc.ok {
            return Err(FabricError::PeerGone(format!(
                "receive failed: {}",
                wc.status_text()
            )));
        }
        let idx = wc.wr_id;
        if !wc.is_recv || idx >= u64::from(self.recv_depth) {
            return Err(FabricError::Malformed(WireError::Invalid(
                "unexpected receive completion",
            )));
        }
        let base = idx as usize * self.recv_len;
        self.scratch.push((idx, base as u64));
        let got = wc.byte_len as usize;
        let region = self.recv_mr.region();
        let head = region.map().read_array::<HDR_LEN>(base)?;
        let hdr = Header::decode(&head[..got.min(HDR_LEN)]).map_err(FabricError::Malformed)?;
        self.credits
            .handle_reposted(hdr.credits)
            .map_err(FabricError::Malformed)?;
        let payload_len = got - HDR_LEN;
        let bad = |why| FabricError::Malformed(WireError::Invalid(why));
        match hdr.kind {
            Kind::Write | Kind::WriteInline => {
                let inline = hdr.kind == Kind::WriteInline;
                if payload_len != if inline { hdr.len as usize } else { 0 } {
                    return Err(bad("write length does not match the message"));
                }
                let (target, offset) = self
                    .regions
                    .resolve(hdr.rkey, hdr.addr, u64::from(hdr.len))
                    .map_err(bad)?;
                if inline {
                    let mut tmp = [0u8; 512];
                    let tmp = tmp
                        .get_mut(..payload_len)
                        .ok_or(bad("inline write too long"))?;
                    region.read_at(base + HDR_LEN, tmp)?;
                    target.write_at(offset, tmp)?;
                }
                self.ready.push_back(Completion::Write(WriteCompletion {
                    imm: hdr.imm,
                    rkey: hdr.rkey,
                    offset: offset as u64,
                    len: hdr.len,
                }));
            }
            Kind::SendMore | Kind::SendLast => {
                if payload_len != hdr.len as usize {
                    return Err(bad("fragment length does not match the message"));
                }
                let mut buf = self.assembling.take().unwrap_or_default();
                if buf.len() + payload_len > self.max_message {
                    return Err(FabricError::Malformed(WireError::TooLarge {
                        len: (buf.len() + payload_len) as u64,
                        max: self.max_message as u64,
                    }));
                }
                let start = buf.len();
                buf.resize(start + payload_len, 0);
                region.read_at(base + HDR_LEN, &mut buf[start..])?;
                if hdr.kind == Kind::SendMore {
                    self.assembling = Some(buf);
                } else {
                    self.ready.push_back(Completion::Recv(buf.freeze()));
                }
            }
            Kind::Close => self.closed = true,
        }
        Ok(())
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

    pub(crate) fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if let Some(c) = self.ready.pop_front() {
            return Ok(Some(c));
        }
        self.progress()?;
        if let Some(c) = self.ready.pop_front() {
            self.idle = 0;
            return Ok(Some(c));
        }
        self.idle += 1;
        if self.idle >= LIVENESS_EVERY || self.eof_at.is_some() {
            self.idle = 0;
            self.check_peer();
        }
        self.gone_now()?;
        Ok(None)
    }

    pub(crate) fn event_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Arms the receive CQ; false if there is work already (or the peer
    /// is leaving, which only polling can finish).
    pub(crate) fn arm(&mut self) -> Result<bool, FabricError> {
        if !self.ready.is_empty() || self.closed || self.gone.is_some() {
            return Ok(false);
        }
        self.qp.arm_recv().map_err(|e| self.fail(e))?;
        // A completion that came before the arming raises no event.
        self.progress()?;
        if !self.ready.is_empty() {
            return Ok(false);
        }
        self.check_peer();
        Ok(self.eof_at.is_none() && !self.closed)
    }

    pub(crate) fn disarm(&mut self) {
        self.qp.drain_events();
    }

    pub(crate) fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
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

impl Drop for VerbsEndpoint {
    fn drop(&mut self) {
        if self.gone.is_some() || self.closed || self.eof_at.is_some() {
            return;
        }
        // Orderly close: a signalled Close SEND, and wait (bounded) until
        // it completed, so that everything posted before has landed when
        // the QP is destroyed.
        self.op_timeout = self.op_timeout.min(Duration::from_secs(1));
        if self
            .post_msg_signaled(Header::new(Kind::Close), &[], true)
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.completed < self.last_signaled + 1 && Instant::now() < deadline {
            if self.progress().is_err() {
                return;
            }
            std::hint::spin_loop();
        }
    }
}
