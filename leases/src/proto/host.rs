//! Registered hosts.

use super::ids::HostId;
use super::resources::{Capacity, Pool};
use serde::{Deserialize, Serialize};

/// A host as the lease manager knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Host id, kept across re-registration from the same address.
    pub id: HostId,
    /// Where the host's executor manager (and its executors) can be reached.
    pub address: String,
    /// What the host offers in total.
    pub capacity: Capacity,
    /// What no active lease holds.
    pub free: Pool,
    /// False once the host missed its heartbeats or deregistered, until it
    /// registers again; a down host gets no leases and holds none.
    pub up: bool,
}
