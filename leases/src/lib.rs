//! rfx-leases: the lease manager of rfx.
//!
//! Tenants lease executor slots (cores, memory, accelerators) on hosts from
//! the lease manager; executor managers register their hosts' capacity,
//! heartbeat, run one executor per lease and report usage.
//!
//! - [`proto`]: the I/O-free lease state machine ([`proto::Manager`]): no
//!   sockets, no store, no clock; time comes in as an argument and every
//!   effect comes out of [`proto::Manager::poll_output`].

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod proto;
