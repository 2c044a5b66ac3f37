//! Provider `tcp`: framed TCP with `TCP_NODELAY`, the fallback that works
//! everywhere.
//!
//! Frames are a 24-byte [`crate::wire::FrameHeader`] and a payload. The
//! receiver checks every write against its exposed regions before copying
//! the payload in; a peer that breaks the rules gets its endpoint closed.

mod endpoint;

pub(crate) use endpoint::TcpEndpoint;
