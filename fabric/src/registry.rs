//! The one list of built providers, probed in order (as libfabric's `fi_ini`).

use crate::caps::{Caps, ProviderInfo, TransportKind};
use crate::config::Config;
use crate::error::FabricError;

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
