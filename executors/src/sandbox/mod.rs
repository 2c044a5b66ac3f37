//! The tenant sandbox: what confines the executor of a lease.
//!
//! Tenants are adversaries: their functions are native code inside the
//! executor process. The executor manager starts every executor with
//! nothing of its own: a cleared environment (an allow-list of fabric
//! settings, never `RFX_CLUSTER_KEY`), and the lease token on an inherited
//! file descriptor ([`handoff`]), never in the environment or on the
//! command line. In [`SandboxMode::Strict`] the executor also confines
//! itself before it runs any tenant code ([`confine()`]), with kernel
//! primitives and no external tool:
//!
//! - **identity**: its own uid/gid per lease from [`SandboxConfig::uids`]
//!   ([`uids`]), or a user namespace when the manager is not root;
//! - **filesystem**: a mount namespace whose root is a fresh tmpfs holding
//!   read-only binds of the host's system directories, its own `/proc`, a
//!   `/dev` with only the null/zero/random nodes and the devices the lease
//!   needs, and a private, size-limited `/tmp` and `/dev/shm`;
//! - **processes**: pid and ipc namespaces, `no_new_privs`;
//! - **syscalls**: a seccomp deny-list and Landlock rules ([`syscalls`]);
//! - **limits**: the lease's memory, cores and a pids limit in a cgroup,
//!   v1 or v2 ([`cgroup`]); an executor over its memory is killed and its
//!   lease ends as `lost (out of memory)`.
//!
//! The network namespace stays the host's: RDMA and tcp need the host's
//! interfaces. See `docs/security.md` for what the sandbox guarantees and
//! what it does not.

// The host's side (the manager's).
#[cfg(feature = "manager")]
pub mod cgroup;
#[cfg(feature = "manager")]
pub mod container;
#[cfg(feature = "manager")]
pub mod host;
#[cfg(feature = "manager")]
pub mod uids;
// The executor's side (and what the manager hands it).
pub mod confine;
pub mod handoff;
pub mod syscalls;

use std::fmt;
#[cfg(feature = "manager")]
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use confine::{confine, enter, ConfineError, Entered};
pub use handoff::{Claim, Confinement, Handoff, HandoffError};
#[cfg(feature = "manager")]
pub use uids::{UidPool, UidRange};

/// Whether executors run sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxMode {
    /// Every executor in its namespaces, under its own uid, with its
    /// cgroup limits, syscall filter and Landlock rules.
    Strict,
    /// Executors run as the manager's user with its view of the host: only
    /// the cleared environment and the token on a descriptor remain. For
    /// single-tenant hosts and debugging.
    Off,
}

impl SandboxMode {
    /// The default: strict when running as root (which the sandbox needs
    /// for uids and cgroups), off otherwise.
    pub fn default_for_this_process() -> SandboxMode {
        if nix::unistd::geteuid().is_root() {
            SandboxMode::Strict
        } else {
            SandboxMode::Off
        }
    }
}

impl FromStr for SandboxMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(SandboxMode::Strict),
            "off" => Ok(SandboxMode::Off),
            _ => Err(format!("sandbox mode {s:?}: expected `strict` or `off`")),
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SandboxMode::Strict => "strict",
            SandboxMode::Off => "off",
        })
    }
}

#[cfg(feature = "manager")]
/// How a host's executor manager sandboxes executors (fixed for its life).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Strict or off.
    pub mode: SandboxMode,
    /// The uids (and gids, the same numbers) given to leases, one each.
    pub uids: UidRange,
    /// Size of each executor's private `/tmp` and of its `/dev/shm`, MiB
    /// (tmpfs: the pages count against the lease's memory).
    pub tmp_mib: u64,
    /// Memory of a lease that states none, MiB.
    pub default_memory_mib: u64,
    /// Most processes and threads of one executor.
    pub pids_max: u64,
    /// Host paths made visible read-only to executors besides the system
    /// directories (for example a shared directory of function libraries).
    pub extra_ro: Vec<PathBuf>,
    /// The cgroup under which lease groups are made:
    /// `<parent>-<manager pid>/lease-N` in each controller's hierarchy.
    pub cgroup_parent: String,
    /// The runtime of leases that ask for a container image.
    pub container_runtime: container::RuntimeKind,
    /// The image of leases that ask for none (`None`: the built-in sandbox).
    pub default_container: Option<String>,
    /// Executors kept started and confined ahead of any lease, in strict
    /// mode as root ([`handoff::Claim`]): the next lease without GPUs or a
    /// container takes one instead of waiting for a spawn. 0: none.
    pub standby: usize,
}

#[cfg(feature = "manager")]
impl Default for SandboxConfig {
    /// Strict as root, off otherwise; uids 60000-60999; 64 MiB of `/tmp`;
    /// 1 GiB per lease unless stated; 1024 processes; cgroup `rfx`; one
    /// standby executor.
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::default_for_this_process(),
            uids: UidRange {
                first: 60000,
                count: 1000,
            },
            tmp_mib: 64,
            default_memory_mib: 1024,
            pids_max: 1024,
            extra_ro: Vec::new(),
            cgroup_parent: "rfx".to_owned(),
            container_runtime: container::RuntimeKind::Podman,
            default_container: None,
            standby: 1,
        }
    }
}

/// Host directories every sandboxed executor sees read-only (where they
/// exist; a symlink such as Debian's `/lib -> usr/lib` is recreated).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];

/// Where the new root is assembled (an empty directory of the host, used as
/// a mount point inside each executor's own mount namespace only).
pub const STAGING_DIR: &str = "/run/rfx-sandbox";

/// What a standby executor prints on stderr once it is confined and waits
/// for its claim ([`handoff::Claim`]).
pub const STANDBY_LINE: &str = "rfx executor: standing by";

/// Device nodes every sandboxed executor gets.
pub const BASE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
