//! The tcp endpoint: a non-blocking socket, a receive staging buffer and a
//! parser that delivers frames into regions.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::completion::{Completion, WriteCompletion};
use crate::error::FabricError;
use crate::mr::{MemoryRegion, RegionTable};
use crate::provider::Provider;
use crate::wire::{FrameHeader, Op, WireError, FLAG_REFUSED, FRAME_HEADER_LEN};

const STAGING: usize = 256 << 10;

/// Read requests of the peer queued for serving. A peer's reads block, so
/// it has one outstanding; more is a misbehaving peer.
const MAX_QUEUED_READS: usize = 64;

/// How long a read polls a silent socket before it sleeps on it.
const READ_SPIN: Duration = Duration::from_micros(200);

/// Read replies with at least this much still to come skip the staging
/// buffer.
const DIRECT_READ_MIN: usize = 16 << 10;

/// Socket reads one [`Provider::close_done`] makes at most (a peer that
/// streams without end cannot hold it).
const CLOSE_READS: usize = 64;

/// A frame whose payload is still arriving.
#[derive(Debug)]
enum Partial {
    Write {
        hdr: FrameHeader,
        region: MemoryRegion,
        offset: usize,
        got: usize,
    },
    Send {
        buf: BytesMut,
        want: usize,
    },
    /// The data of a [`Op::ReadReply`], into [`TcpEndpoint::read_buf`]
    /// (or dropped, for a read that timed out).
    ReadReply {
        want: usize,
        got: usize,
        keep: bool,
    },
}

/// Where our one outstanding read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Idle,
    Waiting { id: u32, len: usize },
    Done,
    Refused,
}

#[derive(Debug)]
pub(crate) struct TcpEndpoint {
    sock: TcpStream,
    regions: RegionTable,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    partial: Option<Partial>,
    ready: VecDeque<Completion>,
    gone: Option<String>,
    max_message: usize,
    op_timeout: Duration,
    /// Reads the peer asked of our regions, served at the next top-level
    /// call (never in the middle of sending a frame of our own).
    serve: VecDeque<FrameHeader>,
    serve_buf: Vec<u8>,
    read: ReadState,
    read_buf: Vec<u8>,
    read_id: u32,
    /// A read that timed out: its late reply is dropped.
    abandoned: Option<u32>,
    /// Bytes received so far: a read waits while they keep coming.
    rx_bytes: u64,
    /// [`Provider::close_start`] ran: nothing more is sent or delivered.
    closing: bool,
    /// Bytes of our close frame still to write (the socket was full), then
    /// our FIN.
    close_left: usize,
    fin_sent: bool,
    /// The peer shut its side (or the connection ended): closing loses
    /// nothing.
    peer_shut: bool,
}

impl TcpEndpoint {
    pub(crate) fn new(
        sock: TcpStream,
        regions: RegionTable,
        max_message: usize,
        op_timeout: Duration,
    ) -> Result<Self, FabricError> {
        sock.set_nonblocking(true)
            .map_err(|e| FabricError::os("set_nonblocking", e))?;
        sock.set_nodelay(true)
            .map_err(|e| FabricError::os("set_nodelay", e))?;
        Ok(TcpEndpoint {
            sock,
            regions,
            buf: vec![0u8; STAGING].into_boxed_slice(),
            start: 0,
            end: 0,
            partial: None,
            ready: VecDeque::new(),
            gone: None,
            max_message,
            op_timeout,
            serve: VecDeque::new(),
            serve_buf: Vec::new(),
            read: ReadState::Idle,
            read_buf: Vec::new(),
            read_id: 0,
            abandoned: None,
            rx_bytes: 0,
            closing: false,
            close_left: 0,
            fin_sent: false,
            peer_shut: false,
        })
    }

