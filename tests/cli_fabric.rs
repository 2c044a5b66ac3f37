//! End to end: the `rfx` binary's fabric commands, as real processes.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RFX: &str = env!("CARGO_BIN_EXE_rfx");

/// A child process killed on drop, so a failing test leaves nothing behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rfx fabric serve` on a free port and returns it with its address.
fn serve(connections: u32, extra_env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = Command::new(RFX);
    cmd.args([
        "fabric",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--connections",
        &connections.to_string(),
    ])
    .stderr(Stdio::piped())
    .stdout(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = Proc(cmd.spawn().expect("spawn rfx fabric serve"));
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(addr) = line.strip_prefix("rfx fabric serve: listening on ") {
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr.trim().to_string());
        }
    }
    panic!("serve did not report its address");
}

fn ping(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(RFX)
        .args(["fabric", "ping", addr, "--json"])
        .args(args)
        .output()
        .expect("run rfx fabric ping")
}

#[test]
fn ping_over_each_transport() {
    let (_server, addr) = serve(3, &[]);
    for (transport, expect) in [("auto", "shm"), ("shm", "shm"), ("tcp", "tcp")] {
        let out = ping(
            &addr,
            &["--transport", transport, "--count", "50", "--size", "4096"],
        );
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["transport"], expect);
        assert_eq!(v["count"], 50);
        assert!(v["p50_us"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn unbuilt_or_unknown_transport_is_a_clear_error() {
    let out = Command::new(RFX)
        .args(["--transport", "verbs", "fabric", "ping", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--features verbs"));
    let out = Command::new(RFX)
        .args(["fabric", "info"])
        .env("RFX_TRANSPORT", "pigeon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFX_TRANSPORT"));
}

#[test]
fn info_lists_every_transport() {
    let out = Command::new(RFX)
        .args(["fabric", "info", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["transports"].as_array().unwrap();
    let status = |t: &str| rows.iter().find(|r| r["transport"] == t).unwrap()["status"].clone();
    assert_eq!(status("tcp"), "usable");
    assert_eq!(status("shm"), "usable");
    assert_eq!(status("verbs"), "not built");
    assert_eq!(status("ofi"), "not built");
}

#[test]
fn ping_to_nothing_fails_fast() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = ping(&format!("127.0.0.1:{port}"), &["--count", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect"));
}
