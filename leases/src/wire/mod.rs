//! The control protocol between the lease manager, tenants and executor
//! managers.
//!
//! Framing: every message is one length-delimited frame (4-byte big-endian
//! length, [`tokio_util::codec::LengthDelimitedCodec`]) holding one JSON
//! document. Frames to the daemon are at most [`MAX_REQUEST_LEN`] bytes,
//! frames from it at most [`MAX_REPLY_LEN`]; a longer frame closes the
//! connection.
//!
//! Session: the client's first frame is [`ClientMsg::Hello`] with
//! [`PROTOCOL_VERSION`]; the daemon answers [`ServerMsg::Welcome`], or
//! [`ServerMsg::Error`] with [`ErrorCode::VersionMismatch`] (then closes).
//! Then the client sends requests, each with its own [`RequestId`] and its
//! credentials: a tenant token ([`ClientMsg::Tenant`]) or the cluster key
//! ([`ClientMsg::Host`], [`ClientMsg::Admin`]). Every request gets exactly
//! one [`ServerMsg::Reply`] or [`ServerMsg::Error`] with its id, in order.
//! Between replies the daemon pushes [`ServerMsg::Event`]s to connections of
//! the tenant they concern (bound by the tenant's last authenticated
//! request, for instance [`TenantRequest::Subscribe`]), and
//! [`ServerMsg::Command`]s to the connection a host registered on.
//! A malformed frame gets an [`ServerMsg::Error`] without id and closes the
//! connection; decoding never panics, whatever the bytes.
//!
//! ```
//! use rfx_leases::wire::{self, ClientMsg, Hello};
//! let frame = wire::encode(&ClientMsg::Hello(Hello::current()))?;
//! assert_eq!(wire::decode_client(&frame)?, ClientMsg::Hello(Hello::current()));
//! assert!(wire::decode_client(b"\xff garbage").is_err());
//! # Ok::<(), rfx_leases::wire::WireError>(())
//! ```

mod error;
mod msg;
pub(crate) mod token;

#[cfg(test)]
mod tests;

pub use error::{ErrorCode, ErrorReply, WireError};
pub use msg::{
    AdminRequest, ClientMsg, Command, Hello, HostRequest, JobInfo, LeaseInfo, RequestId, Response,
    ServerMsg, StartLease, TenantInfo, TenantRequest, TicketInfo,
};
pub use token::{lookup_proof, LeaseKey, LeaseToken};

use bytes::Bytes;
use serde::Serialize;
use tokio_util::codec::LengthDelimitedCodec;

/// The protocol version this build speaks; peers must speak the same.
/// Version 2: lease tokens are derived from the cluster key ([`LeaseKey`])
/// and [`StartLease`] no longer carries them.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame a client may send to the daemon (1 MiB).
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// Largest frame the daemon may send to a client (16 MiB: lease lists).
pub const MAX_REPLY_LEN: usize = 16 << 20;

/// The environment variable the CLI reads the cluster key from.
pub const CLUSTER_KEY_ENV: &str = "RFX_CLUSTER_KEY";

/// The codec for frames to the daemon (read by the daemon, written by clients).
pub fn request_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_REQUEST_LEN)
        .new_codec()
}

/// The codec for frames from the daemon (written by the daemon, read by clients).
pub fn reply_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_REPLY_LEN)
        .new_codec()
}

/// Encodes one message as a frame body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, WireError> {
    serde_json::to_vec(msg)
        .map(Bytes::from)
        .map_err(WireError::Encode)
}

/// Decodes a frame sent to the daemon.
pub fn decode_client(frame: &[u8]) -> Result<ClientMsg, WireError> {
    serde_json::from_slice(frame).map_err(WireError::Malformed)
}

/// Decodes a frame sent by the daemon.
pub fn decode_server(frame: &[u8]) -> Result<ServerMsg, WireError> {
    serde_json::from_slice(frame).map_err(WireError::Malformed)
}
