//! What a receive matches and what it got: the source and tag it accepts,
//! and the status of the message it took.

/// Where a receive takes its message from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Any rank of the communicator.
    Any,
    /// This rank.
    Rank(usize),
}

/// Which tags a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMatch {
    /// Any tag.
    Any,
    /// This tag.
    Tag(u32),
}

impl From<u32> for TagMatch {
    fn from(t: u32) -> Self {
        TagMatch::Tag(t)
    }
}

impl From<usize> for Source {
    fn from(r: usize) -> Self {
        Source::Rank(r)
    }
}

/// What a receive got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The sender's rank in the communicator.
    pub source: usize,
    /// The message's tag.
    pub tag: u32,
    /// Elements received.
    pub len: usize,
}
