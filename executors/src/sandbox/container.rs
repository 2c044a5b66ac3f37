//! Executors inside a container image, through a container runtime that is
//! already installed on the host: podman first; Docker and Apptainer behind
//! the same interface.
//!
//! A lease may ask for its executor to run in an image: the image gives the
//! tenant's functions their userland (libraries, tools, drivers' user-space
//! parts), while the executor itself is the host's own `rfx` binary,
//! bind-mounted read-only at [`EXECUTOR_IN_CONTAINER`] and run as the
//! container's entrypoint. That binary is dynamically linked (glibc,
//! libgcc_s; libibverbs with the `verbs` feature): the image must provide
//! compatible shared libraries and the dynamic loader
//! (`/lib64/ld-linux-x86-64.so.2` on x86-64). An image without them fails at
//! once, the runtime saying so on its stderr (podman 4.3 with runc:
//! `exec /rfx/rfx: no such file or directory` for a missing loader, exit
//! code 1; the loader's `error while loading shared libraries` for a missing
//! library, exit code 127).
//!
//! The container gets what the built-in sandbox ([`super::confine()`]) gives
//! an executor, with the runtime's primitives instead of rfx's own:
//!
//! - the lease's memory (no swap), cores (cpuset) and a pids limit, in a
//!   cgroup the runtime makes;
//! - its own uid and gid (`--user`), no capabilities, `no_new_privs`;
//! - a read-only root (the image), a private size-limited `/tmp` and
//!   `/dev/shm`, the runtime's minimal `/dev` plus the lease's devices
//!   (`/dev/infiniband/*`, GPUs), and the operator's extra read-only paths;
//! - its own pid, ipc and cgroup namespaces; the host's network namespace,
//!   which the executor needs (it binds the host's interfaces for tcp and
//!   RDMA, and shm peers meet on abstract Unix sockets, which belong to the
//!   network namespace);
//! - the environment the manager built and nothing else;
//! - the lease token on descriptor [`HANDOFF_FD`](super::handoff::HANDOFF_FD)
//!   exactly as without a container: the runtime passes the descriptor
//!   through (`podman run --preserve-fds 1`), never the environment or the
//!   command line. The handoff's confinement is `None` in this mode: the
//!   container is the confinement.
//!
//! What differs from the built-in sandbox: the syscall filter is the
//! runtime's default seccomp profile (podman's, not rfx's deny-list), there
//! are no Landlock rules, and the runtime's `/dev` also holds `tty`,
//! `ptmx`, `pts` and `mqueue`.
//!
//! # Using it (the executor manager)
//!
//! 1. Once: [`ContainerRuntime::detect`]; its error says what is missing.
//! 2. Per lease: [`ContainerRuntime::command`] gives the full command line;
//!    run it with a cleared environment plus
//!    [`ContainerRuntime::runtime_env`] (what the runtime itself needs, never
//!    the executor's variables, which travel as `--env` in the command), the
//!    handoff memfd at descriptor 3 ([`super::handoff::pass_to`]), stdin
//!    null, stdout and stderr piped. The executor's stderr (its address) and
//!    stdout (usage lines) are the runtime process's own: podman's
//!    `passthrough` log driver hands the executor the manager's pipes
//!    themselves, with no copy and no buffering in between.
//! 3. Stopping: SIGTERM to the runtime process is forwarded to the executor
//!    (podman's `--sig-proxy`, the default). The executor is pid 1 of its
//!    pid namespace, where a signal without a handler is ignored: it stops
//!    on SIGTERM because it waits for it (`--usage-every-ms`, as managed
//!    executors run). SIGKILL to the runtime process does **not** reach the
//!    container: after a kill, run [`ContainerRuntime::stop_command`] or
//!    rely on step 4.
//! 4. After the runtime process ended, always [`ContainerRuntime::reap`]:
//!    whether the OOM killer ended the executor, then the container is
//!    removed (`podman rm -f`, which also kills one still running).
//!
//! # Runtimes
//!
//! - **podman** (rootful; tested with Debian 12's podman 4.3.1, runc 1.1.5,
//!   conmon 2.1.6, cgroups v1 hybrid): see [`ContainerRuntime::command`] for
//!   every flag and why.
//! - **Docker** cannot pass a descriptor into a container (no
//!   `--preserve-fds`: the engine, not the client, starts the process), so
//!   the handoff cannot reach the executor. Until another channel exists,
//!   [`ContainerRuntime::check`] refuses Docker with
//!   [`ContainerError::NoHandoff`]; passing the token in the environment is
//!   not an option (see `docs/security.md`).
//! - **Apptainer** execs the container's process itself, so inherited
//!   descriptors pass through. Its command line is built and unit-tested,
//!   but it is **untested** against a real Apptainer (Debian has no
//!   package). Its limits need Apptainer ≥ 1.1 and cgroups it can write
//!   (root); the size of `/tmp` is Apptainer's session directory size
//!   (`sessiondir max size` in `apptainer.conf`), not per lease; it has no
//!   container to inspect afterwards, so [`ContainerRuntime::reap`] can only
//!   read the exit status.
//!
//! # Out of memory on cgroup v1 hosts
//!
//! `podman inspect`'s `State.OOMKilled` comes from conmon, which misses
//! OOM kills on cgroup v1 (observed with conmon 2.1.6 on kernel 6.18, hybrid
//! hierarchy: the kernel reports the kill, the flag stays `false`), and the
//! container's cgroup, which held the kernel's count, is gone once it
//! exited. [`Reaped::out_of_memory`] therefore also counts a SIGKILLed main
//! process (exit code 137): the executor is pid 1 of the container's pid
//! namespace, which no process inside it can SIGKILL, so such a kill comes
//! from the kernel (the OOM killer) or from outside (the manager's own stop,
//! which the manager knows about). An executor that calls `exit(137)`
//! itself is counted too, which only misnames the end of its own lease.
//!
//! # Cost
//!
//! On the 2-core test host (Debian 12, podman 4.3.1 with runc, overlay
//! storage, busy with other builds), `podman run` of this module's command
//! line with `/bin/busybox true` takes 0.23-0.28 s (median of 5, three
//! runs; about 0.19 s with podman's default flags), an executor says its
//! address 0.35-0.55 s after `podman run` starts, and [`ContainerRuntime::reap`]
//! (inspect and remove) takes about 0.1 s. Invocations themselves pay
//! nothing: the executor runs on the host's kernel, network and devices.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BASE_DEVICES;

