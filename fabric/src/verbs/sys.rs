//! The only module of rfx-fabric that calls libibverbs (through `rdma-sys`).
//!
//! Every verbs object is owned by a Rust value whose `Drop` destroys it, and
//! the owners hold what the object depends on (a queue pair keeps its
//! completion queues alive, a memory registration keeps its memory alive), so
//! safe code above cannot free anything the device still uses. Posting takes
//! registrations and bounds-checked ranges, never raw addresses.

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{null_mut, NonNull};
use std::sync::Arc;

use rdma_sys::*;

use super::proto::{Checksum, REC_HDR};
use crate::error::FabricError;
use crate::mr::MemoryRegion;

/// The port rfx uses on a device.
pub(super) const PORT: u8 = 1;

fn rc_err(op: &'static str, rc: i32) -> FabricError {
    // Verbs calls like ibv_modify_qp and ibv_post_* return the errno itself.
    FabricError::os(op, std::io::Error::from_raw_os_error(rc.abs()))
}

fn last_err(op: &'static str) -> FabricError {
    FabricError::os(op, std::io::Error::last_os_error())
}

/// What a device port offers, as needed to connect a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PortInfo {
    /// `ibv_mtu` value (1 = 256 B ... 5 = 4096 B).
    pub(super) active_mtu: u32,
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub(super) lid: u16,
    /// The GID used as the source address.
    pub(super) gid: [u8; 16],
    /// Its index in the port's GID table.
    pub(super) gid_index: u8,
}

/// An opened device (`ibv_context`), with the port rfx uses.
#[derive(Debug)]
pub(super) struct Context {
    ctx: NonNull<ibv_context>,
    name: String,
    port: PortInfo,
}

// SAFETY: an ibv_context is thread-safe (libibverbs serialises the calls that
// need it); the pointer is owned by this value and only freed in Drop.
unsafe impl Send for Context {}
// SAFETY: as above; `&Context` only reads immutable fields or makes verbs
// calls that libibverbs documents as thread-safe.
unsafe impl Sync for Context {}

/// Why no device was opened, when that is not an error (no RDMA here).
#[derive(Debug)]
pub(super) enum NoDevice {
    /// Nothing usable; the text says why (for logs and errors).
    Absent(String),
    /// Something failed that should have worked.
    Failed(FabricError),
}

fn gid_is_v4_mapped(g: &[u8; 16]) -> bool {
    g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff
}

impl Context {
    /// Opens `want` (or the first device with an active port 1) and picks a
    /// GID: `gid_index` if given, else the first IPv4-mapped one (RoCEv2),
    /// else the first non-zero one.
    pub(super) fn open(want: Option<&str>, gid_index: Option<u8>) -> Result<Context, NoDevice> {
        let mut n: i32 = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { ibv_get_device_list(&mut n) };
        if list.is_null() {
            // ENOSYS: no /sys/class/infiniband_verbs (kernel without RDMA).
            let e = std::io::Error::last_os_error();
            return Err(NoDevice::Absent(format!("no RDMA devices ({e})")));
        }
        let mut found = Err(NoDevice::Absent(match want {
            Some(w) => format!("no RDMA device named {w:?} with an active port"),
            None => "no RDMA device with an active port".into(),
        }));
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds `n` valid device pointers.
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: `dev` is a device of the live list; the name is a
            // NUL-terminated string owned by it, copied out at once.
            let name = unsafe { CStr::from_ptr(ibv_get_device_name(dev)) }
                .to_string_lossy()
                .into_owned();
            if want.is_some_and(|w| w != name) {
                continue;
            }
            match Self::open_one(dev, name, gid_index) {
                Ok(c) => {
                    found = Ok(c);
                    break;
                }
                Err(e) => found = Err(e),
            }
        }
        // SAFETY: `list` came from ibv_get_device_list; opened contexts stay
        // valid after the list is freed (libibverbs keeps the devices).
        unsafe { ibv_free_device_list(list) };
        found
    }

    fn open_one(
        dev: *mut ibv_device,
        name: String,
        gid_index: Option<u8>,
    ) -> Result<Context, NoDevice> {
        // SAFETY: `dev` is a valid device of a live device list.
        let raw = unsafe { ibv_open_device(dev) };
        let ctx = NonNull::new(raw).ok_or_else(|| NoDevice::Failed(last_err("ibv_open_device")))?;
        let mut c = Context {
            ctx,
            name,
            port: PortInfo {
                active_mtu: 0,
                lid: 0,
                gid: [0; 16],
                gid_index: 0,
            },
        };
        // SAFETY: zeroed is a valid ibv_port_attr (plain integers).
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out-pointer; `___ibv_query_port` is the
        // rdma-sys form of the C macro (the exported symbol takes a compat struct).
        let rc = unsafe { ___ibv_query_port(c.ctx.as_ptr(), PORT, &mut attr) };
        if rc != 0 {
            return Err(NoDevice::Failed(rc_err("ibv_query_port", rc)));
        }
        if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(NoDevice::Absent(format!(
                "port {PORT} of {} is not active (state {})",
                c.name, attr.state
            )));
        }
        let mut chosen: Option<(u8, [u8; 16])> = None;
        let mut first_nonzero = None;
        for i in 0..attr.gid_tbl_len.clamp(0, 256) {
            if gid_index.is_some_and(|g| i32::from(g) != i) {
                continue;
            }
            // SAFETY: zeroed is a valid ibv_gid (bytes).
            let mut g: ibv_gid = unsafe { std::mem::zeroed() };
            // SAFETY: live context, index inside the table, valid out-pointer.
            if unsafe { ibv_query_gid(c.ctx.as_ptr(), PORT, i, &mut g) } != 0 {
                continue;
            }
            // SAFETY: every bit pattern is a valid `raw` byte array.
            let raw = unsafe { g.raw };
            if raw == [0; 16] {
                continue;
            }
            if gid_index.is_some() || gid_is_v4_mapped(&raw) {
                chosen = Some((i as u8, raw));
                break;
            }
            first_nonzero.get_or_insert((i as u8, raw));
        }
        let (gid_index, gid) = chosen
            .or(first_nonzero)
            .ok_or_else(|| NoDevice::Absent(format!("{} port {PORT} has no usable GID", c.name)))?;
        c.port = PortInfo {
            active_mtu: attr.active_mtu,
            lid: attr.lid,
            gid,
            gid_index,
        };
        Ok(c)
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn port(&self) -> PortInfo {
        self.port
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: owned context; everything made from it (PD, CQs, QPs) holds
        // an Arc to it, so nothing uses it any more.
        unsafe { ibv_close_device(self.ctx.as_ptr()) };
    }
}

