//! Transport selection end to end: what `auto` picks, and forced choices
//! that cannot work.

use rfx_fabric::{Config, ConnectOptions, Fabric, FabricError, TransportChoice, TransportKind};

use crate::util::T;

fn open(choice: TransportChoice) -> Fabric {
    Fabric::open(Config {
        transport: choice,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn auto_picks_shm_on_one_host() {
    let f = open(TransportChoice::Auto);
    let l = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let s = std::thread::spawn(move || l.accept(&ConnectOptions::new()).map(|e| e.kind()));
    let c = f.connect(addr, &ConnectOptions::new()).unwrap();
    assert_eq!(c.kind(), TransportKind::Shm);
    assert_eq!(s.join().unwrap().unwrap(), TransportKind::Shm);
}

#[test]
fn one_forced_side_decides() {
    let server = open(TransportChoice::Forced(TransportKind::Tcp));
    let l = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let s = std::thread::spawn(move || l.accept(&ConnectOptions::new()).map(|e| e.kind()));
    let c = open(TransportChoice::Auto)
        .connect(addr, &ConnectOptions::new())
        .unwrap();
    assert_eq!(c.kind(), TransportKind::Tcp);
    assert_eq!(s.join().unwrap().unwrap(), TransportKind::Tcp);
}

#[test]
fn conflicting_forces_are_an_error_on_both_sides() {
    let server = open(TransportChoice::Forced(TransportKind::Tcp));
    let l = server.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let s = std::thread::spawn(move || {
        l.incoming(Some(T))
            .unwrap()
            .accept(&ConnectOptions::new(), |_| Ok(()))
    });
    let r = open(TransportChoice::Forced(TransportKind::Shm)).connect(addr, &ConnectOptions::new());
    assert!(
        matches!(&r, Err(FabricError::Rejected(why)) if why.contains("forces")),
        "{r:?}"
    );
    assert!(matches!(
        s.join().unwrap(),
        Err(FabricError::NoTransport(_))
    ));
}

#[test]
fn unbuilt_transport_is_a_clear_error() {
    for kind in [TransportKind::Verbs, TransportKind::Ofi] {
        if kind == TransportKind::Ofi && cfg!(feature = "ofi") {
            continue; // built: covered by the ofi conformance modules
        }
        let r = Fabric::open(Config {
            transport: TransportChoice::Forced(kind),
            ..Config::default()
        });
        match r {
            Err(e @ FabricError::NotBuilt { .. }) => assert!(e.to_string().contains("--features")),
            other => panic!("{kind}: {other:?}"),
        }
    }
}
