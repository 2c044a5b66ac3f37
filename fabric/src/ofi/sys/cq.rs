//! Completions: reading and decoding the CQ, and waiting on it.

use std::os::fd::BorrowedFd;
use std::os::raw::c_void;

use super::conn::Conn;
use super::{ffi, fi_err, strerror, unctx, FabricError, TAG_READ, TAG_RX, TAG_TX, TAG_WRITE};

/// Completions read by one `fi_cq_read`.
pub(in crate::ofi) const CQ_BATCH: usize = 16;

/// A completion, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::ofi) enum Event {
    /// Receive slot `slot` holds `len` bytes.
    Recv { slot: usize, len: usize },
    /// Send buffer `buf` is free again.
    SendDone,
    /// The blocking write finished.
    WriteDone,
    /// The read into the staging buffer finished: [`Conn::staged`] holds
    /// its bytes.
    ReadDone,
    /// The read failed; `code` is libfabric's (positive) error number.
    ReadFailed { code: i32, msg: String },
    /// A peer's write with remote CQ data landed.
    RemoteWrite { data: u64 },
    /// An operation failed (`what` says which).
    Error { what: &'static str, msg: String },
}

impl Conn {
    /// Reads up to `out.capacity()` completions into `out`.
    pub(in crate::ofi) fn poll_cq(&mut self, out: &mut Vec<Event>) -> Result<(), FabricError> {
        if self.closed {
            return Ok(());
        }
        let mut entries: [ffi::fi_cq_data_entry; CQ_BATCH] = Default::default();
        // SAFETY: live cq of FI_CQ_FORMAT_DATA; `entries` has room for 16.
        let n = unsafe {
            ffi::fi_cq_read(
                self.cq.as_ptr(),
                entries.as_mut_ptr() as *mut c_void,
                entries.len(),
            )
        };
        if n > 0 {
            for e in &entries[..(n as usize).min(entries.len())] {
                out.push(self.decode(e.op_context, e.flags, e.len, e.data));
            }
            return Ok(());
        }
        if n == -(ffi::FI_EAGAIN as isize) || n == 0 {
            return Ok(());
        }
        if n == -(ffi::FI_EAVAIL as isize) {
            let mut err = ffi::fi_cq_err_entry::default();
            // SAFETY: live cq; `err` is a zeroed entry (err_data null, so
            // the provider uses its own buffer).
            let r = unsafe { ffi::fi_cq_readerr(self.cq.as_ptr(), &mut err, 0) };
            if r < 1 {
                return Ok(());
            }
            let (tag, index) = unctx(err.op_context);
            let what = match tag {
                TAG_RX => {
                    if let Some(p) = self.rx_posted.get_mut(index) {
                        *p = false;
                    }
                    "receive"
                }
                TAG_TX => {
                    self.release_tx(index);
                    "send"
                }
                TAG_WRITE => {
                    self.write_pending = false;
                    "write"
                }
                TAG_READ => {
                    self.read_pending = false;
                    "read"
                }
                _ => "operation",
            };
            let msg = format!(
                "{what} failed: {} (provider error {})",
                strerror(err.err.into()),
                err.prov_errno
            );
            // A receive cancelled at close is not news.
            if tag == TAG_RX && err.err.unsigned_abs() == ffi::FI_ECANCELED {
                return Ok(());
            }
            if tag == TAG_READ {
                out.push(Event::ReadFailed { code: err.err, msg });
            } else {
                out.push(Event::Error { what, msg });
            }
            return Ok(());
        }
        Err(fi_err("fi_cq_read", n as i64))
    }

    pub(super) fn release_tx(&mut self, i: usize) {
        if let Some(b) = self.tx_busy.get_mut(i) {
            if *b {
                *b = false;
                self.tx_free.push(i);
            }
        }
    }

    fn decode(&mut self, op_context: *mut c_void, flags: u64, len: usize, data: u64) -> Event {
        let recv = flags & u64::from(ffi::FI_RECV) != 0;
        // Remote write with immediate: judged by the flag and the data,
        // never by the length (tcp reports 0) or the context (none).
        if !recv && flags & u64::from(ffi::FI_REMOTE_CQ_DATA) != 0 {
            return Event::RemoteWrite { data };
        }
        let (tag, index) = unctx(op_context);
        match tag {
            TAG_RX if index < self.shape.rx_slots && self.rx_posted[index] => {
                self.rx_posted[index] = false;
                Event::Recv { slot: index, len }
            }
            TAG_TX => {
                self.release_tx(index);
                Event::SendDone
            }
            TAG_WRITE => {
                self.write_pending = false;
                Event::WriteDone
            }
            TAG_READ if self.read_pending => {
                self.read_pending = false;
                Event::ReadDone
            }
            _ => Event::Error {
                what: "completion",
                msg: format!("unexpected completion (flags {flags:#x}, context {op_context:p})"),
            },
        }
    }

    /// The CQ's wait fd, if the provider has one.
    pub(in crate::ofi) fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to the CQ, open until the CQ is closed in
        // Drop, which the returned borrow of self outlives not.
        self.wait_fd
            .filter(|_| !self.closed)
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// `fi_trywait`: true when sleeping on the wait fd is safe (nothing is
    /// pending that only a CQ read would surface).
    pub(in crate::ofi) fn trywait(&mut self) -> bool {
        if self.wait_fd.is_none() || self.closed {
            return false;
        }
        let mut fids = [
            // SAFETY: live cq; taking the address of its embedded fid.
            unsafe { &mut (*self.cq.as_ptr()).fid as *mut ffi::fid },
        ];
        // SAFETY: live fabric (held by the domain Arc) and a one-entry
        // array of live fids.
        let rc = unsafe { ffi::fi_trywait(self.domain.fabric.as_ptr(), fids.as_mut_ptr(), 1) };
        rc == 0
    }
}
