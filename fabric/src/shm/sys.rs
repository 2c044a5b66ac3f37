//! System calls of the shm provider that std does not wrap: passing file
//! descriptors over a Unix socket, and eventfds for warm-mode wake-ups.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{nix_err, FabricError};

/// Most descriptors one set-up message carries (ring + eventfd + regions).
pub(super) const MAX_FDS: usize = 66;

/// Sends `data` (length-prefixed) with `fds` attached.
pub(super) fn send_with_fds(
    sock: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), FabricError> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let len = (data.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(nix_err("sendmsg"))?;
    // The descriptors went with the first byte; the rest is plain stream data.
    let total = 4 + data.len();
    if n < total {
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(&len);
        all.extend_from_slice(data);
        (&*sock)
            .write_all(&all[n..])
            .map_err(|e| FabricError::os("send", e))?;
    }
    Ok(())
}

/// Receives one message sent by [`send_with_fds`], with its descriptors.
pub(super) fn recv_with_fds(
    sock: &UnixStream,
    max: usize,
) -> Result<(Vec<u8>, Vec<OwnedFd>), FabricError> {
    let mut first = vec![0u8; 4 + max];
    let mut cspace = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut first)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cspace),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(nix_err("recvmsg"))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(nix_err("recvmsg"))? {
            if let ControlMessageOwned::ScmRights(got) = c {
                for fd in got {
                    // SAFETY: the kernel just installed `fd` in our table for
                    // this message (SCM_RIGHTS); nothing else owns it, so
                    // wrapping it in an OwnedFd transfers sole ownership.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if truncated {
        return Err(FabricError::Handshake(
            "peer sent too many descriptors".into(),
        ));
    }
    if n == 0 {
        return Err(FabricError::PeerGone(
            "peer closed during shm set-up".into(),
        ));
    }
    let mut got = n;
    while got < 4 {
        got += read_some(sock, &mut first[got..4])?;
    }
    let len = u32::from_le_bytes([first[0], first[1], first[2], first[3]]) as usize;
    if len > max {
        return Err(FabricError::Handshake(format!(
            "shm set-up message of {len} bytes is too large"
        )));
    }
    while got < 4 + len {
        got += read_some(sock, &mut first[got..4 + len])?;
    }
    if got > 4 + len {
        return Err(FabricError::Handshake(
            "unexpected bytes after the shm set-up message".into(),
        ));
    }
    first.truncate(4 + len);
    first.drain(..4);
    Ok((first, fds))
}

fn read_some(sock: &UnixStream, buf: &mut [u8]) -> Result<usize, FabricError> {
    match (&*sock).read(buf) {
        Ok(0) => Err(FabricError::PeerGone(
            "peer closed during shm set-up".into(),
        )),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            Err(FabricError::Timeout {
                op: "shm set-up",
                after: std::time::Duration::ZERO,
            })
        }
        Err(e) => Err(FabricError::os("read", e)),
    }
}

/// A new non-blocking eventfd.
pub(super) fn eventfd() -> Result<OwnedFd, FabricError> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(nix_err("eventfd"))?;
    Ok(OwnedFd::from(efd))
}

/// Adds one to an eventfd, waking whoever polls it.
pub(super) fn signal(fd: BorrowedFd<'_>) {
    // EAGAIN means the counter is saturated: the sleeper will wake anyway.
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd after waking.
pub(super) fn drain(fd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd.as_raw_fd(), &mut b);
}

/// True if the peer end of `sock` is closed (process gone), without
/// consuming anything.
pub(super) fn peer_closed(sock: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    match nix::sys::socket::recv(
        sock.as_fd().as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) => false,
        Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => false,
        Err(_) => true,
    }
}

/// The memory of the process at the other end of `sock`, if this process
/// may read it: its pid comes from the kernel (`SO_PEERCRED`), and it
/// still holds the socket after the pidfd was opened, so the pidfd is
/// that process's and not a successor's under a recycled pid.
pub(super) fn peer_memory(sock: &UnixStream) -> Option<crate::cma::PeerMemory> {
    let cred =
        nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    match crate::cma::PeerMemory::open(cred.pid()) {
        Ok(m) if !peer_closed(sock) => Some(m),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("no single-copy reads from the shm peer: {e}");
            None
        }
    }
}
