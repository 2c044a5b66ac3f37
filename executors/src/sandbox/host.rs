//! The executor manager's side of isolation: per lease, a uid and either
//! a cgroup with the lease's limits and the [`Confinement`] the executor
//! applies to itself (the built-in sandbox), or a container image run by
//! the host's container runtime; after the executor exits, whether the OOM
//! killer ended it, and the clean-up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;
use rfx_leases::proto::{Lease, LeaseId};

use super::cgroup::{Cgroups, LeaseCgroup, Limits};
use super::container::{ContainerRuntime, ContainerSpec, Reaped};
use super::handoff::Confinement;
use super::syscalls::{compile_seccomp, SeccompPrograms};
use super::uids::UidPool;
use super::{SandboxConfig, SandboxMode, BASE_DEVICES, STAGING_DIR, SYSTEM_DIRS};

/// Where the container runtimes of executors run (one directory each).
const CONTAINER_WORKDIRS: &str = "/run/rfx-containers";

/// What a manager holds to isolate executors.
#[derive(Debug)]
pub struct SandboxHost {
    cfg: SandboxConfig,
    uids: Mutex<UidPool>,
    /// In strict mode.
    cgroups: Option<Cgroups>,
    user_namespace: bool,
    /// The host's online CPUs.
    online: Vec<u32>,
    /// The container runtime, found at the first lease that asks for one.
    runtime: OnceLock<Result<ContainerRuntime, String>>,
    /// The seccomp filters, compiled once for every executor.
    seccomp: Option<SeccompPrograms>,
    /// Where executors assemble their root.
    staging: PathBuf,
}

/// How one executor is isolated.
#[derive(Debug)]
pub enum Isolation {
    /// Sandbox off, no container: the manager's user and view of the host.
    None,
    /// The built-in sandbox.
    Builtin(Prepared),
    /// A container image.
    Container(PreparedContainer),
}

impl Isolation {
    /// `off`, `strict` or `container`, for logs and the audit.
    pub fn mode(&self) -> &'static str {
        match self {
            Isolation::None => "off",
            Isolation::Builtin(_) => "strict",
            Isolation::Container(_) => "container",
        }
    }

    /// The lease's memory limit, MiB, when one is enforced.
    pub fn memory_mib(&self) -> Option<u64> {
        match self {
            Isolation::None => None,
            Isolation::Builtin(p) => Some(p.memory_mib),
            Isolation::Container(c) => Some(c.memory_mib),
        }
    }

    /// The executor's own uid, when it has one.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Isolation::None => None,
            Isolation::Builtin(p) => Some(p.confinement.uid),
            Isolation::Container(c) => Some(c.uid),
        }
    }
}

/// The built-in sandbox of one running executor.
#[derive(Debug)]
pub struct Prepared {
    /// What the executor applies to itself.
    pub confinement: Confinement,
    /// The lease's memory limit, MiB.
    pub memory_mib: u64,
    cgroup: LeaseCgroup,
}

/// The container of one executor.
#[derive(Debug)]
pub struct PreparedContainer {
    /// The image.
    pub image: String,
    /// The container's name (unique on the host).
    pub name: String,
    /// Its uid and gid.
    pub uid: u32,
    /// The lease's memory limit, MiB.
    pub memory_mib: u64,
    /// The runtime's working directory (conmon drops files there, such as
    /// `oom` when the OOM killer fires): the manager's own, removed after.
    pub workdir: PathBuf,
    cpus: Vec<u32>,
    devices: Vec<PathBuf>,
    runtime: ContainerRuntime,
}

impl PreparedContainer {
    /// The environment to run the runtime's program with (never the
    /// executor's, which travels in its command line).
    pub fn runtime_env(&self) -> Vec<(OsString, OsString)> {
        self.runtime.runtime_env()
    }
}

/// How an isolated executor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The OOM killer killed a process of the lease (the executor over its
    /// memory limit).
    pub out_of_memory: bool,
}

