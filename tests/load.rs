//! A CI-sized run of the load test (`rfx-bench load`, `scripts/load.sh`):
//! tenants and client threads leasing, invoking and releasing for ~8 s
//! against one lease manager and two executor managers, real processes on
//! loopback. Zero errors, zero lost and zero wrong results, every core free
//! at the end.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// `rfx-bench` of the same profile, beside `rfx` (built if missing: it is
/// another package of the workspace).
fn rfx_bench() -> PathBuf {
    let p = std::path::Path::new(RFX).with_file_name("rfx-bench");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "rfx-bench"]);
    if !RFX.contains("/debug/") {
        cmd.arg("--release");
    }
    let st = cmd.status().unwrap();
    assert!(st.success() && p.exists(), "{} not built", p.display());
    p
}

#[test]
fn load_loses_nothing() {
    let bench = rfx_bench();
    let json = std::env::temp_dir().join(format!("rfx-load-{}.json", std::process::id()));
    let child = Command::new(&bench)
        .args([
            "load",
            "--duration-s",
            "8",
            "--hosts",
            "2",
            "--cores-per-host",
            "3",
            "--tenants",
            "3",
            "--clients-per-tenant",
            "2",
            "--invocations-per-lease",
            "100",
            "--rfx",
            RFX,
            "--lib",
        ])
        .arg(&examples().rust)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    let status = p
        .wait_timeout(Duration::from_secs(90))
        .expect("the load test ran over its bound");
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{out}\n{err}");
    eprintln!("{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let c = &v["counts"];
    assert_eq!(c["lost"], 0, "{c}");
    assert_eq!(c["wrong"], 0, "{c}");
    assert_eq!(c["errors"], 0, "{c}");
    assert_eq!(c["ok"], c["submitted"], "{c}");
    assert!(c["leases"].as_u64().unwrap() >= 6, "{c}");
    assert!(v["invoke"]["p99_us"].as_f64().unwrap() > 0.0);
}
