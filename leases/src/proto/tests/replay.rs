//! Recovery: a manager rebuilt from its persisted ops equals the original.

use super::util::{fast_heartbeat, t, Sim};
use crate::proto::{
    Capacity, Config, HostId, Lease, LeaseError, LeaseId, LeaseRequest, LeaseState, Manager,
    StoreOp, Usage, UsageReport,
};
use std::collections::BTreeMap;

/// A run touching every kind of store op.
fn busy_sim() -> Sim {
    let config = Config {
        retain_finished_ms: Some(5_000),
        ..fast_heartbeat()
    };
    let mut sim = Sim::with_config(config);
    let gpu = sim.host("gpu:1", Capacity::new(8, 8192).with_accelerators("gpu", 2));
    let cpu = sim.host("cpu:1", Capacity::new(16, 32_768));
    let flaky = sim.host(
        "flaky:1",
        Capacity::new(2, 1024).with_accelerators("fpga", 1),
    );
    let (alice, bob) = (t("alice"), t("bob"));
    let g = sim
        .request(
            "alice",
            &LeaseRequest::new(2, 10_000).with_accelerators("gpu", 1),
        )
        .unwrap();
    let c = sim
        .request("bob", &LeaseRequest::new(4, 2_000).with_memory(4096))
        .unwrap();
    let r = sim.request("bob", &LeaseRequest::new(1, 20_000)).unwrap();
    let f = sim
        .request(
            "alice",
            &LeaseRequest::new(2, 20_000)
                .with_memory(1024)
                .with_accelerators("fpga", 1),
        )
        .unwrap();
    let x = sim
        .request(
            "alice",
            &LeaseRequest::new(1, 20_000).with_accelerators("gpu", 1),
        )
        .unwrap();
    assert_eq!((g.host, c.host, f.host, x.host), (gpu, cpu, flaky, gpu));
    sim.mgr.renew(500, &alice, g.id, 1_000).unwrap();
    let delta = UsageReport {
        hot_poll_ms: 3,
        exec_ms: 2,
        invocations: 7,
        bytes_in: 64,
        bytes_out: 32,
        function_timeouts: 0,
    };
    sim.mgr.report_usage(800, gpu, g.id, &delta).unwrap();
    sim.mgr.release(1_000, &bob, r.id).unwrap();
    sim.mgr.executor_crashed(1_100, gpu, x.id, "oom").unwrap();
    sim.drain();
    for _ in 0..3 {
        sim.advance(1_000); // c expires at 2000
        sim.mgr.heartbeat(sim.now, gpu).unwrap();
        sim.mgr.heartbeat(sim.now, cpu).unwrap();
    }
    // flaky went down at 3000, with f lost; it comes back smaller
    assert!(!sim.mgr.host(flaky).unwrap().up);
    assert_eq!(sim.host("flaky:1", Capacity::new(1, 512)), flaky);
    // gpu host loses a device: the remaining gpu lease (device 0) fits
    assert_eq!(
        sim.host("gpu:1", Capacity::new(8, 8192).with_accelerators("gpu", 1)),
        gpu
    );
    for step in [1_500, 1_500, 500] {
        sim.advance(step); // at 6500, r and x are forgotten (ended at 1000 and 1100, retained 5000)
        for h in [gpu, cpu, flaky] {
            sim.mgr.heartbeat(sim.now, h).unwrap();
        }
    }
    sim.drain();
    assert_eq!(
        sim.mgr.leases_of(&bob).map(|l| l.id).collect::<Vec<_>>(),
        vec![c.id]
    );
    let kinds: BTreeMap<&str, usize> = sim.ops.iter().fold(BTreeMap::new(), |mut m, op| {
        let name = match op {
            StoreOp::HostUpserted { .. } => "upsert",
            StoreOp::HostDown { .. } => "down",
            StoreOp::LeaseGranted(_) => "grant",
            StoreOp::LeaseRenewed { .. } => "renew",
            StoreOp::UsageReported { .. } => "usage",
            StoreOp::LeaseEnded { .. } => "end",
            StoreOp::LeaseForgotten { .. } => "forget",
            // Only checkpoints write these.
            StoreOp::LeaseRestored(_) | StoreOp::Checkpoint { .. } => "checkpoint",
            StoreOp::TicketQueued(_)
            | StoreOp::TicketEnded { .. }
            | StoreOp::TicketForgotten { .. }
            | StoreOp::TicketRestored(_)
            | StoreOp::QuotaSet { .. } => "queue",
        };
        *m.entry(name).or_default() += 1;
        m
    });
    assert_eq!(kinds.len(), 7, "every op kind is exercised: {kinds:?}");
    sim
}