impl SandboxHost {
    /// The cgroups found and the staging directory made in strict mode. An
    /// error says what strict mode lacks here.
    pub fn new(cfg: &SandboxConfig) -> Result<SandboxHost, String> {
        let user_namespace = !nix::unistd::geteuid().is_root();
        // Root's is a directory of /run; a manager that is not root uses
        // one of its own under the temp dir.
        let staging = if user_namespace {
            std::env::temp_dir().join(format!("rfx-sandbox-{}", nix::unistd::geteuid()))
        } else {
            PathBuf::from(STAGING_DIR)
        };
        if cfg.mode == SandboxMode::Strict {
            sweep_stale_parents(&cfg.cgroup_parent);
        }
        let cgroups = if cfg.mode == SandboxMode::Strict {
            // One parent per manager process: two managers on one host (test
            // clusters, a restart racing its predecessor's clean-up) never
            // share a lease group.
            let parent = format!("{}-{}", cfg.cgroup_parent, std::process::id());
            let cgroups = Cgroups::detect(&parent).map_err(|e| {
                format!("--sandbox strict needs cgroups for the leases' limits: {e} (run as root, or give up the sandbox with --sandbox off)")
            })?;
            std::fs::create_dir_all(&staging).map_err(|e| {
                format!("--sandbox strict: cannot create {}: {e}", staging.display())
            })?;
            Some(cgroups)
        } else {
            None
        };
        let seccomp = match cgroups {
            Some(_) => Some(compile_seccomp().map_err(|e| format!("--sandbox strict: {e}"))?),
            None => None,
        };
        Ok(SandboxHost {
            cfg: cfg.clone(),
            uids: Mutex::new(UidPool::new(cfg.uids)),
            cgroups,
            user_namespace,
            online: online_cpus(),
            runtime: OnceLock::new(),
            seccomp,
            staging,
        })
    }

    /// How the executor of `lease` runs: in its container image (asked, or
    /// the host's default), in the built-in sandbox (strict), or as is.
    pub fn prepare(&self, lease: &Lease) -> Result<Isolation, String> {
        let image = lease
            .container
            .clone()
            .or_else(|| self.cfg.default_container.clone());
        if image.is_none() && self.cgroups.is_none() {
            return Ok(Isolation::None);
        }
        let uid = self
            .uids
            .lock()
            .acquire(lease.id)
            .ok_or_else(|| format!("every sandbox uid of {} is in use", self.cfg.uids))?;
        let memory_mib = self.memory_mib_of(lease);
        let cpus = on_this_host(&lease.core_ids, &self.online);
        if let Some(image) = image {
            let runtime = self
                .runtime
                .get_or_init(|| {
                    ContainerRuntime::detect(self.cfg.container_runtime).map_err(|e| e.to_string())
                })
                .clone()?;
            let name = format!("rfx-lease-{}-{}", lease.id.0, std::process::id());
            let workdir = Path::new(CONTAINER_WORKDIRS).join(&name);
            std::fs::create_dir_all(&workdir)
                .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
            return Ok(Isolation::Container(PreparedContainer {
                image,
                name,
                workdir,
                uid,
                memory_mib,
                cpus,
                devices: devices_of(lease),
                runtime,
            }));
        }
        let Some(cgroups) = &self.cgroups else {
            return Ok(Isolation::None);
        };
        let limits = Limits {
            memory_bytes: memory_mib.saturating_mul(1 << 20),
            cpus,
            pids_max: self.cfg.pids_max,
        };
        let cgroup = cgroups
            .create(&format!("lease-{}", lease.id.0), &limits)
            .map_err(|e| format!("cgroup of lease {}: {e}", lease.id))?;
        let confinement = self.confinement(uid, cgroup.procs_files(), devices_of(lease));
        Ok(Isolation::Builtin(Prepared {
            confinement,
            memory_mib,
            cgroup,
        }))
    }

    /// Whether standby executors can be kept here: strict mode as root.
    pub fn standby_possible(&self) -> bool {
        self.cgroups.is_some() && !self.user_namespace
    }

    /// Whether the executor of `lease` may be a standby: the built-in
    /// sandbox (no container) and only the devices every standby has (no
    /// GPUs).
    pub fn standby_fits(&self, lease: &Lease) -> bool {
        self.standby_possible()
            && lease.container.is_none()
            && self.cfg.default_container.is_none()
            && devices_of(lease) == standby_devices()
    }