/// Where the host's `rfx` binary appears inside the container (the program
/// the container runs).
pub const EXECUTOR_IN_CONTAINER: &str = "/rfx/rfx";

/// The label on every executor container, to find leftovers
/// (`podman ps -a --filter label=rfx.executor`).
pub const LABEL: &str = "rfx.executor=1";

/// Longest wait for `--version` and the engine check.
const VERSION_WAIT: Duration = Duration::from_secs(5);

/// Longest wait for each of `inspect` and `rm` when reaping (podman is slow
/// on a loaded host: it takes a lock and syncs its database).
const REAP_WAIT: Duration = Duration::from_secs(20);

/// Most bytes kept of a helper command's stdout or stderr.
const MAX_TOOL_OUTPUT: u64 = 64 << 10;

/// Smallest memory limit the runtimes accept (podman: 6 MB).
const MIN_MEMORY: u64 = 6 << 20;

/// Exit code of a container whose main process was killed by SIGKILL
/// (128 + 9).
const SIGKILL_EXIT: i32 = 137;

/// Where programs are looked for when this process has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The variables of this process that the runtime programs themselves may
/// need (where they keep their state and configuration), copied by
/// [`ContainerRuntime::runtime_env`]. Nothing else of the manager's
/// environment reaches the runtime, let alone the container.
const RUNTIME_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "APPTAINER_CONFIGDIR",
    "APPTAINER_CACHEDIR",
    "APPTAINER_TMPDIR",
];

/// Why a runtime cannot be used, or a container not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// Not a runtime name.
    #[error("unknown container runtime {0:?}: expected `podman`, `docker` or `apptainer`")]
    UnknownRuntime(String),
    /// The program is not on `PATH` (or not at the given path).
    #[error("{kind} is not installed (no {program} found): {hint}")]
    NotInstalled {
        /// The runtime.
        kind: RuntimeKind,
        /// What was looked for.
        program: String,
        /// How to install it.
        hint: &'static str,
    },
    /// The program is there but does not answer `--version`.
    #[error("{program} does not work: {why}")]
    NotWorking {
        /// The program.
        program: String,
        /// What happened.
        why: String,
    },
    /// Docker's client is installed but no engine answers it.
    #[error(
        "docker {version} is installed but no Docker engine answers it (start dockerd): {why}"
    )]
    NoEngine {
        /// The client's version.
        version: String,
        /// The client's complaint.
        why: String,
    },
    /// The runtime cannot pass the handoff descriptor into the container.
    #[error(
        "{kind} cannot pass the lease's handoff descriptor into a container \
         (the engine starts the process, not the client), and the lease token \
         never travels in the environment or on a command line: use podman"
    )]
    NoHandoff {
        /// The runtime.
        kind: RuntimeKind,
    },
    /// The spec cannot be turned into a safe command line.
    #[error("container spec refused: {0}")]
    InvalidSpec(String),
}

/// A container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// podman (rootful), the tested one.
    Podman,
    /// Docker: detected, but refused until it can pass the handoff.
    Docker,
    /// Apptainer (formerly Singularity): built, untested.
    Apptainer,
}

impl RuntimeKind {
    /// Every kind, in order of preference.
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Podman,
        RuntimeKind::Docker,
        RuntimeKind::Apptainer,
    ];

    /// The program's name, looked for on `PATH`.
    pub fn program_name(self) -> &'static str {
        match self {
            RuntimeKind::Podman => "podman",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Apptainer => "apptainer",
        }
    }

    /// How to install it (Debian).
    pub fn install_hint(self) -> &'static str {
        match self {
            RuntimeKind::Podman => "apt-get install podman runc uidmap",
            RuntimeKind::Docker => "apt-get install docker.io, and start dockerd",
            RuntimeKind::Apptainer => {
                "Debian has no package: install a release from https://apptainer.org"
            }
        }
    }
}

impl FromStr for RuntimeKind {
    type Err = ContainerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "podman" => Ok(RuntimeKind::Podman),
            "docker" => Ok(RuntimeKind::Docker),
            "apptainer" => Ok(RuntimeKind::Apptainer),
            _ => Err(ContainerError::UnknownRuntime(s.to_owned())),
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program_name())
    }
}

/// What one lease's container is made of. Nothing in it is secret: the
/// lease token travels on descriptor 3 only.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpec<'a> {
    /// The image (podman, Docker: a local image name such as
    /// `localhost/name:tag` or a digest, never pulled; Apptainer: a SIF
    /// file's path).
    pub image: &'a str,
    /// The container's name, unique on the host, e.g.
    /// `rfx-lease-42-<manager pid>` (letters, digits, `_.-`).
    pub name: &'a str,
    /// The host's `rfx` binary, bind-mounted read-only at
    /// [`EXECUTOR_IN_CONTAINER`] and run there.
    pub executor: &'a Path,
    /// The executor's arguments after the program (`executor`, `--handoff-fd
    /// 3`, the lease's flags).
    pub args: &'a [OsString],
    /// The executor's whole environment (cleared and allow-listed by the
    /// manager), passed one `--env K=V` each; nothing else is inherited.
    pub env: &'a [(OsString, OsString)],
    /// Memory limit, bytes (swap: none).
    pub memory_bytes: u64,
    /// The host CPUs the executor may run on (empty: all).
    pub cpus: &'a [u32],
    /// Most processes and threads in the container.
    pub pids_max: u64,
    /// Host device nodes to give the executor (`/dev/infiniband/*`, GPUs).
    /// Nodes the runtime always provides ([`BASE_DEVICES`]) and nodes that do
    /// not exist on the host are left out.
    pub devices: &'a [PathBuf],
    /// The uid the executor runs as (never 0).
    pub uid: u32,
    /// The gid the executor runs as (never 0); no supplementary groups.
    pub gid: u32,
    /// Size of the private `/tmp` and of `/dev/shm`, bytes each (their pages
    /// count against the memory limit).
    pub tmp_bytes: u64,
    /// Extra host paths visible read-only at the same place (the operator's
    /// `--sandbox-ro`; not the host's system directories, which the image
    /// replaces). Paths that do not exist are left out.
    pub ro_paths: &'a [PathBuf],
}