fn snapshot(mgr: &Manager) -> (Vec<Lease>, Vec<(HostId, Capacity, bool)>) {
    let leases = mgr.state().leases().cloned().collect();
    let hosts = mgr
        .hosts()
        .map(|h| (h.id, h.free.amounts(), h.up))
        .collect();
    (leases, hosts)
}

#[test]
fn replay_rebuilds_an_identical_manager() {
    let mut sim = busy_sim();
    let mut replayed = sim.replayed();
    assert_eq!(replayed.state(), sim.mgr.state());
    assert_eq!(snapshot(&replayed), snapshot(&sim.mgr));
    assert!(replayed.poll_output().is_none(), "replay is silent");

    // Both grant the same next lease.
    let req = LeaseRequest::new(2, 1_000).with_memory(512);
    let a = sim.mgr.request_lease(sim.now, &t("carol"), &req).unwrap();
    let b = replayed.request_lease(sim.now, &t("carol"), &req).unwrap();
    assert_eq!(a, b);
    assert_eq!(replayed.state(), sim.mgr.state());
}

#[test]
fn a_checkpoint_rebuilds_the_same_manager_from_few_ops() {
    let mut sim = busy_sim();
    // Usage reports are what makes the log long.
    let lease = sim
        .mgr
        .state()
        .leases()
        .find(|l| l.is_active())
        .unwrap()
        .clone();
    for i in 0..100 {
        let delta = UsageReport {
            invocations: i,
            ..UsageReport::default()
        };
        sim.mgr
            .report_usage(sim.now, lease.host, lease.id, &delta)
            .unwrap();
    }
    // A host that is down, whose leases are lost.
    let flaky = sim.mgr.state().host_by_address("flaky:1").unwrap().id;
    sim.mgr.deregister_host(sim.now, flaky).unwrap();
    sim.drain();
    let checkpoint = sim.mgr.checkpoint();
    assert!(
        checkpoint.len() < sim.ops.len() / 5,
        "{} ops checkpointed as {}",
        sim.ops.len(),
        checkpoint.len()
    );
    assert!(checkpoint
        .iter()
        .any(|op| matches!(op, StoreOp::LeaseRestored(_))));
    assert!(checkpoint
        .iter()
        .any(|op| matches!(op, StoreOp::HostDown { .. })));
    let json = serde_json::to_string(&checkpoint).unwrap();
    let back: Vec<StoreOp> = serde_json::from_str(&json).unwrap();
    let mut restored = Manager::replay(sim.mgr.config().clone(), sim.now, back).unwrap();
    assert_eq!(restored.state(), sim.mgr.state());
    assert_eq!(snapshot(&restored), snapshot(&sim.mgr));
    assert!(restored.poll_output().is_none(), "replay is silent");
    // Same next lease (ids are not reused, even of forgotten leases).
    let req = LeaseRequest::new(2, 1_000).with_memory(512);
    let a = sim.mgr.request_lease(sim.now, &t("carol"), &req).unwrap();
    let b = restored.request_lease(sim.now, &t("carol"), &req).unwrap();
    assert_eq!(a, b);
}

