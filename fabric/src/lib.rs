//! rfx-fabric: the transport layer of rfx.
//!
//! One interface, several providers chosen at run time per peer, in the spirit
//! of UCX's UCT and libfabric's providers:
//!
//! | provider | built | reaches | data path |
//! |---|---|---|---|
//! | `tcp` | always | any host | framed TCP, `TCP_NODELAY`; reads answered by the owner's endpoint |
//! | `shm` | always | same host (same boot and network namespace) | memfd mappings + SPSC rings, eventfd wake-ups; reads copy from the mapping |
//! | `verbs` | feature `verbs` | hosts with an RDMA device (incl. soft-RoCE) | RC queue pairs: one RDMA WRITE_WITH_IMM per message into a peer-owned, memory-polled ring (large writes straight into the region first), RDMA READ, credits, completion channel |
//! | `ofi` | feature `ofi` | what the libfabric provider reaches (`tcp;ofi_rxm`: any host; `shm`: same host; `verbs;ofi_rxm`, `efa`, `cxi`: HPC networks) | RDM endpoints: `fi_writedata` into the peer's registered region + a descriptor record (small writes inline), `fi_read`, credits, CQ wait fd |
//!
//! Every connection starts over TCP: the server sends a challenge, then
//! both sides exchange a [`wire::Hello`] (protocol version, host identity,
//! providers, exposed buffers, opaque user data), run the pure
//! [`select::select`] to agree on a transport, and switch the data path to
//! it. With a shared secret ([`ConnectOptions::secret`]) the handshake is
//! also a mutual challenge-response ([`auth`]): each side proves it knows
//! the secret without sending it; the data path itself is not encrypted.
//!
//! The core notions:
//! - [`Fabric`]: the opened providers of this process; registers memory.
//! - [`MemoryRegion`]: registered memory with a remote key; [`RemoteBuffer`]
//!   describes a peer's region (`{addr, len, rkey}`).
//! - [`Endpoint`]: a connection to one peer: one-sided
//!   [`Endpoint::write_imm`] and [`Endpoint::read`], two-sided
//!   [`Endpoint::send`], and completions by [`Endpoint::poll`]
//!   (non-blocking) or [`Endpoint::wait`] in [`PollMode::Hot`] (busy poll,
//!   yielding the CPU after 50 us) or [`PollMode::Warm`] (sleep on an fd).
//!
//! ```
//! use rfx_fabric::{Config, ConnectOptions, Fabric, PollMode, Completion};
//! use std::time::Duration;
//!
//! let fabric = Fabric::open(Config::default())?;
//! let listener = fabric.listen("127.0.0.1:0".parse().unwrap())?;
//! let addr = listener.local_addr()?;
//! let server = std::thread::spawn(move || -> Result<Vec<u8>, rfx_fabric::FabricError> {
//!     let fabric = Fabric::open(Config::default())?;
//!     let inbox = fabric.register(64)?;
//!     let mut ep = listener.accept(&ConnectOptions::new().expose(&inbox))?;
//!     match ep.wait(PollMode::Warm, Duration::from_secs(5))? {
//!         Completion::Write(w) => Ok(inbox.to_vec(w.offset as usize, w.len as usize)?),
//!         other => panic!("unexpected {other:?}"),
//!     }
//! });
//! let mut ep = fabric.connect(addr, &ConnectOptions::new())?;
//! let inbox = ep.peer_buffers()[0];
//! ep.write_imm(b"hello", &inbox, 0, 42)?;
//! assert_eq!(server.join().unwrap()?, b"hello");
//! # Ok::<(), rfx_fabric::FabricError>(())
//! ```
//!
//! # Environment
//!
//! Read once by [`Config::from_env`]: `RFX_TRANSPORT`,
//! `RFX_CONNECT_TIMEOUT_MS`, `RFX_OP_TIMEOUT_MS`, `RFX_SHM_RING_BYTES`,
//! `RFX_MAX_MESSAGE`, `RFX_OFI_PROVIDER`, `RFX_VERBS_LANDING_MIN`; the
//! verbs provider reads `RFX_VERBS_DEVICE` and `RFX_VERBS_GID_INDEX`. Their meanings and
//! defaults are in one table for the whole workspace,
//! `docs/configuration.md` in the repository; each provider has its page
//! under `docs/transports/`.
//!
//! # Cargo features
//!
//! - `verbs`: the RDMA verbs provider, on `rdma-sys` (libibverbs). Building
//!   needs `libibverbs-dev`, `librdmacm-dev`, `libclang-dev` and
//!   `pkg-config`; running needs `libibverbs1` (plus a provider such as
//!   `ibverbs-providers` for rxe). With no device (or a kernel without RDMA)
//!   the provider probes as unusable and `auto` skips it; forcing it is
//!   [`FabricError::Unavailable`]. `RFX_VERBS_DEVICE` and
//!   `RFX_VERBS_GID_INDEX` pick the device and GID (default: the first
//!   device with an active port, its first IPv4-mapped GID). How to run it
//!   on soft-RoCE: `soft-roce-setup/README.md`.
//! - `ofi`: the libfabric provider, on the in-repo `libfabric-sys`
//!   (bindgen over the system libfabric at build time, 1.x or 2.x).
//!   Building needs `libfabric-dev`, `libclang-dev` and `pkg-config`;
//!   running needs `libfabric1`. `RFX_OFI_PROVIDER` names the libfabric
//!   provider (tested: `tcp;ofi_rxm` and `shm`); both peers must use the
//!   same one. A named provider libfabric lacks is
//!   [`FabricError::Unavailable`]; with none found, `auto` skips `ofi`.
//!   `auto` ranks it after `shm` and before `tcp`: same-host peers keep
//!   rfx's own shm, peers on other hosts use libfabric's network. How it
//!   works: module `ofi` (`src/ofi/mod.rs`); `scripts/ofi-test.sh` runs
//!   its tests and compares it with `fi_pingpong`.
//!
//! A transport whose feature is not built still parses; forcing it is
//! [`FabricError::NotBuilt`].
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod caps;
pub mod cma;
mod completion;
mod config;
mod deadline;
mod endpoint;
mod error;
mod fabric;
mod handshake;
pub mod host;
pub mod invocation;
mod loan;
mod mem;
mod mr;
#[cfg(feature = "ofi")]
pub mod ofi;
mod provider;
pub mod registry;
pub mod ring;
mod secret;
pub mod select;
mod shm;
mod tcp;
#[cfg(feature = "verbs")]
mod verbs;
pub mod wire;

pub use caps::{Caps, ProviderInfo, TransportChoice, TransportKind};
pub use completion::{Completion, PollMode, WriteCompletion, WriteData};
pub use config::Config;
pub use endpoint::Endpoint;
pub use error::{error_chain, FabricError};
pub use fabric::{ConnectOptions, Fabric, Incoming, Listener};
pub use loan::{LentBuffer, Loan};
pub use mr::{MemoryRegion, RemoteBuffer};
#[cfg(feature = "verbs")]
pub use verbs::baseline as verbs_baseline;
