//! Renew, release, expiry, ownership, usage and retention.

use super::util::{no_heartbeats, t, Sim};
use crate::proto::{
    Capacity, Config, Event, HostCommand, LeaseError, LeaseId, LeaseRequest, LeaseState,
    LostReason, StoreOp, UsageReport,
};

#[test]
fn release_returns_resources_and_stops_the_executor() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("a:1", Capacity::new(8, 4096).with_accelerators("gpu", 1));
    let lease = sim
        .request(
            "alice",
            &LeaseRequest::new(4, 60_000)
                .with_memory(1024)
                .with_accelerators("gpu", 1),
        )
        .unwrap();
    assert_eq!(
        sim.free(h),
        Capacity::new(4, 3072).with_accelerators("gpu", 0)
    );
    sim.now = 2_500;
    let usage = sim.mgr.release(sim.now, &t("alice"), lease.id).unwrap();
    sim.drain();
    assert_eq!(usage.core_ms, 4 * 2_500);
    // Its one GPU, held 2.5 s, is 2,500 GPU-ms.
    assert_eq!(usage.gpu_ms, 2_500);
    assert_eq!(
        sim.free(h),
        Capacity::new(8, 4096).with_accelerators("gpu", 1)
    );
    assert_eq!(
        sim.host_cmds.last(),
        Some(&(h, HostCommand::Stop(lease.id)))
    );
    let l = sim.mgr.lease(&t("alice"), lease.id).unwrap();
    assert_eq!(
        (l.state.clone(), l.ended_at_ms),
        (LeaseState::Released, Some(2_500))
    );
    let again = sim.mgr.release(sim.now, &t("alice"), lease.id).unwrap_err();
    assert_eq!(again.to_string(), format!("lease {} is released", lease.id));
}

#[test]
fn expiry_returns_resources_and_tells_tenant_and_host() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 1_000)).unwrap();
    assert_eq!(sim.mgr.poll_timeout(), Some(1_000));
    sim.advance(999);
    assert!(sim.mgr.lease(&t("alice"), lease.id).unwrap().is_active());
    assert!(sim.events.is_empty());
    sim.advance(1);
    let l = sim.mgr.lease(&t("alice"), lease.id).unwrap();
    assert_eq!(
        (l.state.clone(), l.ended_at_ms, l.usage.core_ms),
        (LeaseState::Expired, Some(1_000), 2_000)
    );
    assert_eq!(
        sim.events,
        vec![(t("alice"), Event::LeaseExpired { lease: lease.id })]
    );
    assert_eq!(
        sim.host_cmds.last(),
        Some(&(h, HostCommand::Stop(lease.id)))
    );
    assert_eq!(sim.free(h).cores, 8);
}

#[test]
fn a_late_timer_charges_only_until_expiry() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(3, 1_000)).unwrap();
    sim.advance(5_000);
    let l = sim.mgr.lease(&t("alice"), lease.id).unwrap();
    assert_eq!((l.ended_at_ms, l.usage.core_ms), (Some(1_000), 3_000));
}

#[test]
fn renew_moves_expiry_within_the_maximum() {
    let config = Config {
        max_lease_ms: 10_000,
        ..no_heartbeats()
    };
    let mut sim = Sim::with_config(config);
    sim.host("a:1", Capacity::new(8, 0));
    let alice = t("alice");
    let lease = sim.request("alice", &LeaseRequest::new(1, 1_000)).unwrap();
    sim.now = 500;
    assert_eq!(sim.mgr.renew(sim.now, &alice, lease.id, 500), Ok(1_500));
    sim.drain();
    assert_eq!(sim.mgr.poll_timeout(), Some(1_500));
    let err = sim.mgr.renew(sim.now, &alice, lease.id, 9_001).unwrap_err();
    assert_eq!(
        err,
        LeaseError::TooLong {
            ahead_ms: 10_001,
            max_ms: 10_000
        }
    );
    assert_eq!(
        err.to_string(),
        "lease would expire 10001 ms from now, more than the maximum 10000 ms"
    );
    sim.advance(999);
    assert!(sim.mgr.lease(&alice, lease.id).unwrap().is_active());
    sim.advance(1);
    assert_eq!(
        sim.mgr.lease(&alice, lease.id).unwrap().state,
        LeaseState::Expired
    );
    let late = sim.mgr.renew(sim.now, &alice, lease.id, 1_000).unwrap_err();
    assert_eq!(late.to_string(), format!("lease {} is expired", lease.id));
}

