//! Per-lease cgroups: the memory, cores and process count of one lease's executor.
//!
//! The executor manager detects the host's hierarchy once ([`Cgroups::detect`]), which prepares
//! a parent group (e.g. `rfx`), then makes one group per lease ([`Cgroups::create`]). The
//! executor joins its group itself, by writing its own pid into [`LeaseCgroup::procs_files`],
//! before it confines itself and loads tenant code, so that no moment passes outside the
//! limits. After reaping the executor, the manager calls [`LeaseCgroup::remove`], which kills
//! whatever is left (a tenant may have forked) and removes the group. There is no `Drop`: a
//! group outlives its handle until `remove` is called.
//!
//! # cgroup v1 and v2
//!
//! - **v1** (also "hybrid" hosts, where v1 controllers sit under `/sys/fs/cgroup/<controller>`
//!   next to a cgroup2 mount without controllers): each controller is its own hierarchy, so a
//!   lease is three directories, `<memory>/<parent>/<lease>`, `<cpuset>/<parent>/<lease>` and
//!   `<pids>/<parent>/<lease>`, and a process joins by writing its pid into the `cgroup.procs`
//!   of each. Limits: `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, memory plus
//!   swap, where the kernel has it), `cpuset.cpus`, `pids.max`.
//! - **v2** (unified, `cgroup.controllers` at the mount): one directory
//!   `<root>/<parent>/<lease>`; the controllers must be enabled in the `cgroup.subtree_control`
//!   of the root and of the parent (`+memory +cpuset +pids`). Limits: `memory.max` (and
//!   `memory.swap.max` = 0), `cpuset.cpus`, `pids.max`.
//!
//! **Why `cpuset.mems` is copied (v1).** A new v1 cpuset group starts with empty
//! `cpuset.cpus` and `cpuset.mems`, and the kernel refuses to put a process into a cpuset
//! with either empty (`ENOSPC`, "No space left on device"). So the parent gets both copied
//! from its own parent (unless already set), and every lease gets its cores plus the parent's
//! memory nodes. v2 has no such rule: an empty `cpuset.mems` means "the parent's".
//!
//! The OOM killer counts in `memory.oom_control` (v1, `oom_kill N`, kernel >= 4.13) or
//! `memory.events` (v2): [`LeaseCgroup::oom_kills`] lets the manager tell a tenant that its
//! function died for memory.
//!
//! # Why not the `cgroups-rs` crate
//!
//! `cgroups-rs` 0.5 was evaluated and not used: it depends unconditionally on `zbus` (a whole
//! D-Bus stack, for systemd) and on a second `nix` (0.25); its v2 hierarchy is rooted at
//! `/sys/fs/cgroup` only (no delegated subtree, no fake tree for tests); and it parses
//! `memory.oom_control` by line position. What rfx needs is a few files per controller,
//! written here with `std::fs`.
//!
//! All calls block (file writes, and up to about 1.5 s in [`LeaseCgroup::remove`]); from async
//! code, call them in `spawn_blocking`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The controllers a lease needs, in the order errors report them.
const CONTROLLERS: [&str; 3] = ["memory", "cpuset", "pids"];

/// At most this many rounds of SIGKILL in [`LeaseCgroup::remove`]...
const KILL_ROUNDS: u32 = 50;
/// ... and at most this long in all.
const KILL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between kill rounds.
const KILL_PAUSE: Duration = Duration::from_millis(20);
/// `rmdir` of a group is retried this many times on `EBUSY` (exiting processes)...
const RMDIR_TRIES: u32 = 25;
/// ... this far apart.
const RMDIR_PAUSE: Duration = Duration::from_millis(20);

/// What one lease may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory (v1: `memory.limit_in_bytes`; v2: `memory.max`), in bytes; no swap. Not 0.
    pub memory_bytes: u64,
    /// The cores (`cpuset.cpus`); order and repeats do not matter. Not empty.
    pub cpus: Vec<u32>,
    /// Processes and threads at once (`pids.max`), the executor included. Not 0.
    pub pids_max: u64,
}

impl Limits {
    fn check(&self) -> Result<(), CgroupError> {
        let reason = if self.memory_bytes == 0 {
            "memory_bytes is 0"
        } else if self.cpus.is_empty() {
            "cpus is empty"
        } else if self.pids_max == 0 {
            "pids_max is 0"
        } else {
            return Ok(());
        };
        Err(CgroupError::InvalidLimits { reason })
    }

