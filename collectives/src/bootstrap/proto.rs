//! The rendezvous protocol, free of I/O: length-prefixed, versioned
//! postcard messages, and the pure table-gathering state machine.
//!
//! ```text
//! frame: len u32 LE | postcard body (at most MAX_FRAME bytes)
//! rendezvous -> rank: Challenge { version, nonce_v }                  first, always
//! rank -> rendezvous: Register { version, rank, size, addr, nonce_r, proof }
//! rendezvous -> rank: Table { addrs, proof } (once all `size` ranks registered)
//!                     | Refused(why)
//! ```
//!
//! The job key never crosses the wire: the rank proves it knows it by
//! `proof = HMAC-SHA256(key, "rfx-rv-register-v1" | nonce_v | nonce_r |
//! H(version, rank, size, addr))`, and the rendezvous proves it in the table
//! by `HMAC-SHA256(key, "rfx-rv-table-v1" | nonce_r | nonce_v | H(addrs))`
//! ([`rfx_fabric::auth::prove`]; H is SHA-256 of the postcard encoding), so
//! a rank neither registers with nor takes a table from an impostor. An
//! empty key is no protection (anyone can compute its proofs).

use std::net::SocketAddr;

use rfx_fabric::auth;
use rfx_fabric::wire::{Nonce, Proof};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Version of the rendezvous protocol.
pub const VERSION: u16 = 2;
/// Largest frame body.
pub const MAX_FRAME: usize = 1 << 20;
/// Label of a rank's proof.
pub const REGISTER_LABEL: &[u8] = b"rfx-rv-register-v1";
/// Label of the rendezvous's proof.
pub const TABLE_LABEL: &[u8] = b"rfx-rv-table-v1";

/// The rendezvous's first frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// [`VERSION`] of the rendezvous.
    pub version: u16,
    /// A fresh nonce the rank's proof must cover.
    pub nonce: Nonce,
}

/// A rank's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// [`VERSION`] of the sender.
    pub version: u16,
    /// The sender's rank.
    pub rank: u32,
    /// The job size the sender expects.
    pub size: u32,
    /// Where the sender's fabric listener accepts peers.
    pub addr: SocketAddr,
    /// The rank's nonce, which the table's proof must cover.
    pub nonce: Nonce,
    /// [`Register::prove`]: the rank knows the job key.
    pub proof: Proof,
}

impl Register {
    fn digest(&self) -> [u8; 32] {
        auth::digest(&(self.version, self.rank, self.size, &self.addr))
    }

    /// Sets `proof` for `key` and the rendezvous's `challenge`.
    pub fn prove(mut self, key: &[u8], challenge: &Nonce) -> Register {
        self.proof = auth::prove(
            key,
            REGISTER_LABEL,
            &[challenge, &self.nonce, &self.digest()],
        );
        self
    }

    /// Whether `proof` is right for `key` and `challenge` (constant time).
    pub fn verify(&self, key: &[u8], challenge: &Nonce) -> bool {
        auth::verify(
            key,
            REGISTER_LABEL,
            &[challenge, &self.nonce, &self.digest()],
            &self.proof,
        )
    }
}

/// The rendezvous's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The listener address of every rank, by rank, and the rendezvous's
    /// proof ([`table_proof`]).
    Table(Vec<SocketAddr>, Proof),
    /// The registration was refused.
    Refused(String),
}

/// The rendezvous's proof of the job key over `table`, for the rank whose
/// registration carried `rank_nonce`, on the connection it challenged with
/// `challenge`.
pub fn table_proof(
    key: &[u8],
    challenge: &Nonce,
    rank_nonce: &Nonce,
    table: &[SocketAddr],
) -> Proof {
    auth::prove(
        key,
        TABLE_LABEL,
        &[rank_nonce, challenge, &auth::digest(table)],
    )
}

/// Rank side: whether `proof` is the rendezvous's proof of `key` over
/// `table` (constant time).
pub fn verify_table(
    key: &[u8],
    challenge: &Nonce,
    rank_nonce: &Nonce,
    table: &[SocketAddr],
    proof: &Proof,
) -> bool {
    auth::verify(
        key,
        TABLE_LABEL,
        &[rank_nonce, challenge, &auth::digest(table)],
        proof,
    )
}

/// Bytes that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A body that does not decode.
    #[error("undecodable frame: {0}")]
    Body(String),
}

/// A length-prefixed frame of `msg`.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(msg).unwrap_or_default();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The body length announced by a frame header.
pub fn decode_len(head: [u8; 4]) -> Result<usize, ProtoError> {
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    postcard::from_bytes(body).map_err(|e| ProtoError::Body(e.to_string()))
}

/// Gathers the registrations of one job.
#[derive(Debug, Clone)]
pub struct Gather {
    size: usize,
    key: Vec<u8>,
    addrs: Vec<Option<SocketAddr>>,
}

impl Gather {
    /// A job of `size` ranks with `key`.
    pub fn new(size: usize, key: Vec<u8>) -> Gather {
        Gather {
            size,
            key,
            addrs: vec![None; size],
        }
    }

