//! The scaling policy against a real lease manager core, fake clock.

use super::*;
use crate::proto::{Capacity, Config, LeaseRequest, Manager, TenantId};

fn policy(min: u32, max: u32) -> Policy {
    Policy {
        min_hosts: min,
        max_hosts: max,
        idle_timeout_ms: 5_000,
    }
}

fn mgr() -> Manager {
    Manager::new(Config {
        heartbeat_timeout_ms: 1 << 40,
        ..Config::default()
    })
}

fn job(id: &str, state: JobState) -> JobStatus {
    JobStatus {
        id: id.into(),
        state,
    }
}

fn submits(a: &[Action]) -> usize {
    a.iter().filter(|a| **a == Action::Submit).count()
}

#[test]
fn waiting_requests_ask_for_hosts_up_to_the_maximum_and_no_more_while_they_start() {
    let mut m = mgr();
    let mut p = Provisioner::new(policy(0, 3));
    assert!(p.plan(0, &m).is_empty(), "nothing waits: nothing to do");
    let t = TenantId::from("a");
    for _ in 0..5 {
        m.queue_lease(0, &t, &LeaseRequest::new(1, 60_000), 1, 60_000)
            .unwrap();
    }
    // One core per host until one registers: 5 wanted, 3 at most.
    assert_eq!(submits(&p.plan(0, &m)), 3);
    assert_eq!(submits(&p.plan(1, &m)), 0, "submissions under way count");
    assert!(p.reason("slurm").unwrap().contains("submitting"));
    for id in ["11", "12", "13"] {
        p.submitted(0, Ok(id.into()));
    }
    p.observed(
        1,
        &[
            job("11", JobState::Running),
            job("12", JobState::Pending("Resources".into())),
            job("13", JobState::Pending("Priority".into())),
        ],
    );
    assert!(p
        .reason("slurm")
        .unwrap()
        .contains("job 12 pending (Resources)"));
    // Job 11's executor manager registers with 2 cores: two leases granted.
    let h = m.register_host(2, "n1:1", Capacity::new(2, 1024)).unwrap();
    p.registered(&"11".into(), h, 2);
    assert_eq!(m.queue_depth(), 3);
    assert_eq!(
        submits(&p.plan(3, &m)),
        0,
        "two jobs still coming for three waiting cores"
    );
    // Job 13 failed: one more is asked for in its place, after a pause.
    p.observed(
        4,
        &[
            job("11", JobState::Running),
            job("12", JobState::Pending("Resources".into())),
        ],
    );
    assert_eq!(p.jobs().count(), 2);
    assert!(p
        .reason("slurm")
        .unwrap()
        .contains("job 13 ended before its executor manager registered"));
    assert_eq!(submits(&p.plan(5, &m)), 0, "backing off");
    assert_eq!(submits(&p.plan(1_004, &m)), 1);
}

#[test]
fn jobs_that_keep_failing_back_off_up_to_five_minutes() {
    let mut m = mgr();
    let mut p = Provisioner::new(policy(0, 1));
    let a = TenantId::from("a");
    m.queue_lease(0, &a, &LeaseRequest::new(1, 60_000), 1, 3_600_000)
        .unwrap();
    let mut now = 0;
    let mut pauses = Vec::new();
    for i in 0..12 {
        // Submitted as soon as the pause allows.
        let mut t = now;
        while submits(&p.plan(t, &m)) == 0 {
            t += 1_000;
            assert!(t < now + 400_000, "never resubmitted");
        }
        pauses.push(t - now);
        p.submitted(0, Ok(i.to_string()));
        now = t;
        p.observed(
            now,
            &[job(&i.to_string(), JobState::Ended("failed".into()))],
        );
    }
    assert_eq!(&pauses[..4], [0, 1_000, 2_000, 4_000]);
    assert_eq!(*pauses.last().unwrap(), MAX_BACKOFF_MS);
    // A host that registers ends the backoff.
    assert_eq!(submits(&p.plan(now + MAX_BACKOFF_MS, &m)), 1);
    p.submitted(0, Ok("ok".into()));
    let h = m.register_host(now, "n:1", Capacity::new(1, 1024)).unwrap();
    p.registered(&"ok".into(), h, 1);
    assert!(p.reason("slurm").is_none());
}

#[test]
fn idle_hosts_are_given_back_after_the_timeout_down_to_the_minimum() {
    let mut m = mgr();
    let mut p = Provisioner::new(policy(1, 4));
    let t = TenantId::from("a");
    assert_eq!(submits(&p.plan(0, &m)), 1, "the minimum is kept up");
    p.submitted(0, Ok("1".into()));
    p.submitted(0, Ok("2".into()));
    let h1 = m.register_host(0, "n1:1", Capacity::new(1, 1024)).unwrap();
    let h2 = m.register_host(0, "n2:1", Capacity::new(1, 1024)).unwrap();
    p.registered(&"1".into(), h1, 1);
    p.registered(&"2".into(), h2, 1);
    let lease = m
        .request_lease(0, &t, &LeaseRequest::new(1, 60_000))
        .unwrap();
    assert!(p.plan(0, &m).is_empty());
    assert_eq!(p.next_deadline(), Some(5_000));
    assert!(p.plan(4_999, &m).is_empty());
    // One idle past the timeout: cancelled; the busy one stays.
    let a = p.plan(5_000, &m);
    let idle = if lease.host == h1 { "2" } else { "1" };
    assert_eq!(a, [Action::Cancel(idle.into())]);
    // The other goes idle too, but it is the minimum.
    m.release(6_000, &t, lease.id).unwrap();
    assert!(p.plan(60_000, &m).is_empty());
    // A failed cancel is tried again.
    p.cancel_failed(&idle.into(), "scancel: timeout".into());
    assert_eq!(p.plan(60_001, &m), [Action::Cancel(idle.into())]);
}

#[test]
fn requests_no_host_could_hold_ask_for_nothing() {
    let mut m = mgr();
    let mut p = Provisioner::new(policy(0, 4));
    p.submitted(0, Ok("1".into()));
    let h = m.register_host(0, "n1:1", Capacity::new(2, 1024)).unwrap();
    p.registered(&"1".into(), h, 2);
    let t = TenantId::from("a");
    m.queue_lease(0, &t, &LeaseRequest::new(8, 60_000), 1, 60_000)
        .unwrap();
    assert_eq!(submits(&p.plan(1, &m)), 0);
}

#[test]
fn a_poll_older_than_a_submission_does_not_lose_the_job() {
    let m = mgr();
    let mut p = Provisioner::new(policy(1, 1));
    assert_eq!(submits(&p.plan(0, &m)), 1);
    p.submitted(100, Ok("7".into()));
    // The poll that started before sbatch returned lists nothing.
    p.observed(200, &[]);
    assert_eq!(p.jobs().count(), 1);
    assert_eq!(submits(&p.plan(300, &m)), 0, "not submitted twice");
    // Still unlisted long after: gone, and counted as a failure.
    p.observed(100 + 30_001, &[]);
    assert_eq!(p.jobs().count(), 0);
    assert!(p.reason("slurm").unwrap().contains("job 7 ended"));
}