/// How a container ended, read after its runtime process exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reaped {
    /// The executor most likely ran out of memory: the runtime says the OOM
    /// killer ended it, or its main process was SIGKILLed (see the module's
    /// documentation on cgroup v1). A manager that stopped the container
    /// itself (a kill after the grace period) ignores this.
    pub out_of_memory: bool,
    /// The runtime's own verdict (`State.OOMKilled`), unreliable on cgroup
    /// v1 hosts.
    pub runtime_says_out_of_memory: bool,
    /// The container's exit code (128 + N for signal N), when it had
    /// ended before the reap.
    pub exit_code: Option<i32>,
    /// The container had not ended when reaped (its runtime process was
    /// killed, which does not stop the container): the removal killed it.
    pub was_running: bool,
    /// The container is gone (removed now, or never there).
    pub removed: bool,
}

/// A container runtime found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntime {
    kind: RuntimeKind,
    program: PathBuf,
    /// Flags before the subcommand (podman: `--runtime`, `--cgroup-manager`,
    /// `--storage-driver`, `--root`...), used for every invocation.
    global: Vec<OsString>,
    /// `--version`'s number, e.g. `4.3.1`.
    version: String,
    /// The executor's open-files limit (soft, hard).
    nofile: (u64, u64),
}

impl ContainerRuntime {
    /// Finds `kind`'s program on `PATH` and checks that it answers
    /// `--version` within a few seconds (Docker: that an engine answers
    /// too). The error says what is missing, e.g. `podman is not installed
    /// (no podman found): apt-get install podman runc uidmap`.
    pub fn detect(kind: RuntimeKind) -> Result<ContainerRuntime, ContainerError> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        match find_program(kind.program_name(), &path) {
            Some(program) => ContainerRuntime::at(kind, program),
            None => Err(ContainerError::NotInstalled {
                kind,
                program: kind.program_name().to_owned(),
                hint: kind.install_hint(),
            }),
        }
    }

    /// As [`detect`](Self::detect), with the program at `program`.
    pub fn at(kind: RuntimeKind, program: PathBuf) -> Result<ContainerRuntime, ContainerError> {
        if !is_executable(&program) {
            return Err(ContainerError::NotInstalled {
                kind,
                program: program.display().to_string(),
                hint: kind.install_hint(),
            });
        }
        let env = runtime_env();
        let out = run_tool(&program, &["--version".into()], &env, VERSION_WAIT).map_err(|why| {
            ContainerError::NotWorking {
                program: program.display().to_string(),
                why,
            }
        })?;
        if !out.success() {
            return Err(ContainerError::NotWorking {
                program: program.display().to_string(),
                why: format!("`--version` failed: {}", out.complaint()),
            });
        }
        let version = parse_version(&out.stdout).unwrap_or_else(|| out.stdout.trim().to_owned());
        if kind == RuntimeKind::Docker {
            // The client answers --version alone; containers need dockerd.
            let args: Vec<OsString> = vec![
                "version".into(),
                "--format".into(),
                "{{.Server.Version}}".into(),
            ];
            let engine = run_tool(&program, &args, &env, VERSION_WAIT);
            let why = match engine {
                Ok(o) if o.success() => None,
                Ok(o) => Some(o.complaint()),
                Err(e) => Some(e),
            };
            if let Some(why) = why {
                return Err(ContainerError::NoEngine { version, why });
            }
        }
        let rt = ContainerRuntime {
            kind,
            program,
            global: default_global_args(kind),
            version,
            nofile: own_nofile(),
        };
        tracing::debug!(kind = %rt.kind, program = %rt.program.display(), version = %rt.version, global = ?rt.global, "container runtime found");
        Ok(rt)
    }

    /// Replaces the flags given before every subcommand. podman's default:
    /// `--cgroup-manager cgroupfs` (the manager writes cgroups directly,
    /// needing no systemd D-Bus session), plus `--runtime runc` on hosts
    /// whose cgroups are not unified v2 (crun refuses hybrid hierarchies).
    /// The storage driver is the host's (`storage.conf`): `overlay` shares
    /// an image's layers between containers, while `vfs` copies the whole
    /// image per container; add `--storage-driver vfs` only where overlay
    /// cannot work (a root on overlayfs), and use the same flags for every
    /// podman command of that store (import, rmi).
    pub fn with_global_args(mut self, args: Vec<OsString>) -> ContainerRuntime {
        self.global = args;
        self
    }

    /// Sets the executor's open-files limit (soft, hard); by default the
    /// manager's own, as an executor outside a container inherits it (a
    /// runtime without `CAP_SYS_RESOURCE` cannot go above it).
    pub fn with_nofile(mut self, soft: u64, hard: u64) -> ContainerRuntime {
        self.nofile = (soft.min(hard), hard);
        self
    }

    /// Which runtime.
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The runtime's program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The flags given before every subcommand.
    pub fn global_args(&self) -> &[OsString] {
        &self.global
    }

    /// The version `--version` reported, e.g. `4.3.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the lease's handoff descriptor can reach the executor (not
    /// with Docker).
    pub fn supports_handoff(&self) -> bool {
        self.kind != RuntimeKind::Docker
    }

    /// The environment to run the runtime's program with (after clearing
    /// the manager's): `PATH`, `HOME` and the runtimes' own configuration
    /// variables, where this process has them. Never the executor's
    /// variables nor any secret: those are not in the list.
    pub fn runtime_env(&self) -> Vec<(OsString, OsString)> {
        runtime_env()
    }

    /// Whether `spec` can run with this runtime: the handoff can pass, and
    /// every name and path is safe to put on its command line.
    pub fn check(&self, spec: &ContainerSpec<'_>) -> Result<(), ContainerError> {
        if !self.supports_handoff() {
            return Err(ContainerError::NoHandoff { kind: self.kind });
        }
        validate(spec)?;
        if !spec.executor.is_file() {
            return Err(ContainerError::InvalidSpec(format!(
                "the executor {} is not a file",
                spec.executor.display()
            )));
        }
        Ok(())
    }

    /// The full command line (program first) that runs the executor of one
    /// lease in `spec.image`, after [`check`](Self::check).
    ///
    /// podman, every flag and why:
    ///
    /// - `run --rm=false`: the stopped container stays until
    ///   [`reap`](Self::reap) has read how it ended, then is removed;
    /// - `--name NAME`, `--label rfx.executor=1`: for `stop`, `inspect`, `rm`
    ///   and to find leftovers;
    /// - `--pull never`: local images only; no registry traffic, no waiting
    ///   on one, at lease start;
    /// - `--network host`: the executor binds the host's interfaces (tcp,
    ///   RDMA), and shm peers meet on abstract Unix sockets, which live in
    ///   the network namespace;
    /// - `--pid private`, `--ipc private`, `--cgroupns private`: it sees its
    ///   own processes, SysV IPC and cgroup tree only;
    /// - `--memory N --memory-swap N`: the lease's memory, no swap on top;
    /// - `--cpuset-cpus LIST`: the lease's cores;
    /// - `--pids-limit N`, `--ulimit nproc=N:N`: a fork bomb stops there (the
    ///   uid is the lease's own, so the per-uid count is the container's);
    /// - `--ulimit nofile=S:H`: explicit, since podman's default raises it
    ///   above what a runtime without `CAP_SYS_RESOURCE` may set;
    /// - `--user UID:GID`: the lease's uid and gid, no supplementary groups;
    /// - `--cap-drop all`, `--security-opt no-new-privileges`: no
    ///   capabilities, none gained through set-uid files;
    /// - `--read-only --read-only-tmpfs=false`: the image is read-only, and
    ///   podman adds no writable `/run` or `/var/tmp`;
    /// - `--tmpfs /tmp:rw,size=N,mode=1777,nosuid,nodev`, `--shm-size N`: the
    ///   only writable places, sized (runc 1.1 gives the tmpfs the mode of
    ///   the image's `/tmp`, so the image should have it 1777);
    /// - `--device D`: each of the lease's devices;
    /// - `-v EXE:/rfx/rfx:ro`, `-v P:P:ro`: the executor and the extra
    ///   read-only paths;
    /// - `--preserve-fds 1`: descriptor 3, the handoff, passes into the
    ///   container as descriptor 3;
    /// - `--log-driver passthrough`: the executor writes into the runtime's
    ///   own stdout and stderr (the manager's pipes), unbuffered and
    ///   uncopied;
    /// - `--sig-proxy=true`: SIGTERM to the podman process reaches the
    ///   executor;
    /// - `--unsetenv-all`, `--http-proxy=false`, `--env K=V`: exactly the
    ///   manager's variables; none from the image, `containers.conf` or the
    ///   host's proxy settings;
    /// - `--workdir /`, `--entrypoint /rfx/rfx`: the program, whatever the
    ///   image declares;
    /// - `IMAGE ARGS...`.
    pub fn command(&self, spec: &ContainerSpec<'_>) -> Result<Vec<OsString>, ContainerError> {
        self.check(spec)?;
        Ok(self.argv(spec, &|p| p.exists()))
    }

    /// The command line for `spec`, keeping only the devices and read-only
    /// paths for which `exists` holds. No checks.
    fn argv(&self, spec: &ContainerSpec<'_>, exists: &dyn Fn(&Path) -> bool) -> Vec<OsString> {
        let devices: Vec<&PathBuf> = spec
            .devices
            .iter()
            .filter(|d| {
                if BASE_DEVICES.iter().any(|b| Path::new(b) == d.as_path()) {
                    return false; // the runtime's /dev has it
                }
                let there = exists(d);
                if !there {
                    tracing::warn!(device = %d.display(), container = spec.name, "device not on this host; left out");
                }
                there
            })
            .collect();
        let ro: Vec<&PathBuf> = spec
            .ro_paths
            .iter()
            .filter(|p| {
                let there = exists(p);
                if !there {
                    tracing::debug!(path = %p.display(), container = spec.name, "read-only path not on this host; left out");
                }
                there
            })
            .collect();
        let mut a = Args::new(&self.program);
        a.all(&self.global);
        match self.kind {
            RuntimeKind::Podman | RuntimeKind::Docker => {
                let podman = self.kind == RuntimeKind::Podman;
                a.one("run");
                a.one("--rm=false");
                a.two("--name", spec.name);
                a.two("--label", LABEL);
                a.two("--pull", "never");
                a.two("--network", "host");
                if podman {
                    // Docker's default; it has no `private` value.
                    a.two("--pid", "private");
                }
                a.two("--ipc", "private");
                a.two("--cgroupns", "private");
                a.limits(spec);
                a.two(
                    "--ulimit",
                    format!("nofile={}:{}", self.nofile.0, self.nofile.1),
                );
                a.two(
                    "--ulimit",
                    format!("nproc={}:{}", spec.pids_max, spec.pids_max),
                );
                a.two("--user", format!("{}:{}", spec.uid, spec.gid));
                a.two("--cap-drop", "all");
                a.two("--security-opt", "no-new-privileges");
                a.one("--read-only");
                if podman {
                    a.one("--read-only-tmpfs=false");
                }
                a.two(
                    "--tmpfs",
                    format!("/tmp:rw,size={},mode=1777,nosuid,nodev", spec.tmp_bytes),
                );
                a.two("--shm-size", spec.tmp_bytes.to_string());
                for d in &devices {
                    a.two("--device", d.as_os_str());
                }
                a.two("-v", bind(spec.executor, Path::new(EXECUTOR_IN_CONTAINER)));
                for p in &ro {
                    a.two("-v", bind(p, p));
                }
                if podman {
                    a.two("--preserve-fds", "1");
                    a.two("--log-driver", "passthrough");
                    a.one("--unsetenv-all");
                    a.one("--http-proxy=false");
                }
                a.one("--sig-proxy=true");
                for (k, v) in spec.env {
                    a.two("--env", key_value(k, v));
                }
                a.two("--workdir", "/");
                a.two("--entrypoint", EXECUTOR_IN_CONTAINER);
                a.one(spec.image);
            }
            RuntimeKind::Apptainer => {
                a.one("exec");
                // --contain (minimal /dev, empty /tmp and home), --cleanenv,
                // --ipc, --pid; the network namespace stays the host's.
                a.one("--containall");
                a.one("--no-home");
                a.one("--no-privs");
                // Root-only: run as the lease's ids.
                a.two("--security", format!("uid:{}", spec.uid));
                a.two("--security", format!("gid:{}", spec.gid));
                a.limits(spec);
                a.two(
                    "--bind",
                    bind(spec.executor, Path::new(EXECUTOR_IN_CONTAINER)),
                );
                for p in &ro {
                    a.two("--bind", bind(p, p));
                }
                for d in &devices {
                    a.two("--bind", d.as_os_str());
                }
                for (k, v) in spec.env {
                    a.two("--env", key_value(k, v));
                }
                a.two("--pwd", "/");
                a.one(spec.image);
                a.one(EXECUTOR_IN_CONTAINER);
            }
        }
        a.all(spec.args);
        a.0
    }

    /// The command that stops the running container `name`: SIGTERM, then
    /// SIGKILL after `grace` (rounded up to whole seconds); a zero grace
    /// kills at once. `None` for Apptainer, whose containers have no name:
    /// signal the runtime process itself, which forwards the signal.
    pub fn stop_command(&self, name: &str, grace: Duration) -> Option<Vec<OsString>> {
        if self.kind == RuntimeKind::Apptainer {
            return None;
        }
        let mut a = Args::new(&self.program);
        a.all(&self.global);
        if grace.is_zero() {
            a.one("kill");
            a.two("--signal", "KILL");
        } else {
            let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
            a.one("stop");
            a.two("-t", secs.to_string());
        }
        a.one(name);
        Some(a.0)
    }

    /// After the runtime process of container `name` exited: how it ended
    /// (`podman inspect`), then the container is removed (`podman rm -f`,
    /// which kills it first if it still runs). Blocks for up to about 40
    /// seconds on a stuck runtime (call it from `spawn_blocking` in async
    /// code); never panics; failures are logged and leave `removed` false.
    pub fn reap(&self, name: &str) -> Reaped {
        let mut reaped = Reaped::default();
        if self.kind == RuntimeKind::Apptainer {
            // Nothing to inspect or remove: the exit status is the runtime
            // process's own.
            reaped.removed = true;
            return reaped;
        }
        let env = runtime_env();
        let mut inspect: Vec<OsString> = self.global.clone();
        inspect.extend([
            "inspect".into(),
            "--format".into(),
            "{{.State.OOMKilled}} {{.State.ExitCode}} {{.State.Status}}".into(),
            name.into(),
        ]);
        let mut gone = false;
        match run_tool(&self.program, &inspect, &env, REAP_WAIT) {
            Ok(o) if o.success() => match parse_inspect(&o.stdout) {
                Some((oom, code, ended)) => {
                    reaped.runtime_says_out_of_memory = oom;
                    reaped.exit_code = ended.then_some(code);
                    reaped.was_running = !ended;
                }
                None => tracing::warn!(
                    container = name,
                    "unexpected inspect output {:?}",
                    o.stdout.trim()
                ),
            },
            Ok(o) => {
                let why = o.complaint();
                gone = why.to_ascii_lowercase().contains("no such");
                if !gone {
                    tracing::warn!(container = name, "cannot inspect the container: {why}");
                }
            }
            Err(e) => tracing::warn!(container = name, "cannot inspect the container: {e}"),
        }
        reaped.out_of_memory =
            reaped.runtime_says_out_of_memory || reaped.exit_code == Some(SIGKILL_EXIT);
        if gone {
            reaped.removed = true;
            return reaped;
        }
        let mut rm: Vec<OsString> = self.global.clone();
        rm.extend(["rm".into(), "-f".into()]);
        if self.kind == RuntimeKind::Podman {
            // Kill a container still running at once (podman's default
            // waits its stop timeout, 10 s, first).
            rm.extend(["--time".into(), "0".into()]);
        }
        rm.push(name.into());
        match run_tool(&self.program, &rm, &env, REAP_WAIT) {
            Ok(o) if o.success() => reaped.removed = true,
            Ok(o) => {
                let why = o.complaint();
                reaped.removed = why.to_ascii_lowercase().contains("no such");
                if !reaped.removed {
                    tracing::warn!(container = name, "cannot remove the container: {why}");
                }
            }
            Err(e) => tracing::warn!(container = name, "cannot remove the container: {e}"),
        }
        tracing::debug!(container = name, ?reaped, "container reaped");
        reaped
    }
}

