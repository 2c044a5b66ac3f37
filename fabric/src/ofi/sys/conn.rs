//! One RDM endpoint: opening, addressing, receive slots and sends.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use super::buf::{RawBuf, Stage};
use super::domain::DomainObj;
use super::mr::LocalMr;
use super::{check, ctx, ffi, fi_err, posted, strerror, FabricError, Posted, TAG_RX, TAG_TX};

/// Sizes of a connection's buffers.
#[derive(Debug, Clone, Copy)]
pub(in crate::ofi) struct Shape {
    pub(in crate::ofi) slot_size: usize,
    pub(in crate::ofi) rx_slots: usize,
    pub(in crate::ofi) tx_bufs: usize,
}

/// One RDM endpoint with its completion queue, address vector, receive
/// slots and send buffers.
#[derive(Debug)]
pub(in crate::ofi) struct Conn {
    pub(super) ep: NonNull<ffi::fid_ep>,
    pub(super) av: NonNull<ffi::fid_av>,
    pub(super) cq: NonNull<ffi::fid_cq>,
    pub(super) wait_fd: Option<RawFd>,
    pub(super) peer: Option<ffi::fi_addr_t>,
    pub(super) shape: Shape,
    pub(super) inject_size: usize,
    pub(super) rx: RawBuf,
    pub(super) rx_posted: Vec<bool>,
    pub(super) rx_mr: Option<LocalMr>,
    pub(super) tx: RawBuf,
    pub(super) tx_busy: Vec<bool>,
    pub(super) tx_free: Vec<usize>,
    pub(super) tx_mr: Option<LocalMr>,
    pub(super) write_pending: bool,
    /// Where reads land, grown on demand (see [`Conn::post_read`]).
    pub(super) stage: Option<Stage>,
    /// A read into `stage` is posted and not completed: the provider may
    /// still write the stage, which is therefore neither read nor freed.
    pub(super) read_pending: bool,
    pub(super) closed: bool,
    pub(super) domain: Arc<DomainObj>,
}

/// Spins of a waiting post or read between two progress calls on the
/// other endpoints of the domain ([`Conn::progress_others`]).
const PROGRESS_OTHERS_EVERY: u32 = 16;

// SAFETY: all objects belong to a FI_THREAD_SAFE domain; the buffers are
// owned; `&mut self` serialises the endpoint's use. Moving it between
// threads is fine.
unsafe impl Send for Conn {}

