//! Registration, heartbeats, host failure and re-registration.

use super::util::{fast_heartbeat, t, Sim};
use crate::proto::{
    Capacity, Config, Event, HostCommand, HostId, LeaseError, LeaseRequest, LeaseState, LostReason,
    StoreOp,
};

#[test]
fn a_silent_host_goes_down_and_its_leases_are_lost() {
    let mut sim = Sim::with_config(fast_heartbeat());
    let alive = sim.host("alive:1", Capacity::new(8, 0));
    let silent = sim.host("silent:1", Capacity::new(4, 0));
    let a = sim.request("alice", &LeaseRequest::new(6, 60_000)).unwrap();
    let b = sim.request("bob", &LeaseRequest::new(4, 60_000)).unwrap();
    assert_eq!((a.host, b.host), (alive, silent));
    assert_eq!(sim.mgr.poll_timeout(), Some(3_000));

    for _ in 0..2 {
        sim.advance(1_400);
        sim.mgr.heartbeat(sim.now, alive).unwrap();
    }
    assert!(
        sim.mgr.host(silent).unwrap().up,
        "2800 ms of silence is under the timeout"
    );
    assert_eq!(sim.mgr.poll_timeout(), Some(3_000));
    sim.advance(200);

    let host = sim.mgr.host(silent).unwrap();
    assert!(!host.up);
    assert_eq!(host.free.free_cores(), 4, "lost leases return their cores");
    let lost = sim.mgr.lease(&t("bob"), b.id).unwrap();
    assert_eq!(
        lost.state,
        LeaseState::Lost {
            reason: LostReason::HostDown
        }
    );
    assert_eq!(lost.ended_at_ms, Some(3_000));
    assert_eq!(
        sim.events,
        vec![(
            t("bob"),
            Event::LeaseLost {
                lease: b.id,
                host: silent,
                reason: LostReason::HostDown
            }
        )]
    );
    assert_eq!(sim.ops.last(), Some(&StoreOp::HostDown { host: silent }));
    assert!(sim.mgr.lease(&t("alice"), a.id).unwrap().is_active());
    assert!(sim.mgr.host(alive).unwrap().up);
    assert_eq!(sim.mgr.poll_timeout(), Some(2_800 + 3_000));

    assert_eq!(
        sim.mgr.heartbeat(sim.now, silent),
        Err(LeaseError::HostDown(silent))
    );
    let err = sim
        .request("carol", &LeaseRequest::new(3, 1_000))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "largest free cores is 2 < 3",
        "the down host's cores are not offered"
    );
}

#[test]
fn a_down_host_registers_again_with_its_id() {
    let mut sim = Sim::with_config(fast_heartbeat());
    let h = sim.host("h:1", Capacity::new(4, 0));
    let lease = sim.request("alice", &LeaseRequest::new(4, 60_000)).unwrap();
    sim.advance(3_000);
    assert!(!sim.mgr.host(h).unwrap().up);
    sim.clear_logs();
    assert_eq!(sim.host("h:1", Capacity::new(4, 0)), h);
    assert!(sim.mgr.host(h).unwrap().up);
    assert_eq!(
        sim.host_cmds,
        vec![(h, HostCommand::Sync(vec![]))],
        "its old executors must stop"
    );
    assert!(!sim.mgr.lease(&t("alice"), lease.id).unwrap().is_active());
    assert_eq!(
        sim.request("alice", &LeaseRequest::new(4, 60_000))
            .unwrap()
            .host,
        h
    );
}

