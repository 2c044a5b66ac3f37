//! Provider `shm`: peers on one host share memory directly.
//!
//! After the TCP handshake picks shm, the two processes meet on an abstract
//! Unix socket (name and secret nonce sent over TCP) and exchange, with
//! `SCM_RIGHTS`, the memfd of each one's inbound ring, its eventfd, and the
//! memfds of the regions it exposes. From then on:
//! - `write_imm` copies the payload straight into the peer's mapped region
//!   (the only copy: zero copy on the receive side) and appends a record to
//!   the peer's ring; a write of at most 224 bytes (`ring::INLINE_WRITE_MAX`)
//!   travels inside the record instead (one cache-line stream, no second
//!   mapping touched) and the receiver copies it into place;
//! - `send` carries the payload inline in ring records (fragmented beyond a
//!   quarter of the ring);
//! - hot mode spins on the ring; warm mode sleeps on the eventfd, which the
//!   writer signals only when the reader has announced it sleeps;
//! - the Unix socket stays open so that the kernel tells us when the peer
//!   process dies.

mod endpoint;
pub(crate) mod rendezvous;
mod ring;
mod sys;

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use endpoint::ShmEndpoint;
use ring::{Consumer, Producer, Ring};

use crate::caps::{Caps, ProviderInfo, TransportKind};
use crate::cma::Canary;
use crate::config::Config;
use crate::error::FabricError;
use crate::mem::SharedMap;
use crate::mr::{RegionTable, RemoteBuffer};

/// shm is usable wherever memfds and Unix sockets are (any Linux).
pub(crate) fn probe(cfg: &Config) -> Option<ProviderInfo> {
    let _ = cfg;
    Some(ProviderInfo {
        kind: TransportKind::Shm,
        caps: Caps::SEND | Caps::WRITE_IMM | Caps::READ | Caps::ZERO_COPY | Caps::WAIT_FD,
        max_inline: cfg.shm_ring_bytes / 4 - ring::REC_HDR,
        device: None,
    })
}

/// What each side sends with its descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct SetupMsg {
    ring_cap: u64,
    ring_key: u64,
    /// The exposed regions, in the order of the descriptors after the
    /// ring's and the eventfd's.
    regions: Vec<RemoteBuffer>,
    /// The sender's canary: what proves a read of its memory read it
    /// ([`crate::cma`]).
    canary: Canary,
}

/// Builds the shm data path over a connected Unix socket. Symmetric: both
/// sides call it; each sends first, then receives (the messages are small).
pub(crate) fn establish(
    sock: UnixStream,
    regions: RegionTable,
    peer_exposed: &[RemoteBuffer],
    cfg: &Config,
    timeout: Duration,
) -> Result<ShmEndpoint, FabricError> {
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| FabricError::os("set_read_timeout", e))?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| FabricError::os("set_write_timeout", e))?;
    let inbound = Ring::create(cfg.shm_ring_bytes)?;
    let wake = sys::eventfd()?;
    if regions.regions().len() + 2 > sys::MAX_FDS {
        return Err(FabricError::TooLarge {
            len: regions.regions().len(),
            max: sys::MAX_FDS - 2,
        });
    }
    let msg = SetupMsg {
        ring_cap: inbound.cap(),
        ring_key: inbound.key(),
        regions: regions.regions().iter().map(|r| r.remote()).collect(),
        canary: Canary::own()?,
    };
    let body = postcard::to_allocvec(&msg).expect("postcard encodes into a Vec");
    let mut fds = vec![inbound.fd(), wake.as_fd()];
    fds.extend(regions.regions().iter().map(|r| r.map().fd()));
    sys::send_with_fds(&sock, &body, &fds)?;

    let (body, mut got) = sys::recv_with_fds(&sock, 64 << 10)?;
    let peer: SetupMsg = postcard::from_bytes(&body)
        .map_err(|e| FabricError::Handshake(format!("bad shm set-up message: {e}")))?;
    if got.len() != peer.regions.len() + 2 {
        return Err(FabricError::Handshake(format!(
            "peer sent {} descriptors for {} regions",
            got.len(),
            peer.regions.len()
        )));
    }
    if peer.regions != peer_exposed {
        return Err(FabricError::Handshake(
            "peer's shm regions differ from the buffers in its hello".into(),
        ));
    }
    let region_fds = got.split_off(2);
    let peer_wake = got.pop().expect("two descriptors checked above");
    let peer_ring = got.pop().expect("two descriptors checked above");
    let tx = Producer::new(Ring::from_fd(peer_ring, peer.ring_cap, peer.ring_key)?);
    let peer_regions = peer
        .regions
        .iter()
        .zip(region_fds)
        .map(|(rb, fd)| Ok((*rb, SharedMap::from_fd(fd, rb.len as usize)?)))
        .collect::<Result<Vec<_>, FabricError>>()?;
    sock.set_nonblocking(true)
        .map_err(|e| FabricError::os("set_nonblocking", e))?;
    let peer_mem = sys::peer_memory(&sock).and_then(|m| match m.with_canary(peer.canary) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!("no single-copy reads from the shm peer: {e}");
            None
        }
    });
    Ok(ShmEndpoint {
        tx,
        rx: Consumer::new(inbound),
        peer_regions,
        regions,
        peer_wake,
        our_wake: wake,
        sock,
        assembling: None,
        ready: VecDeque::new(),
        gone: None,
        idle: 0,
        max_message: cfg.max_message,
        op_timeout: cfg.op_timeout,
        peer_mem,
    })
}
