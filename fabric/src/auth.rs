//! Mutual challenge-response over a shared secret, free of I/O: the proofs
//! the handshake carries when [`crate::ConnectOptions::secret`] is set.
//!
//! ```text
//! server -> client  Challenge   { nonce_s }
//! client -> server  ClientHello { hello_c, nonce_c, proof_c }
//! server -> client  Accept      { hello_s, transport, shm, proof_s }   (or Reject)
//!
//! proof_c = HMAC-SHA256(secret, "rfx-hs-client-v1" | nonce_s | nonce_c | H(hello_c))
//! proof_s = HMAC-SHA256(secret, "rfx-hs-server-v1" | nonce_c | nonce_s | H(hello_c)
//!                                                  | H(hello_s, transport, shm))
//! H = SHA-256 of the postcard encoding; every HMAC input part is
//! length-prefixed (u64 LE), so no two different part lists collide.
//! ```
//!
//! What it proves: each side knows the secret, now (the other side's fresh
//! nonce is in the proof, so an old proof does not replay), and the hellos
//! (exposed buffers and their rkeys, user data, providers) and the server's
//! choice of transport are the ones the two sides sent (a changed field
//! breaks the proof). The labels differ per direction, so a proof taken
//! from one side is never valid for the other (no reflection). What it
//! does not do: encrypt or authenticate anything after the handshake. The
//! data path is plain; an attacker who can rewrite traffic between the two
//! hosts can still read it, or relay the whole handshake and take over the
//! connection afterwards. The secret itself never crosses the wire.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::wire::{Accept, ClientHello, Hello, Nonce, Proof};

/// Label of the client's proof.
pub const CLIENT_LABEL: &[u8] = b"rfx-hs-client-v1";
/// Label of the server's proof.
pub const SERVER_LABEL: &[u8] = b"rfx-hs-server-v1";

/// Why a peer's proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// This side has a secret, the peer sent no proof.
    #[error("no proof of the shared secret was presented")]
    NoProof,
    /// The proof does not match: another secret, or altered handshake data.
    #[error("the proof of the shared secret is wrong (another secret, or altered handshake data)")]
    WrongProof,
}

