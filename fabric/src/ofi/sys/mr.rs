//! Memory registrations: the regions rfx exposes to peers ([`Mr`]) and
//! local buffers of providers that need them registered ([`LocalMr`]).

use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use super::domain::DomainObj;
use super::{check, ffi, fi_err, FabricError};
use crate::mr::MemoryRegion;

/// A registration of a [`MemoryRegion`] for remote writes and reads by
/// peers.
#[derive(Debug)]
pub(in crate::ofi) struct Mr {
    mr: NonNull<ffi::fid_mr>,
    /// Keeps the mapping alive while the provider may write into it.
    _region: MemoryRegion,
    domain: Arc<DomainObj>,
}

// SAFETY: the fid_mr is used only through the thread-safe domain and
// closed once, in Drop.
unsafe impl Send for Mr {}
// SAFETY: as above; `key` only reads it.
unsafe impl Sync for Mr {}

impl Mr {
    /// Registers all of `region` for remote writes and reads;
    /// `requested_key` is used when the provider lets the application
    /// choose keys.
    pub(in crate::ofi) fn register(
        domain: &Arc<DomainObj>,
        region: &MemoryRegion,
        requested_key: u64,
    ) -> Result<Mr, FabricError> {
        let mut mr: *mut ffi::fid_mr = ptr::null_mut();
        let mut access = u64::from(ffi::FI_REMOTE_WRITE | ffi::FI_REMOTE_READ);
        if domain.info.mr_local() {
            access |= u64::from(ffi::FI_WRITE | ffi::FI_SEND | ffi::FI_RECV);
        }
        // SAFETY: the region's mapping is live and at least `len` bytes
        // (max 1); `_region` keeps it mapped until this MR is closed in
        // Drop, so the provider never writes into freed memory.
        let rc = unsafe {
            ffi::fi_mr_reg(
                domain.domain.as_ptr(),
                region.as_mut_ptr() as *const c_void,
                region.len().max(1),
                access,
                0,
                requested_key,
                0,
                &mut mr,
                ptr::null_mut(),
            )
        };
        check("fi_mr_reg", rc)?;
        let mr = NonNull::new(mr).ok_or_else(|| fi_err("fi_mr_reg", -1))?;
        Ok(Mr {
            mr,
            _region: region.clone(),
            domain: domain.clone(),
        })
    }

    /// The key peers present.
    pub(in crate::ofi) fn key(&self) -> u64 {
        // SAFETY: the MR is live until Drop.
        unsafe { ffi::fi_mr_key(self.mr.as_ptr()) }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        let _ = &self.domain;
        // SAFETY: owned fid, closed once; the domain outlives it (Arc).
        unsafe { ffi::fi_close(&mut (*self.mr.as_ptr()).fid) };
    }
}

/// A local registration (FI_MR_LOCAL providers) of a buffer owned here.
#[derive(Debug)]
pub(super) struct LocalMr(NonNull<ffi::fid_mr>);

impl LocalMr {
    pub(super) fn register(
        domain: &DomainObj,
        p: *const u8,
        len: usize,
        access: u64,
    ) -> Result<LocalMr, FabricError> {
        let mut mr: *mut ffi::fid_mr = ptr::null_mut();
        // SAFETY: `p..p+len` is memory that outlives this registration (the
        // caller closes it before freeing or releasing the memory).
        check("fi_mr_reg (local)", unsafe {
            ffi::fi_mr_reg(
                domain.domain.as_ptr(),
                p as *const c_void,
                len,
                access,
                0,
                0,
                0,
                &mut mr,
                ptr::null_mut(),
            )
        })?;
        NonNull::new(mr)
            .map(LocalMr)
            .ok_or_else(|| fi_err("fi_mr_reg", -1))
    }

    pub(super) fn desc(&self) -> *mut c_void {
        // SAFETY: live MR.
        unsafe { ffi::fi_mr_desc(self.0.as_ptr()) }
    }
}

impl Drop for LocalMr {
    fn drop(&mut self) {
        // SAFETY: owned fid, closed once.
        unsafe { ffi::fi_close(&mut (*self.0.as_ptr()).fid) };
    }
}