    /// `cpuset.cpus` syntax: sorted, without repeats, comma separated.
    fn cpu_list(&self) -> String {
        let cpus: BTreeSet<u32> = self.cpus.iter().copied().collect();
        cpus.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An error of cgroup setup or teardown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// A controller rfx needs is neither mounted as cgroup v1 nor available in a cgroup2 mount.
    #[error(
        "cgroup controller `{controller}` is not mounted (v1) and there is no cgroup2 with it"
    )]
    MissingController {
        /// The controller, e.g. "pids".
        controller: &'static str,
    },
    /// The controllers are split between v1 and cgroup2; rfx needs them all on one.
    #[error(
        "cgroup controllers are split between v1 and cgroup2 \
         (v1 has {v1:?}); rfx needs memory, cpuset and pids on one of them"
    )]
    SplitControllers {
        /// The needed controllers that v1 has.
        v1: Vec<&'static str>,
    },
    /// The cgroup2 root given does not offer a controller (see its `cgroup.controllers`).
    #[error("cgroup2 at `{}` does not offer controller `{controller}`", .root.display())]
    ControllerNotAvailable {
        /// The controller, e.g. "cpuset".
        controller: &'static str,
        /// The cgroup2 directory.
        root: PathBuf,
    },
    /// A file or directory operation failed.
    #[error("cannot {op} `{}`", .path.display())]
    Io {
        /// What was done, e.g. "write \"16\" to".
        op: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause (the OS error).
        #[source]
        source: io::Error,
    },
    /// A group name that is not a single plain path component.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why, e.g. "contains '/'".
        reason: &'static str,
    },
    /// Limits that would make no sense (and could only kill the executor at once).
    #[error("invalid cgroup limits: {reason}")]
    InvalidLimits {
        /// Why, e.g. "cpus is empty".
        reason: &'static str,
    },
    /// Processes were still in the group after it was killed for the time allowed.
    #[error("processes {pids:?} are still in cgroup `{}` after SIGKILL", .path.display())]
    Survivors {
        /// One of the group's directories.
        path: PathBuf,
        /// Those left.
        pids: Vec<u32>,
    },
}

fn io_err(op: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        op: op.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// Where the hierarchies are: per-controller v1 roots, or one cgroup2 directory.
///
/// [`Roots::detect`] finds the mount points of this host; an operator with a delegated
/// subtree (or a test, with a fake tree) names them instead and calls [`Cgroups::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// cgroup v1: one directory per controller (often `/sys/fs/cgroup/<controller>`).
    V1 {
        /// The `memory` hierarchy.
        memory: PathBuf,
        /// The `cpuset` hierarchy.
        cpuset: PathBuf,
        /// The `pids` hierarchy.
        pids: PathBuf,
    },
    /// cgroup v2: one directory whose `cgroup.controllers` lists memory, cpuset and pids.
    V2 {
        /// The directory (the cgroup2 mount, or a subtree delegated to rfx).
        root: PathBuf,
    },
}

impl Roots {
    /// Finds the hierarchies from `/proc/self/mountinfo`: v1 if memory, cpuset and pids are
    /// all mounted as v1 (hybrid hosts included), else a cgroup2 mount offering all three
    /// (`/sys/fs/cgroup` first).
    pub fn detect() -> Result<Roots, CgroupError> {
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        choose(&parse_mountinfo(&mountinfo), |mount| {
            fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })
    }
}

