//! Provider `ofi` (feature `ofi`): libfabric RDM endpoints through the
//! in-repo `libfabric-sys` bindings. Tested on `tcp;ofi_rxm` and `shm`.
//!
//! - **Provider**: `RFX_OFI_PROVIDER` ([`Config::ofi_provider`]) names it
//!   (`tcp;ofi_rxm`, `shm`, `verbs;ofi_rxm`, `efa`, `cxi`, ...). Unset, the
//!   first of [`AUTO_PROVIDERS`] that `fi_getinfo` offers is used. A named
//!   provider libfabric does not have is an error; none at all makes the
//!   provider unusable (`probe` says `None`), not an error. Both sides must
//!   use the same provider (selection checks it), and `shm` only on one host.
//! - **Set-up**: after the handshake picks `ofi`, each side opens (or
//!   reuses) the domain of its provider on the control connection's local
//!   address, opens an endpoint, posts its receive slots, registers the
//!   regions it exposes (once per domain: a registration cache) and sends, on
//!   the control connection, its endpoint address, its credit window and
//!   the provider key and base of each region. Both insert the peer's
//!   address and exchange a hello record over libfabric, so the data path
//!   is proven (and rxm's lazy connection made) before `connect` returns.
//!   The control TCP connection stays open: its end tells that the peer
//!   process is gone, as shm's Unix socket does.
//! - **write_imm**: up to 4 KiB the bytes travel inside one record (copied
//!   into the region at the target: one operation, cheaper than two). Larger
//!   ones: a 24-byte descriptor record (rkey, address, length, immediate),
//!   then `fi_writedata` straight from the caller's buffer into the peer's
//!   registered region (zero copy), with remote CQ data = immediate | write
//!   number << 32. The target reports the write when it has both the
//!   descriptor and a completion flagged `FI_REMOTE_CQ_DATA` whose data
//!   matches (the length is not trusted: tcp reports 0), so the offset and
//!   length come from the descriptor and order holds even on providers
//!   that do not order RMA after messages (`shm` orders only sends).
//! - **read**: `fi_read` of the peer's exposed region (registered with
//!   `FI_REMOTE_READ` as well as `FI_REMOTE_WRITE`; virtual addresses or
//!   offsets as the provider's `FI_MR_VIRT_ADDR` says, like writes) into a
//!   staging buffer of the endpoint, grown on demand (64 KiB up to 4 MiB;
//!   longer reads go in 4 MiB chunks, one at a time), then copied into the
//!   caller's slice. While a read is in flight the endpoint drives its CQ:
//!   arriving completions queue for `poll`, and the provider serves the
//!   peer's reads of our memory (two peers reading each other progress).
//!   A failed read is `RemoteAccess` when the provider refused the access
//!   (bad key, range or permission) and the connection lives on,
//!   `PeerGone` otherwise. libfabric 1.17's `tcp` drops the connection on
//!   a bad key, and `shm` does not check keys at all: rfx's own check of
//!   the peer's exposed buffers is what refuses bad accesses. A read that
//!   times out leaves the staging buffer to the provider until its
//!   completion comes; the next read waits for that first.
//! - **send**: records of at most one receive slot (16 KiB), fragmented
//!   beyond; injected when small, else copied into a registered send
//!   buffer. Flow control by credits: a sender never has more records in
//!   flight than the peer has slots posted (`proto.rs`).
//! - **Completion**: hot = spin on `fi_cq_read`; warm = the CQ's wait fd
//!   (`FI_GETWAIT`) after `fi_trywait`, plus the control socket; a provider
//!   without a wait fd (and `shm`, which does not signal it across
//!   processes) gets a poll loop instead: 20 µs of polling, then 100 µs
//!   sleeps between polls (under 20% of a CPU while idle), and no
//!   `WAIT_FD` cap. Progress is driven by
//!   every poll and post, on both sides (tcp;ofi_rxm needs the target to
//!   read its CQ).
//! - **Posting** returns once the caller's buffer may be reused: injects and
//!   send-buffer copies at once, `fi_writedata` after its local completion.
//!   A post that waits (for that completion, a credit or the provider)
//!   also drives the other endpoints of its domain every 16 spins, with a
//!   zero-entry `fi_cq_read` that leaves their completions in place: `shm`
//!   completes a write larger than its inject size only when the target's
//!   endpoint processes it, and the target may itself wait in a post to a
//!   third process. Without it, allgather and alltoall on 4 ranks over
//!   `shm` deadlocked until the op timeout.

