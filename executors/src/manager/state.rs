//! The executor manager's decisions, without I/O: how to launch the executor
//! of a lease, which executors a [`Command::Sync`](rfx_leases::wire::Command::Sync)
//! starts and stops, how cumulative usage becomes reported deltas, how an
//! exit status reads. The driver (`mod.rs`, `process.rs`) does the spawning,
//! signalling and reporting.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rfx_leases::proto::{Lease, LeaseId, UsageReport};
use rfx_leases::wire::StartLease;

use crate::executor::ExecutorUsage;

/// The lease id in the executor's environment (not a secret: it names the
/// lease for logs and the function's own use).
pub(crate) const LEASE_ENV: &str = "RFX_LEASE_ID";

/// Variables of the manager's own environment that executors get: fabric
/// and collective settings (names or prefixes). Nothing else passes, so
/// `RFX_CLUSTER_KEY`, tenant tokens, TLS keys and whatever else the manager
/// was started with stay out of tenants' reach.
pub(crate) const FORWARDED_ENV: &[&str] = &[
    "RFX_TRANSPORT",
    "RFX_SHM_",
    "RFX_VERBS_",
    "RFX_OFI_",
    "RFX_OP_TIMEOUT_MS",
    "RFX_CONNECT_TIMEOUT_MS",
    "RFX_MAX_MESSAGE",
    "RFX_BIND_ADDR",
    "RFX_COLL_",
    "RFX_BOOTSTRAP_TIMEOUT_MS",
    "RFX_EXECUTOR_MAX_INPUT",
    "RFX_LOG",
    "RFX_PYTHON_HOST",
    "RFX_DEVICE",
    "FI_",
];

/// Secrets that never pass, whatever an operator forwards.
const NEVER_FORWARDED: &[&str] = &[
    "RFX_CLUSTER_KEY",
    "RFX_TENANT_TOKEN",
    "RFX_LEASE_TOKEN",
    "RFX_TLS_KEY",
    "RFX_JOB_KEY",
];

/// The base environment of every executor: a fixed `PATH`, `HOME=/tmp`,
/// and the [`FORWARDED_ENV`] variables of `manager_env`.
pub(crate) fn executor_base_env(
    manager_env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), "/tmp".into()),
    ];
    env.extend(manager_env.into_iter().filter(|(k, _)| {
        k.to_str().is_some_and(|k| {
            !NEVER_FORWARDED.contains(&k)
                && FORWARDED_ENV.iter().any(|f| {
                    if f.ends_with('_') {
                        k.starts_with(f)
                    } else {
                        k == *f
                    }
                })
        })
    }));
    env
}

/// Whether an operator's extra executor variable may pass.
pub(crate) fn allowed_extra_env(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_none_or(|k| !NEVER_FORWARDED.contains(&k))
}

/// What an executor prints on stderr once it listens, followed by its address.
pub(crate) const LISTENING_PREFIX: &str = "rfx executor: listening on ";

/// Accelerator kinds whose visibility the manager sets, and the variable for
/// each. AMD devices use `ROCR_VISIBLE_DEVICES` only: `HIP_VISIBLE_DEVICES`
/// indexes into the devices ROCr exposes, so setting both to the same
/// physical ids would hide the wrong devices.
pub(crate) const DEVICE_VARS: &[(&str, &str)] = &[
    ("gpu", "CUDA_VISIBLE_DEVICES"),
    ("amdgpu", "ROCR_VISIBLE_DEVICES"),
];

/// The visibility variable of one accelerator kind the host declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceVar {
    /// The accelerator kind, e.g. `gpu`.
    pub(crate) kind: String,
    /// The variable, e.g. `CUDA_VISIBLE_DEVICES`.
    pub(crate) var: &'static str,
    /// The manager's own value of the variable, split at commas, if it is set
    /// (under Slurm, the devices of the allocation): device `i` of the host's
    /// capacity is then its `i`-th entry. `None`: device `i` is `i`.
    pub(crate) inherited: Option<Vec<String>>,
}