/// The cgroup mounts of a mountinfo file.
#[derive(Debug, Default)]
struct Mounts {
    /// Needed v1 controllers and their (first) mount point.
    v1: Vec<(&'static str, PathBuf)>,
    /// cgroup2 mount points.
    v2: Vec<PathBuf>,
}

/// Parses `/proc/<pid>/mountinfo` (see proc(5)); lines it cannot read are skipped.
fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        // "36 35 98:0 /root /mnt opts [optional fields] - fstype source superopts"
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = head.split(' ').nth(4) else {
            continue;
        };
        let mut tail = tail.split(' ');
        let (fstype, superopts) = (tail.next(), tail.nth(1).unwrap_or(""));
        let mount_point = unescape_mountinfo(mount_point);
        match fstype {
            Some("cgroup2") => mounts.v2.push(mount_point),
            Some("cgroup") => {
                for opt in superopts.split(',') {
                    if let Some(c) = CONTROLLERS.iter().find(|c| **c == opt) {
                        if !mounts.v1.iter().any(|(have, _)| have == c) {
                            mounts.v1.push((c, mount_point.clone()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space...).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Picks the hierarchy; `controllers_of` reads a cgroup2 mount's `cgroup.controllers`.
fn choose(
    mounts: &Mounts,
    controllers_of: impl Fn(&Path) -> Option<String>,
) -> Result<Roots, CgroupError> {
    let v1 = |c: &str| {
        mounts
            .v1
            .iter()
            .find(|(have, _)| *have == c)
            .map(|(_, p)| p.clone())
    };
    if let (Some(memory), Some(cpuset), Some(pids)) = (v1("memory"), v1("cpuset"), v1("pids")) {
        return Ok(Roots::V1 {
            memory,
            cpuset,
            pids,
        });
    }
    let mut v2 = mounts.v2.clone();
    v2.sort_by_key(|p| p.as_path() != Path::new("/sys/fs/cgroup"));
    let mut offered: BTreeSet<&str> = BTreeSet::new();
    for root in v2 {
        let controllers = controllers_of(&root).unwrap_or_default();
        let have: BTreeSet<&str> = controllers.split_whitespace().collect();
        if CONTROLLERS.iter().all(|c| have.contains(c)) {
            return Ok(Roots::V2 { root });
        }
        offered.extend(CONTROLLERS.iter().filter(|c| have.contains(*c)));
    }
    match CONTROLLERS
        .iter()
        .find(|c| v1(c).is_none() && !offered.contains(*c))
    {
        Some(controller) => Err(CgroupError::MissingController { controller }),
        None => Err(CgroupError::SplitControllers {
            v1: mounts.v1.iter().map(|(c, _)| *c).collect(),
        }),
    }
}

/// The directories of one group (the parent, or a lease's).
#[derive(Debug, Clone)]
enum Dirs {
    V1 {
        memory: PathBuf,
        cpuset: PathBuf,
        pids: PathBuf,
    },
    V2(PathBuf),
}

impl Dirs {
    fn join(&self, name: &str) -> Dirs {
        match self {
            Dirs::V1 {
                memory,
                cpuset,
                pids,
            } => Dirs::V1 {
                memory: memory.join(name),
                cpuset: cpuset.join(name),
                pids: pids.join(name),
            },
            Dirs::V2(dir) => Dirs::V2(dir.join(name)),
        }
    }

    /// Every directory once (v1 controllers may be mounted together).
    fn all(&self) -> Vec<&Path> {
        let mut all: Vec<&Path> = Vec::new();
        let candidates: Vec<&Path> = match self {
            Dirs::V1 {
                memory,
                cpuset,
                pids,
            } => vec![memory, pids, cpuset],
            Dirs::V2(dir) => vec![dir],
        };
        for dir in candidates {
            if !all.contains(&dir) {
                all.push(dir);
            }
        }
        all
    }

    fn memory(&self) -> &Path {
        match self {
            Dirs::V1 { memory, .. } => memory,
            Dirs::V2(dir) => dir,
        }
    }
}

/// The cgroup hierarchy of this host, detected once, with rfx's parent group prepared.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// The parent group's directories.
    parent: Dirs,
}

impl Cgroups {
    /// Detects v1 (per-controller mounts, from `/proc/self/mountinfo`) or v2 (unified,
    /// `cgroup.controllers` at the mount) and prepares the parent group `parent` (e.g. "rfx")
    /// under each needed controller; see [`Cgroups::at`].
    pub fn detect(parent: &str) -> Result<Cgroups, CgroupError> {
        Cgroups::at(&Roots::detect()?, parent)
    }

    /// Prepares the parent group `parent` (a plain name, e.g. "rfx") under `roots`.
    ///
    /// v1: creates `<controller root>/<parent>` for memory, cpuset and pids, and copies
    /// `cpuset.cpus` and `cpuset.mems` from the cpuset root into the parent where they are
    /// empty. v2: checks that the root offers memory, cpuset and pids, enables them in the
    /// root's `cgroup.subtree_control`, creates `<root>/<parent>` and enables them there too.
    /// Reuses what exists. A v2 root other than the mount must hold no process itself (the
    /// kernel's "no internal processes" rule): in a delegated subtree, the manager runs in a
    /// leaf beside `parent`, not in the root.
    pub fn at(roots: &Roots, parent: &str) -> Result<Cgroups, CgroupError> {
        check_name(parent)?;
        match roots {
            Roots::V1 {
                memory,
                cpuset,
                pids,
            } => {
                let dirs = Dirs::V1 {
                    memory: memory.clone(),
                    cpuset: cpuset.clone(),
                    pids: pids.clone(),
                }
                .join(parent);
                for dir in dirs.all() {
                    make_dir(dir)?;
                }
                let cpuset_dir = cpuset.join(parent);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if read(&cpuset_dir.join(file))?.trim().is_empty() {
                        let from_root = read(&cpuset.join(file))?;
                        write(&cpuset_dir.join(file), from_root.trim())?;
                    }
                }
                Ok(Cgroups { parent: dirs })
            }
            Roots::V2 { root } => {
                let offered = read(&root.join("cgroup.controllers"))?;
                let offered: Vec<&str> = offered.split_whitespace().collect();
                if let Some(controller) = CONTROLLERS.iter().find(|c| !offered.contains(c)) {
                    return Err(CgroupError::ControllerNotAvailable {
                        controller,
                        root: root.clone(),
                    });
                }
                enable_controllers(root)?;
                let dir = root.join(parent);
                make_dir(&dir)?;
                enable_controllers(&dir)?;
                Ok(Cgroups {
                    parent: Dirs::V2(dir),
                })
            }
        }
    }

    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self.parent {
            Dirs::V1 { .. } => 1,
            Dirs::V2(_) => 2,
        }
    }

    /// Creates the group `name` (e.g. "lease-42"; letters, digits, `_`, `.`, `-`, at most 64)
    /// under the parent and applies `limits`: memory (v1 `memory.limit_in_bytes`, plus
    /// `memory.memsw.limit_in_bytes` where present; v2 `memory.max`, plus `memory.swap.max` 0
    /// where present), `cpuset.cpus` (v1 also `cpuset.mems`, the parent's), `pids.max`.
    ///
    /// A group left by an earlier run is cleared first: its processes are killed and it is
    /// recreated (or, if it cannot be removed, reused with the new limits). If applying the
    /// limits fails, the group is removed again. The caller owns the group and must call
    /// [`LeaseCgroup::remove`]; dropping the handle leaves it in place.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<LeaseCgroup, CgroupError> {
        check_name(name)?;
        limits.check()?;
        let group = LeaseCgroup {
            name: name.to_owned(),
            dirs: self.parent.join(name),
        };
        if group.dirs.all().iter().any(|dir| dir.exists()) {
            tracing::info!(group = name, "cgroup exists (an earlier run?); clearing it");
            if let Err(e) = group.remove() {
                tracing::debug!(group = name, error = %e, "cannot remove old cgroup; reusing it");
            }
        }
        if let Err(e) = self.apply(&group, limits) {
            if let Err(cleanup) = group.remove() {
                tracing::warn!(group = name, error = %cleanup, "cannot remove half-made cgroup");
            }
            return Err(e);
        }
        tracing::debug!(
            group = name,
            ?limits,
            version = self.version(),
            "cgroup created"
        );
        Ok(group)
    }

    /// Applies `limits` to `group`, which may hold processes (a standby
    /// executor claimed by a lease): its processes move onto the new CPUs;
    /// memory below what the group uses is refused on v1 (`EBUSY`) and, on
    /// v2, reclaimed or else OOM-killed.
    pub fn set_limits(&self, group: &LeaseCgroup, limits: &Limits) -> Result<(), CgroupError> {
        limits.check()?;
        self.apply(group, limits)
    }

    fn apply(&self, group: &LeaseCgroup, limits: &Limits) -> Result<(), CgroupError> {
        for dir in group.dirs.all() {
            make_dir(dir)?;
        }
        let memory = limits.memory_bytes.to_string();
        match &group.dirs {
            Dirs::V1 {
                memory: memory_dir,
                cpuset,
                pids,
            } => {
                write(&cpuset.join("cpuset.cpus"), &limits.cpu_list())?;
                // `<parent>/<lease>` -> `<parent>/cpuset.mems`.
                let mems = read(&cpuset.with_file_name("cpuset.mems"))?;
                write(&cpuset.join("cpuset.mems"), mems.trim())?;
                set_v1_memory(memory_dir, &memory)?;
                write(&pids.join("pids.max"), &limits.pids_max.to_string())?;
            }
            Dirs::V2(dir) => {
                write(&dir.join("memory.max"), &memory)?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("cpuset.cpus"), &limits.cpu_list())?;
                write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
            }
        }
        Ok(())
    }

    /// Removes the (empty) parent group's directories; for tests and uninstalling. Fails,
    /// naming the directory, while lease groups remain under it. Missing directories are fine.
    pub fn remove_parent(&self) -> Result<(), CgroupError> {
        self.parent.all().into_iter().try_for_each(remove_dir)
    }
}

/// Sets v1 memory (and memory+swap, where the kernel has it, to the same: no swap). The kernel
/// keeps `memsw >= limit` at every moment, so lowering goes limit first, raising memsw first.
fn set_v1_memory(dir: &Path, bytes: &str) -> Result<(), CgroupError> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return write(&limit, bytes);
    }
    if write(&limit, bytes).is_ok() {
        write(&memsw, bytes)
    } else {
        write(&memsw, bytes)?;
        write(&limit, bytes)
    }
}

