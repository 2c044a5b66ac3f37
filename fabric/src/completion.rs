//! What endpoints report: completions, and how to wait for them.

use bytes::Bytes;

/// How [`crate::Endpoint::wait`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Busy poll: lowest latency, one core burned.
    #[default]
    Hot,
    /// Block on the endpoint's file descriptor until an event arrives; no
    /// CPU burned while idle.
    Warm,
}

/// A peer's one-sided write that has landed in one of our regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCompletion {
    /// The immediate the writer attached.
    pub imm: u32,
    /// The region written.
    pub rkey: u32,
    /// Offset of the first byte written, from the region's start.
    pub offset: u64,
    /// Bytes written.
    pub len: u32,
}

/// Where the bytes of a write offered by [`crate::Endpoint::take_write`]
/// are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteData<'a> {
    /// They travelled in the provider's record and are copied out here:
    /// they have not landed in the target region, and do not if the write
    /// is taken (shm's inline writes, up to 224 bytes).
    Inline(&'a [u8]),
    /// They are in the target region already, at the completion's offset.
    Landed,
}

/// An event on an endpoint, delivered in the order the peer posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A [`crate::Endpoint::write_imm`] of the peer landed; its data is in
    /// the region.
    Write(WriteCompletion),
    /// A two-sided message from the peer.
    Recv(Bytes),
}
