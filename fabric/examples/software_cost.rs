//! The software cost of the shm data path, without any cache-line transfer:
//! one thread posts a `write_imm` and polls its completion on the peer
//! endpoint, N times. Run under `perf record -e cpu-clock` to see where the
//! time goes.
//!
//! ```text
//! cargo run --release -p rfx-fabric --example software_cost [N]
//! ```

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use rfx_fabric::{Completion, Config, ConnectOptions, Fabric, TransportChoice, TransportKind};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let cfg = Config {
        transport: TransportChoice::Forced(TransportKind::Shm),
        ..Config::default()
    };
    let f = Fabric::open(cfg).unwrap();
    let l = f.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let mr = f.register(4096).unwrap();
    let exposed = mr.clone();
    let t = std::thread::spawn(move || l.accept(&ConnectOptions::new().expose(&exposed)).unwrap());
    let mut c = f.connect(addr, &ConnectOptions::new()).unwrap();
    let mut s = t.join().unwrap();
    let rb = c.peer_buffers()[0];
    let t0 = Instant::now();
    for i in 0..n {
        c.write_imm(&[1u8; 8], &rb, 0, i).unwrap();
        match s.poll().unwrap() {
            Some(Completion::Write(w)) => assert_eq!(w.imm, i),
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "size_of: FabricError {} B, Completion {} B, poll result {} B",
        std::mem::size_of::<rfx_fabric::FabricError>(),
        std::mem::size_of::<Completion>(),
        std::mem::size_of::<Result<Option<Completion>, rfx_fabric::FabricError>>()
    );
    println!(
        "{:.1} ns per write_imm + poll (8 B, shm, one thread)",
        t0.elapsed().as_nanos() as f64 / f64::from(n)
    );
}
