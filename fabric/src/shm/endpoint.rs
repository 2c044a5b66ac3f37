//! The shm endpoint: we write into the peer's mapped regions and its
//! inbound ring; the peer does the same to ours.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::ring::{Consumer, Producer, INLINE_WRITE_MAX};
use super::sys;
use crate::cma::PeerMemory;
use crate::completion::{Completion, WriteCompletion, WriteData};
use crate::error::FabricError;
use crate::mem::SharedMap;
use crate::mr::{MemoryRegion, RegionTable, RemoteBuffer};
use crate::provider::Provider;
use crate::wire::{FrameHeader, Op, WireError, FLAG_INLINE, FLAG_MORE};

/// Empty polls between two liveness checks of the peer (one syscall).
const LIVENESS_EVERY: u32 = 4096;

#[derive(Debug)]
pub(crate) struct ShmEndpoint {
    pub(super) tx: Producer,
    pub(super) rx: Consumer,
    /// The peer's exposed regions, mapped here.
    pub(super) peer_regions: Vec<(RemoteBuffer, SharedMap)>,
    pub(super) regions: RegionTable,
    pub(super) peer_wake: OwnedFd,
    pub(super) our_wake: OwnedFd,
    /// Closed by the kernel when the peer process dies.
    pub(super) sock: UnixStream,
    pub(super) assembling: Option<BytesMut>,
    pub(super) ready: VecDeque<Completion>,
    pub(super) gone: Option<String>,
    pub(super) idle: u32,
    pub(super) max_message: usize,
    pub(super) op_timeout: Duration,
    /// The peer process's memory, if this process may read it.
    pub(super) peer_mem: Option<PeerMemory>,
}

impl ShmEndpoint {
    /// The mapped peer region holding `len` bytes at `addr`, and their
    /// offset in it.
    fn peer_region(
        &self,
        addr: u64,
        rkey: u32,
        len: usize,
    ) -> Result<(&SharedMap, usize), FabricError> {
        self.peer_regions
            .iter()
            .find(|(rb, _)| rb.rkey == rkey && rb.contains(addr, len as u64))
            .map(|(rb, map)| (map, (addr - rb.addr) as usize))
            .ok_or(FabricError::RemoteAccess {
                rkey,
                addr,
                len: len as u64,
                reason: "no mapped peer region covers the access",
            })
    }

