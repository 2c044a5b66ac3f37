//! Where leases land, and why requests are refused.

use super::util::{t, Sim};
use crate::proto::{Capacity, HostCommand, LeaseRequest, PlacementError};

#[test]
fn gpu_request_lands_only_on_the_gpu_host_with_distinct_devices() {
    let mut sim = Sim::new();
    let _cpu = sim.host("cpu:1", Capacity::new(32, 65_536));
    let gpu = sim.host(
        "gpu:1",
        Capacity::new(4, 16_384).with_accelerators("gpu", 2),
    );
    let lease = sim
        .request(
            "alice",
            &LeaseRequest::new(1, 60_000).with_accelerators("gpu", 2),
        )
        .unwrap();
    assert_eq!(lease.host, gpu);
    assert_eq!(lease.accelerators["gpu"], vec![0, 1]);
    assert_eq!(lease.visible_devices("gpu"), "0,1");
    assert_eq!(sim.free(gpu).accelerators["gpu"], 0);
    assert!(sim.host_cmds.contains(&(gpu, HostCommand::Start(lease))));
}

#[test]
fn two_one_gpu_leases_get_devices_0_and_1() {
    let mut sim = Sim::new();
    let gpu = sim.host(
        "gpu:1",
        Capacity::new(8, 16_384).with_accelerators("gpu", 2),
    );
    let one = LeaseRequest::new(1, 60_000).with_accelerators("gpu", 1);
    let a = sim.request("alice", &one).unwrap();
    let b = sim.request("bob", &one).unwrap();
    assert_eq!((a.host, b.host), (gpu, gpu));
    assert_eq!(a.accelerators["gpu"], vec![0]);
    assert_eq!(b.accelerators["gpu"], vec![1]);
    let err = sim.request("carol", &one).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host has 1 free gpu (largest free is 0)"
    );
}

#[test]
fn spreads_to_the_host_with_most_free_cores_ties_to_lowest_id() {
    let mut sim = Sim::new();
    let a = sim.host("a:1", Capacity::new(8, 0));
    let b = sim.host("b:1", Capacity::new(8, 0));
    let c = sim.host("c:1", Capacity::new(4, 0));
    let two = LeaseRequest::new(2, 60_000);
    let hosts: Vec<_> = (0..6)
        .map(|_| sim.request("alice", &two).unwrap().host)
        .collect();
    // free cores before each grant: (8,8,4) (6,8,4) (6,6,4) (4,6,4) (4,4,4) (2,4,4)
    assert_eq!(hosts, vec![a, b, a, b, a, b]);
    let next = sim.request("alice", &two).unwrap();
    assert_eq!(next.host, c, "c now has the most free cores (4 vs 2, 2)");
}

#[test]
fn leases_on_one_host_get_disjoint_cores() {
    let mut sim = Sim::new();
    sim.host("a:1", Capacity::new(8, 0));
    let x = sim.request("alice", &LeaseRequest::new(3, 60_000)).unwrap();
    let y = sim.request("bob", &LeaseRequest::new(3, 60_000)).unwrap();
    assert_eq!(x.core_ids, vec![0, 1, 2]);
    assert_eq!(y.core_ids, vec![3, 4, 5]);
}

#[test]
fn memory_is_honoured() {
    let mut sim = Sim::new();
    let small = sim.host("small:1", Capacity::new(16, 1024));
    let big = sim.host("big:1", Capacity::new(4, 8192));
    let lease = sim
        .request("alice", &LeaseRequest::new(1, 60_000).with_memory(4096))
        .unwrap();
    assert_eq!(lease.host, big);
    assert_eq!(sim.free(big).memory_mib, 4096);
    assert_eq!(sim.free(small).memory_mib, 1024);
}

#[test]
fn zero_count_accelerators_are_ignored() {
    let mut sim = Sim::new();
    let cpu = sim.host("cpu:1", Capacity::new(8, 0));
    let lease = sim
        .request(
            "alice",
            &LeaseRequest::new(1, 60_000).with_accelerators("gpu", 0),
        )
        .unwrap();
    assert_eq!(lease.host, cpu);
    assert!(lease.accelerators.is_empty());
}

