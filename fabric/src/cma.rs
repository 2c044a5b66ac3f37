//! Cross-memory attach: one copy straight out of another process's
//! memory (`process_vm_readv`), or into it (`process_vm_writev`), as Open
//! MPI's vader and UCX's `cma` transport move large messages between the
//! processes of one host.
//!
//! The shm provider opens the process at the other end of its Unix socket
//! (its pid from `SO_PEERCRED`, set by the kernel, never taken from the
//! peer's words) and keeps a pidfd on it. A recycled pid must never serve
//! data: every read also reads the peer's *canary*, 16 random bytes at an
//! address it named at set-up ([`Canary`]), in the same system call, which
//! works on one address space throughout; the bytes are the peer's only if
//! the canary came back unchanged. (Without a canary, a read counts only
//! if the pidfd says the process was still alive after it: a `poll`, ~0.3
//! µs more on the path of every large message.) Writes cannot prove
//! themselves that way and are followed by the pidfd's check.
//! Whether this process may read another at all is up to the kernel (same
//! user, the peer dumpable, Yama's ptrace scope, pid namespaces) and to
//! seccomp (rfx's sandbox denies the call). [`PeerMemory::open`] finds out
//! with a probe, and callers fall back to copies through shared memory.
//!
//! What is read or written is the peer's choice: it names the ranges (its
//! own memory), and this process reads them only into buffers it owns and
//! writes them only from bytes it owns. Writing needs nothing reading does
//! not: the kernel grants both on the same ptrace check, so a process that
//! may read another could already change it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use crate::error::FabricError;

/// Reads bytes `[at, at + out.len())` of the concatenation of the ranges
/// `segs` (address, length), piece by piece: `read(i, offset in range i,
/// the part of out)` for each range the bytes come from, in order. An
/// error if the ranges end first.
pub fn read_ranges(
    segs: &[(u64, u64)],
    at: u64,
    out: &mut [u8],
    mut read: impl FnMut(usize, u64, &mut [u8]) -> Result<(), FabricError>,
) -> Result<(), FabricError> {
    let mut done = 0usize;
    let mut base = 0u64;
    for (i, &(_, len)) in segs.iter().enumerate() {
        if done == out.len() {
            break;
        }
        let want = at + done as u64;
        let end = base.saturating_add(len);
        if want < end {
            let off = want - base;
            let n = usize::try_from(len - off)
                .unwrap_or(usize::MAX)
                .min(out.len() - done);
            read(i, off, &mut out[done..done + n])?;
            done += n;
        }
        base = end;
    }
    if done < out.len() {
        return Err(FabricError::RemoteAccess {
            rkey: 0,
            addr: at,
            len: out.len() as u64,
            reason: "past the end of the ranges the peer named",
        });
    }
    Ok(())
}

/// 16 random bytes at a fixed address of a process, which it tells its
/// shm peers: a read of its memory that also returns these bytes, in the
/// same `process_vm_readv`, read this process and not a successor under a
/// recycled pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Canary {
    /// Where the bytes lie in the process that owns them.
    pub addr: u64,
    /// The bytes.
    pub value: [u8; 16],
}

/// This process's canary's bytes (`None` until first needed; then random,
/// never all zero, and fixed for the process's life).
static OWN_CANARY: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();

impl Canary {
    /// This process's canary.
    pub fn own() -> Result<Canary, FabricError> {
        let value = match OWN_CANARY.get() {
            Some(v) => v,
            None => {
                let mut b = crate::secret::random_bytes::<16>()?;
                b[0] |= 1;
                // A race with another thread keeps one of the two: either
                // is fine.
                OWN_CANARY.get_or_init(|| b)
            }
        };
        Ok(Canary {
            addr: value.as_ptr() as u64,
            value: *value,
        })
    }
}

/// Another process of this host whose memory this process may read.
#[derive(Debug)]
pub struct PeerMemory {
    pid: Pid,
    /// Readable once the process exited.
    pidfd: OwnedFd,
    /// `process_vm_writev` is permitted too (a seccomp filter may allow
    /// one call and not the other).
    writable: bool,
    /// The peer's canary, read with every read ([`PeerMemory::with_canary`]).
    canary: Option<Canary>,
}