impl DeviceVar {
    /// The variables for the kinds of `DEVICE_VARS` that `declared` (kind,
    /// count) offers, with the manager's values from `env`.
    pub(crate) fn for_host<'a>(
        declared: impl IntoIterator<Item = (&'a String, &'a u32)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Vec<DeviceVar> {
        let declared: Vec<_> = declared.into_iter().filter(|(_, n)| **n > 0).collect();
        DEVICE_VARS
            .iter()
            .filter(|(kind, _)| declared.iter().any(|(k, _)| k.as_str() == *kind))
            .map(|&(kind, var)| DeviceVar {
                kind: kind.to_owned(),
                var,
                inherited: env(var).map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }),
            })
            .collect()
    }

    /// The variable's value for `lease`: its devices of this kind, mapped
    /// through the inherited list. Empty (no device visible) if it has none.
    fn value(&self, lease: &Lease) -> Result<String, String> {
        let ids = lease
            .accelerators
            .get(&self.kind)
            .map_or(&[][..], Vec::as_slice);
        let Some(inherited) = &self.inherited else {
            return Ok(lease.visible_devices(&self.kind));
        };
        let mapped = ids
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| inherited.get(i))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "{} device {i} is not among the manager's {}={}",
                            self.kind,
                            self.var,
                            inherited.join(",")
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(mapped.join(","))
    }
}

/// How the manager launches executors (fixed for its lifetime).
#[derive(Debug, Clone)]
pub(crate) struct LaunchPolicy {
    /// Where executors bind (port 0).
    pub(crate) executor_host: IpAddr,
    /// How often executors print their usage.
    pub(crate) usage_every: Duration,
    /// Visibility variables of the declared accelerator kinds.
    pub(crate) devices: Vec<DeviceVar>,
    /// The host's cap on a lease's time limit per invocation, ms (0: none).
    pub(crate) max_exec_timeout_ms: u64,
}

impl LaunchPolicy {
    /// The time limit per invocation of `lease`, ms: what it asked, capped
    /// by the host; the host's when it asked none (0: no limit).
    pub(crate) fn exec_timeout_ms(&self, lease: &Lease) -> u64 {
        match (lease.exec_timeout_ms, self.max_exec_timeout_ms) {
            (0, max) => max,
            (asked, 0) => asked,
            (asked, max) => asked.min(max),
        }
    }
}

/// The arguments (after the executor command) and environment of one executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// Flags for `rfx executor`.
    pub(crate) args: Vec<OsString>,
    /// Variables to set, overriding inherited ones.
    pub(crate) env: Vec<(OsString, OsString)>,
}

impl LaunchPolicy {
    /// The executor of `lease`: a worker per leased core, pinned to the leased
    /// cores, hot as the lease says, reporting usage, its token on the
    /// handoff descriptor, its devices visible. An error names a device the
    /// manager cannot map.
    pub(crate) fn launch(&self, lease: &Lease) -> Result<Launch, String> {
        let usage_ms = self.usage_every.as_millis().clamp(1, u128::from(u64::MAX));
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            SocketAddr::new(self.executor_host, 0).to_string().into(),
            "--workers".into(),
            lease.cores.max(1).to_string().into(),
        ];
        if !lease.core_ids.is_empty() {
            let cpus: Vec<String> = lease.core_ids.iter().map(u32::to_string).collect();
            args.extend(["--cpus".into(), cpus.join(",").into()]);
        }
        args.extend([
            "--hot-timeout-ms".into(),
            lease.hot_timeout_ms.to_string().into(),
            "--usage-every-ms".into(),
            usage_ms.to_string().into(),
        ]);
        let limit = self.exec_timeout_ms(lease);
        if limit > 0 {
            args.extend(["--exec-timeout-ms".into(), limit.to_string().into()]);
        }
        // The token goes on the handoff descriptor, never in the environment.
        args.extend([
            "--handoff-fd".into(),
            crate::sandbox::handoff::HANDOFF_FD.to_string().into(),
        ]);
        let mut env: Vec<(OsString, OsString)> =
            vec![(LEASE_ENV.into(), lease.id.0.to_string().into())];
        for d in &self.devices {
            env.push((d.var.into(), d.value(lease)?.into()));
        }
        Ok(Launch { args, env })
    }
}

/// The address in an executor's `rfx executor: listening on ADDR` line.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim_end()
        .strip_prefix(LISTENING_PREFIX)?
        .trim()
        .parse()
        .ok()
}

/// Where tenants reach an executor that announced `announced`: an executor
/// bound to the unspecified address (`0.0.0.0:p`) is reached at
/// `fallback:p`, when the manager knows a specific address of the host.
pub(crate) fn reachable(announced: SocketAddr, fallback: Option<IpAddr>) -> SocketAddr {
    match fallback {
        Some(ip) if announced.ip().is_unspecified() && !ip.is_unspecified() => {
            SocketAddr::new(ip, announced.port())
        }
        _ => announced,
    }
}