    fn push(&mut self, hdr: &FrameHeader, payload: &[u8]) -> Result<(), FabricError> {
        if let Some(why) = &self.gone {
            return Err(FabricError::PeerGone(why.clone()));
        }
        let mut deadline = None;
        let mut spins = 0u32;
        while !self.tx.try_push(hdr, payload)? {
            // Ring full: keep draining our inbound ring so that a peer
            // blocked on us makes progress, and give up after op_timeout.
            self.progress()?;
            spins += 1;
            if spins % 1024 == 0 {
                if sys::peer_closed(&self.sock) {
                    return Err(FabricError::PeerGone(
                        "peer closed while we waited for ring space".into(),
                    ));
                }
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.op_timeout);
                if Instant::now() >= deadline {
                    return Err(FabricError::Timeout {
                        op: "shm post (ring full)",
                        after: self.op_timeout,
                    });
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        if self.tx.consumer_waiting() {
            sys::signal(self.peer_wake.as_fd());
        }
        Ok(())
    }

    fn check_peer(&mut self) {
        if self.gone.is_none() && sys::peer_closed(&self.sock) {
            // The peer may have posted right before dying: deliver that first.
            if matches!(self.rx.peek(), Ok(None)) {
                self.gone = Some("peer process exited or closed the connection".into());
            }
        }
    }

    /// Consumes what the inbound ring holds into the ready queue (used while
    /// a post waits for room).
    fn progress(&mut self) -> Result<(), FabricError> {
        while let Some(done) = self.consume()? {
            self.ready.extend(done);
        }
        Ok(())
    }

    /// The target region of the write record `hdr` and the write's
    /// completion, if the target is one of our exposed regions.
    #[inline]
    fn resolve_write(
        &self,
        hdr: &FrameHeader,
    ) -> Result<(&MemoryRegion, WriteCompletion), &'static str> {
        let (region, offset) = self.regions.resolve(hdr.rkey, hdr.addr, hdr.len as u64)?;
        let w = WriteCompletion {
            imm: hdr.imm,
            rkey: hdr.rkey,
            offset: offset as u64,
            len: hdr.len,
        };
        Ok((region, w))
    }

    /// Consumes one record: `None` if the ring is empty, else the
    /// completion it finishes, if any.
    fn consume(&mut self) -> Result<Option<Option<Completion>>, FabricError> {
        let hdr = match self.rx.peek().map_err(FabricError::Malformed)? {
            Some(h) => h,
            None => return Ok(None),
        };
        let mut done = None;
        match hdr.op {
            Op::Write => {
                let (region, w) = self
                    .resolve_write(&hdr)
                    .map_err(|why| FabricError::Malformed(WireError::Invalid(why)))?;
                if hdr.flags & FLAG_INLINE != 0 {
                    // `peek` bounded len by INLINE_WRITE_MAX.
                    let mut buf = [0u8; INLINE_WRITE_MAX];
                    let data = &mut buf[..hdr.len as usize];
                    self.rx.copy_payload(data)?;
                    region.write_at(w.offset as usize, data)?;
                }
                done = Some(Completion::Write(w));
            }
            Op::Send => {
                let mut buf = self.assembling.take().unwrap_or_default();
                if buf.len() + hdr.len as usize > self.max_message {
                    return Err(FabricError::Malformed(WireError::TooLarge {
                        len: (buf.len() + hdr.len as usize) as u64,
                        max: self.max_message as u64,
                    }));
                }
                self.rx.read_payload(&hdr, &mut buf)?;
                if hdr.flags & FLAG_MORE != 0 {
                    self.assembling = Some(buf);
                } else {
                    done = Some(Completion::Recv(buf.freeze()));
                }
            }
            Op::Close => {
                self.gone = Some("peer closed the connection".into());
            }
            Op::Pad => {}
            Op::Read | Op::ReadReply => {
                // shm reads copy from the mapped region: never in the ring.
                return Err(FabricError::Malformed(WireError::Invalid(
                    "read frame in a shm ring",
                )));
            }
        }
        self.rx.advance(&hdr);
        Ok(Some(done))
    }
}

impl Drop for ShmEndpoint {
    fn drop(&mut self) {
        // Orderly close, best effort: if the ring is full the socket's EOF
        // tells the peer anyway.
        if self.gone.is_none()
            && self
                .tx
                .try_push(&FrameHeader::new(Op::Close), &[])
                .unwrap_or(false)
        {
            sys::signal(self.peer_wake.as_fd());
        }
    }
}

impl Provider for ShmEndpoint {
    fn write(&mut self, addr: u64, rkey: u32, imm: u32, data: &[u8]) -> Result<(), FabricError> {
        let (map, offset) = self.peer_region(addr, rkey, data.len())?;
        let hdr = FrameHeader::write(addr, rkey, imm, data.len() as u32);
        if data.len() <= INLINE_WRITE_MAX {
            // Small: in the record line(s) the peer fetches anyway.
            let hdr = FrameHeader {
                flags: FLAG_INLINE,
                ..hdr
            };
            return self.push(&hdr, data);
        }
        // Zero copy on the receive side: the bytes land in the peer's region.
        map.write(offset, data)?;
        self.push(&hdr, &[])
    }

    /// One copy, straight out of the peer's region mapped here: the peer
    /// takes no part.
    fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError> {
        if let Some(why) = &self.gone {
            return Err(FabricError::PeerGone(why.clone()));
        }
        let (map, offset) = self.peer_region(addr, rkey, out.len())?;
        map.read(offset, out)
    }

    fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        let max = self.tx.max_payload();
        let mut chunks = data.chunks(max).peekable();
        if data.is_empty() {
            return self.push(&FrameHeader::new(Op::Send), &[]);
        }
        while let Some(chunk) = chunks.next() {
            let hdr = FrameHeader::send(chunk.len() as u32, chunks.peek().is_some());
            self.push(&hdr, chunk)?;
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if let Some(c) = self.ready.pop_front() {
            return Ok(Some(c));
        }
        // Pad records and send fragments complete nothing: keep consuming.
        while let Some(done) = self.consume()? {
            self.idle = 0;
            if done.is_some() {
                return Ok(done);
            }
        }
        self.idle += 1;
        if self.idle >= LIVENESS_EVERY {
            self.idle = 0;
            self.check_peer();
        }
        match &self.gone {
            Some(why) => Err(FabricError::PeerGone(why.clone())),
            None => Ok(None),
        }
    }

    fn take_write<R>(
        &mut self,
        take: impl FnOnce(&WriteCompletion, WriteData<'_>) -> Option<R>,
    ) -> Option<R> {
        if !self.ready.is_empty() || self.assembling.is_some() || self.gone.is_some() {
            return None;
        }
        // Anything unusual (nothing there, another record, a bad one) is
        // left to `consume`, which reports what is wrong.
        let hdr = self.rx.peek().ok()??;
        if hdr.op != Op::Write {
            return None;
        }
        let (_, w) = self.resolve_write(&hdr).ok()?;
        let r = if hdr.flags & FLAG_INLINE != 0 {
            // Copied out first: the peer may scribble on the ring meanwhile.
            // `peek` bounded len by INLINE_WRITE_MAX.
            let mut buf = [0u8; INLINE_WRITE_MAX];
            let data = &mut buf[..hdr.len as usize];
            self.rx.copy_payload(data).ok()?;
            take(&w, WriteData::Inline(data))?
        } else {
            // The writer copied the bytes into the region before it
            // published the record.
            take(&w, WriteData::Landed)?
        };
        self.rx.advance(&hdr);
        self.idle = 0;
        Some(r)
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.our_wake.as_fd()
    }

    /// Announces a sleep on the eventfd; false if there is work already.
    fn arm(&mut self) -> Result<bool, FabricError> {
        if !self.ready.is_empty() || self.gone.is_some() {
            return Ok(false);
        }
        self.rx.set_waiting(true);
        if !matches!(self.rx.peek(), Ok(None)) {
            self.rx.set_waiting(false);
            return Ok(false);
        }
        // An event loop may wait long: look at the peer once per sleep.
        self.check_peer();
        if self.gone.is_some() {
            self.rx.set_waiting(false);
            return Ok(false);
        }
        Ok(true)
    }

    fn disarm(&mut self) {
        self.rx.set_waiting(false);
        sys::drain(self.our_wake.as_fd());
    }

    fn block(&mut self, timeout: Duration) -> Result<(), FabricError> {
        if !self.ready.is_empty() || self.gone.is_some() {
            return Ok(());
        }
        self.rx.set_waiting(true);
        // Re-check after announcing: a record published before the flag
        // was visible would otherwise sleep until the timeout.
        if !matches!(self.rx.peek(), Ok(None)) {
            self.rx.set_waiting(false);
            return Ok(());
        }
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            PollFd::new(self.our_wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
        ];
        let r = nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        let sock_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        self.rx.set_waiting(false);
        sys::drain(self.our_wake.as_fd());
        if sock_ready {
            self.check_peer();
        }
        match r {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(FabricError::os("poll", std::io::Error::from(e))),
        }
    }

    fn peer_memory(&self) -> Option<&PeerMemory> {
        self.peer_mem.as_ref()
    }
}