/// A shared secret; its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl Secret {
    pub(crate) fn new(bytes: &[u8]) -> Secret {
        Secret(bytes.to_vec())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn keyed(secret: &[u8], label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key");
    for p in std::iter::once(&label).chain(parts) {
        mac.update(&(p.len() as u64).to_le_bytes());
        mac.update(p);
    }
    mac
}

/// HMAC-SHA256 of `label` and `parts` (each length-prefixed) under `secret`.
/// Other rfx protocols (e.g. the collectives rendezvous) prove a shared
/// secret with it too, each under its own label.
pub fn prove(secret: &[u8], label: &[u8], parts: &[&[u8]]) -> Proof {
    keyed(secret, label, parts).finalize().into_bytes().into()
}

/// Whether `proof` is [`prove`]`(secret, label, parts)`, compared in
/// constant time.
pub fn verify(secret: &[u8], label: &[u8], parts: &[&[u8]], proof: &Proof) -> bool {
    keyed(secret, label, parts).verify_slice(proof).is_ok()
}

/// SHA-256 of the postcard encoding of `v`.
pub fn digest<T: serde::Serialize + ?Sized>(v: &T) -> [u8; 32] {
    // postcard into a Vec only fails on allocation failure.
    let bytes = postcard::to_allocvec(v).expect("postcard encodes into a Vec");
    Sha256::digest(bytes).into()
}

fn accept_digest(a: &Accept) -> [u8; 32] {
    digest(&(&a.hello, &a.transport, &a.shm))
}

/// The client's proof over the server's challenge and its own hello.
pub fn client_proof(secret: &[u8], nonce_s: &Nonce, nonce_c: &Nonce, hello: &Hello) -> Proof {
    prove(secret, CLIENT_LABEL, &[nonce_s, nonce_c, &digest(hello)])
}

/// The server's proof over both nonces, the client's hello and its own
/// answer (`accept.proof` is not covered).
pub fn server_proof(
    secret: &[u8],
    nonce_s: &Nonce,
    client: &ClientHello,
    accept: &Accept,
) -> Proof {
    prove(
        secret,
        SERVER_LABEL,
        &[
            &client.nonce,
            nonce_s,
            &digest(&client.hello),
            &accept_digest(accept),
        ],
    )
}

/// Server side: checks the client's proof when the server has a secret (a
/// server without one ignores any proof).
pub fn check_client(
    secret: Option<&[u8]>,
    nonce_s: &Nonce,
    client: &ClientHello,
) -> Result<(), AuthError> {
    let Some(secret) = secret else { return Ok(()) };
    let proof = client.proof.as_ref().ok_or(AuthError::NoProof)?;
    let parts: [&[u8]; 3] = [nonce_s, &client.nonce, &digest(&client.hello)];
    if verify(secret, CLIENT_LABEL, &parts, proof) {
        Ok(())
    } else {
        Err(AuthError::WrongProof)
    }
}

/// Client side: checks the server's proof when the client has a secret (a
/// client without one ignores any proof).
pub fn check_server(
    secret: Option<&[u8]>,
    nonce_s: &Nonce,
    client: &ClientHello,
    accept: &Accept,
) -> Result<(), AuthError> {
    let Some(secret) = secret else { return Ok(()) };
    let proof = accept.proof.as_ref().ok_or(AuthError::NoProof)?;
    let parts: [&[u8]; 4] = [
        &client.nonce,
        nonce_s,
        &digest(&client.hello),
        &accept_digest(accept),
    ];
    if verify(secret, SERVER_LABEL, &parts, proof) {
        Ok(())
    } else {
        Err(AuthError::WrongProof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::{Caps, ProviderInfo, TransportKind};
    use crate::mr::RemoteBuffer;
    use crate::wire::ShmOffer;

    const NS: Nonce = [1; 32];
    const NC: Nonce = [2; 32];

    fn hello(user: &[u8]) -> Hello {
        Hello {
            host: "h".into(),
            pid: 7,
            forced: None,
            providers: vec![ProviderInfo {
                kind: TransportKind::Tcp,
                caps: Caps::SEND,
                max_inline: 0,
                device: None,
            }],
            buffers: vec![RemoteBuffer {
                addr: 0x1000,
                len: 64,
                rkey: 9,
            }],
            user: user.to_vec(),
        }
    }

    /// A client message and the server's answer, both proven with `secret`.
    fn exchange(secret: &[u8]) -> (ClientHello, Accept) {
        let h = hello(b"c");
        let client = ClientHello {
            proof: Some(client_proof(secret, &NS, &NC, &h)),
            hello: h,
            nonce: NC,
        };
        let mut accept = Accept {
            hello: hello(b"s"),
            transport: TransportKind::Shm,
            shm: Some(ShmOffer {
                socket: "x".into(),
                nonce: [3; 16],
            }),
            proof: None,
        };
        accept.proof = Some(server_proof(secret, &NS, &client, &accept));
        (client, accept)
    }

    #[test]
    fn deterministic_and_known() {
        assert_eq!(prove(b"k", b"l", &[b"a"]), prove(b"k", b"l", &[b"a"]));
        // RFC 4231 test case 2 (plain HMAC, no length prefixes): checks the
        // primitive, then that `prove` frames its input.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(tag[..8], [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e]);
        assert_ne!(prove(b"Jefe", b"what do ya want ", &[b"for nothing?"]), tag);
    }

    #[test]
    fn parts_are_framed() {
        // Moving bytes between parts (or into the label) changes the proof.
        let a = prove(b"k", b"l", &[b"ab", b"c"]);
        assert_ne!(a, prove(b"k", b"l", &[b"a", b"bc"]));
        assert_ne!(a, prove(b"k", b"la", &[b"b", b"c"]));
        assert_ne!(a, prove(b"k", b"l", &[b"abc"]));
        assert!(verify(b"k", b"l", &[b"ab", b"c"], &a));
        assert!(!verify(b"k2", b"l", &[b"ab", b"c"], &a));
    }

    #[test]
    fn same_secret_passes_both_ways() {
        let (c, a) = exchange(b"secret");
        assert_eq!(check_client(Some(b"secret"), &NS, &c), Ok(()));
        assert_eq!(check_server(Some(b"secret"), &NS, &c, &a), Ok(()));
        // Without a secret, a side checks nothing.
        assert_eq!(check_client(None, &NS, &c), Ok(()));
        assert_eq!(check_server(None, &NS, &c, &a), Ok(()));
    }

    #[test]
    fn wrong_secret_fails_both_ways() {
        let (c, a) = exchange(b"secret");
        assert_eq!(
            check_client(Some(b"secreT"), &NS, &c),
            Err(AuthError::WrongProof)
        );
        assert_eq!(
            check_server(Some(b"secret2"), &NS, &c, &a),
            Err(AuthError::WrongProof)
        );
        assert_eq!(check_client(Some(b""), &NS, &c), Err(AuthError::WrongProof));
    }

    #[test]
    fn missing_proof_fails() {
        let (mut c, mut a) = exchange(b"secret");
        c.proof = None;
        a.proof = None;
        assert_eq!(
            check_client(Some(b"secret"), &NS, &c),
            Err(AuthError::NoProof)
        );
        assert_eq!(
            check_server(Some(b"secret"), &NS, &c, &a),
            Err(AuthError::NoProof)
        );
    }

    #[test]
    fn any_changed_nonce_or_field_fails() {
        let s: &[u8] = b"secret";
        let (c, a) = exchange(s);
        // The server's challenge differs (a replayed client message).
        assert_eq!(
            check_client(Some(s), &[9; 32], &c),
            Err(AuthError::WrongProof)
        );
        assert_eq!(
            check_server(Some(s), &[9; 32], &c, &a),
            Err(AuthError::WrongProof)
        );
        // Tampered client fields.
        let tampered: [fn(&mut ClientHello); 6] = [
            |c| c.nonce[31] ^= 1,
            |c| c.hello.user.push(0),
            |c| c.hello.buffers[0].rkey ^= 1,
            |c| c.hello.buffers[0].len += 1,
            |c| c.hello.pid += 1,
            |c| c.hello.forced = Some(TransportKind::Tcp),
        ];
        for t in tampered {
            let mut c2 = c.clone();
            t(&mut c2);
            assert_eq!(check_client(Some(s), &NS, &c2), Err(AuthError::WrongProof));
            // The server's proof covers the client's message too.
            assert_eq!(
                check_server(Some(s), &NS, &c2, &a),
                Err(AuthError::WrongProof)
            );
        }
        // Tampered server fields.
        let tampered: [fn(&mut Accept); 5] = [
            |a| a.transport = TransportKind::Tcp,
            |a| a.hello.buffers[0].addr += 8,
            |a| a.hello.user.clear(),
            |a| a.shm = None,
            |a| a.proof.as_mut().unwrap()[0] ^= 0x80,
        ];
        for t in tampered {
            let mut a2 = a.clone();
            t(&mut a2);
            assert_eq!(
                check_server(Some(s), &NS, &c, &a2),
                Err(AuthError::WrongProof)
            );
        }
    }

    #[test]
    fn no_reflection() {
        // A server's proof is not a client's, even over the same inputs.
        let (c, _) = exchange(b"secret");
        let parts: [&[u8]; 3] = [&NS, &NC, &digest(&c.hello)];
        let reflected = ClientHello {
            proof: Some(prove(b"secret", SERVER_LABEL, &parts)),
            ..c
        };
        assert_eq!(
            check_client(Some(b"secret"), &NS, &reflected),
            Err(AuthError::WrongProof)
        );
    }

    proptest::proptest! {
        #[test]
        fn only_the_same_inputs_verify(
            secret in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            other in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            ns: [u8; 32],
            nc: [u8; 32],
            bit in 0usize..256,
        ) {
            let h = hello(b"u");
            let p = client_proof(&secret, &ns, &nc, &h);
            let c = ClientHello { hello: h, nonce: nc, proof: Some(p) };
            proptest::prop_assert_eq!(check_client(Some(&secret), &ns, &c), Ok(()));
            if other != secret {
                proptest::prop_assert_eq!(
                    check_client(Some(&other), &ns, &c),
                    Err(AuthError::WrongProof)
                );
            }
            let mut ns2 = ns;
            ns2[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert_eq!(
                check_client(Some(&secret), &ns2, &c),
                Err(AuthError::WrongProof)
            );
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = Secret::new(b"hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.as_bytes(), b"hunter2");
    }
}
