//! Shared mappings backed by memfds: the memory under every
//! [`crate::MemoryRegion`] and every shm ring.
//!
//! This module is where rfx-fabric touches raw memory; everything else goes
//! through its bounds-checked methods. A mapping may be shared with a peer
//! process that writes into it at any time, so nothing here hands out a
//! `&mut [u8]`; reads and writes are copies through raw pointers.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{nix_err, FabricError};

/// A `MAP_SHARED` mapping of a whole memfd.
#[derive(Debug)]
pub(crate) struct SharedMap {
    raw: MmapRaw,
    file: File,
    /// Logical length; the mapping may be larger (at least one page).
    len: usize,
}

impl SharedMap {
    /// A new zero-filled memfd of `len` bytes, mapped.
    pub(crate) fn create(name: &str, len: usize) -> Result<SharedMap, FabricError> {
        let cname = CString::new(name).unwrap_or_else(|_| CString::from(c"rfx"));
        let fd =
            nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
                .map_err(nix_err("memfd_create"))?;
        let size = len.max(1);
        nix::unistd::ftruncate(&fd, size as i64).map_err(nix_err("ftruncate"))?;
        let file = File::from(fd);
        let raw = map(&file, size)?;
        Ok(SharedMap { raw, file, len })
    }

    /// Maps a memfd received from a peer; `len` is what the peer says it
    /// holds and must not exceed the file's real size.
    pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> Result<SharedMap, FabricError> {
        let file = File::from(fd);
        let size = file
            .metadata()
            .map_err(|e| FabricError::os("fstat", e))?
            .len() as usize;
        if size < len.max(1) {
            return Err(FabricError::Handshake(format!(
                "peer's shared file holds {size} bytes, fewer than the {len} it claims"
            )));
        }
        let raw = map(&file, size)?;
        Ok(SharedMap { raw, file, len })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Base address in this process, as carried in [`crate::RemoteBuffer`].
    pub(crate) fn addr(&self) -> u64 {
        self.raw.as_ptr() as u64
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    fn check(&self, off: usize, len: usize) -> Result<(), FabricError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(FabricError::OutOfBounds {
                offset: off,
                len,
                size: self.len,
            }),
        }
    }

    /// Copies `data` into the mapping at `off`.
    pub(crate) fn write(&self, off: usize, data: &[u8]) -> Result<(), FabricError> {
        self.check(off, data.len())?;
        // SAFETY: `check` proved off+len <= self.len <= mapped size, so the
        // destination is inside the live mapping owned by `self.raw`; `data`
        // is a distinct Rust slice, so the ranges cannot overlap. Peers may
        // write the same bytes concurrently: plain bytes have no invalid
        // values, and ordering is the protocol's job (ring stamps).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.raw.as_mut_ptr().add(off),
                data.len(),
            );
        }
        Ok(())
    }

    /// Copies a fixed-size array in at `off`: no call to `memcpy` on the
    /// data path for headers.
    #[inline]
    pub(crate) fn write_array<const N: usize>(
        &self,
        off: usize,
        data: &[u8; N],
    ) -> Result<(), FabricError> {
        self.check(off, N)?;
        // SAFETY: as in `write`: in bounds (checked), distinct from `data`;
        // unaligned because records only promise 8-byte alignment.
        unsafe { std::ptr::write_unaligned(self.raw.as_mut_ptr().add(off) as *mut [u8; N], *data) };
        Ok(())
    }

    /// Copies a fixed-size array out of the mapping at `off`.
    #[inline]
    pub(crate) fn read_array<const N: usize>(&self, off: usize) -> Result<[u8; N], FabricError> {
        self.check(off, N)?;
        // SAFETY: as in `read`: in bounds (checked); any bit pattern is a
        // valid byte array.
        Ok(unsafe { std::ptr::read_unaligned(self.raw.as_ptr().add(off) as *const [u8; N]) })
    }

    /// Copies bytes at `off` out of the mapping.
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) -> Result<(), FabricError> {
        self.check(off, out.len())?;
        // SAFETY: bounds checked as in `write`; `out` is an exclusive Rust
        // slice distinct from the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(off), out.as_mut_ptr(), out.len());
        }
        Ok(())
    }

    /// A borrowed view of `len` bytes at `off`.
    ///
    /// # Safety
    /// No one (this process or a peer) may write that range while the slice
    /// lives; the caller's protocol must guarantee it.
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> Result<&[u8], FabricError> {
        self.check(off, len)?;
        // SAFETY: in bounds (checked); absence of writers is the caller's
        // contract above.
        Ok(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(off), len) })
    }

    /// The 8-byte-aligned word at `off` as an atomic.
    ///
    /// Offsets come from this crate's own layouts, never from a peer; a bad
    /// one is a bug, hence the panic.
    pub(crate) fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "atomic at {off} outside the mapping"
        );
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned);
        // AtomicU64 has the size and alignment of u64, and every access to
        // this word, here and in the peer, is atomic. The reference lives
        // no longer than `&self`, which keeps the mapping alive.
        unsafe { &*(self.raw.as_mut_ptr().add(off) as *const AtomicU64) }
    }
}

/// Maps the whole file with its pages populated up front: registered memory
/// and rings must not page-fault on the data path (a first touch costs
/// microseconds in a VM, which showed up as a p99 of every 64th message).
fn map(file: &File, size: usize) -> Result<MmapRaw, FabricError> {
    MmapOptions::new()
        .len(size)
        .populate()
        .map_raw(file)
        .map_err(|e| FabricError::os("mmap", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = SharedMap::create("t", 100).unwrap();
        m.write(90, &[1; 10]).unwrap();
        assert!(m.write(91, &[1; 10]).is_err());
        assert!(m.write(usize::MAX, &[1]).is_err());
        let mut out = [0u8; 10];
        m.read(90, &mut out).unwrap();
        assert_eq!(out, [1; 10]);
        assert!(m.read(95, &mut out).is_err());
    }

    #[test]
    fn peer_mapping_sees_writes_and_lies_are_refused() {
        let a = SharedMap::create("t", 4096).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        let b = SharedMap::from_fd(fd, 4096).unwrap();
        a.write(10, b"shared").unwrap();
        let mut out = [0u8; 6];
        b.read(10, &mut out).unwrap();
        assert_eq!(&out, b"shared");
        let fd = a.fd().try_clone_to_owned().unwrap();
        assert!(SharedMap::from_fd(fd, 1 << 20).is_err());
    }
}
