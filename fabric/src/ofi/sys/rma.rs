//! One-sided operations: the blocking write and the staged read.

use std::os::raw::c_void;
use std::ptr;
use std::time::Instant;

use super::buf::Stage;
use super::conn::Conn;
use super::cq::Event;
use super::mr::LocalMr;
use super::{ctx, ffi, posted, FabricError, Posted, TAG_READ, TAG_WRITE};

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
        mut other: impl FnMut(Event) -> Result<(), FabricError>,
        mut alive: impl FnMut() -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
        let start = Instant::now();
        let peer = self.peer()?;
        let local = if self.domain.info.mr_local() {
            Some(LocalMr::register(
                &self.domain,
                data.as_ptr(),
                data.len().max(1),
                u64::from(ffi::FI_WRITE),
            )?)
        } else {
            None
        };
        let desc = local.as_ref().map_or(ptr::null_mut(), |m| m.desc());
        let mut events = Vec::with_capacity(16);
        let mut spins = 0u32;
        // Post, retrying while the provider asks for progress.
        loop {
            // SAFETY: `data` stays borrowed until this function returns,
            // and it returns only after the write's completion was reaped
            // or the endpoint was closed (`close`, below), so the provider
            // never reads it afterwards; `local` (if any) is closed after.
            let rc = unsafe {
                ffi::fi_writedata(
                    self.ep.as_ptr(),
                    data.as_ptr() as *const c_void,
                    data.len(),
                    desc,
                    imm_data,
                    peer,
                    addr,
                    key,
                    ctx(TAG_WRITE, 0),
                )
            };
            match posted("fi_writedata", rc)? {
                Posted::Done => break,
                Posted::Again => {
                    self.drain(&mut events, &mut other)?;
                    spins += 1;
                    self.progress_others(spins);
                    if spins % 256 == 0 {
                        alive()?;
                        if Instant::now() >= deadline {
                            return Err(FabricError::Timeout {
                                op: "ofi write (provider busy)",
                                after: start.elapsed(),
                            });
                        }
                    }
                }
            }
        }
        self.write_pending = true;
        let mut failure = None;
        while self.write_pending {
            events.clear();
            if let Err(e) = self.poll_cq(&mut events) {
                failure = Some(e);
                break;
            }
            for ev in events.drain(..) {
                match ev {
                    Event::WriteDone => {}
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
            // The write may need its target to progress, and the target
            // may be waiting on one of our other endpoints.
            self.progress_others(spins);
            if spins % 256 == 0 {
                if let Err(e) = alive() {
                    failure = Some(e);
                    break;
                }
                if Instant::now() >= deadline {
                    failure = Some(FabricError::Timeout {
                        op: "ofi write completion",
                        after: start.elapsed(),
                    });
                    break;
                }
            }
        }
        if self.write_pending {
            // The provider may still read `data`: close the endpoint so
            // that it no longer does before we give the buffer back.
            self.close();
        }
        drop(local);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn drain(
        &mut self,
        events: &mut Vec<Event>,
        other: &mut impl FnMut(Event) -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
        events.clear();
        self.poll_cq(events)?;
        for ev in events.drain(..) {
            other(ev)?;
        }
        Ok(())
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
