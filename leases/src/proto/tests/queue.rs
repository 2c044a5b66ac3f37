//! Queued requests and quotas: fairness, groups, deadlines, cancellation,
//! replay, with a fake clock.

use super::util::{no_heartbeats, t, Sim};
use crate::proto::{
    Capacity, Event, LeaseError, LeaseRequest, Manager, PlacementError, Queued, Quota, StoreOp,
    TicketId, TicketOutcome,
};

fn one_core() -> LeaseRequest {
    LeaseRequest::new(1, 60_000)
}

impl Sim {
    fn queue(&mut self, tenant: &str, req: &LeaseRequest, count: u32, wait_ms: u64) -> Queued {
        let r = self
            .mgr
            .queue_lease(self.now, &t(tenant), req, count, wait_ms)
            .expect("queued");
        self.drain();
        r
    }

    fn release(&mut self, tenant: &str, lease: crate::proto::LeaseId) {
        self.mgr
            .release(self.now, &t(tenant), lease)
            .expect("released");
        self.drain();
    }

    fn granted(&self) -> Vec<(String, TicketId)> {
        self.events
            .iter()
            .filter_map(|(who, e)| match e {
                Event::TicketGranted { ticket, .. } => Some((who.to_string(), *ticket)),
                _ => None,
            })
            .collect()
    }
}

fn waiting(q: &Queued) -> TicketId {
    match q {
        Queued::Waiting { ticket, .. } => *ticket,
        other => panic!("granted at once: {other:?}"),
    }
}

#[test]
fn a_request_that_fits_is_granted_at_once_and_one_that_does_not_waits_with_the_reason() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(2, 1024));
    let Queued::Granted { leases, .. } = sim.queue("a", &LeaseRequest::new(2, 60_000), 1, 10_000)
    else {
        panic!("not granted at once");
    };
    assert_eq!(leases.len(), 1);
    let q = sim.queue("a", &one_core(), 1, 10_000);
    let Queued::Waiting { ticket, reason } = &q else {
        panic!("granted with no free core");
    };
    assert!(reason.contains("largest free cores is 0"), "{reason}");
    let view = sim.mgr.ticket(&t("a"), *ticket).unwrap();
    assert!(view.ticket.is_waiting());
    assert_eq!(view.ahead, Some(0));
    // Another tenant sees nothing of it.
    assert!(matches!(
        sim.mgr.ticket(&t("b"), *ticket),
        Err(LeaseError::TicketNotFound(_))
    ));
    // Capacity appears: granted, and the tenant is told.
    sim.clear_logs();
    sim.release("a", leases[0].id);
    assert_eq!(sim.granted(), [("a".to_string(), *ticket)]);
    let view = sim.mgr.ticket(&t("a"), *ticket).unwrap();
    assert!(matches!(view.ticket.outcome, Some(TicketOutcome::Granted(ref l)) if l.len() == 1));
    assert_eq!(view.leases.len(), 1);
}

#[test]
fn tenants_are_served_in_turn_and_each_tenant_first_in_first_out() {
    let mut sim = Sim::with_config(no_heartbeats());
    let h = sim.host("h1:1", Capacity::new(1, 1024));
    let Queued::Granted { leases, .. } = sim.queue("x", &one_core(), 1, 1_000_000) else {
        panic!("not granted at once");
    };
    let mut holder = ("x".to_string(), leases[0].id);
    // a queues three, then b two, then c one.
    let mut order = Vec::new();
    for (who, n) in [("a", 3), ("b", 2), ("c", 1)] {
        for _ in 0..n {
            order.push((who, waiting(&sim.queue(who, &one_core(), 1, 1_000_000))));
        }
    }
    assert_eq!(sim.mgr.queue_depth(), 6);
    // One core: each release grants the next request in fair order.
    let mut served = Vec::new();
    for _ in 0..6 {
        sim.clear_logs();
        sim.release(&holder.0.clone(), holder.1);
        let g = sim.granted();
        assert_eq!(g.len(), 1, "one core, one grant");
        let (who, ticket) = g[0].clone();
        let lease = sim.mgr.ticket(&t(&who), ticket).unwrap().leases[0].id;
        assert_eq!(
            sim.mgr
                .state()
                .leases()
                .find(|l| l.id == lease)
                .unwrap()
                .host,
            h
        );
        served.push((who.clone(), ticket));
        holder = (who, lease);
    }
    let names: Vec<&str> = served.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "a", "b", "a"]);
    // Within a tenant, in queueing order.
    for who in ["a", "b"] {
        let mine: Vec<TicketId> = served
            .iter()
            .filter(|(w, _)| w == who)
            .map(|(_, t)| *t)
            .collect();
        let queued: Vec<TicketId> = order
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(mine, queued);
    }
    assert_eq!(sim.mgr.queue_depth(), 0);
}

