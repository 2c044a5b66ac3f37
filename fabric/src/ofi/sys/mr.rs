//! Memory registrations: the regions rfx exposes to peers ([`Mr`]),
//! buffers of the caller's lent to peers for reads ([`LentMr`]), and
//! local buffers of providers that need them registered ([`LocalMr`]).

use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::domain::DomainObj;
use super::{check, ffi, fi_err, FabricError};
use crate::mr::MemoryRegion;

/// A registration peers use, held with its domain: closed once, in Drop,
/// after which the provider refuses accesses under its key. The shared
/// part of [`Mr`] and [`LentMr`].
#[derive(Debug)]
struct PeerMr {
    mr: NonNull<ffi::fid_mr>,
    domain: Arc<DomainObj>,
}

// SAFETY: the fid_mr is used only through the thread-safe domain and
// closed once, in Drop.
unsafe impl Send for PeerMr {}
// SAFETY: as above; `key` only reads it.
unsafe impl Sync for PeerMr {}

impl PeerMr {
    fn key(&self) -> u64 {
        // SAFETY: the MR is live until Drop.
        unsafe { ffi::fi_mr_key(self.mr.as_ptr()) }
    }
}

impl Drop for PeerMr {
    fn drop(&mut self) {
        let _ = &self.domain;
        // SAFETY: owned fid, closed once; the domain outlives it (Arc).
        unsafe { ffi::fi_close(&mut (*self.mr.as_ptr()).fid) };
    }
}

/// A registration of a [`MemoryRegion`] for remote writes and reads by
/// peers.
#[derive(Debug)]
pub(in crate::ofi) struct Mr {
    /// Declared first: closed before the mapping below is released.
    reg: PeerMr,
    /// Keeps the mapping alive while the provider may write into it.
    _region: MemoryRegion,
}

impl Mr {
    /// Registers all of `region` for remote writes and reads;
    /// `requested_key` is used when the provider lets the application
    /// choose keys.
    pub(in crate::ofi) fn register(
        domain: &Arc<DomainObj>,
        region: &MemoryRegion,
        requested_key: u64,
    ) -> Result<Mr, FabricError> {
        let mut access = u64::from(ffi::FI_REMOTE_WRITE | ffi::FI_REMOTE_READ);
        if domain.info.mr_local() {
            access |= u64::from(ffi::FI_WRITE | ffi::FI_SEND | ffi::FI_RECV);
        }
        // SAFETY: the region's mapping is live and at least `len` bytes
        // (max 1); `_region` keeps it mapped until this MR is closed in
        // Drop, so the provider never writes into freed memory.
        let mr = unsafe {
            reg(
                domain,
                region.as_mut_ptr(),
                region.len().max(1),
                access,
                requested_key,
                "fi_mr_reg",
            )
        }?;
        Ok(Mr {
            reg: PeerMr {
                mr,
                domain: domain.clone(),
            },
            _region: region.clone(),
        })
    }

    /// The key peers present.
    pub(in crate::ofi) fn key(&self) -> u64 {
        self.reg.key()
    }
}

/// A buffer of the caller's registered for the peers' reads only
/// (`FI_REMOTE_READ`), until dropped: a loan. Once closed, the provider
/// refuses reads under its key.
#[derive(Debug)]
pub(in crate::ofi) struct LentMr(PeerMr);

impl LentMr {
    /// Registers `len` bytes at `ptr` for remote read. Keys the provider
    /// lets the application choose come from a counter of the process,
    /// above the keys of exposed regions (32 bits).
    pub(in crate::ofi) fn register(
        domain: &Arc<DomainObj>,
        ptr: *const u8,
        len: usize,
    ) -> Result<LentMr, FabricError> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(1 << 40);
        let requested_key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        // SAFETY: fi_mr_reg takes the range by value. The provider reads
        // it only to serve a peer's fi_read: by DMA or the peer's
        // cross-memory attach, or (tcp) through the kernel's socket calls,
        // which fail with EFAULT rather than fault on a page unmapped
        // meanwhile; what the range holds is the lender's choice to show.
        let mr = unsafe {
            reg(
                domain,
                ptr,
                len.max(1),
                u64::from(ffi::FI_REMOTE_READ),
                requested_key,
                "fi_mr_reg (lent memory)",
            )
        }?;
        Ok(LentMr(PeerMr {
            mr,
            domain: domain.clone(),
        }))
    }

    /// The key the peer reads with.
    pub(in crate::ofi) fn key(&self) -> u64 {
        self.0.key()
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
        // SAFETY: `p..p+len` is memory that outlives this registration (the
        // caller closes it before freeing or releasing the memory).
        unsafe { reg(domain, p, len, access, 0, "fi_mr_reg (local)") }.map(LocalMr)
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

/// `fi_mr_reg` of `len` bytes at `p` in `domain`, with `access` and, where
/// the provider lets the application choose keys, `requested_key`.
///
/// # Safety
///
/// The provider may read or write `p..p+len` (as `access` allows) until
/// the returned registration is closed: the memory must stay valid that
/// long, or be memory whose later use the caller has accounted for.
unsafe fn reg(
    domain: &DomainObj,
    p: *const u8,
    len: usize,
    access: u64,
    requested_key: u64,
    what: &'static str,
) -> Result<NonNull<ffi::fid_mr>, FabricError> {
    let mut mr: *mut ffi::fid_mr = ptr::null_mut();
    // SAFETY: live domain; `mr` receives the registration; the memory's
    // validity is the caller's contract.
    let rc = unsafe {
        ffi::fi_mr_reg(
            domain.domain.as_ptr(),
            p as *const c_void,
            len,
            access,
            0,
            requested_key,
            0,
            &mut mr,
            ptr::null_mut(),
        )
    };
    check(what, rc)?;
    NonNull::new(mr).ok_or_else(|| fi_err(what, -1))
}
