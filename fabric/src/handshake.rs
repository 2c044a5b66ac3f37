//! The handshake's message order as two state machines free of I/O, in
//! the manner of `quinn-proto`: [`Client`] and [`Server`] take the peer's
//! messages as bytes and say what to send and how it ended. `Fabric::connect`
//! and `Incoming::accept` drive them over a socket within a deadline; the
//! tests here drive them against each other in memory.
//!
//! ```text
//! server -> client  Challenge { nonce_s }
//! client -> server  Hello { hello, nonce_c, proof_c? }      (or nothing)
//! server -> client  Accept { hello, transport, shm?, proof_s? } | Reject(why)
//! ```
//!
//! Nothing a peer says is trusted before its proof is checked (when a
//! secret is set), and the server's choice of transport must be the one
//! the client computes itself from both hellos.

use crate::auth;
use crate::caps::TransportKind;
use crate::error::{error_chain, FabricError};
use crate::select::{select, Side};
use crate::wire::{
    decode_body, encode_handshake, Accept, Challenge, ClientHello, HandshakeKind, Hello, Nonce,
    ShmOffer, WireError,
};

/// Where the client is.
#[derive(Debug)]
enum ClientState {
    /// Waiting for the server's challenge.
    Challenged,
    /// Our hello went out; waiting for the answer.
    Hello {
        nonce_s: Nonce,
        sent: Box<ClientHello>,
    },
    /// Established or failed: nothing more is taken.
    Over,
}

/// What the client does after a message.
#[derive(Debug)]
pub(crate) enum ClientStep {
    /// Send these bytes, then read the server's next message.
    Send(Vec<u8>),
    /// The server accepted: switch to `accept.transport`.
    Established(Box<Accept>),
}

/// The client side: answers the challenge with its hello, checks the
/// server's accept.
#[derive(Debug)]
pub(crate) struct Client {
    hello: Option<Hello>,
    nonce: Nonce,
    secret: Option<Vec<u8>>,
    state: ClientState,
}

impl Client {
    /// A client that will say `hello`, with its fresh `nonce` and the
    /// secret the server must prove it knows.
    pub(crate) fn new(hello: Hello, nonce: Nonce, secret: Option<&[u8]>) -> Client {
        Client {
            hello: Some(hello),
            nonce,
            secret: secret.map(<[u8]>::to_vec),
            state: ClientState::Challenged,
        }
    }

    /// Takes the server's next message. An error ends the handshake (the
    /// client sends nothing back: it just closes).
    pub(crate) fn handle(
        &mut self,
        kind: HandshakeKind,
        body: &[u8],
    ) -> Result<ClientStep, FabricError> {
        let state = std::mem::replace(&mut self.state, ClientState::Over);
        if kind == HandshakeKind::Reject {
            return Err(rejected(body));
        }
        match (state, kind) {
            (ClientState::Challenged, HandshakeKind::Challenge) => {
                let challenge: Challenge = decode_body(body).map_err(FabricError::Malformed)?;
                let hello = self
                    .hello
                    .take()
                    .ok_or_else(|| FabricError::Handshake("the hello went out already".into()))?;
                let proof = self
                    .secret
                    .as_deref()
                    .map(|s| auth::client_proof(s, &challenge.nonce, &self.nonce, &hello));
                let sent = ClientHello {
                    hello,
                    nonce: self.nonce,
                    proof,
                };
                let bytes = encode_handshake(HandshakeKind::Hello, &sent);
                self.state = ClientState::Hello {
                    nonce_s: challenge.nonce,
                    sent: Box::new(sent),
                };
                Ok(ClientStep::Send(bytes))
            }
            (ClientState::Hello { nonce_s, sent }, HandshakeKind::Accept) => {
                let accept: Accept = decode_body(body).map_err(FabricError::Malformed)?;
                // Before anything of the answer is used: a client with a
                // secret talks only to a server that proves it.
                auth::check_server(self.secret.as_deref(), &nonce_s, &sent, &accept)
                    .map_err(FabricError::AuthFailed)?;
                let expected = choose(&sent.hello, &accept.hello)
                    .map_err(|e| FabricError::NoTransport(e.to_string()))?;
                if expected != accept.transport {
                    return Err(FabricError::Handshake(format!(
                        "server chose {} where {} was expected",
                        accept.transport, expected
                    )));
                }
                Ok(ClientStep::Established(Box::new(accept)))
            }
            (ClientState::Challenged, other) => Err(FabricError::Handshake(format!(
                "expected the server's challenge, got {other:?}"
            ))),
            (ClientState::Hello { .. }, other) => Err(FabricError::Handshake(format!(
                "expected an accept, got {other:?}"
            ))),
            (ClientState::Over, other) => Err(FabricError::Handshake(format!(
                "{other:?} after the handshake ended"
            ))),
        }
    }
}

