//! Collectives in real processes over shm and tcp, against sequential
//! references. Each test spawns N copies of this binary (`peer_entry`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod device;
mod harness;
mod roles;

/// Counts allocations (the `no_alloc` role checks the steady state).
#[derive(Debug)]
pub struct Counting;

pub static ALLOCS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use std::time::Duration;

use harness::{run, run_ok};

/// Not a test: the entry point of the ranks the tests spawn; without
/// `RFX_COLL_TEST_ROLE` it returns at once.
#[test]
fn peer_entry() {
    if let Ok(role) = std::env::var("RFX_COLL_TEST_ROLE") {
        roles::dispatch(&role);
    }
}

#[test]
fn all_collectives_shm_1_to_5_ranks() {
    for n in 1..=5 {
        run_ok("all", n, "shm", &[]);
    }
}

#[test]
fn all_collectives_shm_8_ranks() {
    run_ok("all", 8, "shm", &[("RFX_COLL_TEST_COUNTS", "0,1,33")]);
}

#[test]
fn all_collectives_shm_6_7_ranks() {
    for n in [6, 7] {
        run_ok(
            "all",
            n,
            "shm",
            &[
                ("RFX_COLL_TEST_COUNTS", "3"),
                ("RFX_COLL_TEST_TYPES", "one"),
            ],
        );
    }
}

#[test]
fn reduce_by_halving_on_4_and_8_ranks() {
    // Rabenseifner's reduce from a low threshold, every root and op of the
    // role; and once at its default size (1 MiB of i32 per rank).
    for n in [4, 8] {
        run_ok(
            "all",
            n,
            "shm",
            &[
                ("RFX_COLL_TEST_COUNTS", "8,1000"),
                ("RFX_COLL_REDUCE_HALVING_MIN", "32"),
            ],
        );
    }
    run_ok(
        "all",
        4,
        "shm",
        &[
            ("RFX_COLL_TEST_COUNTS", "262144"),
            ("RFX_COLL_TEST_TYPES", "one"),
        ],
    );
}

#[test]
fn all_collectives_tcp() {
    for n in [2, 3, 4] {
        run_ok("all", n, "tcp", &[("RFX_COLL_TEST_COUNTS", "0,5,2000")]);
    }
}

#[test]
fn large_messages_shm() {
    // 8 KiB, 1 MiB and 4 MiB of i32 per rank: pipelined bcast/reduce,
    // Rabenseifner and ring allreduce, fragmentation and flow control.
    for (n, counts) in [(2, "2048,262144,1048576"), (3, "262144")] {
        run_ok(
            "all",
            n,
            "shm",
            &[
                ("RFX_COLL_TEST_COUNTS", counts),
                ("RFX_COLL_TEST_TYPES", "one"),
            ],
        );
    }
}

#[test]
fn large_messages_are_read_in_place_between_processes_on_shm() {
    for n in [2, 3] {
        run_ok("single_copy", n, "shm", &[("RFX_COLL_TEST_READS", "yes")]);
    }
    // Read in place, never written by the sender.
    run_ok(
        "single_copy",
        2,
        "shm",
        &[("RFX_COLL_TEST_READS", "yes"), ("RFX_COLL_PUSH_MIN", "0")],
    );
    // Turned off, and over tcp: the inbox path, the same bytes.
    run_ok(
        "single_copy",
        2,
        "shm",
        &[
            ("RFX_COLL_TEST_READS", "no"),
            ("RFX_COLL_SINGLE_COPY_MIN", "0"),
        ],
    );
    run_ok("single_copy", 2, "tcp", &[("RFX_COLL_TEST_READS", "no")]);
}

#[test]
fn reductions_read_whole_messages_in_place_on_shm() {
    run_ok("reduce_reads", 2, "shm", &[("RFX_COLL_TEST_READS", "yes")]);
    run_ok(
        "reduce_reads",
        2,
        "shm",
        &[
            ("RFX_COLL_TEST_READS", "no"),
            ("RFX_COLL_SINGLE_COPY_MIN", "0"),
        ],
    );
    run_ok("reduce_reads", 2, "tcp", &[("RFX_COLL_TEST_READS", "no")]);
}

/// A bcast's or scatter's leaf, and the receiver of a blocking send,
/// shares each large copy with its sender on shm: the sender writes half,
/// the receiver reads half. Off, and over tcp: the same bytes.
#[test]
fn large_copies_are_shared_between_sender_and_receiver_on_shm() {
    run_ok("shared_copies", 2, "shm", &[("RFX_COLL_TEST_SHARE", "yes")]);
    run_ok(
        "shared_copies",
        2,
        "shm",
        &[("RFX_COLL_TEST_SHARE", "no"), ("RFX_COLL_SHARE_MIN", "0")],
    );
    run_ok("shared_copies", 2, "tcp", &[("RFX_COLL_TEST_SHARE", "no")]);
}

/// With more ranks on a host than cores the barrier is linear (each rank
/// needs the core twice, however many ranks), else dissemination; small
/// bcasts and reduces then go straight from / to the root.
#[test]
fn with_more_ranks_than_cores_the_barrier_and_small_rooted_collectives_run_flat() {
    for (cores, kind) in [("1", "linear"), ("1024", "dissemination")] {
        for n in [3, 4] {
            run_ok(
                "flat_schedules",
                n,
                "shm",
                &[("RFX_COLL_CORES", cores), ("RFX_COLL_TEST_FLAT", kind)],
            );
        }
    }
}

