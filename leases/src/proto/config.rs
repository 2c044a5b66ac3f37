//! Tunables of the lease manager.

use super::ids::Millis;
use serde::{Deserialize, Serialize};

/// Tunables of the [`Manager`](super::Manager).
///
/// ```
/// use rfx_leases::proto::Config;
/// let config = Config { heartbeat_timeout_ms: 3_000, ..Config::default() };
/// assert_eq!(config.max_lease_ms, 24 * 3_600_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// A host silent for this long is marked down and its leases lost.
    pub heartbeat_timeout_ms: Millis,
    /// Longest a lease may run ahead of now, at grant or after a renewal.
    pub max_lease_ms: Millis,
    /// How long ended leases stay visible (for accounting) before they are
    /// forgotten; `None` keeps them forever.
    pub retain_finished_ms: Option<Millis>,
    /// Most cores a host may register (bounds memory per host).
    pub max_host_cores: u32,
    /// Most devices of one accelerator kind a host may register.
    pub max_devices_per_kind: u32,
    /// Longest a queued request may wait.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: Millis,
}

fn default_max_wait_ms() -> Millis {
    24 * 3_600_000
}

impl Default for Config {
    /// 10 s heartbeat timeout, 24 h leases, ended leases kept 1 h,
    /// at most 4096 cores and 256 devices per kind per host, queued
    /// requests waiting up to 24 h.
    fn default() -> Self {
        Self {
            heartbeat_timeout_ms: 10_000,
            max_lease_ms: 24 * 3_600_000,
            retain_finished_ms: Some(3_600_000),
            max_host_cores: 4096,
            max_devices_per_kind: 256,
            max_wait_ms: default_max_wait_ms(),
        }
    }
}
