//! Child processes of the benchmarks that start a local cluster (lease
//! manager, executor managers): free ports, and an orderly stop.

use std::net::{SocketAddr, TcpListener};
use std::process::Child;
use std::time::{Duration, Instant};

/// A free loopback port (bound and released: a tiny race, fine for a
/// benchmark on one machine).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Stops `children` in reverse start order: SIGTERM, up to `wait` for a
/// clean exit, then SIGKILL; every child is reaped.
pub fn stop_all<N: std::fmt::Display>(children: &mut [(N, Child)], wait: Duration) {
    for (name, c) in children.iter_mut().rev() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Ok(None) = c.try_wait() {
            eprintln!("rfx-bench: the {name} did not stop within {wait:?}; killing it");
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}