/// Builds a command line.
struct Args(Vec<OsString>);

impl Args {
    fn new(program: &Path) -> Args {
        Args(vec![program.as_os_str().to_owned()])
    }
    fn one(&mut self, a: impl Into<OsString>) {
        self.0.push(a.into());
    }
    fn two(&mut self, flag: &str, value: impl Into<OsString>) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }
    fn all(&mut self, args: &[OsString]) {
        self.0.extend(args.iter().cloned());
    }
    /// The lease's limits, spelled alike by podman, Docker and Apptainer:
    /// memory with no swap beyond it, cores, processes.
    fn limits(&mut self, spec: &ContainerSpec<'_>) {
        self.two("--memory", spec.memory_bytes.to_string());
        self.two("--memory-swap", spec.memory_bytes.to_string());
        if !spec.cpus.is_empty() {
            self.two("--cpuset-cpus", cpu_list(spec.cpus));
        }
        self.two("--pids-limit", spec.pids_max.to_string());
    }
}

/// `SRC:DST:ro` (podman, Docker, Apptainer alike).
fn bind(src: &Path, dst: &Path) -> OsString {
    let mut s = src.as_os_str().to_owned();
    s.push(":");
    s.push(dst.as_os_str());
    s.push(":ro");
    s
}

/// `K=V`.
fn key_value(k: &OsStr, v: &OsStr) -> OsString {
    let mut s = k.to_owned();
    s.push("=");
    s.push(v);
    s
}

