//! [`CudaDevice`]: NVIDIA GPUs through the CUDA driver API, loaded at run
//! time (`cudarc`'s dynamic loading): nothing of CUDA is needed to build,
//! and `libcuda.so` only when a device is opened.
//!
//! One context and one stream per device; every copy and kernel is queued
//! on that stream. Pinned buffers carry an event recorded after the last
//! work queued on them, which host access waits for. The kernels are the
//! PTX of [`crate::kernels`], loaded once at open.
//!
//! The raw driver calls (async copies at byte offsets, which `cudarc`'s
//! safe API does not offer on sub-ranges of pinned memory) are the unsafe
//! code of this crate, all in this file.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::device::Device;
use crate::elem::{DevOp, Dtype};
use crate::error::{in_range, reduce_operands, within_operands, DeviceError};
use crate::kernels;

fn driver(what: &str) -> impl Fn(DriverError) -> DeviceError + '_ {
    move |e| match e.0 {
        sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => {
            DeviceError::NoDevice(format!("{what}: the driver sees no GPU"))
        }
        _ => DeviceError::Driver(format!("{what}: {e}")),
    }
}

/// Threads per block of the reduction kernels.
const THREADS: u32 = 256;

/// Device memory of a [`CudaDevice`].
#[derive(Debug)]
pub struct CudaMem {
    /// At least one byte: the driver allocates nothing smaller.
    slice: CudaSlice<u8>,
    len: usize,
}

/// Pinned host memory of a [`CudaDevice`], with the event of the last work
/// queued on it.
#[derive(Debug)]
pub struct CudaPinned {
    /// At least one byte, as device memory.
    buf: PinnedHostSlice<u8>,
    len: usize,
    last: CudaEvent,
}

impl Drop for CudaPinned {
    fn drop(&mut self) {
        // The DMA engine may still read or write it: wait before the
        // memory goes back to the driver.
        let _ = self.last.synchronize();
    }
}

/// An NVIDIA GPU.
#[derive(Debug)]
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    sms: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    reduce: HashMap<(DevOp, Dtype), CudaFunction>,
    saxpy: CudaFunction,
}

impl CudaDevice {
    /// GPUs the driver sees; 0 without a driver.
    pub fn count() -> usize {
        if !driver_present() {
            return 0;
        }
        CudaContext::device_count().map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }

    /// Opens GPU `ordinal` (of those `CUDA_VISIBLE_DEVICES` leaves):
    /// a context, a stream, and the kernels compiled for it.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>, DeviceError> {
        if !driver_present() {
            return Err(DeviceError::NoDevice(
                "libcuda.so (the NVIDIA driver) cannot be loaded".into(),
            ));
        }
        let n = CudaContext::device_count().map_err(driver("cuInit"))?;
        if ordinal >= usize::try_from(n).unwrap_or(0) {
            return Err(DeviceError::NoDevice(format!(
                "device {ordinal} asked for, the driver sees {n}"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("context"))?;
        let stream = ctx.new_stream().map_err(driver("stream"))?;
        let module = ctx
            .load_module(Ptx::from_src(kernels::ptx()))
            .map_err(driver("loading the kernels' PTX"))?;
        let mut reduce = HashMap::new();
        for ty in Dtype::ALL {
            for op in DevOp::ALL {
                let f = module
                    .load_function(&kernels::reduce_kernel(op, ty))
                    .map_err(driver("kernel"))?;
                reduce.insert((op, ty), f);
            }
        }
        let saxpy = module
            .load_function(kernels::SAXPY_KERNEL)
            .map_err(driver("kernel"))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_or(1, |s| s.max(1) as u32);
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        tracing::debug!(ordinal, %name, sms, "CUDA device open");
        Ok(Arc::new(CudaDevice {
            ordinal,
            name,
            sms,
            ctx,
            stream,
            reduce,
            saxpy,
        }))
    }

    /// The stream all of this device's work runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// A grid covering `n` elements: enough blocks to fill every SM a few
    /// times, the grid-stride loop doing the rest.
    fn grid(&self, n: usize) -> LaunchConfig {
        let want = n.div_ceil(THREADS as usize).max(1);
        let blocks = want.min(self.sms as usize * 8) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Queues `y = a * x + y` on `n` f32 elements at the starts of `x` and
    /// `y` (the example kernel of a GPU function).
    pub fn saxpy(&self, a: f32, x: &CudaMem, y: &mut CudaMem, n: usize) -> Result<(), DeviceError> {
        in_range("x", 0, n * 4, x.len)?;
        in_range("y", 0, n * 4, y.len)?;
        let (xp, _gx) = x.slice.device_ptr(&self.stream);
        let (yp, _gy) = y.slice.device_ptr_mut(&self.stream);
        let n64 = n as u64;
        let mut b = self.stream.launch_builder(&self.saxpy);
        b.arg(&a).arg(&xp).arg(&yp).arg(&n64);
        // SAFETY: rfx_saxpy_f32 takes (f32, u64, u64, u64), pushed in that
        // order; x and y hold n f32 each (checked above).
        unsafe { b.launch(self.grid(n)) }.map_err(driver("saxpy"))?;
        Ok(())
    }

    /// Makes the context current on this thread (an executor calls from its
    /// workers, not from the thread that opened the device): the raw driver
    /// calls below need it, cudarc's own calls do it themselves.
    fn bind(&self) -> Result<(), DeviceError> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))
    }