/// Enables memory, cpuset and pids for the children of `dir` (v2), those not yet enabled.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read(&file)?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&file, &missing.join(" "))
}

/// One lease's cgroup. Dropping the handle leaves the group: the owner (the executor manager,
/// after reaping the executor) calls [`LeaseCgroup::remove`].
#[derive(Debug, Clone)]
pub struct LeaseCgroup {
    name: String,
    dirs: Dirs,
}

impl LeaseCgroup {
    /// The group's name, as given to [`Cgroups::create`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The files into which a process writes its own pid to join every controller of this
    /// group (v1: one `cgroup.procs` per controller; v2: one). The executor writes its pid
    /// there itself before it confines itself, so that no moment passes outside the limits.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .all()
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Moves `pid` (a whole process) into the group: writes it to every procs file.
    pub fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        self.procs_files()
            .iter()
            .try_for_each(|file| write(file, &pid.to_string()))
    }

    /// How many times the kernel's OOM killer killed a process of this group: v1
    /// `memory.oom_control` (line `oom_kill N`, kernel >= 4.13), v2 `memory.events`
    /// (line `oom_kill N`). 0 when unknown.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.dirs {
            Dirs::V1 { .. } => "memory.oom_control",
            Dirs::V2(_) => "memory.events",
        };
        fs::read_to_string(self.dirs.memory().join(file))
            .ok()
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// Peak memory in bytes, if the kernel tells it (v1 `memory.max_usage_in_bytes`, v2
    /// `memory.peak`, kernel >= 5.19), for reports.
    pub fn memory_peak(&self) -> Option<u64> {
        let file = match self.dirs {
            Dirs::V1 { .. } => "memory.max_usage_in_bytes",
            Dirs::V2(_) => "memory.peak",
        };
        fs::read_to_string(self.dirs.memory().join(file))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// The pids of the processes in the group (in any of its controllers), sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = BTreeSet::new();
        for file in self.procs_files() {
            if let Ok(text) = fs::read_to_string(&file) {
                pids.extend(
                    text.lines()
                        .filter_map(|l| l.trim().parse::<u32>().ok())
                        .filter(|pid| *pid != 0),
                );
            }
        }
        pids.into_iter().collect()
    }

    /// Kills every process left in the group and removes the group's directories.
    ///
    /// v2 writes `cgroup.kill` where the kernel has it (5.14); then, in both versions, SIGKILL
    /// goes to each pid in `cgroup.procs`, round after round until none is left (at most 50
    /// rounds, 1 s). The calling process itself is never killed (if it is in the group, the
    /// group stays, with an error). `rmdir` is retried briefly on `EBUSY`. Idempotent: a group
    /// already gone is fine. Blocks up to about 1.5 s; never panics.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let me = std::process::id();
        let others = || -> Vec<u32> { self.pids().into_iter().filter(|p| *p != me).collect() };
        if self.pids().contains(&me) {
            tracing::warn!(group = %self.name, "this process is in the cgroup it removes");
        } else if let Dirs::V2(dir) = &self.dirs {
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                if let Err(e) = write(&kill_file, "1") {
                    tracing::debug!(error = %e, "cgroup.kill failed; killing one by one");
                }
            }
        }
        let start = Instant::now();
        for _ in 0..KILL_ROUNDS {
            let pids = others();
            if pids.is_empty() || start.elapsed() > KILL_TIMEOUT {
                break;
            }
            for pid in pids {
                // A pid that does not fit in pid_t is garbage; 0 or negative would signal a
                // process group, so `pids` never yields them.
                if let Ok(raw) = i32::try_from(pid) {
                    // ESRCH: it exited meanwhile.
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
            }
            std::thread::sleep(KILL_PAUSE);
        }
        let removed = self.dirs.all().into_iter().try_for_each(remove_dir);
        match removed {
            Err(e) => {
                let left = self.pids();
                if left.is_empty() {
                    Err(e)
                } else {
                    Err(CgroupError::Survivors {
                        path: self.dirs.memory().to_path_buf(),
                        pids: left,
                    })
                }
            }
            Ok(()) => {
                tracing::debug!(group = %self.name, "cgroup removed");
                Ok(())
            }
        }
    }
}

