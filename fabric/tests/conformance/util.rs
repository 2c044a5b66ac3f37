//! Harness of the conformance suite: real sockets, real shared memory,
//! real child processes; every wait bounded.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rfx_fabric::{
    Config, ConnectOptions, Endpoint, Fabric, MemoryRegion, TransportChoice, TransportKind,
};

pub const T: Duration = Duration::from_secs(20);

pub fn config(kind: TransportKind) -> Config {
    Config {
        transport: TransportChoice::Forced(kind),
        connect_timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

pub fn fabric(kind: TransportKind) -> Fabric {
    Fabric::open(config(kind)).expect("open fabric")
}

/// A connected pair: (server, client), with `server_regions` exposed by the
/// server and `client_regions` by the client.
pub fn pair(
    kind: TransportKind,
    server_regions: &[MemoryRegion],
    client_regions: &[MemoryRegion],
) -> (Endpoint, Endpoint) {
    let f = fabric(kind);
    let listener = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let sopts = server_regions
        .iter()
        .fold(ConnectOptions::new(), |o, r| o.expose(r));
    let copts = client_regions
        .iter()
        .fold(ConnectOptions::new(), |o, r| o.expose(r));
    let server = std::thread::spawn(move || {
        listener
            .incoming(Some(T))
            .unwrap()
            .accept(&sopts, |_| Ok(()))
    });
    let client = f.connect(addr, &copts).expect("connect");
    let server = server.join().unwrap().expect("accept");
    assert_eq!(server.kind(), kind);
    assert_eq!(client.kind(), kind);
    (server, client)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A child process running one of the `peer_*` entry points of this test
/// binary, killed when dropped.
pub struct PeerProcess(pub Child);

impl PeerProcess {
    pub fn spawn(role: &str, kind: TransportKind, addr: SocketAddr) -> PeerProcess {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
            .env("RFX_CONFORMANCE_ROLE", role)
            .env("RFX_CONFORMANCE_ADDR", addr.to_string())
            .env("RFX_TRANSPORT", kind.name())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn peer process");
        PeerProcess(child)
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