/// What a [`Command::Sync`](rfx_leases::wire::Command::Sync) changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncPlan {
    /// Running leases the lease manager no longer lists.
    pub(crate) stop: Vec<LeaseId>,
    /// Listed leases without an executor.
    pub(crate) start: Vec<StartLease>,
}

/// Compares the running leases with the `wanted` ones. Leases in `ended`
/// (their executor exited on its own, and the crash was reported or is
/// being reported) are never started again.
pub(crate) fn plan_sync(
    running: impl IntoIterator<Item = LeaseId>,
    wanted: Vec<StartLease>,
    ended: &HashSet<LeaseId>,
) -> SyncPlan {
    let running: HashSet<LeaseId> = running.into_iter().collect();
    let listed: HashSet<LeaseId> = wanted.iter().map(|s| s.lease.id).collect();
    let mut stop: Vec<LeaseId> = running.difference(&listed).copied().collect();
    stop.sort_unstable();
    let mut seen = HashSet::new();
    let start = wanted
        .into_iter()
        .filter(|s| {
            let id = s.lease.id;
            !running.contains(&id) && !ended.contains(&id) && seen.insert(id)
        })
        .collect();
    SyncPlan { stop, start }
}

/// Turns an executor's cumulative usage lines into deltas for the lease
/// manager. Times are reported in whole milliseconds of the cumulative
/// nanoseconds, so rounding never loses or double-counts time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UsageMeter {
    /// The cumulative usage already reported, in report units.
    reported: UsageReport,
}

impl UsageMeter {
    /// The cumulative `u` in report units.
    fn totals(u: &ExecutorUsage) -> UsageReport {
        UsageReport {
            hot_poll_ms: u.hot_poll_ns / 1_000_000,
            exec_ms: u.exec_ns / 1_000_000,
            invocations: u.invocations,
            bytes_in: u.bytes_in,
            bytes_out: u.bytes_out,
            function_timeouts: 0,
        }
    }

    /// The usage since the last [`acknowledge`](Self::acknowledge)d line, or
    /// `None` if nothing grew. A counter below the reported one (which a
    /// correct executor never prints) contributes 0.
    pub(crate) fn delta(&self, u: &ExecutorUsage) -> Option<UsageReport> {
        let t = Self::totals(u);
        let r = &self.reported;
        let d = UsageReport {
            hot_poll_ms: t.hot_poll_ms.saturating_sub(r.hot_poll_ms),
            exec_ms: t.exec_ms.saturating_sub(r.exec_ms),
            invocations: t.invocations.saturating_sub(r.invocations),
            bytes_in: t.bytes_in.saturating_sub(r.bytes_in),
            bytes_out: t.bytes_out.saturating_sub(r.bytes_out),
            function_timeouts: 0,
        };
        (d != UsageReport::default()).then_some(d)
    }

    /// Records that the delta of `u` reached the lease manager.
    pub(crate) fn acknowledge(&mut self, u: &ExecutorUsage) {
        let t = Self::totals(u);
        let r = &mut self.reported;
        r.hot_poll_ms = r.hot_poll_ms.max(t.hot_poll_ms);
        r.exec_ms = r.exec_ms.max(t.exec_ms);
        r.invocations = r.invocations.max(t.invocations);
        r.bytes_in = r.bytes_in.max(t.bytes_in);
        r.bytes_out = r.bytes_out.max(t.bytes_out);
    }
}

