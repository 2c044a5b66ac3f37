//! Provider `verbs`: RDMA over libibverbs (feature `verbs`), tested on
//! soft-RoCE (`rdma_rxe`).
//!
//! Set-up: after the TCP handshake picks verbs, each side creates an RC
//! queue pair (a send CQ, a receive CQ on a completion channel), posts its
//! receives, registers its inbound ring, control block and staging ring,
//! and the regions it exposes (once per process and PD: a registration
//! cache shared by all endpoints), and sends a [`SetupMsg`] on the same TCP
//! connection: QPN, PSN, GID, LID, MTU, receive depth, its ring (address,
//! rkey, capacity, stamp key) and control block, and for each exposed
//! region the device rkey that goes with rfx's rkey. Both sides then move
//! their QP through INIT/RTR/RTS and exchange one "ready" byte. The TCP connection stays open
//! as the liveness channel: an RC QP does not notice a dead peer while it
//! only waits for receives, the kernel closes the socket when the peer
//! process dies.
//!
//! Data path (see [`proto`] for the formats): one-sided, one work request
//! per message, every message found through the receive CQ.
//! - Direct writes: a `write_imm` to the same place as the previous write
//!   record (what a ping-pong or an invocation slot writes again and again)
//!   is one RDMA WRITE_WITH_IMM of the bare bytes straight into the target,
//!   with the caller's immediate, like `ib_write_lat`: inline up to 256
//!   bytes, else from the staging ring or registered memory of this
//!   process. The receiver learns the length from the completion and the
//!   place from the last write record; no copy, no checksum. A 4 KiB write
//!   is 4096 bytes on the wire, four packets at rxe's 1024-byte MTU.
//! - Records: each side owns an inbound ring in registered memory (256 KiB)
//!   that only the peer writes. Other writes and `send`s each write one
//!   record into the peer's ring by a single RDMA WRITE_WITH_IMM (inline
//!   when it fits, else from the staging ring): a 40-byte header, the
//!   payload (writes up to 8 KiB, send fragments up to a quarter of the
//!   ring), a checksum. The receiver reads a record once the CQ announced
//!   it, checks the checksum, copies a write's bytes into the target region
//!   and frees the record. Larger writes go by RDMA WRITE straight into the
//!   target region (from the staging ring, or with no copy when the source
//!   is registered memory of this process), then a header-only record: RC
//!   places a queue pair's writes in order.
//! - Order: records carry the count of direct writes posted before them,
//!   and the CQ lists both kinds in posting order, so completions come out
//!   in the peer's order. Bytes the device places (direct writes, large
//!   writes) never overtake an earlier record's copy to the same bytes:
//!   such a write waits until the peer acknowledged consuming it (a small
//!   one goes as a record instead).
//! - Flow control: every record carries the sender's own consumer state
//!   (ring head, receives re-posted); with nothing to send, a consumer
//!   RDMA-writes it into the peer's control block once a quarter of the
//!   ring or half the receives are due, or, with records consumed but not
//!   acknowledged, when it goes idle and before a direct write (which
//!   carries no ack: without it, a ping-pong's replies would keep the
//!   other side on records). A record is posted only when the
//!   peer's ring has room and the peer has a receive posted for it.
//! - Why WRITE_WITH_IMM and not a plain WRITE: its receive completion is
//!   what wakes a warm waiter (armed CQ, completion channel). A "wake me"
//!   flag the sleeper writes into the peer cannot close the race with a
//!   plain WRITE already in flight; the immediate costs nothing measurable
//!   here, and receives are re-posted in batches of 16 without buffers.
//! - Selective signalling: every 16th request is signalled, and any that
//!   leaves the staging ring more than half full (its completion frees the
//!   space of all requests before it).
//! - Hot mode polls the receive CQ (an idle round is one `ibv_poll_cq`);
//!   warm mode arms the receive CQ and sleeps in
//!   epoll on the completion channel and the TCP socket together (the event
//!   fd).
//! - One-sided reads: an RDMA READ (always signalled) of the peer's exposed
//!   region, with the device rkey the set-up message paired with rfx's
//!   rkey (regions are registered for remote read and write), into a
//!   registered bounce buffer that grows lazily (64 KiB to 4 MiB, by powers
//!   of two; larger reads go in 4 MiB pieces), then copied out; or straight
//!   into the caller's buffer when it is registered memory of this process.
//!   While the READ is outstanding the endpoint keeps consuming its inbound
//!   ring (completions queue for `poll`, in order) and returning acks; the
//!   peer's device serves the READ without its CPU, so crossed reads never
//!   wait on each other. A READ the peer's device refuses completes in
//!   error and breaks the queue pair (RC has no way back): `PeerGone`, as
//!   for a dead peer; a READ not done within the op timeout is `Timeout`
//!   and ends the endpoint too (the device may still write the buffer).
//!   The `Endpoint` layer refuses ranges outside the exposed buffers
//!   before anything is posted, so only a lying or broken peer gets there.
//! - Lent memory ([`crate::Endpoint::lend`]): a caller's buffer registered
//!   for remote read only while its `Loan` lives; the peer reads it by RDMA
//!   READ with the device rkey it was sent (`read_lent`, the bounce path of
//!   reads). A READ the device refuses (an ended loan, a range outside it)
//!   breaks the queue pair: `PeerGone`.
//! - A failed work completion (peer died, QP in error) makes the endpoint
//!   dead: every later call returns [`FabricError::PeerGone`].
//!
//! Environment (read once): `RFX_VERBS_DEVICE` (device name, default: the
//! first with an active port 1), `RFX_VERBS_GID_INDEX` (default: the first
//! IPv4-mapped GID, i.e. RoCEv2, else the first non-zero one).

