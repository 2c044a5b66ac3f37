//! The shm provider's own leg of a connection's set-up: after the common
//! TCP handshake chose shm, the server offers a one-off abstract Unix socket
//! and a secret nonce; the client connects there and proves the nonce; the
//! two then exchange the ring and region memfds over it (`super::establish`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::deadline::remaining;
use crate::error::FabricError;
use crate::secret::random_bytes;
use crate::wire::ShmOffer;

/// A one-off abstract Unix socket for one shm set-up, and its secret (the
/// server's side, announced in its accept).
pub(crate) fn offer() -> Result<(UnixListener, ShmOffer), FabricError> {
    let nonce = random_bytes::<16>()?;
    let tag = random_bytes::<8>()?;
    let name = format!(
        "rfx-shm-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(tag)
    );
    let addr = UnixAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| FabricError::os("unix address", e))?;
    let listener = UnixListener::bind_addr(&addr).map_err(|e| FabricError::os("bind (shm)", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| FabricError::os("set_nonblocking", e))?;
    Ok((
        listener,
        ShmOffer {
            socket: name,
            nonce,
        },
    ))
}

/// Waits for the client that knows `nonce`; anyone else is dropped. The
/// client keeps its TCP connection `sock` open, silent, until it is through:
/// anything on it (the client refused our accept and closed) ends the wait.
pub(crate) fn accept(
    listener: &UnixListener,
    nonce: &[u8; 16],
    sock: &TcpStream,
    deadline: Instant,
) -> Result<UnixStream, FabricError> {
    loop {
        let left = remaining(deadline)?;
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
        ];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        )
        .map_err(|e| FabricError::os("poll", io::Error::from(e)))?;
        let listener_ready = fds[0].any().unwrap_or(false);
        if !listener_ready && fds[1].any().unwrap_or(false) {
            return Err(FabricError::PeerGone(
                "the client closed the connection before the shm set-up".into(),
            ));
        }
        let mut us = match listener.accept() {
            Ok((us, _)) => us,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(FabricError::os("accept (shm)", e)),
        };
        us.set_nonblocking(false)
            .map_err(|e| FabricError::os("set_nonblocking", e))?;
        us.set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| FabricError::os("set_read_timeout", e))?;
        let mut got = [0u8; 16];
        if us.read_exact(&mut got).is_ok() && &got == nonce {
            return Ok(us);
        }
        tracing::warn!("dropped an shm connection with a wrong secret");
    }
}

/// The client's side: connects to the server's offer and proves its nonce.
pub(crate) fn connect(offer: &ShmOffer, deadline: Instant) -> Result<UnixStream, FabricError> {
    let name = UnixAddr::from_abstract_name(offer.socket.as_bytes())
        .map_err(|e| FabricError::os("unix address", e))?;
    let mut us =
        UnixStream::connect_addr(&name).map_err(|e| FabricError::os("connect (shm)", e))?;
    us.set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| FabricError::os("set_write_timeout", e))?;
    us.write_all(&offer.nonce)
        .map_err(|e| FabricError::os("send nonce", e))?;
    Ok(us)
}