/// `[0, 1, 5]` as `0,1,5`.
fn cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses what would not be safe or valid on a runtime's command line: a
/// value read as a flag, a path with the bind syntax's separators, an
/// environment entry that would import the runtime's own variables.
fn validate(spec: &ContainerSpec<'_>) -> Result<(), ContainerError> {
    let bad = |why: String| Err(ContainerError::InvalidSpec(why));
    let name_ok =
        spec.name.len() <= 128
            && spec.name.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-'))
            });
    if spec.name.is_empty() || !name_ok {
        return bad(format!(
            "container name {:?}: expected letters, digits and `_.-`, not first",
            spec.name
        ));
    }
    let image_ok = spec.image.len() <= 512
        && !spec.image.starts_with('-')
        && spec
            .image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/:@+-".contains(&b));
    if spec.image.is_empty() || !image_ok {
        return bad(format!(
            "image {:?}: expected a name such as `localhost/name:tag`, a digest or a path",
            spec.image
        ));
    }
    let paths = std::iter::once(spec.executor)
        .chain(spec.ro_paths.iter().map(PathBuf::as_path))
        .chain(spec.devices.iter().map(PathBuf::as_path));
    for p in paths {
        let s = p.as_os_str().as_encoded_bytes();
        if !p.is_absolute() || s.contains(&b':') || s.contains(&b',') || s.contains(&0) {
            return bad(format!(
                "path {}: must be absolute, without `:` or `,`",
                p.display()
            ));
        }
    }
    for (k, v) in spec.env {
        let key = k.as_encoded_bytes();
        let key_ok = key
            .iter()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || *b == b'_' || (i > 0 && b.is_ascii_digit()));
        if key.is_empty() || !key_ok {
            return bad(format!("environment variable name {k:?}"));
        }
        if v.as_encoded_bytes().contains(&0) {
            return bad(format!("environment variable {k:?} holds a NUL byte"));
        }
    }
    if spec.uid == 0 || spec.gid == 0 {
        return bad("executors never run as root (uid or gid 0)".to_owned());
    }
    if spec.memory_bytes < MIN_MEMORY {
        return bad(format!(
            "memory limit {} bytes: at least {MIN_MEMORY}",
            spec.memory_bytes
        ));
    }
    if spec.pids_max == 0 || spec.tmp_bytes == 0 {
        return bad("the pids limit and the /tmp size must be positive".to_owned());
    }
    Ok(())
}

