//! The raw verbs baseline: a WRITE_WITH_IMM ping-pong on two bare RC queue
//! pairs, with none of rfx's layers, to judge the `verbs` provider against.
//!
//! It is the loop of perftest's `ib_write_lat --write_with_imm` (the
//! baseline issue 6 names, which Debian 12's perftest 4.5 lacks): each side
//! busy-polls its receive CQ for the peer's write, re-posts that one
//! receive, posts one signalled RDMA WRITE_WITH_IMM of `len` bytes into
//! the peer's buffer (inline when the device takes it) and busy-polls its
//! send CQ for the completion. Measured beside upstream perftest's binary
//! in one VM session, the two agree (README, verbs section).
//!
//! Both queue pairs live in this process, on the device and protection
//! domain rfx's provider uses: the bench pins one peer per thread.
//!
//! ```no_run
//! # fn main() -> Result<(), rfx_fabric::FabricError> {
//! let (mut a, mut b) = rfx_fabric::verbs_baseline::pair(8)?;
//! let echo = std::thread::spawn(move || -> Result<(), rfx_fabric::FabricError> {
//!     b.recv()?;
//!     b.send(8)
//! });
//! a.send(8)?;
//! assert_eq!(a.recv()?, 8);
//! echo.join().unwrap()?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sys::{self, QueuePair, SendKind, Source};
use super::{domain, unavailable};
use crate::error::FabricError;
use crate::mr::MemoryRegion;

/// Receives each queue pair keeps posted (one is consumed per round trip).
const RECVS: u32 = 16;
/// How long one wait for a completion may spin before it is an error.
const WAIT: Duration = Duration::from_secs(10);
/// Polls between two looks at the clock.
const POLLS_PER_CLOCK: u32 = 1024;

/// One end of a raw ping-pong: a connected RC queue pair, a registered
/// buffer (the peer writes into its first half, this side sends from its
/// second), and the peer's buffer.
#[derive(Debug)]
pub struct RawPeer {
    // Dropped before the registrations it posts from.
    qp: QueuePair,
    local: Arc<sys::Mr>,
    /// The bytes of inline sends (the device copies them at post time).
    payload: Vec<u8>,
    remote_addr: u64,
    remote_rkey: u32,
}

/// Two raw peers connected to each other, each able to send up to
/// `max_len` bytes.
///
/// Errors with [`FabricError::Unavailable`] when this host has no RDMA
/// device.
pub fn pair(max_len: usize) -> Result<(RawPeer, RawPeer), FabricError> {
    let dom = domain().map_err(unavailable)?;
    let caps = sys::QpCaps {
        send_depth: 16,
        recv_depth: RECVS,
        max_inline: super::WANT_INLINE,
    };
    // One end: its queue pair (receives posted), its registration (the
    // first half receives the peer's writes, the second, filled with
    // `fill`, is the source of this side's) and its first PSN.
    let end = |fill: u8| -> Result<(QueuePair, Arc<sys::Mr>, u32), FabricError> {
        let region = MemoryRegion::new(2 * max_len.max(1))?;
        region.write_at(max_len.max(1), &vec![fill; max_len])?;
        let mr = Arc::new(sys::Mr::register(&dom.pd, region)?);
        let qp = QueuePair::create(&dom.pd, caps)?;
        qp.post_empty_recvs(RECVS as usize)?;
        let psn = u32::from_le_bytes(crate::secret::random_bytes::<4>()?) & 0x00ff_ffff;
        Ok((qp, mr, psn))
    };
    let remote = |qp: &QueuePair, psn: u32| sys::RemoteQp {
        qpn: qp.qpn(),
        psn,
        lid: dom.port.lid,
        gid: dom.port.gid,
        mtu: dom.port.active_mtu,
    };
    let (qa, ma, psn_a) = end(0xa5)?;
    let (qb, mb, psn_b) = end(0x5a)?;
    qa.connect(&dom.port, psn_a, &remote(&qb, psn_b))?;
    qb.connect(&dom.port, psn_b, &remote(&qa, psn_a))?;
    let peer = |qp, mr: Arc<sys::Mr>, fill, to: &sys::Mr| RawPeer {
        qp,
        local: mr,
        payload: vec![fill; max_len],
        remote_addr: to.region().addr(),
        remote_rkey: to.rkey(),
    };
    let a = peer(qa, ma.clone(), 0xa5, &mb);
    let b = peer(qb, mb, 0x5a, &ma);
    Ok((a, b))
}

impl RawPeer {
    /// Writes the first `len` bytes of this peer's buffer into the other's
    /// with one signalled WRITE_WITH_IMM (inline when it fits) and spins
    /// until it completes.
    pub fn send(&mut self, len: usize) -> Result<(), FabricError> {
        if len > self.payload.len() {
            return Err(FabricError::TooLarge {
                len,
                max: self.payload.len(),
            });
        }
        let src = if len <= self.qp.max_inline() as usize {
            Source::Inline(&self.payload[..len], &[])
        } else {
            Source::Registered(&self.local, self.payload.len().max(1), len)
        };
        let kind = SendKind::WriteImm {
            remote_addr: self.remote_addr,
            rkey: self.remote_rkey,
            imm: len as u32,
        };
        self.qp.post_send(0, kind, src, true)?;
        self.spin("raw verbs send completion", |qp, done| {
            qp.poll_send(1, |wc| *done = Some(wc))
        })
        .map(|_| ())
    }

    /// Spins until the peer's next write arrives, re-posts the receive it
    /// consumed, and returns the bytes it placed.
    pub fn recv(&mut self) -> Result<usize, FabricError> {
        let wc = self.spin("raw verbs receive", |qp, done| {
            qp.poll_recv(1, |wc| *done = Some(wc))
        })?;
        self.qp.post_empty_recvs(1)?;
        Ok(wc.byte_len as usize)
    }

    /// The first `len` bytes the peer wrote into this side's buffer.
    pub fn received(&self, len: usize) -> Result<Vec<u8>, FabricError> {
        self.local.region().to_vec(0, len)
    }

    /// Polls with `poll` until it yields a completion (an error if it
    /// failed), for at most [`WAIT`].
    fn spin(
        &self,
        op: &'static str,
        mut poll: impl FnMut(&QueuePair, &mut Option<sys::Wc>) -> Result<usize, FabricError>,
    ) -> Result<sys::Wc, FabricError> {
        let start = Instant::now();
        loop {
            for _ in 0..POLLS_PER_CLOCK {
                let mut done = None;
                poll(&self.qp, &mut done)?;
                if let Some(wc) = done {
                    if !wc.ok {
                        return Err(FabricError::PeerGone(format!(
                            "{op}: work completion status {}",
                            wc.status
                        )));
                    }
                    return Ok(wc);
                }
            }
            if start.elapsed() > WAIT {
                return Err(FabricError::Timeout { op, after: WAIT });
            }
        }
    }
}
