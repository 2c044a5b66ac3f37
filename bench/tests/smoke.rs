//! Smoke test of `rfx-bench invoke` and `rfx-bench throughput`: the binary
//! runs with tiny counts against the example functions (built in debug into
//! `target/examples-functions`, as `executors/tests/abi.rs` does), under a
//! deadline after which it is killed; the JSON must have the expected rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of one benchmark run (debug build, shared machine).
const DEADLINE: Duration = Duration::from_secs(120);

/// The two tests spin on the same CPUs: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .to_path_buf()
}

/// `librfx_example_functions.so`, built once per test binary.
fn example_functions() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = target_dir().join("examples-functions");
        rfx_examples::build(&target, false).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Runs `rfx-bench ARGS --lib LIB --json FILE`, killed past [`DEADLINE`];
/// returns the JSON.
fn run(name: &str, args: &[&str]) -> Value {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lib = example_functions();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join(format!("smoke-{name}.json"));
    let log = dir.join(format!("smoke-{name}.log"));
    let _ = std::fs::remove_file(&json);
    let log_file = File::create(&log).expect("create the log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rfx-bench"))
        .args(args)
        .arg("--lib")
        .arg(lib)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn rfx-bench");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rfx-bench {args:?} still running after {DEADLINE:?}; killed. Output:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "rfx-bench {args:?} failed ({status}):\n{output}"
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON at {} ({e}); output:\n{output}", json.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = v
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v}"));
    assert!(x > 0.0 && x.is_finite(), "{path} = {x} in {v}");
    x
}

#[test]
fn invoke_rows() {
    let report = run(
        "invoke",
        &[
            "invoke", "--sizes", "8,1k", "--iters", "30", "--warmup", "5",
        ],
    );
    assert_eq!(report["bench"], "invoke");
    assert!(report["machine"]["cpus"].as_u64().is_some());
    let rows = report["results"].as_array().expect("results");
    // 2 transports x 2 modes x 2 functions x 2 sizes.
    assert_eq!(rows.len(), 16, "{rows:#?}");
    for transport in ["shm", "tcp"] {
        for mode in ["hot", "warm"] {
            for function in ["noop", "echo"] {
                for size in [8, 1024] {
                    let row = rows
                        .iter()
                        .find(|r| {
                            r["transport"] == transport
                                && r["mode"] == mode
                                && r["function"] == function
                                && r["size"] == size
                        })
                        .unwrap_or_else(|| panic!("no row {transport} {mode} {function} {size}"));
                    assert_eq!(row["invoke"]["iters"], 30);
                    assert_eq!(row["transport_pingpong"]["iters"], 30);
                    positive(row, "/invoke/p50_us");
                    positive(row, "/transport_pingpong/p50_us");
                    positive(row, "/ratio_p50");
                    positive(row, "/ratio_p99");
                }
            }
        }
    }
    // One goal line per transport and mode (noop 8 B).
    assert_eq!(report["goals"].as_array().map(Vec::len), Some(4));
}

#[test]
fn throughput_rows() {
    let report = run(
        "throughput",
        &[
            "throughput",
            "--threads",
            "1,2",
            "--duration-s",
            "0.2",
            "--depth",
            "8",
        ],
    );
    assert_eq!(report["bench"], "throughput");
    let rows = report["results"].as_array().expect("results");
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for transport in ["shm", "tcp"] {
        for threads in [1, 2] {
            let row = rows
                .iter()
                .find(|r| r["transport"] == transport && r["threads"] == threads)
                .unwrap_or_else(|| panic!("no row {transport} {threads}"));
            assert_eq!(row["depth"], 8);
            positive(row, "/invocations");
            positive(row, "/invocations_per_s");
            positive(row, "/latency/p50_us");
            let per_thread = row["per_thread"].as_array().expect("per_thread");
            assert_eq!(per_thread.len(), threads);
            for t in per_thread {
                positive(t, "/invocations");
            }
        }
    }
}