impl Conn {
    /// Opens an endpoint; `wait_fd`: ask for a CQ wait fd (warm mode
    /// sleeps on it), else warm mode sleep-polls.
    pub(in crate::ofi) fn open(
        domain: &Arc<DomainObj>,
        shape: Shape,
        wait_fd: bool,
        name: Option<&CStr>,
    ) -> Result<Conn, FabricError> {
        let info = &domain.info;
        let mut cq_attr = ffi::fi_cq_attr {
            size: (shape.rx_slots + shape.tx_bufs) * 4 + 64,
            format: ffi::fi_cq_format_FI_CQ_FORMAT_DATA,
            wait_obj: if wait_fd {
                ffi::fi_wait_obj_FI_WAIT_FD
            } else {
                ffi::fi_wait_obj_FI_WAIT_NONE
            },
            ..Default::default()
        };
        let mut cq: *mut ffi::fid_cq = ptr::null_mut();
        // SAFETY: live domain; attr on the stack for the call; `cq` receives
        // an owned object.
        let mut rc = unsafe {
            ffi::fi_cq_open(
                domain.domain.as_ptr(),
                &mut cq_attr,
                &mut cq,
                ptr::null_mut(),
            )
        };
        if rc != 0 {
            // No wait fd: fall back to polling (warm mode sleeps and polls).
            tracing::debug!("fi_cq_open with FI_WAIT_FD: {}", strerror(rc.into()));
            cq_attr.wait_obj = ffi::fi_wait_obj_FI_WAIT_NONE;
            // SAFETY: as above.
            rc = unsafe {
                ffi::fi_cq_open(
                    domain.domain.as_ptr(),
                    &mut cq_attr,
                    &mut cq,
                    ptr::null_mut(),
                )
            };
        }
        check("fi_cq_open", rc)?;
        let cq = NonNull::new(cq).ok_or_else(|| fi_err("fi_cq_open", -1))?;
        let mut wait_fd: Option<RawFd> = None;
        if cq_attr.wait_obj == ffi::fi_wait_obj_FI_WAIT_FD {
            let mut fd: i32 = -1;
            // SAFETY: FI_GETWAIT on a CQ with FI_WAIT_FD writes an int fd
            // owned by the CQ (valid until the CQ is closed).
            let rc = unsafe {
                ffi::fi_control(
                    &mut (*cq.as_ptr()).fid,
                    ffi::FI_GETWAIT as i32,
                    &mut fd as *mut i32 as *mut c_void,
                )
            };
            if rc == 0 && fd >= 0 {
                wait_fd = Some(fd);
            }
        }
        let close_cq = |cq: NonNull<ffi::fid_cq>| {
            // SAFETY: owned fid, closed once on this error path.
            unsafe { ffi::fi_close(&mut (*cq.as_ptr()).fid) };
        };
        let mut av_attr = ffi::fi_av_attr {
            count: 4,
            ..Default::default()
        };
        let mut av: *mut ffi::fid_av = ptr::null_mut();
        // SAFETY: live domain; attr on the stack; `av` receives an owned object.
        let rc = unsafe {
            ffi::fi_av_open(
                domain.domain.as_ptr(),
                &mut av_attr,
                &mut av,
                ptr::null_mut(),
            )
        };
        let av = match (rc, NonNull::new(av)) {
            (0, Some(av)) => av,
            _ => {
                close_cq(cq);
                return Err(fi_err("fi_av_open", rc.min(-1).into()));
            }
        };
        let mut ep: *mut ffi::fid_ep = ptr::null_mut();
        // SAFETY: live domain and the info it was opened from.
        let rc = unsafe {
            ffi::fi_endpoint(
                domain.domain.as_ptr(),
                info.0.as_ptr(),
                &mut ep,
                ptr::null_mut(),
            )
        };
        let ep = match (rc, NonNull::new(ep)) {
            (0, Some(ep)) => ep,
            _ => {
                // SAFETY: owned fid, closed once on this error path.
                unsafe { ffi::fi_close(&mut (*av.as_ptr()).fid) };
                close_cq(cq);
                return Err(fi_err("fi_endpoint", rc.min(-1).into()));
            }
        };
        let rx = RawBuf::new(shape.slot_size * shape.rx_slots)?;
        let tx = RawBuf::new(shape.slot_size * shape.tx_bufs)?;
        // From here on Drop closes everything.
        let mut conn = Conn {
            ep,
            av,
            cq,
            wait_fd,
            peer: None,
            shape,
            inject_size: info.inject_size(),
            rx_posted: vec![false; shape.rx_slots],
            rx,
            rx_mr: None,
            tx_busy: vec![false; shape.tx_bufs],
            tx_free: (0..shape.tx_bufs).rev().collect(),
            tx,
            tx_mr: None,
            write_pending: false,
            stage: None,
            read_pending: false,
            closed: false,
            domain: domain.clone(),
        };
        // SAFETY: ep, cq and av are live objects of the same domain; `name`
        // is a NUL-terminated string that outlives the call.
        unsafe {
            check(
                "fi_ep_bind (cq)",
                ffi::fi_ep_bind(
                    ep.as_ptr(),
                    &mut (*cq.as_ptr()).fid,
                    u64::from(ffi::FI_TRANSMIT | ffi::FI_RECV),
                ),
            )?;
            check(
                "fi_ep_bind (av)",
                ffi::fi_ep_bind(ep.as_ptr(), &mut (*av.as_ptr()).fid, 0),
            )?;
            if let Some(name) = name {
                // The provider copies the NUL-terminated name (shm's
                // `smr_setname` strdups it) before it returns.
                check(
                    "fi_setname",
                    ffi::fi_setname(
                        &mut (*ep.as_ptr()).fid,
                        name.as_ptr() as *mut c_void,
                        name.to_bytes_with_nul().len(),
                    ),
                )?;
            }
            check("fi_enable", ffi::fi_enable(ep.as_ptr()))?;
        }
        if info.mr_local() {
            let access = u64::from(ffi::FI_SEND | ffi::FI_RECV);
            conn.rx_mr = Some(LocalMr::register(
                domain,
                conn.rx.at(0),
                conn.rx.layout.size(),
                access,
            )?);
            conn.tx_mr = Some(LocalMr::register(
                domain,
                conn.tx.at(0),
                conn.tx.layout.size(),
                access,
            )?);
        }
        domain.track_cq(conn.cq);
        Ok(conn)
    }