    fn record(&self, p: &CudaPinned) -> Result<(), DeviceError> {
        p.last.record(&self.stream).map_err(driver("event"))
    }

    fn pinned_ptr(p: &CudaPinned) -> Result<*mut u8, DeviceError> {
        // Never recorded on itself (our event is `last`): no wait here.
        p.buf
            .as_ptr()
            .map(|q| q as *mut u8)
            .map_err(driver("pinned memory"))
    }
}

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; no driver call is made.
    unsafe { sys::is_culib_present() }
}

impl Device for CudaDevice {
    type Mem = CudaMem;
    type Pinned = CudaPinned;

    fn describe(&self) -> String {
        format!("cuda:{} {}", self.ordinal, self.name)
    }

    fn alloc(&self, bytes: usize) -> Result<CudaMem, DeviceError> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(driver("cuMemAlloc"))?;
        Ok(CudaMem { slice, len: bytes })
    }

    fn mem_len(&self, mem: &CudaMem) -> usize {
        mem.len
    }

    fn alloc_pinned(&self, bytes: usize) -> Result<CudaPinned, DeviceError> {
        // SAFETY: the memory starts uninitialized; the pipeline writes each
        // byte (a download or a receive) before it reads it. Flags 0: not
        // write-combined, since the CPU reads it too.
        let buf = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }
            .map_err(driver("cuMemHostAlloc"))?;
        let last = self.ctx.new_event(None).map_err(driver("event"))?;
        Ok(CudaPinned {
            buf,
            len: bytes,
            last,
        })
    }

    fn pinned_len(&self, p: &CudaPinned) -> usize {
        p.len
    }

    fn download(
        &self,
        src: &CudaMem,
        at: usize,
        dst: &mut CudaPinned,
        dst_at: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        in_range("device memory", at, len, src.len)?;
        in_range("pinned memory", dst_at, len, dst.len)?;
        self.bind()?;
        let host = Self::pinned_ptr(dst)?;
        let (dev, _g) = src.slice.device_ptr(&self.stream);
        // SAFETY: both ranges were checked; `dst` stays allocated until
        // `last` (recorded next) completes: its drop and every host access
        // wait for it.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                host.add(dst_at) as *mut c_void,
                dev + at as u64,
                len,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(driver("cuMemcpyDtoHAsync"))?;
        self.record(dst)
    }

    fn upload(
        &self,
        src: &mut CudaPinned,
        src_at: usize,
        dst: &mut CudaMem,
        at: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        in_range("pinned memory", src_at, len, src.len)?;
        in_range("device memory", at, len, dst.len)?;
        self.bind()?;
        let host = Self::pinned_ptr(src)?;
        let (dev, _g) = dst.slice.device_ptr_mut(&self.stream);
        // SAFETY: as in `download`; the pinned bytes are not written before
        // `last` completes (`pinned_mut` waits for it).
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                dev + at as u64,
                host.add(src_at) as *const c_void,
                len,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(driver("cuMemcpyHtoDAsync"))?;
        self.record(src)
    }

    fn copy(
        &self,
        src: &CudaMem,
        from: usize,
        dst: &mut CudaMem,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        in_range("source device memory", from, len, src.len)?;
        in_range("destination device memory", to, len, dst.len)?;
        self.bind()?;
        let (s, _gs) = src.slice.device_ptr(&self.stream);
        let (d, _gd) = dst.slice.device_ptr_mut(&self.stream);
        // SAFETY: both ranges were checked and lie in live allocations.
        unsafe {
            sys::cuMemcpyDtoDAsync_v2(d + to as u64, s + from as u64, len, self.stream.cu_stream())
        }
        .result()
        .map_err(driver("cuMemcpyDtoDAsync"))
    }

    fn copy_within(
        &self,
        mem: &mut CudaMem,
        from: usize,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        within_operands(from, to, len, mem.len)?;
        self.bind()?;
        let (p, _g) = mem.slice.device_ptr_mut(&self.stream);
        // SAFETY: both ranges were checked, lie in one live allocation and
        // do not overlap.
        unsafe {
            sys::cuMemcpyDtoDAsync_v2(p + to as u64, p + from as u64, len, self.stream.cu_stream())
        }
        .result()
        .map_err(driver("cuMemcpyDtoDAsync"))
    }

    fn reduce(
        &self,
        op: DevOp,
        ty: Dtype,
        acc: &mut CudaMem,
        at: usize,
        src: &CudaMem,
        from: usize,
        count: usize,
    ) -> Result<(), DeviceError> {
        reduce_operands(ty, count, (at, acc.len), (from, src.len))?;
        if count == 0 {
            return Ok(());
        }
        let f = self
            .reduce
            .get(&(op, ty))
            .ok_or_else(|| DeviceError::Unsupported(format!("{op} on {ty}")))?;
        let (a, _ga) = acc.slice.device_ptr_mut(&self.stream);
        let (s, _gs) = src.slice.device_ptr(&self.stream);
        let (a, s, n) = (a + at as u64, s + from as u64, count as u64);
        let mut b = self.stream.launch_builder(f);
        b.arg(&a).arg(&s).arg(&n);
        // SAFETY: the reduction kernels take (u64 acc, u64 src, u64 n),
        // pushed in that order; both ranges hold n elements (checked) and
        // are aligned to the element size.
        unsafe { b.launch(self.grid(count)) }.map_err(driver("reduce kernel"))?;
        Ok(())
    }

    fn pinned<R>(&self, p: &CudaPinned, f: impl FnOnce(&[u8]) -> R) -> Result<R, DeviceError> {
        p.last.synchronize().map_err(driver("event"))?;
        let all = p.buf.as_slice().map_err(driver("pinned memory"))?;
        Ok(f(&all[..p.len]))
    }

    fn pinned_mut<R>(
        &self,
        p: &mut CudaPinned,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, DeviceError> {
        p.last.synchronize().map_err(driver("event"))?;
        let len = p.len;
        let all = p.buf.as_mut_slice().map_err(driver("pinned memory"))?;
        Ok(f(&mut all[..len]))
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))
    }

    fn address(&self, mem: &CudaMem) -> u64 {
        mem.slice.device_ptr(&self.stream).0
    }

    fn raw_stream(&self) -> u64 {
        self.stream.cu_stream() as u64
    }

    fn read(&self, src: &CudaMem, at: usize, dst: &mut [u8]) -> Result<(), DeviceError> {
        in_range("device memory", at, dst.len(), src.len)?;
        let view = src.slice.slice(at..at + dst.len());
        self.stream
            .memcpy_dtoh(&view, dst)
            .map_err(driver("cuMemcpyDtoH"))?;
        self.synchronize()
    }

    fn write(&self, src: &[u8], dst: &mut CudaMem, at: usize) -> Result<(), DeviceError> {
        in_range("device memory", at, src.len(), dst.len)?;
        let mut view = dst.slice.slice_mut(at..at + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(driver("cuMemcpyHtoD"))?;
        self.synchronize()
    }
}
