//! The rendezvous protocol, free of I/O: length-prefixed, versioned
//! postcard messages, and the pure table-gathering state machine.
//!
//! ```text
//! frame: len u32 LE | postcard body (at most MAX_FRAME bytes)
//! rank -> rendezvous: Register { version, key, rank, size, addr }
//! rendezvous -> rank: Table { addrs } (once all `size` ranks registered) | Refused(why)
//! ```

use std::net::SocketAddr;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Version of the rendezvous protocol.
pub const VERSION: u16 = 1;
/// Largest frame body.
pub const MAX_FRAME: usize = 1 << 20;

/// A rank's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// [`VERSION`] of the sender.
    pub version: u16,
    /// The job key (empty for none).
    pub key: Vec<u8>,
    /// The sender's rank.
    pub rank: u32,
    /// The job size the sender expects.
    pub size: u32,
    /// Where the sender's fabric listener accepts peers.
    pub addr: SocketAddr,
}

/// The rendezvous's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The listener address of every rank, by rank.
    Table(Vec<SocketAddr>),
    /// The registration was refused.
    Refused(String),
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

    /// Takes one registration; `Err(why)` refuses it (nothing recorded).
    pub fn handle_register(&mut self, reg: &Register) -> Result<usize, String> {
        if reg.version != VERSION {
            return Err(format!(
                "protocol version {} (the rendezvous speaks {VERSION})",
                reg.version
            ));
        }
        if reg.key != self.key {
            return Err("wrong job key".into());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg(rank: u32, key: &[u8]) -> Register {
        Register {
            version: VERSION,
            key: key.to_vec(),
            rank,
            size: 3,
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + rank as u16)),
        }
    }

    #[test]
    fn gathers_a_table() {
        let mut g = Gather::new(3, b"k".to_vec());
        assert_eq!(g.handle_register(&reg(2, b"k")), Ok(2));
        assert!(g.poll_table().is_none());
        assert!(g
            .handle_register(&reg(2, b"k"))
            .unwrap_err()
            .contains("twice"));
        assert!(g
            .handle_register(&reg(1, b"x"))
            .unwrap_err()
            .contains("key"));
        assert!(g
            .handle_register(&reg(7, b"k"))
            .unwrap_err()
            .contains("outside"));
        let mut r = reg(0, b"k");
        r.version = 9;
        assert!(g.handle_register(&r).unwrap_err().contains("version"));
        r = reg(0, b"k");
        r.size = 4;
        assert!(g.handle_register(&r).unwrap_err().contains("size"));
        assert_eq!(g.missing(), vec![0, 1]);
        g.handle_register(&reg(0, b"k")).unwrap();
        g.handle_register(&reg(1, b"k")).unwrap();
        let t = g.poll_table().unwrap();
        assert_eq!(t[1].port(), 1001);
        assert_eq!(g.registered(), 3);
    }

    #[test]
    fn frames_roundtrip() {
        let f = encode(&reg(1, b"abc"));
        let len = decode_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, f.len() - 4);
        assert_eq!(decode_body::<Register>(&f[4..]).unwrap(), reg(1, b"abc"));
        let t = Reply::Table(vec![SocketAddr::from(([10, 0, 0, 1], 5))]);
        assert_eq!(decode_body::<Reply>(&encode(&t)[4..]).unwrap(), t);
        assert!(decode_len(u32::MAX.to_le_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_body::<Register>(&b);
            let _ = decode_body::<Reply>(&b);
        }
    }
}
