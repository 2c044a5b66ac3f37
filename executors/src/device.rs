//! Device functions: a function whose library also exports
//! `rfx_device_<name>` (`RFX_DEVICE_FUNCTION(name)` in C) receives its
//! input in device memory and leaves its output there
//! ([`rfx_abi::RfxDevice`] in its context).
//!
//! The executor opens the device at the first call of a device function:
//! the GPU of the lease (`CUDA_VISIBLE_DEVICES` holds the lease's GPUs, so
//! it is device 0) with the `cuda` feature, or the host reference device
//! when `RFX_DEVICE=host` (tests, or developing device functions on a
//! machine without a GPU). Without either, the call fails with
//! `no CUDA device: ...`. Per call: the input is copied to device memory,
//! the function runs (queueing its kernels on the device's stream), the
//! executor waits for the stream and copies back as many output bytes as
//! the function returned. Both device buffers grow to the largest call and
//! are reused.

use std::sync::Arc;

use rfx_abi::{RfxContext, RfxDevice, DEVICE_CUDA, DEVICE_HOST};
use rfx_device::{Device, DeviceError, HostDevice};

/// Prefix of the symbol that marks `<name>` as a device function.
pub const DEVICE_MARKER_PREFIX: &str = "rfx_device_";

/// Which device the device functions of a library get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// GPU 0 of those visible, through CUDA (feature `cuda`).
    Cuda,
    /// The host reference device: host memory standing in for device
    /// memory, for tests and for hosts without a GPU.
    Host,
}

impl DeviceChoice {
    /// `RFX_DEVICE`: `host`, else (unset, `cuda`) CUDA.
    pub fn from_env() -> DeviceChoice {
        match std::env::var("RFX_DEVICE").as_deref() {
            Ok("host") => DeviceChoice::Host,
            _ => DeviceChoice::Cuda,
        }
    }
}

/// One device's input and output buffers.
struct Stage<D: Device> {
    dev: Arc<D>,
    kind: u32,
    input: D::Mem,
    output: D::Mem,
}

impl<D: Device> Stage<D> {
    fn new(dev: Arc<D>, kind: u32) -> Result<Stage<D>, DeviceError> {
        let (input, output) = (dev.alloc(0)?, dev.alloc(0)?);
        Ok(Stage {
            dev,
            kind,
            input,
            output,
        })
    }

    /// Grows `mem` to hold `len` bytes.
    fn fit(dev: &D, mem: &mut D::Mem, len: usize) -> Result<(), DeviceError> {
        if dev.mem_len(mem) < len {
            *mem = dev.alloc(len.next_power_of_two())?;
        }
        Ok(())
    }

    fn call(
        &mut self,
        raw: RfxContext,
        input: &[u8],
        f: impl FnOnce(&RfxContext) -> u32,
    ) -> Result<u32, DeviceError> {
        let dev = &*self.dev;
        Self::fit(dev, &mut self.input, input.len())?;
        Self::fit(dev, &mut self.output, raw.out_capacity as usize)?;
        dev.write(input, &mut self.input, 0)?;
        let d = RfxDevice {
            kind: self.kind,
            ordinal: 0,
            input: dev.address(&self.input),
            output: dev.address(&self.output),
            stream: dev.raw_stream() as *mut std::ffi::c_void,
        };
        let ctx = RfxContext { device: &d, ..raw };
        let ret = f(&ctx);
        // The function's kernels are on the stream: wait for them.
        dev.synchronize()?;
        Ok(ret)
    }

    fn read_output(&self, out: &mut [u8]) -> Result<(), DeviceError> {
        self.dev.read(&self.output, 0, out)
    }
}

enum Staging {
    Host(Stage<HostDevice>),
    #[cfg(feature = "cuda")]
    Cuda(Stage<rfx_device::CudaDevice>),
}

/// A library's device: chosen when it loads, opened at the first call of
/// one of its device functions.
pub(crate) struct DeviceSlot {
    choice: DeviceChoice,
    staging: Option<Staging>,
}

impl DeviceSlot {
    pub(crate) fn new(choice: DeviceChoice) -> DeviceSlot {
        DeviceSlot {
            choice,
            staging: None,
        }
    }

    /// Uses `choice` from now on (a device already opened is dropped).
    pub(crate) fn choose(&mut self, choice: DeviceChoice) {
        if choice != self.choice {
            *self = DeviceSlot::new(choice);
        }
    }

    fn open(&mut self) -> Result<&mut Staging, DeviceError> {
        if self.staging.is_none() {
            let s = match self.choice {
                DeviceChoice::Host => Staging::Host(Stage::new(HostDevice::new(), DEVICE_HOST)?),
                #[cfg(feature = "cuda")]
                DeviceChoice::Cuda => {
                    let d = rfx_device::CudaDevice::open(0)?;
                    tracing::info!(device = %d.describe(), "device functions run on this GPU");
                    Staging::Cuda(Stage::new(d, DEVICE_CUDA)?)
                }
                #[cfg(not(feature = "cuda"))]
                DeviceChoice::Cuda => {
                    let _ = DEVICE_CUDA;
                    return Err(DeviceError::NoDevice(
                        "this executor was built without the cuda feature (RFX_DEVICE=host runs \
                         device functions on the host reference device)"
                            .into(),
                    ));
                }
            };
            self.staging = Some(s);
        }
        self.staging
            .as_mut()
            .ok_or_else(|| DeviceError::NoDevice("device not opened".into()))
    }

    /// Stages `input`, runs `f` with the context pointing at the device
    /// buffers, waits for the device; returns what `f` returned.
    pub(crate) fn call(
        &mut self,
        raw: RfxContext,
        input: &[u8],
        f: impl FnOnce(&RfxContext) -> u32,
    ) -> Result<u32, DeviceError> {
        match self.open()? {
            Staging::Host(s) => s.call(raw, input, f),
            #[cfg(feature = "cuda")]
            Staging::Cuda(s) => s.call(raw, input, f),
        }
    }

    /// Copies the first `out.len()` bytes of the last call's device output.
    pub(crate) fn read_output(&mut self, out: &mut [u8]) -> Result<(), DeviceError> {
        match self.open()? {
            Staging::Host(s) => s.read_output(out),
            #[cfg(feature = "cuda")]
            Staging::Cuda(s) => s.read_output(out),
        }
    }
}
