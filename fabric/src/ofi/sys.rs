//! The only module of the ofi provider that calls libfabric.
//!
//! Every wrapper here is safe to call: the objects it hands out close
//! themselves in `Drop` (endpoint before the queues and buffers it uses),
//! and every buffer libfabric may touch after a call returns is owned by
//! this module ([`Conn`]'s receive slots and send buffers, registered
//! [`MemoryRegion`]s held by their [`Mr`]) or stays borrowed until its
//! completion has been reaped ([`Conn::write_blocking`]).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, RawFd};
use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Instant;

use libfabric_sys as ffi;

use crate::error::FabricError;
use crate::mr::MemoryRegion;

const _: () = assert!(
    ffi::AVAILABLE,
    "libfabric-sys was built without libfabric: install libfabric-dev, libclang-dev and pkg-config"
);

/// The libfabric API version rfx asks for (works on 1.x and 2.x).
const API: u32 = ffi::fi_version_of(1, 10);

const TAG_RX: u64 = 1;
const TAG_TX: u64 = 2;
const TAG_WRITE: u64 = 3;

fn ctx(tag: u64, index: usize) -> *mut c_void {
    ((tag << 32) | index as u64) as usize as *mut c_void
}

fn unctx(p: *mut c_void) -> (u64, usize) {
    let v = p as usize as u64;
    (v >> 32, (v & 0xffff_ffff) as usize)
}

/// libfabric's text for a (negative or positive) return code.
pub(super) fn strerror(code: i64) -> String {
    let n = code.unsigned_abs().min(i32::MAX as u64) as i32;
    // SAFETY: fi_strerror accepts any number and returns a pointer to a
    // static NUL-terminated string (never freed).
    let s = unsafe { ffi::fi_strerror(n) };
    if s.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null static C string, see above.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

pub(super) fn fi_err(op: &'static str, code: i64) -> FabricError {
    FabricError::os(
        op,
        std::io::Error::other(format!("{} ({code})", strerror(code))),
    )
}

fn check(op: &'static str, rc: i32) -> Result<(), FabricError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(fi_err(op, rc.into()))
    }
}

/// Outcome of a non-blocking post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Posted {
    Done,
    /// `-FI_EAGAIN`: the provider needs progress first; retry.
    Again,
}

fn posted(op: &'static str, rc: isize) -> Result<Posted, FabricError> {
    match rc {
        0 => Ok(Posted::Done),
        x if x == -(ffi::FI_EAGAIN as isize) => Ok(Posted::Again),
        x => Err(fi_err(op, x as i64)),
    }
}

/// The runtime library's version, e.g. `(1, 17)`.
pub(super) fn runtime_version() -> (u32, u32) {
    // SAFETY: no arguments, reads a constant.
    let v = unsafe { ffi::fi_version() };
    (v >> 16, v & 0xffff)
}

/// An `fi_info` list from `fi_getinfo`; the first entry is the match used.
#[derive(Debug)]
pub(super) struct Info(NonNull<ffi::fi_info>);

// SAFETY: the list is owned (freed once in Drop) and only read after
// construction; fi_info holds no thread-affine state.
unsafe impl Send for Info {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for Info {}

/// What rfx asks a provider for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Want<'a> {
    pub(super) provider: &'a str,
    /// Local address to bind (IP-based providers), or `None`.
    pub(super) node: Option<&'a str>,
    /// Accept providers that need local buffers registered (FI_MR_LOCAL).
    pub(super) mr_local: bool,
}

