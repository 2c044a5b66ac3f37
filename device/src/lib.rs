//! rfx-device: accelerator memory, asynchronous copies and reductions
//! behind one contract, [`Device`], so that the collectives' staging
//! pipeline and the executors' device inputs are written once.
//!
//! - [`Device`]: the provider contract (memory, pinned host memory, async
//!   copies, reductions, one in-order stream); [`DeviceVec`] typed memory
//!   over it.
//! - [`HostDevice`]: the reference backend, host memory with a worker
//!   thread as the stream. CI runs every device path on it.
//! - `CudaDevice` (feature `cuda`): NVIDIA GPUs through the CUDA driver
//!   API, loaded at run time with `cudarc`; kernels are PTX text
//!   ([`kernels`]) the driver compiles when it loads them. Without a
//!   driver or a GPU, opening one fails with [`DeviceError::NoDevice`].
//!
//! The design and its figures are in `docs/gpu.md` of the repository.

mod device;
mod elem;
mod error;
mod host;
pub mod kernels;

#[cfg(feature = "cuda")]
mod cuda;

pub use device::{Device, DeviceVec};
pub use elem::{reduce_host, DevOp, DeviceElem, Dtype};
pub use error::DeviceError;
pub use host::{HostDevice, HostMem, HostPinned, HostStats};

#[cfg(feature = "cuda")]
pub use cuda::{CudaDevice, CudaMem, CudaPinned};

/// Whether this build has the CUDA backend (feature `cuda`).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");