/// A protection domain.
#[derive(Debug)]
pub(super) struct Pd {
    pd: NonNull<ibv_pd>,
    ctx: Arc<Context>,
}

// SAFETY: PDs are used from any thread by libibverbs' thread-safe calls.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    pub(super) fn alloc(ctx: Arc<Context>) -> Result<Pd, FabricError> {
        // SAFETY: live context.
        let pd = unsafe { ibv_alloc_pd(ctx.ctx.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(|| last_err("ibv_alloc_pd"))?;
        Ok(Pd { pd, ctx })
    }

    pub(super) fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: owned PD; MRs and QPs hold an Arc<Pd>, so none is left.
        unsafe { ibv_dealloc_pd(self.pd.as_ptr()) };
    }
}

/// A [`MemoryRegion`] registered with a PD; keeps the memory alive.
#[derive(Debug)]
pub(super) struct Mr {
    mr: NonNull<ibv_mr>,
    region: MemoryRegion,
    _pd: Arc<Pd>,
    lkey: u32,
    rkey: u32,
}

// SAFETY: an ibv_mr is immutable after registration; the memory it covers is
// shared memory accessed through `MemoryRegion`'s copying methods.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    /// Registers the whole region for local and remote read and write.
    pub(super) fn register(pd: &Arc<Pd>, region: MemoryRegion) -> Result<Mr, FabricError> {
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ;
        let len = region.len().max(1);
        // SAFETY: the range is the region's live mapping (at least one page
        // is mapped even for an empty region); `region` is stored in the Mr,
        // so the memory outlives the registration.
        let mr = unsafe {
            ibv_reg_mr(
                pd.pd.as_ptr(),
                region.as_mut_ptr() as *mut c_void,
                len,
                access.0 as i32,
            )
        };
        let mr = NonNull::new(mr).ok_or_else(|| last_err("ibv_reg_mr"))?;
        // SAFETY: a successful registration returns a valid ibv_mr.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        Ok(Mr {
            mr,
            region,
            _pd: pd.clone(),
            lkey,
            rkey,
        })
    }

    pub(super) fn region(&self) -> &MemoryRegion {
        &self.region
    }

    pub(super) fn rkey(&self) -> u32 {
        self.rkey
    }

    fn check(&self, off: usize, len: usize) -> Result<(), FabricError> {
        match off.checked_add(len) {
            Some(end) if end <= self.region.len() => Ok(()),
            _ => Err(FabricError::OutOfBounds {
                offset: off,
                len,
                size: self.region.len(),
            }),
        }
    }

    /// Feeds the `words` little-endian 8-byte words at `off` (8-aligned) to
    /// `f`, read in place: how a ring record is checksummed before it is
    /// trusted, without copying it first.
    #[inline]
    pub(super) fn fold_words(
        &self,
        off: usize,
        words: usize,
        mut f: impl FnMut(u64),
    ) -> Result<(), FabricError> {
        let len = words.checked_mul(8).ok_or(FabricError::OutOfBounds {
            offset: off,
            len: usize::MAX,
            size: self.region.len(),
        })?;
        self.check(off, len)?;
        if off % 8 != 0 {
            return Err(FabricError::OutOfBounds {
                offset: off,
                len,
                size: self.region.len(),
            });
        }
        let base = self.region.as_mut_ptr() as *const u64;
        for i in 0..words {
            // SAFETY: `check` proved [off, off + 8 * words) inside the live
            // mapping this Mr owns; the mapping is page-aligned and `off` is
            // 8-aligned, so every word is aligned. The device (a peer's RDMA
            // WRITE) may change these bytes concurrently: a volatile read of
            // plain integers sees old or new bytes, never invalid values,
            // and the checksum is what tells a finished record.
            let w = unsafe { std::ptr::read_volatile(base.add(off / 8 + i)) };
            f(u64::from_le(w));
        }
        Ok(())
    }

    /// Assembles a ring record at `off` (8-aligned) in one pass: `head`,
    /// `payload` (its last word zero-padded), zero words up to `body_words`
    /// words in all, each fed to `sum`; the caller writes the trailer.
    pub(super) fn write_record(
        &self,
        off: usize,
        head: &[u8; REC_HDR],
        payload: &[u8],
        body_words: usize,
        sum: &mut Checksum,
    ) -> Result<(), FabricError> {
        let len = body_words.checked_mul(8).ok_or(FabricError::OutOfBounds {
            offset: off,
            len: usize::MAX,
            size: self.region.len(),
        })?;
        self.check(off, len)?;
        let used = (REC_HDR + payload.len()).div_ceil(8);
        if off % 8 != 0 || used > body_words {
            return Err(FabricError::OutOfBounds {
                offset: off,
                len: (REC_HDR + payload.len()).max(len),
                size: self.region.len(),
            });
        }
        // SAFETY: `check` proved [off, off + 8 * body_words) inside the live
        // mapping this Mr owns; the mapping is page-aligned and `off`
        // 8-aligned, so `dst` is aligned for u64 and every `dst.add(i)`
        // below has i < body_words (`used <= body_words` was checked). Only
        // this endpoint writes its staging memory, and only ranges the
        // staging allocator handed out, which no posted request still reads.
        let dst = unsafe { (self.region.as_mut_ptr() as *mut u64).add(off / 8) };
        let mut i = 0;
        let mut put = |w: u64, i: &mut usize| {
            sum.word(w);
            // SAFETY: see above; callers stay below `body_words`.
            unsafe { std::ptr::write(dst.add(*i), w.to_le()) };
            *i += 1;
        };
        for c in head.chunks_exact(8) {
            put(u64::from_le_bytes(c.try_into().expect("8 bytes")), &mut i);
        }
        let mut chunks = payload.chunks_exact(8);
        for c in &mut chunks {
            put(u64::from_le_bytes(c.try_into().expect("8 bytes")), &mut i);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            put(u64::from_le_bytes(w), &mut i);
        }
        while i < body_words {
            put(0, &mut i);
        }
        Ok(())
    }

    /// Copies `len` bytes at `off` into `dst` at `dst_off` (a ring record's
    /// payload into its target region: one copy, no bounce buffer).
    pub(super) fn copy_to(
        &self,
        off: usize,
        len: usize,
        dst: &MemoryRegion,
        dst_off: usize,
    ) -> Result<(), FabricError> {
        self.check(off, len)?;
        match dst_off.checked_add(len) {
            Some(end) if end <= dst.len() => {}
            _ => {
                return Err(FabricError::OutOfBounds {
                    offset: dst_off,
                    len,
                    size: dst.len(),
                })
            }
        }
        // SAFETY: both ranges were checked inside live mappings (this Mr's
        // region and `dst`, kept alive by the borrows). They cannot overlap:
        // a registration's region and a `MemoryRegion` the endpoint writes
        // into are distinct memfd mappings (rings and staging are never
        // exposed). Concurrent writers only change plain bytes, as with
        // `MemoryRegion::write_at`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region.as_mut_ptr().add(off),
                dst.as_mut_ptr().add(dst_off),
                len,
            );
        }
        Ok(())
    }

    /// True if `[ptr, ptr + len)` lies inside this registration's memory.
    pub(super) fn covers(&self, ptr: *const u8, len: usize) -> Option<usize> {
        let base = self.region.addr();
        let p = ptr as u64;
        let end = p.checked_add(len as u64)?;
        (p >= base && end <= base + self.region.len() as u64).then(|| (p - base) as usize)
    }

    /// The device address of `[off, off + len)`, if inside.
    fn sge(&self, off: usize, len: usize) -> Result<ibv_sge, FabricError> {
        match off.checked_add(len) {
            Some(end) if end <= self.region.len() && len <= u32::MAX as usize => Ok(ibv_sge {
                addr: self.region.addr() + off as u64,
                length: len as u32,
                lkey: self.lkey,
            }),
            _ => Err(FabricError::OutOfBounds {
                offset: off,
                len,
                size: self.region.len(),
            }),
        }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: owned registration. QPs that post from it are destroyed
        // first (the endpoint drops its QP before its Mrs).
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// Memory of the caller's registered for one RDMA READ to land in, with
/// no bounce buffer: local write access only (no key a peer could use),
/// registered for as long as this value lives, which borrows the memory
/// mutably for that long. Dropping it deregisters it, after which the
/// device no longer writes the memory even if a READ into it is still
/// outstanding (the READ fails instead).
#[derive(Debug)]
pub(super) struct LandingMr<'a> {
    mr: NonNull<ibv_mr>,
    addr: u64,
    len: usize,
    lkey: u32,
    _pd: Arc<Pd>,
    _out: PhantomData<&'a mut [u8]>,
}