#[test]
fn a_group_is_granted_all_at_once_or_waits() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(2, 1024));
    sim.host("h2:1", Capacity::new(1, 1024));
    let Queued::Granted { leases: busy, .. } = sim.queue("x", &one_core(), 1, 60_000) else {
        panic!("not granted");
    };
    // Three one-core leases, two cores free: nothing is granted.
    let ticket = waiting(&sim.queue("g", &one_core(), 3, 60_000));
    assert_eq!(
        sim.mgr.state().leases().filter(|l| l.is_active()).count(),
        1
    );
    // A single-core request of another tenant may take a free core meanwhile.
    sim.release("x", busy[0].id);
    let view = sim.mgr.ticket(&t("g"), ticket).unwrap();
    let Some(TicketOutcome::Granted(ids)) = view.ticket.outcome else {
        panic!("the group waits with three cores free");
    };
    assert_eq!(ids.len(), 3);
    let hosts: std::collections::BTreeSet<_> = view.leases.iter().map(|l| l.host).collect();
    assert_eq!(hosts.len(), 2, "spread over both hosts");
}

#[test]
fn a_request_stops_waiting_at_its_deadline_or_when_cancelled() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(1, 1024));
    let _busy = sim.queue("x", &one_core(), 1, 60_000);
    let late = waiting(&sim.queue("a", &one_core(), 1, 5_000));
    let gone = waiting(&sim.queue("a", &one_core(), 1, 60_000));
    assert_eq!(sim.mgr.poll_timeout(), Some(5_000));
    sim.advance(4_999);
    assert!(sim.mgr.ticket(&t("a"), late).unwrap().ticket.is_waiting());
    sim.advance(1);
    let v = sim.mgr.ticket(&t("a"), late).unwrap();
    assert_eq!(v.ticket.outcome, Some(TicketOutcome::TimedOut));
    assert_eq!(v.ticket.ended_at_ms, Some(5_000));
    assert!(sim
        .events
        .contains(&(t("a"), Event::TicketTimedOut { ticket: late })));
    // Only its tenant cancels it, and only while it waits.
    assert!(sim.mgr.cancel_ticket(sim.now, &t("b"), gone).is_err());
    sim.mgr.cancel_ticket(sim.now, &t("a"), gone).unwrap();
    sim.drain();
    assert!(matches!(
        sim.mgr.cancel_ticket(sim.now, &t("a"), gone),
        Err(LeaseError::TicketEnded(_))
    ));
    assert_eq!(sim.mgr.queue_depth(), 0);
    // Ended tickets are forgotten with the ended leases' retention.
    sim.advance(3_600_000);
    assert!(sim.mgr.ticket(&t("a"), late).is_err());
}

#[test]
fn quotas_refuse_what_they_could_never_admit_and_hold_back_the_rest() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(8, 8192).with_accelerators("gpu", 2));
    let quota = Quota {
        cores: Some(3),
        accelerators: Some(1),
        leases: Some(2),
    };
    sim.mgr.set_quota(sim.now, &t("a"), quota.clone());
    sim.drain();
    assert_eq!(sim.mgr.state().quota(&t("a")), quota);
    // Beyond the quota alone: refused at once, with the reason, not queued.
    let e = sim
        .mgr
        .queue_lease(sim.now, &t("a"), &LeaseRequest::new(4, 60_000), 1, 60_000)
        .unwrap_err();
    assert_eq!(e.to_string(), "over the tenant's quota: 4 cores > 3");
    let gpu2 = LeaseRequest::new(1, 60_000).with_accelerators("gpu", 2);
    assert!(matches!(
        sim.mgr.request_lease(sim.now, &t("a"), &gpu2),
        Err(PlacementError::Quota { .. })
    ));
    assert!(sim
        .mgr
        .queue_lease(sim.now, &t("a"), &one_core(), 3, 60_000)
        .is_err());
    // Immediate requests keep to it too.
    let l1 = sim.request("a", &LeaseRequest::new(2, 60_000)).unwrap();
    assert!(matches!(
        sim.request("a", &LeaseRequest::new(2, 60_000)),
        Err(PlacementError::Quota { .. })
    ));
    // A queued request waits while the tenant's own leases hold the quota,
    // though the host has room, and is granted when they end.
    let ticket = waiting(&sim.queue("a", &LeaseRequest::new(2, 60_000), 1, 60_000));
    let reason = sim.mgr.ticket(&t("a"), ticket).unwrap().reason.unwrap();
    assert_eq!(reason, "over the tenant's quota: 4 cores > 3");
    // Another tenant is not held back by a's quota.
    assert!(matches!(
        sim.queue("b", &LeaseRequest::new(4, 60_000), 1, 0),
        Queued::Granted { .. }
    ));
    sim.release("a", l1.id);
    assert!(!sim.mgr.ticket(&t("a"), ticket).unwrap().ticket.is_waiting());
    // Unlimited again.
    sim.mgr.set_quota(sim.now, &t("a"), Quota::default());
    assert!(sim.mgr.state().quotas().next().is_none());
}