#[test]
fn renewing_at_the_expiry_instant_is_too_late() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(1, 1_000)).unwrap();
    let err = sim
        .mgr
        .renew(1_000, &t("alice"), lease.id, 1_000)
        .unwrap_err();
    assert_eq!(
        err,
        LeaseError::NotActive {
            lease: lease.id,
            state: LeaseState::Expired
        }
    );
}

#[test]
fn another_tenant_cannot_see_renew_or_release_a_lease() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    sim.clear_logs();
    let (bob, missing) = (t("bob"), LeaseId(999));
    let ops = sim.ops.len();

    assert_eq!(
        sim.mgr.lease(&bob, lease.id).unwrap_err(),
        LeaseError::NotFound(lease.id)
    );
    assert_eq!(
        sim.mgr.renew(10, &bob, lease.id, 1).unwrap_err(),
        LeaseError::NotFound(lease.id)
    );
    assert_eq!(
        sim.mgr.release(10, &bob, lease.id).unwrap_err(),
        LeaseError::NotFound(lease.id)
    );
    assert_eq!(sim.mgr.leases_of(&bob).count(), 0);
    // Same answer as for an id never granted.
    assert_eq!(
        sim.mgr.release(10, &bob, missing).unwrap_err(),
        LeaseError::NotFound(missing)
    );
    assert_eq!(
        sim.mgr
            .lease(&bob, lease.id)
            .unwrap_err()
            .to_string()
            .replace(&lease.id.to_string(), "N"),
        sim.mgr
            .lease(&bob, missing)
            .unwrap_err()
            .to_string()
            .replace(&missing.to_string(), "N"),
    );
    sim.drain();
    assert_eq!(sim.ops.len(), ops);
    assert!(sim.host_cmds.is_empty() && sim.events.is_empty());
    assert!(sim.mgr.lease(&t("alice"), lease.id).unwrap().is_active());
    assert_eq!(sim.free(h).cores, 6);
    assert_eq!(
        sim.mgr
            .leases_of(&t("alice"))
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        vec![lease.id]
    );
}

#[test]
fn usage_accumulates_and_core_time_accrues() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("a:1", Capacity::new(8, 0));
    let other = sim.host("b:1", Capacity::new(1, 0));
    let alice = t("alice");
    let lease = sim.request("alice", &LeaseRequest::new(2, 60_000)).unwrap();
    assert_eq!(lease.host, h);
    let delta = UsageReport {
        hot_poll_ms: 10,
        exec_ms: 5,
        invocations: 100,
        bytes_in: 800,
        bytes_out: 400,
        function_timeouts: 0,
    };
    sim.mgr.report_usage(1_000, h, lease.id, &delta).unwrap();
    sim.mgr.report_usage(3_000, h, lease.id, &delta).unwrap();
    let u = &sim.mgr.lease(&alice, lease.id).unwrap().usage;
    assert_eq!(
        (
            u.hot_poll_ms,
            u.exec_ms,
            u.invocations,
            u.bytes_in,
            u.bytes_out
        ),
        (20, 10, 200, 1600, 800)
    );
    assert_eq!(u.core_ms, 2 * 3_000);
    assert_eq!(
        sim.mgr
            .lease(&alice, lease.id)
            .unwrap()
            .usage_at(4_000)
            .core_ms,
        2 * 4_000
    );

    assert_eq!(
        sim.mgr.report_usage(3_000, other, lease.id, &delta),
        Err(LeaseError::NotOnHost {
            lease: lease.id,
            host: other
        })
    );
    let ghost = crate::proto::HostId(77);
    assert_eq!(
        sim.mgr.report_usage(3_000, ghost, lease.id, &delta),
        Err(LeaseError::UnknownHost(ghost))
    );

    let final_usage = sim.mgr.release(5_000, &alice, lease.id).unwrap();
    assert_eq!(final_usage.core_ms, 2 * 5_000);
    // The executor's last report after the stop still counts.
    sim.mgr.report_usage(5_001, h, lease.id, &delta).unwrap();
    let u = &sim.mgr.lease(&alice, lease.id).unwrap().usage;
    assert_eq!((u.invocations, u.core_ms), (300, 2 * 5_000));
    assert_eq!(
        sim.mgr
            .lease(&alice, lease.id)
            .unwrap()
            .usage_at(9_000)
            .core_ms,
        2 * 5_000
    );
}