    /// Answers the peer's queued reads from our regions.
    fn serve_reads(&mut self) -> Result<(), FabricError> {
        while let Some(req) = self.serve.pop_front() {
            let mut buf = std::mem::take(&mut self.serve_buf);
            let reply = match self.regions.resolve(req.rkey, req.addr, req.len as u64) {
                Ok((region, offset)) => {
                    buf.resize(req.len as usize, 0);
                    region.read_at(offset, &mut buf)?;
                    FrameHeader {
                        op: Op::ReadReply,
                        flags: 0,
                        imm: req.imm,
                        rkey: req.rkey,
                        len: req.len,
                        addr: req.addr,
                    }
                }
                Err(why) => {
                    tracing::debug!(
                        rkey = req.rkey,
                        addr = req.addr,
                        len = req.len,
                        "read refused: {why}"
                    );
                    buf.clear();
                    FrameHeader {
                        op: Op::ReadReply,
                        flags: FLAG_REFUSED,
                        imm: req.imm,
                        rkey: req.rkey,
                        len: 0,
                        addr: req.addr,
                    }
                }
            };
            let r = self.send_frame(&reply, &buf);
            // Kept for the next read: a peer that reads large inputs (an
            // executor pulling invocations) reads them again and again.
            // Bounded by the largest region we expose.
            self.serve_buf = buf;
            r?;
        }
        Ok(())
    }