/// A refused handshake: the error for us and, when the client should
/// hear why, the rejection to send it (best effort).
#[derive(Debug)]
pub(crate) struct Refusal {
    /// A [`HandshakeKind::Reject`] message, if the client is told.
    pub(crate) reply: Option<Vec<u8>>,
    /// Why, for the server.
    pub(crate) error: FabricError,
}

impl Refusal {
    /// Refused, and the client is told the error's whole chain.
    pub(crate) fn told(error: FabricError) -> Refusal {
        Refusal {
            reply: Some(encode_handshake(
                HandshakeKind::Reject,
                &error_chain(&error),
            )),
            error,
        }
    }
}

/// A client hello that passed every check, and the transport for it.
#[derive(Debug)]
pub(crate) struct Verified {
    /// What the client said (its proof checked).
    pub(crate) request: ClientHello,
    /// The transport both sides will use.
    pub(crate) transport: TransportKind,
}

/// The server side: challenges, checks the client's hello, and answers.
#[derive(Debug)]
pub(crate) struct Server {
    nonce: Nonce,
    secret: Option<Vec<u8>>,
    /// The hello was taken (verified or refused): no second one.
    heard: bool,
}

impl Server {
    /// A server with its fresh `nonce` and the secret the client must
    /// prove it knows; also returns the challenge to send first (always,
    /// secret or not: the protocol has one shape).
    pub(crate) fn new(nonce: Nonce, secret: Option<&[u8]>) -> (Server, Vec<u8>) {
        let challenge = encode_handshake(HandshakeKind::Challenge, &Challenge { nonce });
        let server = Server {
            nonce,
            secret: secret.map(<[u8]>::to_vec),
            heard: false,
        };
        (server, challenge)
    }

    /// Takes the client's message: its proof is checked before `verify`
    /// sees its hello, then the transport is chosen against `ours`.
    pub(crate) fn handle(
        &mut self,
        kind: HandshakeKind,
        body: &[u8],
        ours: &Hello,
        verify: impl FnOnce(&Hello) -> Result<(), String>,
    ) -> Result<Verified, Refusal> {
        if std::mem::replace(&mut self.heard, true) {
            return Err(Refusal::told(FabricError::Handshake(
                "a second hello".into(),
            )));
        }
        if kind != HandshakeKind::Hello {
            return Err(Refusal::told(FabricError::Handshake(format!(
                "expected a hello, got {kind:?}"
            ))));
        }
        let request: ClientHello =
            decode_body(body).map_err(|e| Refusal::told(FabricError::Malformed(e)))?;
        // Nothing the client said is trusted (nor shown to `verify`) before
        // its proof is checked.
        auth::check_client(self.secret.as_deref(), &self.nonce, &request)
            .map_err(|e| Refusal::told(FabricError::AuthFailed(e)))?;
        if let Err(why) = verify(&request.hello) {
            return Err(Refusal {
                reply: Some(encode_handshake(HandshakeKind::Reject, &why)),
                error: FabricError::Rejected(why),
            });
        }
        let transport = choose(ours, &request.hello)
            .map_err(|e| Refusal::told(FabricError::NoTransport(e.to_string())))?;
        Ok(Verified { request, transport })
    }

    /// The accept for a verified client, with the shm rendezvous when the
    /// transport needs one, and its proof.
    pub(crate) fn accept(&self, v: &Verified, hello: Hello, shm: Option<ShmOffer>) -> Vec<u8> {
        let mut accept = Accept {
            hello,
            transport: v.transport,
            shm,
            proof: None,
        };
        accept.proof = self
            .secret
            .as_deref()
            .map(|s| auth::server_proof(s, &self.nonce, &v.request, &accept));
        encode_handshake(HandshakeKind::Accept, &accept)
    }
}

/// The transport for two hellos (the same answer on both sides).
fn choose(ours: &Hello, theirs: &Hello) -> Result<TransportKind, crate::select::SelectError> {
    select(&side(ours), &side(theirs))
}

fn side(h: &Hello) -> Side<'_> {
    Side {
        host: &h.host,
        providers: &h.providers,
        forced: h.forced,
    }
}

/// The error for a rejection with body `body` (its reason).
fn rejected(body: &[u8]) -> FabricError {
    match decode_body::<String>(body) {
        Ok(why) => FabricError::Rejected(why),
        Err(e) => FabricError::Malformed(e),
    }
}

/// A refusal of a message whose header did not decode (e.g. another
/// protocol version): the client is told.
pub(crate) fn refuse_header(e: WireError) -> Refusal {
    Refusal::told(FabricError::Malformed(e))
}

#[cfg(test)]
mod tests;
