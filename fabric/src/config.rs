//! Configuration of a [`crate::Fabric`], read once at the edge.

use std::time::Duration;

use crate::caps::TransportChoice;
use crate::error::FabricError;

/// Settings of a fabric and of the endpoints it makes.
///
/// ```
/// use rfx_fabric::{Config, TransportChoice, TransportKind};
/// let cfg = Config { transport: TransportChoice::Forced(TransportKind::Tcp), ..Config::default() };
/// assert_eq!(cfg.transport.to_string(), "tcp");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `auto` or a forced transport (`RFX_TRANSPORT`).
    pub transport: TransportChoice,
    /// Bound on connect plus handshake (`RFX_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Bound on a post that waits for space in a ring or socket
    /// (`RFX_OP_TIMEOUT_MS`).
    pub op_timeout: Duration,
    /// Bytes of each shm ring, a power of two (`RFX_SHM_RING_BYTES`).
    pub shm_ring_bytes: usize,
    /// Largest two-sided message (`RFX_MAX_MESSAGE`).
    pub max_message: usize,
    /// The libfabric provider of the `ofi` transport (`RFX_OFI_PROVIDER`,
    /// e.g. `tcp;ofi_rxm`, `shm`, `verbs;ofi_rxm`); `None` tries the
    /// providers of `ofi::AUTO_PROVIDERS` in order (feature `ofi`).
    pub ofi_provider: Option<String>,
    /// Reads over verbs of at least this many bytes into memory that is
    /// not a registered [`crate::MemoryRegion`] register the destination
    /// for the call and land there, with no bounce copy; 0 always bounces
    /// (`RFX_VERBS_LANDING_MIN`).
    pub verbs_landing_min: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport: TransportChoice::Auto,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(30),
            shm_ring_bytes: 1 << 20,
            max_message: 64 << 20,
            ofi_provider: None,
            verbs_landing_min: 256 << 10,
        }
    }
}

impl Config {
    /// Defaults overridden by the `RFX_*` variables listed in the crate docs.
    /// An unparsable value is an error, never silently ignored.
    pub fn from_env() -> Result<Config, FabricError> {
        Config::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`Config::from_env`], with variables from `get` (for tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, FabricError> {
        let mut cfg = Config::default();
        if let Some(v) = get("RFX_TRANSPORT") {
            cfg.transport =
                v.parse()
                    .map_err(|e: crate::caps::UnknownTransport| FabricError::Config {
                        var: "RFX_TRANSPORT",
                        value: v.clone(),
                        reason: e.to_string(),
                    })?;
        }
        if let Some(v) = get("RFX_CONNECT_TIMEOUT_MS") {
            cfg.connect_timeout = Duration::from_millis(parse_num("RFX_CONNECT_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("RFX_OP_TIMEOUT_MS") {
            cfg.op_timeout = Duration::from_millis(parse_num("RFX_OP_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("RFX_SHM_RING_BYTES") {
            cfg.shm_ring_bytes = parse_num("RFX_SHM_RING_BYTES", &v)? as usize;
        }
        if let Some(v) = get("RFX_MAX_MESSAGE") {
            cfg.max_message = parse_num("RFX_MAX_MESSAGE", &v)? as usize;
        }
        if let Some(v) = get("RFX_OFI_PROVIDER") {
            let v = v.trim();
            cfg.ofi_provider =
                (!v.is_empty() && !v.eq_ignore_ascii_case("auto")).then(|| v.to_string());
        }
        if let Some(v) = get("RFX_VERBS_LANDING_MIN") {
            cfg.verbs_landing_min = parse_num("RFX_VERBS_LANDING_MIN", &v)? as usize;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that have constraints.
    pub fn validate(&self) -> Result<(), FabricError> {
        let ring = self.shm_ring_bytes;
        if !ring.is_power_of_two() || !(4096..=(1 << 30)).contains(&ring) {
            return Err(FabricError::Config {
                var: "RFX_SHM_RING_BYTES",
                value: ring.to_string(),
                reason: "must be a power of two between 4 KiB and 1 GiB".into(),
            });
        }
        if self.max_message > u32::MAX as usize {
            return Err(FabricError::Config {
                var: "RFX_MAX_MESSAGE",
                value: self.max_message.to_string(),
                reason: "must fit in 32 bits".into(),
            });
        }
        Ok(())
    }
}

fn parse_num(var: &'static str, v: &str) -> Result<u64, FabricError> {
    v.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| FabricError::Config {
            var,
            value: v.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::TransportKind;

    #[test]
    fn env_overrides_and_errors() {
        let cfg = Config::from_vars(|k| (k == "RFX_TRANSPORT").then(|| "shm".to_string())).unwrap();
        assert_eq!(cfg.transport, TransportChoice::Forced(TransportKind::Shm));
        let err = Config::from_vars(|k| (k == "RFX_TRANSPORT").then(|| "pigeon".to_string()));
        assert!(matches!(
            err,
            Err(FabricError::Config {
                var: "RFX_TRANSPORT",
                ..
            })
        ));
        let err = Config::from_vars(|k| (k == "RFX_SHM_RING_BYTES").then(|| "1000".to_string()));
        assert!(matches!(err, Err(FabricError::Config { .. })));
        let err = Config::from_vars(|k| (k == "RFX_OP_TIMEOUT_MS").then(|| "-3".to_string()));
        assert!(matches!(err, Err(FabricError::Config { .. })));
    }
}
