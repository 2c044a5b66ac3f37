//! Configuration of a communicator, read once at the edge
//! ([`CollConfig::from_env`]); the algorithm thresholds live here, in one
//! place.

use std::time::Duration;

use rfx_fabric::PollMode;

use crate::error::CollError;

/// Sizes (in bytes of one rank's contribution) at which the algorithms
/// switch. Overridable by the `RFX_COLL_*` variables of the crate docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// Broadcasts of at least this many bytes use the pipelined chain
    /// instead of the binomial tree (`RFX_COLL_BCAST_PIPELINE_MIN`).
    pub bcast_pipeline_min: usize,
    /// Reduces of at least this many bytes use the pipelined chain
    /// (`RFX_COLL_REDUCE_PIPELINE_MIN`).
    pub reduce_pipeline_min: usize,
    /// Chunk of the pipelined algorithms (`RFX_COLL_PIPELINE_CHUNK`).
    pub pipeline_chunk: usize,
    /// Allreduces of at least this many bytes use Rabenseifner instead of
    /// recursive doubling (`RFX_COLL_ALLREDUCE_LARGE_MIN`).
    pub allreduce_large_min: usize,
    /// Allreduces of at least this many bytes use the ring
    /// (`RFX_COLL_ALLREDUCE_RING_MIN`).
    pub allreduce_ring_min: usize,
    /// Allgathers of at least this many bytes per rank use the ring instead
    /// of recursive doubling (`RFX_COLL_ALLGATHER_RING_MIN`).
    pub allgather_ring_min: usize,
    /// Reduce over a power-of-two number of ranks, more than 2,
    /// reduce-scatters by recursive halving and then gathers the reduced
    /// blocks at the root (Rabenseifner) from this many bytes
    /// (`RFX_COLL_REDUCE_HALVING_MIN`): every rank combines at once.
    pub reduce_halving_min: usize,
    /// Gather and scatter go straight to or from the root up to this many
    /// ranks (`RFX_COLL_LINEAR_MAX_RANKS`)...
    pub linear_max_ranks: usize,
    /// ... or from blocks of this many bytes (`RFX_COLL_LINEAR_BLOCK_MIN`);
    /// otherwise along a binomial tree.
    pub linear_block_min: usize,
    /// With more ranks on a host than cores, bcast and reduce of at most
    /// this many bytes, over up to `linear_max_ranks` ranks, go straight
    /// from or to the root instead of along a binomial tree, whose every
    /// level waits for its ranks to be scheduled (`RFX_COLL_FLAT_MAX`).
    pub flat_max: usize,
    /// Scan runs along a chain (n-1 messages) up to this many ranks, by
    /// recursive doubling above (`RFX_COLL_SCAN_CHAIN_MAX_RANKS`).
    pub scan_chain_max_ranks: usize,
    /// Blocks of all-to-all from which the pairwise exchange replaces the
    /// linear one, all sends at once (`RFX_COLL_ALLTOALL_PAIRWISE_MIN`).
    pub alltoall_pairwise_min: usize,
    /// Messages from which a send between processes of one host that may
    /// read each other's memory goes as a read request: the receiver
    /// copies it straight from the sender's buffer, one copy instead of
    /// two (`RFX_COLL_SINGLE_COPY_MIN`; 0 turns it off).
    pub single_copy_min: usize,
    /// Messages from which a send over a provider that lends memory
    /// (verbs, ofi but its `shm`) goes as a read request naming a loan of
    /// the sender's buffer: the receiver reads it one-sided into its own
    /// buffer, with no copy on either side, instead of the sender copying it into its staging
    /// and the peer's inbox (`RFX_COLL_LEND_MIN`; 0 turns it off). Each
    /// loan registers the buffer with the device, which costs more than a
    /// copy of a small one.
    pub lend_min: usize,
    /// Messages from which a receiver that has its own copying to do (a
    /// gather's root) asks such a sender to write the message into its
    /// buffer itself, so that both copy at once (`RFX_COLL_PUSH_MIN`; 0
    /// turns it off). Below it the extra round trip costs more than the
    /// overlap saves. With more ranks than cores the sender may have to be
    /// woken to write, so there the threshold is twice this.
    pub push_min: usize,
    /// Read requests from which a rank that only receives (a bcast's or a
    /// scatter's leaf), or the receiver of a blocking send, shares the
    /// copy with the sender, idle until the message is read: it asks it to
    /// write the first half into its buffer while it reads the second
    /// (`RFX_COLL_SHARE_MIN`; 0 turns it off). Not with more ranks than
    /// cores.
    pub share_min: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            bcast_pipeline_min: 256 << 10,
            reduce_pipeline_min: 256 << 10,
            pipeline_chunk: 64 << 10,
            allreduce_large_min: 32 << 10,
            allreduce_ring_min: 4 << 20,
            allgather_ring_min: 64 << 10,
            reduce_halving_min: 512 << 10,
            linear_max_ranks: 8,
            linear_block_min: 16 << 10,
            flat_max: 4 << 10,
            scan_chain_max_ranks: 4,
            alltoall_pairwise_min: 256 << 10,
            single_copy_min: 16 << 10,
            lend_min: 256 << 10,
            push_min: 128 << 10,
            share_min: 128 << 10,
        }
    }
}

