//! Wire formats of rfx-fabric, free of I/O: the connection handshake, the
//! tcp data frames and the shm ring records. Every decoder takes untrusted
//! bytes and returns an error, never panics (property-tested below).
//!
//! The handshake (version 3), over the TCP connection every endpoint starts
//! with; each message is a 12-byte header ([`MAGIC`], version, kind, body
//! length) and a postcard body:
//!
//! ```text
//! server -> client  Challenge   { nonce_s }                 always, first
//! client -> server  ClientHello { hello, nonce_c, proof_c? }
//! server -> client  Accept      { hello, transport, shm?, proof_s? } | Reject(reason)
//! ```
//!
//! The proofs are there when the side has a shared secret
//! ([`crate::ConnectOptions::secret`]); [`crate::auth`] computes and checks
//! them.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::caps::{ProviderInfo, TransportKind};
use crate::mr::RemoteBuffer;

/// Version of the handshake and data framing; peers must speak the same.
pub const PROTOCOL_VERSION: u16 = 3;
/// First bytes of every handshake message.
pub const MAGIC: [u8; 4] = *b"RFXH";
/// Length of a handshake message header.
pub const HANDSHAKE_HEADER_LEN: usize = 12;
/// Largest handshake body accepted.
pub const MAX_HANDSHAKE_BODY: usize = 1 << 20;
/// Length of a data frame header (tcp) and of a record body (shm).
pub const FRAME_HEADER_LEN: usize = 24;
/// Length of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a handshake proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;

/// A fresh random handshake nonce.
pub type Nonce = [u8; NONCE_LEN];
/// A proof of the shared secret (see [`crate::auth`]).
pub type Proof = [u8; PROOF_LEN];

/// What went wrong decoding bytes from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the format needs.
    #[error("short input: need {need} bytes, got {got}")]
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Not an rfx peer.
    #[error("bad magic {0:02x?}: not an rfx peer")]
    BadMagic([u8; 4]),
    /// An rfx peer of another protocol version.
    #[error("protocol version {theirs} not supported (this side speaks {ours})")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// An unknown handshake message type.
    #[error("unknown handshake message type {0}")]
    UnknownMessage(u8),
    /// An unknown frame operation.
    #[error("unknown frame op {0}")]
    UnknownOp(u8),
    /// Reserved bits set.
    #[error("reserved field is not zero")]
    Reserved,
    /// A length beyond its bound.
    #[error("length {len} exceeds the limit {max}")]
    TooLarge {
        /// The length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The body did not deserialize.
    #[error("undecodable body: {0}")]
    Body(String),
    /// An inconsistent record or frame.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

/// Handshake message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandshakeKind {
    /// Client to server: [`ClientHello`].
    Hello = 1,
    /// Server to client: [`Accept`].
    Accept = 2,
    /// Either way: a reason string; the connection is closed after it.
    Reject = 3,
    /// Server to client, first: [`Challenge`].
    Challenge = 4,
}

impl HandshakeKind {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            1 => Ok(HandshakeKind::Hello),
            2 => Ok(HandshakeKind::Accept),
            3 => Ok(HandshakeKind::Reject),
            4 => Ok(HandshakeKind::Challenge),
            other => Err(WireError::UnknownMessage(other)),
        }
    }
}

/// The server's first message: a fresh nonce the client's proof must cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The server's nonce.
    pub nonce: Nonce,
}

/// The client's answer to the [`Challenge`]: its [`Hello`] and its half of
/// the authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The client's side.
    pub hello: Hello,
    /// The client's nonce, which the server's proof must cover.
    pub nonce: Nonce,
    /// [`crate::auth::client_proof`], when the client has a secret.
    pub proof: Option<Proof>,
}

/// What each side says of itself when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Host identity ([`crate::host::host_id`]): equal means shm can work.
    pub host: String,
    /// Process id, for logs.
    pub pid: u32,
    /// The transport this side forces, if any.
    pub forced: Option<TransportKind>,
    /// The providers usable on this side.
    pub providers: Vec<ProviderInfo>,
    /// Registered buffers this side lets the peer write into.
    pub buffers: Vec<RemoteBuffer>,
    /// Opaque application data, sent in clear (secrets go in
    /// [`crate::ConnectOptions::secret`]).
    pub user: Vec<u8>,
}

