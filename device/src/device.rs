//! The contract a device backend implements ([`Device`]), and typed device
//! memory over it ([`DeviceVec`]).
//!
//! A device has device memory ([`Device::Mem`]), page-locked host memory
//! the device copies to and from without the CPU ([`Device::Pinned`]),
//! and one in-order stream of work. Copies and reductions are queued on
//! the stream and return at once; [`Device::pinned`] and
//! [`Device::pinned_mut`] wait for the work queued on that pinned buffer
//! before they hand out its bytes, and [`Device::synchronize`] for all of
//! it. Because the stream is in order, work queued on device memory sees
//! the effect of all work queued before it: a pipeline only ever waits on
//! pinned memory, before the CPU (or the network) touches it.
//!
//! Offsets and lengths are bytes. Every call checks them and fails with
//! [`DeviceError::Range`] rather than touching memory outside a buffer.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::elem::{DevOp, DeviceElem, Dtype};
use crate::error::DeviceError;

/// A device backend: memory, async copies, reductions, one stream.
///
/// Implemented by [`crate::HostDevice`] (host memory and a worker thread
/// as the stream: the reference, and what CI tests every pipeline on) and
/// by `CudaDevice` (feature `cuda`).
pub trait Device: Send + Sync + fmt::Debug + 'static {
    /// Device memory.
    type Mem: Send + Sync;
    /// Page-locked host memory the device copies to and from.
    type Pinned: Send + Sync;

    /// What this device is (`cuda:0 NVIDIA H100 80GB HBM3`, `host`).
    fn describe(&self) -> String;

    /// Device memory of `bytes` bytes, zeroed.
    fn alloc(&self, bytes: usize) -> Result<Self::Mem, DeviceError>;
    /// The size of `mem` in bytes.
    fn mem_len(&self, mem: &Self::Mem) -> usize;
    /// Pinned host memory of `bytes` bytes.
    fn alloc_pinned(&self, bytes: usize) -> Result<Self::Pinned, DeviceError>;
    /// The size of `pinned` in bytes.
    fn pinned_len(&self, pinned: &Self::Pinned) -> usize;

    /// Queues a copy of `len` bytes of `src` at `at` to `dst` at `dst_at`.
    fn download(
        &self,
        src: &Self::Mem,
        at: usize,
        dst: &mut Self::Pinned,
        dst_at: usize,
        len: usize,
    ) -> Result<(), DeviceError>;
    /// Queues a copy of `len` bytes of `src` at `src_at` to `dst` at `at`
    /// (`src` is mutable to remember the read: its next writer waits).
    fn upload(
        &self,
        src: &mut Self::Pinned,
        src_at: usize,
        dst: &mut Self::Mem,
        at: usize,
        len: usize,
    ) -> Result<(), DeviceError>;
    /// Queues a copy of `len` bytes between two device buffers.
    fn copy(
        &self,
        src: &Self::Mem,
        from: usize,
        dst: &mut Self::Mem,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError>;
    /// Queues a copy of `len` bytes within one device buffer (the ranges
    /// must not overlap).
    fn copy_within(
        &self,
        mem: &mut Self::Mem,
        from: usize,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError>;
    /// Queues `acc[i] = acc[i] ⊕ src[i]` for `count` elements of `ty`,
    /// `acc` at byte `at`, `src` at byte `from` (both multiples of the
    /// element size).
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        op: DevOp,
        ty: Dtype,
        acc: &mut Self::Mem,
        at: usize,
        src: &Self::Mem,
        from: usize,
        count: usize,
    ) -> Result<(), DeviceError>;

    /// Runs `f` on the bytes of `p` once the work queued on it finished.
    fn pinned<R>(&self, p: &Self::Pinned, f: impl FnOnce(&[u8]) -> R) -> Result<R, DeviceError>;
    /// Runs `f` on the bytes of `p`, writable, once the work queued on it
    /// finished (an upload still reading it, for one).
    fn pinned_mut<R>(
        &self,
        p: &mut Self::Pinned,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, DeviceError>;
    /// Waits until all queued work finished.
    fn synchronize(&self) -> Result<(), DeviceError>;

    /// The address of `mem` as code on the device sees it (a `CUdeviceptr`
    /// on a GPU, a host address on the host device): what a function or a
    /// kernel is given.
    fn address(&self, mem: &Self::Mem) -> u64;
    /// The stream's handle for code that queues its own work on it (a
    /// `CUstream`; 0 on the host device, whose stream is internal).
    fn raw_stream(&self) -> u64;

    /// Copies `dst.len()` bytes of `src` at `at` into host memory, waiting.
    fn read(&self, src: &Self::Mem, at: usize, dst: &mut [u8]) -> Result<(), DeviceError>;
    /// Copies `src` into `dst` at `at`, waiting.
    fn write(&self, src: &[u8], dst: &mut Self::Mem, at: usize) -> Result<(), DeviceError>;
}

/// `len` elements of `T` in the memory of device `D`.
///
/// ```
/// use rfx_device::{DeviceVec, HostDevice};
/// let dev = HostDevice::new();
/// let v = DeviceVec::from_slice(&dev, &[1.5f32, 2.5]).unwrap();
/// assert_eq!(v.to_vec().unwrap(), [1.5, 2.5]);
/// ```
pub struct DeviceVec<T: DeviceElem, D: Device> {
    dev: Arc<D>,
    mem: D::Mem,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: DeviceElem, D: Device> fmt::Debug for DeviceVec<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceVec<{}>[{}] on {:?}", T::DTYPE, self.len, self.dev)
    }
}

fn bytes_of<T: DeviceElem>(len: usize) -> Result<usize, DeviceError> {
    len.checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| DeviceError::Range(format!("{len} elements of {}", T::DTYPE)))
}

impl<T: DeviceElem, D: Device> DeviceVec<T, D> {
    /// `len` zeroed elements on `dev`.
    pub fn zeros(dev: &Arc<D>, len: usize) -> Result<Self, DeviceError> {
        let mem = dev.alloc(bytes_of::<T>(len)?)?;
        Ok(DeviceVec {
            dev: dev.clone(),
            mem,
            len,
            _t: PhantomData,
        })
    }

    /// A copy of `src` on `dev`.
    pub fn from_slice(dev: &Arc<D>, src: &[T]) -> Result<Self, DeviceError> {
        let mut v = Self::zeros(dev, src.len())?;
        v.copy_from_slice(src)?;
        Ok(v)
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device it lives on.
    pub fn device(&self) -> &Arc<D> {
        &self.dev
    }

    /// Its device memory.
    pub fn mem(&self) -> &D::Mem {
        &self.mem
    }

    /// Its device memory, writable.
    pub fn mem_mut(&mut self) -> &mut D::Mem {
        &mut self.mem
    }

    /// Copies the contents to a new vector, waiting for queued work.
    pub fn to_vec(&self) -> Result<Vec<T>, DeviceError> {
        let mut out = vec![T::zeroed(); self.len];
        self.dev
            .read(&self.mem, 0, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Overwrites the contents with `src` (of the same length), waiting.
    pub fn copy_from_slice(&mut self, src: &[T]) -> Result<(), DeviceError> {
        if src.len() != self.len {
            return Err(DeviceError::Range(format!(
                "{} elements into a device vector of {}",
                src.len(),
                self.len
            )));
        }
        self.dev.write(bytemuck::cast_slice(src), &mut self.mem, 0)
    }
}
