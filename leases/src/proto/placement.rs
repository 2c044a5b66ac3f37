//! Placement: which host gets a lease, or why none can.

use super::config::Config;
use super::host::Host;
use super::ids::HostId;
use super::lease::LeaseRequest;
use super::resources::Allocation;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// Why a lease request was refused; requests are never queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PlacementError {
    /// The request itself is malformed or out of bounds.
    #[error("invalid request: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
    /// No executor manager ever registered.
    #[error("no hosts registered")]
    NoHosts,
    /// The tenant's quota would be passed.
    #[error("over the tenant's quota: {would_be} {what} > {limit}")]
    Quota {
        /// `cores`, `accelerators` or `leases`.
        what: String,
        /// The limit.
        limit: u32,
        /// What the tenant's leases would hold with this request.
        would_be: u64,
    },
    /// Every registered host is down.
    #[error("no host is up ({registered} registered, all down)")]
    NoHostUp {
        /// Registered hosts.
        registered: usize,
    },
    /// No up host has enough free devices of one kind.
    #[error("no host has {requested} free {kind} (largest free is {largest})")]
    Accelerator {
        /// Accelerator kind.
        kind: String,
        /// Devices asked for.
        requested: u32,
        /// Most free devices of that kind on one up host.
        largest: u32,
    },
    /// No up host has enough free cores.
    #[error("largest free cores is {largest} < {requested}")]
    Cores {
        /// Cores asked for.
        requested: u32,
        /// Most free cores on one up host.
        largest: u32,
    },
    /// No up host has enough free memory.
    #[error("largest free memory is {largest} MiB < {requested} MiB")]
    Memory {
        /// MiB asked for.
        requested: u64,
        /// Most free MiB on one up host.
        largest: u64,
    },
    /// Each resource is free somewhere, but never all on the same host.
    #[error(
        "no single host has {cores} cores, {memory_mib} MiB and the accelerators free together"
    )]
    Fragmented {
        /// Cores asked for.
        cores: u32,
        /// MiB asked for.
        memory_mib: u64,
    },
}

/// Checks the request against the configured bounds.
pub(crate) fn validate(req: &LeaseRequest, config: &Config) -> Result<(), PlacementError> {
    let invalid = |reason: String| Err(PlacementError::Invalid { reason });
    if req.cores == 0 {
        return invalid("a lease needs at least 1 core".into());
    }
    if req.duration_ms == 0 {
        return invalid("duration must be at least 1 ms".into());
    }
    if req.duration_ms > config.max_lease_ms {
        return invalid(format!(
            "duration {} ms exceeds the maximum {} ms",
            req.duration_ms, config.max_lease_ms
        ));
    }
    if req.hot_timeout_ms < -1 {
        return invalid(format!("hot timeout {} ms is below -1", req.hot_timeout_ms));
    }
    if let Some(image) = &req.container {
        // An image reference (`registry/name:tag@digest`), which ends up on
        // a container runtime's command line.
        let ok = !image.is_empty()
            && image.len() <= MAX_IMAGE_LEN
            && !image.starts_with('-')
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"./:_-@+".contains(&b));
        if !ok {
            return invalid(format!(
                "container image {:?}: expected a reference of at most {MAX_IMAGE_LEN} characters \
                 (letters, digits and ./:_-@+, not starting with '-')",
                image.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Longest container image reference accepted.
const MAX_IMAGE_LEN: usize = 255;

/// Picks the up host with the most free cores among those that fit (ties go
/// to the lowest id) and its lowest free indices; else the most precise reason.
pub(crate) fn place<'a, I>(
    hosts: I,
    req: &LeaseRequest,
) -> Result<(HostId, Allocation), PlacementError>
where
    I: IntoIterator<Item = &'a Host>,
{
    let all: Vec<&Host> = hosts.into_iter().collect();
    if all.is_empty() {
        return Err(PlacementError::NoHosts);
    }
    let up: Vec<&Host> = all.iter().copied().filter(|h| h.up).collect();
    if up.is_empty() {
        return Err(PlacementError::NoHostUp {
            registered: all.len(),
        });
    }
    let best = up
        .iter()
        .filter(|h| h.free.fits(req))
        .max_by_key(|h| (h.free.free_cores(), Reverse(h.id)));
    if let Some(alloc) = best.and_then(|h| h.free.pick(req).map(|a| (h.id, a))) {
        return Ok(alloc);
    }
    Err(refusal(&up, req))
}

/// The first resource that no single up host has enough of.
fn refusal(up: &[&Host], req: &LeaseRequest) -> PlacementError {
    for (kind, &requested) in req.accelerators.iter().filter(|(_, &n)| n > 0) {
        let largest = up
            .iter()
            .map(|h| h.free.free_devices(kind))
            .max()
            .unwrap_or(0);
        if largest < requested {
            return PlacementError::Accelerator {
                kind: kind.clone(),
                requested,
                largest,
            };
        }
    }
    let largest = up.iter().map(|h| h.free.free_cores()).max().unwrap_or(0);
    if largest < req.cores {
        return PlacementError::Cores {
            requested: req.cores,
            largest,
        };
    }
    let largest = up.iter().map(|h| h.free.memory_mib).max().unwrap_or(0);
    if largest < req.memory_mib {
        return PlacementError::Memory {
            requested: req.memory_mib,
            largest,
        };
    }
    PlacementError::Fragmented {
        cores: req.cores,
        memory_mib: req.memory_mib,
    }
}