    /// The endpoint's address, for the peer's address vector.
    pub(in crate::ofi) fn name(&self) -> Result<Vec<u8>, FabricError> {
        let mut buf = vec![0u8; 256];
        let mut len = buf.len();
        // SAFETY: live ep; `buf` has `len` writable bytes, `len` is updated.
        let rc = unsafe {
            ffi::fi_getname(
                &mut (*self.ep.as_ptr()).fid,
                buf.as_mut_ptr() as *mut c_void,
                &mut len,
            )
        };
        check("fi_getname", rc)?;
        buf.truncate(len.min(256));
        Ok(buf)
    }

    /// Inserts the peer's address; every later post goes there.
    pub(in crate::ofi) fn set_peer(&mut self, addr: &[u8]) -> Result<(), FabricError> {
        if addr.is_empty() || addr.len() > 256 {
            return Err(FabricError::Handshake(format!(
                "peer's libfabric address has {} bytes",
                addr.len()
            )));
        }
        // Providers read as many bytes as their address format says: pad.
        let mut padded = addr.to_vec();
        padded.resize(256, 0);
        let mut fi_addr: ffi::fi_addr_t = 0;
        // SAFETY: live av; `padded` outlives the synchronous call.
        let n = unsafe {
            ffi::fi_av_insert(
                self.av.as_ptr(),
                padded.as_ptr() as *const c_void,
                1,
                &mut fi_addr,
                0,
                ptr::null_mut(),
            )
        };
        if n != 1 {
            return Err(FabricError::Handshake(format!(
                "fi_av_insert of the peer's address failed: {}",
                strerror(n.min(-1).into())
            )));
        }
        self.peer = Some(fi_addr);
        Ok(())
    }

    pub(super) fn peer(&self) -> Result<ffi::fi_addr_t, FabricError> {
        if self.closed {
            return Err(FabricError::PeerGone("endpoint closed".into()));
        }
        self.peer
            .ok_or_else(|| FabricError::Handshake("no peer address".into()))
    }

    pub(in crate::ofi) fn slot_size(&self) -> usize {
        self.shape.slot_size
    }

    fn rx_desc(&self) -> *mut c_void {
        self.rx_mr.as_ref().map_or(ptr::null_mut(), |m| m.desc())
    }

    fn tx_desc(&self) -> *mut c_void {
        self.tx_mr.as_ref().map_or(ptr::null_mut(), |m| m.desc())
    }

    /// Posts receive slot `slot` (not posted now).
    pub(in crate::ofi) fn post_recv(&mut self, slot: usize) -> Result<Posted, FabricError> {
        if self.closed || slot >= self.shape.rx_slots || self.rx_posted[slot] {
            return Err(FabricError::os(
                "fi_recv",
                std::io::Error::other("slot not available"),
            ));
        }
        let size = self.shape.slot_size;
        // SAFETY: the slot lies inside `rx`, owned by self and freed only
        // after the endpoint is closed (Drop); it is not posted (checked),
        // and `rx_slot` hands out no view of it until its completion.
        let rc = unsafe {
            ffi::fi_recv(
                self.ep.as_ptr(),
                self.rx.at(slot * size) as *mut c_void,
                size,
                self.rx_desc(),
                u64::MAX, // FI_ADDR_UNSPEC
                ctx(TAG_RX, slot),
            )
        };
        let r = posted("fi_recv", rc)?;
        if r == Posted::Done {
            self.rx_posted[slot] = true;
        }
        Ok(r)
    }

