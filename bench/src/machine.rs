//! A description of the machine and build, written into every result file.

use serde::{Deserialize, Serialize};

/// The machine and build, as every result file records it (and
/// `rfx-bench report` reads it back; the fields after `date_unix` came
/// later and default when absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub clocksource: String,
    pub rfx_version: String,
    /// `debug` or `release`.
    pub profile: String,
    pub date_unix: u64,
    /// CPUs this process may run on when described (pinning narrows it;
    /// `cpus` counts the machine's online CPUs).
    #[serde(default)]
    pub affinity_cpus: usize,
    /// The SMT siblings of CPU 0 (`0-1` when the two vCPUs share a core).
    #[serde(default)]
    pub cpu0_siblings: String,
    #[serde(default)]
    pub memory_total_kb: u64,
    #[serde(default)]
    pub arch: String,
    /// Cargo features of rfx-bench in this build (providers).
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub command_line: Vec<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This machine and build, now.
pub fn describe() -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu_model,
        cpus: online_cpus(&cpuinfo),
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        rfx_version: env!("CARGO_PKG_VERSION").into(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        affinity_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu0_siblings: read("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list"),
        memory_total_kb: read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        arch: std::env::consts::ARCH.into(),
        features: [
            (cfg!(feature = "verbs"), "verbs"),
            (cfg!(feature = "ofi"), "ofi"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect(),
        command_line: std::env::args().collect(),
    }
}

/// The machine's CPUs: `processor` lines of /proc/cpuinfo (not this
/// thread's affinity, which pinning narrows), else the parallelism.
fn online_cpus(cpuinfo: &str) -> usize {
    match cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
    {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}