pub mod baseline;
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
use crate::error::{error_chain, FabricError};
use crate::mr::{MemoryRegion, RegionTable, RemoteBuffer};

/// Receives posted per endpoint, without buffers (the peer's credits: one
/// per record in flight).
const RECV_DEPTH: u32 = 256;
/// Bytes of each endpoint's inbound ring (a power of two).
const RING: usize = 256 << 10;
/// Send queue depth.
const SEND_DEPTH: u32 = 256;
/// Bytes of the staging ring of each endpoint.
const STAGING: usize = 256 << 10;
/// Inline data asked of the device (rxe grants 256 or 512): records up to
/// this size (payloads up to 208 bytes) go in the work request itself.
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
                    sys::NoDevice::Failed(e) => DomainError::Failed(error_chain(&e)),
                },
            )?;
            let device = ctx.name().to_string();
            let port = ctx.port();
            let pd =
                sys::Pd::alloc(Arc::new(ctx)).map_err(|e| DomainError::Failed(error_chain(&e)))?;
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

    /// The live registration holding `data`, and its offset there: a write
    /// from a slice of a registered `MemoryRegion` needs no bounce copy.
    fn registered(&self, data: &[u8]) -> Option<(Arc<sys::Mr>, usize)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.iter().find_map(|(_, _, w)| {
            let mr = w.upgrade()?;
            let off = mr.covers(data.as_ptr(), data.len())?;
            Some((mr, off))
        })
    }
}

