//! Collectives and point to point on device memory ([`DeviceVec`]), for
//! ranks whose data lives on an accelerator.
//!
//! Each call runs the same schedule as its host counterpart (the same
//! algorithm choice, tree or ring) through the staging pipeline of
//! `stage`: chunks of `RFX_COLL_DEVICE_CHUNK` bytes (1 MiB) move between
//! the device and `RFX_COLL_DEVICE_SLOTS` (4) pinned host slots on the
//! device's stream while earlier chunks are on the network, and received
//! chunks are reduced on the device (a kernel on a GPU). The pinned slots
//! are kept by the communicator between calls.
//!
//! The backend is any [`rfx_device::Device`]: `CudaDevice` (feature `cuda`
//! of `rfx-device`) on a GPU, [`rfx_device::HostDevice`] anywhere (the
//! reference the tests use). Calls return once the result is in device
//! memory (the stream is synchronized), as CUDA-aware MPI's blocking calls.
//!
//! Device messages travel on a context of their own: a device send matches
//! only a device receive ([`Communicator::recv_device`]).
//!
//! ```
//! use rfx_collectives::{CollConfig, Communicator, ReduceOp};
//! use rfx_collectives::device::{DeviceVec, HostDevice};
//! let mut c = Communicator::solo(CollConfig::default()).unwrap();
//! let dev = HostDevice::new();
//! let mut v = DeviceVec::from_slice(&dev, &[1.0f32, 2.0]).unwrap();
//! c.allreduce_device(&mut v, ReduceOp::Sum).unwrap();
//! assert_eq!(v.to_vec().unwrap(), [1.0, 2.0]);
//! ```

// A whole buffer is a block list of one block.
#![allow(clippy::single_range_in_vec_init)]

pub(crate) mod stage;

#[cfg(feature = "cuda")]
pub use rfx_device::CudaDevice;
pub use rfx_device::{Device, DeviceElem, DeviceError, DeviceVec, HostDevice};

use std::sync::Arc;

use rfx_device::{DevOp, Dtype};

use crate::comm::{Communicator, Plan, COLL, DEV};
use crate::element::{Element, ReduceOp};
use crate::error::CollError;
use crate::matching::{Source, Status, TagMatch};
use crate::schedule::Step;
use stage::{dev_err, Staging, Wire};

/// The device reduction of `op`, if a device runs it.
fn dev_op(op: ReduceOp) -> Result<DevOp, CollError> {
    match op {
        ReduceOp::Sum => Ok(DevOp::Sum),
        ReduceOp::Prod => Ok(DevOp::Prod),
        ReduceOp::Min => Ok(DevOp::Min),
        ReduceOp::Max => Ok(DevOp::Max),
        other => Err(CollError::InvalidArgument(format!(
            "{other:?} does not run on device buffers (sum, prod, min and max do)"
        ))),
    }
}

/// Refuses two buffers of different devices.
fn same_device<T: DeviceElem, D: Device>(
    a: &DeviceVec<T, D>,
    b: &DeviceVec<T, D>,
) -> Result<(), CollError> {
    if Arc::ptr_eq(a.device(), b.device()) {
        Ok(())
    } else {
        Err(CollError::InvalidArgument(format!(
            "send and receive buffers on different devices ({} and {})",
            a.device().describe(),
            b.device().describe()
        )))
    }
}

/// A device collective ready to run: its steps, its wire, its reduction.
struct DeviceCollective {
    steps: Arc<[Step]>,
    wire: Wire,
    op: Option<(DevOp, Dtype)>,
}

impl Communicator {
    /// Runs `f` with this communicator's staging for `dev` (made, or
    /// remade when the device or the configuration changed).
    fn with_staging<D: Device, R>(
        &mut self,
        dev: &Arc<D>,
        f: impl FnOnce(&mut Self, &mut Staging<D>) -> Result<R, CollError>,
    ) -> Result<R, CollError> {
        let (chunk, slots) = (self.config().device_chunk, self.config().device_slots);
        let kept = self
            .staging
            .take()
            .and_then(|b| b.downcast::<Staging<D>>().ok())
            .filter(|s| s.fits(dev, chunk, slots));
        let mut st = match kept {
            Some(s) => s,
            None => Box::new(Staging::new(dev, chunk, slots)?),
        };
        let r = f(self, &mut st);
        self.staging = Some(st);
        r
    }

    /// What a device collective of `plan` runs: its steps, the wire of a
    /// new collective, and the device reduction of `op`.
    fn device_collective<T: DeviceElem + Element>(
        &mut self,
        plan: Plan,
        op: Option<ReduceOp>,
    ) -> Result<DeviceCollective, CollError> {
        let op = op.map(dev_op).transpose()?.map(|o| (o, T::DTYPE));
        let wire = Wire {
            ctx: self.context() | COLL | DEV,
            tag: self.next_tag(),
        };
        Ok(DeviceCollective {
            steps: self.steps_shared(plan),
            wire,
            op,
        })
    }