mod domain;
mod endpoint;
mod proto;
mod sys;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub(crate) use endpoint::OfiEndpoint;

use crate::caps::{Caps, ProviderInfo, TransportKind};
use crate::config::Config;
use crate::deadline::{read_exact_by, remaining};
use crate::error::FabricError;
use crate::mr::{RegionTable, RemoteBuffer};
use domain::Domain;
use endpoint::{PeerRegion, INLINE_MAX};
use proto::{reserved_slots, Credits};
use sys::Shape;

/// Providers tried, in order, when `RFX_OFI_PROVIDER` is unset: HPC
/// networks first, then TCP. `shm` is not among them: rfx's own `shm`
/// transport serves peers on one host.
pub const AUTO_PROVIDERS: [&str; 4] = ["cxi", "efa", "verbs;ofi_rxm", "tcp;ofi_rxm"];

/// Bytes of a receive slot and of a send buffer (one record at most).
const SLOT: usize = 16 << 10;
/// Records a peer may have in flight towards us (our data slots).
const WINDOW: u32 = 64;
/// Send buffers (records too large to inject).
const TX_BUFS: usize = 32;
/// Largest control-connection set-up message.
const MAX_SETUP: usize = 1 << 20;

fn unavailable(reason: String) -> FabricError {
    FabricError::Unavailable {
        kind: TransportKind::Ofi,
        reason,
    }
}

/// Probes libfabric for the configured provider (cached per process).
pub(crate) fn probe(cfg: &Config) -> Result<Option<ProviderInfo>, FabricError> {
    type Probed = Result<Option<String>, String>;
    static CACHE: OnceLock<Mutex<HashMap<Option<String>, Probed>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let probed = cache
        .entry(cfg.ofi_provider.clone())
        .or_insert_with(|| find_provider(cfg.ofi_provider.as_deref()))
        .clone();
    drop(cache);
    Ok(probed.map_err(unavailable)?.map(|name| ProviderInfo {
        kind: TransportKind::Ofi,
        caps: Caps::SEND
            | Caps::WRITE_IMM
            | Caps::READ
            | Caps::ZERO_COPY
            | if lends(&name) {
                Caps::LEND
            } else {
                Caps::empty()
            }
            | if has_wait_fd(&name) {
                Caps::WAIT_FD
            } else {
                Caps::empty()
            }
            // Every libfabric provider but `shm` leaves the host.
            | if name == "shm" {
                Caps::empty()
            } else {
                Caps::INTER_NODE
            },
        max_inline: INLINE_MAX,
        device: Some(name),
    }))
}

/// The provider to use: `Ok(None)` when auto finds none.
fn find_provider(named: Option<&str>) -> Result<Option<String>, String> {
    let (major, minor) = sys::runtime_version();
    match named {
        Some(name) => {
            let info = domain::getinfo(name, None).map_err(|code| {
                format!(
                    "libfabric {major}.{minor} has no provider `{name}` offering RDM endpoints \
                     with messages and RMA ({}); `fi_info -l` lists the installed ones",
                    sys::strerror(code.into())
                )
            })?;
            if let Some(why) = domain::unsuitable(&info) {
                return Err(format!("libfabric provider `{name}` cannot be used: {why}"));
            }
            Ok(Some(info.provider()))
        }
        None => {
            for name in AUTO_PROVIDERS {
                if let Ok(info) = domain::getinfo(name, None) {
                    match domain::unsuitable(&info) {
                        None => return Ok(Some(info.provider())),
                        Some(why) => tracing::debug!(name, "libfabric provider skipped: {why}"),
                    }
                }
            }
            Ok(None)
        }
    }
}

/// Whether warm mode sleeps on the CQ's wait fd. libfabric's `shm` (1.17)
/// does not signal a peer's wait fd when it delivers, so a sleeper would
/// miss arrivals: it gets the sleep-poll loop instead.
fn has_wait_fd(provider: &str) -> bool {
    provider != "shm"
}

/// Whether buffers are lent ([`Caps::LEND`]). libfabric's `shm` (1.17)
/// serves a peer's `fi_read` under the key of a registration already
/// closed (conformance `lent_memory_is_read`): a loan there could not be
/// ended, so it lends nothing.
pub(super) fn lends(provider: &str) -> bool {
    provider != "shm"
}

/// IP-based providers bind to the control connection's local address, so
/// that loopback peers stay on loopback and multi-homed hosts use the
/// interface the peer was reached on.
fn binds_ip(provider: &str) -> bool {
    ["tcp", "udp", "sockets", "verbs"]
        .iter()
        .any(|p| provider.split(';').next() == Some(*p))
}

