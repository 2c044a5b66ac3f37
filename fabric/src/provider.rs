//! The provider contract: what every transport implements beneath
//! [`Endpoint`](crate::Endpoint), in the manner of UCX's `uct_iface_ops_t`
//! and libfabric's `fi_ops`. [`Endpoint`](crate::Endpoint) adds what is the
//! same for all (checks against the peer's exposed buffers and the message
//! size, sticky errors, the hot/warm wait loop) and dispatches statically
//! over an enum of the built providers.
//!
//! A provider lives in its own folder (`tcp/`, `shm/`, `verbs/`, `ofi/`),
//! has a page under `docs/transports/`, reports its capabilities when
//! probed (`registry.rs`), and connects through the common handshake
//! (`fabric.rs`), after which its endpoint implements [`Provider`].

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::completion::{Completion, WriteCompletion, WriteData};
use crate::error::FabricError;
use crate::loan::Loan;

/// The data path of one connection, as every provider implements it.
///
/// Rules common to all:
/// - **Posting** (`write`, `send`) returns once the caller's buffer may be
///   reused. Many posts may be in flight; when the provider's space (ring,
///   socket, send queue, credits) is full, a post waits, bounded by the op
///   timeout, while it keeps draining what the peer sends, so that two
///   peers posting at each other never deadlock. Where a post's end needs
///   the target's CPU (libfabric's `shm`), the wait also drives the
///   provider's other endpoints in this process: a ring of posts across
///   three endpoints must not deadlock either.
/// - **Order**: the peer sees writes and sends in posting order, each as one
///   [`Completion`] from its `poll`.
/// - **Checks**: the caller ([`Endpoint`](crate::Endpoint)) has checked the
///   target against the peer's exposed buffers; the receiving side checks
///   every incoming access against its own regions again and ends the
///   connection on a violation (`Malformed`).
/// - **Liveness**: a peer that exited, crashed or closed is reported as
///   [`FabricError::PeerGone`] by `poll` (after what it sent is delivered,
///   even when a post found it gone first) and by every later post, never
///   as a hang. Errors that end the
///   connection stick.
/// - **Waiting** is `arm`, then `block` or a sleep on `event_fd` by the
///   caller's event loop, then `disarm`.
/// - **Closing** in order is `close_start`, then `close_done` until true
///   (bounded by the caller): then dropping the endpoint loses nothing it
///   sent. Dropping it without that is a close that may.
pub(crate) trait Provider {
    /// One-sided write of `data` at `addr` of the peer's region whose rfx
    /// remote key is `rkey`; the peer's `poll` yields a write completion
    /// carrying `imm` once the data is in place.
    fn write(&mut self, addr: u64, rkey: u32, imm: u32, data: &[u8]) -> Result<(), FabricError>;

    /// One-sided read of `out.len()` bytes at `addr` of the peer's region
    /// `rkey` into `out`; returns when `out` holds them. The peer sees no
    /// completion (on providers without passive targets it serves the read
    /// while it polls).
    fn read(&mut self, addr: u64, rkey: u32, out: &mut [u8]) -> Result<(), FabricError>;

    /// Two-sided message (at most the endpoint's largest message, checked
    /// by the caller), delivered whole as one receive completion.
    fn send(&mut self, data: &[u8]) -> Result<(), FabricError>;

    /// The next completion, without blocking (progressing the provider).
    fn poll(&mut self) -> Result<Option<Completion>, FabricError>;

    /// Offers the next completion to `take` if it is a write: its
    /// completion and where its bytes are ([`WriteData`]: copied out of
    /// the record, or landed in the region). If `take` returns `Some`, the
    /// write is consumed, and inline bytes never land in the target region
    /// (whoever takes them keeps them); if it returns `None`, or the next
    /// completion is anything else, nothing is consumed and `poll`
    /// delivers it as usual. Errors are `poll`'s to report: here they are
    /// `None`. Default: `None` (nothing offered).
    fn take_write<R>(
        &mut self,
        take: impl FnOnce(&WriteCompletion, WriteData<'_>) -> Option<R>,
    ) -> Option<R>
    where
        Self: Sized,
    {
        let _ = take;
        None
    }

    /// A descriptor that turns readable when `poll` may have work, once
    /// armed: for the caller's event loop.
    fn event_fd(&self) -> BorrowedFd<'_>;

    /// Prepares to sleep: `Ok(true)` if nothing is pending and a sleep on
    /// [`event_fd`](Self::event_fd) (or `block`) will be woken by the next
    /// arrival; `Ok(false)`: poll again instead.
    fn arm(&mut self) -> Result<bool, FabricError>;

    /// Ends a sleep started by `arm` (drains the wake-up).
    fn disarm(&mut self);

    /// Sleeps until something may be pending or `timeout` passed (after
    /// `arm` returned `true`).
    fn block(&mut self, timeout: Duration) -> Result<(), FabricError>;

    /// Registers `len` bytes at `ptr` for the peer's one-sided reads
    /// ([`Provider::read_lent`]) and returns the loan: what the peer names
    /// (address or offset, length, key) and the registration, which ends
    /// the loan when dropped. `None`: this provider does not lend (the
    /// default).
    fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        let _ = (ptr, len);
        Ok(None)
    }

    /// One-sided read of `out.len()` bytes at `addr` of memory the peer
    /// lent under `key`; returns when `out` holds them (as
    /// [`Provider::read`]). Only providers that lend implement it.
    fn read_lent(&mut self, addr: u64, key: u64, out: &mut [u8]) -> Result<(), FabricError> {
        let _ = (addr, key, out);
        Err(FabricError::RemoteAccess {
            rkey: 0,
            addr,
            len: 0,
            reason: "this provider does not lend memory",
        })
    }

    /// The peer's memory, readable with one copy, where the peer is a
    /// process of this host that this one may read ([`crate::cma`]).
    fn peer_memory(&self) -> Option<&crate::cma::PeerMemory> {
        None
    }

    /// Starts an orderly close: the peer is told, and nothing more is
    /// sent. A provider whose transport can lose bytes still in flight when
    /// a connection is torn down (tcp: a close with unread input resets it,
    /// and a reset drops what the kernel still had to send) keeps them
    /// until [`close_done`](Self::close_done). Default: nothing to do.
    fn close_start(&mut self) {}

    /// True once closing cannot lose a byte we sent (the peer read them
    /// all, or is gone); what arrives meanwhile is dropped. Never blocks.
    /// Default: true.
    fn close_done(&mut self) -> bool {
        true
    }
}