impl Info {
    /// `fi_getinfo` for RDM endpoints with messages and RMA over `want`.
    /// `Err(code)` is libfabric's negative error code (`-FI_ENODATA`: no
    /// such provider, or it cannot do what rfx needs).
    pub(super) fn get(want: Want<'_>) -> Result<Info, i32> {
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
            h.caps = u64::from(ffi::FI_MSG | ffi::FI_RMA);
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

    fn raw(&self) -> &ffi::fi_info {
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

    pub(super) fn provider(&self) -> String {
        // SAFETY: fabric_attr is allocated in every fi_info libfabric returns.
        Self::cstr(unsafe { (*self.raw().fabric_attr).prov_name })
    }

    pub(super) fn inject_size(&self) -> usize {
        // SAFETY: tx_attr is allocated in every returned fi_info.
        unsafe { (*self.raw().tx_attr).inject_size }
    }

    pub(super) fn max_msg_size(&self) -> usize {
        // SAFETY: ep_attr is allocated in every returned fi_info.
        unsafe { (*self.raw().ep_attr).max_msg_size }
    }

    pub(super) fn cq_data_size(&self) -> usize {
        // SAFETY: as in `domain_name`.
        unsafe { (*self.raw().domain_attr).cq_data_size }
    }

    fn mr_mode(&self) -> u32 {
        // SAFETY: as in `domain_name`.
        unsafe { (*self.raw().domain_attr).mr_mode as u32 }
    }

    pub(super) fn mr_local(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_LOCAL != 0
    }

    pub(super) fn mr_virt_addr(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_VIRT_ADDR != 0
    }

    pub(super) fn mr_endpoint(&self) -> bool {
        self.mr_mode() & ffi::FI_MR_ENDPOINT != 0
    }
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: the list is owned by self and freed exactly once.
        unsafe { ffi::fi_freeinfo(self.0.as_ptr()) }
    }
}

/// An opened fabric and domain (one per provider and interface).
#[derive(Debug)]
pub(super) struct DomainObj {
    fabric: NonNull<ffi::fid_fabric>,
    domain: NonNull<ffi::fid_domain>,
    pub(super) info: Info,
}

// SAFETY: the domain was opened with FI_THREAD_SAFE, so libfabric
// serialises concurrent calls on it and its objects; the pointers are
// closed once, in Drop, after every user (held by Arc) is gone.
unsafe impl Send for DomainObj {}
// SAFETY: as above.
unsafe impl Sync for DomainObj {}

impl DomainObj {
    pub(super) fn open(info: Info) -> Result<DomainObj, FabricError> {
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

/// A registration of a [`MemoryRegion`] for remote writes by peers.
#[derive(Debug)]
pub(super) struct Mr {
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
    /// Registers all of `region` for remote writes; `requested_key` is used
    /// when the provider lets the application choose keys.
    pub(super) fn register(
        domain: &Arc<DomainObj>,
        region: &MemoryRegion,
        requested_key: u64,
    ) -> Result<Mr, FabricError> {
        let mut mr: *mut ffi::fid_mr = ptr::null_mut();
        let mut access = u64::from(ffi::FI_REMOTE_WRITE);
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
    pub(super) fn key(&self) -> u64 {
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

/// Page-aligned memory owned here, handed to the provider by pointer.
#[derive(Debug)]
struct RawBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl RawBuf {
    fn new(len: usize) -> Result<RawBuf, FabricError> {
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

    fn at(&self, off: usize) -> *mut u8 {
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

/// A local registration (FI_MR_LOCAL providers) of a buffer owned here.
#[derive(Debug)]
struct LocalMr(NonNull<ffi::fid_mr>);

impl LocalMr {
    fn register(
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

    fn desc(&self) -> *mut c_void {
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

/// Completions read by one `fi_cq_read`.
pub(super) const CQ_BATCH: usize = 16;

/// A completion, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    /// Receive slot `slot` holds `len` bytes.
    Recv { slot: usize, len: usize },
    /// Send buffer `buf` is free again.
    SendDone,
    /// The blocking write finished.
    WriteDone,
    /// A peer's write with remote CQ data landed.
    RemoteWrite { data: u64 },
    /// An operation failed (`what` says which).
    Error { what: &'static str, msg: String },
}

/// Sizes of a connection's buffers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub(super) slot_size: usize,
    pub(super) rx_slots: usize,
    pub(super) tx_bufs: usize,
}

/// One RDM endpoint with its completion queue, address vector, receive
/// slots and send buffers.
#[derive(Debug)]
pub(super) struct Conn {
    ep: NonNull<ffi::fid_ep>,
    av: NonNull<ffi::fid_av>,
    cq: NonNull<ffi::fid_cq>,
    wait_fd: Option<RawFd>,
    peer: Option<ffi::fi_addr_t>,
    shape: Shape,
    inject_size: usize,
    rx: RawBuf,
    rx_posted: Vec<bool>,
    rx_mr: Option<LocalMr>,
    tx: RawBuf,
    tx_busy: Vec<bool>,
    tx_free: Vec<usize>,
    tx_mr: Option<LocalMr>,
    write_pending: bool,
    closed: bool,
    domain: Arc<DomainObj>,
}

// SAFETY: all objects belong to a FI_THREAD_SAFE domain; the buffers are
// owned; `&mut self` serialises the endpoint's use. Moving it between
// threads is fine.
unsafe impl Send for Conn {}

impl Conn {
    /// Opens an endpoint; `wait_fd`: ask for a CQ wait fd (warm mode
    /// sleeps on it), else warm mode sleep-polls.
    pub(super) fn open(
        domain: &Arc<DomainObj>,
        shape: Shape,
        wait_fd: bool,
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
            closed: false,
            domain: domain.clone(),
        };
        // SAFETY: ep, cq and av are live objects of the same domain.
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
        Ok(conn)
    }

    /// The endpoint's address, for the peer's address vector.
    pub(super) fn name(&self) -> Result<Vec<u8>, FabricError> {
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
    pub(super) fn set_peer(&mut self, addr: &[u8]) -> Result<(), FabricError> {
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

    fn peer(&self) -> Result<ffi::fi_addr_t, FabricError> {
        if self.closed {
            return Err(FabricError::PeerGone("endpoint closed".into()));
        }
        self.peer
            .ok_or_else(|| FabricError::Handshake("no peer address".into()))
    }

    pub(super) fn slot_size(&self) -> usize {
        self.shape.slot_size
    }

    fn rx_desc(&self) -> *mut c_void {
        self.rx_mr.as_ref().map_or(ptr::null_mut(), |m| m.desc())
    }

    fn tx_desc(&self) -> *mut c_void {
        self.tx_mr.as_ref().map_or(ptr::null_mut(), |m| m.desc())
    }

    /// Posts receive slot `slot` (not posted now).
    pub(super) fn post_recv(&mut self, slot: usize) -> Result<Posted, FabricError> {
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
    pub(super) fn rx_slot(&self, slot: usize, len: usize) -> Option<&[u8]> {
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
    pub(super) fn send(&mut self, parts: &[&[u8]], inject_ok: bool) -> Result<Posted, FabricError> {
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

    /// Send buffers in flight.
    pub(super) fn tx_in_flight(&self) -> usize {
        self.shape.tx_bufs - self.tx_free.len()
    }

    /// Reads up to `out.capacity()` completions into `out`.
    pub(super) fn poll_cq(&mut self, out: &mut Vec<Event>) -> Result<(), FabricError> {
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
                _ => "operation",
            };
            let msg = format!(
                "{what} failed: {} (provider error {})",
                strerror(err.err.into()),
                err.prov_errno
            );
            // A receive cancelled at close is not news.
            if err.err == ffi::FI_ECANCELED as i32 {
                return Ok(());
            }
            out.push(Event::Error { what, msg });
            return Ok(());
        }
        Err(fi_err("fi_cq_read", n as i64))
    }

    fn release_tx(&mut self, i: usize) {
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
            _ => Event::Error {
                what: "completion",
                msg: format!("unexpected completion (flags {flags:#x}, context {op_context:p})"),
            },
        }
    }

    /// Writes `data` at `addr`/`key` of the peer with `imm_data` as remote
    /// CQ data, and returns only once the provider is done with `data`
    /// (its completion was reaped) or the endpoint is closed. Other
    /// completions met meanwhile go to `other`; `alive` is asked now and
    /// then whether to go on (a dead peer or an error ends the wait).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_blocking(
        &mut self,
        data: &[u8],
        addr: u64,
        key: u64,
        imm_data: u64,
        deadline: Instant,
        mut other: impl FnMut(Event) -> Result<(), FabricError>,
        mut alive: impl FnMut() -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
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
                    if spins % 256 == 0 {
                        alive()?;
                        if Instant::now() >= deadline {
                            return Err(FabricError::Timeout {
                                op: "ofi write (provider busy)",
                                after: std::time::Duration::ZERO,
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
            if spins % 256 == 0 {
                if let Err(e) = alive() {
                    failure = Some(e);
                    break;
                }
                if Instant::now() >= deadline {
                    failure = Some(FabricError::Timeout {
                        op: "ofi write completion",
                        after: std::time::Duration::ZERO,
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

    fn drain(
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

    /// The CQ's wait fd, if the provider has one.
    pub(super) fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to the CQ, open until the CQ is closed in
        // Drop, which the returned borrow of self outlives not.
        self.wait_fd
            .filter(|_| !self.closed)
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// `fi_trywait`: true when sleeping on the wait fd is safe (nothing is
    /// pending that only a CQ read would surface).
    pub(super) fn trywait(&mut self) -> bool {
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

    /// Closes the endpoint now: no operation touches our buffers after.
    pub(super) fn close(&mut self) {
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
