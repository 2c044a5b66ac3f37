//! One-sided operations: the blocking write, the blocking read into the
//! caller's memory, and the staged read.

use std::os::raw::c_void;
use std::ptr;
use std::time::Instant;

use super::buf::Stage;
use super::conn::Conn;
use super::cq::Event;
use super::mr::LocalMr;
use super::{ctx, ffi, posted, FabricError, Posted, TAG_READ, TAG_WRITE};

/// A one-sided operation of [`Conn::rma_blocking`], on the caller's
/// memory.
enum Rma<'a> {
    /// `fi_writedata` of these bytes with this remote CQ data.
    Write(&'a [u8], u64),
    /// `fi_read` into these bytes.
    Read(&'a mut [u8]),
}

/// How a blocking read ended when it did not end the connection.
#[derive(Debug)]
pub(in crate::ofi) enum ReadEnd {
    /// The bytes are in place.
    Done,
    /// The provider failed the read (its code and message); nothing is in
    /// flight any more.
    Failed { code: i32, msg: String },
}

impl Conn {
    /// Writes `data` at `addr`/`key` of the peer with `imm_data` as remote
    /// CQ data, and returns only once the provider is done with `data`
    /// (its completion was reaped) or the endpoint is closed. Other
    /// completions met meanwhile go to `other`; `alive` is asked now and
    /// then whether to go on (a dead peer or an error ends the wait).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::ofi) fn write_blocking(
        &mut self,
        data: &[u8],
        addr: u64,
        key: u64,
        imm_data: u64,
        deadline: Instant,
        other: impl FnMut(Event) -> Result<(), FabricError>,
        alive: impl FnMut() -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
        match self.rma_blocking(
            Rma::Write(data, imm_data),
            addr,
            key,
            deadline,
            other,
            alive,
        )? {
            ReadEnd::Done => Ok(()),
            ReadEnd::Failed { msg, .. } => Err(FabricError::PeerGone(msg)),
        }
    }

    /// Reads `out.len()` bytes at `addr`/`key` of the peer straight into
    /// `out` (registered for the call where the provider needs local
    /// registration), as [`Conn::write_blocking`] writes: it returns once
    /// the read completed, failed, or the endpoint was closed, so the
    /// provider never writes `out` afterwards. A read still in flight
    /// into the staging buffer (one that timed out) is waited for first.
    pub(in crate::ofi) fn read_blocking(
        &mut self,
        out: &mut [u8],
        addr: u64,
        key: u64,
        deadline: Instant,
        other: impl FnMut(Event) -> Result<(), FabricError>,
        alive: impl FnMut() -> Result<(), FabricError>,
    ) -> Result<ReadEnd, FabricError> {
        self.rma_blocking(Rma::Read(out), addr, key, deadline, other, alive)
    }

    /// Posts `op`, retrying while the provider asks for progress, then
    /// waits for its completion (see the two callers).
    fn rma_blocking(
        &mut self,
        mut op: Rma<'_>,
        addr: u64,
        key: u64,
        deadline: Instant,
        mut other: impl FnMut(Event) -> Result<(), FabricError>,
        mut alive: impl FnMut() -> Result<(), FabricError>,
    ) -> Result<ReadEnd, FabricError> {
        let start = Instant::now();
        if self.closed {
            return Err(FabricError::PeerGone("the endpoint is closed".into()));
        }
        let peer = self.peer()?;
        let (ptr, len, access) = match &mut op {
            Rma::Write(data, _) => (data.as_ptr() as *mut u8, data.len(), ffi::FI_WRITE),
            Rma::Read(out) => (out.as_mut_ptr(), out.len(), ffi::FI_READ),
        };
        let reading = matches!(op, Rma::Read(_));
        let local = if self.domain.info.mr_local() {
            Some(LocalMr::register(
                &self.domain,
                ptr,
                len.max(1),
                u64::from(access),
            )?)
        } else {
            None
        };
        let desc = local.as_ref().map_or(ptr::null_mut(), |m| m.desc());
        let mut events = Vec::with_capacity(16);
        let mut spins = 0u32;
        let mut failure = None;
        // Post, retrying while the provider asks for progress (and, for a
        // read, while a stale read into the stage is still in flight).
        loop {
            let busy = reading && self.read_pending;
            // Both posts: `ptr..ptr+len` is the caller's `op` buffer,
            // borrowed (mutably for a read) until this function returns,
            // and it returns only after the operation's completion was
            // reaped or the endpoint was closed (below), so the provider
            // never touches it afterwards; `local` (if any) is closed after.
            let rc = match op {
                _ if busy => -(ffi::FI_EAGAIN as isize),
                // SAFETY: see above; live ep, peer from the AV.
                Rma::Write(_, imm_data) => unsafe {
                    ffi::fi_writedata(
                        self.ep.as_ptr(),
                        ptr as *const c_void,
                        len,
                        desc,
                        imm_data,
                        peer,
                        addr,
                        key,
                        ctx(TAG_WRITE, 0),
                    )
                },
                // SAFETY: see above; live ep, peer from the AV.
                Rma::Read(_) => unsafe {
                    ffi::fi_read(
                        self.ep.as_ptr(),
                        ptr as *mut c_void,
                        len,
                        desc,
                        peer,
                        addr,
                        key,
                        ctx(TAG_READ, 0),
                    )
                },
            };
            let what = if reading { "fi_read" } else { "fi_writedata" };
            match posted(what, rc)? {
                Posted::Done => break,
                Posted::Again => {
                    events.clear();
                    self.poll_cq(&mut events)?;
                    for ev in events.drain(..) {
                        match ev {
                            // The end of a stale read into the stage.
                            Event::ReadDone | Event::ReadFailed { .. } if reading => {}
                            ev => other(ev)?,
                        }
                    }
                    spins += 1;
                    self.progress_others(spins);
                    if spins % 256 == 0 {
                        alive()?;
                        if Instant::now() >= deadline {
                            return Err(FabricError::Timeout {
                                op: if reading {
                                    "ofi read (provider busy)"
                                } else {
                                    "ofi write (provider busy)"
                                },
                                after: start.elapsed(),
                            });
                        }
                    }
                }
            }
        }
        if reading {
            self.read_pending = true;
        } else {
            self.write_pending = true;
        }
        let mut end = ReadEnd::Done;
        while self.rma_pending(reading) {
            events.clear();
            if let Err(e) = self.poll_cq(&mut events) {
                failure = Some(e);
                break;
            }
            for ev in events.drain(..) {
                match ev {
                    Event::WriteDone | Event::ReadDone => {}
                    Event::ReadFailed { code, msg } => end = ReadEnd::Failed { code, msg },
                    Event::Error { what: "write", msg } => {
                        failure = Some(FabricError::PeerGone(msg))
                    }
                    ev => {
                        if let Err(e) = other(ev) {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            spins += 1;
            // The operation may need its target to progress, and the
            // target may be waiting on one of our other endpoints.
            self.progress_others(spins);
            if spins % 256 == 0 {
                if let Err(e) = alive() {
                    failure = Some(e);
                    break;
                }
                if Instant::now() >= deadline {
                    failure = Some(FabricError::Timeout {
                        op: if reading {
                            "ofi read completion"
                        } else {
                            "ofi write completion"
                        },
                        after: start.elapsed(),
                    });
                    break;
                }
            }
        }
        if self.rma_pending(reading) {
            // The provider may still use the buffer: close the endpoint so
            // that it no longer does before we give the buffer back.
            self.close();
        }
        drop(local);
        match failure {
            Some(e) => Err(e),
            None => Ok(end),
        }
    }

    fn rma_pending(&self, reading: bool) -> bool {
        !self.closed
            && if reading {
                self.read_pending
            } else {
                self.write_pending
            }
    }

    /// Posts a read of `len` bytes at `addr`/`key` of the peer into the
    /// staging buffer, which grows to at least `len` bytes first (the
    /// caller bounds `len`). `Again`: a read is still in flight (one that
    /// timed out earlier) or the provider needs progress; retry after
    /// progress. The read ends with [`Event::ReadDone`] or
    /// [`Event::ReadFailed`] from [`Conn::poll_cq`].
    pub(in crate::ofi) fn post_read(
        &mut self,
        len: usize,
        addr: u64,
        key: u64,
    ) -> Result<Posted, FabricError> {
        let peer = self.peer()?;
        if self.read_pending {
            return Ok(Posted::Again);
        }
        if self.stage.as_ref().is_none_or(|s| s.len() < len) {
            // Nothing is in flight into the old stage (checked above): it
            // may go.
            self.stage = None;
            self.stage = Some(Stage::new(&self.domain, len)?);
        }
        let stage = self.stage.as_ref().expect("staging buffer set above");
        // SAFETY: live ep; the stage has at least `len` bytes (grown above)
        // and is owned by self; it is neither read (`staged`) nor freed
        // (regrowth, Drop) while `read_pending`, which stays set until the
        // read's completion is reaped or the endpoint is closed (Drop
        // closes the endpoint before the stage is freed).
        let rc = unsafe {
            ffi::fi_read(
                self.ep.as_ptr(),
                stage.buf.at(0) as *mut c_void,
                len,
                stage.desc(),
                peer,
                addr,
                key,
                ctx(TAG_READ, 0),
            )
        };
        let r = posted("fi_read", rc)?;
        if r == Posted::Done {
            self.read_pending = true;
        }
        Ok(r)
    }

    /// True while a posted read has not completed.
    pub(in crate::ofi) fn read_pending(&self) -> bool {
        self.read_pending
    }

    /// The first `len` bytes of the staging buffer, once no read is in
    /// flight into it.
    pub(in crate::ofi) fn staged(&self, len: usize) -> Option<&[u8]> {
        let stage = self.stage.as_ref()?;
        if self.read_pending || len > stage.len() {
            return None;
        }
        // SAFETY: in bounds (checked); no read is in flight (checked), so
        // the provider does not write the stage while this shared borrow
        // of self lives (posting a read needs &mut self).
        Some(unsafe { std::slice::from_raw_parts(stage.buf.at(0), len) })
    }
}
