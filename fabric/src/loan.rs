//! Memory lent to a peer for one-sided reads: the lender's half of a
//! zero-copy rendezvous, as UCX packs an rkey for a buffer it registered
//! (`uct_md_mem_reg`, `uct_md_mkey_pack`) and libfabric hands out
//! `fi_mr_key`.
//!
//! [`Endpoint::lend`](crate::Endpoint::lend) registers a buffer of the
//! caller's (not a [`crate::MemoryRegion`]) for remote read on that
//! endpoint's provider and returns a [`Loan`]; its [`LentBuffer`] travels
//! to the peer in the caller's own protocol, and the peer reads it with
//! [`Endpoint::read_lent`](crate::Endpoint::read_lent), one-sided: on
//! verbs the lender's device serves the read without its CPU; on ofi the
//! provider serves it, in software on `tcp` (whenever the lender's
//! endpoints make progress: any call on them). Dropping the loan ends it:
//! the peer can no longer reach the memory. Providers with
//! [`crate::Caps::LEND`] lend (verbs, ofi); on the others `lend` returns
//! `None` and callers move the bytes another way (shm reads its peer with
//! [`crate::cma`] instead).
//!
//! A loan is read-only and covers exactly the lent bytes: the provider
//! refuses the peer anything else. Its key is valid on every connection
//! of the lender's domain (a verbs protection domain, a libfabric domain:
//! one per process and device): lend only to peers that may read what
//! the others could.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a peer needs to read a loan: where, how much, and the provider's
/// key. Plain data, sent by the lender in its own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LentBuffer {
    /// Where the peer's reads name the first lent byte: its address in
    /// the lender's memory, or 0 where the provider addresses a
    /// registration by offset (libfabric without `FI_MR_VIRT_ADDR`, e.g.
    /// `tcp`).
    pub addr: u64,
    /// Bytes lent.
    pub len: u64,
    /// The provider's remote key for them.
    pub key: u64,
}

/// A buffer of this process lent to one peer for one-sided reads, until
/// dropped. Made by [`Endpoint::lend`](crate::Endpoint::lend).
pub struct Loan {
    lent: LentBuffer,
    /// The provider's registration; dropping it ends the loan.
    _registration: Box<dyn Send + Sync>,
}

impl fmt::Debug for Loan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan").field("lent", &self.lent).finish()
    }
}

impl Loan {
    /// A loan of `lent`, ended by dropping `registration`. Only the
    /// providers that lend make one.
    #[cfg_attr(not(any(feature = "verbs", feature = "ofi")), allow(dead_code))]
    pub(crate) fn new(lent: LentBuffer, registration: Box<dyn Send + Sync>) -> Loan {
        Loan {
            lent,
            _registration: registration,
        }
    }

    /// What the peer needs to read it.
    pub fn lent(&self) -> LentBuffer {
        self.lent
    }
}