/// Usable if a device with an active port opens; no device (or no RDMA in
/// the kernel) is `Ok(None)`, never an error.
pub(crate) fn probe(cfg: &Config) -> Result<Option<ProviderInfo>, FabricError> {
    let _ = cfg;
    match domain() {
        Ok(d) => Ok(Some(ProviderInfo {
            kind: TransportKind::Verbs,
            caps: Caps::SEND
                | Caps::WRITE_IMM
                | Caps::READ
                | Caps::ZERO_COPY
                | Caps::WAIT_FD
                | Caps::LEND
                | Caps::INTER_NODE,
            max_inline: proto::WRITE_IN_RECORD_MAX,
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
    let ring_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(RING)?)?;
    let ctl_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(64)?)?;
    let stage_mr = sys::Mr::register(&dom.pd, MemoryRegion::new(STAGING)?)?;
    let qp = sys::QueuePair::create(
        &dom.pd,
        sys::QpCaps {
            send_depth: SEND_DEPTH,
            recv_depth: RECV_DEPTH,
            max_inline: WANT_INLINE,
        },
    )?;
    qp.post_empty_recvs(RECV_DEPTH as usize)?;
    let ring_key = u64::from_le_bytes(crate::secret::random_bytes::<8>()?) | 2;
    let psn = u32::from_le_bytes(crate::secret::random_bytes::<4>()?) & 0x00ff_ffff;
    let port = dom.port;
    let ours = SetupMsg {
        qpn: qp.qpn(),
        psn,
        lid: port.lid,
        gid: port.gid,
        mtu: port.active_mtu,
        recv_depth: RECV_DEPTH,
        ring_addr: ring_mr.region().addr(),
        ring_rkey: ring_mr.rkey(),
        ring_cap: RING as u64,
        ring_key,
        ctl_addr: ctl_mr.region().addr(),
        ctl_rkey: ctl_mr.rkey(),
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
        ring_mr,
        ring_key,
        ctl_mr,
        stage_mr,
        exposed,
        domain: dom,
        regions,
        recv_depth: RECV_DEPTH,
        peer,
        sock,
        cfg,
    })
}
/// Cases that need an RDMA device (the conformance suite covers the rest);
/// without one they return at once, saying so.
#[cfg(test)]
mod device_tests {
    use std::time::Duration;

    use crate::provider::Provider;

    use std::net::{TcpListener, TcpStream};

    use super::VerbsEndpoint;
    use crate::mr::{MemoryRegion, RegionTable};
    use crate::{
        Completion, Config, ConnectOptions, Fabric, FabricError, PollMode, TransportChoice,
        TransportKind,
    };

    fn no_device() -> bool {
        match super::domain() {
            Ok(_) => false,
            Err(e) => {
                eprintln!("skipped, no RDMA device: {e:?}");
                true
            }
        }
    }

    /// Two provider endpoints over a loopback TCP connection, without the
    /// `Endpoint` layer (so a test can reach below its checks): `a`
    /// exposes `a_regions`, `b` nothing.
    fn raw_pair(a_regions: Vec<MemoryRegion>, cfg: &Config) -> (VerbsEndpoint, VerbsEndpoint) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let a_remote: Vec<_> = a_regions.iter().map(MemoryRegion::remote).collect();
        let bcfg = cfg.clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            super::establish(
                s,
                RegionTable::new(Vec::new()),
                &a_remote,
                &bcfg,
                Duration::from_secs(20),
            )
        });
        let s = TcpStream::connect(addr).unwrap();
        let a = super::establish(
            s,
            RegionTable::new(a_regions),
            &[],
            cfg,
            Duration::from_secs(20),
        )
        .unwrap();
        (a, t.join().unwrap().unwrap())
    }

    /// A fabric with verbs forced.
    fn verbs_fabric() -> Fabric {
        Fabric::open(Config {
            transport: TransportChoice::Forced(TransportKind::Verbs),
            ..Config::default()
        })
        .unwrap()
    }

    fn short_timeouts() -> Config {
        Config {
            op_timeout: Duration::from_secs(10),
            ..Config::default()
        }
    }

    /// Waits (bounded) for the next completion of a raw endpoint.
    fn next(ep: &mut VerbsEndpoint) -> Completion {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = ep.poll().unwrap() {
                return c;
            }
            assert!(std::time::Instant::now() < deadline, "no completion");
            std::hint::spin_loop();
        }
    }

    /// One expected event of a burst: a write `(imm, region rkey, offset,
    /// bytes)` or a message.
    type Expected = Result<(u32, u32, u64, Vec<u8>), Vec<u8>>;

    /// Writes to the place of the previous write record go as bare
    /// WRITE_WITH_IMMs (direct writes, learnt from the CQ), yet completions
    /// keep the posting order among records (sends, writes elsewhere,
    /// writes too large for one request) and carry the right place, length
    /// and bytes; a write the device places never overtakes an earlier
    /// write record's copy. Bursts of random mixes while the receiver
    /// polls, each checked in order and by content before the next.
    #[test]
    fn direct_writes_keep_the_posting_order() {
        if no_device() {
            return;
        }
        const BIG: usize = 300 << 10;
        let ra = MemoryRegion::new(1 << 20).unwrap();
        let rb = MemoryRegion::new(8192).unwrap();
        let (ba, bb) = (ra.remote(), rb.remote());
        let (mut a, mut b) = raw_pair(vec![ra.clone(), rb.clone()], &short_timeouts());
        let (to_rx, bursts) = std::sync::mpsc::channel::<Vec<Expected>>();
        let (checked, from_rx) = std::sync::mpsc::channel::<()>();
        let receiver = std::thread::spawn(move || {
            // Polls all along (a large write may wait for us to consume
            // the records before it); a burst's list comes after its writes
            // were posted.
            let mut got = std::collections::VecDeque::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            loop {
                let expect = match bursts.try_recv() {
                    Ok(e) => e,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        got.extend(a.poll().unwrap());
                        assert!(std::time::Instant::now() < deadline, "test too long");
                        continue;
                    }
                    Err(_) => break,
                };
                while got.len() < expect.len() {
                    got.push_back(next(&mut a));
                }
                let mut last = std::collections::HashMap::new();
                for (i, e) in expect.iter().enumerate() {
                    match (got.pop_front().unwrap(), e) {
                        (Completion::Write(w), Ok((imm, rkey, off, data))) => {
                            assert_eq!(
                                (w.imm, w.rkey, w.offset, w.len as usize),
                                (*imm, *rkey, *off, data.len()),
                                "op {i}"
                            );
                            last.insert((*rkey, *off), data);
                        }
                        (Completion::Recv(m), Err(data)) => {
                            assert!(m[..] == data[..], "op {i}: message differs")
                        }
                        (got, want) => panic!(
                            "op {i}: got {got:?}, want {:?}",
                            want.as_ref().map(|w| w.0).map_err(Vec::len)
                        ),
                    }
                }
                // Writes to one place overwrite each other (places do not
                // overlap): the last one's bytes are there.
                for ((rkey, off), data) in last {
                    let region = if rkey == ba.rkey { &ra } else { &rb };
                    assert!(
                        region.to_vec(off as usize, data.len()).unwrap() == *data,
                        "bytes at {off} of region {rkey} differ"
                    );
                }
                checked.send(()).unwrap();
            }
        });
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut imm = 0u32;
        for burst in 0..60 {
            let mut expect: Vec<Expected> = Vec::new();
            for _ in 0..1 + rand(12) {
                imm += 1;
                let len = [0usize, 8, 100, 4096, 20_000][rand(5) as usize];
                let data: Vec<u8> = (0..len).map(|i| (i as u32 ^ imm) as u8).collect();
                match rand(6) {
                    // Mostly the same place: the direct path.
                    0..=2 => {
                        b.write(ba.addr + 64, ba.rkey, imm, &data).unwrap();
                        expect.push(Ok((imm, ba.rkey, 64, data)));
                    }
                    3 => {
                        let off = 4096 * rand(2);
                        let data = &data[..data.len().min(4096)];
                        b.write(bb.addr + off, bb.rkey, imm, data).unwrap();
                        expect.push(Ok((imm, bb.rkey, off, data.to_vec())));
                    }
                    4 => {
                        b.send(&data).unwrap();
                        expect.push(Err(data));
                    }
                    _ => {
                        // Waits for the receiver to consume earlier records
                        // to this place: it is polling.
                        let big: Vec<u8> = (0..BIG).map(|i| (i as u32 ^ imm) as u8).collect();
                        b.write(ba.addr + 64, ba.rkey, imm, &big).unwrap();
                        expect.push(Ok((imm, ba.rkey, 64, big)));
                    }
                }
            }
            to_rx.send(expect).unwrap();
            // Our endpoint must be polled for the receiver's acks to count.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match from_rx.try_recv() {
                    Ok(()) => break,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        assert!(
                            b.poll().unwrap().is_none(),
                            "burst {burst}: nothing comes back"
                        );
                        assert!(
                            std::time::Instant::now() < deadline,
                            "burst {burst}: no check"
                        );
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("burst {burst}: receiver failed ({e})"),
                }
            }
        }
        drop(to_rx);
        receiver.join().unwrap();
        assert_ne!(b.directs_sent(), 0, "no write went direct");
    }

    /// An RDMA READ the peer's device refuses (wrong device rkey: a peer
    /// that lied in its set-up message) completes in error and breaks the
    /// queue pair: `PeerGone` saying why, then every call says so; no hang.
    #[test]
    fn read_refused_by_the_device_ends_the_endpoint() {
        if no_device() {
            return;
        }
        let region = MemoryRegion::new(4096).unwrap();
        region.write_at(16, b"fine").unwrap();
        let rb = region.remote();
        let (a, mut b) = raw_pair(vec![region], &short_timeouts());
        let mut out = [0u8; 4];
        b.read(rb.addr + 16, rb.rkey, &mut out).unwrap();
        assert_eq!(&out, b"fine");
        b.corrupt_peer_device_rkeys();
        match b.read(rb.addr + 16, rb.rkey, &mut out) {
            Err(FabricError::PeerGone(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected PeerGone, got {other:?}"),
        }
        assert!(matches!(
            b.read(rb.addr, rb.rkey, &mut out),
            Err(FabricError::PeerGone(_))
        ));
        assert!(matches!(b.send(b"x"), Err(FabricError::PeerGone(_))));
        drop(a);
    }

    /// Reads of 256 KiB or more into unregistered memory land there (no
    /// bounce buffer is ever made), in 256 KiB pieces, at any alignment;
    /// with `RFX_VERBS_LANDING_MIN=0` the same bytes come through the
    /// bounce buffer. A landing read the device refuses ends the endpoint.
    #[test]
    fn reads_land_in_unregistered_memory() {
        if no_device() {
            return;
        }
        const N: usize = (1 << 20) + 12_345;
        let region = MemoryRegion::new(N).unwrap();
        let data: Vec<u8> = (0..N).map(|i| (i * 7 + (i >> 9)) as u8).collect();
        region.write_at(0, &data).unwrap();
        let rb = region.remote();
        let (a, mut b) = raw_pair(vec![region.clone()], &short_timeouts());
        let mut out = vec![0u8; N + 3];
        b.read(rb.addr + 5, rb.rkey, &mut out[3..N - 2]).unwrap();
        assert!(out[3..N - 2] == data[5..N], "landed read differs");
        assert_eq!(b.bounce_len(), 0, "a landing read used the bounce buffer");
        // Below the threshold: the bounce buffer.
        let mut small = vec![0u8; 1000];
        b.read(rb.addr + 77, rb.rkey, &mut small).unwrap();
        assert!(small == data[77..1077]);
        assert!(b.bounce_len() > 0);
        let bounced = Config {
            verbs_landing_min: 0,
            ..short_timeouts()
        };
        let (a2, mut b2) = raw_pair(vec![region], &bounced);
        let mut again = vec![0u8; N];
        b2.read(rb.addr, rb.rkey, &mut again).unwrap();
        assert!(again == data, "bounced read differs");
        assert!(b2.bounce_len() > 0);
        b.corrupt_peer_device_rkeys();
        let mut refused = vec![0u8; 1 << 19];
        match b.read(rb.addr, rb.rkey, &mut refused) {
            Err(FabricError::PeerGone(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected PeerGone, got {other:?}"),
        }
        assert!(refused.iter().all(|&x| x == 0), "a refused read wrote");
        drop((a, a2, b2));
    }

    /// Reading a peer that closed (its queue pair is destroyed, so the
    /// READ is never answered) is `PeerGone`, well before the op timeout.
    #[test]
    fn read_of_a_departed_peer_is_peer_gone() {
        if no_device() {
            return;
        }
        let region = MemoryRegion::new(1 << 16).unwrap();
        let rb = region.remote();
        let (a, mut b) = raw_pair(vec![region], &short_timeouts());
        let mut out = vec![0u8; 1 << 16];
        b.read(rb.addr, rb.rkey, &mut out).unwrap();
        drop(a);
        match b.read(rb.addr, rb.rkey, &mut out) {
            Err(FabricError::PeerGone(_)) => {}
            other => panic!("expected PeerGone, got {other:?}"),
        }
    }

    /// Reads into registered memory of this process go straight there (no
    /// bounce); reads larger than the bounce buffer's bound go in pieces.
    #[test]
    fn large_and_zero_copy_reads() {
        if no_device() {
            return;
        }
        let f = verbs_fabric();
        const N: usize = (2 * super::proto::READ_BOUNCE_MAX) + 12_345;
        let data: Vec<u8> = (0..N).map(|i| (i * 13 + (i >> 11)) as u8).collect();
        let src = f.register(N + 64).unwrap();
        src.write_at(64, &data).unwrap();
        let dst = f.register(N).unwrap();
        let l = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let so = ConnectOptions::new().expose(&src);
        let t = std::thread::spawn(move || {
            let mut s = l.accept(&so)?;
            // Only keeps the connection up: the device serves the reads.
            match s.wait(PollMode::Warm, Duration::from_secs(60)) {
                Ok(c) => panic!("unexpected {c:?}"),
                Err(e) if e.is_peer_gone() => Ok(()),
                Err(e) => Err(e),
            }
        });
        // Exposing `dst` registers it: reads into it find that registration.
        let mut c = f
            .connect(addr, &ConnectOptions::new().expose(&dst))
            .unwrap();
        let rb = c.peer_buffers()[0];
        let mut out = vec![0u8; N];
        c.read(&rb, 64, &mut out).unwrap();
        assert!(out == data, "bounced read differs");
        for round in 0..2usize {
            let off = round * 8;
            let len = N - off;
            // SAFETY: `dst` maps N bytes that live as long as `dst`; the
            // peer may write them but never does, and this thread touches
            // them only through this exclusive view while it lives.
            let view = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr(), N) };
            c.read(&rb, 64 + off as u64, &mut view[..len]).unwrap();
            assert!(
                dst.to_vec(0, len).unwrap() == data[off..],
                "round {round}: zero-copy read differs"
            );
        }
        drop(c);
        t.join().unwrap().unwrap();
    }

    /// A large write from a slice of a registered region goes without a
    /// bounce copy (and the call returns only once the device has sent it).
    #[test]
    fn zero_copy_write_from_registered_memory() {
        if no_device() {
            return;
        }
        let f = verbs_fabric();
        const N: usize = 3 << 20;
        let src = f.register(N).unwrap();
        let dst = f.register(N + 64).unwrap();
        let l = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let so = ConnectOptions::new().expose(&dst);
        let t = std::thread::spawn(move || l.accept(&so));
        // Exposing `src` registers it: the write below finds that registration.
        let mut c = f
            .connect(addr, &ConnectOptions::new().expose(&src))
            .unwrap();
        let mut s = t.join().unwrap().unwrap();
        let data: Vec<u8> = (0..N).map(|i| (i * 7 + (i >> 12)) as u8).collect();
        src.write_at(0, &data).unwrap();
        let rb = c.peer_buffers()[0];
        for round in 0..3u32 {
            // SAFETY: nothing writes `src` while the slice lives (the peer
            // never targets it and this thread only reads).
            let slice = unsafe { src.as_slice(0, N) }.unwrap();
            c.write_imm(slice, &rb, 64, round).unwrap();
            match s.wait(PollMode::Hot, Duration::from_secs(30)).unwrap() {
                Completion::Write(w) => {
                    assert_eq!((w.imm, w.offset, w.len as usize), (round, 64, N))
                }
                other => panic!("{other:?}"),
            }
            assert!(
                dst.to_vec(64, N).unwrap() == data,
                "round {round}: data differs"
            );
        }
    }

    /// The raw baseline's ping-pong moves each write's bytes into the
    /// peer's buffer and reports their length, inline (8 B) and from
    /// registered memory (4 KiB), in both directions.
    #[test]
    fn raw_baseline_pingpong_moves_the_bytes() {
        if no_device() {
            return;
        }
        let (mut a, mut b) = super::baseline::pair(4096).unwrap();
        let echo = std::thread::spawn(move || {
            for len in [8usize, 4096].into_iter().cycle().take(200) {
                assert_eq!(b.recv().unwrap(), len);
                assert!(b.received(len).unwrap() == vec![0xa5; len], "{len} B to b");
                b.send(len).unwrap();
            }
            b
        });
        for len in [8usize, 4096].into_iter().cycle().take(200) {
            a.send(len).unwrap();
            assert_eq!(a.recv().unwrap(), len);
            assert!(a.received(len).unwrap() == vec![0x5a; len], "{len} B to a");
        }
        let mut b = echo.join().unwrap();
        assert!(matches!(a.send(4097), Err(FabricError::TooLarge { .. })));
        drop(a);
        // The peer is gone: b's write fails instead of spinning forever.
        assert!(b.send(8).is_err());
    }
}