    /// Takes one registration, received on the connection challenged with
    /// `challenge`; `Err(why)` refuses it (nothing recorded).
    pub fn handle_register(&mut self, reg: &Register, challenge: &Nonce) -> Result<usize, String> {
        if reg.version != VERSION {
            return Err(format!(
                "protocol version {} (the rendezvous speaks {VERSION})",
                reg.version
            ));
        }
        if !reg.verify(&self.key, challenge) {
            return Err("wrong job key (authentication failed)".into());
        }
        if reg.size as usize != self.size {
            return Err(format!(
                "job size {} where the rendezvous serves {}",
                reg.size, self.size
            ));
        }
        let rank = reg.rank as usize;
        let slot = self
            .addrs
            .get_mut(rank)
            .ok_or_else(|| format!("rank {rank} outside a job of {}", reg.size))?;
        if slot.is_some() {
            return Err(format!("rank {rank} registered twice"));
        }
        *slot = Some(reg.addr);
        Ok(rank)
    }

    /// Ranks registered so far.
    pub fn registered(&self) -> usize {
        self.addrs.iter().filter(|a| a.is_some()).count()
    }

    /// The ranks still missing.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.size)
            .filter(|&r| self.addrs[r].is_none())
            .collect()
    }

    /// The full table, once every rank registered.
    pub fn poll_table(&self) -> Option<Vec<SocketAddr>> {
        self.addrs.iter().copied().collect()
    }

    /// The key of this job.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CH: Nonce = [5; 32];

    fn reg(rank: u32, key: &[u8]) -> Register {
        Register {
            version: VERSION,
            rank,
            size: 3,
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + rank as u16)),
            nonce: [rank as u8; 32],
            proof: [0; 32],
        }
        .prove(key, &CH)
    }

    #[test]
    fn gathers_a_table() {
        let mut g = Gather::new(3, b"k".to_vec());
        assert_eq!(g.handle_register(&reg(2, b"k"), &CH), Ok(2));
        assert!(g.poll_table().is_none());
        assert!(g
            .handle_register(&reg(2, b"k"), &CH)
            .unwrap_err()
            .contains("twice"));
        assert!(g
            .handle_register(&reg(1, b"x"), &CH)
            .unwrap_err()
            .contains("key"));
        assert!(g
            .handle_register(&reg(7, b"k"), &CH)
            .unwrap_err()
            .contains("outside"));
        let mut r = reg(0, b"k");
        r.version = 9;
        assert!(g.handle_register(&r, &CH).unwrap_err().contains("version"));
        r = Register {
            size: 4,
            ..reg(0, b"k")
        }
        .prove(b"k", &CH);
        assert!(g.handle_register(&r, &CH).unwrap_err().contains("size"));
        assert_eq!(g.missing(), vec![0, 1]);
        g.handle_register(&reg(0, b"k"), &CH).unwrap();
        g.handle_register(&reg(1, b"k"), &CH).unwrap();
        let t = g.poll_table().unwrap();
        assert_eq!(t[1].port(), 1001);
        assert_eq!(g.registered(), 3);
    }

    #[test]
    fn proofs_bind_key_challenge_and_fields() {
        let r = reg(1, b"k");
        assert!(r.verify(b"k", &CH));
        assert!(!r.verify(b"K", &CH));
        assert!(!r.verify(b"k", &[6; 32]), "a replay on another connection");
        let tampered: [fn(&mut Register); 4] = [
            |r| r.rank = 2,
            |r| r.size = 4,
            |r| r.addr.set_port(1),
            |r| r.nonce[0] ^= 1,
        ];
        for t in tampered {
            let mut r2 = r.clone();
            t(&mut r2);
            assert!(!r2.verify(b"k", &CH));
        }
        // The key is not in the frame.
        let f = encode(&reg(1, b"a-long-job-key"));
        assert!(!f.windows(14).any(|w| w == b"a-long-job-key"));
        // The table's proof.
        let table = [SocketAddr::from(([127, 0, 0, 1], 9))];
        let p = table_proof(b"k", &CH, &r.nonce, &table);
        assert!(verify_table(b"k", &CH, &r.nonce, &table, &p));
        assert!(!verify_table(b"x", &CH, &r.nonce, &table, &p));
        assert!(!verify_table(b"k", &CH, &[0; 32], &table, &p));
        let other = [SocketAddr::from(([127, 0, 0, 1], 10))];
        assert!(!verify_table(b"k", &CH, &r.nonce, &other, &p));
        // Neither proof passes for the other.
        assert!(!verify_table(b"k", &CH, &r.nonce, &table, &r.proof));
    }

    #[test]
    fn frames_roundtrip() {
        let f = encode(&reg(1, b"abc"));
        let len = decode_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, f.len() - 4);
        assert_eq!(decode_body::<Register>(&f[4..]).unwrap(), reg(1, b"abc"));
        let t = Reply::Table(vec![SocketAddr::from(([10, 0, 0, 1], 5))], [3; 32]);
        assert_eq!(decode_body::<Reply>(&encode(&t)[4..]).unwrap(), t);
        let c = Challenge {
            version: VERSION,
            nonce: [8; 32],
        };
        assert_eq!(decode_body::<Challenge>(&encode(&c)[4..]).unwrap(), c);
        assert!(decode_len(u32::MAX.to_le_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_body::<Challenge>(&b);
            let _ = decode_body::<Register>(&b);
            let _ = decode_body::<Reply>(&b);
        }
    }
}
