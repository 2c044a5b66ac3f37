//! A simulated driver: a manager, a fake clock and the outputs it produced.

use crate::proto::{
    Capacity, Config, Event, HostCommand, HostId, Lease, LeaseRequest, Manager, Millis, Output,
    PlacementError, StoreOp, TenantId,
};

/// A manager plus everything it asked its driver to do.
pub(super) struct Sim {
    pub(super) mgr: Manager,
    pub(super) now: Millis,
    pub(super) ops: Vec<StoreOp>,
    pub(super) host_cmds: Vec<(HostId, HostCommand)>,
    pub(super) events: Vec<(TenantId, Event)>,
}

impl Sim {
    pub(super) fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub(super) fn with_config(config: Config) -> Self {
        Self {
            mgr: Manager::new(config),
            now: 0,
            ops: vec![],
            host_cmds: vec![],
            events: vec![],
        }
    }

    /// Moves the manager's outputs into the logs.
    pub(super) fn drain(&mut self) {
        while let Some(out) = self.mgr.poll_output() {
            match out {
                Output::Persist(op) => self.ops.push(op),
                Output::NotifyHost(h, cmd) => self.host_cmds.push((h, cmd)),
                Output::NotifyTenant(t, e) => self.events.push((t, e)),
            }
        }
    }

    /// Registers a host now.
    pub(super) fn host(&mut self, address: &str, capacity: Capacity) -> HostId {
        let id = self
            .mgr
            .register_host(self.now, address, capacity)
            .expect("valid registration");
        self.drain();
        id
    }

    /// Requests a lease now.
    pub(super) fn request(
        &mut self,
        tenant: &str,
        req: &LeaseRequest,
    ) -> Result<Lease, PlacementError> {
        let r = self.mgr.request_lease(self.now, &t(tenant), req);
        self.drain();
        r
    }

    /// Moves the clock `ms` later and runs the timers.
    pub(super) fn advance(&mut self, ms: Millis) {
        self.now += ms;
        self.mgr.handle_timeout(self.now);
        self.drain();
    }

    /// Free resources of a host.
    pub(super) fn free(&self, host: HostId) -> Capacity {
        self.mgr.host(host).expect("known host").free.amounts()
    }

    /// A manager rebuilt from every persisted op.
    pub(super) fn replayed(&self) -> Manager {
        Manager::replay(self.mgr.config().clone(), self.now, self.ops.clone()).expect("replay")
    }

    /// Forgets logged commands and events.
    pub(super) fn clear_logs(&mut self) {
        self.host_cmds.clear();
        self.events.clear();
    }
}

/// A tenant id.
pub(super) fn t(name: &str) -> TenantId {
    TenantId::from(name)
}

/// A config with a 3 s heartbeat timeout.
pub(super) fn fast_heartbeat() -> Config {
    Config {
        heartbeat_timeout_ms: 3_000,
        ..Config::default()
    }
}

/// A config whose hosts never time out, for tests about leases alone.
pub(super) fn no_heartbeats() -> Config {
    Config {
        heartbeat_timeout_ms: 1 << 40,
        ..Config::default()
    }
}