fn unavailable(reason: String) -> FabricError {
    FabricError::Unavailable {
        kind: crate::TransportKind::Shm,
        reason,
    }
}

/// What one `process_vm_readv`/`process_vm_writev` (`call`) returned:
/// bytes moved, or `None` to try again (interrupted); `refused` when the
/// range is not mapped (for that access) in the peer.
fn moved(
    call: &'static str,
    r: nix::Result<usize>,
    refused: impl FnOnce() -> FabricError,
) -> Result<Option<usize>, FabricError> {
    match r {
        Ok(0) | Err(Errno::EFAULT) => Err(refused()),
        Ok(n) => Ok(Some(n)),
        Err(Errno::ESRCH) => Err(FabricError::PeerGone("the peer process exited".into())),
        Err(Errno::EINTR) => Ok(None),
        Err(e) => Err(FabricError::os(call, std::io::Error::from(e))),
    }
}

/// A pidfd for `pid` (Linux 5.3).
fn pidfd_open(pid: i32) -> Result<OwnedFd, FabricError> {
    // SAFETY: pidfd_open takes a pid and flags (0) and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(unavailable(format!(
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl PeerMemory {
    /// Opens process `pid` for reading, if this process may read it.
    ///
    /// The caller vouches that `pid` is its peer's (a pid the kernel
    /// reported) and checks, after this returns, that the peer still
    /// lives: then the pidfd holds that very process.
    pub fn open(pid: i32) -> Result<PeerMemory, FabricError> {
        if pid <= 0 {
            return Err(unavailable(
                "the peer's pid is not visible here (another pid namespace)".into(),
            ));
        }
        let pidfd = pidfd_open(pid)?;
        let pid = Pid::from_raw(pid);
        // Address 0 is never mapped: a permitted read fails with EFAULT,
        // a refused one with EPERM (kernel or seccomp), ESRCH or ENOSYS.
        let mut b = [0u8; 1];
        match process_vm_readv(
            pid,
            &mut [IoSliceMut::new(&mut b)],
            &[RemoteIoVec { base: 0, len: 1 }],
        ) {
            Ok(_) | Err(Errno::EFAULT) => {}
            Err(e) => {
                return Err(unavailable(format!(
                    "process_vm_readv on pid {pid} is not permitted: {e}"
                )))
            }
        }
        let writable = matches!(
            process_vm_writev(pid, &[IoSlice::new(&b)], &[RemoteIoVec { base: 0, len: 1 }]),
            Ok(_) | Err(Errno::EFAULT)
        );
        let m = PeerMemory {
            pid,
            pidfd,
            writable,
            canary: None,
        };
        m.alive()?;
        Ok(m)
    }

    /// This process itself (tests and ranks that share a process), its
    /// reads verified by its own canary.
    pub fn this_process() -> Result<PeerMemory, FabricError> {
        PeerMemory::open(std::process::id() as i32)?.with_canary(Canary::own()?)
    }

    /// From now on every read also reads the peer's `canary` and fails
    /// unless it is unchanged, so that a read proves it read the peer's
    /// memory ([`PeerMemory::reads_verified`]). Fails, with no access
    /// granted, if the canary is not there now.
    pub fn with_canary(mut self, canary: Canary) -> Result<PeerMemory, FabricError> {
        self.canary = Some(canary);
        // Read as data, checked as the canary: both must be those bytes.
        let mut got = [0u8; 16];
        let r = self.read_unverified(&[(canary.addr, 16)], 0, &mut got);
        if r.is_err() || got != canary.value || canary.value == [0; 16] {
            return Err(unavailable(format!(
                "the canary the peer named is not in its memory ({r:?})"
            )));
        }
        Ok(self)
    }

    /// True if each read proves by itself that it read the peer's memory
    /// (it carries a canary): then [`PeerMemory::read_unverified`] is
    /// verified, and [`PeerMemory::alive`] after it adds nothing.
    pub fn reads_verified(&self) -> bool {
        self.canary.is_some()
    }

    /// The process's id, as seen here.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Whether [`PeerMemory::write`] is permitted (reading is).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Writes the concatenation of `parts` over the concatenation of the
    /// peer's address ranges `segs` (address, length), which must be as
    /// long.
    ///
    /// Fails, with nothing promised about the peer's ranges, if the
    /// lengths differ, a range is not mapped (or not writable) in the
    /// peer, or the peer exited (before or during the write).
    pub fn write(&self, segs: &[(u64, u64)], parts: &[&[u8]]) -> Result<(), FabricError> {
        self.write_unverified(segs, parts)?;
        self.alive()
    }

    /// As [`PeerMemory::write`] without its last step, the check that the
    /// peer still lives: the bytes went to the peer only if
    /// [`PeerMemory::alive`] succeeds afterwards. A caller that tells the
    /// peer first (a message that frees it) saves the peer that check's
    /// syscall.
    pub fn write_unverified(
        &self,
        segs: &[(u64, u64)],
        parts: &[&[u8]],
    ) -> Result<(), FabricError> {
        let want: u64 = segs.iter().map(|s| s.1).fold(0, u64::saturating_add);
        let have: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if want != have {
            return Err(FabricError::RemoteAccess {
                rkey: 0,
                addr: segs.first().map_or(0, |s| s.0),
                len: have,
                reason: "ranges of another length than the data",
            });
        }
        let mut segs = segs.iter().copied().filter(|s| s.1 > 0);
        let mut seg = segs.next();
        for part in parts {
            let mut done = 0usize;
            // Bounded: each turn writes at least one byte or returns.
            while done < part.len() {
                let Some((addr, len)) = seg else {
                    return Err(FabricError::RemoteAccess {
                        rkey: 0,
                        addr: 0,
                        len: have,
                        reason: "past the end of the ranges the peer named",
                    });
                };
                let n = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .min(part.len() - done);
                let wrote = self.write_at(addr, &part[done..done + n])?;
                done += wrote;
                seg = if wrote as u64 == len {
                    segs.next()
                } else {
                    Some((addr + wrote as u64, len - wrote as u64))
                };
            }
        }
        Ok(())
    }

    /// Writes a prefix of `data` at `addr` in the peer; returns its length
    /// (at least one byte).
    fn write_at(&self, addr: u64, data: &[u8]) -> Result<usize, FabricError> {
        let refused = |reason| FabricError::RemoteAccess {
            rkey: 0,
            addr,
            len: data.len() as u64,
            reason,
        };
        let Some(base) = addr
            .checked_add(data.len() as u64)
            .and_then(|_| usize::try_from(addr).ok())
        else {
            return Err(refused("an address range that wraps"));
        };
        // Bounded: EINTR is retried a few times only.
        for _ in 0..16 {
            let r = process_vm_writev(
                self.pid,
                &[IoSlice::new(data)],
                &[RemoteIoVec {
                    base,
                    len: data.len(),
                }],
            );
            let refused = || refused("the peer's memory is not mapped writable there");
            if let Some(n) = moved("process_vm_writev", r, refused)? {
                return Ok(n);
            }
        }
        Err(FabricError::os(
            "process_vm_writev",
            std::io::Error::from(Errno::EINTR),
        ))
    }

    /// Reads bytes `[at, at + out.len())` of the concatenation of the
    /// peer's address ranges `segs` (address, length) into `out`.
    ///
    /// Fails, with nothing promised about `out`, if the ranges do not
    /// cover the bytes, a range is not mapped in the peer, or the peer
    /// exited (before or during the read).
    pub fn read(&self, segs: &[(u64, u64)], at: u64, out: &mut [u8]) -> Result<(), FabricError> {
        self.read_unverified(segs, at, out)?;
        if self.reads_verified() {
            return Ok(());
        }
        self.alive()
    }

    /// As [`PeerMemory::read`] without its last step, the check that the
    /// peer still lives: without a canary, `out` holds the peer's bytes
    /// only if [`PeerMemory::alive`] succeeds afterwards (before that, the
    /// pid may have named another process). A caller that frees the peer
    /// first (its buffer was read) saves the peer that check's syscall.
    /// With a canary ([`PeerMemory::reads_verified`]) every read is
    /// verified already.
    pub fn read_unverified(
        &self,
        segs: &[(u64, u64)],
        at: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        read_ranges(segs, at, out, |i, off, buf| {
            self.read_at(segs[i].0.checked_add(off), buf)
        })
    }

    fn read_at(&self, addr: Option<u64>, out: &mut [u8]) -> Result<(), FabricError> {
        let refused = |addr: u64, len: usize, reason| FabricError::RemoteAccess {
            rkey: 0,
            addr,
            len: len as u64,
            reason,
        };
        let Some(addr) = addr.filter(|a| a.checked_add(out.len() as u64).is_some()) else {
            return Err(refused(0, out.len(), "an address range that wraps"));
        };
        let mut got = 0usize;
        // Bounded: every turn copies at least one byte or returns.
        while got < out.len() {
            let from = addr + got as u64;
            let Ok(base) = usize::try_from(from) else {
                return Err(refused(
                    from,
                    out.len() - got,
                    "an address beyond this host's",
                ));
            };
            let len = out.len() - got;
            let refused = || refused(from, len, "the peer's memory is not mapped there");
            let Some(canary) = self.canary else {
                let r = process_vm_readv(
                    self.pid,
                    &mut [IoSliceMut::new(&mut out[got..])],
                    &[RemoteIoVec { base, len }],
                );
                got += moved("process_vm_readv", r, refused)?.unwrap_or(0);
                continue;
            };
            // The canary last, in the same call: one address space for both.
            let mut seen = [0u8; 16];
            let r = process_vm_readv(
                self.pid,
                &mut [IoSliceMut::new(&mut out[got..]), IoSliceMut::new(&mut seen)],
                &[
                    RemoteIoVec { base, len },
                    RemoteIoVec {
                        base: canary.addr as usize,
                        len: 16,
                    },
                ],
            );
            let Some(n) = moved("process_vm_readv", r, refused)? else {
                continue;
            };
            if n < len {
                // A partial read stops at the first range it could not
                // finish: the rest (and the canary) again.
                got += n;
                continue;
            }
            if n != len + seen.len() || seen != canary.value {
                return Err(FabricError::PeerGone(
                    "the peer's memory is no longer its own: it exited or was replaced".into(),
                ));
            }
            got += len;
        }
        Ok(())
    }

    /// Fails if the process exited (its pid may name another one now):
    /// one `poll` of its pidfd, about 0.2 µs.
    pub fn alive(&self) -> Result<(), FabricError> {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Ok(()),
            Ok(_) => Err(FabricError::PeerGone(
                "the peer process exited during a read of its memory".into(),
            )),
            Err(e) => Err(FabricError::os("poll(pidfd)", std::io::Error::from(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_proves_each_read_and_a_changed_one_fails_it() {
        // Our own canary: reads verified, no pidfd check needed.
        let m = PeerMemory::this_process().unwrap();
        assert!(m.reads_verified());
        let data: Vec<u8> = (0..200u8).collect();
        let mut out = [0u8; 100];
        m.read(&[(data.as_ptr() as u64, 200)], 50, &mut out)
            .unwrap();
        assert_eq!(out.to_vec(), (50..150u8).collect::<Vec<_>>());
        // A canary that is not there is refused at once.
        let own = Canary::own().unwrap();
        let mut wrong = own;
        wrong.value[5] ^= 0xff;
        assert!(PeerMemory::this_process()
            .unwrap()
            .with_canary(wrong)
            .is_err());
        let zero = [0u8; 16];
        let zeros = Canary {
            addr: zero.as_ptr() as u64,
            value: zero,
        };
        assert!(PeerMemory::this_process()
            .unwrap()
            .with_canary(zeros)
            .is_err());
        // As if another process took the pid: the bytes at the canary's
        // address change, and the next read fails instead of returning
        // that process's memory.
        let mut spot = Box::new([7u8; 16]);
        let canary = Canary {
            addr: spot.as_ptr() as u64,
            value: [7; 16],
        };
        let m = PeerMemory::this_process()
            .unwrap()
            .with_canary(canary)
            .unwrap();
        m.read(&[(data.as_ptr() as u64, 200)], 0, &mut out).unwrap();
        spot[3] = 8;
        // Keeps the store that only the kernel reads.
        std::hint::black_box(&spot);
        assert!(matches!(
            m.read(&[(data.as_ptr() as u64, 200)], 0, &mut out),
            Err(FabricError::PeerGone(_))
        ));
        // A bad range is still a bad range, not a lost peer.
        assert!(matches!(
            m.read(&[(0, 8)], 0, &mut out[..8]),
            Err(FabricError::RemoteAccess { .. })
        ));
        drop(spot);
    }

    #[test]
    fn reads_ranges_of_this_process() {
        let m = PeerMemory::this_process().expect("CMA on ourselves");
        let a: Vec<u8> = (0..100u8).collect();
        let b: Vec<u8> = (100..200u8).collect();
        let segs = [
            (a.as_ptr() as u64, a.len() as u64),
            (b.as_ptr() as u64, b.len() as u64),
        ];
        let mut out = [0u8; 50];
        m.read(&segs, 75, &mut out).unwrap();
        assert_eq!(out.to_vec(), (75..125u8).collect::<Vec<_>>());
        let mut past = [0u8; 2];
        assert!(matches!(
            m.read(&segs, 199, &mut past),
            Err(FabricError::RemoteAccess { .. })
        ));
    }

    #[test]
    fn writes_parts_over_ranges_of_this_process() {
        let m = PeerMemory::this_process().expect("CMA on ourselves");
        assert!(m.writable());
        let mut a = vec![0u8; 70];
        let mut b = vec![0u8; 30];
        let segs = [
            (a.as_mut_ptr() as u64, a.len() as u64),
            (b.as_mut_ptr() as u64, b.len() as u64),
        ];
        let data: Vec<u8> = (0..100u8).collect();
        let (x, y) = data.split_at(45);
        m.write(&segs, &[x, y]).unwrap();
        // The kernel wrote through the addresses above.
        let got: Vec<u8> = std::hint::black_box(a.iter().chain(b.iter()).copied().collect());
        assert_eq!(got, data);
        assert!(matches!(
            m.write(&segs, &[x]),
            Err(FabricError::RemoteAccess { .. })
        ));
        for bad in [[(0u64, 8u64)], [(u64::MAX - 3, 8)]] {
            assert!(matches!(
                m.write(&bad, &[&[1u8; 8]]),
                Err(FabricError::RemoteAccess { .. })
            ));
        }
        // Read-only memory (this function's code) is refused, not written.
        let code = PeerMemory::this_process as *const () as u64;
        assert!(m.write(&[(code, 1)], &[&[0xcc]]).is_err());
    }

    #[test]
    fn bad_addresses_are_refused_not_fatal() {
        let m = PeerMemory::this_process().unwrap();
        let mut out = [0u8; 8];
        for segs in [[(0u64, 8u64)], [(u64::MAX - 3, 8)], [(1 << 63, 8)]] {
            assert!(
                matches!(
                    m.read(&segs, 0, &mut out),
                    Err(FabricError::RemoteAccess { .. })
                ),
                "{segs:?}"
            );
        }
        assert!(PeerMemory::open(0).is_err());
    }

    /// A child that sleeps, and its memory.
    fn sleeping_child() -> (std::process::Child, PeerMemory) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let m = PeerMemory::open(child.id() as i32).expect("CMA on our own child");
        (child, m)
    }

    #[test]
    fn a_peer_that_exited_is_gone_before_it_is_reaped() {
        let (mut child, m) = sleeping_child();
        let mut out = [0u8; 1];
        // Alive: the unverified read reaches its memory (address 0 is
        // never mapped there), and the check passes.
        assert!(matches!(
            m.read_unverified(&[(0, 1)], 0, &mut out),
            Err(FabricError::RemoteAccess { .. })
        ));
        m.alive().expect("a running child");
        child.kill().unwrap();
        // A zombie holds its pid until reaped; the check must already fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while m.alive().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the kill never landed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(matches!(m.alive(), Err(FabricError::PeerGone(_))));
        child.wait().unwrap();
    }

    #[test]
    fn a_peer_that_exited_is_gone() {
        let (mut child, m) = sleeping_child();
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = [0u8; 1];
        assert!(matches!(
            m.read(&[(4096, 1)], 0, &mut out),
            Err(FabricError::PeerGone(_))
        ));
    }
}