    fn send_frame(&mut self, hdr: &FrameHeader, payload: &[u8]) -> Result<(), FabricError> {
        let head = hdr.encode();
        let total = FRAME_HEADER_LEN + payload.len();
        let mut sent = 0usize;
        let mut deadline = None;
        while sent < total {
            let r = if sent < FRAME_HEADER_LEN {
                let bufs = [IoSlice::new(&head[sent..]), IoSlice::new(payload)];
                self.sock.write_vectored(&bufs)
            } else {
                self.sock.write(&payload[sent - FRAME_HEADER_LEN..])
            };
            match r {
                Ok(0) => {
                    return Err(FabricError::PeerGone(
                        "connection closed while sending".into(),
                    ))
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer may be blocked sending to us: drain our side
                    // while we wait for room, or both would wait forever.
                    self.progress()?;
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + self.op_timeout);
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(FabricError::Timeout {
                            op: "tcp send",
                            after: self.op_timeout,
                        });
                    }
                    self.wait_fd(PollFlags::POLLOUT | PollFlags::POLLIN, deadline - now)?;
                }
                Err(e) => return Err(FabricError::from_io("send", e)),
            }
        }
        Ok(())
    }

    fn wait_fd(&self, events: PollFlags, timeout: Duration) -> Result<(), FabricError> {
        let mut fds = [PollFd::new(self.sock.as_fd(), events)];
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(FabricError::os("poll", io::Error::from(e))),
        }
    }

    /// Reads what the socket has and parses every complete frame.
    fn progress(&mut self) -> Result<(), FabricError> {
        if self.gone.is_some() {
            return Ok(());
        }
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                if self.read_direct()? {
                    continue;
                }
                if self.gone.is_some() {
                    return Ok(());
                }
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.parse()?;
                    self.gone = Some(match &self.partial {
                        Some(_) => "peer closed the connection in the middle of a transfer".into(),
                        None => "peer closed the connection".into(),
                    });
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    self.rx_bytes += n as u64;
                    self.parse()?;
                    if self.end < self.buf.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    self.gone = Some(format!("connection lost: {e}"));
                    return Ok(());
                }
            }
        }
    }

    /// The rest of a large read reply goes straight from the socket into
    /// the read buffer, not through the staging buffer. True if bytes came
    /// and there may be more; false when there is nothing to do this way
    /// (or the socket is empty, or gone).
    fn read_direct(&mut self) -> Result<bool, FabricError> {
        let Some(Partial::ReadReply {
            want,
            got,
            keep: true,
        }) = self.partial
        else {
            return Ok(false);
        };
        if want - got < DIRECT_READ_MIN {
            return Ok(false);
        }
        match self.sock.read(&mut self.read_buf[got..want]) {
            Ok(0) => {
                self.gone = Some("peer closed the connection in the middle of a transfer".into());
                Ok(false)
            }
            Ok(n) => {
                self.rx_bytes += n as u64;
                if got + n == want {
                    self.partial = None;
                    self.read = ReadState::Done;
                } else {
                    self.partial = Some(Partial::ReadReply {
                        want,
                        got: got + n,
                        keep: true,
                    });
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => {
                self.gone = Some(format!("connection lost: {e}"));
                Ok(false)
            }
        }
    }

    fn parse(&mut self) -> Result<(), FabricError> {
        loop {
            if let Some(p) = self.partial.take() {
                let avail = self.end - self.start;
                match p {
                    Partial::Write {
                        hdr,
                        region,
                        offset,
                        got,
                    } => {
                        let n = avail.min(hdr.len as usize - got);
                        region.write_at(offset + got, &self.buf[self.start..self.start + n])?;
                        self.start += n;
                        if got + n == hdr.len as usize {
                            self.ready.push_back(Completion::Write(WriteCompletion {
                                imm: hdr.imm,
                                rkey: hdr.rkey,
                                offset: offset as u64,
                                len: hdr.len,
                            }));
                        } else {
                            self.partial = Some(Partial::Write {
                                hdr,
                                region,
                                offset,
                                got: got + n,
                            });
                            return Ok(());
                        }
                    }
                    Partial::ReadReply { want, got, keep } => {
                        let n = avail.min(want - got);
                        if keep {
                            self.read_buf[got..got + n]
                                .copy_from_slice(&self.buf[self.start..self.start + n]);
                        }
                        self.start += n;
                        if got + n == want {
                            if keep {
                                self.read = ReadState::Done;
                            }
                        } else {
                            self.partial = Some(Partial::ReadReply {
                                want,
                                got: got + n,
                                keep,
                            });
                            return Ok(());
                        }
                    }
                    Partial::Send { mut buf, want } => {
                        let n = avail.min(want - buf.len());
                        buf.extend_from_slice(&self.buf[self.start..self.start + n]);
                        self.start += n;
                        if buf.len() == want {
                            self.ready.push_back(Completion::Recv(buf.freeze()));
                        } else {
                            self.partial = Some(Partial::Send { buf, want });
                            return Ok(());
                        }
                    }
                }
            }
            if self.end - self.start < FRAME_HEADER_LEN {
                return Ok(());
            }
            let hdr = FrameHeader::decode(&self.buf[self.start..self.end])
                .map_err(FabricError::Malformed)?;
            self.start += FRAME_HEADER_LEN;
            let len = hdr.len as usize;
            self.partial = Some(match hdr.op {
                Op::Write => {
                    let (region, offset) = self
                        .regions
                        .resolve(hdr.rkey, hdr.addr, hdr.len as u64)
                        .map_err(|why| FabricError::Malformed(WireError::Invalid(why)))?;
                    Partial::Write {
                        hdr,
                        region: region.clone(),
                        offset,
                        got: 0,
                    }
                }
                Op::Send => {
                    if len > self.max_message {
                        return Err(FabricError::Malformed(WireError::TooLarge {
                            len: len as u64,
                            max: self.max_message as u64,
                        }));
                    }
                    Partial::Send {
                        buf: BytesMut::with_capacity(len),
                        want: len,
                    }
                }
                Op::Close => {
                    self.gone = Some("peer closed the connection".into());
                    // Everything the peer sent is read: our FIN tells it
                    // so (its orderly close waits for that).
                    let _ = self.sock.shutdown(Shutdown::Write);
                    return Ok(());
                }
                Op::Read => {
                    if self.serve.len() >= MAX_QUEUED_READS {
                        return Err(FabricError::Malformed(WireError::Invalid(
                            "too many outstanding reads",
                        )));
                    }
                    self.serve.push_back(hdr);
                    continue;
                }
                Op::ReadReply => match self.read_reply(&hdr)? {
                    Some(p) => p,
                    None => continue,
                },
                Op::Pad => {
                    return Err(FabricError::Malformed(WireError::Invalid(
                        "pad frame on tcp",
                    )))
                }
            });
        }
    }
}

impl TcpEndpoint {
    /// Matches a reply header with the read it answers: the partial frame
    /// that receives its data, or `None` when no data follows.
    fn read_reply(&mut self, hdr: &FrameHeader) -> Result<Option<Partial>, FabricError> {
        let bad = |why| Err(FabricError::Malformed(WireError::Invalid(why)));
        let refused = hdr.flags & FLAG_REFUSED != 0;
        if refused && hdr.len != 0 {
            return bad("refused read reply with data");
        }
        let want = hdr.len as usize;
        match self.read {
            ReadState::Waiting { id, len } if id == hdr.imm => {
                if refused {
                    self.read = ReadState::Refused;
                    return Ok(None);
                }
                if want != len {
                    return bad("read reply of the wrong length");
                }
                if self.read_buf.len() < want {
                    self.read_buf.resize(want, 0);
                }
                if want == 0 {
                    self.read = ReadState::Done;
                    return Ok(None);
                }
                Ok(Some(Partial::ReadReply {
                    want,
                    got: 0,
                    keep: true,
                }))
            }
            _ if self.abandoned == Some(hdr.imm) => {
                self.abandoned = None;
                Ok((want > 0).then_some(Partial::ReadReply {
                    want,
                    got: 0,
                    keep: false,
                }))
            }
            _ => bad("read reply to no outstanding read"),
        }
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        if !self.closing {
            // Tells the peer it was a close, not a crash; best effort.
            let _ = self.sock.write(&FrameHeader::new(Op::Close).encode());
        }
    }
}

impl Provider for TcpEndpoint {
    fn write(&mut self, addr: u64, rkey: u32, imm: u32, data: &[u8]) -> Result<(), FabricError> {
        self.send_frame(
            &FrameHeader::write(addr, rkey, imm, data.len() as u32),
            data,
        )
    }

    /// Asks the peer for the bytes and drives the socket until its
    /// endpoint answers (it does whenever it is polled or posts).
    fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError> {
        self.serve_reads()?;
        self.read_id = self.read_id.wrapping_add(1);
        let id = self.read_id;
        self.read = ReadState::Waiting { id, len: out.len() };
        let hdr = FrameHeader {
            op: Op::Read,
            flags: 0,
            imm: id,
            rkey,
            len: out.len() as u32,
            addr,
        };
        self.send_frame(&hdr, &[])?;
        let mut heard = Instant::now();
        let deadline = heard + self.op_timeout;
        let mut seen = self.rx_bytes;
        loop {
            self.progress()?;
            self.serve_reads()?;
            match self.read {
                ReadState::Done => {
                    self.read = ReadState::Idle;
                    out.copy_from_slice(&self.read_buf[..out.len()]);
                    return Ok(());
                }
                ReadState::Refused => {
                    self.read = ReadState::Idle;
                    return Err(FabricError::RemoteAccess {
                        rkey,
                        addr,
                        len: out.len() as u64,
                        reason: "the peer refused the read",
                    });
                }
                ReadState::Idle | ReadState::Waiting { .. } => {}
            }
            if let Some(why) = &self.gone {
                return Err(FabricError::PeerGone(why.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                self.read = ReadState::Idle;
                self.abandoned = Some(id);
                return Err(FabricError::Timeout {
                    op: "tcp read",
                    after: self.op_timeout,
                });
            }
            // A reply on loopback or a fast network comes within
            // microseconds, and a large one streams in: poll while bytes
            // come, sleep in poll(2) once the socket has been silent a while.
            if self.rx_bytes != seen {
                seen = self.rx_bytes;
                heard = now;
            }
            if now - heard >= READ_SPIN {
                self.wait_fd(PollFlags::POLLIN, deadline - now)?;
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        self.send_frame(&FrameHeader::send(data.len() as u32, false), data)
    }

    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if let Some(c) = self.ready.pop_front() {
            return Ok(Some(c));
        }
        self.progress()?;
        self.serve_reads()?;
        if let Some(c) = self.ready.pop_front() {
            return Ok(Some(c));
        }
        match &self.gone {
            Some(why) => Err(FabricError::PeerGone(why.clone())),
            None => Ok(None),
        }
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Drains the socket (so that an edge-triggered loop sees the next
    /// arrival); false if that left work to do.
    fn arm(&mut self) -> Result<bool, FabricError> {
        self.progress()?;
        self.serve_reads()?;
        Ok(self.ready.is_empty() && self.gone.is_none())
    }

    fn disarm(&mut self) {}

    fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
        if !self.ready.is_empty() || self.gone.is_some() {
            return Ok(());
        }
        self.wait_fd(PollFlags::POLLIN, timeout)
    }

    /// A close frame after everything sent, then our FIN. The socket stays
    /// open until the peer's FIN: a close with unread input would reset
    /// the connection, and a reset drops what the kernel still had to send.
    /// Never blocks: what does not fit the socket now goes in `close_done`.
    fn close_start(&mut self) {
        if std::mem::replace(&mut self.closing, true) {
            return;
        }
        self.close_left = if self.gone.is_none() {
            FRAME_HEADER_LEN
        } else {
            0
        };
        self.close_flush();
    }

    /// The peer's FIN (it read our close frame) or the end of the
    /// connection; input before it is dropped.
    fn close_done(&mut self) -> bool {
        if !self.closing {
            return self.gone.is_some();
        }
        // Read first: a peer blocked writing to us reads our close only
        // once we take its bytes.
        for _ in 0..CLOSE_READS {
            if self.peer_shut {
                break;
            }
            match self.sock.read(&mut self.buf) {
                Ok(0) => self.peer_shut = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.peer_shut = true,
            }
        }
        self.close_flush() && self.peer_shut
    }
}

impl TcpEndpoint {
    /// Writes what is left of our close frame, then our FIN; true once
    /// both went out (or the connection is over).
    fn close_flush(&mut self) -> bool {
        let head = FrameHeader::new(Op::Close).encode();
        while self.close_left > 0 {
            match self.sock.write(&head[FRAME_HEADER_LEN - self.close_left..]) {
                Ok(n) if n > 0 => self.close_left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // The connection is over: nothing we send can arrive.
                Ok(_) | Err(_) => {
                    self.close_left = 0;
                    self.peer_shut = true;
                }
            }
        }
        if !std::mem::replace(&mut self.fin_sent, true) {
            let _ = self.sock.shutdown(Shutdown::Write);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use std::net::TcpListener;

    use super::*;

    /// Our endpoint, and the raw socket of its peer.
    fn pair(op_timeout: Duration) -> (TcpEndpoint, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let raw = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (sock, _) = l.accept().unwrap();
        let ep = TcpEndpoint::new(sock, RegionTable::new(Vec::new()), 1 << 20, op_timeout).unwrap();
        (ep, raw)
    }

    /// A peer that reads nothing cannot hold `close_start` (an engine
    /// closes all its links together, under one deadline): the close frame
    /// waits in `close_done`, which finishes once the peer reads and
    /// closes, with the close frame the last bytes on the wire.
    #[test]
    fn close_start_never_blocks_on_a_peer_that_reads_nothing() {
        let (mut ep, mut raw) = pair(Duration::from_secs(2));
        let chunk = vec![7u8; 64 << 10];
        let full = (0..10_000).any(|_| ep.send(&chunk).is_err());
        assert!(full, "the socket never filled");
        let t0 = Instant::now();
        ep.close_start();
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        assert!(!ep.close_done(), "done before the peer read anything");
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            raw.read_to_end(&mut all).unwrap();
            all
        });
        let t0 = Instant::now();
        while !ep.close_done() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(ep.close_done(), "the close never finished");
        let all = reader.join().unwrap();
        assert!(all.ends_with(&FrameHeader::new(Op::Close).encode()));
    }
}
