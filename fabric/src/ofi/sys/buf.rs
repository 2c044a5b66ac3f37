//! Memory owned here and handed to the provider by pointer: receive
//! slots and send buffers ([`RawBuf`]), and where reads land ([`Stage`]).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use super::domain::DomainObj;
use super::mr::LocalMr;
use super::{ffi, FabricError};

/// Page-aligned memory owned here, handed to the provider by pointer.
#[derive(Debug)]
pub(super) struct RawBuf {
    pub(super) ptr: NonNull<u8>,
    pub(super) layout: Layout,
}

impl RawBuf {
    pub(super) fn new(len: usize) -> Result<RawBuf, FabricError> {
        let layout = Layout::from_size_align(len.max(1), 4096)
            .map_err(|e| FabricError::os("buffer layout", std::io::Error::other(e)))?;
        // SAFETY: layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            FabricError::os(
                "alloc",
                std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            )
        })?;
        Ok(RawBuf { ptr, layout })
    }

    pub(super) fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.layout.size());
        // SAFETY: callers pass offsets inside the allocation.
        unsafe { self.ptr.as_ptr().add(off) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The landing buffer of reads, registered for local reads when the
/// provider needs it (FI_MR_LOCAL).
#[derive(Debug)]
pub(super) struct Stage {
    /// Declared before `buf`: the registration closes before the memory
    /// is freed.
    pub(super) mr: Option<LocalMr>,
    pub(super) buf: RawBuf,
}

impl Stage {
    /// Smallest staging buffer: small reads share one allocation.
    const MIN: usize = 64 << 10;

    pub(super) fn new(domain: &DomainObj, len: usize) -> Result<Stage, FabricError> {
        let size = len
            .max(Self::MIN)
            .checked_next_power_of_two()
            .unwrap_or(len);
        let buf = RawBuf::new(size)?;
        let mr = if domain.info.mr_local() {
            Some(LocalMr::register(
                domain,
                buf.at(0),
                buf.layout.size(),
                u64::from(ffi::FI_READ),
            )?)
        } else {
            None
        };
        Ok(Stage { mr, buf })
    }

    pub(super) fn len(&self) -> usize {
        self.buf.layout.size()
    }

    pub(super) fn desc(&self) -> *mut c_void {
        self.mr.as_ref().map_or(ptr::null_mut(), |m| m.desc())
    }
}
