//! Registered memory: [`MemoryRegion`] here, [`RemoteBuffer`] for a peer's.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::FabricError;
use crate::mem::SharedMap;

/// Registered memory that peers can write into, identified by a remote key.
///
/// Made by [`crate::Fabric::register`]; backed by a memfd so that a shm peer
/// maps it and writes in place (zero copy), and an RDMA NIC can register it.
/// Clones share the memory.
///
/// Reads and writes are copies ([`MemoryRegion::read_at`],
/// [`MemoryRegion::write_at`]); a borrowed view is `unsafe`
/// ([`MemoryRegion::as_slice`]) because a peer may write at any time.
///
/// ```
/// let fabric = rfx_fabric::Fabric::open(rfx_fabric::Config::default())?;
/// let mr = fabric.register(16)?;
/// mr.write_at(4, b"abcd")?;
/// assert_eq!(mr.to_vec(4, 4)?, b"abcd");
/// assert!(mr.write_at(14, b"abcd").is_err()); // out of bounds, nothing written
/// assert_eq!(mr.remote().len, 16);
/// # Ok::<(), rfx_fabric::FabricError>(())
/// ```
#[derive(Clone)]
pub struct MemoryRegion {
    map: Arc<SharedMap>,
    rkey: u32,
}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .field("rkey", &format_args!("{:#x}", self.rkey))
            .finish()
    }
}

impl MemoryRegion {
    pub(crate) fn new(len: usize) -> Result<MemoryRegion, FabricError> {
        let map = SharedMap::create("rfx-mr", len)?;
        let rkey = u32::from_le_bytes(crate::secret::random_bytes::<4>()?) | 1;
        Ok(MemoryRegion {
            map: Arc::new(map),
            rkey,
        })
    }

    pub(crate) fn map(&self) -> &SharedMap {
        &self.map
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The remote key peers must present.
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    /// The base address, as peers see it in [`RemoteBuffer::addr`].
    pub fn addr(&self) -> u64 {
        self.map.addr()
    }

    /// The whole region as a peer addresses it.
    pub fn remote(&self) -> RemoteBuffer {
        RemoteBuffer {
            addr: self.addr(),
            len: self.len() as u64,
            rkey: self.rkey,
        }
    }

    /// Copies `data` in at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), FabricError> {
        self.map.write(offset, data)
    }

    /// Copies `out.len()` bytes at `offset` out.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<(), FabricError> {
        self.map.read(offset, out)
    }

    /// Copies `len` bytes at `offset` into a new vector.
    pub fn to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>, FabricError> {
        let mut v = vec![0u8; len];
        self.read_at(offset, &mut v)?;
        Ok(v)
    }

    /// A view of `len` bytes at `offset`, without copying.
    ///
    /// # Safety
    /// Nothing may write that range while the slice lives: no local
    /// [`MemoryRegion::write_at`] and no peer write, which the application's
    /// protocol must rule out (e.g. the range was delivered by a completion
    /// and is not re-exposed until the caller is done).
    pub unsafe fn as_slice(&self, offset: usize, len: usize) -> Result<&[u8], FabricError> {
        // SAFETY: the caller upholds the no-writer contract of `SharedMap::slice`.
        unsafe { self.map.slice(offset, len) }
    }

    /// Raw pointer to the first byte, for FFI (e.g. a C function's `void *in`).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

/// A peer's registered memory, or a part of it: what a one-sided write
/// targets.
///
/// ```
/// use rfx_fabric::RemoteBuffer;
/// let rb = RemoteBuffer { addr: 0x1000, len: 64, rkey: 7 };
/// assert_eq!(rb.slice(16, 16), Some(RemoteBuffer { addr: 0x1010, len: 16, rkey: 7 }));
/// assert_eq!(rb.slice(60, 16), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteBuffer {
    /// First address, in the owner's address space.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Remote key.
    pub rkey: u32,
}

impl RemoteBuffer {
    /// The part `[offset, offset + len)`, if it lies inside.
    pub fn slice(&self, offset: u64, len: u64) -> Option<RemoteBuffer> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| RemoteBuffer {
            addr: self.addr + offset,
            len,
            rkey: self.rkey,
        })
    }

    /// True if `[addr, addr + len)` lies inside.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr.saturating_add(self.len))
    }
}

/// Checks a write of `len` bytes at `offset` into `target` against what
/// the peer exposed; returns the remote address. Pure.
pub(crate) fn check_remote(
    exposed: &[RemoteBuffer],
    target: &RemoteBuffer,
    offset: u64,
    len: u64,
) -> Result<u64, FabricError> {
    let refuse = |addr, reason| FabricError::RemoteAccess {
        rkey: target.rkey,
        addr,
        len,
        reason,
    };
    let addr = target
        .addr
        .checked_add(offset)
        .ok_or_else(|| refuse(u64::MAX, "address overflows"))?;
    if target.slice(offset, len).is_none() {
        return Err(refuse(addr, "beyond the end of the target buffer"));
    }
    let mut known = exposed.iter().filter(|b| b.rkey == target.rkey).peekable();
    if known.peek().is_none() {
        return Err(refuse(addr, "the peer exposed no buffer with this rkey"));
    }
    if known.any(|b| b.contains(addr, len)) {
        Ok(addr)
    } else {
        Err(refuse(addr, "outside the peer's registered buffer"))
    }
}

/// The local regions exposed on one endpoint, for checking incoming writes.
#[derive(Debug, Default, Clone)]
pub(crate) struct RegionTable {
    regions: Vec<MemoryRegion>,
}

impl RegionTable {
    pub(crate) fn new(regions: Vec<MemoryRegion>) -> Self {
        RegionTable { regions }
    }

    pub(crate) fn regions(&self) -> &[MemoryRegion] {
        &self.regions
    }

    /// The region and offset that `rkey`/`addr`/`len` names, if valid.
    pub(crate) fn resolve(
        &self,
        rkey: u32,
        addr: u64,
        len: u64,
    ) -> Result<(&MemoryRegion, usize), &'static str> {
        let mut any = false;
        for r in self.regions.iter().filter(|r| r.rkey == rkey) {
            any = true;
            if r.remote().contains(addr, len) {
                return Ok((r, (addr - r.addr()) as usize));
            }
        }
        Err(if any {
            "write outside the registered region"
        } else {
            "write with an unknown rkey"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_checks() {
        let exposed = [RemoteBuffer {
            addr: 1000,
            len: 100,
            rkey: 5,
        }];
        let whole = exposed[0];
        assert_eq!(check_remote(&exposed, &whole, 0, 100).unwrap(), 1000);
        assert_eq!(check_remote(&exposed, &whole, 99, 1).unwrap(), 1099);
        assert!(check_remote(&exposed, &whole, 99, 2).is_err());
        assert!(check_remote(&exposed, &whole, u64::MAX, 2).is_err());
        let forged = RemoteBuffer {
            addr: 1000,
            len: 1 << 20,
            rkey: 5,
        };
        assert!(check_remote(&exposed, &forged, 200, 8).is_err());
        let wrong_key = RemoteBuffer { rkey: 6, ..whole };
        assert!(matches!(
            check_remote(&exposed, &wrong_key, 0, 8),
            Err(FabricError::RemoteAccess {
                reason: "the peer exposed no buffer with this rkey",
                ..
            })
        ));
        assert_eq!(check_remote(&exposed, &whole, 100, 0).unwrap(), 1100);
    }
}
