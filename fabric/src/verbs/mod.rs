//! Provider `verbs`: RDMA over libibverbs (feature `verbs`), tested on
//! soft-RoCE (`rdma_rxe`).
//!
//! Set-up: after the TCP handshake picks verbs, each side creates an RC
//! queue pair (a send CQ, a receive CQ on a completion channel), posts its
//! receives, registers the regions it exposes (once per process and PD: a
//! registration cache shared by all endpoints), and sends a [`SetupMsg`] on
//! the same TCP connection: QPN, PSN, GID, LID, MTU, receive depth, the
//! address of its credit word, and for each exposed region the device rkey
//! that goes with rfx's rkey. Both sides then move their QP through
//! INIT/RTR/RTS and exchange one "ready" byte. The TCP connection stays open
//! as the liveness channel: an RC QP does not notice a dead peer while it
//! only waits for receives, the kernel closes the socket when the peer
//! process dies.
//!
//! Data path (see [`proto`] for the formats):
//! - `write_imm` of up to `max_inline - 32` bytes: one inline SEND of a
//!   32-byte header (imm, rkey, address, length) plus the payload; the
//!   receiver copies the few bytes into the region (one packet beats a
//!   second one). Larger: RDMA WRITEs straight into the peer's region (zero
//!   copy on the receive side; the source is copied into a registered
//!   staging ring first, so the caller's buffer is free when the call
//!   returns), then a header-only inline SEND. RC ordering makes the data
//!   visible before the header's completion. The immediate needs 32 bits of
//!   its own, which is why the descriptor travels in a SEND rather than in
//!   a WRITE_WITH_IMM's immediate.
//! - `send`: SENDs of header + fragment into pre-posted receive buffers,
//!   inline when small, else from the staging ring.
//! - Credits: a SEND is posted only when the peer has a receive for it; the
//!   peer returns credits in every header it sends, and by an RDMA WRITE of
//!   its count into our credit word when it has nothing to send. So
//!   receivers are never overrun (RNR retry stays a safety net).
//! - Selective signalling: every 16th request is signalled, and any that
//!   leaves the staging ring more than half full (its completion frees the
//!   space of all requests before it).
//! - Hot mode polls the receive CQ; warm mode arms it and sleeps in epoll on
//!   the completion channel and the TCP socket together (the event fd).
//! - A failed work completion (peer died, QP in error) makes the endpoint
//!   dead: every later call returns [`FabricError::PeerGone`].
//!
//! Environment (read once): `RFX_VERBS_DEVICE` (device name, default: the
//! first with an active port 1), `RFX_VERBS_GID_INDEX` (default: the first
//! IPv4-mapped GID, i.e. RoCEv2, else the first non-zero one).

mod endpoint;
mod proto;
mod sys;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

pub(crate) use endpoint::VerbsEndpoint;
use proto::{ExposedRegion, SetupMsg};

use crate::caps::{Caps, ProviderInfo, TransportKind};
use crate::config::Config;
use crate::error::FabricError;
use crate::mr::{MemoryRegion, RegionTable, RemoteBuffer};

/// Receives posted per endpoint (the peer's initial credits).
const RECV_DEPTH: u32 = 64;
/// Bytes per receive buffer: header + the largest fragment.
const RECV_LEN: usize = 4096;
/// Send queue depth.
const SEND_DEPTH: u32 = 256;
/// Bytes of the staging ring of each endpoint.
const STAGING: usize = 256 << 10;
/// Inline data asked of the device (rxe grants 256 or 512).
const WANT_INLINE: u32 = 256;

/// The device, its PD, and the registration cache of this process.
#[derive(Debug)]
struct Domain {
    pd: Arc<sys::Pd>,
    device: String,
    port: sys::PortInfo,
    /// Registrations by region address; an entry lives while an endpoint
    /// uses it (each [`sys::Mr`] keeps its region's memory alive, so the
    /// address cannot be reused by another region meanwhile).
    cache: Mutex<Vec<(u64, usize, Weak<sys::Mr>)>>,
}

#[derive(Debug, Clone)]
enum DomainError {
    Absent(String),
    Failed(String),
}

fn env_u8(var: &str) -> Option<u8> {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok())
}

fn domain() -> Result<Arc<Domain>, DomainError> {
    static DOMAIN: OnceLock<Result<Arc<Domain>, DomainError>> = OnceLock::new();
    DOMAIN
        .get_or_init(|| {
            let want = std::env::var("RFX_VERBS_DEVICE").ok();
            let ctx = sys::Context::open(want.as_deref(), env_u8("RFX_VERBS_GID_INDEX")).map_err(
                |e| match e {
                    sys::NoDevice::Absent(why) => DomainError::Absent(why),
                    sys::NoDevice::Failed(e) => DomainError::Failed(chain(&e)),
                },
            )?;
            let device = ctx.name().to_string();
            let port = ctx.port();
            let pd = sys::Pd::alloc(Arc::new(ctx)).map_err(|e| DomainError::Failed(chain(&e)))?;
            tracing::debug!(%device, gid_index = port.gid_index, "verbs device opened");
            Ok(Arc::new(Domain {
                pd: Arc::new(pd),
                device,
                port,
                cache: Mutex::new(Vec::new()),
            }))
        })
        .clone()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Domain {
    /// The registration of `region`, made once and shared.
    fn register(&self, region: &MemoryRegion) -> Result<Arc<sys::Mr>, FabricError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(_, _, w)| w.strong_count() > 0);
        let key = (region.addr(), region.len());
        if let Some(mr) = cache
            .iter()
            .find(|(a, l, _)| (*a, *l) == key)
            .and_then(|(_, _, w)| w.upgrade())
        {
            return Ok(mr);
        }
        let mr = Arc::new(sys::Mr::register(&self.pd, region.clone())?);
        cache.push((key.0, key.1, Arc::downgrade(&mr)));
        Ok(mr)
    }
}