    /// The sandbox of standby executor `n`: a group `standby-n` with the
    /// default memory, every online CPU and the pids limit, and the
    /// confinement every lease of [`standby_fits`](Self::standby_fits)
    /// gets. Its uid is `nobody` until [`claim`](Self::claim) (a standby
    /// takes its identity from the claim).
    pub fn prepare_standby(&self, n: u64) -> Result<Prepared, String> {
        let (Some(cgroups), false) = (&self.cgroups, self.user_namespace) else {
            return Err("standby executors need strict mode as root".into());
        };
        let memory_mib = self.cfg.default_memory_mib;
        let limits = Limits {
            memory_bytes: memory_mib.saturating_mul(1 << 20),
            cpus: self.online.clone(),
            pids_max: self.cfg.pids_max,
        };
        let cgroup = cgroups
            .create(&format!("standby-{n}"), &limits)
            .map_err(|e| format!("cgroup of standby {n}: {e}"))?;
        let confinement = self.confinement(NOBODY, cgroup.procs_files(), standby_devices());
        Ok(Prepared {
            confinement,
            memory_mib,
            cgroup,
        })
    }

    /// Gives the standby `prepared` to `lease`: a uid, and the lease's
    /// limits on the standby's cgroup. On error the standby is to be
    /// disposed of (its cgroup may hold half the lease's limits).
    pub fn claim(&self, prepared: &mut Prepared, lease: &Lease) -> Result<(), String> {
        let Some(cgroups) = &self.cgroups else {
            return Err("no cgroups".into());
        };
        let Some(uid) = self.uids.lock().acquire(lease.id) else {
            return Err(format!("every sandbox uid of {} is in use", self.cfg.uids));
        };
        let memory_mib = self.memory_mib_of(lease);
        let limits = Limits {
            memory_bytes: memory_mib.saturating_mul(1 << 20),
            cpus: on_this_host(&lease.core_ids, &self.online),
            pids_max: self.cfg.pids_max,
        };
        if let Err(e) = cgroups.set_limits(&prepared.cgroup, &limits) {
            self.release(lease.id);
            return Err(format!("the lease's limits: {e}"));
        }
        prepared.confinement.uid = uid;
        prepared.confinement.gid = uid;
        prepared.memory_mib = memory_mib;
        Ok(())
    }

    /// The memory limit of `lease`, MiB: its own, or the host's default.
    fn memory_mib_of(&self, lease: &Lease) -> u64 {
        if lease.memory_mib > 0 {
            lease.memory_mib
        } else {
            self.cfg.default_memory_mib
        }
    }

    /// The confinement of an executor with `uid`, in the group of
    /// `cgroup_procs`, seeing `devices`.
    fn confinement(
        &self,
        uid: u32,
        cgroup_procs: Vec<PathBuf>,
        devices: Vec<PathBuf>,
    ) -> Confinement {
        let mut ro_paths: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
        ro_paths.extend(self.cfg.extra_ro.iter().cloned());
        // Functions built against the MPI ABI load rfx's MPI library.
        ro_paths.extend(crate::mpi::library().and_then(|p| p.canonicalize().ok()));
        // Python functions: the Python host and its interpreter's files
        // (those not already beneath a bound directory).
        let python: Vec<PathBuf> = crate::python::host_dirs()
            .into_iter()
            .filter(|d| !ro_paths.iter().any(|r| d.starts_with(r)))
            .collect();
        ro_paths.extend(python);
        Confinement {
            uid,
            gid: uid,
            user_namespace: self.user_namespace,
            cgroup_procs,
            tmp_bytes: self.cfg.tmp_mib.saturating_mul(1 << 20),
            ro_paths,
            devices,
            staging: self.staging.clone(),
            seccomp: self.seccomp.clone(),
        }
    }

