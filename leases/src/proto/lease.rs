//! Lease requests, granted leases, their states and usage.

use super::ids::{HostId, LeaseId, Millis, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The accelerator kind that is a GPU: its devices go to
/// `CUDA_VISIBLE_DEVICES` and accrue [`Usage::gpu_ms`].
pub const GPU: &str = "gpu";

/// What a tenant asks for.
///
/// ```
/// use rfx_leases::proto::LeaseRequest;
/// let req = LeaseRequest::new(4, 60_000).with_memory(8192).with_accelerators("gpu", 1);
/// assert_eq!(req.hot_timeout_ms, -1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Cores (one executor thread each); at least 1.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Devices per accelerator kind; kinds with count 0 are ignored.
    pub accelerators: BTreeMap<String, u32>,
    /// Busy-polling time before executors turn warm: -1 always hot, 0 always warm.
    pub hot_timeout_ms: i64,
    /// Lease duration from the grant, in ms; at least 1.
    pub duration_ms: u64,
    /// Longest run of one function invocation, ms: an executor whose
    /// function runs longer is killed and restarted within the lease, and
    /// the invocation fails as timed out. 0: the host's maximum (which
    /// also caps any value asked).
    #[serde(default)]
    pub exec_timeout_ms: u64,
    /// Run the executor in this container image (the host's runtime,
    /// podman by default); `None`: the host's default image, if it has
    /// one, else its built-in sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl LeaseRequest {
    /// `cores` for `duration_ms`, no memory or accelerators, always hot.
    pub fn new(cores: u32, duration_ms: u64) -> Self {
        Self {
            cores,
            memory_mib: 0,
            accelerators: BTreeMap::new(),
            hot_timeout_ms: -1,
            duration_ms,
            exec_timeout_ms: 0,
            container: None,
        }
    }

    /// Runs the executor in container `image`.
    #[must_use]
    pub fn with_container(mut self, image: impl Into<String>) -> Self {
        self.container = Some(image.into());
        self
    }

    /// Sets the longest run of one invocation, ms (0: the host's maximum).
    #[must_use]
    pub fn with_exec_timeout(mut self, exec_timeout_ms: u64) -> Self {
        self.exec_timeout_ms = exec_timeout_ms;
        self
    }

    /// Sets the memory in MiB.
    #[must_use]
    pub fn with_memory(mut self, memory_mib: u64) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// Asks for `count` devices of `kind` (replacing any previous count).
    #[must_use]
    pub fn with_accelerators(mut self, kind: impl Into<String>, count: u32) -> Self {
        self.accelerators.insert(kind.into(), count);
        self
    }

    /// Sets the hot timeout: -1 always hot, 0 always warm.
    #[must_use]
    pub fn with_hot_timeout(mut self, hot_timeout_ms: i64) -> Self {
        self.hot_timeout_ms = hot_timeout_ms;
        self
    }
}

/// A granted lease: which resources of which host a tenant holds, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease id.
    pub id: LeaseId,
    /// Owning tenant; only it may see, renew or release the lease.
    pub tenant: TenantId,
    /// The host whose executor manager runs the lease.
    pub host: HostId,
    /// Number of cores.
    pub cores: u32,
    /// Which cores of the host (for pinning executor threads), ascending.
    pub core_ids: Vec<u32>,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Which devices of the host per accelerator kind, ascending.
    pub accelerators: BTreeMap<String, Vec<u32>>,
    /// Busy-polling time before executors turn warm: -1 always hot, 0 always warm.
    pub hot_timeout_ms: i64,
    /// Longest run of one invocation, ms, as asked (0: the host's maximum;
    /// the host caps it).
    #[serde(default)]
    pub exec_timeout_ms: u64,
    /// The container image its executor runs in, as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// When the lease was granted.
    pub granted_at_ms: Millis,
    /// When the lease expires unless renewed.
    pub expires_at_ms: Millis,
    /// When the lease stopped being active, if it has.
    pub ended_at_ms: Option<Millis>,
    /// Active, or how it ended.
    pub state: LeaseState,
    /// Accounting, accrued up to the last event on the lease.
    pub usage: Usage,
}

impl Lease {
    /// Whether the lease still holds its resources.
    pub fn is_active(&self) -> bool {
        self.state == LeaseState::Active
    }

    /// The devices of `kind` as a comma-separated list, as for
    /// `CUDA_VISIBLE_DEVICES` (empty if the lease has none).
    pub fn visible_devices(&self, kind: &str) -> String {
        let ids = self.accelerators.get(kind).map_or(&[][..], Vec::as_slice);
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }

    /// Milliseconds held from the grant to `t` (never past expiry or end).
    fn held_ms_at(&self, t: Millis) -> u64 {
        let end = self
            .ended_at_ms
            .map_or(t, |e| e.min(t))
            .min(self.expires_at_ms);
        end.saturating_sub(self.granted_at_ms)
    }

