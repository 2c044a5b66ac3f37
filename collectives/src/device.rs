//! Buffers that live on a device (an accelerator): collectives stage them
//! through host memory, so a GPU path can plug in later by implementing
//! [`DeviceBuffer`] (e.g. with pinned host staging and async copies).

use crate::comm::Communicator;
use crate::element::{Element, Op};
use crate::error::CollError;

/// Memory the communicator cannot read directly; it copies through a
/// host staging buffer.
pub trait DeviceBuffer {
    /// The element type.
    type Elem: Element;
    /// Elements held.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the device contents into `dst` (`dst.len() == self.len()`).
    fn copy_to_host(&self, dst: &mut [Self::Elem]) -> Result<(), CollError>;
    /// Copies `src` (`src.len() == self.len()`) onto the device.
    fn copy_from_host(&mut self, src: &[Self::Elem]) -> Result<(), CollError>;
}

/// A "device" buffer in host memory: the reference implementation of
/// [`DeviceBuffer`], used by the tests.
///
/// ```
/// use rfx_collectives::device::{DeviceBuffer, HostBuffer};
/// let mut d = HostBuffer::new(vec![1u32, 2]);
/// d.copy_from_host(&[3, 4]).unwrap();
/// assert_eq!(d.as_slice(), &[3, 4]);
/// assert!(d.copy_from_host(&[1]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HostBuffer<T: Element>(Vec<T>);

impl<T: Element> HostBuffer<T> {
    /// Wraps a vector.
    pub fn new(v: Vec<T>) -> Self {
        HostBuffer(v)
    }

    /// The contents.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The vector back.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

fn same_len(a: usize, b: usize) -> Result<(), CollError> {
    if a == b {
        Ok(())
    } else {
        Err(CollError::Device(format!(
            "staging buffer of {b} elements for a device buffer of {a}"
        )))
    }
}

impl<T: Element> DeviceBuffer for HostBuffer<T> {
    type Elem = T;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn copy_to_host(&self, dst: &mut [T]) -> Result<(), CollError> {
        same_len(self.0.len(), dst.len())?;
        dst.copy_from_slice(&self.0);
        Ok(())
    }
    fn copy_from_host(&mut self, src: &[T]) -> Result<(), CollError> {
        same_len(self.0.len(), src.len())?;
        self.0.copy_from_slice(src);
        Ok(())
    }
}

fn stage<D: DeviceBuffer>(buf: &D) -> Result<Vec<D::Elem>, CollError> {
    let mut host = vec![D::Elem::default(); buf.len()];
    buf.copy_to_host(&mut host)?;
    Ok(host)
}

impl Communicator {
    /// [`Communicator::allreduce`] of a device buffer, staged through host
    /// memory.
    pub fn allreduce_device<D: DeviceBuffer>(
        &mut self,
        buf: &mut D,
        op: impl Into<Op<D::Elem>>,
    ) -> Result<(), CollError> {
        let mut host = stage(buf)?;
        self.allreduce(&mut host, op)?;
        buf.copy_from_host(&host)
    }

    /// [`Communicator::bcast`] of a device buffer, staged through host
    /// memory (the root copies out, the others copy in).
    pub fn bcast_device<D: DeviceBuffer>(
        &mut self,
        buf: &mut D,
        root: usize,
    ) -> Result<(), CollError> {
        let mut host = if self.rank() == root {
            stage(buf)?
        } else {
            vec![D::Elem::default(); buf.len()]
        };
        self.bcast(&mut host, root)?;
        if self.rank() != root {
            buf.copy_from_host(&host)?;
        }
        Ok(())
    }

    /// [`Communicator::reduce`] of a device buffer: the root's buffer gets
    /// the result; the others' are left as they were.
    pub fn reduce_device<D: DeviceBuffer>(
        &mut self,
        buf: &mut D,
        root: usize,
        op: impl Into<Op<D::Elem>>,
    ) -> Result<(), CollError> {
        let mut host = stage(buf)?;
        self.reduce(&mut host, root, op)?;
        if self.rank() == root {
            buf.copy_from_host(&host)?;
        }
        Ok(())
    }
}
