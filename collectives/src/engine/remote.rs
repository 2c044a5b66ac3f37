//! Reading a message where its sender left it, the receiver's half of a
//! read request: in the sender's memory (cross-memory attach, one host) or
//! in loans of the sender's buffer that its provider reads (verbs, ofi); and the
//! sender's half of the loans.

use rfx_fabric::cma::PeerMemory;
use rfx_fabric::{FabricError, LentBuffer, Loan};

use super::link::Link;

/// How the sender's ranges of a [`Piece::Remote`] are read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RemoteSrc<'a> {
    /// In the sender's memory, in place (cross-memory attach).
    Memory(&'a PeerMemory),
    /// Lent by the sender's provider, read through the link; `keys[i]` is
    /// the key of `segs[i]`.
    Lent(&'a dyn ReadLent, &'a [u64]),
}

impl RemoteSrc<'_> {
    /// Reads `out.len()` bytes from `at` of the concatenation of the
    /// sender's ranges `segs`. Bytes read from the sender's memory are its
    /// own only once [`reads_were_the_peers`] succeeds after the message's reads.
    pub(crate) fn read(
        &self,
        segs: &[(u64, u64)],
        at: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        match self {
            RemoteSrc::Memory(mem) => mem.read_unverified(segs, at, out),
            RemoteSrc::Lent(link, keys) => {
                rfx_fabric::cma::read_ranges(segs, at, out, |i, off, buf| {
                    let (addr, len) = segs[i];
                    let key = keys.get(i).copied().ok_or(FabricError::RemoteAccess {
                        rkey: 0,
                        addr,
                        len,
                        reason: "a lent range without its key",
                    })?;
                    link.read_lent(&LentBuffer { addr, len, key }, off, buf)
                })
            }
        }
    }
}

/// After the reads of one message of the peer's (`lent`: through its
/// provider's loans): fails if they were in the memory of a peer that has
/// since exited, whose pid may have named another process. Done after
/// the FIN, so the sender does not wait for it. Nothing to do where each
/// read proved itself (the peer's canary, [`PeerMemory::reads_verified`]).
pub(crate) fn reads_were_the_peers(link: &impl Link, lent: bool) -> Result<(), FabricError> {
    match link.peer_memory() {
        Some(mem) if !lent && !mem.reads_verified() => mem.alive(),
        _ => Ok(()),
    }
}

/// After writes into the peer's memory: fails if the peer has exited
/// since (the bytes may have gone to another process under its pid).
pub(crate) fn peer_still_lives(link: &impl Link) -> Result<(), FabricError> {
    match link.peer_memory() {
        Some(mem) => mem.alive(),
        None => Ok(()),
    }
}

/// Reads loans of the peer's through a link borrowed for one receive.
pub(crate) trait ReadLent: std::fmt::Debug {
    fn read_lent(&self, lent: &LentBuffer, offset: u64, out: &mut [u8]) -> Result<(), FabricError>;
}

/// A link lent to a [`Piece::Remote`] for the reads of one message.
#[derive(Debug)]
pub(crate) struct LinkReader<'a, L>(std::cell::RefCell<&'a mut L>);

impl<'a, L: Link> LinkReader<'a, L> {
    pub(crate) fn new(link: &'a mut L) -> Self {
        LinkReader(std::cell::RefCell::new(link))
    }
}

impl<L: Link> ReadLent for LinkReader<'_, L> {
    fn read_lent(&self, lent: &LentBuffer, offset: u64, out: &mut [u8]) -> Result<(), FabricError> {
        self.0.borrow_mut().read_lent(lent, offset, out)
    }
}

/// Loans of the non-empty `parts` on `link`, one each, or none at all:
/// a registration the device refuses (a memlock limit, say) sends the
/// message through the inbox instead.
pub(crate) fn lend_parts(link: &mut impl Link, parts: &[&[u8]]) -> Vec<Loan> {
    let mut loans = Vec::with_capacity(parts.len());
    for p in parts.iter().filter(|p| !p.is_empty()) {
        // An exposed send's bytes stay unchanged until its read request
        // is finished (the peer's FIN); the loans end then (`Conn::loans`),
        // or earlier with the link.
        match link.lend(p.as_ptr(), p.len()) {
            Ok(Some(loan)) => loans.push(loan),
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::debug!("lending a send buffer failed, sending it by copy: {e}");
                return Vec::new();
            }
        }
    }
    loans
}