#[test]
fn registering_again_keeps_the_id_and_valid_leases() {
    let mut sim = Sim::with_config(fast_heartbeat());
    let h = sim.host("h:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    sim.advance(2_000);
    let ops = sim.ops.len();
    sim.clear_logs();
    assert_eq!(sim.host("h:1", Capacity::new(8, 0)), h);
    assert_eq!(sim.ops.len(), ops, "nothing durable changed");
    let active = sim.mgr.lease(&t("alice"), lease.id).unwrap().clone();
    assert_eq!(sim.host_cmds, vec![(h, HostCommand::Sync(vec![active]))]);
    // The registration counts as a heartbeat.
    sim.advance(2_000);
    assert!(sim.mgr.host(h).unwrap().up);
}

#[test]
fn registering_with_fewer_devices_loses_only_the_leases_that_no_longer_fit() {
    let mut sim = Sim::new();
    let h = sim.host("h:1", Capacity::new(8, 0).with_accelerators("gpu", 2));
    let one = LeaseRequest::new(1, 60_000).with_accelerators("gpu", 1);
    let keep = sim.request("alice", &one).unwrap();
    let lose = sim.request("bob", &one).unwrap();
    assert_eq!(
        (
            keep.accelerators["gpu"].clone(),
            lose.accelerators["gpu"].clone()
        ),
        (vec![0], vec![1])
    );
    sim.clear_logs();
    assert_eq!(
        sim.host("h:1", Capacity::new(8, 0).with_accelerators("gpu", 1)),
        h
    );
    let bob_lease = sim.mgr.lease(&t("bob"), lose.id).unwrap();
    assert_eq!(
        bob_lease.state,
        LeaseState::Lost {
            reason: LostReason::CapacityChanged
        }
    );
    assert!(sim.mgr.lease(&t("alice"), keep.id).unwrap().is_active());
    assert_eq!(
        sim.events,
        vec![(
            t("bob"),
            Event::LeaseLost {
                lease: lose.id,
                host: h,
                reason: LostReason::CapacityChanged
            }
        )]
    );
    let kept = sim.mgr.lease(&t("alice"), keep.id).unwrap().clone();
    assert_eq!(sim.host_cmds, vec![(h, HostCommand::Sync(vec![kept]))]);
    assert_eq!(sim.free(h), Capacity::new(7, 0).with_accelerators("gpu", 0));
    assert_eq!(
        sim.mgr.host(h).unwrap().capacity,
        Capacity::new(8, 0).with_accelerators("gpu", 1)
    );
}

#[test]
fn invalid_registrations_are_refused() {
    let config = Config {
        max_host_cores: 64,
        max_devices_per_kind: 8,
        ..Config::default()
    };
    let mut sim = Sim::with_config(config);
    let cases = [
        (
            "",
            Capacity::new(1, 0),
            "invalid registration: empty address",
        ),
        (
            "a:1",
            Capacity::new(65, 0),
            "invalid registration: 65 cores exceed the maximum 64",
        ),
        (
            "a:1",
            Capacity::new(1, 0).with_accelerators("gpu", 9),
            "invalid registration: 9 gpu exceed the maximum 8 per kind",
        ),
        (
            "a:1",
            Capacity::new(1, 0).with_accelerators("", 1),
            "invalid registration: empty accelerator kind",
        ),
    ];
    for (address, cap, msg) in cases {
        assert_eq!(
            sim.mgr
                .register_host(0, address, cap)
                .unwrap_err()
                .to_string(),
            msg
        );
    }
    assert_eq!(sim.mgr.hosts().count(), 0);
    assert!(sim.mgr.poll_output().is_none());
}

#[test]
fn deregistering_loses_leases_at_once() {
    let mut sim = Sim::new();
    let h = sim.host("h:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    sim.mgr.deregister_host(10, h).unwrap();
    sim.drain();
    let l = sim.mgr.lease(&t("alice"), lease.id).unwrap();
    assert_eq!(
        l.state,
        LeaseState::Lost {
            reason: LostReason::HostDeregistered
        }
    );
    assert!(!sim.mgr.host(h).unwrap().up);
    assert_eq!(sim.mgr.deregister_host(20, h), Ok(()), "idempotent");
    assert_eq!(
        sim.mgr.deregister_host(20, HostId(9)),
        Err(LeaseError::UnknownHost(HostId(9)))
    );
    assert_eq!(
        sim.mgr.heartbeat(20, HostId(9)),
        Err(LeaseError::UnknownHost(HostId(9)))
    );
}