    /// Core-milliseconds held from the grant to `t` (never past expiry or end).
    pub fn core_ms_at(&self, t: Millis) -> u64 {
        u64::from(self.cores).saturating_mul(self.held_ms_at(t))
    }

    /// GPU-milliseconds held from the grant to `t`: the lease's devices of
    /// kind `gpu` times the time it held them, used or not (as a batch
    /// system bills a GPU allocation).
    pub fn gpu_ms_at(&self, t: Millis) -> u64 {
        let gpus = self.accelerators.get(GPU).map_or(0, Vec::len) as u64;
        gpus.saturating_mul(self.held_ms_at(t))
    }

    /// The usage with core and GPU time accrued up to `now`.
    pub fn usage_at(&self, now: Millis) -> Usage {
        let mut u = self.usage.clone();
        u.accrue(self, now);
        u
    }
}

/// Where a lease is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// Holds its resources.
    Active,
    /// Released by its tenant.
    Released,
    /// Reached its expiry without renewal.
    Expired,
    /// Ended by a failure.
    Lost {
        /// What failed.
        reason: LostReason,
    },
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::Released => f.write_str("released"),
            Self::Expired => f.write_str("expired"),
            Self::Lost { reason } => write!(f, "lost ({reason})"),
        }
    }
}

/// Why a lease was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LostReason {
    /// The host missed its heartbeats.
    HostDown,
    /// The host's executor manager deregistered.
    HostDeregistered,
    /// The host registered again with a capacity that no longer holds the lease.
    CapacityChanged,
    /// The executor went over the lease's memory and the kernel killed it.
    OutOfMemory {
        /// The lease's memory limit, MiB.
        limit_mib: u64,
    },
    /// The executor process died.
    ExecutorCrashed {
        /// What the executor manager reported.
        reason: String,
    },
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostDown => f.write_str("host down"),
            Self::HostDeregistered => f.write_str("host deregistered"),
            Self::CapacityChanged => f.write_str("host capacity changed"),
            Self::OutOfMemory { limit_mib } => {
                write!(f, "out of memory: over the lease's {limit_mib} MiB")
            }
            Self::ExecutorCrashed { reason } => write!(f, "executor crashed: {reason}"),
        }
    }
}

/// Accounting of one lease; every counter only grows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Cores times held time, in core-milliseconds.
    pub core_ms: u64,
    /// Time executors spent busy-polling, in ms.
    pub hot_poll_ms: u64,
    /// Time spent executing functions, in ms.
    pub exec_ms: u64,
    /// Invocations served.
    pub invocations: u64,
    /// Payload bytes received by the executors.
    pub bytes_in: u64,
    /// Result bytes sent by the executors.
    pub bytes_out: u64,
    /// Invocations stopped for running past the lease's time limit (each
    /// restarted the executor).
    #[serde(default)]
    pub function_timeouts: u64,
    /// GPUs (accelerators of kind `gpu`) times held time, in
    /// GPU-milliseconds.
    #[serde(default)]
    pub gpu_ms: u64,
}

impl Usage {
    /// Accrues the held-time counters (cores, GPUs) of `lease` up to `at`,
    /// never backwards.
    pub(crate) fn accrue(&mut self, lease: &Lease, at: Millis) {
        self.core_ms = self.core_ms.max(lease.core_ms_at(at));
        self.gpu_ms = self.gpu_ms.max(lease.gpu_ms_at(at));
    }

    /// Adds a report's deltas (saturating).
    pub(crate) fn add(&mut self, d: &UsageReport) {
        self.hot_poll_ms = self.hot_poll_ms.saturating_add(d.hot_poll_ms);
        self.exec_ms = self.exec_ms.saturating_add(d.exec_ms);
        self.invocations = self.invocations.saturating_add(d.invocations);
        self.bytes_in = self.bytes_in.saturating_add(d.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(d.bytes_out);
        self.function_timeouts = self.function_timeouts.saturating_add(d.function_timeouts);
    }

    /// Whether no counter is below `earlier`'s.
    pub fn covers(&self, earlier: &Usage) -> bool {
        self.core_ms >= earlier.core_ms
            && self.hot_poll_ms >= earlier.hot_poll_ms
            && self.exec_ms >= earlier.exec_ms
            && self.invocations >= earlier.invocations
            && self.bytes_in >= earlier.bytes_in
            && self.bytes_out >= earlier.bytes_out
            && self.function_timeouts >= earlier.function_timeouts
            && self.gpu_ms >= earlier.gpu_ms
    }
}

/// Usage since the previous report, sent by an executor manager.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageReport {
    /// Busy-polling time, in ms.
    pub hot_poll_ms: u64,
    /// Execution time, in ms.
    pub exec_ms: u64,
    /// Invocations served.
    pub invocations: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Result bytes sent.
    pub bytes_out: u64,
    /// Invocations stopped at the time limit.
    #[serde(default)]
    pub function_timeouts: u64,
}