    /// The bytes a completed (not re-posted) receive slot holds.
    pub(in crate::ofi) fn rx_slot(&self, slot: usize, len: usize) -> Option<&[u8]> {
        if slot >= self.shape.rx_slots || self.rx_posted[slot] || len > self.shape.slot_size {
            return None;
        }
        // SAFETY: in bounds (checked); the slot is not posted, so the
        // provider does not write it while the shared borrow of self lives
        // (posting needs &mut self).
        Some(unsafe { std::slice::from_raw_parts(self.rx.at(slot * self.shape.slot_size), len) })
    }

    /// Sends `parts` concatenated (at most one slot) without waiting:
    /// injected when small, else copied into a free send buffer.
    /// `Again`: no buffer or the provider is busy; progress, then retry.
    /// Without `inject_ok` the record always gets a completion.
    pub(in crate::ofi) fn send(
        &mut self,
        parts: &[&[u8]],
        inject_ok: bool,
    ) -> Result<Posted, FabricError> {
        let peer = self.peer()?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.shape.slot_size {
            return Err(FabricError::TooLarge {
                len,
                max: self.shape.slot_size,
            });
        }
        if inject_ok && len <= self.inject_size && len <= 512 {
            let mut buf = [0u8; 512];
            let mut off = 0;
            for p in parts {
                buf[off..off + p.len()].copy_from_slice(p);
                off += p.len();
            }
            // SAFETY: live ep; inject copies `len` bytes of `buf` before it
            // returns (that is its contract), so the stack buffer may die.
            let rc = unsafe {
                ffi::fi_inject(self.ep.as_ptr(), buf.as_ptr() as *const c_void, len, peer)
            };
            return posted("fi_inject", rc);
        }
        let Some(i) = self.tx_free.pop() else {
            return Ok(Posted::Again);
        };
        let base = self.tx.at(i * self.shape.slot_size);
        let mut off = 0;
        for p in parts {
            // SAFETY: buffer `i` is free (not in flight): nobody else reads
            // or writes it; off + p.len() <= len <= slot_size (checked).
            unsafe { ptr::copy_nonoverlapping(p.as_ptr(), base.add(off), p.len()) };
            off += p.len();
        }
        // SAFETY: buffer `i` is owned by self and marked busy until its
        // completion (SendDone) or the endpoint's close; freed only in Drop
        // after the endpoint is closed.
        let rc = unsafe {
            ffi::fi_send(
                self.ep.as_ptr(),
                base as *const c_void,
                len,
                self.tx_desc(),
                peer,
                ctx(TAG_TX, i),
            )
        };
        match posted("fi_send", rc) {
            Ok(Posted::Done) => {
                self.tx_busy[i] = true;
                Ok(Posted::Done)
            }
            other => {
                self.tx_free.push(i);
                other
            }
        }
    }

    /// Drives the other endpoints of this domain (see
    /// [`DomainObj::progress_others`]) on every
    /// [`PROGRESS_OTHERS_EVERY`]th spin of a wait: for waits whose end may
    /// need a peer that waits on one of them.
    pub(in crate::ofi) fn progress_others(&self, spins: u32) {
        if spins % PROGRESS_OTHERS_EVERY == 0 {
            self.domain.progress_others(self.cq);
        }
    }

    /// Tests: no other endpoint's wait drives this one any more, as when
    /// it belongs to another process.
    #[cfg(test)]
    pub(in crate::ofi) fn keep_apart(&self) {
        self.domain.untrack_cq(self.cq);
    }

    /// Send buffers in flight.
    pub(in crate::ofi) fn tx_in_flight(&self) -> usize {
        self.shape.tx_bufs - self.tx_free.len()
    }

    /// Closes the endpoint now: no operation touches our buffers after.
    pub(in crate::ofi) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            // SAFETY: owned ep, closed once (the flag); the CQ, AV and
            // buffers stay until Drop.
            unsafe { ffi::fi_close(&mut (*self.ep.as_ptr()).fid) };
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
        self.domain.untrack_cq(self.cq);
        // SAFETY: the endpoint is closed, so nothing uses the AV, CQ or
        // buffers any more; each fid is closed once; local MRs (fields)
        // and buffers are dropped after this body.
        unsafe {
            ffi::fi_close(&mut (*self.av.as_ptr()).fid);
            ffi::fi_close(&mut (*self.cq.as_ptr()).fid);
        }
        self.rx_mr = None;
        self.tx_mr = None;
    }
}
