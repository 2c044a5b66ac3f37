//! An opened fabric and domain.

use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

use super::info::Info;
use super::{check, ffi, fi_err, FabricError};

/// An opened fabric and domain (one per provider and interface).
#[derive(Debug)]
pub(in crate::ofi) struct DomainObj {
    pub(super) fabric: NonNull<ffi::fid_fabric>,
    pub(super) domain: NonNull<ffi::fid_domain>,
    pub(in crate::ofi) info: Info,
    /// The completion queues of this domain's open endpoints (addresses),
    /// for [`DomainObj::progress_others`]. An endpoint's CQ is listed from
    /// its open until its close, which takes this lock first.
    cqs: Mutex<Vec<usize>>,
}

// SAFETY: the domain was opened with FI_THREAD_SAFE, so libfabric
// serialises concurrent calls on it and its objects; the pointers are
// closed once, in Drop, after every user (held by Arc) is gone.
unsafe impl Send for DomainObj {}
// SAFETY: as above.
unsafe impl Sync for DomainObj {}

impl DomainObj {
    pub(in crate::ofi) fn open(info: Info) -> Result<DomainObj, FabricError> {
        let mut fabric: *mut ffi::fid_fabric = ptr::null_mut();
        // SAFETY: fabric_attr belongs to the live `info`; `fabric` receives
        // a new object that we own.
        check("fi_fabric", unsafe {
            ffi::fi_fabric(info.raw().fabric_attr, &mut fabric, ptr::null_mut())
        })?;
        let fabric = NonNull::new(fabric).ok_or_else(|| fi_err("fi_fabric", -1))?;
        let mut domain: *mut ffi::fid_domain = ptr::null_mut();
        // SAFETY: `fabric` is live; `info` is the entry it was opened from.
        let rc = unsafe {
            ffi::fi_domain(
                fabric.as_ptr(),
                info.0.as_ptr(),
                &mut domain,
                ptr::null_mut(),
            )
        };
        let domain = match (rc, NonNull::new(domain)) {
            (0, Some(d)) => d,
            _ => {
                // SAFETY: `fabric` is owned here and closed once.
                unsafe { ffi::fi_close(&mut (*fabric.as_ptr()).fid) };
                return Err(fi_err("fi_domain", rc.min(-1).into()));
            }
        };
        Ok(DomainObj {
            fabric,
            domain,
            info,
            cqs: Mutex::new(Vec::new()),
        })
    }

    /// Lists `cq` (just opened) for [`DomainObj::progress_others`].
    pub(super) fn track_cq(&self, cq: NonNull<ffi::fid_cq>) {
        self.cqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cq.as_ptr() as usize);
    }

    /// Takes `cq` off the list; call before closing it.
    pub(super) fn untrack_cq(&self, cq: NonNull<ffi::fid_cq>) {
        let mut cqs = self.cqs.lock().unwrap_or_else(|e| e.into_inner());
        cqs.retain(|&c| c != cq.as_ptr() as usize);
    }

    /// Drives the provider's progress on every other endpoint of this
    /// process and domain, without taking their completions (a read of
    /// zero entries: libfabric's util CQs progress their endpoints first,
    /// and leave every entry where it is).
    ///
    /// Why: a blocking post whose completion needs the target's progress
    /// (libfabric's `shm` finishes an RMA write larger than its inject size
    /// when the target's endpoint processes it) may wait on a peer that is
    /// itself waiting, in a post to a third rank, on ours. Each endpoint
    /// progressing only itself deadlocks such a cycle (allgather and
    /// alltoall on 4 ranks did, until the op timeout).
    pub(in crate::ofi) fn progress_others(&self, own: NonNull<ffi::fid_cq>) {
        let cqs = self.cqs.lock().unwrap_or_else(|e| e.into_inner());
        let mut none: [ffi::fi_cq_data_entry; 1] = Default::default();
        for &cq in cqs.iter().filter(|&&c| c != own.as_ptr() as usize) {
            // SAFETY: a listed CQ is open (closing takes it off the list
            // under this lock first); the domain is FI_THREAD_SAFE, so its
            // owner may poll it at the same time; a count of 0 reads no
            // entry into `none`.
            unsafe { ffi::fi_cq_read(cq as *mut ffi::fid_cq, none.as_mut_ptr() as *mut c_void, 0) };
        }
    }
}

impl Drop for DomainObj {
    fn drop(&mut self) {
        // SAFETY: every object opened on the domain holds an Arc to it, so
        // none is left; each fid is closed once, domain before fabric.
        unsafe {
            ffi::fi_close(&mut (*self.domain.as_ptr()).fid);
            ffi::fi_close(&mut (*self.fabric.as_ptr()).fid);
        }
    }
}
