//! The invocation context: [`RfxContext`] as it crosses the extended ABI, and [`Context`] as a
//! Rust function sees it.

/// The version of the extended ABI this crate implements: the value of
/// [`RfxContext::abi_version`] and of the `rfx_abi_<name>` markers.
/// Version 2 appended [`RfxContext::device`]; executors of version 2 run
/// functions marked 1 or 2.
pub const ABI_VERSION: u32 = 2;

/// [`RfxDevice::kind`]: an NVIDIA GPU; `input` and `output` are CUDA device
/// addresses (`CUdeviceptr`), `stream` a `CUstream`.
pub const DEVICE_CUDA: u32 = 1;
/// [`RfxDevice::kind`]: the host reference device (`RFX_DEVICE=host`):
/// `input` and `output` are host addresses, `stream` is null.
pub const DEVICE_HOST: u32 = 2;

/// Where a device function's data is, `rfx_device` in C: given to functions
/// marked `rfx_device_<name>` (see the crate docs of `rfx-executors`).
///
/// The executor copied the input to `input` before the call and, after it,
/// waits for `stream` and copies the output length the function returned
/// from `output`. A function queues its kernels on `stream` (or waits for
/// its own streams before it returns).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct RfxDevice {
    /// [`DEVICE_CUDA`] or [`DEVICE_HOST`].
    pub kind: u32,
    /// The device's ordinal among those the executor sees.
    pub ordinal: u32,
    /// Device address of the input (`size` bytes).
    pub input: u64,
    /// Device address of the output buffer (`out_capacity` bytes).
    pub output: u64,
    /// The stream (`CUstream`) the executor orders its copies on.
    pub stream: *mut std::ffi::c_void,
}

/// The context passed to extended-ABI functions, `rfx_context` in C (`examples/c/rfx.h`).
///
/// Layout (64-bit): 40 bytes, fields at offsets 0, 4, 8, 12, 16, 24, 32. New fields are only
/// ever appended, with a new [`ABI_VERSION`].
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct RfxContext {
    /// [`ABI_VERSION`] of the executor.
    pub abi_version: u32,
    /// Rank of this instance in a group invocation (0 for a single invocation).
    pub rank: u32,
    /// Number of instances of the group invocation (1 for a single invocation).
    pub size: u32,
    /// Length of the output buffer; a function must not write past it nor return more.
    pub out_capacity: u32,
    /// Id of the invocation, unique per connection while it is in flight.
    pub invocation_id: u64,
    /// The communicator of a group invocation ([`crate::comm::RfxComm`]); null for a single
    /// invocation.
    pub comm: *const crate::comm::RfxComm,
    /// Where a device function's input and output are on the device
    /// (version 2); null unless the function is marked as a device function.
    pub device: *const RfxDevice,
}

/// What a Rust function exported with the extended form of [`export!`](crate::export) learns
/// about its invocation.
///
/// ```
/// use rfx_abi::Context;
///
/// // Unit-test a function body without an executor.
/// let ctx = Context::new(2, 4, 7, 64);
/// assert_eq!((ctx.rank(), ctx.size(), ctx.invocation_id(), ctx.out_capacity()), (2, 4, 7, 64));
/// ```
///
/// A `Context` lives for one call (it is neither `Clone` nor `Copy`): its
/// communicator is only valid then.
#[derive(Debug)]
pub struct Context {
    raw: RfxContext,
}

impl Context {
    /// A context for rank `rank` of `size`, invocation `invocation_id`, with an output buffer
    /// of `out_capacity` bytes (for testing function bodies).
    pub fn new(rank: u32, size: u32, invocation_id: u64, out_capacity: u32) -> Context {
        Context {
            raw: RfxContext {
                abi_version: ABI_VERSION,
                rank,
                size,
                out_capacity,
                invocation_id,
                comm: std::ptr::null(),
                device: std::ptr::null(),
            },
        }
    }

    /// The context of a call, from what the executor passed.
    pub fn from_raw(raw: RfxContext) -> Context {
        Context { raw }
    }

    /// Rank of this instance in its group (0 for a single invocation).
    pub fn rank(&self) -> u32 {
        self.raw.rank
    }

    /// Number of instances in the group (1 for a single invocation).
    pub fn size(&self) -> u32 {
        self.raw.size
    }

    /// Id of the invocation.
    pub fn invocation_id(&self) -> u64 {
        self.raw.invocation_id
    }

    /// Length of the output buffer, the same as `out.len()`.
    pub fn out_capacity(&self) -> usize {
        self.raw.out_capacity as usize
    }

    /// The executor's [`ABI_VERSION`].
    pub fn abi_version(&self) -> u32 {
        self.raw.abi_version
    }

    /// The communicator to the other instances of a group invocation; `None`
    /// for a single invocation.
    pub fn comm(&self) -> Option<crate::comm::Comm<'_>> {
        comm_table(&self.raw).map(|table| crate::comm::Comm { table })
    }
}

impl Context {
    /// Where a device function's input and output are on the device;
    /// `None` for other functions.
    pub fn device(&self) -> Option<&RfxDevice> {
        // SAFETY: `device` is null or points to a description the executor
        // keeps alive for the whole call (as `comm`, see `comm_table`).
        unsafe { self.raw.device.as_ref() }
    }
}

/// The table `raw.comm` points to, if any.
fn comm_table(raw: &RfxContext) -> Option<&crate::comm::RfxComm> {
    // SAFETY: `comm` is null or points to a table the executor keeps alive for the whole call,
    // and a `Context` (which owns `raw` by value and is neither `Clone` nor `Copy`) is only
    // handed to the function by reference for that call; the returned borrow cannot outlive it.
    unsafe { raw.comm.as_ref() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn rfx_context_layout_matches_the_c_header() {
        assert_eq!(size_of::<RfxContext>(), 40);
        assert_eq!(align_of::<RfxContext>(), 8);
        assert_eq!(offset_of!(RfxContext, abi_version), 0);
        assert_eq!(offset_of!(RfxContext, rank), 4);
        assert_eq!(offset_of!(RfxContext, size), 8);
        assert_eq!(offset_of!(RfxContext, out_capacity), 12);
        assert_eq!(offset_of!(RfxContext, invocation_id), 16);
        assert_eq!(offset_of!(RfxContext, comm), 24);
        assert_eq!(offset_of!(RfxContext, device), 32);
        assert_eq!(size_of::<RfxDevice>(), 32);
        assert_eq!(offset_of!(RfxDevice, input), 8);
        assert_eq!(offset_of!(RfxDevice, output), 16);
        assert_eq!(offset_of!(RfxDevice, stream), 24);
    }
}