/// The server's answer: its own [`Hello`] and the chosen transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The server's side.
    pub hello: Hello,
    /// The transport both sides switch to.
    pub transport: TransportKind,
    /// For shm: where and with which secret to finish the set-up.
    pub shm: Option<ShmOffer>,
    /// [`crate::auth::server_proof`], when the server has a secret.
    pub proof: Option<Proof>,
}

/// Rendezvous for the shm set-up (abstract Unix socket + secret nonce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmOffer {
    /// Abstract socket name (without the leading NUL).
    pub socket: String,
    /// Secret the client presents on that socket.
    pub nonce: [u8; 16],
}

/// Encodes one handshake message: header then a postcard body.
pub fn encode_handshake<T: Serialize>(kind: HandshakeKind, body: &T) -> Vec<u8> {
    // postcard into a Vec only fails on allocation failure.
    let body = postcard::to_allocvec(body).expect("postcard encodes into a Vec");
    let mut out = Vec::with_capacity(HANDSHAKE_HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a handshake header: the message kind and the body length.
pub fn decode_handshake_header(buf: &[u8]) -> Result<(HandshakeKind, usize), WireError> {
    let h: &[u8; HANDSHAKE_HEADER_LEN] = buf
        .get(..HANDSHAKE_HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Short {
            need: HANDSHAKE_HEADER_LEN,
            got: buf.len(),
        })?;
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let kind = HandshakeKind::from_u8(h[6])?;
    if h[7] != 0 {
        return Err(WireError::Reserved);
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len > MAX_HANDSHAKE_BODY {
        return Err(WireError::TooLarge {
            len: len as u64,
            max: MAX_HANDSHAKE_BODY as u64,
        });
    }
    Ok((kind, len))
}

/// Decodes a handshake body, all of it: trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(WireError::Body(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(WireError::Body(e.to_string())),
    }
}

/// Data operations carried by tcp frames and shm records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// One-sided write with immediate: `len` bytes land at `addr` of the
    /// region `rkey`.
    Write = 1,
    /// Two-sided message (fragment when [`FLAG_MORE`] is set).
    Send = 2,
    /// Orderly close.
    Close = 3,
    /// shm only: filler to the end of the ring.
    Pad = 4,
    /// tcp only: a one-sided read of `len` bytes at `addr` of the region
    /// `rkey`; `imm` numbers the request. The owner answers with
    /// [`Op::ReadReply`].
    Read = 5,
    /// tcp only: the `len` bytes a [`Op::Read`] asked for follow, or none
    /// with [`FLAG_REFUSED`]; `imm` is the request's number.
    ReadReply = 6,
}

/// Flag on a [`Op::Send`] fragment: more fragments follow.
pub const FLAG_MORE: u8 = 1;

/// Flag on an [`Op::Write`] ring record (shm): the data travels inline in
/// the record and the receiver copies it into the region, instead of the
/// writer storing it into the mapped region. Small writes then cost the one
/// cache-line transfer of the record, not a second one for the data. On tcp,
/// where a write's data always follows its header, the flag changes nothing.
pub const FLAG_INLINE: u8 = 2;

/// Flag on an [`Op::ReadReply`]: the owner refused the read (unknown rkey
/// or a range outside its exposed regions); no data follows.
pub const FLAG_REFUSED: u8 = 4;

/// Header of a data frame (tcp) or body of a ring record (shm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The operation.
    pub op: Op,
    /// [`FLAG_MORE`], [`FLAG_INLINE`], [`FLAG_REFUSED`] or 0.
    pub flags: u8,
    /// The immediate of a write.
    pub imm: u32,
    /// Target region of a write.
    pub rkey: u32,
    /// Payload length.
    pub len: u32,
    /// Target address of a write.
    pub addr: u64,
}

impl FrameHeader {
    /// A header for `op` with everything else zero.
    pub fn new(op: Op) -> Self {
        FrameHeader {
            op,
            flags: 0,
            imm: 0,
            rkey: 0,
            len: 0,
            addr: 0,
        }
    }

