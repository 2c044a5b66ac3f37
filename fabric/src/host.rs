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

/// Whether a peer whose [`host_id`] is `peer` runs on this machine's
/// kernel (the same boot id), so on the same CPUs, whatever its network
/// namespace.
pub(crate) fn same_kernel(peer: &str) -> bool {
    let ours = host_id().split('/').next().unwrap_or_default();
    ours != "no-boot-id" && peer.split('/').next() == Some(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_namespace_shares_the_cpus_another_kernel_does_not() {
        let ours = host_id();
        assert!(same_kernel(ours));
        let (boot, _) = ours.split_once('/').expect("boot id/netns");
        assert!(same_kernel(&format!("{boot}/net:[4026531999]")));
        assert!(!same_kernel("00000000-0000-0000-0000-000000000000/net:[1]"));
        assert!(!same_kernel(""));
    }
}
