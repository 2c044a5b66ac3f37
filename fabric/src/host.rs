//! Host identity: two processes may use shm when their identities match.

use std::sync::OnceLock;

/// This host's identity: kernel boot id plus network namespace. Processes
/// in different network namespaces count as different hosts, so a cluster
/// simulated in namespaces on one machine goes over the network path.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "no-boot-id".to_string());
        let netns = std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "no-netns".to_string());
        format!("{boot}/{netns}")
    })
}
