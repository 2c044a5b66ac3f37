//! Decoder properties: arbitrary bytes never panic, encode/decode round-trips.

use super::*;
use crate::proto::{
    Capacity, Event, HostId, Lease, LeaseId, LeaseRequest, LeaseState, LostReason, TenantId, Usage,
    UsageReport,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn lease(id: u64) -> Lease {
    Lease {
        id: LeaseId(id),
        tenant: TenantId::from("alice"),
        host: HostId(3),
        cores: 2,
        core_ids: vec![0, 1],
        memory_mib: 512,
        accelerators: BTreeMap::from([("gpu".to_owned(), vec![1])]),
        hot_timeout_ms: -1,
        exec_timeout_ms: 0,
        container: None,
        granted_at_ms: 10,
        expires_at_ms: 20,
        ended_at_ms: None,
        state: LeaseState::Active,
        usage: Usage::default(),
    }
}

fn samples() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello(Hello::current()),
        ClientMsg::Tenant {
            id: 1,
            token: "alice.00".into(),
            req: TenantRequest::CreateLease(LeaseRequest::new(2, 1000).with_accelerators("gpu", 1)),
        },
        ClientMsg::Tenant {
            id: 2,
            token: "t".into(),
            req: TenantRequest::Renew {
                lease: LeaseId(4),
                extra_ms: 5,
            },
        },
        ClientMsg::Host {
            id: u64::MAX,
            key: "k".into(),
            req: HostRequest::Register {
                addr: "10.0.0.1:7000".into(),
                capacity: Capacity::new(8, 1024).with_accelerators("gpu", 2),
                job: Some("4242".into()),
            },
        },
        ClientMsg::Host {
            id: 3,
            key: "k".into(),
            req: HostRequest::UsageReport {
                host: HostId(1),
                lease: LeaseId(2),
                delta: UsageReport {
                    invocations: 7,
                    ..UsageReport::default()
                },
            },
        },
        ClientMsg::Admin {
            id: 4,
            key: "k".into(),
            req: AdminRequest::AddTenant { name: "bob".into() },
        },
    ]
}

fn server_samples() -> Vec<ServerMsg> {
    let token = LeaseToken::from_bytes([7; 32]);
    vec![
        ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
        },
        ServerMsg::Reply {
            id: 1,
            body: Response::Lease(LeaseInfo {
                lease: lease(1),
                host_addr: "h:1".into(),
                token,
            }),
        },
        ServerMsg::Error(ErrorReply::new(Some(2), ErrorCode::NotFound, "lease 2")),
        ServerMsg::Event(Event::LeaseLost {
            lease: LeaseId(1),
            host: HostId(3),
            reason: LostReason::ExecutorCrashed {
                reason: "signal 9".into(),
            },
        }),
        ServerMsg::Command(Command::Sync(vec![StartLease { lease: lease(5) }])),
    ]
}

#[test]
fn samples_round_trip() {
    for msg in samples() {
        let frame = encode(&msg).expect("encodes");
        assert_eq!(decode_client(&frame).expect("decodes"), msg);
    }
    for msg in server_samples() {
        let frame = encode(&msg).expect("encodes");
        assert_eq!(decode_server(&frame).expect("decodes"), msg);
    }
}

#[test]
fn unknown_error_code_decodes_as_unknown() {
    let frame = br#"{"Error":{"id":null,"code":"SomethingNew","message":"m"}}"#;
    let msg = decode_server(frame).expect("decodes");
    assert_eq!(
        msg,
        ServerMsg::Error(ErrorReply::new(None, ErrorCode::Unknown, "m"))
    );
}

#[test]
fn hello_of_another_version_still_decodes() {
    // A future client may add fields; the daemon must still read the version.
    let frame = br#"{"Hello":{"version":99,"agent":"x","features":["y"]}}"#;
    match decode_client(frame).expect("decodes") {
        ClientMsg::Hello(h) => assert_eq!(h.version, 99),
        other => panic!("not a hello: {other:?}"),
    }
}

#[test]
fn host_commands_carry_no_secret() {
    let frame = encode(&ServerMsg::Command(Command::Sync(vec![StartLease {
        lease: lease(5),
    }])))
    .expect("encodes");
    assert!(!String::from_utf8_lossy(&frame).contains("token"));
}

#[test]
fn token_hex_is_strict() {
    assert!(LeaseToken::from_hex(&"0".repeat(63)).is_none());
    assert!(LeaseToken::from_hex(&"g".repeat(64)).is_none());
    assert!(LeaseToken::from_hex(&"é".repeat(32)).is_none());
    assert_eq!(
        LeaseToken::from_hex(&"AB".repeat(32)),
        Some(LeaseToken::from_bytes([0xab; 32]))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let all = samples();
        let msg = &all[which % all.len()];
        let mut frame = encode(msg).expect("encodes").to_vec();
        for (at, b) in flips {
            let i = at % frame.len();
            frame[i] = b;
        }
        frame.truncate(cut % (frame.len() + 1));
        let _ = decode_client(&frame);
        let _ = decode_server(&frame);
    }

    #[test]
    fn json_like_text_never_panics(s in r#"[\{\}\[\]":,0-9a-zA-Z\\ -]{0,200}"#) {
        let _ = decode_client(s.as_bytes());
        let _ = decode_server(s.as_bytes());
    }

    #[test]
    fn leases_round_trip(id in any::<u64>(), cores in 1u32..64, extra in any::<u64>()) {
        let mut l = lease(id);
        l.cores = cores;
        l.expires_at_ms = extra;
        let msg = ServerMsg::Command(Command::Start(StartLease { lease: l }));
        let frame = encode(&msg).expect("encodes");
        prop_assert_eq!(decode_server(&frame).expect("decodes"), msg);
    }
}
