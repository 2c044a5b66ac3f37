//! rfx-leases: the lease manager of rfx.
//!
//! Tenants lease executor slots (cores, memory, accelerators) on hosts from
//! the lease manager; executor managers register their hosts' capacity,
//! heartbeat, run one executor per lease and report usage.
//!
//! - [`proto`]: the I/O-free lease state machine ([`proto::Manager`]): no
//!   sockets, no store, no clock; time comes in as an argument and every
//!   effect comes out of [`proto::Manager::poll_output`].
//! - [`wire`]: the control protocol (length-delimited JSON frames).
//! - `daemon` (feature `server`, on by default): the lease manager daemon
//!   (`rfx lease-manager`): tokio, the redb store, the wall clock. Clients
//!   (tenants, executor managers) build without it, and without redb.
//! - [`client`]: clients for tenants ([`client::TenantClient`]), executor
//!   managers ([`client::HostClient`]) and operators
//!   ([`client::AdminClient`]), async and [`client::blocking`].
//! - [`audit`]: the append-only JSON-lines audit log of tenant, host and
//!   operator actions ([`audit::AuditLog`]), written by the daemon when
//!   configured (`daemon::DaemonConfig::audit`) and reusable by other
//!   components.
//!
//! Environment: the CLI reads the cluster key shared by the daemon,
//! executor managers and operators from `RFX_CLUSTER_KEY`
//! ([`wire::CLUSTER_KEY_ENV`]); this crate itself reads only the TLS
//! settings (`RFX_TLS_CA`, `RFX_TLS_SERVER_NAME`, `RFX_TLS_CERT`,
//! `RFX_TLS_KEY`, in [`tls`]).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod audit;
#[cfg(feature = "server")]
mod auth;
pub mod client;
#[cfg(feature = "server")]
pub mod daemon;
mod error;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod proto;
#[cfg(feature = "server")]
pub mod provision;
#[cfg(feature = "server")]
mod store;
pub mod tls;
pub mod wire;

pub use error::DaemonError;
