//! The one list of built providers: probed in order (as libfabric's
//! `fi_ini`), and set up once the common handshake chose one. A new
//! provider adds its folder, its variant of `endpoint::Inner` and one arm
//! in each function here.

use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use crate::caps::{Caps, ProviderInfo, TransportKind};
use crate::config::Config;
use crate::deadline::remaining;
use crate::endpoint::Inner;
use crate::error::FabricError;
use crate::mr::{RegionTable, RemoteBuffer};
use crate::wire::ShmOffer;
use crate::{shm, tcp};

/// Probes every built provider. `Ok(None)` for a provider means built but
/// unusable on this host; not an error.
pub fn probe_all(cfg: &Config) -> Vec<(TransportKind, Result<Option<ProviderInfo>, FabricError>)> {
    TransportKind::ALL
        .into_iter()
        .map(|k| (k, probe(k, cfg)))
        .collect()
}

/// Probes one provider; [`FabricError::NotBuilt`] if this build lacks it.
pub fn probe(kind: TransportKind, cfg: &Config) -> Result<Option<ProviderInfo>, FabricError> {
    match kind {
        TransportKind::Tcp => Ok(Some(ProviderInfo {
            kind,
            caps: Caps::SEND | Caps::WRITE_IMM | Caps::READ | Caps::WAIT_FD | Caps::INTER_NODE,
            max_inline: 0,
            device: None,
        })),
        TransportKind::Shm => Ok(crate::shm::probe(cfg)),
        #[cfg(feature = "verbs")]
        TransportKind::Verbs => crate::verbs::probe(cfg),
        #[cfg(not(feature = "verbs"))]
        TransportKind::Verbs => Err(FabricError::NotBuilt {
            kind,
            feature: kind.feature().unwrap_or("none"),
        }),
        // No libfabric provider here: `Ok(None)`; a named one libfabric
        // lacks (RFX_OFI_PROVIDER): an error saying so.
        #[cfg(feature = "ofi")]
        TransportKind::Ofi => crate::ofi::probe(cfg),
        #[cfg(not(feature = "ofi"))]
        TransportKind::Ofi => Err(FabricError::NotBuilt {
            kind,
            feature: kind.feature().unwrap_or("none"),
        }),
    }
}

/// The shm provider's own leg of the set-up, by side (see
/// [`shm::rendezvous`]).
pub(crate) enum ShmLeg<'a> {
    /// Not offered (the transport is not shm, or the server sent none).
    None,
    /// The client's: the server's offer.
    Client(&'a ShmOffer),
    /// The server's: the socket it offered, and the offer.
    Server(UnixListener, ShmOffer),
}

/// What the common handshake hands the chosen provider's set-up.
pub(crate) struct SetUp<'a> {
    /// The handshake's connection (kept by providers that use it further).
    pub(crate) sock: TcpStream,
    /// What this side exposes.
    pub(crate) regions: RegionTable,
    /// What the peer exposed.
    pub(crate) peer: &'a [RemoteBuffer],
    pub(crate) cfg: &'a Config,
    /// Bound of the whole set-up.
    pub(crate) deadline: Instant,
    pub(crate) shm: ShmLeg<'a>,
}

/// Sets up the endpoint of provider `kind`; [`FabricError::NotBuilt`] if
/// this build lacks it.
pub(crate) fn establish(kind: TransportKind, s: SetUp<'_>) -> Result<Inner, FabricError> {
    let SetUp {
        sock,
        regions,
        peer,
        cfg,
        deadline,
        shm: leg,
    } = s;
    match kind {
        TransportKind::Tcp => Ok(Inner::Tcp(tcp::TcpEndpoint::new(
            sock,
            regions,
            cfg.max_message,
            cfg.op_timeout,
        )?)),
        TransportKind::Shm => {
            let us = match leg {
                ShmLeg::Client(offer) => shm::rendezvous::connect(offer, deadline)?,
                ShmLeg::Server(listener, offer) => {
                    shm::rendezvous::accept(&listener, &offer.nonce, &sock, deadline)?
                }
                ShmLeg::None => {
                    return Err(FabricError::Handshake(
                        "shm chosen without a rendezvous".into(),
                    ))
                }
            };
            let ep = shm::establish(us, regions, peer, cfg, remaining(deadline)?)?;
            // The TCP connection has done its part.
            drop(sock);
            Ok(Inner::Shm(ep))
        }
        #[cfg(feature = "verbs")]
        TransportKind::Verbs => Ok(Inner::Verbs(Box::new(crate::verbs::establish(
            sock,
            regions,
            peer,
            cfg,
            remaining(deadline)?,
        )?))),
        #[cfg(feature = "ofi")]
        TransportKind::Ofi => Ok(Inner::Ofi(Box::new(crate::ofi::establish(
            sock,
            regions,
            peer,
            cfg,
            remaining(deadline)?,
        )?))),
        // Unreachable when every optional provider is built.
        #[allow(unreachable_patterns)]
        other => Err(FabricError::NotBuilt {
            kind: other,
            feature: other.feature().unwrap_or("none"),
        }),
    }
}