#[test]
fn a_crashed_executor_loses_its_lease_and_frees_resources() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("a:1", Capacity::new(8, 0).with_accelerators("gpu", 1));
    let lease = sim
        .request(
            "alice",
            &LeaseRequest::new(2, 60_000).with_accelerators("gpu", 1),
        )
        .unwrap();
    sim.mgr
        .executor_crashed(100, h, lease.id, "SIGSEGV")
        .unwrap();
    sim.drain();
    let reason = LostReason::ExecutorCrashed {
        reason: "SIGSEGV".into(),
    };
    let l = sim.mgr.lease(&t("alice"), lease.id).unwrap();
    assert_eq!(
        l.state,
        LeaseState::Lost {
            reason: reason.clone()
        }
    );
    assert_eq!(l.state.to_string(), "lost (executor crashed: SIGSEGV)");
    assert_eq!(
        sim.events,
        vec![(
            t("alice"),
            Event::LeaseLost {
                lease: lease.id,
                host: h,
                reason
            }
        )]
    );
    assert_eq!(sim.free(h), Capacity::new(8, 0).with_accelerators("gpu", 1));
    assert!(matches!(
        sim.mgr.executor_crashed(200, h, lease.id, "again"),
        Err(LeaseError::NotActive { .. })
    ));
}

#[test]
fn ended_leases_are_forgotten_after_retention() {
    let config = Config {
        retain_finished_ms: Some(1_000),
        ..no_heartbeats()
    };
    let mut sim = Sim::with_config(config);
    sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(1, 60_000)).unwrap();
    sim.now = 500;
    sim.mgr.release(sim.now, &t("alice"), lease.id).unwrap();
    sim.drain();
    assert_eq!(sim.mgr.poll_timeout(), Some(1_500));
    sim.advance(999);
    assert_eq!(sim.mgr.leases_of(&t("alice")).count(), 1);
    sim.advance(1);
    assert_eq!(sim.mgr.leases_of(&t("alice")).count(), 0);
    assert_eq!(
        sim.ops.last(),
        Some(&StoreOp::LeaseForgotten { lease: lease.id })
    );
    assert_eq!(
        sim.mgr.lease(&t("alice"), lease.id),
        Err(LeaseError::NotFound(lease.id))
    );
    // Ids are not reused.
    let next = sim.request("alice", &LeaseRequest::new(1, 60_000)).unwrap();
    assert!(next.id > lease.id);
}

#[test]
fn retention_counts_from_the_end_even_near_the_epoch() {
    let config = Config {
        retain_finished_ms: Some(1_000),
        ..no_heartbeats()
    };
    let mut sim = Sim::with_config(config);
    sim.host("a:1", Capacity::new(8, 0));
    let lease = sim.request("alice", &LeaseRequest::new(1, 60_000)).unwrap();
    sim.mgr.release(0, &t("alice"), lease.id).unwrap();
    sim.advance(999);
    assert!(sim.mgr.lease(&t("alice"), lease.id).is_ok());
    sim.advance(1);
    assert!(sim.mgr.lease(&t("alice"), lease.id).is_err());
}

#[test]
fn the_clock_never_goes_backwards() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("a:1", Capacity::new(8, 0));
    sim.mgr.handle_timeout(10_000);
    let lease = sim
        .mgr
        .request_lease(5, &t("alice"), &LeaseRequest::new(1, 1_000))
        .unwrap();
    assert_eq!((lease.granted_at_ms, lease.expires_at_ms), (10_000, 11_000));
}