/// Settings of a communicator.
///
/// ```
/// use rfx_collectives::CollConfig;
/// use rfx_fabric::PollMode;
/// let cfg = CollConfig { progress: PollMode::Warm, ..CollConfig::default() };
/// assert_eq!(cfg.op_timeout.as_secs(), 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollConfig {
    /// The fabric underneath (`RFX_TRANSPORT`, ... see `rfx_fabric`).
    pub fabric: rfx_fabric::Config,
    /// Hot (busy poll, yielding when ranks outnumber cores) or warm (sleep
    /// on the endpoints' fds) progress (`RFX_COLL_PROGRESS`).
    pub progress: PollMode,
    /// An operation that makes no progress for this long fails
    /// (`RFX_COLL_TIMEOUT_MS`).
    pub op_timeout: Duration,
    /// Bound on the bootstrap: rendezvous plus wiring (`RFX_BOOTSTRAP_TIMEOUT_MS`).
    pub bootstrap_timeout: Duration,
    /// Flow-control window per peer, bytes in flight (`RFX_COLL_WINDOW`).
    pub window: usize,
    /// Largest frame payload (`RFX_COLL_FRAGMENT`); at most half the window.
    pub fragment: usize,
    /// Algorithm switch points.
    pub thresholds: Thresholds,
    /// Bytes per chunk of a device buffer staged through pinned host
    /// memory (`RFX_COLL_DEVICE_CHUNK`, a multiple of 8).
    pub device_chunk: usize,
    /// Pinned chunks in flight per device operation, at least 2
    /// (`RFX_COLL_DEVICE_SLOTS`).
    pub device_slots: usize,
    /// Cores that this job's ranks on one host share (`RFX_COLL_CORES`);
    /// `None`: the host's online CPUs. With more ranks on the host than
    /// this, waits yield their core and the barrier is linear (see
    /// docs/collectives.md). Set it where the job has fewer cores than the
    /// host, as on a node shared through Slurm.
    pub cores: Option<usize>,
}

impl Default for CollConfig {
    fn default() -> Self {
        CollConfig {
            fabric: rfx_fabric::Config::default(),
            progress: PollMode::Hot,
            op_timeout: Duration::from_secs(30),
            bootstrap_timeout: Duration::from_secs(60),
            window: 256 << 10,
            fragment: 64 << 10,
            thresholds: Thresholds::default(),
            device_chunk: 1 << 20,
            device_slots: 4,
            cores: None,
        }
    }
}

