//! The handshake's machines against each other and against hostile peers,
//! without a socket.

use super::*;
use crate::auth::AuthError;
use crate::caps::{Caps, ProviderInfo};
use crate::wire::{decode_handshake_header, HANDSHAKE_HEADER_LEN};

fn provider(kind: TransportKind) -> ProviderInfo {
    ProviderInfo {
        kind,
        caps: Caps::empty(),
        max_inline: 0,
        device: None,
    }
}

fn hello(host: &str, kinds: &[TransportKind]) -> Hello {
    Hello {
        host: host.into(),
        pid: 1,
        forced: None,
        providers: kinds.iter().map(|&k| provider(k)).collect(),
        buffers: vec![],
        user: b"user data".to_vec(),
    }
}

/// Splits one encoded message into its kind and body.
fn split(msg: &[u8]) -> (HandshakeKind, &[u8]) {
    let (kind, len) = decode_handshake_header(&msg[..HANDSHAKE_HEADER_LEN]).expect("a header");
    assert_eq!(msg.len(), HANDSHAKE_HEADER_LEN + len);
    (kind, &msg[HANDSHAKE_HEADER_LEN..])
}

/// How one in-memory run ended, on both sides.
#[derive(Debug)]
struct Run {
    client: Result<Box<Accept>, FabricError>,
    server: Result<TransportKind, FabricError>,
}

/// Runs the whole exchange: both machines, every message through bytes.
fn run(
    c_hello: Hello,
    c_secret: Option<&[u8]>,
    s_hello: Hello,
    s_secret: Option<&[u8]>,
    verify: impl FnOnce(&Hello) -> Result<(), String>,
) -> Run {
    let mut client = Client::new(c_hello, [1; 32], c_secret);
    let (mut server, challenge) = Server::new([2; 32], s_secret);
    let (k, b) = split(&challenge);
    let ours = match client.handle(k, b) {
        Ok(ClientStep::Send(m)) => m,
        other => panic!("the client answers the challenge: {other:?}"),
    };
    let (k, b) = split(&ours);
    let (server_result, reply) = match server.handle(k, b, &s_hello, verify) {
        Ok(v) => {
            let t = v.transport;
            (Ok(t), server.accept(&v, s_hello, None))
        }
        Err(r) => (Err(r.error), r.reply.expect("a refused client is told why")),
    };
    let (k, b) = split(&reply);
    let client_result = match client.handle(k, b) {
        Ok(ClientStep::Established(a)) => Ok(a),
        Ok(ClientStep::Send(_)) => panic!("nothing to send after the answer"),
        Err(e) => Err(e),
    };
    Run {
        client: client_result,
        server: server_result,
    }
}

#[test]
fn both_sides_agree_on_the_transport_with_and_without_a_secret() {
    for secret in [None, Some(&b"lease-token"[..])] {
        let r = run(
            hello("a", &[TransportKind::Tcp, TransportKind::Shm]),
            secret,
            hello("a", &[TransportKind::Tcp, TransportKind::Shm]),
            secret,
            |_| Ok(()),
        );
        assert_eq!(r.server.expect("accepted"), TransportKind::Shm);
        let accept = r.client.expect("established");
        assert_eq!(accept.transport, TransportKind::Shm);
        assert_eq!(accept.proof.is_some(), secret.is_some());
        assert_eq!(accept.hello.user, b"user data");
    }
    // Two hosts: shm is out.
    let r = run(
        hello("a", &[TransportKind::Tcp, TransportKind::Shm]),
        None,
        hello("b", &[TransportKind::Tcp, TransportKind::Shm]),
        None,
        |_| Ok(()),
    );
    assert_eq!(r.server.expect("accepted"), TransportKind::Tcp);
}

