//! [`Link`]: what the engine needs of its connection to one peer, and its
//! implementation by [`rfx_fabric::Endpoint`].
//!
//! The engine's protocol (windows, inboxes, credits, spill, ordering) is
//! written against this trait alone, so that a test drives it over links
//! in memory (`engine::harness`) exactly as a rank drives it over the
//! fabric.

use std::os::fd::BorrowedFd;

use rfx_fabric::cma::PeerMemory;
use rfx_fabric::{
    Completion, Endpoint, FabricError, LentBuffer, Loan, RemoteBuffer, TransportKind,
    WriteCompletion, WriteData,
};

/// A reliable, ordered connection to one peer that carries one-sided
/// writes with an immediate.
///
/// The contract the engine relies on (every fabric provider meets it):
/// - a write is refused, and nothing is sent, if it does not lie inside
///   [`Link::peer_inbox`];
/// - the peer's writes complete here in the order it posted them, each
///   once its data is in our inbox;
/// - an error means the peer is gone for good.
pub(crate) trait Link: std::fmt::Debug {
    /// The transport, for [`crate::Communicator::transport`].
    fn kind(&self) -> TransportKind;

    /// The inbox the peer exposed to us, if it exposed one.
    fn peer_inbox(&self) -> Option<RemoteBuffer>;

    /// Writes `data` at `offset` of `target` and delivers `imm` with it.
    fn write_imm(
        &mut self,
        data: &[u8],
        target: &RemoteBuffer,
        offset: u64,
        imm: u32,
    ) -> Result<(), FabricError>;

    /// The peer's next completed write, if any.
    fn poll(&mut self) -> Result<Option<Completion>, FabricError>;

    /// Offers the peer's next write to `take` before [`Link::poll`] would
    /// deliver it ([`Endpoint::take_write`]): consumed if `take` returns
    /// `Some`, else left for `poll`. Default: `None`.
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

    /// Prepares a sleep on [`Link::event_fd`]; `Ok(false)` if something
    /// may be ready already.
    fn arm(&mut self) -> Result<bool, FabricError>;

    /// Ends a sleep prepared by [`Link::arm`].
    fn disarm(&mut self);

    /// Whether the peer runs on this machine's CPUs
    /// ([`Endpoint::peer_shares_cpus`]): ranks that do take turns on the
    /// cores when there are more of them than cores.
    fn shares_cpus(&self) -> bool {
        true
    }

    /// The fd that becomes readable when an armed link may have news;
    /// `None` if the link has none (a sleep then is a short nap).
    fn event_fd(&self) -> Option<BorrowedFd<'_>>;

    /// The peer process's memory, if this process may read it in place
    /// (same host, cross-memory attach): then large messages from the
    /// peer come as read requests.
    fn peer_memory(&self) -> Option<&PeerMemory>;

    /// Whether this link lends our memory to the peer, and reads what the
    /// peer lends ([`rfx_fabric::Caps::LEND`]: verbs, ofi): then large messages
    /// go as read requests naming loans.
    fn lends(&self) -> bool {
        false
    }

    /// Lends `len` bytes at `ptr` to the peer ([`Endpoint::lend`]).
    fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        let _ = (ptr, len);
        Ok(None)
    }

    /// Reads `out.len()` bytes at `offset` of a loan of the peer's
    /// ([`Endpoint::read_lent`]).
    fn read_lent(
        &mut self,
        lent: &LentBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        let _ = (offset, out);
        Err(FabricError::RemoteAccess {
            rkey: 0,
            addr: lent.addr,
            len: lent.len,
            reason: "this link does not read lent memory",
        })
    }

    /// Starts an orderly close (nothing is sent after it).
    fn close_start(&mut self) {}

    /// True once dropping the link cannot lose what we sent; never blocks.
    fn close_done(&mut self) -> bool {
        true
    }
}

impl Link for Endpoint {
    fn kind(&self) -> TransportKind {
        Endpoint::kind(self)
    }

    fn peer_inbox(&self) -> Option<RemoteBuffer> {
        self.peer_buffers().first().copied()
    }

    #[inline]
    fn write_imm(
        &mut self,
        data: &[u8],
        target: &RemoteBuffer,
        offset: u64,
        imm: u32,
    ) -> Result<(), FabricError> {
        Endpoint::write_imm(self, data, target, offset, imm)
    }

    #[inline]
    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        Endpoint::poll(self)
    }

    #[inline]
    fn take_write<R>(
        &mut self,
        take: impl FnOnce(&WriteCompletion, WriteData<'_>) -> Option<R>,
    ) -> Option<R> {
        Endpoint::take_write(self, take)
    }

    fn arm(&mut self) -> Result<bool, FabricError> {
        Endpoint::arm(self)
    }

    fn disarm(&mut self) {
        Endpoint::disarm(self)
    }

    fn shares_cpus(&self) -> bool {
        Endpoint::peer_shares_cpus(self)
    }

    fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(Endpoint::event_fd(self))
    }

    fn peer_memory(&self) -> Option<&PeerMemory> {
        Endpoint::peer_memory(self)
    }

    fn lends(&self) -> bool {
        self.caps().contains(rfx_fabric::Caps::LEND)
    }

    fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        Endpoint::lend(self, ptr, len)
    }

    fn read_lent(
        &mut self,
        lent: &LentBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        Endpoint::read_lent(self, lent, offset, out)
    }

    fn close_start(&mut self) {
        Endpoint::close_start(self)
    }

    fn close_done(&mut self) -> bool {
        Endpoint::close_done(self)
    }
}