impl CollConfig {
    /// Defaults overridden by the environment (see the crate docs).
    pub fn from_env() -> Result<CollConfig, CollError> {
        CollConfig::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`CollConfig::from_env`], with variables from `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CollConfig, CollError> {
        let fabric = rfx_fabric::Config::from_vars(&get)
            .map_err(|e| CollError::Env(format!("fabric configuration: {e}")))?;
        let mut c = CollConfig {
            fabric,
            ..CollConfig::default()
        };
        let num = |var: &str| -> Result<Option<usize>, CollError> {
            match get(var) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|e| CollError::Env(format!("{var}={v:?}: {e}"))),
            }
        };
        if let Some(v) = get("RFX_COLL_PROGRESS") {
            c.progress = match v.trim().to_ascii_lowercase().as_str() {
                "hot" => PollMode::Hot,
                "warm" => PollMode::Warm,
                _ => {
                    return Err(CollError::Env(format!(
                        "RFX_COLL_PROGRESS={v:?}: expected hot or warm"
                    )))
                }
            };
        }
        if let Some(ms) = num("RFX_COLL_TIMEOUT_MS")? {
            c.op_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = num("RFX_BOOTSTRAP_TIMEOUT_MS")? {
            c.bootstrap_timeout = Duration::from_millis(ms as u64);
        }
        if let Some(v) = num("RFX_COLL_WINDOW")? {
            c.window = v;
        }
        if let Some(v) = num("RFX_COLL_FRAGMENT")? {
            c.fragment = v;
        }
        if let Some(v) = num("RFX_COLL_DEVICE_CHUNK")? {
            c.device_chunk = v;
        }
        if let Some(v) = num("RFX_COLL_DEVICE_SLOTS")? {
            c.device_slots = v;
        }
        if let Some(v) = num("RFX_COLL_CORES")? {
            c.cores = Some(v);
        }
        let t = &mut c.thresholds;
        for (var, slot) in [
            ("RFX_COLL_BCAST_PIPELINE_MIN", &mut t.bcast_pipeline_min),
            ("RFX_COLL_REDUCE_PIPELINE_MIN", &mut t.reduce_pipeline_min),
            ("RFX_COLL_PIPELINE_CHUNK", &mut t.pipeline_chunk),
            ("RFX_COLL_ALLREDUCE_LARGE_MIN", &mut t.allreduce_large_min),
            ("RFX_COLL_ALLREDUCE_RING_MIN", &mut t.allreduce_ring_min),
            ("RFX_COLL_ALLGATHER_RING_MIN", &mut t.allgather_ring_min),
            ("RFX_COLL_REDUCE_HALVING_MIN", &mut t.reduce_halving_min),
            ("RFX_COLL_LINEAR_MAX_RANKS", &mut t.linear_max_ranks),
            ("RFX_COLL_LINEAR_BLOCK_MIN", &mut t.linear_block_min),
            ("RFX_COLL_SCAN_CHAIN_MAX_RANKS", &mut t.scan_chain_max_ranks),
            ("RFX_COLL_FLAT_MAX", &mut t.flat_max),
            (
                "RFX_COLL_ALLTOALL_PAIRWISE_MIN",
                &mut t.alltoall_pairwise_min,
            ),
            ("RFX_COLL_SINGLE_COPY_MIN", &mut t.single_copy_min),
            ("RFX_COLL_LEND_MIN", &mut t.lend_min),
            ("RFX_COLL_PUSH_MIN", &mut t.push_min),
            ("RFX_COLL_SHARE_MIN", &mut t.share_min),
        ] {
            if let Some(v) = num(var)? {
                *slot = v;
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the values that have constraints.
    pub fn validate(&self) -> Result<(), CollError> {
        if self.window < 8192 {
            return Err(CollError::Env(format!(
                "RFX_COLL_WINDOW={}: must be at least 8192",
                self.window
            )));
        }
        if self.fragment == 0 || self.fragment > self.window / 2 {
            return Err(CollError::Env(format!(
                "RFX_COLL_FRAGMENT={}: must be between 1 and half the window ({})",
                self.fragment,
                self.window / 2
            )));
        }
        if self.device_chunk == 0 || self.device_chunk % 8 != 0 {
            return Err(CollError::Env(format!(
                "RFX_COLL_DEVICE_CHUNK={}: must be a positive multiple of 8",
                self.device_chunk
            )));
        }
        if !(2..=64).contains(&self.device_slots) {
            return Err(CollError::Env(format!(
                "RFX_COLL_DEVICE_SLOTS={}: must be between 2 and 64",
                self.device_slots
            )));
        }
        if self.cores == Some(0) {
            return Err(CollError::Env("RFX_COLL_CORES: must not be 0".into()));
        }
        if self.thresholds.pipeline_chunk == 0 {
            return Err(CollError::Env(
                "RFX_COLL_PIPELINE_CHUNK: must not be 0".into(),
            ));
        }
        self.fabric
            .validate()
            .map_err(|e| CollError::Env(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_errors() {
        let vars = |k: &str| match k {
            "RFX_COLL_PROGRESS" => Some("warm".to_string()),
            "RFX_COLL_TIMEOUT_MS" => Some("1500".to_string()),
            "RFX_COLL_ALLREDUCE_RING_MIN" => Some("77".to_string()),
            _ => None,
        };
        let c = CollConfig::from_vars(vars).unwrap();
        assert_eq!(c.progress, PollMode::Warm);
        assert_eq!(c.op_timeout, Duration::from_millis(1500));
        assert_eq!(c.thresholds.allreduce_ring_min, 77);
        let bad = CollConfig::from_vars(|k| (k == "RFX_COLL_PROGRESS").then(|| "lukewarm".into()));
        assert!(matches!(bad, Err(CollError::Env(m)) if m.contains("RFX_COLL_PROGRESS")));
        let bad = CollConfig::from_vars(|k| (k == "RFX_COLL_FRAGMENT").then(|| "1000000".into()));
        assert!(bad.is_err());
        let bad = CollConfig::from_vars(|k| (k == "RFX_COLL_DEVICE_CHUNK").then(|| "1001".into()));
        assert!(matches!(bad, Err(CollError::Env(m)) if m.contains("multiple of 8")));
        let bad = CollConfig::from_vars(|k| (k == "RFX_COLL_DEVICE_SLOTS").then(|| "1".into()));
        assert!(bad.is_err());
        let c = CollConfig::from_vars(|k| (k == "RFX_COLL_CORES").then(|| "3".into())).unwrap();
        assert_eq!(c.cores, Some(3));
        let bad = CollConfig::from_vars(|k| (k == "RFX_COLL_CORES").then(|| "0".into()));
        assert!(matches!(bad, Err(CollError::Env(m)) if m.contains("RFX_COLL_CORES")));
    }
}