impl<'a> LandingMr<'a> {
    /// Registers `out` for local write (the kernel pins its pages).
    pub(super) fn register(pd: &Arc<Pd>, out: &'a mut [u8]) -> Result<LandingMr<'a>, FabricError> {
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
        // SAFETY: `out` is live, writable memory borrowed mutably for the
        // registration's life ('a), so nothing else reads or writes it
        // while the device may, and it is not freed before Drop
        // deregisters it.
        let mr = unsafe {
            ibv_reg_mr(
                pd.pd.as_ptr(),
                out.as_mut_ptr() as *mut c_void,
                out.len().max(1),
                access.0 as i32,
            )
        };
        let mr = NonNull::new(mr).ok_or_else(|| last_err("ibv_reg_mr (read landing)"))?;
        // SAFETY: a successful registration returns a valid ibv_mr.
        let lkey = unsafe { (*mr.as_ptr()).lkey };
        Ok(LandingMr {
            mr,
            addr: out.as_mut_ptr() as u64,
            len: out.len(),
            lkey,
            _pd: pd.clone(),
            _out: PhantomData,
        })
    }

    /// Bytes registered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn sge(&self) -> Result<ibv_sge, FabricError> {
        let length = u32::try_from(self.len).map_err(|_| FabricError::TooLarge {
            len: self.len,
            max: u32::MAX as usize,
        })?;
        Ok(ibv_sge {
            addr: self.addr,
            length,
            lkey: self.lkey,
        })
    }
}

