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
//!    call, by index, the [`ResultGeometry`] of its result buffers, and for
//!    a group member its [`GroupSpec`]) as a two-sided message; the
//!    executor answers with a [`SetupReply`].
//! 3. Then only invocations: see [`rfx_fabric::invocation`]. An invocation
//!    carries nothing but its input: its result goes to the result buffer
//!    the set-up fixed for its slot.

use serde::{Deserialize, Serialize};

/// Largest library a client may ship.
pub const MAX_LIBRARY_BYTES: usize = 64 << 20;

/// The executor's handshake data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorHello {
    /// Invocation slots in the executor's exposed buffer.
    pub slots: u32,
    /// Bytes of one slot: the largest inline input (at least
    /// [`rfx_fabric::invocation::DESCRIPTOR_LEN`], for a remote input's
    /// descriptor).
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
    /// A Python module (a `.py` file, or a directory with its
    /// dependencies), run by the executor's Python host: see
    /// [`crate::python`].
    Python {
        /// The module imported: `<module>.py` or `<module>/__init__.py`
        /// among `files`.
        module: String,
        /// The files, by path relative to the directory put on `sys.path`.
        files: Vec<ShippedFile>,
    },
}

/// One file of a shipped Python module.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedFile {
    /// `/`-separated, relative, no `.` or `..` (checked by the executor).
    pub path: String,
    /// The contents.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for ShippedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShippedFile({:?}, {} bytes)",
            self.path,
            self.bytes.len()
        )
    }
}

/// The client's set-up request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// The library to load.
    pub library: LibrarySource,
    /// Function names; invocations name them by index in this list.
    pub functions: Vec<String>,
    /// Where results go: fixed for the session, so that invocations carry
    /// no result address.
    pub results: ResultGeometry,
    /// Set for a member of a group: the executor joins the group's
    /// communicator before it answers.
    pub group: Option<GroupSpec>,
}

/// The client's result buffers: the result of an invocation in the
/// executor's slot `k` goes to the client's first exposed buffer (its
/// result region) at offset `k * stride`, at most `stride` bytes.
///
/// The executor checks the geometry against the exposed buffer at set-up
/// ([`ResultGeometry::check`]) and refuses a bad one; an invocation in a
/// slot without a result buffer (`k >= slots`, a client that uses more
/// slots than it declared) is dropped unanswered.
///
/// ```
/// # use rfx_executors::session::ResultGeometry;
/// let g = ResultGeometry { stride: 4096, slots: 4 };
/// assert_eq!(g.check(16384), Ok(()));
/// assert_eq!(g.offset(3), Some(12288));
/// assert_eq!(g.offset(4), None);
/// assert!(ResultGeometry { stride: 0, slots: 4 }.check(16384).is_err());
/// assert!(ResultGeometry { stride: 4096, slots: 5 }.check(16384).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultGeometry {
    /// Bytes from one slot's result buffer to the next: also each result
    /// buffer's capacity.
    pub stride: u32,
    /// Result buffers, for the executor's slots `0..slots`.
    pub slots: u32,
}

impl ResultGeometry {
    /// Checks the geometry against the length of the buffer it lies in
    /// (untrusted values: no overflow, no panic): at least one result
    /// buffer, each at least a byte, all inside the buffer.
    pub fn check(&self, buffer_len: u64) -> Result<(), String> {
        if self.stride == 0 {
            return Err("result stride is 0: results need room".into());
        }
        if self.slots == 0 {
            return Err("no result buffers declared".into());
        }
        let need = u64::from(self.stride) * u64::from(self.slots);
        if need > buffer_len {
            return Err(format!(
                "{} result buffers of {} bytes need {need} bytes, \
                 but the client's result region has {buffer_len}",
                self.slots, self.stride
            ));
        }
        Ok(())
    }

    /// Offset of slot `slot`'s result buffer in the result region; `None`
    /// for a slot without one.
    pub fn offset(&self, slot: usize) -> Option<u64> {
        let slot = u32::try_from(slot).ok().filter(|&s| s < self.slots)?;
        Some(u64::from(slot) * u64::from(self.stride))
    }
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
            results: ResultGeometry {
                stride: 64,
                slots: 4,
            },
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

    #[test]
    fn result_geometry_bounds() {
        let g = |stride, slots| ResultGeometry { stride, slots };
        assert_eq!(g(64, 4).check(256), Ok(()));
        assert_eq!(g(64, 4).check(1 << 20), Ok(()));
        assert!(g(64, 4).check(255).unwrap_err().contains("need 256 bytes"));
        assert!(g(0, 4).check(256).unwrap_err().contains("stride is 0"));
        assert!(g(64, 0).check(256).is_err());
        // No overflow on hostile values.
        assert!(g(u32::MAX, u32::MAX).check(u64::MAX - 1).is_ok());
        assert!(g(u32::MAX, u32::MAX).check(1 << 40).is_err());
        assert_eq!(g(64, 4).offset(0), Some(0));
        assert_eq!(g(64, 4).offset(3), Some(192));
        assert_eq!(g(64, 4).offset(4), None);
        assert_eq!(g(64, 4).offset(usize::MAX), None);
        assert_eq!(
            g(u32::MAX, u32::MAX).offset(u32::MAX as usize - 1),
            Some(u64::from(u32::MAX) * u64::from(u32::MAX - 1))
        );
    }

    proptest! {
        #[test]
        fn result_geometry_offsets_lie_inside(stride: u32, slots: u32, len: u64, slot: usize) {
            let g = ResultGeometry { stride, slots };
            if g.check(len).is_ok() {
                if let Some(off) = g.offset(slot) {
                    prop_assert!(off + u64::from(stride) <= len);
                }
                prop_assert!(g.offset(slots as usize - 1).is_some());
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode::<Setup>(&bytes);
            let _ = decode::<SetupReply>(&bytes);
            let _ = decode::<ExecutorHello>(&bytes);
        }
    }
}
