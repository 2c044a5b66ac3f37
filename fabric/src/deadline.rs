//! Deadline-bounded socket I/O for the set-up of a connection: the TCP
//! handshake and the providers' own set-up messages bound every step by
//! one deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::error::FabricError;

/// Time left before `deadline` (a timeout error once it passed): the
/// bound of every step of a connection's set-up, providers' included.
pub(crate) fn remaining(deadline: Instant) -> Result<Duration, FabricError> {
    let now = Instant::now();
    if now >= deadline {
        Err(FabricError::Timeout {
            op: "handshake",
            after: Duration::ZERO,
        })
    } else {
        Ok(deadline - now)
    }
}

/// Writes all of `bytes` to `sock` before `deadline`.
pub(crate) fn write_all_by(
    sock: &mut TcpStream,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), FabricError> {
    sock.set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| FabricError::os("set_write_timeout", e))?;
    sock.write_all(bytes)
        .map_err(|e| FabricError::from_io("handshake send", e))
}

/// Fills `buf` from `sock` before `deadline` (providers' set-up messages too).
pub(crate) fn read_exact_by(
    sock: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), FabricError> {
    let mut got = 0;
    while got < buf.len() {
        sock.set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| FabricError::os("set_read_timeout", e))?;
        match sock.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(FabricError::PeerGone(
                    "peer closed during the handshake".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FabricError::from_io("handshake receive", e)),
        }
    }
    Ok(())
}