    /// The command line that runs `executor args...` with `env` in the
    /// container `c`.
    pub fn container_command(
        &self,
        c: &PreparedContainer,
        executor: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<Vec<OsString>, String> {
        let spec = ContainerSpec {
            image: &c.image,
            name: &c.name,
            executor,
            args,
            env,
            memory_bytes: c.memory_mib.saturating_mul(1 << 20),
            cpus: &c.cpus,
            pids_max: self.cfg.pids_max,
            devices: &c.devices,
            uid: c.uid,
            gid: c.uid,
            tmp_bytes: self.cfg.tmp_mib.saturating_mul(1 << 20),
            ro_paths: &self.cfg.extra_ro,
        };
        c.runtime.command(&spec).map_err(|e| e.to_string())
    }

    /// After the built-in sandbox's executor exited: whether it ran out of
    /// memory; every process left in its cgroup is killed and the cgroup
    /// removed.
    pub fn finish(prepared: &Prepared) -> Ended {
        let out_of_memory = prepared.cgroup.oom_kills() > 0;
        if let Err(e) = prepared.cgroup.remove() {
            tracing::warn!("removing a lease cgroup: {e}");
        }
        Ended { out_of_memory }
    }

    /// After a container's runtime process exited (blocking: run it off
    /// the async threads): how it ended; the container is removed.
    pub fn finish_container(c: &PreparedContainer) -> Reaped {
        let reaped = c.runtime.reap(&c.name);
        let _ = std::fs::remove_dir_all(&c.workdir);
        reaped
    }

    /// Removes this manager's parent cgroup (at shutdown, once every
    /// executor is reaped).
    pub fn shutdown(&self) {
        if let Some(cgroups) = &self.cgroups {
            if let Err(e) = cgroups.remove_parent() {
                tracing::warn!("removing the sandbox's parent cgroup: {e}");
            }
        }
    }

    /// Gives the uid of `lease` back (its executor is gone for good).
    pub fn release(&self, lease: LeaseId) {
        self.uids.lock().release(lease);
    }
}

/// Removes the empty cgroups that managers killed without their clean-up
/// left behind (`<prefix>-<pid>` whose process is gone, and their
/// `lease-N` children); anything still populated stays (rmdir refuses).
fn sweep_stale_parents(prefix: &str) {
    let roots = match super::cgroup::Roots::detect() {
        Ok(super::cgroup::Roots::V1 {
            memory,
            cpuset,
            pids,
        }) => vec![memory, cpuset, pids],
        Ok(super::cgroup::Roots::V2 { root }) => vec![root],
        Err(_) => return,
    };
    for root in roots {
        let Ok(dir) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-'))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue; // a live manager's
            }
            let parent = entry.path();
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            match std::fs::remove_dir(&parent) {
                Ok(()) => tracing::info!(cgroup = %parent.display(), "removed a stale cgroup"),
                Err(e) => tracing::debug!(cgroup = %parent.display(), "stale cgroup kept: {e}"),
            }
        }
    }
}

/// The host's online CPUs (`/sys/devices/system/cpu/online`, e.g. `0-3,6`);
/// empty if unreadable.
fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

/// `0-3,6` as `[0, 1, 2, 3, 6]`; malformed parts are skipped.
fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            cpus.extend(a..=b.min(a.saturating_add(4095)));
        }
    }
    cpus
}

/// The CPUs of a lease's cores: core `i` is CPU `i` where the host has it;
/// a host that declares more cores than it has CPUs (an oversubscribed
/// test host) maps the rest round robin onto its CPUs.
fn on_this_host(cores: &[u32], online: &[u32]) -> Vec<u32> {
    if online.is_empty() {
        return cores.to_vec();
    }
    cores
        .iter()
        .map(|&c| {
            if online.contains(&c) {
                c
            } else {
                online[c as usize % online.len()]
            }
        })
        .collect()
}

/// The uid (and gid) of a standby until a lease claims it.
const NOBODY: u32 = 65534;

/// The device nodes of every executor: the base ones and the host's RDMA
/// devices (the transport is chosen per connection).
fn standby_devices() -> Vec<PathBuf> {
    let mut devices: Vec<PathBuf> = BASE_DEVICES.iter().map(PathBuf::from).collect();
    if let Ok(dir) = std::fs::read_dir("/dev/infiniband") {
        let mut rdma: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        rdma.sort();
        devices.extend(rdma);
    }
    devices
}

/// The device nodes of `lease`'s executor: [`standby_devices`] and its GPUs.
fn devices_of(lease: &Lease) -> Vec<PathBuf> {
    let mut devices = standby_devices();
    if let Some(gpus) = lease.accelerators.get("gpu").filter(|g| !g.is_empty()) {
        for shared in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
            devices.push(shared.into());
        }
        devices.extend(
            gpus.iter()
                .map(|g| PathBuf::from(format!("/dev/nvidia{g}"))),
        );
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_map_onto_the_cpus_the_host_has() {
        assert_eq!(parse_cpu_list("0-3,6\n"), [0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0"), [0]);
        assert_eq!(parse_cpu_list("x,2"), [2]);
        assert_eq!(on_this_host(&[0, 1], &[0, 1]), [0, 1]);
        assert_eq!(on_this_host(&[2, 3], &[0, 1]), [0, 1]);
        assert_eq!(on_this_host(&[5], &[0, 1, 4, 5]), [5]);
        assert_eq!(on_this_host(&[2], &[]), [2]);
    }
}