/// Over verbs (in the soft-RoCE VM: `scripts/verbs-vm.sh`), a large
/// message goes as a read request naming a loan of the sender's buffer,
/// which the receiver reads by RDMA READ: no copy on the sender's side.
/// Built only with the feature; without a device it fails, not passes.
#[cfg(feature = "verbs")]
#[test]
fn large_messages_are_lent_over_verbs() {
    large_messages_are_lent("verbs", &[]);
}

/// Over ofi (libfabric's `tcp;ofi_rxm` on this host, no VM:
/// `scripts/ofi-test.sh`), the same: the receiver `fi_read`s the loan
/// straight into its buffer.
#[cfg(feature = "ofi")]
#[test]
fn large_messages_are_lent_over_ofi() {
    large_messages_are_lent("ofi", &[("RFX_OFI_PROVIDER", "tcp;ofi_rxm")]);
}

/// Lent on 2 and 3 ranks (reads counted), not lent when turned off (the
/// same bytes through the inbox), and a reduce's messages lent and read
/// whole before the root combines them.
#[cfg(any(feature = "verbs", feature = "ofi"))]
fn large_messages_are_lent(transport: &str, env: &[(&str, &str)]) {
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all: Vec<(&str, &str)> = env.to_vec();
        all.extend_from_slice(extra);
        all
    };
    // 64 KiB: the allgather's 200 KB blocks are lent too.
    let lend = ("RFX_COLL_LEND_MIN", "65536");
    for n in [2, 3] {
        run_ok(
            "single_copy",
            n,
            transport,
            &with(&[
                ("RFX_COLL_TEST_READS", "yes"),
                ("RFX_COLL_PUSH_MIN", "0"),
                lend,
            ]),
        );
    }
    // Lending turned off: the inbox path, the same bytes.
    run_ok(
        "single_copy",
        2,
        transport,
        &with(&[("RFX_COLL_TEST_READS", "no"), ("RFX_COLL_LEND_MIN", "0")]),
    );
    // A reduce's 32 and 256 KiB messages are lent (from 16 KiB here) and
    // read whole before the root combines them (2 ranks: a core each).
    run_ok(
        "reduce_reads",
        2,
        transport,
        &with(&[
            ("RFX_COLL_TEST_READS", "yes"),
            ("RFX_COLL_LEND_MIN", "16384"),
        ]),
    );
}

#[test]
fn large_messages_tcp() {
    run_ok(
        "all",
        2,
        "tcp",
        &[
            ("RFX_COLL_TEST_COUNTS", "262144"),
            ("RFX_COLL_TEST_TYPES", "one"),
        ],
    );
}

#[test]
fn small_collectives_allocate_nothing() {
    // Hot progress (a warm wait allocates the poll set of its sleep).
    for (n, t) in [(2, "shm"), (3, "shm"), (2, "tcp")] {
        run_ok("no_alloc", n, t, &[("RFX_COLL_PROGRESS", "hot")]);
    }
}

#[test]
fn small_messages_skip_the_inbox_on_shm() {
    for t in ["shm", "tcp"] {
        run_ok("small_inline", 2, t, &[]);
    }
}

#[test]
fn beyond_the_window() {
    for (n, t) in [(2, "shm"), (3, "shm"), (2, "tcp")] {
        run_ok("p2p_stress", n, t, &[]);
    }
    // A small window and fragment: many chunks, many wraps of the inbox.
    for n in [2, 3] {
        run_ok(
            "p2p_stress",
            n,
            "shm",
            &[("RFX_COLL_WINDOW", "8192"), ("RFX_COLL_FRAGMENT", "1000")],
        );
    }
}

#[test]
fn small_window() {
    run_ok(
        "all",
        3,
        "shm",
        &[
            ("RFX_COLL_WINDOW", "8192"),
            ("RFX_COLL_FRAGMENT", "1000"),
            ("RFX_COLL_TEST_COUNTS", "0,1,33,5000"),
        ],
    );
}

#[test]
fn nonblocking_overlap() {
    for (n, t) in [(1, "shm"), (2, "shm"), (3, "tcp"), (4, "shm")] {
        run_ok("nonblocking", n, t, &[]);
    }
}

#[test]
fn split_and_dup() {
    for (n, t) in [(1, "shm"), (2, "tcp"), (5, "shm")] {
        run_ok("split", n, t, &[]);
    }
}

/// Device buffers through the staging pipeline on the host device: chunks
/// of 64 B and two slots (thousands of chunks per message, every slot
/// reused), then the default 1 MiB chunks with a message of 3 chunks.
#[test]
fn device_buffers_pipelined_through_pinned_slots() {
    let small = [
        ("RFX_COLL_DEVICE_CHUNK", "64"),
        ("RFX_COLL_DEVICE_SLOTS", "2"),
    ];
    for n in 1..=4 {
        run_ok("device", n, "shm", &small);
    }
    run_ok("device", 3, "tcp", &small);
    run_ok(
        "device",
        2,
        "shm",
        &[("RFX_COLL_TEST_COUNTS", "1,300000,700000")],
    );
}

#[test]
fn dead_rank_fails_the_others() {
    for (n, t) in [(3, "shm"), (2, "tcp")] {
        let (st, elapsed) = run(
            "die",
            n,
            t,
            &[("RFX_COLL_TIMEOUT_MS", "5000")],
            Duration::from_secs(60),
        );
        assert_eq!(st[n - 1].code(), Some(7), "the victim");
        for (r, s) in st[..n - 1].iter().enumerate() {
            assert!(s.success(), "rank {r} did not report the dead rank: {s}");
        }
        assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    }
}