/// podman's flags for this host (see [`ContainerRuntime::with_global_args`]).
fn default_global_args(kind: RuntimeKind) -> Vec<OsString> {
    if kind != RuntimeKind::Podman {
        return Vec::new();
    }
    let mut g: Vec<OsString> = vec!["--cgroup-manager".into(), "cgroupfs".into()];
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // cgroups v1 or hybrid: crun refuses them ("cgroups in hybrid mode
        // not supported"); runc handles both.
        g.extend(["--runtime".into(), "runc".into()]);
    }
    g
}

/// This process's open-files limit (soft, hard), capped at 2^20; 1024 if
/// unreadable.
fn own_nofile() -> (u64, u64) {
    const CAP: u64 = 1 << 20;
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let hard = hard.min(CAP);
            (soft.min(hard), hard)
        }
        Err(_) => (1024, 1024),
    }
}

/// The variables of [`RUNTIME_ENV`] this process has; `PATH` always.
fn runtime_env() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = RUNTIME_ENV
        .iter()
        .filter_map(|k| Some((OsString::from(k), std::env::var_os(k)?)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// `name` in the directories of `path` (a `PATH` value).
fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first word starting with a digit: `podman version 4.3.1` -> `4.3.1`,
/// `Docker version 28.2.2, build e6534b4` -> `28.2.2`.
fn parse_version(s: &str) -> Option<String> {
    s.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| w.trim_end_matches(',').to_owned())
}

/// `true 137 exited` -> `(true, 137, true)`: the OOM flag, the exit code,
/// and whether the container had ended (podman: `exited` or `stopped`;
/// Docker: `exited` or `dead`; anything else, such as `running` or podman's
/// `initialized` when podman was killed as it started the container, has
/// not).
fn parse_inspect(s: &str) -> Option<(bool, i32, bool)> {
    let mut words = s.split_whitespace();
    let oom = words.next()?.parse().ok()?;
    let code = words.next()?.parse().ok()?;
    let ended = matches!(words.next()?, "exited" | "stopped" | "dead");
    Some((oom, code, ended))
}

/// What a helper command said.
#[derive(Debug)]
struct ToolOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ToolOutput {
    fn success(&self) -> bool {
        self.status.success()
    }

    /// The first line of stderr (or the status).
    fn complaint(&self) -> String {
        let line = self
            .stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if line.is_empty() {
            format!("{} with no message", self.status)
        } else {
            line.to_owned()
        }
    }
}

/// Runs `program args` with exactly `env`, for at most `wait`; its output
/// is read by two threads, so neither a chatty program nor a grandchild
/// keeping the pipes open can make this wait longer than `wait` and a
/// moment.
fn run_tool(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    wait: Duration,
) -> Result<ToolOutput, String> {
    let deadline = Instant::now() + wait;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.take(MAX_TOOL_OUTPUT).read_to_end(&mut buf);
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            });
        }
        rx
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                // Reaped if it dies promptly; otherwise left to the OS.
                for _ in 0..100 {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Err(format!(
                    "{} gave no answer within {wait:?}",
                    program.display()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {}: {e}", program.display())),
        }
    };
    let grace = Duration::from_millis(500);
    Ok(ToolOutput {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn runtime(kind: RuntimeKind) -> ContainerRuntime {
        let global = if kind == RuntimeKind::Podman {
            os(&["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        } else {
            Vec::new()
        };
        ContainerRuntime {
            kind,
            program: PathBuf::from(format!("/usr/bin/{kind}")),
            global,
            version: "1.0".into(),
            nofile: (4096, 8192),
        }
    }

    struct Fixed {
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        devices: Vec<PathBuf>,
        ro: Vec<PathBuf>,
    }

    fn fixed() -> Fixed {
        Fixed {
            args: os(&["--transport", "tcp", "executor", "--handoff-fd", "3"]),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), "/tmp".into()),
                ("RFX_LEASE_ID".into(), "42".into()),
            ],
            devices: vec![
                "/dev/null".into(),
                "/dev/infiniband/uverbs0".into(),
                "/dev/nvidia0".into(),
            ],
            ro: vec!["/srv/functions".into()],
        }
    }

    fn spec(f: &Fixed) -> ContainerSpec<'_> {
        ContainerSpec {
            image: "localhost/tenant-image:1",
            name: "rfx-lease-42-1000",
            executor: Path::new("/usr/local/bin/rfx"),
            args: &f.args,
            env: &f.env,
            memory_bytes: 64 << 20,
            cpus: &[2, 3],
            pids_max: 128,
            devices: &f.devices,
            uid: 60001,
            gid: 60001,
            tmp_bytes: 16 << 20,
            ro_paths: &f.ro,
        }
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn podman_argv_has_every_limit_device_bind_and_variable() {
        let f = fixed();
        let rt = runtime(RuntimeKind::Podman);
        let argv = strings(&rt.argv(&spec(&f), &|_| true));
        let want = [
            "/usr/bin/podman",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "run",
            "--rm=false",
            "--name",
            "rfx-lease-42-1000",
            "--label",
            "rfx.executor=1",
            "--pull",
            "never",
            "--network",
            "host",
            "--pid",
            "private",
            "--ipc",
            "private",
            "--cgroupns",
            "private",
            "--memory",
            "67108864",
            "--memory-swap",
            "67108864",
            "--cpuset-cpus",
            "2,3",
            "--pids-limit",
            "128",
            "--ulimit",
            "nofile=4096:8192",
            "--ulimit",
            "nproc=128:128",
            "--user",
            "60001:60001",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs",
            "/tmp:rw,size=16777216,mode=1777,nosuid,nodev",
            "--shm-size",
            "16777216",
            "--device",
            "/dev/infiniband/uverbs0",
            "--device",
            "/dev/nvidia0",
            "-v",
            "/usr/local/bin/rfx:/rfx/rfx:ro",
            "-v",
            "/srv/functions:/srv/functions:ro",
            "--preserve-fds",
            "1",
            "--log-driver",
            "passthrough",
            "--unsetenv-all",
            "--http-proxy=false",
            "--sig-proxy=true",
            "--env",
            "PATH=/usr/bin:/bin",
            "--env",
            "HOME=/tmp",
            "--env",
            "RFX_LEASE_ID=42",
            "--workdir",
            "/",
            "--entrypoint",
            "/rfx/rfx",
            "localhost/tenant-image:1",
            "--transport",
            "tcp",
            "executor",
            "--handoff-fd",
            "3",
        ];
        assert_eq!(argv, want);
        // The base devices are the runtime's own; missing ones are left out.
        let argv = strings(&rt.argv(&spec(&f), &|p| p != Path::new("/dev/nvidia0")));
        assert_eq!(values(&argv, "--device"), ["/dev/infiniband/uverbs0"]);
    }

    #[test]
    fn nothing_is_inherited_and_no_token_is_passed() {
        let f = fixed();
        for kind in RuntimeKind::ALL {
            let argv = strings(&runtime(kind).argv(&spec(&f), &|_| true));
            // Exactly the spec's variables, each as K=V (a bare `--env K`
            // would copy the runtime's own variable).
            assert_eq!(
                values(&argv, "--env"),
                ["PATH=/usr/bin:/bin", "HOME=/tmp", "RFX_LEASE_ID=42"],
                "{kind}"
            );
            assert!(!argv.iter().any(|a| a.starts_with("--env-host")
                || a.starts_with("--env-file")
                || a.contains("TOKEN")
                || a.contains("CLUSTER_KEY")));
            match kind {
                RuntimeKind::Podman => {
                    assert!(argv.contains(&"--unsetenv-all".to_owned()));
                    assert!(argv.contains(&"--http-proxy=false".to_owned()));
                }
                RuntimeKind::Apptainer => assert!(argv.contains(&"--containall".to_owned())),
                RuntimeKind::Docker => {}
            }
        }
    }

    #[test]
    fn docker_argv_has_the_same_shape_but_docker_is_refused() {
        let f = fixed();
        let rt = runtime(RuntimeKind::Docker);
        let argv = strings(&rt.argv(&spec(&f), &|_| true));
        assert_eq!(argv[..2], ["/usr/bin/docker", "run"]);
        for (flag, value) in [
            ("--memory", "67108864"),
            ("--memory-swap", "67108864"),
            ("--cpuset-cpus", "2,3"),
            ("--pids-limit", "128"),
            ("--user", "60001:60001"),
            ("--network", "host"),
            ("--cap-drop", "all"),
            ("--shm-size", "16777216"),
            ("--entrypoint", "/rfx/rfx"),
        ] {
            assert_eq!(values(&argv, flag), [value], "{flag}");
        }
        assert_eq!(
            values(&argv, "--device"),
            ["/dev/infiniband/uverbs0", "/dev/nvidia0"]
        );
        // No podman-only flags.
        for podman_only in ["--preserve-fds", "--log-driver", "--pid"] {
            assert!(!argv.contains(&podman_only.to_owned()), "{podman_only}");
        }
        assert!(!rt.supports_handoff());
        let e = rt.check(&spec(&f)).unwrap_err();
        assert!(matches!(e, ContainerError::NoHandoff { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("docker cannot pass the lease's handoff descriptor"),
            "{msg}"
        );
        assert!(rt.command(&spec(&f)).is_err());
        assert_eq!(
            strings(&rt.stop_command("c1", Duration::from_millis(1500)).unwrap()),
            ["/usr/bin/docker", "stop", "-t", "2", "c1"]
        );
    }

    #[test]
    fn apptainer_argv() {
        let f = fixed();
        let rt = runtime(RuntimeKind::Apptainer);
        assert!(rt.supports_handoff());
        let mut s = spec(&f);
        s.image = "/images/tenant.sif";
        let argv = strings(&rt.argv(&s, &|_| true));
        let want = [
            "/usr/bin/apptainer",
            "exec",
            "--containall",
            "--no-home",
            "--no-privs",
            "--security",
            "uid:60001",
            "--security",
            "gid:60001",
            "--memory",
            "67108864",
            "--memory-swap",
            "67108864",
            "--cpuset-cpus",
            "2,3",
            "--pids-limit",
            "128",
            "--bind",
            "/usr/local/bin/rfx:/rfx/rfx:ro",
            "--bind",
            "/srv/functions:/srv/functions:ro",
            "--bind",
            "/dev/infiniband/uverbs0",
            "--bind",
            "/dev/nvidia0",
            "--env",
            "PATH=/usr/bin:/bin",
            "--env",
            "HOME=/tmp",
            "--env",
            "RFX_LEASE_ID=42",
            "--pwd",
            "/",
            "/images/tenant.sif",
            "/rfx/rfx",
            "--transport",
            "tcp",
            "executor",
            "--handoff-fd",
            "3",
        ];
        assert_eq!(argv, want);
        assert!(rt.stop_command("x", Duration::from_secs(1)).is_none());
        let r = rt.reap("x");
        assert!(r.removed && !r.out_of_memory);
    }

    #[test]
    fn stop_commands() {
        let rt = runtime(RuntimeKind::Podman);
        assert_eq!(
            strings(&rt.stop_command("c1", Duration::from_secs(5)).unwrap()),
            [
                "/usr/bin/podman",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "stop",
                "-t",
                "5",
                "c1"
            ]
        );
        assert_eq!(
            strings(&rt.stop_command("c1", Duration::ZERO).unwrap())[5..],
            ["kill", "--signal", "KILL", "c1"]
        );
    }

    #[test]
    fn unsafe_specs_are_refused() {
        let f = fixed();
        let rt = runtime(RuntimeKind::Podman);
        let env = vec![("A=B".into(), "x".into())];
        let star = vec![("FOO*".into(), "x".into())];
        let colon = vec![PathBuf::from("/srv/a:b")];
        let relative = vec![PathBuf::from("srv")];
        let cases: Vec<(ContainerSpec<'_>, &str)> = vec![
            (
                ContainerSpec {
                    image: "--privileged",
                    ..spec(&f)
                },
                "image",
            ),
            (
                ContainerSpec {
                    image: "",
                    ..spec(&f)
                },
                "image",
            ),
            (
                ContainerSpec {
                    image: "a b",
                    ..spec(&f)
                },
                "image",
            ),
            (
                ContainerSpec {
                    name: "-x",
                    ..spec(&f)
                },
                "container name",
            ),
            (
                ContainerSpec {
                    name: "a/b",
                    ..spec(&f)
                },
                "container name",
            ),
            (
                ContainerSpec {
                    env: &env,
                    ..spec(&f)
                },
                "environment variable name",
            ),
            (
                ContainerSpec {
                    env: &star,
                    ..spec(&f)
                },
                "environment variable name",
            ),
            (
                ContainerSpec {
                    ro_paths: &colon,
                    ..spec(&f)
                },
                "without `:`",
            ),
            (
                ContainerSpec {
                    devices: &relative,
                    ..spec(&f)
                },
                "must be absolute",
            ),
            (ContainerSpec { uid: 0, ..spec(&f) }, "never run as root"),
            (ContainerSpec { gid: 0, ..spec(&f) }, "never run as root"),
            (
                ContainerSpec {
                    memory_bytes: 1 << 20,
                    ..spec(&f)
                },
                "memory limit",
            ),
            (
                ContainerSpec {
                    pids_max: 0,
                    ..spec(&f)
                },
                "pids limit",
            ),
        ];
        for (s, want) in cases {
            let e = rt.check(&s).unwrap_err().to_string();
            assert!(e.contains(want), "{s:?}: {e}");
        }
        // A well-formed spec whose executor is not a file.
        let e = rt.check(&spec(&f)).unwrap_err().to_string();
        assert!(e.contains("/usr/local/bin/rfx is not a file"), "{e}");
    }

    #[test]
    fn runtime_kinds_parse_and_print() {
        for kind in RuntimeKind::ALL {
            assert_eq!(kind.to_string().parse::<RuntimeKind>().unwrap(), kind);
        }
        assert_eq!(
            "podman".parse::<RuntimeKind>().unwrap(),
            RuntimeKind::Podman
        );
        let e = "lxc".parse::<RuntimeKind>().unwrap_err().to_string();
        assert!(e.contains("unknown container runtime \"lxc\""), "{e}");
    }

    #[test]
    fn a_missing_runtime_is_a_clear_error() {
        assert_eq!(
            find_program("podman", OsStr::new("/nonexistent:/also-not")),
            None
        );
        let e = ContainerRuntime::at(RuntimeKind::Podman, "/nonexistent/podman".into())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "podman is not installed (no /nonexistent/podman found): apt-get install podman runc uidmap"
        );
        // Apptainer has no Debian package: where it is absent, detect says so.
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        if find_program("apptainer", &path).is_none() {
            let e = ContainerRuntime::detect(RuntimeKind::Apptainer)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("apptainer is not installed"), "{e}");
        }
        // A program that does not answer --version is not a runtime.
        let e = ContainerRuntime::at(RuntimeKind::Podman, "/bin/false".into())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/bin/false does not work"), "{e}");
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_version("podman version 4.3.1\n").unwrap(), "4.3.1");
        assert_eq!(
            parse_version("Docker version 28.2.2, build e6534b4").unwrap(),
            "28.2.2"
        );
        assert_eq!(parse_version("apptainer version 1.3.4").unwrap(), "1.3.4");
        assert_eq!(
            parse_inspect("false 137 exited\n"),
            Some((false, 137, true))
        );
        assert_eq!(parse_inspect("true 0 stopped"), Some((true, 0, true)));
        assert_eq!(
            parse_inspect("false 0 initialized"),
            Some((false, 0, false))
        );
        assert_eq!(parse_inspect("false 0 running"), Some((false, 0, false)));
        assert_eq!(parse_inspect("garbage"), None);
        assert_eq!(parse_inspect("true 1"), None);
        assert_eq!(cpu_list(&[0, 4, 5]), "0,4,5");
        let env = runtime_env();
        assert!(env.iter().any(|(k, _)| k == "PATH"));
        assert!(env.iter().all(|(k, _)| RUNTIME_ENV.iter().any(|r| k == *r)));
        let (soft, hard) = own_nofile();
        assert!(soft <= hard && hard > 0);
    }

    #[test]
    fn a_slow_tool_is_given_up_on_time() {
        let t = Instant::now();
        let e = run_tool(
            Path::new("/bin/sleep"),
            &os(&["10"]),
            &runtime_env(),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        let out = run_tool(
            Path::new("/bin/sh"),
            &os(&["-c", "echo out; echo err >&2; exit 3"]),
            &runtime_env(),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!out.success());
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.complaint(), "err");
    }
}