    /// The header of a one-sided write of `len` bytes at `addr` of `rkey`.
    pub fn write(addr: u64, rkey: u32, imm: u32, len: u32) -> Self {
        FrameHeader {
            op: Op::Write,
            flags: 0,
            imm,
            rkey,
            len,
            addr,
        }
    }

    /// The header of a two-sided message (or fragment, with `more`).
    pub fn send(len: u32, more: bool) -> Self {
        FrameHeader {
            len,
            flags: if more { FLAG_MORE } else { 0 },
            ..FrameHeader::new(Op::Send)
        }
    }

    /// The 24-byte little-endian encoding.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0] = self.op as u8;
        b[1] = self.flags;
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b
    }

    /// Decodes and checks a header from untrusted bytes.
    pub fn decode(buf: &[u8]) -> Result<FrameHeader, WireError> {
        let b: &[u8; FRAME_HEADER_LEN] = buf
            .get(..FRAME_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Short {
                need: FRAME_HEADER_LEN,
                got: buf.len(),
            })?;
        let op = match b[0] {
            1 => Op::Write,
            2 => Op::Send,
            3 => Op::Close,
            4 => Op::Pad,
            5 => Op::Read,
            6 => Op::ReadReply,
            other => return Err(WireError::UnknownOp(other)),
        };
        let flags = b[1];
        if flags & !(FLAG_MORE | FLAG_INLINE | FLAG_REFUSED) != 0 || b[2] != 0 || b[3] != 0 {
            return Err(WireError::Reserved);
        }
        let allowed = match op {
            Op::Send => FLAG_MORE,
            Op::Write => FLAG_INLINE,
            Op::ReadReply => FLAG_REFUSED,
            Op::Close | Op::Pad | Op::Read => 0,
        };
        if flags & !allowed != 0 {
            return Err(WireError::Invalid("flag not valid for this frame"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[16..24]);
        Ok(FrameHeader {
            op,
            flags,
            imm: u32_at(4),
            rkey: u32_at(8),
            len: u32_at(12),
            addr: u64::from_le_bytes(addr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Caps;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            host: "h".into(),
            pid: 7,
            forced: Some(TransportKind::Shm),
            providers: vec![ProviderInfo {
                kind: TransportKind::Tcp,
                caps: Caps::SEND | Caps::WRITE_IMM,
                max_inline: 0,
                device: None,
            }],
            buffers: vec![RemoteBuffer {
                addr: 0x1000,
                len: 64,
                rkey: 9,
            }],
            user: b"token".to_vec(),
        }
    }

    fn roundtrip<T>(kind: HandshakeKind, msg: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = encode_handshake(kind, msg);
        let (k, len) = decode_handshake_header(&bytes).unwrap();
        assert_eq!(k, kind);
        assert_eq!(len, bytes.len() - HANDSHAKE_HEADER_LEN);
        let back: T = decode_body(&bytes[HANDSHAKE_HEADER_LEN..][..len]).unwrap();
        assert_eq!(&back, msg);
    }

    #[test]
    fn handshake_roundtrip() {
        roundtrip(HandshakeKind::Challenge, &Challenge { nonce: [7; 32] });
        for proof in [None, Some([9; 32])] {
            let client = ClientHello {
                hello: hello(),
                nonce: [1; 32],
                proof,
            };
            roundtrip(HandshakeKind::Hello, &client);
            let accept = Accept {
                hello: hello(),
                transport: TransportKind::Shm,
                shm: Some(ShmOffer {
                    socket: "s".into(),
                    nonce: [3; 16],
                }),
                proof,
            };
            roundtrip(HandshakeKind::Accept, &accept);
        }
        roundtrip(HandshakeKind::Reject, &"why".to_string());
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let client = ClientHello {
            hello: hello(),
            nonce: [1; 32],
            proof: Some([2; 32]),
        };
        let body = postcard::to_allocvec(&client).unwrap();
        for cut in 0..body.len() {
            assert!(decode_body::<ClientHello>(&body[..cut]).is_err(), "{cut}");
        }
        let body = postcard::to_allocvec(&Challenge { nonce: [5; 32] }).unwrap();
        assert_eq!(body.len(), NONCE_LEN);
        assert!(decode_body::<Challenge>(&body[..NONCE_LEN - 1]).is_err());
    }

    #[test]
    fn handshake_rejects_version_and_garbage() {
        let mut bytes = encode_handshake(HandshakeKind::Hello, &hello());
        bytes[4] = 9;
        assert_eq!(
            decode_handshake_header(&bytes),
            Err(WireError::Version {
                ours: PROTOCOL_VERSION,
                theirs: 9
            })
        );
        assert!(matches!(
            decode_handshake_header(b"GET / HTTP/1.1\r\n"),
            Err(WireError::BadMagic(_))
        ));
        assert!(matches!(
            decode_handshake_header(b"RFX"),
            Err(WireError::Short { .. })
        ));
    }

    #[test]
    fn frame_roundtrip() {
        let h = FrameHeader {
            op: Op::Send,
            flags: FLAG_MORE,
            imm: 1,
            rkey: 2,
            len: 3,
            addr: u64::MAX,
        };
        assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
    }

    proptest! {
        #[test]
        fn frame_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FrameHeader::decode(&bytes);
        }

        #[test]
        fn frame_encode_decode(op in 1u8..=6, imm: u32, rkey: u32, len: u32, addr: u64, flag: bool) {
            let op = match op {
                1 => Op::Write,
                2 => Op::Send,
                3 => Op::Close,
                4 => Op::Pad,
                5 => Op::Read,
                _ => Op::ReadReply,
            };
            let flags = match op {
                Op::Send if flag => FLAG_MORE,
                Op::Write if flag => FLAG_INLINE,
                Op::ReadReply if flag => FLAG_REFUSED,
                _ => 0,
            };
            let h = FrameHeader { op, flags, imm, rkey, len, addr };
            prop_assert_eq!(FrameHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn handshake_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((_, len)) = decode_handshake_header(&bytes) {
                let body = bytes.get(HANDSHAKE_HEADER_LEN..).unwrap_or(&[]);
                let body = &body[..len.min(body.len())];
                let _ = decode_body::<Challenge>(body);
                let _ = decode_body::<ClientHello>(body);
                let _ = decode_body::<Hello>(body);
                let _ = decode_body::<Accept>(body);
                let _ = decode_body::<String>(body);
            }
            let _ = decode_body::<Challenge>(&bytes);
            let _ = decode_body::<ClientHello>(&bytes);
            let _ = decode_body::<Hello>(&bytes);
            let _ = decode_body::<Accept>(&bytes);
        }

        #[test]
        fn mutated_handshakes_never_panic(
            ops in proptest::collection::vec((any::<u16>(), 0u8..4, any::<u8>()), 0..8),
            proof: bool,
        ) {
            // Valid messages, then bytes flipped, inserted, cut.
            let client = ClientHello {
                hello: hello(),
                nonce: [1; 32],
                proof: proof.then_some([2; 32]),
            };
            let accept = Accept {
                hello: hello(),
                transport: TransportKind::Tcp,
                shm: None,
                proof: proof.then_some([4; 32]),
            };
            for base in [
                encode_handshake(HandshakeKind::Hello, &client),
                encode_handshake(HandshakeKind::Accept, &accept),
                encode_handshake(HandshakeKind::Challenge, &Challenge { nonce: [3; 32] }),
            ] {
                let mut v = base;
                for &(at, kind, byte) in &ops {
                    if v.is_empty() {
                        v.push(byte);
                        continue;
                    }
                    let i = at as usize % v.len();
                    match kind {
                        0 => v[i] ^= byte | 1,
                        1 => v.insert(i, byte),
                        2 => v.truncate(i),
                        _ => v[i] = byte,
                    }
                }
                if let Ok((_, len)) = decode_handshake_header(&v) {
                    let body = v.get(HANDSHAKE_HEADER_LEN..).unwrap_or(&[]);
                    let body = &body[..len.min(body.len())];
                    let _ = decode_body::<ClientHello>(body);
                    let _ = decode_body::<Accept>(body);
                    let _ = decode_body::<Challenge>(body);
                }
            }
        }
    }
}
