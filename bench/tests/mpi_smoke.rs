//! Smoke test of `rfx-bench mpi`: OSU's `osu_latency` and `osu_allreduce`
//! with tiny counts on rfx and MPICH, and the ABI layer's cost, from a debug
//! build; the JSON must have both implementations' figures. Needs
//! `mpicc_abi` on PATH (scripts/test.sh installs it) and the OSU source
//! beside the repository; `RFX_SKIP_MPI=1` skips.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn mpi_runs_osu_on_rfx_and_mpich() {
    if std::env::var("RFX_SKIP_MPI").is_ok_and(|v| v == "1") {
        return;
    }
    // rfx and its MPI library next to rfx-bench, as `mpi` expects.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--quiet", "-p", "rfx", "-p", "rfx-mpi"])
        .status()
        .expect("cargo runs");
    assert!(st.success(), "building rfx and rfx-mpi failed");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mpi-smoke");
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let json = dir.join("mpi.json");
    let _ = std::fs::remove_file(&json);
    let o = Command::new("timeout")
        .arg("600")
        .arg(env!("CARGO_BIN_EXE_rfx-bench"))
        .args([
            "mpi",
            "--benchmarks",
            "osu_latency,osu_allreduce",
            "--rounds",
            "1",
            "--osu-args",
            "-m 1:64 -i 20 -x 2",
            "--overhead-iters",
            "1000",
            "--ompi-mpicc",
            "none",
            "--build-dir",
        ])
        .arg(dir.join("osu-bench"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("rfx-bench runs");
    assert!(
        o.status.success(),
        "rfx-bench mpi failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("mpi.json");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["bench"], "mpi");
    let rows = v["results"].as_array().expect("results");
    for b in ["osu_latency", "osu_allreduce"] {
        let r: Vec<&Value> = rows.iter().filter(|r| r["benchmark"] == b).collect();
        assert!(r.len() >= 4, "{b}: {r:?}");
        for x in r {
            assert!(x["rfx"].as_f64().is_some_and(|f| f > 0.0), "{x}");
            assert!(x["mpich"].as_f64().is_some_and(|f| f > 0.0), "{x}");
            assert!(x["ompi"].is_null(), "Open MPI was left out: {x}");
        }
    }
    assert_eq!(v["overhead"].as_array().expect("overhead").len(), 4);
}
