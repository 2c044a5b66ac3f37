//! `fi_getinfo`: which provider, with what attributes.

use std::ffi::{CStr, CString};
use std::ptr::{self, NonNull};

use super::{ffi, API};

/// An `fi_info` list from `fi_getinfo`; the first entry is the match used.
#[derive(Debug)]
pub(in crate::ofi) struct Info(pub(super) NonNull<ffi::fi_info>);

// SAFETY: the list is owned (freed once in Drop) and only read after
// construction; fi_info holds no thread-affine state.
unsafe impl Send for Info {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for Info {}

/// What rfx asks a provider for.
#[derive(Debug, Clone, Copy)]
pub(in crate::ofi) struct Want<'a> {
    pub(in crate::ofi) provider: &'a str,
    /// Local address to bind (IP-based providers), or `None`.
    pub(in crate::ofi) node: Option<&'a str>,
    /// Accept providers that need local buffers registered (FI_MR_LOCAL).
    pub(in crate::ofi) mr_local: bool,
}

impl Info {
    /// `fi_getinfo` for RDM endpoints with messages and RMA over `want`.
    /// `Err(code)` is libfabric's negative error code (`-FI_ENODATA`: no
    /// such provider, or it cannot do what rfx needs).
    pub(in crate::ofi) fn get(want: Want<'_>) -> Result<Info, i32> {
        let prov = CString::new(want.provider).map_err(|_| -(ffi::FI_EINVAL as i32))?;
        let node = match want.node {
            Some(n) => Some(CString::new(n).map_err(|_| -(ffi::FI_EINVAL as i32))?),
            None => None,
        };
        // SAFETY: fi_allocinfo returns a zeroed hints tree with every
        // attribute struct allocated, or null.
        let hints = unsafe { ffi::fi_allocinfo() };
        if hints.is_null() {
            return Err(-(ffi::FI_ENOMEM as i32));
        }
        let mut mr_mode = ffi::FI_MR_VIRT_ADDR | ffi::FI_MR_ALLOCATED | ffi::FI_MR_PROV_KEY;
        if want.mr_local {
            mr_mode |= ffi::FI_MR_LOCAL;
        }
        // SAFETY: `hints` and its attribute structs are live (checked
        // above); prov_name is handed over to the tree (freed by
        // fi_freeinfo), hence the strdup'ed copy.
        unsafe {
            let h = &mut *hints;
            h.caps = u64::from(
                ffi::FI_MSG
                    | ffi::FI_RMA
                    | ffi::FI_READ
                    | ffi::FI_WRITE
                    | ffi::FI_REMOTE_READ
                    | ffi::FI_REMOTE_WRITE,
            );
            h.mode = 0;
            (*h.ep_attr).type_ = ffi::fi_ep_type_FI_EP_RDM;
            (*h.domain_attr).mr_mode = mr_mode as i32;
            (*h.domain_attr).threading = ffi::fi_threading_FI_THREAD_SAFE;
            (*h.tx_attr).msg_order = u64::from(ffi::FI_ORDER_SAS);
            (*h.rx_attr).msg_order = u64::from(ffi::FI_ORDER_SAS);
            (*h.fabric_attr).prov_name = nix::libc::strdup(prov.as_ptr());
        }
        let mut info: *mut ffi::fi_info = ptr::null_mut();
        let (node_ptr, flags) = match &node {
            Some(n) => (n.as_ptr(), ffi::FI_SOURCE),
            None => (ptr::null(), 0),
        };
        // SAFETY: node is null or a C string alive for the call; hints is
        // the tree above; `info` receives an owned list.
        let rc = unsafe { ffi::fi_getinfo(API, node_ptr, ptr::null(), flags, hints, &mut info) };
        // SAFETY: hints is owned here and freed once; libfabric copied what
        // it needed.
        unsafe { ffi::fi_freeinfo(hints) };
        if rc != 0 {
            return Err(rc);
        }
        NonNull::new(info)
            .map(Info)
            .ok_or(-(ffi::FI_ENODATA as i32))
    }

    pub(super) fn raw(&self) -> &ffi::fi_info {
        // SAFETY: the pointer is the live head of the list owned by self.
        unsafe { self.0.as_ref() }
    }

    fn cstr(p: *const std::os::raw::c_char) -> String {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: libfabric fills name fields with NUL-terminated strings
        // owned by the fi_info list, alive while `self` is.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    pub(in crate::ofi) fn provider(&self) -> String {
        // SAFETY: fabric_attr is allocated in every fi_info libfabric returns.
        Self::cstr(unsafe { (*self.raw().fabric_attr).prov_name })
    }

    pub(in crate::ofi) fn inject_size(&self) -> usize {
        // SAFETY: tx_attr is allocated in every returned fi_info.
        unsafe { (*self.raw().tx_attr).inject_size }
    }

    pub(in crate::ofi) fn max_msg_size(&self) -> usize {
        // SAFETY: ep_attr is allocated in every returned fi_info.
        unsafe { (*self.raw().ep_attr).max_msg_size }
    }

    pub(in crate::ofi) fn cq_data_size(&self) -> usize {
        // SAFETY: as in `domain_name`.
        unsafe { (*self.raw().domain_attr).cq_data_size }
    }

    fn mr_mode(&self) -> u32 {
        // SAFETY: as in `domain_name`.
        unsafe { (*self.raw().domain_attr).mr_mode as u32 }
    }

    pub(in crate::ofi) fn mr_local(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_LOCAL != 0
    }

    pub(in crate::ofi) fn mr_virt_addr(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_VIRT_ADDR != 0
    }

    pub(in crate::ofi) fn mr_endpoint(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_ENDPOINT != 0
    }
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: the list is owned by self and freed exactly once.
        unsafe { ffi::fi_freeinfo(self.0.as_ptr()) }
    }
}