#[test]
fn checkpoint_ops_are_checked_like_the_others() {
    let sim = busy_sim();
    let checkpoint = sim.mgr.checkpoint();
    let ended = checkpoint
        .iter()
        .find_map(|op| match op {
            StoreOp::LeaseRestored(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    let mut still_active = ended.clone();
    still_active.state = LeaseState::Active;
    still_active.ended_at_ms = None;
    for bad in [
        vec![StoreOp::LeaseRestored(ended.clone())], // unknown host
        vec![StoreOp::LeaseRestored(still_active)],
        vec![
            StoreOp::Checkpoint {
                next_host: 1,
                next_lease: 9,
                at: 0,
                next_ticket: 0,
            },
            StoreOp::Checkpoint {
                next_host: 1,
                next_lease: 3,
                at: 0,
                next_ticket: 0,
            },
        ],
    ] {
        assert!(
            Manager::replay(sim.mgr.config().clone(), sim.now, bad.clone()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn replay_survives_serialization() {
    let sim = busy_sim();
    let json = serde_json::to_string(&sim.ops).unwrap();
    let ops: Vec<StoreOp> = serde_json::from_str(&json).unwrap();
    assert_eq!(ops, sim.ops);
    let replayed = Manager::replay(sim.mgr.config().clone(), sim.now, ops).unwrap();
    assert_eq!(replayed.state(), sim.mgr.state());
}

#[test]
fn a_follower_applying_ops_one_by_one_tracks_the_leader() {
    let sim = busy_sim();
    let mut follower = Manager::new(sim.mgr.config().clone());
    for op in &sim.ops {
        follower.apply(op.clone()).unwrap();
    }
    assert_eq!(follower.state(), sim.mgr.state());
}

#[test]
fn replayed_hosts_get_a_fresh_heartbeat_grace_period() {
    let mut sim = Sim::with_config(fast_heartbeat());
    let h = sim.host("h:1", Capacity::new(4, 0));
    let lease = sim.request("alice", &LeaseRequest::new(1, 60_000)).unwrap();
    let mut replayed = Manager::replay(sim.mgr.config().clone(), 50_000, sim.ops.clone()).unwrap();
    assert_eq!(replayed.poll_timeout(), Some(53_000));
    replayed.handle_timeout(52_999);
    assert!(replayed.host(h).unwrap().up);
    assert!(replayed.lease(&t("alice"), lease.id).unwrap().is_active());
    replayed.handle_timeout(53_000);
    assert!(!replayed.host(h).unwrap().up);
}

#[test]
fn inconsistent_ops_are_rejected_without_effect() {
    let mut sim = Sim::new();
    let h = sim.host("h:1", Capacity::new(4, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    let mut mgr = sim.replayed();
    let before = mgr.state().clone();

    let double_booked = Lease {
        id: LeaseId(50),
        ..lease.clone()
    };
    let elsewhere = Lease {
        id: LeaseId(51),
        host: HostId(9),
        core_ids: vec![2, 3],
        ..lease.clone()
    };
    let miscounted = Lease {
        id: LeaseId(52),
        core_ids: vec![2],
        ..lease.clone()
    };
    let repeated = Lease {
        id: LeaseId(53),
        core_ids: vec![2, 2],
        ..lease.clone()
    };
    let bad = [
        (
            StoreOp::LeaseGranted(double_booked),
            "store op cannot be applied: core 0 of lease 50 is not free",
        ),
        (
            StoreOp::LeaseGranted(elsewhere),
            "store op cannot be applied: unknown host 9",
        ),
        (
            StoreOp::LeaseGranted(miscounted),
            "store op cannot be applied: lease 52 has 1 core ids for 2 cores",
        ),
        (
            StoreOp::LeaseGranted(repeated),
            "store op cannot be applied: core 2 of lease 53 is not free",
        ),
        (
            StoreOp::LeaseGranted(lease.clone()),
            "store op cannot be applied: lease 1 already exists",
        ),
        (
            StoreOp::HostDown { host: h },
            "store op cannot be applied: host 1 still holds active lease 1",
        ),
        (
            StoreOp::HostUpserted {
                host: h,
                address: "h:1".into(),
                capacity: Capacity::new(1, 0),
            },
            "store op cannot be applied: core 1 of lease 1 is not free",
        ),
        (
            StoreOp::HostUpserted {
                host: HostId(2),
                address: "h:1".into(),
                capacity: Capacity::new(1, 0),
            },
            "store op cannot be applied: address h:1 belongs to host 1",
        ),
        (
            StoreOp::LeaseForgotten { lease: lease.id },
            "store op cannot be applied: lease 1 is still active",
        ),
        (
            StoreOp::LeaseEnded {
                lease: lease.id,
                state: LeaseState::Active,
                at: 5,
            },
            "store op cannot be applied: lease 1 ends as active",
        ),
        (
            StoreOp::LeaseRenewed {
                lease: lease.id,
                expires_at_ms: 5,
                at: 5,
            },
            "store op cannot be applied: renewal moves lease 1 earlier",
        ),
        (
            StoreOp::UsageReported {
                lease: LeaseId(99),
                delta: UsageReport::default(),
                at: 5,
            },
            "store op cannot be applied: unknown lease 99",
        ),
    ];
    for (op, msg) in bad {
        let err = mgr.apply(op).unwrap_err();
        assert!(matches!(err, LeaseError::BadStoreOp(_)));
        assert_eq!(err.to_string(), msg);
        assert_eq!(mgr.state(), &before);
    }
    let huge = StoreOp::HostUpserted {
        host: HostId(2),
        address: "x:1".into(),
        capacity: Capacity::new(u32::MAX, 0),
    };
    assert_eq!(
        mgr.apply(huge).unwrap_err().to_string(),
        "store op cannot be applied: invalid registration: 4294967295 cores exceed the maximum 4096"
    );
    let mut ops = sim.ops.clone();
    ops.insert(0, StoreOp::HostDown { host: h });
    assert!(Manager::replay(Config::default(), 0, ops).is_err());
}

#[test]
fn usage_of_a_replayed_lease_is_kept() {
    let mut sim = Sim::new();
    let h = sim.host("h:1", Capacity::new(4, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    let delta = UsageReport {
        invocations: 5,
        ..UsageReport::default()
    };
    sim.mgr.report_usage(1_000, h, lease.id, &delta).unwrap();
    sim.drain();
    let replayed = sim.replayed();
    let usage = &replayed.lease(&t("alice"), lease.id).unwrap().usage;
    assert_eq!(
        usage,
        &Usage {
            core_ms: 2_000,
            invocations: 5,
            ..Usage::default()
        }
    );
}