#[test]
fn refusals_say_which_resource_is_short() {
    let mut sim = Sim::new();
    let req = LeaseRequest::new(4, 60_000);
    assert_eq!(
        sim.request("alice", &req).unwrap_err().to_string(),
        "no hosts registered"
    );

    sim.host("a:1", Capacity::new(3, 1024));
    let err = sim.request("alice", &req).unwrap_err();
    assert_eq!(
        err,
        PlacementError::Cores {
            requested: 4,
            largest: 3
        }
    );
    assert_eq!(err.to_string(), "largest free cores is 3 < 4");

    let gpus = LeaseRequest::new(1, 60_000).with_accelerators("gpu", 2);
    assert_eq!(
        sim.request("alice", &gpus).unwrap_err().to_string(),
        "no host has 2 free gpu (largest free is 0)"
    );

    let mem = LeaseRequest::new(1, 60_000).with_memory(2048);
    assert_eq!(
        sim.request("alice", &mem).unwrap_err().to_string(),
        "largest free memory is 1024 MiB < 2048 MiB"
    );

    // 4 cores exist on one host and a gpu on another, never together.
    sim.host("b:1", Capacity::new(8, 0));
    sim.host("g:1", Capacity::new(2, 0).with_accelerators("gpu", 1));
    let both = LeaseRequest::new(4, 60_000).with_accelerators("gpu", 1);
    let err = sim.request("alice", &both).unwrap_err();
    assert_eq!(
        err,
        PlacementError::Fragmented {
            cores: 4,
            memory_mib: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "no single host has 4 cores, 0 MiB and the accelerators free together"
    );
}

#[test]
fn invalid_requests_are_refused() {
    let mut sim = Sim::new();
    sim.host("a:1", Capacity::new(8, 0));
    let max = sim.mgr.config().max_lease_ms;
    let cases = [
        (
            LeaseRequest::new(0, 1000),
            "invalid request: a lease needs at least 1 core".to_string(),
        ),
        (
            LeaseRequest::new(1, 0),
            "invalid request: duration must be at least 1 ms".to_string(),
        ),
        (
            LeaseRequest::new(1, max + 1),
            format!(
                "invalid request: duration {} ms exceeds the maximum {max} ms",
                max + 1
            ),
        ),
        (
            LeaseRequest::new(1, 1000).with_hot_timeout(-2),
            "invalid request: hot timeout -2 ms is below -1".to_string(),
        ),
    ];
    for (req, msg) in cases {
        assert_eq!(sim.request("alice", &req).unwrap_err().to_string(), msg);
    }
    for image in ["", "--privileged", "a b", "x;rm", &"a".repeat(256)] {
        let e = sim
            .request("alice", &LeaseRequest::new(1, 1000).with_container(image))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid request: container image"),
            "{image}: {e}"
        );
    }
    let ok = LeaseRequest::new(1, 1000).with_container("localhost/rfx-fn:1.0");
    assert_eq!(
        sim.request("alice", &ok).unwrap().container.as_deref(),
        Some("localhost/rfx-fn:1.0")
    );
}

#[test]
fn refusal_changes_nothing() {
    let mut sim = Sim::new();
    sim.host("a:1", Capacity::new(2, 0));
    sim.clear_logs();
    let before = sim.mgr.state().clone();
    let ops = sim.ops.len();
    sim.request("alice", &LeaseRequest::new(4, 60_000))
        .unwrap_err();
    assert_eq!(sim.mgr.state(), &before);
    assert_eq!(sim.ops.len(), ops);
    assert!(sim.host_cmds.is_empty() && sim.events.is_empty());
    assert_eq!(sim.mgr.leases_of(&t("alice")).count(), 0);
}

#[test]
fn down_hosts_get_no_leases() {
    let mut sim = Sim::new();
    let a = sim.host("a:1", Capacity::new(8, 0));
    sim.mgr.deregister_host(sim.now, a).unwrap();
    sim.drain();
    let err = sim
        .request("alice", &LeaseRequest::new(1, 1000))
        .unwrap_err();
    assert_eq!(err.to_string(), "no host is up (1 registered, all down)");
    let b = sim.host("b:1", Capacity::new(2, 0));
    assert_eq!(
        sim.request("alice", &LeaseRequest::new(1, 1000))
            .unwrap()
            .host,
        b
    );
}