#[test]
fn a_wrong_secret_is_refused_before_verify_sees_the_hello() {
    let mut seen = false;
    let r = run(
        hello("a", &[TransportKind::Tcp]),
        Some(b"guess"),
        hello("a", &[TransportKind::Tcp]),
        Some(b"secret"),
        |_| {
            seen = true;
            Ok(())
        },
    );
    assert!(!seen, "verify ran on an unproven hello");
    assert!(matches!(
        r.server,
        Err(FabricError::AuthFailed(AuthError::WrongProof))
    ));
    match r.client {
        Err(FabricError::Rejected(why)) => assert!(why.contains("authentication"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A client without the secret is refused too.
    let r = run(
        hello("a", &[TransportKind::Tcp]),
        None,
        hello("a", &[TransportKind::Tcp]),
        Some(b"secret"),
        |_| Ok(()),
    );
    assert!(matches!(
        r.server,
        Err(FabricError::AuthFailed(AuthError::NoProof))
    ));
}

#[test]
fn a_client_with_a_secret_refuses_a_server_without_it() {
    let r = run(
        hello("a", &[TransportKind::Tcp]),
        Some(b"secret"),
        hello("a", &[TransportKind::Tcp]),
        None,
        |_| Ok(()),
    );
    assert!(r.server.is_ok(), "a server without a secret takes anyone");
    assert!(matches!(
        r.client,
        Err(FabricError::AuthFailed(AuthError::NoProof))
    ));
}

#[test]
fn verify_refuses_with_its_own_reason() {
    let r = run(
        hello("a", &[TransportKind::Tcp]),
        None,
        hello("a", &[TransportKind::Tcp]),
        None,
        |h| {
            Err(format!(
                "no lease for {:?}",
                String::from_utf8_lossy(&h.user)
            ))
        },
    );
    assert!(matches!(r.server, Err(FabricError::Rejected(_))));
    match r.client {
        Err(FabricError::Rejected(why)) => assert_eq!(why, "no lease for \"user data\""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_common_transport_is_refused_on_both_sides() {
    let mut c = hello("a", &[TransportKind::Tcp, TransportKind::Shm]);
    c.forced = Some(TransportKind::Shm);
    let r = run(c, None, hello("b", &[TransportKind::Tcp]), None, |_| Ok(()));
    assert!(matches!(r.server, Err(FabricError::NoTransport(_))));
    match r.client {
        Err(FabricError::Rejected(why)) => assert!(why.contains("shm"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A client past its hello, and the server's challenge nonce.
fn client_waiting_for_accept(secret: Option<&[u8]>) -> (Client, Server, ClientHello) {
    let mut client = Client::new(hello("a", &[TransportKind::Tcp]), [1; 32], secret);
    let (server, challenge) = Server::new([2; 32], secret);
    let (k, b) = split(&challenge);
    let Ok(ClientStep::Send(m)) = client.handle(k, b) else {
        panic!("a hello")
    };
    let (_, b) = split(&m);
    let sent: ClientHello = decode_body(b).expect("our hello decodes");
    (client, server, sent)
}

#[test]
fn a_server_that_picks_another_transport_is_refused() {
    let (mut client, server, sent) = client_waiting_for_accept(Some(b"k"));
    let v = Verified {
        request: sent,
        transport: TransportKind::Shm,
    };
    // Signed, but not the transport the client computes (two hosts, tcp).
    let accept = server.accept(
        &v,
        hello("b", &[TransportKind::Tcp, TransportKind::Shm]),
        None,
    );
    let (k, b) = split(&accept);
    match client.handle(k, b) {
        Err(FabricError::Handshake(why)) => assert!(why.contains("expected"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tampered_accept_fails_its_proof() {
    let (mut client, server, sent) = client_waiting_for_accept(Some(b"k"));
    let v = Verified {
        request: sent,
        transport: TransportKind::Tcp,
    };
    let msg = server.accept(&v, hello("a", &[TransportKind::Tcp]), None);
    let (_, b) = split(&msg);
    let mut accept: Accept = decode_body(b).expect("decodes");
    accept.hello.user = b"someone else".to_vec();
    let msg = encode_handshake(HandshakeKind::Accept, &accept);
    let (k, b) = split(&msg);
    assert!(matches!(
        client.handle(k, b),
        Err(FabricError::AuthFailed(AuthError::WrongProof))
    ));
}

#[test]
fn an_accept_replayed_into_another_handshake_fails_its_proof() {
    let (_, server, sent) = client_waiting_for_accept(Some(b"k"));
    let v = Verified {
        request: sent,
        transport: TransportKind::Tcp,
    };
    let old = server.accept(&v, hello("a", &[TransportKind::Tcp]), None);
    // A new client, a new nonce: the old accept must not pass.
    let mut client = Client::new(hello("a", &[TransportKind::Tcp]), [9; 32], Some(b"k"));
    let (_, challenge) = Server::new([2; 32], Some(b"k"));
    let (k, b) = split(&challenge);
    assert!(matches!(client.handle(k, b), Ok(ClientStep::Send(_))));
    let (k, b) = split(&old);
    assert!(matches!(
        client.handle(k, b),
        Err(FabricError::AuthFailed(AuthError::WrongProof))
    ));
}

#[test]
fn messages_out_of_order_end_the_handshake() {
    // The client: an accept before the challenge, a hello, a second
    // challenge, anything after the end.
    let accept = encode_handshake(HandshakeKind::Accept, &0u8);
    let (k, b) = split(&accept);
    let mut c = Client::new(hello("a", &[TransportKind::Tcp]), [1; 32], None);
    assert!(matches!(c.handle(k, b), Err(FabricError::Handshake(_))));
    assert!(
        matches!(c.handle(k, b), Err(FabricError::Handshake(_))),
        "over"
    );

    let (mut c, _, _) = client_waiting_for_accept(None);
    let (_, challenge) = Server::new([3; 32], None);
    let (k, b) = split(&challenge);
    match c.handle(k, b) {
        Err(FabricError::Handshake(why)) => assert!(why.contains("expected an accept"), "{why}"),
        other => panic!("{other:?}"),
    }

    // The server: anything but a hello, then a second hello.
    let (mut s, _) = Server::new([2; 32], None);
    let ours = hello("a", &[TransportKind::Tcp]);
    let (k, b) = split(&challenge);
    let r = s.handle(k, b, &ours, |_| Ok(()));
    assert!(matches!(
        r,
        Err(Refusal {
            reply: Some(_),
            error: FabricError::Handshake(_)
        })
    ));
    let (mut s, _) = Server::new([2; 32], None);
    let mut c = Client::new(hello("a", &[TransportKind::Tcp]), [1; 32], None);
    let (_, ch) = Server::new([2; 32], None);
    let (k, b) = split(&ch);
    let Ok(ClientStep::Send(h)) = c.handle(k, b) else {
        panic!("a hello")
    };
    let (k, b) = split(&h);
    assert!(s.handle(k, b, &ours, |_| Ok(())).is_ok());
    assert!(s.handle(k, b, &ours, |_| Ok(())).is_err(), "a second hello");
}

#[test]
fn garbage_bodies_are_malformed_never_a_panic() {
    let junk: [&[u8]; 4] = [b"", b"\xff", &[0x80; 64], &[7; 300]];
    for body in junk {
        let mut c = Client::new(hello("a", &[TransportKind::Tcp]), [1; 32], None);
        assert!(matches!(
            c.handle(HandshakeKind::Challenge, body),
            Err(FabricError::Malformed(_))
        ));
        let (mut c, _, _) = client_waiting_for_accept(None);
        assert!(c.handle(HandshakeKind::Accept, body).is_err());
        assert!(c.handle(HandshakeKind::Reject, body).is_err());
        let (mut s, _) = Server::new([2; 32], None);
        let r = s.handle(HandshakeKind::Hello, body, &hello("a", &[]), |_| Ok(()));
        match r {
            Err(Refusal {
                reply: Some(reply),
                error: FabricError::Malformed(_),
            }) => assert_eq!(split(&reply).0, HandshakeKind::Reject),
            other => panic!("{other:?}"),
        }
    }
}
