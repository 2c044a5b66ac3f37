//! Clients of the lease manager: [`TenantClient`] for tenants,
//! [`HostClient`] for executor managers, [`AdminClient`] for operators;
//! [`blocking`] wraps the tenant and admin clients for synchronous callers.
//!
//! Each client owns one connection, driven by a background task on the
//! current tokio runtime; requests may be issued concurrently from clones
//! (host, admin) or shared references. Refusals arrive as
//! [`DaemonError::Remote`](crate::DaemonError::Remote); the connection
//! stays usable after them. Dropping the client closes the connection.

pub mod blocking;

mod admin;
mod conn;
mod host;
mod tenant;

pub use admin::AdminClient;
pub use host::{Commands, HostClient};
pub use tenant::{Events, TenantClient};
