//! The I/O-free lease manager core, in the quinn-proto style.
//!
//! [`Manager`] holds hosts, leases and free pools. Drivers feed it inputs
//! with the current time (`register_host`, `heartbeat`, `request_lease`,
//! `renew`, `release`, `report_usage`, `executor_crashed`,
//! `handle_timeout`) and drain its [`Output`]s: [`StoreOp`]s to persist,
//! [`HostCommand`]s for executor managers, [`Event`]s for tenants. It never
//! touches a socket, a file or a clock.
//!
//! Recovery: every durable change is one [`StoreOp`]; [`Manager::replay`]
//! rebuilds an equal [`State`] from them, so a killed lease manager
//! recovers every granted lease.
//!
//! Placement: among up hosts whose free pool holds the request (cores,
//! memory, accelerators by kind and count), the one with the most free cores
//! wins, ties to the lowest [`HostId`]; the lowest free core and device
//! indices are leased. A request that no host can hold is refused with a
//! [`PlacementError`] saying which resource is short.

mod config;
mod error;
mod host;
mod ids;
mod lease;
mod manager;
mod output;
mod placement;
mod queue;
mod resources;
mod schedule;
mod state;
mod store_op;

#[cfg(test)]
mod tests;

pub use config::Config;
pub use error::LeaseError;
pub use host::Host;
pub use ids::{HostId, LeaseId, Millis, TenantId};
pub use lease::{Lease, LeaseRequest, LeaseState, LostReason, Usage, UsageReport, GPU};
pub use manager::Manager;
pub use output::{Event, HostCommand, Output};
pub use placement::PlacementError;
pub use queue::{Quota, Ticket, TicketId, TicketOutcome};
pub use resources::{Capacity, Pool};
pub use schedule::{Queued, TicketView, MAX_TICKET_LEASES, MAX_WAITING_PER_TENANT};
pub use state::State;
pub use store_op::StoreOp;