/// Usable if a device with an active port opens; no device (or no RDMA in
/// the kernel) is `Ok(None)`, never an error.
pub(crate) fn probe(cfg: &Config) -> Result<Option<ProviderInfo>, FabricError> {
    let _ = cfg;
    match domain() {
        Ok(d) => Ok(Some(ProviderInfo {
            kind: TransportKind::Verbs,
            caps: Caps::SEND | Caps::WRITE_IMM | Caps::ZERO_COPY | Caps::WAIT_FD | Caps::INTER_NODE,
            max_inline: WANT_INLINE as usize - proto::HDR_LEN,
            device: Some(d.device.clone()),
        })),
        Err(DomainError::Absent(why)) => {
            tracing::debug!("verbs unusable: {why}");
            Ok(None)
        }
        Err(DomainError::Failed(why)) => Err(FabricError::Unavailable {
            kind: TransportKind::Verbs,
            reason: why,
        }),
    }
}

fn unavailable(e: DomainError) -> FabricError {
    let reason = match e {
        DomainError::Absent(r) | DomainError::Failed(r) => r,
    };
    FabricError::Unavailable {
        kind: TransportKind::Verbs,
        reason,
    }
}

/// Builds the verbs data path over the handshake's TCP connection, which
/// stays open as the liveness channel. Symmetric: both sides call it.
pub(crate) fn establish(
    mut sock: TcpStream,
    regions: RegionTable,
    peer_exposed: &[RemoteBuffer],
    cfg: &Config,
    timeout: Duration,
) -> Result<VerbsEndpoint, FabricError> {
    let deadline = Instant::now() + timeout;
    let dom = domain().map_err(unavailable)?;
    let exposed = regions
        .regions()
        .iter()
        .map(|r| dom.register(r))
        .collect::<Result<Vec<_>, _>>()?;
    let recv_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(RECV_DEPTH as usize * RECV_LEN)?)?;
    let stage_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(STAGING)?)?;
    let credit_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(64)?)?;
    let qp = sys::QueuePair::create(
        &dom.pd,
        sys::QpCaps {
            send_depth: SEND_DEPTH,
            recv_depth: RECV_DEPTH,
            max_inline: WANT_INLINE,
        },
    )?;
    let bufs: Vec<(u64, u64)> = (0..RECV_DEPTH as u64)
        .map(|i| (i, i * RECV_LEN as u64))
        .collect();
    qp.post_recvs(&recv_mr, &bufs, RECV_LEN)?;
    let psn = u32::from_le_bytes(crate::secret::random_bytes::<4>()?) & 0x00ff_ffff;
    let port = dom.port;
    let ours = SetupMsg {
        qpn: qp.qpn(),
        psn,
        lid: port.lid,
        gid: port.gid,
        mtu: port.active_mtu,
        recv_depth: RECV_DEPTH,
        recv_len: RECV_LEN as u32,
        credit_addr: credit_mr.region().addr(),
        credit_rkey: credit_mr.rkey(),
        regions: regions
            .regions()
            .iter()
            .zip(&exposed)
            .map(|(r, mr)| ExposedRegion {
                buffer: r.remote(),
                device_rkey: mr.rkey(),
            })
            .collect(),
    };
    let io = |e: std::io::Error| FabricError::from_io("verbs set-up", e);
    let left = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|t| !t.is_zero())
            .ok_or(FabricError::Timeout {
                op: "verbs set-up",
                after: timeout,
            })
    };
    sock.set_nonblocking(false).map_err(io)?;
    sock.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
    sock.write_all(&ours.encode()).map_err(io)?;
    sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
    let mut prefix = [0u8; 4];
    sock.read_exact(&mut prefix).map_err(io)?;
    let len = SetupMsg::decode_len(prefix).map_err(FabricError::Malformed)?;
    let mut body = vec![0u8; len];
    sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
    sock.read_exact(&mut body).map_err(io)?;
    let peer = SetupMsg::decode(&body, peer_exposed)
        .map_err(|e| FabricError::Handshake(format!("bad verbs set-up message: {e}")))?;
    qp.connect(
        &port,
        psn,
        &sys::RemoteQp {
            qpn: peer.qpn,
            psn: peer.psn,
            lid: peer.lid,
            gid: peer.gid,
            mtu: peer.mtu,
        },
    )?;
    // Neither side sends before the other's QP is ready to receive.
    sock.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
    sock.write_all(&[1]).map_err(io)?;
    let mut ready = [0u8; 1];
    sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
    sock.read_exact(&mut ready).map_err(io)?;
    if ready != [1] {
        return Err(FabricError::Handshake("bad verbs ready byte".into()));
    }
    tracing::debug!(
        device = %dom.device,
        qpn = qp.qpn(),
        peer_qpn = peer.qpn,
        max_inline = qp.max_inline(),
        "verbs endpoint connected"
    );
    VerbsEndpoint::new(endpoint::Parts {
        qp,
        recv_mr,
        stage_mr,
        credit_mr,
        exposed,
        regions,
        peer,
        sock,
        cfg,
    })
}