/// Refuses names that are not one plain path component.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 64 {
        "longer than 64 bytes"
    } else if name.contains('/') {
        "contains '/'"
    } else if name == "." || name == ".." || name.contains("..") {
        "contains '..' or is '.'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        "not made of A-Z, a-z, 0-9, '_', '.', '-'"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// The number after `key` in "key value" lines (memory.events, memory.oom_control).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            words.next()?.parse().ok()
        } else {
            None
        }
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| io_err("read", path, e))
}

/// Writes an existing control file (never creates one: a missing file is an error).
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    use std::io::Write;
    // No O_CREAT (cgroupfs makes the files); O_TRUNC is a no-op there, but right for fake trees.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_err(format!("write {value:?} to"), path, e))
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io_err("create directory", dir, e))
        }
        _ => Ok(()),
    }
}

/// `rmdir`, retried on `EBUSY`; a directory already gone is fine.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < RMDIR_TRIES => {
                tries += 1;
                std::thread::sleep(RMDIR_PAUSE);
            }
            Err(e) => return Err(io_err("remove directory", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, ExitStatus, Stdio};

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            memory_bytes: 64 * MIB,
            cpus: vec![0],
            pids_max: 16,
        }
    }

    // ---- pure tests, on fake trees ----

    /// Makes files as the kernel would when a group directory appears.
    fn touch(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).expect("mkdir");
        for (name, content) in files {
            fs::write(dir.join(name), content).expect("write fake file");
        }
    }

    fn content(path: &Path) -> String {
        fs::read_to_string(path).expect("read fake file")
    }

    const V2_FILES: &[(&str, &str)] = &[
        ("cgroup.controllers", "cpuset cpu io memory pids"),
        ("cgroup.subtree_control", ""),
        ("cgroup.procs", ""),
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("cpuset.cpus", ""),
        ("pids.max", "max"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n",
        ),
        ("memory.peak", "1234567\n"),
    ];

    #[test]
    fn v2_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        touch(
            root,
            &[(
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc",
            )],
        );
        touch(root, &[("cgroup.subtree_control", "cpu")]);
        touch(&root.join("rfx"), V2_FILES);
        // An earlier run's group; reused (a fake directory with files cannot be removed).
        touch(&root.join("rfx/lease-1"), V2_FILES);

        let cg = Cgroups::at(
            &Roots::V2 {
                root: root.to_path_buf(),
            },
            "rfx",
        )
        .expect("at");
        assert_eq!(cg.version(), 2);
        assert_eq!(
            content(&root.join("cgroup.subtree_control")),
            "+memory +cpuset +pids"
        );
        assert_eq!(
            content(&root.join("rfx/cgroup.subtree_control")),
            "+memory +cpuset +pids"
        );

        let lease = cg
            .create(
                "lease-1",
                &Limits {
                    memory_bytes: 64 * MIB,
                    cpus: vec![3, 1, 3],
                    pids_max: 16,
                },
            )
            .expect("create");
        let dir = root.join("rfx/lease-1");
        assert_eq!(content(&dir.join("memory.max")), "67108864");
        assert_eq!(content(&dir.join("memory.swap.max")), "0");
        assert_eq!(content(&dir.join("cpuset.cpus")), "1,3");
        assert_eq!(content(&dir.join("pids.max")), "16");
        assert_eq!(lease.name(), "lease-1");
        assert_eq!(lease.procs_files(), vec![dir.join("cgroup.procs")]);
        assert_eq!(lease.oom_kills(), 2);
        assert_eq!(lease.memory_peak(), Some(1_234_567));
        assert!(lease.pids().is_empty());

        // A pid beyond pid_max, so nothing real could ever be signalled.
        lease.attach(4_000_000_000).expect("attach");
        assert_eq!(content(&dir.join("cgroup.procs")), "4000000000");
        assert_eq!(lease.pids(), vec![4_000_000_000]);
        fs::write(dir.join("cgroup.procs"), "").expect("clear");

        // Files already present upstream: nothing rewritten.
        fs::write(root.join("cgroup.subtree_control"), "cpuset memory pids").expect("write");
        Cgroups::at(
            &Roots::V2 {
                root: root.to_path_buf(),
            },
            "rfx",
        )
        .expect("at again");
        assert_eq!(
            content(&root.join("cgroup.subtree_control")),
            "cpuset memory pids"
        );

        // Gone: counters read 0 / None, remove is a no-op.
        fs::remove_dir_all(&dir).expect("rm");
        assert_eq!(lease.oom_kills(), 0);
        assert_eq!(lease.memory_peak(), None);
        lease.remove().expect("remove of a removed group");
        lease.remove().expect("twice");
    }

    #[test]
    fn v2_missing_controller_and_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        touch(
            &root,
            &[
                ("cgroup.controllers", "cpu io memory"),
                ("cgroup.subtree_control", ""),
            ],
        );
        let err = Cgroups::at(&Roots::V2 { root: root.clone() }, "rfx").expect_err("no cpuset");
        assert!(matches!(
            err,
            CgroupError::ControllerNotAvailable {
                controller: "cpuset",
                ..
            }
        ));
        assert!(err.to_string().contains("cpuset"), "{err}");

        // Parent made, but the fake kernel gives the lease no pids.max: the error names the
        // file, and the half-made group is removed.
        fs::write(root.join("cgroup.controllers"), "memory cpuset pids").expect("write");
        touch(&root.join("rfx"), &[("cgroup.subtree_control", "")]);
        let cg = Cgroups::at(&Roots::V2 { root: root.clone() }, "rfx").expect("at");
        let err = cg.create("lease-2", &limits()).expect_err("no memory.max");
        let CgroupError::Io { op, path, source } = &err else {
            panic!("not an io error: {err:?}");
        };
        assert_eq!(path, &root.join("rfx/lease-2/memory.max"));
        assert!(op.contains("67108864"), "{op}");
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert!(!root.join("rfx/lease-2").exists());
    }

    #[test]
    fn v1_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (memory, cpuset, pids) = (
            tmp.path().join("memory"),
            tmp.path().join("cpuset"),
            tmp.path().join("pids"),
        );
        touch(
            &cpuset,
            &[("cpuset.cpus", "0-3\n"), ("cpuset.mems", "0-1\n")],
        );
        touch(&memory, &[]);
        touch(&pids, &[]);
        touch(
            &cpuset.join("rfx"),
            &[("cpuset.cpus", "\n"), ("cpuset.mems", "\n")],
        );
        let mem_files = [
            ("memory.limit_in_bytes", ""),
            ("memory.memsw.limit_in_bytes", ""),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
            ),
            ("memory.max_usage_in_bytes", "777\n"),
            ("cgroup.procs", ""),
        ];
        touch(&memory.join("rfx/l"), &mem_files);
        touch(
            &cpuset.join("rfx/l"),
            &[
                ("cpuset.cpus", ""),
                ("cpuset.mems", ""),
                ("cgroup.procs", ""),
            ],
        );
        touch(
            &pids.join("rfx/l"),
            &[("pids.max", ""), ("cgroup.procs", "")],
        );

        let roots = Roots::V1 {
            memory: memory.clone(),
            cpuset: cpuset.clone(),
            pids: pids.clone(),
        };
        let cg = Cgroups::at(&roots, "rfx").expect("at");
        assert_eq!(cg.version(), 1);
        assert_eq!(content(&cpuset.join("rfx/cpuset.cpus")), "0-3");
        assert_eq!(content(&cpuset.join("rfx/cpuset.mems")), "0-1");
        let lease = cg.create("l", &limits()).expect("create");
        assert_eq!(
            content(&memory.join("rfx/l/memory.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(
            content(&memory.join("rfx/l/memory.memsw.limit_in_bytes")),
            "67108864"
        );
        assert_eq!(content(&cpuset.join("rfx/l/cpuset.cpus")), "0");
        assert_eq!(content(&cpuset.join("rfx/l/cpuset.mems")), "0-1");
        assert_eq!(content(&pids.join("rfx/l/pids.max")), "16");
        assert_eq!(
            lease.procs_files(),
            vec![
                memory.join("rfx/l/cgroup.procs"),
                pids.join("rfx/l/cgroup.procs"),
                cpuset.join("rfx/l/cgroup.procs"),
            ]
        );
        assert_eq!(lease.oom_kills(), 5);
        assert_eq!(lease.memory_peak(), Some(777));

        // A parent whose cpuset an operator already set keeps it.
        fs::write(cpuset.join("rfx/cpuset.cpus"), "2-3").expect("write");
        Cgroups::at(&roots, "rfx").expect("at again");
        assert_eq!(content(&cpuset.join("rfx/cpuset.cpus")), "2-3");

        // Controllers mounted together: one directory, one procs file.
        let together = Roots::V1 {
            memory: cpuset.clone(),
            cpuset: cpuset.clone(),
            pids: cpuset.clone(),
        };
        let cg = Cgroups::at(&together, "rfx").expect("at");
        let lease = LeaseCgroup {
            name: "x".into(),
            dirs: cg.parent.join("x"),
        };
        assert_eq!(lease.procs_files(), vec![cpuset.join("rfx/x/cgroup.procs")]);
    }

    #[test]
    fn mountinfo_hybrid_v2_and_missing() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/mem\\040ory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage line
1 2 3 - cgroup
";
        let roots = choose(&parse_mountinfo(hybrid), |_| Some(String::new())).expect("v1");
        assert_eq!(
            roots,
            Roots::V1 {
                memory: "/sys/fs/cgroup/mem ory".into(),
                cpuset: "/sys/fs/cgroup/cpuset".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            }
        );

        let unified = "\
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
26 30 0:24 / /mnt/other rw - cgroup2 cgroup2 rw
";
        let offered = |p: &Path| {
            (p == Path::new("/sys/fs/cgroup")).then(|| "cpuset cpu io memory pids\n".to_owned())
        };
        let roots = choose(&parse_mountinfo(unified), offered).expect("v2");
        assert_eq!(
            roots,
            Roots::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );

        let no_pids = hybrid.replace("rw,pids", "rw,freezer");
        let err = choose(&parse_mountinfo(&no_pids), |_| Some("memory".into())).expect_err("pids");
        assert_eq!(
            err.to_string(),
            "cgroup controller `pids` is not mounted (v1) and there is no cgroup2 with it"
        );
        let err = choose(&parse_mountinfo(&no_pids), |_| Some("pids".into())).expect_err("split");
        assert!(matches!(err, CgroupError::SplitControllers { .. }), "{err}");
        assert!(choose(&parse_mountinfo(""), |_| None).is_err());
    }

    #[test]
    fn names_are_checked() {
        for ok in ["lease-42", "rfx", "a.b_c-D9", &"x".repeat(64)] {
            check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a..b",
            "/",
            "a b",
            "é",
            "x\n",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(CgroupError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let roots = Roots::V2 {
            root: tmp.path().into(),
        };
        assert!(matches!(
            Cgroups::at(&roots, "../etc"),
            Err(CgroupError::InvalidName { .. })
        ));
        let cg = Cgroups {
            parent: Dirs::V2(tmp.path().into()),
        };
        assert!(matches!(
            cg.create("a/../../b", &limits()),
            Err(CgroupError::InvalidName { .. })
        ));
        let mut no_cpus = limits();
        no_cpus.cpus.clear();
        assert!(matches!(
            cg.create("ok", &no_cpus),
            Err(CgroupError::InvalidLimits { .. })
        ));
    }

    #[test]
    fn keyed_values_parse_defensively() {
        assert_eq!(keyed_value("oom 1\noom_kill 7\n", "oom_kill"), Some(7));
        assert_eq!(
            keyed_value("oom_kill_disable 0\noom_kill 3", "oom_kill"),
            Some(3)
        );
        // A line that does not parse is skipped.
        assert_eq!(keyed_value("oom_kill x\noom_kill 4", "oom_kill"), Some(4));
        assert_eq!(keyed_value("", "oom_kill"), None);
        assert_eq!(keyed_value("oom_kill", "oom_kill"), None);
        assert_eq!(
            keyed_value("oom_kill 99999999999999999999999", "oom_kill"),
            None
        );
        assert_eq!(
            unescape_mountinfo("a\\040b\\\\c\\9"),
            PathBuf::from("a b\\\\c\\9")
        );
        assert_eq!(unescape_mountinfo("end\\04"), PathBuf::from("end\\04"));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = keyed_value(&text, "oom_kill");
            let _ = parse_mountinfo(&text);
            let _ = unescape_mountinfo(&text);
            let _ = check_name(&text);
        }
    }

    // ---- real tests, on this machine's cgroups ----

    /// Owns what a real test makes, and removes it even when the test fails.
    struct Real {
        cgroups: Cgroups,
        leases: Vec<LeaseCgroup>,
        children: Vec<Child>,
    }

    impl Real {
        /// `None` (skipped) only with `RFX_TEST_SKIP_CGROUPS=1`; otherwise a machine without
        /// usable cgroups fails the test, with the reason.
        fn new(test: &str) -> Option<Real> {
            let why = if !nix::unistd::geteuid().is_root() {
                Err("not root".to_owned())
            } else {
                Cgroups::detect(&format!("rfx-test-{}-{test}", std::process::id()))
                    .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
            };
            match why {
                Ok(cgroups) => Some(Real {
                    cgroups,
                    leases: Vec::new(),
                    children: Vec::new(),
                }),
                Err(why) if std::env::var("RFX_TEST_SKIP_CGROUPS").as_deref() == Ok("1") => {
                    eprintln!("skipped {test}: no usable cgroups ({why})");
                    None
                }
                Err(why) => panic!(
                    "{test} needs root and cgroups (memory, cpuset, pids): {why}; \
                     set RFX_TEST_SKIP_CGROUPS=1 to skip"
                ),
            }
        }

        fn create(&mut self, name: &str, limits: &Limits) -> LeaseCgroup {
            let lease = self.cgroups.create(name, limits).expect("create");
            self.leases.push(lease.clone());
            lease
        }

        /// `sh -c script`, which first joins `lease` by writing `$$` to its procs files (as
        /// the executor does), then runs the rest of `script`.
        fn spawn_in(&mut self, lease: &LeaseCgroup, script: &str) -> u32 {
            let join = "for f in \"$@\"; do echo $$ > \"$f\" || exit 99; done; ";
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("{join}{script}"))
                .arg("sh")
                .args(lease.procs_files())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            self.children.push(child);
            self.children.last().map(Child::id).unwrap_or_default()
        }

        fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
            let child = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn");
            self.children.push(child);
            self.children.last().map(Child::id).unwrap_or_default()
        }

        /// Waits for child `pid`, killing it (and failing) after `secs`.
        fn wait(&mut self, pid: u32, secs: u64) -> (ExitStatus, String) {
            let child = self
                .children
                .iter_mut()
                .find(|c| c.id() == pid)
                .expect("our child");
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    let mut out = String::new();
                    if let Some(mut stdout) = child.stdout.take() {
                        let _ = stdout.read_to_string(&mut out);
                    }
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut out);
                    }
                    return (status, out);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("child {pid} still running after {secs} s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Real {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            for lease in &self.leases {
                if let Err(e) = lease.remove() {
                    eprintln!("cleanup: {e}");
                }
            }
            if let Err(e) = self.cgroups.remove_parent() {
                eprintln!("cleanup: {e}");
            }
        }
    }

    fn proc_cgroup(pid: u32) -> String {
        fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
    }

    #[test]
    fn real_attach_limits_and_remove() {
        let Some(mut real) = Real::new("attach") else {
            return;
        };
        let lease = real.create("lease-a", &limits());
        let pid = real.spawn("sleep", &["30"]);
        lease.attach(pid).expect("attach");
        assert!(lease.pids().contains(&pid), "{:?}", lease.pids());

        // /proc/<pid>/cgroup shows the group in each controller.
        let suffix = format!("rfx-test-{}-attach/lease-a", std::process::id());
        let membership = proc_cgroup(pid);
        let lines: Vec<&str> = membership.lines().collect();
        let needed: &[&str] = if real.cgroups.version() == 1 {
            &CONTROLLERS
        } else {
            &[""]
        };
        for c in needed {
            assert!(
                lines.iter().any(|l| {
                    let mut f = l.splitn(3, ':').skip(1);
                    let (cs, path) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                    cs.split(',').any(|x| x == *c) && path.ends_with(&suffix)
                }),
                "{c} not in the group: {membership}"
            );
        }
        // The limits are in force.
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["Cpus_allowed_list:", "0"])),
            "{status}"
        );
        let (memory, pids) = match &lease.dirs {
            Dirs::V1 { memory, pids, .. } => {
                (memory.join("memory.limit_in_bytes"), pids.join("pids.max"))
            }
            Dirs::V2(d) => (d.join("memory.max"), d.join("pids.max")),
        };
        assert_eq!(content(&memory).trim(), "67108864");
        assert_eq!(content(&pids).trim(), "16");

        // Creating the same name again clears it: the process is killed.
        let again = real.create("lease-a", &limits());
        let (status, _) = real.wait(pid, 5);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(again.pids().is_empty());

        // remove() kills what is left and the directories go; twice is fine.
        let pid = real.spawn("sleep", &["30"]);
        again.attach(pid).expect("attach");
        again.remove().expect("remove");
        let (status, _) = real.wait(pid, 5);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        for dir in again.dirs.all() {
            assert!(!dir.exists(), "{} still there", dir.display());
        }
        again.remove().expect("remove twice");
    }

    #[test]
    fn real_oom_kill() {
        let Some(mut real) = Real::new("oom") else {
            return;
        };
        let lease = real.create("lease-oom", &limits());
        assert_eq!(lease.oom_kills(), 0);
        // 200 MiB of bytes written (so touched) with a 64 MiB limit and no swap.
        let pid = real.spawn_in(
            &lease,
            "exec python3 -c 'b = b\"x\" * (200 << 20); print(\"survived\", len(b))'",
        );
        let (status, out) = real.wait(pid, 30);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?} {out}");
        assert!(lease.oom_kills() >= 1, "oom_kills {}", lease.oom_kills());
        if real.cgroups.version() == 1 {
            let peak = lease.memory_peak().expect("peak");
            assert!(peak > 32 * MIB && peak <= 64 * MIB, "peak {peak}");
        }
        lease.remove().expect("remove");
    }

    #[test]
    fn real_pids_max_caps_forks() {
        let Some(mut real) = Real::new("pids") else {
            return;
        };
        let lease = real.create("lease-pids", &limits());
        // dash exits (status 2, "Cannot fork") when a fork fails.
        let pid = real.spawn_in(
            &lease,
            "i=0; while [ $i -lt 64 ]; do sleep 20 >/dev/null 2>&1 & i=$((i+1)); echo $i; done",
        );
        let (status, out) = real.wait(pid, 20);
        let forks = out
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        assert!(!status.success(), "all 64 forks succeeded: {out}");
        assert!((1..=15).contains(&forks), "{forks} forks: {out}");
        let left = lease.pids();
        assert!(!left.is_empty() && left.len() <= 16, "{left:?}");
        lease.remove().expect("remove");
        assert!(lease.pids().is_empty());
        for p in left {
            assert!(
                !proc_cgroup(p).contains("lease-pids"),
                "{p} survived: {}",
                proc_cgroup(p)
            );
        }
    }
}
