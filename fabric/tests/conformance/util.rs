//! Harness of the conformance suite: real sockets, real shared memory,
//! real child processes; every wait bounded.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rfx_fabric::{
    Config, ConnectOptions, Endpoint, Fabric, MemoryRegion, TransportChoice, TransportKind,
};

pub const T: Duration = Duration::from_secs(20);

thread_local! {
    /// The libfabric provider of the ofi cases run on this thread (set by
    /// `with_ofi_provider`); child processes get it as `RFX_OFI_PROVIDER`.
    static OFI_PROVIDER: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `provider` as the ofi provider of every `config` made on
/// this thread.
#[allow(dead_code)]
pub fn with_ofi_provider(provider: &str, f: impl FnOnce()) {
    OFI_PROVIDER.with(|p| *p.borrow_mut() = Some(provider.to_string()));
    f();
    OFI_PROVIDER.with(|p| *p.borrow_mut() = None);
}

fn ofi_provider() -> Option<String> {
    OFI_PROVIDER
        .with(|p| p.borrow().clone())
        .or_else(|| std::env::var("RFX_OFI_PROVIDER").ok())
}

pub fn config(kind: TransportKind) -> Config {
    Config {
        transport: TransportChoice::Forced(kind),
        connect_timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(20),
        ofi_provider: ofi_provider(),
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
        let mut cmd = Command::new(exe);
        if let Some(p) = ofi_provider() {
            cmd.env("RFX_OFI_PROVIDER", p);
        }
        let child = cmd
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