#[derive(Debug, Serialize, Deserialize)]
struct RegionKey {
    rkey: u32,
    addr: u64,
    len: u64,
    key: u64,
    virt: bool,
}

/// What each side sends on the control connection after the handshake.
#[derive(Debug, Serialize, Deserialize)]
struct Setup {
    provider: String,
    addr: Vec<u8>,
    window: u32,
    slot_size: u32,
    regions: Vec<RegionKey>,
}

/// Builds the ofi data path. Symmetric: both sides call it after the
/// handshake chose ofi; `ctrl` is the handshake's TCP connection.
pub(crate) fn establish(
    mut ctrl: TcpStream,
    regions: RegionTable,
    peer_exposed: &[RemoteBuffer],
    cfg: &Config,
    timeout: Duration,
) -> Result<OfiEndpoint, FabricError> {
    let deadline = Instant::now() + timeout;
    let provider = probe(cfg)?
        .and_then(|p| p.device)
        .ok_or_else(|| unavailable("no libfabric provider available".into()))?;
    let local_ip = ctrl
        .local_addr()
        .map_err(|e| FabricError::os("local_addr", e))?
        .ip()
        .to_string();
    let node = binds_ip(&provider).then_some(local_ip.as_str());
    let domain = Domain::get(&provider, node)?;
    let info = &domain.obj.info;
    let shape = Shape {
        slot_size: SLOT,
        rx_slots: (WINDOW + reserved_slots(WINDOW)) as usize,
        tx_bufs: TX_BUFS,
    };
    // shm names its region (a file of /dev/shm) after the endpoint, by
    // default after the pid: a name of our own (pid and random bytes) never
    // meets a region that a killed process left under a pid that came round
    // again, and it is unlinked once the peer mapped it (after hello), so a
    // process killed later leaves nothing behind.
    let shm_name = (provider == "shm").then(shm_region_name).transpose()?;
    let mut conn = sys::Conn::open(
        &domain.obj,
        shape,
        has_wait_fd(&provider),
        shm_name.as_deref(),
    )?;
    for slot in 0..shape.rx_slots {
        if conn.post_recv(slot)? != sys::Posted::Done {
            return Err(FabricError::os(
                "fi_recv",
                std::io::Error::other("provider busy while posting receive slots"),
            ));
        }
    }
    let mut mrs = Vec::new();
    let mut keys = Vec::new();
    for r in regions.regions() {
        let mr = domain.register(r)?;
        keys.push(RegionKey {
            rkey: r.rkey(),
            addr: r.addr(),
            len: r.len() as u64,
            key: mr.key(),
            virt: info.mr_virt_addr(),
        });
        mrs.push(mr);
    }
    let ours = Setup {
        provider: provider.clone(),
        addr: conn.name()?,
        window: WINDOW,
        slot_size: SLOT as u32,
        regions: keys,
    };
    let body = postcard::to_allocvec(&ours).expect("postcard encodes into a Vec");
    let mut msg = (body.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&body);
    ctrl.set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| FabricError::os("set_write_timeout", e))?;
    ctrl.write_all(&msg)
        .map_err(|e| FabricError::from_io("ofi set-up send", e))?;
    let mut len = [0u8; 4];
    read_exact_by(&mut ctrl, &mut len, deadline)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_SETUP {
        return Err(FabricError::Handshake(format!(
            "ofi set-up message of {len} bytes"
        )));
    }
    let mut body = vec![0u8; len];
    read_exact_by(&mut ctrl, &mut body, deadline)?;
    let peer: Setup = postcard::from_bytes(&body)
        .map_err(|e| FabricError::Handshake(format!("bad ofi set-up message: {e}")))?;
    if peer.provider != provider {
        return Err(FabricError::Handshake(format!(
            "the peer uses libfabric provider `{}`, this side `{provider}`",
            peer.provider
        )));
    }
    // Equal windows keep the reserved-slot bound of `proto` (credit
    // records in flight) true on both sides.
    if peer.window != WINDOW || peer.slot_size as usize != SLOT {
        return Err(FabricError::Handshake(format!(
            "peer's ofi window {} / slot {} unusable",
            peer.window, peer.slot_size
        )));
    }
    let exposed: Vec<RemoteBuffer> = peer
        .regions
        .iter()
        .map(|r| RemoteBuffer {
            addr: r.addr,
            len: r.len,
            rkey: r.rkey,
        })
        .collect();
    if exposed != peer_exposed {
        return Err(FabricError::Handshake(
            "peer's ofi regions differ from the buffers in its hello".into(),
        ));
    }
    conn.set_peer(&peer.addr)?;
    ctrl.set_nonblocking(true)
        .map_err(|e| FabricError::os("set_nonblocking", e))?;
    let peer_regions = peer
        .regions
        .iter()
        .map(|r| PeerRegion {
            rkey: r.rkey,
            addr: r.addr,
            len: r.len,
            key: r.key,
            virt: r.virt,
        })
        .collect();
    let max_write = info.max_msg_size().min(u32::MAX as usize);
    let mut ep = OfiEndpoint::new(
        conn,
        ctrl,
        regions,
        peer_regions,
        Credits::new(WINDOW, peer.window),
        mrs,
        domain.clone(),
        cfg.max_message,
        cfg.op_timeout,
        max_write,
    );
    ep.hello(deadline)?;
    if let Some(name) = &shm_name {
        // The peer sent its hello, so it mapped our region: the name can go.
        if let Err(e) = nix::sys::mman::shm_unlink(name.as_c_str()) {
            tracing::debug!(?name, "shm_unlink of the ofi shm region: {e}");
        }
    }
    Ok(ep)
}

