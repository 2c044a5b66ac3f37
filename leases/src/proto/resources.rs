//! Host capacity and the pool of free cores, memory and devices.

use super::lease::{Lease, LeaseRequest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a host offers: cores, memory, and accelerators by kind and count
/// (for instance `{"gpu": 2}`, whose devices are numbered 0 and 1).
///
/// ```
/// use rfx_leases::proto::Capacity;
/// let cap = Capacity::new(32, 128 * 1024).with_accelerators("gpu", 2);
/// assert_eq!(cap.accelerators["gpu"], 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Cores, numbered `0..cores`.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Devices per accelerator kind, numbered `0..count` within a kind.
    pub accelerators: BTreeMap<String, u32>,
}

impl Capacity {
    /// A capacity without accelerators.
    pub fn new(cores: u32, memory_mib: u64) -> Self {
        Self {
            cores,
            memory_mib,
            accelerators: BTreeMap::new(),
        }
    }

    /// Adds `count` devices of `kind` (replacing any previous count).
    #[must_use]
    pub fn with_accelerators(mut self, kind: impl Into<String>, count: u32) -> Self {
        self.accelerators.insert(kind.into(), count);
        self
    }
}

/// The free resources of a host, by index: which cores and devices no active
/// lease holds, and how much memory is left.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pool {
    /// Free core indices.
    pub cores: BTreeSet<u32>,
    /// Free memory in MiB.
    pub memory_mib: u64,
    /// Free device indices per accelerator kind.
    pub accelerators: BTreeMap<String, BTreeSet<u32>>,
}

/// Concrete resources picked for a new lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub(crate) core_ids: Vec<u32>,
    pub(crate) memory_mib: u64,
    pub(crate) accelerators: BTreeMap<String, Vec<u32>>,
}

impl Pool {
    /// Everything free: the pool of a host without leases.
    pub(crate) fn full(capacity: &Capacity) -> Self {
        Self {
            cores: (0..capacity.cores).collect(),
            memory_mib: capacity.memory_mib,
            accelerators: capacity
                .accelerators
                .iter()
                .map(|(kind, &n)| (kind.clone(), (0..n).collect()))
                .collect(),
        }
    }

    /// Number of free cores.
    pub fn free_cores(&self) -> u32 {
        count(self.cores.len())
    }

    /// Number of free devices of `kind` (0 for a kind the host lacks).
    pub fn free_devices(&self, kind: &str) -> u32 {
        self.accelerators
            .get(kind)
            .map_or(0, |set| count(set.len()))
    }

    /// The free amounts, as a [`Capacity`].
    pub fn amounts(&self) -> Capacity {
        Capacity {
            cores: self.free_cores(),
            memory_mib: self.memory_mib,
            accelerators: self
                .accelerators
                .iter()
                .map(|(kind, set)| (kind.clone(), count(set.len())))
                .collect(),
        }
    }

    /// Whether `req` fits in this pool.
    pub(crate) fn fits(&self, req: &LeaseRequest) -> bool {
        self.free_cores() >= req.cores
            && self.memory_mib >= req.memory_mib
            && req
                .accelerators
                .iter()
                .all(|(kind, &n)| self.free_devices(kind) >= n)
    }

    /// The lowest free indices that satisfy `req`, or `None` if it does not fit.
    pub(crate) fn pick(&self, req: &LeaseRequest) -> Option<Allocation> {
        if !self.fits(req) {
            return None;
        }
        let take = |set: &BTreeSet<u32>, n: u32| -> Vec<u32> {
            set.iter().copied().take(n as usize).collect()
        };
        let mut accelerators = BTreeMap::new();
        for (kind, &n) in req.accelerators.iter().filter(|(_, &n)| n > 0) {
            accelerators.insert(kind.clone(), take(self.accelerators.get(kind)?, n));
        }
        Some(Allocation {
            core_ids: take(&self.cores, req.cores),
            memory_mib: req.memory_mib,
            accelerators,
        })
    }

    /// Checks that every resource `lease` holds is free here, exactly once.
    pub(crate) fn check_holds(&self, lease: &Lease) -> Result<(), String> {
        if usize::try_from(lease.cores).ok() != Some(lease.core_ids.len()) {
            return Err(format!(
                "lease {} has {} core ids for {} cores",
                lease.id,
                lease.core_ids.len(),
                lease.cores
            ));
        }
        all_free(&self.cores, &lease.core_ids)
            .map_err(|c| format!("core {c} of lease {} is not free", lease.id))?;
        if lease.memory_mib > self.memory_mib {
            return Err(format!(
                "lease {} needs {} MiB, {} MiB free",
                lease.id, lease.memory_mib, self.memory_mib
            ));
        }
        for (kind, devices) in &lease.accelerators {
            let free = self.accelerators.get(kind);
            let missing = |d| format!("{kind} {d} of lease {} is not free", lease.id);
            match free {
                Some(free) => all_free(free, devices).map_err(missing)?,
                None => {
                    if let Some(d) = devices.first() {
                        return Err(missing(*d));
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes `lease`'s resources out of the pool (checked by `check_holds`).
    pub(crate) fn remove(&mut self, lease: &Lease) {
        for c in &lease.core_ids {
            self.cores.remove(c);
        }
        self.memory_mib = self.memory_mib.saturating_sub(lease.memory_mib);
        for (kind, devices) in &lease.accelerators {
            if let Some(free) = self.accelerators.get_mut(kind) {
                for d in devices {
                    free.remove(d);
                }
            }
        }
    }

    /// Takes an allocation [`pick`](Self::pick) made out of the pool.
    pub(crate) fn take(&mut self, a: &Allocation) {
        for c in &a.core_ids {
            self.cores.remove(c);
        }
        self.memory_mib = self.memory_mib.saturating_sub(a.memory_mib);
        for (kind, devices) in &a.accelerators {
            if let Some(free) = self.accelerators.get_mut(kind) {
                for d in devices {
                    free.remove(d);
                }
            }
        }
    }

    /// Returns `lease`'s resources to the pool.
    pub(crate) fn give_back(&mut self, lease: &Lease) {
        self.cores.extend(lease.core_ids.iter().copied());
        self.memory_mib = self.memory_mib.saturating_add(lease.memory_mib);
        for (kind, devices) in &lease.accelerators {
            self.accelerators
                .entry(kind.clone())
                .or_default()
                .extend(devices.iter().copied());
        }
    }
}

/// Ok if every index is in `free` and none repeats; else the first bad index.
fn all_free(free: &BTreeSet<u32>, wanted: &[u32]) -> Result<(), u32> {
    let mut seen = BTreeSet::new();
    match wanted
        .iter()
        .find(|&&i| !free.contains(&i) || !seen.insert(i))
    {
        Some(&bad) => Err(bad),
        None => Ok(()),
    }
}

/// A set size as a count; sets are bounded by `u32` capacities.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
