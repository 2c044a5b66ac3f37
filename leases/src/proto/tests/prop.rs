//! Random operation sequences keep the manager's invariants.

use super::util::{t, Sim};
use crate::proto::{
    Capacity, Config, HostId, LeaseError, LeaseId, LeaseRequest, Manager, State, StoreOp, TenantId,
    Usage, UsageReport,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{BTreeMap, BTreeSet};

/// Who acts on a lease: its owner, or some tenant (maybe another one).
type Actor = Option<u8>;

#[derive(Debug, Clone)]
enum Op {
    Register {
        addr: u8,
        cores: u32,
        gpus: u32,
        mem: u64,
    },
    Heartbeat {
        host: u64,
    },
    HeartbeatAll,
    Deregister {
        host: u64,
    },
    Request {
        tenant: u8,
        cores: u32,
        gpus: u32,
        mem: u64,
        duration: u64,
        hot: i64,
    },
    Renew {
        actor: Actor,
        lease: Index,
        extra: u64,
    },
    Release {
        actor: Actor,
        lease: Index,
    },
    /// `host: None` reports from the lease's own host.
    Usage {
        host: Option<u64>,
        lease: Index,
        invocations: u64,
        exec_ms: u64,
    },
    Crash {
        host: Option<u64>,
        lease: Index,
    },
    /// An id that may not exist.
    Stray {
        tenant: u8,
        lease: u64,
    },
    Advance {
        ms: u64,
    },
    /// Time going backwards: must be ignored.
    Rewind {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let actor = prop::option::weighted(0.3, 0..3u8);
    let host = prop::option::weighted(0.2, 1..6u64);
    prop_oneof![
        2 => (0..4u8, 0..9u32, 0..4u32, 0..4u64)
            .prop_map(|(addr, cores, gpus, mem)| Op::Register { addr, cores, gpus, mem: mem * 1024 }),
        2 => (1..6u64).prop_map(|host| Op::Heartbeat { host }),
        3 => Just(Op::HeartbeatAll),
        1 => (1..6u64).prop_map(|host| Op::Deregister { host }),
        6 => (0..3u8, 0..6u32, 0..3u32, 0..3u64, 1..6_000u64, -1..3i64).prop_map(
            |(tenant, cores, gpus, mem, duration, hot)| Op::Request { tenant, cores, gpus, mem: mem * 512, duration, hot }
        ),
        2 => (actor.clone(), any::<Index>(), 0..6_000u64).prop_map(|(actor, lease, extra)| Op::Renew { actor, lease, extra }),
        2 => (actor, any::<Index>()).prop_map(|(actor, lease)| Op::Release { actor, lease }),
        2 => (host.clone(), any::<Index>(), 0..100u64, 0..50u64)
            .prop_map(|(host, lease, invocations, exec_ms)| Op::Usage { host, lease, invocations, exec_ms }),
        1 => (host, any::<Index>()).prop_map(|(host, lease)| Op::Crash { host, lease }),
        1 => (0..3u8, 0..30u64).prop_map(|(tenant, lease)| Op::Stray { tenant, lease }),
        3 => (0..2_500u64).prop_map(|ms| Op::Advance { ms }),
        1 => (0..2_500u64).prop_map(|ms| Op::Rewind { ms }),
    ]
}

fn config() -> Config {
    Config {
        heartbeat_timeout_ms: 3_000,
        max_lease_ms: 8_000,
        retain_finished_ms: Some(4_000),
        ..Config::default()
    }
}

const TENANTS: [&str; 3] = ["alice", "bob", "carol"];

/// A retained lease picked by `index`: (id, owner, host).
fn pick(sim: &Sim, index: &Index) -> Option<(LeaseId, TenantId, HostId)> {
    let leases: Vec<_> = sim.mgr.state().leases().collect();
    (!leases.is_empty()).then(|| {
        let l = leases[index.index(leases.len())];
        (l.id, l.tenant.clone(), l.host)
    })
}

/// The acting tenant: the owner, or the named one.
fn actor(actor: Actor, owner: &TenantId) -> TenantId {
    actor.map_or_else(|| owner.clone(), |a| t(TENANTS[usize::from(a)]))
}

/// Runs one op; errors are fine, panics and broken invariants are not.
fn run(sim: &mut Sim, op: &Op) {
    let now = sim.now;
    match op {
        Op::Register {
            addr,
            cores,
            gpus,
            mem,
        } => {
            let cap = Capacity::new(*cores, *mem).with_accelerators("gpu", *gpus);
            sim.mgr
                .register_host(now, format!("host-{addr}:7000"), cap)
                .unwrap();
        }
        Op::Heartbeat { host } => {
            let _ = sim.mgr.heartbeat(now, HostId(*host));
        }
        Op::HeartbeatAll => {
            let hosts: Vec<HostId> = sim.mgr.hosts().map(|h| h.id).collect();
            for h in hosts {
                let _ = sim.mgr.heartbeat(now, h);
            }
        }
        Op::Deregister { host } => {
            let _ = sim.mgr.deregister_host(now, HostId(*host));
        }
        Op::Request {
            tenant,
            cores,
            gpus,
            mem,
            duration,
            hot,
        } => {
            let req = LeaseRequest::new(*cores, *duration)
                .with_memory(*mem)
                .with_accelerators("gpu", *gpus)
                .with_hot_timeout(*hot);
            if let Ok(lease) = sim
                .mgr
                .request_lease(now, &t(TENANTS[usize::from(*tenant)]), &req)
            {
                assert_eq!(lease.core_ids.len(), *cores as usize);
                assert_eq!(
                    lease.accelerators.get("gpu").map_or(0, Vec::len),
                    *gpus as usize
                );
            }
        }
        Op::Renew {
            actor: who,
            lease,
            extra,
        } => {
            if let Some((id, owner, _)) = pick(sim, lease) {
                let tenant = actor(*who, &owner);
                let r = sim.mgr.renew(now, &tenant, id, *extra);
                if tenant != owner {
                    assert_eq!(r, Err(LeaseError::NotFound(id)));
                }
            }
        }
        Op::Release { actor: who, lease } => {
            if let Some((id, owner, _)) = pick(sim, lease) {
                let tenant = actor(*who, &owner);
                let r = sim.mgr.release(now, &tenant, id);
                if tenant != owner {
                    assert_eq!(r, Err(LeaseError::NotFound(id)));
                }
            }
        }
        Op::Usage {
            host,
            lease,
            invocations,
            exec_ms,
        } => {
            if let Some((id, _, on)) = pick(sim, lease) {
                let delta = UsageReport {
                    invocations: *invocations,
                    exec_ms: *exec_ms,
                    ..UsageReport::default()
                };
                let _ = sim
                    .mgr
                    .report_usage(now, host.map_or(on, HostId), id, &delta);
            }
        }
        Op::Crash { host, lease } => {
            if let Some((id, _, on)) = pick(sim, lease) {
                let _ = sim
                    .mgr
                    .executor_crashed(now, host.map_or(on, HostId), id, "killed");
            }
        }
        Op::Stray { tenant, lease } => {
            let tenant = t(TENANTS[usize::from(*tenant)]);
            let _ = sim.mgr.release(now, &tenant, LeaseId(*lease));
            let _ = sim.mgr.renew(now, &tenant, LeaseId(*lease), 1);
        }
        Op::Advance { ms } => sim.now += ms,
        Op::Rewind { ms } => {
            let _ = sim.mgr.heartbeat(now.saturating_sub(*ms), HostId(1));
        }
    }
    sim.mgr.handle_timeout(sim.now);
    sim.drain();
}

/// Every host's free pool and its active leases partition its capacity.
fn check_pools(state: &State) {
    let mut active_by_host: BTreeMap<HostId, Vec<_>> = BTreeMap::new();
    for l in state.leases().filter(|l| l.is_active()) {
        active_by_host.entry(l.host).or_default().push(l);
    }
    for host in state.hosts() {
        let leases = active_by_host.remove(&host.id).unwrap_or_default();
        assert!(
            host.up || leases.is_empty(),
            "down host {} holds leases",
            host.id
        );
        let mut cores: BTreeSet<u32> = host.free.cores.clone();
        let mut memory = host.free.memory_mib;
        let mut devices: BTreeMap<String, BTreeSet<u32>> = host.free.accelerators.clone();
        for l in &leases {
            assert_eq!(l.core_ids.len(), l.cores as usize);
            for c in &l.core_ids {
                assert!(
                    cores.insert(*c),
                    "core {c} of host {} leased twice or also free",
                    host.id
                );
            }
            memory += l.memory_mib;
            for (kind, ids) in &l.accelerators {
                for d in ids {
                    assert!(
                        devices.entry(kind.clone()).or_default().insert(*d),
                        "{kind} {d} leased twice"
                    );
                }
            }
        }
        assert_eq!(
            cores,
            (0..host.capacity.cores).collect(),
            "free + leased cores = capacity"
        );
        assert_eq!(
            memory, host.capacity.memory_mib,
            "free + leased memory = capacity"
        );
        let want: BTreeMap<String, BTreeSet<u32>> = host
            .capacity
            .accelerators
            .iter()
            .map(|(k, &n)| (k.clone(), (0..n).collect()))
            .collect();
        assert_eq!(devices, want, "free + leased devices = capacity");
    }
    assert!(active_by_host.is_empty(), "active leases on unknown hosts");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_invariants(ops in prop::collection::vec(op(), 20..100)) {
        let mut sim = Sim::with_config(config());
        let mut seen: BTreeMap<LeaseId, Usage> = BTreeMap::new();
        // A checkpoint taken mid-run, and how much of the log it replaces.
        let mut ck: Option<(Vec<StoreOp>, usize)> = None;
        for (i, op) in ops.iter().enumerate() {
            run(&mut sim, op);
            check_pools(sim.mgr.state());
            if let Some(next) = sim.mgr.poll_timeout() {
                prop_assert!(next > sim.now, "timer at {next} still due after handle_timeout({})", sim.now);
            }
            for l in sim.mgr.state().leases() {
                if let Some(before) = seen.get(&l.id) {
                    prop_assert!(l.usage.covers(before), "usage of lease {} decreased at op {i}: {op:?}", l.id);
                    prop_assert!(l.usage_at(sim.now).covers(before));
                }
                seen.insert(l.id, l.usage.clone());
            }
            if i % 8 == 0 {
                let replayed = sim.replayed();
                prop_assert_eq!(replayed.state(), sim.mgr.state());
                let checkpoint = sim.mgr.checkpoint();
                prop_assert!(checkpoint.len() <= sim.ops.len() + 1);
                let from_checkpoint = Manager::replay(config(), sim.now, checkpoint.clone()).unwrap();
                prop_assert_eq!(from_checkpoint.state(), sim.mgr.state());
                if i == ops.len() / 2 / 8 * 8 {
                    ck = Some((checkpoint, sim.ops.len()));
                }
            }
        }
        let replayed = Manager::replay(config(), sim.now, sim.ops.clone()).unwrap();
        prop_assert_eq!(replayed.state(), sim.mgr.state());
        check_pools(replayed.state());
        // A compacted log plus what was appended after it is the same state.
        let (checkpoint, at) = ck.expect("a checkpoint mid-run");
        let tail = sim.ops[at..].iter().cloned();
        let compacted = Manager::replay(config(), sim.now, checkpoint.into_iter().chain(tail)).unwrap();
        prop_assert_eq!(compacted.state(), sim.mgr.state());
        check_pools(compacted.state());
    }
}