/// A name for this process's next shm endpoint: unique across processes
/// and pid reuse.
fn shm_region_name() -> Result<std::ffi::CString, FabricError> {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r)
        .map_err(|e| FabricError::os("getrandom", std::io::Error::other(e)))?;
    let name = format!("rfx_{}_{:016x}", std::process::id(), u64::from_le_bytes(r));
    std::ffi::CString::new(name).map_err(|e| FabricError::os("shm name", std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn cfg(provider: Option<&str>) -> Config {
        Config {
            ofi_provider: provider.map(str::to_string),
            ..Config::default()
        }
    }

    #[test]
    fn named_providers_probe_or_fail_clearly() {
        let tcp = probe(&cfg(Some("tcp;ofi_rxm"))).unwrap().unwrap();
        assert_eq!(tcp.device.as_deref(), Some("tcp;ofi_rxm"));
        assert!(tcp.caps.contains(Caps::WRITE_IMM | Caps::SEND));
        let shm = probe(&cfg(Some("shm"))).unwrap().unwrap();
        assert_eq!(shm.device.as_deref(), Some("shm"));
        let err = probe(&cfg(Some("carrier-pigeon"))).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                FabricError::Unavailable {
                    kind: TransportKind::Ofi,
                    ..
                }
            ) && msg.contains("carrier-pigeon")
                && msg.contains("fi_info -l"),
            "{msg}"
        );
        // Auto finds tcp;ofi_rxm at least on any Linux with libfabric.
        let auto = probe(&cfg(None)).unwrap().unwrap();
        assert!(auto.device.is_some());
    }

    #[test]
    fn forcing_an_unknown_provider_fails_at_open() {
        let r = crate::Fabric::open(Config {
            transport: crate::TransportChoice::Forced(TransportKind::Ofi),
            ..cfg(Some("no-such-provider"))
        });
        let err = r.unwrap_err();
        assert!(err.to_string().contains("no-such-provider"), "{err}");
    }

    /// A peer whose libfabric address leads nowhere: a clear error within
    /// the set-up timeout, not a hang.
    #[test]
    fn unreachable_peer_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            sock.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            sock.read_exact(&mut body).unwrap();
            // sockaddr_in 127.0.0.1:1, where nothing listens.
            let mut sa = vec![2u8, 0, 0, 1, 127, 0, 0, 1];
            sa.resize(16, 0);
            let setup = Setup {
                provider: "tcp;ofi_rxm".into(),
                addr: sa,
                window: WINDOW,
                slot_size: SLOT as u32,
                regions: vec![],
            };
            let body = postcard::to_allocvec(&setup).unwrap();
            sock.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
            sock.write_all(&body).unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let ctrl = TcpStream::connect(addr).unwrap();
        let t0 = Instant::now();
        let r = establish(
            ctrl,
            RegionTable::default(),
            &[],
            &cfg(Some("tcp;ofi_rxm")),
            Duration::from_secs(2),
        );
        let err = r.unwrap_err();
        assert!(
            matches!(err, FabricError::Handshake(_) | FabricError::PeerGone(_)),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        fake.join().unwrap();
    }

    #[test]
    fn ip_providers() {
        assert!(binds_ip("tcp;ofi_rxm"));
        assert!(binds_ip("verbs;ofi_rxm"));
        assert!(!binds_ip("shm"));
        assert!(!binds_ip("efa"));
    }
}
