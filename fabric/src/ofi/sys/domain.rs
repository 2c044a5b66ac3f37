//! An opened fabric and domain.

use std::ptr::{self, NonNull};

use super::info::Info;
use super::{check, ffi, fi_err, FabricError};

/// An opened fabric and domain (one per provider and interface).
#[derive(Debug)]
pub(in crate::ofi) struct DomainObj {
    pub(super) fabric: NonNull<ffi::fid_fabric>,
    pub(super) domain: NonNull<ffi::fid_domain>,
    pub(in crate::ofi) info: Info,
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
        })
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