    /// Runs the steps of `plan` over `buf` through the staging pipeline.
    fn run_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        plan: Plan,
        buf: &mut DeviceVec<T, D>,
        op: Option<ReduceOp>,
    ) -> Result<(), CollError> {
        let call = self.device_collective::<T>(plan, op)?;
        let dev = buf.device().clone();
        self.with_staging(&dev, |comm, st| {
            st.run(
                comm,
                &call.wire,
                &call.steps,
                buf.mem_mut(),
                T::SIZE,
                call.op,
            )
        })
    }

    /// [`Communicator::bcast`] of device memory.
    pub fn bcast_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        buf: &mut DeviceVec<T, D>,
        root: usize,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let plan = self.plan_bcast::<T>(root, buf.len());
        self.run_device(plan, buf, None)
    }

    /// [`Communicator::reduce`] of device memory, reduced on the device.
    /// Elsewhere than at the root `buf` holds partial results after.
    pub fn reduce_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        buf: &mut DeviceVec<T, D>,
        root: usize,
        op: ReduceOp,
    ) -> Result<(), CollError> {
        self.check_root(root)?;
        let plan = self.plan_reduce::<T>(root, buf.len(), false);
        self.run_device(plan, buf, Some(op))
    }

    /// [`Communicator::allreduce`] of device memory, reduced on the device.
    pub fn allreduce_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        buf: &mut DeviceVec<T, D>,
        op: ReduceOp,
    ) -> Result<(), CollError> {
        let plan = self.plan_allreduce::<T>(buf.len(), false);
        self.run_device(plan, buf, Some(op))
    }

    /// [`Communicator::allgather`] of device memory
    /// (`recv.len() == size * send.len()`).
    pub fn allgather_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        send: &DeviceVec<T, D>,
        recv: &mut DeviceVec<T, D>,
    ) -> Result<(), CollError> {
        let (me, n, c) = (self.rank(), self.size(), send.len());
        Self::len_check("allgather's receive buffer", recv.len(), n * c)?;
        same_device(send, recv)?;
        // This rank's block in place, then the schedule on the whole.
        let dev = send.device().clone();
        dev.copy(send.mem(), 0, recv.mem_mut(), me * c * T::SIZE, c * T::SIZE)
            .map_err(dev_err)?;
        let plan = self.plan_allgather::<T>(c);
        self.run_device(plan, recv, None)
    }

    /// [`Communicator::reduce_scatter`] of device memory
    /// (`send.len() == size * recv.len()`), reduced on the device.
    pub fn reduce_scatter_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        send: &DeviceVec<T, D>,
        recv: &mut DeviceVec<T, D>,
        op: ReduceOp,
    ) -> Result<(), CollError> {
        let (me, n, c) = (self.rank(), self.size(), recv.len());
        Self::len_check("reduce_scatter's send buffer", send.len(), n * c)?;
        same_device(send, recv)?;
        let dev = send.device().clone();
        let plan = self.plan_reduce_scatter::<T>(c);
        let call = self.device_collective::<T>(plan, Some(op))?;
        let bytes = n * c * T::SIZE;
        self.with_staging(&dev, |comm, st| {
            // The ring reduces in a working copy of `send`, in device memory
            // the staging keeps between calls.
            let mut work = st.take_work(bytes)?;
            let r = dev
                .copy(send.mem(), 0, &mut work, 0, bytes)
                .map_err(dev_err)
                .and_then(|()| st.run(comm, &call.wire, &call.steps, &mut work, T::SIZE, call.op))
                .and_then(|()| {
                    dev.copy(&work, me * c * T::SIZE, recv.mem_mut(), 0, c * T::SIZE)
                        .and_then(|()| dev.synchronize())
                        .map_err(dev_err)
                });
            st.put_work(work);
            r
        })
    }

    /// Sends device memory to `dest` with `tag`: a header with its length,
    /// then its chunks, staged as the collectives' (the receiver must use
    /// [`Communicator::recv_device`]).
    pub fn send_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        buf: &DeviceVec<T, D>,
        dest: usize,
        tag: u32,
    ) -> Result<(), CollError> {
        let total = buf.len() * T::SIZE;
        let ctx = self.context() | DEV;
        self.send_in::<u8>(ctx, &(total as u64).to_le_bytes(), dest, tag)?;
        let wire = Wire { ctx, tag };
        let dev = buf.device().clone();
        self.with_staging(&dev, |comm, st| {
            st.send(comm, &wire, dest, &[0..total], buf.mem())
        })
    }

    /// Receives into device memory a message of [`Communicator::send_device`]
    /// from `source` with a matching tag. It may be shorter than `buf`
    /// ([`Status::len`] says how long); a longer one is received, dropped,
    /// and reported as [`CollError::Truncated`].
    pub fn recv_device<T: DeviceElem + Element, D: Device>(
        &mut self,
        buf: &mut DeviceVec<T, D>,
        source: impl Into<Source>,
        tag: impl Into<TagMatch>,
    ) -> Result<Status, CollError> {
        let ctx = self.context() | DEV;
        let mut hdr = [0u8; 8];
        let st = self.recv_in::<u8>(ctx, &mut hdr, source.into(), tag.into())?;
        if st.len != 8 {
            return Err(CollError::Device(format!(
                "device message header of {} bytes from rank {}",
                st.len, st.source
            )));
        }
        let total = usize::try_from(u64::from_le_bytes(hdr)).unwrap_or(usize::MAX);
        let cap = buf.len() * T::SIZE;
        let wire = Wire { ctx, tag: st.tag };
        let dev = buf.device().clone();
        if total > cap || total % T::SIZE != 0 {
            self.with_staging(&dev, |comm, s| s.drain(comm, &wire, st.source, total))?;
            return Err(CollError::Truncated { got: total, cap });
        }
        self.with_staging(&dev, |comm, s| {
            s.recv(comm, &wire, st.source, &[0..total], buf.mem_mut(), None)
        })?;
        dev.synchronize().map_err(dev_err)?;
        Ok(Status {
            len: total / T::SIZE,
            ..st
        })
    }
}
