//! Pinning busy-polling peers to different CPUs: two spinners on one vCPU
//! are 10-1000x slower (`docs/design.md`).

use core_affinity::CoreId;

/// Pins the calling thread to `cpu`; returns whether it did. Threads
/// inherit the mask of their creator, so the CPU list is not re-read here.
pub fn pin(cpu: Option<usize>) -> bool {
    cpu.is_some_and(|id| core_affinity::set_for_current(CoreId { id }))
}

/// The CPUs of the two ends of a ping-pong (client, server).
pub type CpuPair = (Option<usize>, Option<usize>);

/// The CPUs for the two ends: the ones given, else the first two this
/// process may run on, else none. Call before pinning anything.
pub fn pair(given: Option<(usize, usize)>) -> CpuPair {
    if let Some((a, b)) = given {
        return (Some(a), Some(b));
    }
    match core_affinity::get_core_ids().unwrap_or_default().as_slice() {
        [a, b, ..] => (Some(a.id), Some(b.id)),
        _ => (None, None),
    }
}
