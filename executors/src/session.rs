//! What a client and an executor say to each other besides invocations,
//! free of I/O: the handshake data and the set-up messages, postcard-encoded.
//!
//! 1. Handshake: both sides set the lease token as the fabric handshake's
//!    shared secret ([`rfx_fabric::ConnectOptions::secret`]), so the
//!    executor accepts only a client that proves it holds the token, and the
//!    client talks only to an executor that proves it too; the token itself
//!    never crosses the wire. The client sends no user data; the
//!    executor's is an [`ExecutorHello`] (its slot geometry).
//! 2. The client sends a [`Setup`] (the library and the functions it will
//!    call, by index, and for a group member its [`GroupSpec`]) as a
//!    two-sided message; the executor answers with a [`SetupReply`].
//! 3. Then only invocations: see [`rfx_fabric::invocation`].

use serde::{Deserialize, Serialize};

/// Largest library a client may ship.
pub const MAX_LIBRARY_BYTES: usize = 64 << 20;

/// The executor's handshake data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorHello {
    /// Invocation slots in the executor's exposed buffer.
    pub slots: u32,
    /// Bytes of one slot (header + payload).
    pub slot_size: u32,
    /// The worker (core) serving this connection.
    pub worker: u32,
}

/// Where the functions come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibrarySource {
    /// The library's bytes, shipped with the allocation (as rFaaS does).
    Bytes {
        /// A name for logs and errors.
        name: String,
        /// The ELF shared object.
        bytes: Vec<u8>,
    },
    /// A library already present on the executor's host.
    Path(String),
}

/// The client's set-up request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// The library to load.
    pub library: LibrarySource,
    /// Function names; invocations name them by index in this list.
    pub functions: Vec<String>,
    /// Set for a member of a group: the executor joins the group's
    /// communicator before it answers.
    pub group: Option<GroupSpec>,
}

/// One member's place in a group (see [`crate::group`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// This member's rank.
    pub rank: u32,
    /// Members in the group.
    pub size: u32,
    /// `host:port` of the rendezvous the client hosts.
    pub rendezvous: String,
    /// The group's key: only members that know it join.
    pub key: Vec<u8>,
}

/// The executor's answer to a [`Setup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupReply {
    /// Loaded; every function resolved.
    Ready,
    /// Refused, and why (library does not load, unknown function, ...).
    Failed(String),
}

/// Encodes a session message.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("postcard encodes into a Vec")
}

/// Decodes a session message from untrusted bytes.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable session message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let s = Setup {
            library: LibrarySource::Bytes {
                name: "x".into(),
                bytes: vec![1, 2, 3],
            },
            functions: vec!["echo".into()],
            group: Some(GroupSpec {
                rank: 1,
                size: 2,
                rendezvous: "127.0.0.1:9".into(),
                key: vec![7; 16],
            }),
        };
        assert_eq!(decode::<Setup>(&encode(&s)), Ok(s));
        let h = ExecutorHello {
            slots: 4,
            slot_size: 64,
            worker: 1,
        };
        assert_eq!(decode::<ExecutorHello>(&encode(&h)), Ok(h));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<Setup>(&bytes);
            let _ = decode::<SetupReply>(&bytes);
            let _ = decode::<ExecutorHello>(&bytes);
        }
    }
}