#[test]
fn a_replayed_or_checkpointed_manager_keeps_its_queue_and_quotas() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(1, 1024));
    let Queued::Granted { leases, .. } = sim.queue("x", &one_core(), 1, 60_000) else {
        panic!("not granted");
    };
    sim.mgr.set_quota(
        sim.now,
        &t("b"),
        Quota {
            leases: Some(5),
            ..Quota::default()
        },
    );
    sim.drain();
    let a = waiting(&sim.queue("a", &one_core(), 1, 60_000));
    let b = waiting(&sim.queue("b", &one_core(), 1, 60_000));
    let timed = waiting(&sim.queue("c", &one_core(), 1, 10));
    sim.advance(10);
    assert!(sim
        .ops
        .iter()
        .any(|op| matches!(op, StoreOp::TicketQueued(_))));
    for mut mgr in [
        sim.replayed(),
        Manager::replay(sim.mgr.config().clone(), sim.now, sim.mgr.checkpoint()).unwrap(),
    ] {
        assert_eq!(mgr.state(), sim.mgr.state());
        assert_eq!(mgr.queue_depth(), 2);
        assert_eq!(
            mgr.ticket(&t("c"), timed).unwrap().ticket.outcome,
            Some(TicketOutcome::TimedOut)
        );
        // The restarted manager grants the oldest first.
        mgr.release(sim.now, &t("x"), leases[0].id).unwrap();
        assert!(!mgr.ticket(&t("a"), a).unwrap().ticket.is_waiting());
        assert!(mgr.ticket(&t("b"), b).unwrap().ticket.is_waiting());
        // New tickets never reuse an id.
        let Queued::Waiting { ticket, .. } = mgr
            .queue_lease(sim.now, &t("d"), &one_core(), 1, 1_000)
            .unwrap()
        else {
            panic!("granted with no free core");
        };
        assert!(ticket > timed);
    }
}

#[test]
fn bad_queue_requests_are_refused() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(1, 1024));
    for (count, wait) in [
        (0, 1_000),
        (crate::proto::MAX_TICKET_LEASES + 1, 1_000),
        (1, u64::MAX),
    ] {
        assert!(matches!(
            sim.mgr
                .queue_lease(sim.now, &t("a"), &one_core(), count, wait),
            Err(PlacementError::Invalid { .. })
        ));
    }
    assert_eq!(sim.mgr.queue_depth(), 0);
}

#[test]
fn a_tenant_cannot_grow_the_queue_without_bound() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(1, 1024));
    let _busy = sim.queue("x", &one_core(), 1, 60_000);
    for _ in 0..crate::proto::MAX_WAITING_PER_TENANT {
        waiting(&sim.queue("a", &one_core(), 1, 60_000));
    }
    let e = sim
        .mgr
        .queue_lease(sim.now, &t("a"), &one_core(), 1, 60_000)
        .unwrap_err();
    assert!(e.to_string().contains("wait already"), "{e}");
    // Another tenant is not held back.
    waiting(&sim.queue("b", &one_core(), 1, 60_000));
}

#[test]
fn ten_thousand_requests_of_a_hundred_tenants_are_granted_in_turn() {
    let mut sim = Sim::with_config(no_heartbeats());
    sim.host("h1:1", Capacity::new(4096, 1 << 20));
    let Queued::Granted { leases: all, .. } =
        sim.queue("x", &LeaseRequest::new(4096, 3_600_000), 1, 0)
    else {
        panic!("not granted");
    };
    for i in 0..10_000 {
        sim.queue(&format!("t{:03}", i % 100), &one_core(), 1, 3_600_000);
    }
    sim.clear_logs();
    sim.release("x", all[0].id);
    let g = sim.granted();
    assert_eq!(g.len(), 4096);
    // Round robin: in every window of 100 grants, each tenant once.
    for w in g.chunks(100).filter(|w| w.len() == 100) {
        let tenants: std::collections::BTreeSet<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(tenants.len(), 100);
    }
    assert_eq!(sim.mgr.queue_depth(), 10_000 - 4096);
}