/// How an executor ended, for the crash report: `code 3`, or
/// `signal 11 (SIGSEGV)` (`, core dumped` when it did).
pub(crate) fn describe_exit(code: Option<i32>, signal: Option<i32>, core_dumped: bool) -> String {
    match (code, signal) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|sig| sig.as_str())
                .unwrap_or("unknown signal");
            let core = if core_dumped { ", core dumped" } else { "" };
            format!("signal {s} ({name}){core}")
        }
        (None, None) => "an unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rfx_leases::proto::{HostId, LeaseState, TenantId, Usage};
    use std::collections::BTreeMap;

    fn lease(id: u64, cores: &[u32], gpus: &[u32]) -> Lease {
        let mut accelerators = BTreeMap::new();
        if !gpus.is_empty() {
            accelerators.insert("gpu".to_owned(), gpus.to_vec());
        }
        Lease {
            id: LeaseId(id),
            tenant: TenantId::from("alice".to_owned()),
            host: HostId(1),
            cores: u32::try_from(cores.len()).expect("few cores"),
            core_ids: cores.to_vec(),
            memory_mib: 0,
            accelerators,
            hot_timeout_ms: -1,
            exec_timeout_ms: 0,
            container: None,
            granted_at_ms: 0,
            expires_at_ms: 1,
            ended_at_ms: None,
            state: LeaseState::Active,
            usage: Usage::default(),
        }
    }

    fn start(id: u64) -> StartLease {
        StartLease {
            lease: lease(id, &[0], &[]),
        }
    }

    fn policy(devices: Vec<DeviceVar>) -> LaunchPolicy {
        LaunchPolicy {
            executor_host: "127.0.0.1".parse().expect("ip"),
            usage_every: Duration::from_millis(250),
            devices,
            max_exec_timeout_ms: 0,
        }
    }

    #[test]
    fn time_limits_are_capped_by_the_host() {
        let mut p = policy(vec![]);
        let mut l = lease(1, &[0], &[]);
        assert_eq!(p.exec_timeout_ms(&l), 0, "none asked, no cap: no limit");
        let flags =
            |p: &LaunchPolicy, l: &Lease| strings(&p.launch(l).expect("launch").args).join(" ");
        assert!(!flags(&p, &l).contains("--exec-timeout-ms"));
        l.exec_timeout_ms = 500;
        assert_eq!(p.exec_timeout_ms(&l), 500);
        p.max_exec_timeout_ms = 200;
        assert_eq!(p.exec_timeout_ms(&l), 200, "capped");
        assert!(flags(&p, &l).contains("--exec-timeout-ms 200"));
        l.exec_timeout_ms = 0;
        assert_eq!(p.exec_timeout_ms(&l), 200, "the host's when none asked");
    }

    fn strings(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|s| s.to_str().expect("utf-8")).collect()
    }

    #[test]
    fn the_executor_environment_passes_fabric_settings_and_no_secret() {
        let manager: Vec<(OsString, OsString)> = [
            ("RFX_CLUSTER_KEY", "k"),
            ("RFX_TENANT_TOKEN", "t"),
            ("RFX_TLS_KEY", "/etc/key.pem"),
            ("RFX_TRANSPORT", "shm"),
            ("RFX_SHM_RING_BYTES", "65536"),
            ("RFX_TRANSPORTX", "no"),
            ("FI_TCP_IFACE", "lo"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("PATH", "/home/op/bin:/usr/bin"),
            ("LD_PRELOAD", "/tmp/x.so"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let env = executor_base_env(manager);
        let names: Vec<&str> = env
            .iter()
            .map(|(k, _)| k.to_str().expect("utf-8"))
            .collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "RFX_TRANSPORT",
                "RFX_SHM_RING_BYTES",
                "FI_TCP_IFACE"
            ]
        );
        assert_eq!(env[0].1, "/usr/local/bin:/usr/bin:/bin");
        assert!(!allowed_extra_env("RFX_CLUSTER_KEY".as_ref()));
        assert!(allowed_extra_env("RFX_TRANSPORT".as_ref()));
    }

    #[test]
    fn launch_flags_and_no_token() {
        let l = policy(vec![])
            .launch(&lease(7, &[2, 3], &[]))
            .expect("launch");
        assert_eq!(
            strings(&l.args),
            [
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--cpus",
                "2,3",
                "--hot-timeout-ms",
                "-1",
                "--usage-every-ms",
                "250",
                "--handoff-fd",
                "3"
            ]
        );
        assert_eq!(
            l.env,
            vec![(OsString::from(LEASE_ENV), OsString::from("7"))]
        );
        let v6 = LaunchPolicy {
            executor_host: "::1".parse().expect("ip"),
            ..policy(vec![])
        };
        let l = v6.launch(&lease(7, &[], &[])).expect("launch");
        assert_eq!(
            strings(&l.args)[..4],
            ["--listen", "[::1]:0", "--workers", "1"]
        );
        assert!(!strings(&l.args).contains(&"--cpus"));
    }

    #[test]
    fn device_visibility() {
        let declared = BTreeMap::from([
            ("gpu".to_owned(), 2u32),
            ("fpga".to_owned(), 1),
            ("amdgpu".to_owned(), 0),
        ]);
        let vars = DeviceVar::for_host(&declared, |_| None);
        assert_eq!(vars.len(), 1, "only declared, known kinds: {vars:?}");
        let p = policy(vars);
        let env = |gpus: &[u32]| {
            p.launch(&lease(1, &[0], gpus))
                .expect("launch")
                .env
                .into_iter()
                .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                .map(|(_, v)| v.into_string().expect("utf-8"))
        };
        assert_eq!(env(&[1]).as_deref(), Some("1"));
        assert_eq!(env(&[0, 1]).as_deref(), Some("0,1"));
        assert_eq!(env(&[]).as_deref(), Some(""), "no gpu leased: none visible");

        // Under an allocation that restricts the manager, ids map through it.
        let slurm = DeviceVar::for_host(&declared, |v| {
            (v == "CUDA_VISIBLE_DEVICES").then(|| "4, 6".to_owned())
        });
        let p = policy(slurm);
        let l = p.launch(&lease(1, &[0], &[1])).expect("launch");
        assert!(l.env.contains(&("CUDA_VISIBLE_DEVICES".into(), "6".into())));
        let err = p
            .launch(&lease(1, &[0], &[2]))
            .expect_err("device 2 is not the manager's");
        assert!(err.contains("gpu device 2") && err.contains("4,6"), "{err}");

        let amd = DeviceVar::for_host(&BTreeMap::from([("amdgpu".to_owned(), 4)]), |_| None);
        assert_eq!(amd[0].var, "ROCR_VISIBLE_DEVICES");
    }

    #[test]
    fn listening_line() {
        assert_eq!(
            parse_listening("rfx executor: listening on 127.0.0.1:4567\n"),
            Some("127.0.0.1:4567".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening("rfx executor: listening on [::1]:80"),
            Some("[::1]:80".parse().expect("addr"))
        );
        for bad in [
            "",
            "rfx executor: listening on",
            "rfx executor: listening on nowhere",
            "running 1 test",
            "xrfx executor: listening on 127.0.0.1:1",
        ] {
            assert_eq!(parse_listening(bad), None, "{bad:?}");
        }
        let any: SocketAddr = "0.0.0.0:9".parse().expect("addr");
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(reachable(any, Some(ip)), "10.0.0.7:9".parse().expect("a"));
        assert_eq!(reachable(any, None), any);
        let specific: SocketAddr = "10.0.0.8:9".parse().expect("addr");
        assert_eq!(reachable(specific, Some(ip)), specific);
    }

    #[test]
    fn sync_plan() {
        let running = [LeaseId(1), LeaseId(2), LeaseId(3)];
        let ended = HashSet::from([LeaseId(5)]);
        let plan = plan_sync(
            running,
            vec![start(2), start(4), start(5), start(4)],
            &ended,
        );
        assert_eq!(plan.stop, [LeaseId(1), LeaseId(3)]);
        let started: Vec<_> = plan.start.iter().map(|s| s.lease.id).collect();
        assert_eq!(started, [LeaseId(4)]);
        let plan = plan_sync([], vec![], &ended);
        assert_eq!(plan, SyncPlan::default());
    }

    #[test]
    fn usage_deltas() {
        let mut m = UsageMeter::default();
        let u1 = ExecutorUsage {
            invocations: 3,
            exec_ns: 1_999_999,
            hot_poll_ns: 500_000,
            bytes_in: 10,
            ..ExecutorUsage::default()
        };
        let d = m.delta(&u1).expect("grew");
        assert_eq!((d.invocations, d.exec_ms, d.hot_poll_ms), (3, 1, 0));
        // Not acknowledged (the report failed): the next delta still has it.
        let u2 = ExecutorUsage {
            exec_ns: 2_000_001,
            ..u1
        };
        assert_eq!(m.delta(&u2).expect("grew").exec_ms, 2);
        m.acknowledge(&u2);
        assert_eq!(m.delta(&u2), None);
        let u3 = ExecutorUsage {
            invocations: 4,
            exec_ns: 2_900_000,
            bytes_out: 8,
            ..u2
        };
        let d = m.delta(&u3).expect("grew");
        assert_eq!((d.invocations, d.exec_ms, d.bytes_out), (1, 0, 8));
        m.acknowledge(&u3);
        // A counter going backwards reports nothing, never wraps.
        assert_eq!(m.delta(&ExecutorUsage::default()), None);
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(describe_exit(Some(3), None, false), "code 3");
        assert_eq!(describe_exit(None, Some(11), false), "signal 11 (SIGSEGV)");
        assert_eq!(
            describe_exit(None, Some(6), true),
            "signal 6 (SIGABRT), core dumped"
        );
        assert_eq!(
            describe_exit(None, Some(200), false),
            "signal 200 (unknown signal)"
        );
    }
}
