#![allow(clippy::unwrap_used)]
//! Smoke test of `rfx-bench all` and `rfx-bench report`: the whole suite
//! with tiny settings into a temporary directory (debug build, real
//! processes, loopback only), then the report of it; the result files,
//! the report and its SVG plots must hold the expected rows and series.
//! Baselines that this machine lacks must be recorded as missing, not
//! silently dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of the tiny `all` run (debug build, shared machine).
const DEADLINE: Duration = Duration::from_secs(240);

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .to_path_buf()
}

/// Runs `rfx-bench ARGS` with its output in `log`, killed past `limit`;
/// whether it succeeded, and its output.
fn run(args: &[&str], log: &Path, limit: Duration) -> (bool, String) {
    let f = File::create(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rfx-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rfx-bench {args:?} still running after {limit:?}; killed. Output:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

fn json(dir: &Path, name: &str) -> Value {
    let p = dir.join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn step<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {all:#}"))
}

fn baseline<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no baseline {name} in {all:#}"))
}

#[test]
fn all_then_report() {
    let lib = rfx_examples::build(&target_dir().join("examples-functions"), false)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("all-report");
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_str().unwrap();
    let lib_s = lib.to_str().unwrap();
    let (ok, out) = run(
        &[
            "all",
            "--json",
            dir_s,
            "--sizes",
            "8,1k",
            "--iters",
            "20",
            "--warmup",
            "2",
            "--duration",
            "0.2",
            "--ranks",
            "2",
            "--coll-ops",
            "barrier,bcast,allreduce",
            // OSU's own run is slow in a debug build: tests/smoke.rs runs
            // `mpi` on its own, small.
            "--skip",
            "mpi",
            "--lib",
            lib_s,
        ],
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("all-report.log"),
        DEADLINE,
    );
    assert!(ok, "rfx-bench all failed:\n{out}");
    let all = json(&dir, "all.json");
    assert_eq!(all["bench"], "all");
    assert!(all["machine"]["cpus"].as_u64().unwrap() >= 1);

    // Every benchmark ran, except cold-start without an `rfx` binary
    // beside rfx-bench, which must say so.
    for name in ["transport", "invoke", "throughput", "coll"] {
        assert_eq!(step(&all, name)["status"], "ok", "{all:#}");
        assert!(dir.join(format!("{name}.csv")).is_file(), "{name}.csv");
    }
    let rfx_bin = Path::new(env!("CARGO_BIN_EXE_rfx-bench")).with_file_name("rfx");
    let cold = step(&all, "cold-start");
    if rfx_bin.is_file() {
        assert_eq!(cold["status"], "ok", "{cold:#}");
    } else {
        assert_eq!(cold["status"], "skipped", "{cold:#}");
        assert!(cold["note"].as_str().unwrap().contains("rfx"), "{cold:#}");
    }

    // Percentiles and the CDF in every summary; the machine in every file.
    let t = json(&dir, "transport.json");
    let rows = t["results"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "2 transports x 2 modes x 2 sizes: {rows:#?}");
    for r in rows {
        for which in ["rfx", "raw"] {
            for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
                assert!(r[which][k].as_f64().unwrap() > 0.0, "{which}.{k} in {r}");
            }
            assert_eq!(r[which]["iters"], 20);
            assert_eq!(r[which]["cdf_us"].as_array().unwrap().len(), 20);
        }
    }
    assert!(t["machine"]["kernel"].as_str().is_some());
    assert!(read(&dir.join("transport.csv")).starts_with("baseline,"));
    assert!(read(&dir.join("transport.csv")).contains("rfx.p999_us"));
    let coll = json(&dir, "coll.json");
    assert!(coll["machine"]["profile"] == "debug");
    let coll_rows = coll["rows"].as_array().unwrap();
    assert_eq!(
        coll_rows.len(),
        5,
        "barrier + bcast x2 + allreduce x2: {coll_rows:#?}"
    );

    // Baselines: found ones are used, missing ones are recorded.
    let mpi = baseline(&all, "mpi");
    if mpi["found"] == true {
        assert!(
            coll_rows.iter().all(|r| r["mpi_avg_us"].as_f64().is_some()),
            "{coll_rows:#?}"
        );
    } else {
        assert!(
            mpi["note"].as_str().unwrap().contains("coll_lat"),
            "{mpi:#}"
        );
    }
    let sockperf = baseline(&all, "sockperf");
    if sockperf["found"] == true {
        assert_eq!(step(&all, "sockperf")["status"], "ok", "{all:#}");
        let s = json(&dir, "sockperf.json");
        assert_eq!(s["results"].as_array().unwrap().len(), 4, "{s:#}");
    }
    assert_eq!(baseline(&all, "ib_write_lat")["found"], false);

    // The report.
    let (ok, out) = run(
        &["report", dir_s],
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.log"),
        Duration::from_secs(60),
    );
    assert!(ok, "rfx-bench report failed:\n{out}");
    let md = read(&dir.join("report.md"));
    let html = read(&dir.join("report.html"));
    assert!(md.contains("## Performance goals"), "{md}");
    assert!(
        md.contains("cold start") && md.contains("collectives at or below Open MPI on 2 ranks")
    );
    assert!(md.contains("| missed |") || md.contains("| met |"), "{md}");
    let mut plots = vec![
        (
            "transport-shm.svg",
            vec!["rfx hot", "raw shm hot", "rfx warm", "raw shm warm"],
        ),
        ("transport-tcp.svg", vec!["rfx hot", "raw tcp hot"]),
        (
            "cdf-transport-shm.svg",
            vec!["rfx hot 8 B", "raw shm hot 8 B", "99%"],
        ),
        (
            "invoke-shm.svg",
            vec!["noop hot", "echo hot", "rfx write_imm hot", "raw shm hot"],
        ),
        ("cdf-invoke-tcp.svg", vec!["noop hot 8 B"]),
        ("throughput.svg", vec!["shm", "tcp", "goal 2 M/s"]),
        ("coll-2ranks.svg", vec!["bcast", "allreduce", "rfx"]),
    ];
    if mpi["found"] == true {
        plots.push(("coll-2ranks.svg", vec!["Open MPI"]));
    }
    if sockperf["found"] == true {
        plots.push(("transport-tcp.svg", vec!["sockperf hot", "sockperf warm"]));
    }
    if cold["status"] == "ok" {
        plots.push((
            "cold-start.svg",
            vec!["lease shm", "/bin/true", "process spawn (floor)", "load"],
        ));
    }
    for (file, series) in plots {
        let svg = read(&dir.join("plots").join(file));
        assert!(svg.starts_with("<svg"), "{file}");
        for s in series {
            assert!(svg.contains(s), "{file} has no {s:?}");
        }
        assert!(
            md.contains(&format!("](plots/{file})")),
            "report.md does not show {file}"
        );
    }
    // The HTML carries its plots inline.
    assert!(html.matches("<svg").count() >= 7);
    assert!(!html.contains("plots/"));
}

#[test]
fn report_of_an_empty_directory_says_what_is_missing() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-empty");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, out) = run(
        &["report", dir.to_str().unwrap()],
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-empty.log"),
        Duration::from_secs(30),
    );
    assert!(!ok);
    assert!(out.contains("no result files"), "{out}");
}