impl Drop for LandingMr<'_> {
    fn drop(&mut self) {
        // SAFETY: owned registration, deregistered once; the device no
        // longer writes the memory afterwards.
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// Memory of this process lent to a peer for RDMA READ only (a
/// collective's send buffer in a rendezvous): registered for remote read
/// and nothing else, so the peer's device may read exactly `[addr, addr +
/// len)` under [`LentMr::rkey`] and never write it.
#[derive(Debug)]
pub(super) struct LentMr {
    mr: NonNull<ibv_mr>,
    _pd: Arc<Pd>,
    rkey: u32,
}

// SAFETY: an ibv_mr is immutable after registration; this process never
// touches the memory through it (only the peer's device reads it).
unsafe impl Send for LentMr {}
// SAFETY: as above.
unsafe impl Sync for LentMr {}

impl LentMr {
    /// Registers `len` bytes at `ptr` for remote read. The kernel checks
    /// that they are mapped (else `EFAULT`) and pins their pages until the
    /// registration is dropped; the device reads them whenever the peer
    /// asks, so the peer sees what they hold at that time. Pages unmapped
    /// meanwhile stay pinned and readable: what the caller lends is its
    /// choice of what the peer may read, not a question of memory safety.
    pub(super) fn register(
        pd: &Arc<Pd>,
        ptr: *const u8,
        len: usize,
    ) -> Result<LentMr, FabricError> {
        let access = ibv_access_flags::IBV_ACCESS_REMOTE_READ;
        // SAFETY: ibv_reg_mr takes the range by value and never
        // dereferences it in this process; the kernel validates and pins
        // it. Remote read needs no local write access, so nothing here or
        // on the device writes the memory.
        let mr = unsafe {
            ibv_reg_mr(
                pd.pd.as_ptr(),
                ptr as *mut c_void,
                len.max(1),
                access.0 as i32,
            )
        };
        let mr = NonNull::new(mr).ok_or_else(|| last_err("ibv_reg_mr (lent memory)"))?;
        // SAFETY: a successful registration returns a valid ibv_mr.
        let rkey = unsafe { (*mr.as_ptr()).rkey };
        Ok(LentMr {
            mr,
            _pd: pd.clone(),
            rkey,
        })
    }

    /// The key under which the peer's device may read the memory.
    pub(super) fn rkey(&self) -> u32 {
        self.rkey
    }
}

impl Drop for LentMr {
    fn drop(&mut self) {
        // SAFETY: owned registration, deregistered once. A READ of it that
        // a peer still has in flight then fails at the peer (its endpoint
        // breaks); the memory is no longer reachable from the device.
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// A completion channel: the fd warm waiters sleep on.
#[derive(Debug)]
struct Channel {
    ch: NonNull<ibv_comp_channel>,
}

impl Channel {
    fn create(ctx: &Context) -> Result<Channel, FabricError> {
        // SAFETY: live context.
        let ch = unsafe { ibv_create_comp_channel(ctx.ctx.as_ptr()) };
        let ch = NonNull::new(ch).ok_or_else(|| last_err("ibv_create_comp_channel"))?;
        let c = Channel { ch };
        // The fd is only read after poll(2) says so; non-blocking makes a
        // spurious wake-up harmless.
        let fd = c.fd();
        let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(crate::error::nix_err("fcntl"))?;
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(fl))
            .map_err(crate::error::nix_err("fcntl"))?;
        Ok(c)
    }

    fn fd(&self) -> RawFd {
        // SAFETY: live channel; `fd` is a plain field.
        unsafe { (*self.ch.as_ptr()).fd }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: owned channel; its CQs are destroyed before (field order
        // of `QueuePair`), and every event was acknowledged.
        unsafe { ibv_destroy_comp_channel(self.ch.as_ptr()) };
    }
}

/// A completion queue.
#[derive(Debug)]
struct Cq {
    cq: NonNull<ibv_cq>,
}

impl Cq {
    fn create(ctx: &Context, depth: u32, ch: Option<&Channel>) -> Result<Cq, FabricError> {
        let chp = ch.map_or(null_mut(), |c| c.ch.as_ptr());
        // SAFETY: live context and (optional) channel of the same context.
        let cq = unsafe { ibv_create_cq(ctx.ctx.as_ptr(), depth as i32, null_mut(), chp, 0) };
        let cq = NonNull::new(cq).ok_or_else(|| last_err("ibv_create_cq"))?;
        Ok(Cq { cq })
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: owned CQ, its QP is destroyed first; events were acked
        // as they were read, so destroy does not wait.
        unsafe { ibv_destroy_cq(self.cq.as_ptr()) };
    }
}

/// One completion, copied out of the CQ.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wc {
    pub(super) wr_id: u64,
    pub(super) ok: bool,
    pub(super) status: u32,
    pub(super) is_recv: bool,
    /// Receives: bytes the peer's WRITE_WITH_IMM placed.
    pub(super) byte_len: u32,
    /// Receives: the immediate, in host order.
    pub(super) imm: Option<u32>,
}

impl Wc {
    /// The peer's device refused the access (bad rkey or range): the
    /// requester's queue pair is in the error state afterwards.
    pub(super) fn is_remote_access_error(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_REM_ACCESS_ERR
    }

    /// `ibv_wc_status_str` of the status.
    pub(super) fn status_text(&self) -> String {
        // SAFETY: returns a static string for any value.
        let p = unsafe { ibv_wc_status_str(self.status) };
        if p.is_null() {
            return format!("status {}", self.status);
        }
        // SAFETY: non-null static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Sizes asked for when creating a queue pair.
#[derive(Debug, Clone, Copy)]
pub(super) struct QpCaps {
    pub(super) send_depth: u32,
    pub(super) recv_depth: u32,
    pub(super) max_inline: u32,
}

/// The peer's side of an RC connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct RemoteQp {
    pub(super) qpn: u32,
    pub(super) psn: u32,
    pub(super) lid: u16,
    pub(super) gid: [u8; 16],
    pub(super) mtu: u32,
}

/// What a send work request does.
#[derive(Debug, Clone, Copy)]
pub(super) enum SendKind {
    /// One-sided RDMA WRITE to `remote_addr` with the device key `rkey`.
    Write { remote_addr: u64, rkey: u32 },
    /// RDMA WRITE_WITH_IMM: a WRITE that also consumes one posted receive
    /// of the peer and completes it with `imm` (raising a completion event
    /// if the peer armed its CQ).
    WriteImm {
        remote_addr: u64,
        rkey: u32,
        imm: u32,
    },
    /// RDMA READ of the peer's `remote_addr` (device key `rkey`) into the
    /// request's [`Source::Registered`] range, which the device writes.
    Read { remote_addr: u64, rkey: u32 },
}

/// Where a send work request takes its bytes (or, for a READ, puts them).
#[derive(Debug, Clone, Copy)]
pub(super) enum Source<'a> {
    /// Copied into the work request at post time (`IBV_SEND_INLINE`).
    Inline(&'a [u8], &'a [u8]),
    /// Read by the device from a registered range, until completion.
    Registered(&'a Mr, usize, usize),
    /// A READ's destination: the whole of a landing registration.
    Landing(&'a LandingMr<'a>),
}

/// An RC queue pair with its CQs and completion channel (dropped in this
/// order: QP, CQs, channel).
#[derive(Debug)]
pub(super) struct QueuePair {
    qp: NonNull<ibv_qp>,
    send_cq: Cq,
    recv_cq: Cq,
    channel: Channel,
    _pd: Arc<Pd>,
    max_inline: u32,
}

// SAFETY: the endpoint that owns the QP uses it from one thread at a time
// (`&mut self` methods); verbs objects may move between threads.
unsafe impl Send for QueuePair {}

impl QueuePair {
    /// Creates an RC QP (state RESET) with a plain send CQ and a receive CQ
    /// on a completion channel. Asks for `max_inline` and takes what the
    /// device grants (rxe: 256 or 512).
    pub(super) fn create(pd: &Arc<Pd>, caps: QpCaps) -> Result<QueuePair, FabricError> {
        let ctx = pd.context();
        let channel = Channel::create(ctx)?;
        let send_cq = Cq::create(ctx, caps.send_depth + 1, None)?;
        let recv_cq = Cq::create(ctx, caps.recv_depth + 1, Some(&channel))?;
        let mut inline = caps.max_inline;
        loop {
            // SAFETY: zeroed is valid for this plain C struct.
            let mut ia: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
            ia.send_cq = send_cq.cq.as_ptr();
            ia.recv_cq = recv_cq.cq.as_ptr();
            ia.qp_type = ibv_qp_type::IBV_QPT_RC;
            ia.sq_sig_all = 0;
            ia.cap.max_send_wr = caps.send_depth;
            ia.cap.max_recv_wr = caps.recv_depth;
            ia.cap.max_send_sge = 2;
            ia.cap.max_recv_sge = 1;
            ia.cap.max_inline_data = inline;
            // SAFETY: live PD and CQs of the same context; `ia` is valid.
            let qp = unsafe { ibv_create_qp(pd.pd.as_ptr(), &mut ia) };
            if let Some(qp) = NonNull::new(qp) {
                let q = QueuePair {
                    qp,
                    send_cq,
                    recv_cq,
                    channel,
                    _pd: pd.clone(),
                    max_inline: ia.cap.max_inline_data.min(inline),
                };
                q.init()?;
                return Ok(q);
            }
            if inline == 0 {
                return Err(last_err("ibv_create_qp"));
            }
            inline /= 2;
            if inline < 32 {
                inline = 0;
            }
        }
    }

    pub(super) fn qpn(&self) -> u32 {
        // SAFETY: live QP; plain field.
        unsafe { (*self.qp.as_ptr()).qp_num }
    }

    pub(super) fn max_inline(&self) -> u32 {
        self.max_inline
    }

    fn modify(
        &self,
        op: &'static str,
        a: &mut ibv_qp_attr,
        mask: ibv_qp_attr_mask,
    ) -> Result<(), FabricError> {
        // SAFETY: live QP, valid attribute struct and mask.
        let rc = unsafe { ibv_modify_qp(self.qp.as_ptr(), a, mask.0 as i32) };
        if rc != 0 {
            return Err(rc_err(op, rc));
        }
        Ok(())
    }

    /// RESET -> INIT; receives can be posted from then on.
    fn init(&self) -> Result<(), FabricError> {
        // SAFETY: zeroed is valid for this plain C struct (all attributes).
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = PORT;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ)
            .0;
        self.modify(
            "ibv_modify_qp(INIT)",
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS,
        )
    }

    /// INIT -> RTR -> RTS. Receives must be posted before (RTR).
    ///
    /// `min_rnr_timer` 12 (0.64 ms) and `rnr_retry` 7 (retry forever) are
    /// deliberate: credits mean a receive is always posted, so an RNR NAK
    /// can only come from a bug; if one does, the sender waits ~1 ms and
    /// retries instead of failing (and not the ~655 ms of timer 0).
    pub(super) fn connect(
        &self,
        local: &PortInfo,
        local_psn: u32,
        remote: &RemoteQp,
    ) -> Result<(), FabricError> {
        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = local.active_mtu.min(remote.mtu).max(ibv_mtu::IBV_MTU_256);
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 1;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
        a.ah_attr.grh.sgid_index = local.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.port_num = PORT;
        self.modify(
            "ibv_modify_qp(RTR)",
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER,
        )?;

        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.timeout = 14; // 4.096 us * 2^14 = 67 ms per try
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.sq_psn = local_psn;
        a.max_rd_atomic = 1;
        self.modify(
            "ibv_modify_qp(RTS)",
            &mut a,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC,
        )
    }

    /// Posts `n` receives without buffers: each is consumed by one of the
    /// peer's WRITE_WITH_IMMs, whose data goes where the WRITE says.
    pub(super) fn post_empty_recvs(&self, n: usize) -> Result<(), FabricError> {
        const BATCH: usize = 32;
        let mut left = n;
        while left > 0 {
            let k = left.min(BATCH);
            // Only the `k` requests posted are written: a re-post of one
            // receive (the common case) does not clear the whole batch.
            let mut wrs = [const { MaybeUninit::<ibv_recv_wr>::uninit() }; BATCH];
            let base = wrs.as_mut_ptr().cast::<ibv_recv_wr>();
            for (i, slot) in wrs.iter_mut().enumerate().take(k) {
                // SAFETY: zeroed is valid for ibv_recv_wr (null pointers,
                // zeros: no scatter entries).
                let mut wr: ibv_recv_wr = unsafe { std::mem::zeroed() };
                // i + 1 < k <= BATCH: the next element of the array.
                wr.next = if i + 1 < k {
                    base.wrapping_add(i + 1)
                } else {
                    null_mut()
                };
                slot.write(wr);
            }
            let mut bad = null_mut();
            // SAFETY: live QP; the first `k` entries are initialised and
            // chained (the last ends the chain), they live on this stack
            // frame during the call (the provider copies work requests) and
            // name no memory.
            let rc = unsafe { ibv_post_recv(self.qp.as_ptr(), base, &mut bad) };
            if rc != 0 {
                return Err(rc_err("ibv_post_recv", rc));
            }
            left -= k;
        }
        Ok(())
    }

    /// Posts one send work request.
    pub(super) fn post_send(
        &self,
        wr_id: u64,
        kind: SendKind,
        src: Source<'_>,
        signaled: bool,
    ) -> Result<(), FabricError> {
        let mut sges = [ibv_sge {
            addr: 0,
            length: 0,
            lkey: 0,
        }; 2];
        let mut flags = if signaled {
            ibv_send_flags::IBV_SEND_SIGNALED.0
        } else {
            0
        };
        let num = match src {
            Source::Inline(..) if matches!(kind, SendKind::Read { .. }) => {
                // A READ's data goes into registered memory, never inline.
                return Err(FabricError::os(
                    "ibv_post_send(RDMA READ into inline data)",
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                ));
            }
            Source::Inline(a, b) => {
                if a.len() + b.len() > self.max_inline as usize {
                    return Err(FabricError::TooLarge {
                        len: a.len() + b.len(),
                        max: self.max_inline as usize,
                    });
                }
                flags |= ibv_send_flags::IBV_SEND_INLINE.0;
                let mut n = 0;
                for part in [a, b] {
                    if !part.is_empty() {
                        sges[n] = ibv_sge {
                            addr: part.as_ptr() as u64,
                            length: part.len() as u32,
                            lkey: 0,
                        };
                        n += 1;
                    }
                }
                n
            }
            Source::Registered(mr, off, len) => {
                sges[0] = mr.sge(off, len)?;
                1
            }
            Source::Landing(mr) => {
                sges[0] = mr.sge()?;
                1
            }
        };
        // SAFETY: zeroed is valid for ibv_send_wr (null pointers, zeros).
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = sges.as_mut_ptr();
        wr.num_sge = num as i32;
        wr.send_flags = flags;
        match kind {
            SendKind::Write { remote_addr, rkey } => {
                wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                wr.wr.rdma = rdma_t { remote_addr, rkey };
            }
            SendKind::WriteImm {
                remote_addr,
                rkey,
                imm,
            } => {
                wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
                wr.wr.rdma = rdma_t { remote_addr, rkey };
                // The immediate travels big-endian.
                wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
            SendKind::Read { remote_addr, rkey } => {
                wr.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                wr.wr.rdma = rdma_t { remote_addr, rkey };
            }
        }
        let mut bad = null_mut();
        // SAFETY: live QP; `wr` and `sges` live during the call. Inline
        // data is copied by the call, so the Rust slices may be reused when
        // it returns. A registered source is a checked range of a live Mr
        // that outlives the QP; the caller keeps the range untouched until
        // the completion of this (or a later signaled) request. A READ's
        // range is written by the device: the caller reads it only after
        // the READ's completion, and keeps the Mr registered until then.
        let rc = unsafe { ibv_post_send(self.qp.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(rc_err("ibv_post_send", rc));
        }
        Ok(())
    }

    /// Reaps up to `max` (at most 16) completions of `cq`, handing each to
    /// `f` in order; returns how many.
    fn poll(cq: &Cq, max: usize, mut f: impl FnMut(Wc)) -> Result<usize, FabricError> {
        const MAX: usize = 16;
        // Uninitialised: the hot path polls often, mostly for nothing, and
        // clearing 16 work completions each time would cost more than that.
        let mut wcs = [const { MaybeUninit::<ibv_wc>::uninit() }; MAX];
        let n = max.min(MAX);
        // SAFETY: live CQ, `wcs` holds at least `n` entries; the provider
        // writes the first `got` of them.
        let got = unsafe { ibv_poll_cq(cq.cq.as_ptr(), n as i32, wcs.as_mut_ptr().cast()) };
        if got < 0 {
            return Err(rc_err("ibv_poll_cq", got));
        }
        for w in &wcs[..got as usize] {
            // SAFETY: one of the `got` entries ibv_poll_cq wrote.
            let w = unsafe { w.assume_init_ref() };
            let with_imm = w.wc_flags & ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
            // SAFETY: `imm_data` is the union's member when the flag says
            // so (both members are plain u32s, any bits are valid anyway).
            let raw = unsafe { w.imm_data_invalidated_rkey_union.imm_data };
            let imm = with_imm.then_some(u32::from_be(raw));
            f(Wc {
                wr_id: w.wr_id,
                ok: w.status == ibv_wc_status::IBV_WC_SUCCESS,
                status: w.status,
                is_recv: w.opcode & ibv_wc_opcode::IBV_WC_RECV != 0,
                byte_len: w.byte_len,
                imm,
            });
        }
        Ok(got as usize)
    }

    /// Reaps up to `max` (at most 16) send completions into `f`.
    pub(super) fn poll_send(&self, max: usize, f: impl FnMut(Wc)) -> Result<usize, FabricError> {
        Self::poll(&self.send_cq, max, f)
    }

    /// Reaps up to `max` (at most 16) receive completions into `f`.
    pub(super) fn poll_recv(&self, max: usize, f: impl FnMut(Wc)) -> Result<usize, FabricError> {
        Self::poll(&self.recv_cq, max, f)
    }

    /// Asks for an event on the channel at the next receive completion.
    pub(super) fn arm_recv(&self) -> Result<(), FabricError> {
        // SAFETY: live CQ.
        let rc = unsafe { ibv_req_notify_cq(self.recv_cq.cq.as_ptr(), 0) };
        if rc != 0 {
            return Err(rc_err("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// Reads and acknowledges the pending channel events (non-blocking).
    pub(super) fn drain_events(&self) {
        for _ in 0..64 {
            let mut cq = null_mut();
            let mut ctx = null_mut();
            // SAFETY: live channel (non-blocking fd), valid out-pointers.
            let rc = unsafe { ibv_get_cq_event(self.channel.ch.as_ptr(), &mut cq, &mut ctx) };
            if rc != 0 || cq.is_null() {
                return;
            }
            // SAFETY: `cq` is the CQ the event names (ours); acked at once so
            // that ibv_destroy_cq never waits for unacked events.
            unsafe { ibv_ack_cq_events(cq, 1) };
        }
    }

    /// The channel fd (readable when an armed CQ got a completion).
    pub(super) fn channel_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the channel owns the fd and keeps it open while `self`
        // lives; the borrow is tied to `self`.
        unsafe { BorrowedFd::borrow_raw(self.channel.fd()) }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: owned QP; destroyed before the CQs and the channel (the
        // fields drop after this body) and before the endpoint's Mrs.
        unsafe { ibv_destroy_qp(self.qp.as_ptr()) };
    }
}
