//! `rfx-bench all --json DIR`: every benchmark, each with the baselines
//! found on this machine (`scripts/baselines.sh` installs them), one after
//! the other (they would share the cores otherwise), each as a child
//! process of this binary writing `DIR/NAME.json`, `DIR/NAME.csv` and its
//! table to `DIR/NAME.log`; then `DIR/all.json` says what ran, how long it
//! took, and which baselines were found or missing.

pub(crate) mod sockperf;

use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::results::{Baseline, Manifest, SockperfReport, StepResult, StepStatus};
use crate::{cold_start, library, machine, pin, schedule};

/// Arguments of `rfx-bench all`; the defaults are sized for a whole run of
/// a few minutes on a 2-core machine.
#[derive(Args, Debug)]
pub struct AllArgs {
    /// The directory of the result files (created if missing).
    #[arg(long, default_value = "out")]
    pub json: PathBuf,
    /// Providers for transport, invoke, throughput and cold-start (default
    /// shm,tcp; transport adds ofi when this binary has it and fi_pingpong
    /// is installed).
    #[arg(long, value_delimiter = ',')]
    pub transport: Vec<String>,
    /// Sizes for transport, invoke, coll and sockperf, e.g. `8,4k,1m`
    /// (default: each benchmark's own).
    #[arg(long)]
    pub sizes: Option<String>,
    /// Measured iterations per size (transport, invoke, coll) and cold
    /// starts (default: each benchmark's own).
    #[arg(long)]
    pub iters: Option<u64>,
    /// Warm-up iterations per size (transport, invoke, coll).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Seconds per throughput point, and per sockperf size (rounded up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Rank counts of coll.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub ranks: Vec<usize>,
    /// Operations of coll (default: all of them).
    #[arg(long)]
    pub coll_ops: Option<String>,
    /// Function library with `noop` and `echo` (default: build
    /// examples/functions in release mode, once for every benchmark).
    #[arg(long)]
    pub lib: Option<PathBuf>,
    /// The Open MPI baseline of coll (default: target/coll_lat when it
    /// exists; scripts/baselines.sh builds it).
    #[arg(long)]
    pub mpi: Option<PathBuf>,
    /// Benchmarks to leave out (comma-separated): transport, invoke,
    /// throughput, cold-start, coll, sockperf.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Bound on each benchmark, seconds (killed past it).
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

/// Whether `prog` is an executable file on `PATH`.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
}

/// What this machine has, found before the run.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// `sockperf` on PATH.
    pub sockperf: bool,
    /// This binary has the ofi provider and `fi_pingpong` is on PATH.
    pub ofi: bool,
    /// The MPI baseline binary (and `mpirun` on PATH).
    pub mpi: Option<PathBuf>,
    /// Why cold-start cannot run (no `rfx` binary beside this one).
    pub no_rfx: Option<String>,
    /// The function library.
    pub lib: Option<PathBuf>,
    /// Why `mpi` cannot run (no MPICH standard-ABI toolchain on PATH).
    pub no_mpi_abi: Option<String>,
}

/// One benchmark of the run: a subcommand of this binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: &'static str,
    /// Its arguments, without `--json`/`--csv`.
    pub args: Vec<String>,
    /// Why it does not run, if it does not.
    pub skip: Option<String>,
}

fn push(v: &mut Vec<String>, flag: &str, value: impl ToString) {
    v.push(flag.to_string());
    v.push(value.to_string());
}

/// The benchmarks `all` runs, with their arguments: pure, from the
/// arguments and what was found.
pub fn plan(a: &AllArgs, found: &Found) -> Vec<Plan> {
    let given_transport = (!a.transport.is_empty()).then(|| a.transport.join(","));
    let common = |v: &mut Vec<String>, sizes: bool, warmup: bool| {
        if sizes {
            if let Some(s) = &a.sizes {
                push(v, "--sizes", s);
            }
        }
        if let Some(i) = a.iters {
            push(v, "--iters", i);
        }
        if warmup {
            if let Some(w) = a.warmup {
                push(v, "--warmup", w);
            }
        }
    };
    let lib = |v: &mut Vec<String>| {
        if let Some(l) = &found.lib {
            push(v, "--lib", l.display());
        }
    };
    let mut out = Vec::new();

    let mut t = vec!["transport".to_string()];
    let tt = given_transport.clone().unwrap_or_else(|| {
        if found.ofi {
            "shm,tcp,ofi".into()
        } else {
            "shm,tcp".into()
        }
    });
    push(&mut t, "--transport", tt);
    common(&mut t, true, true);
    out.push(Plan {
        name: "transport",
        args: t,
        skip: None,
    });

    let mut i = vec!["invoke".to_string()];
    push(
        &mut i,
        "--transport",
        given_transport.clone().unwrap_or_else(|| "shm,tcp".into()),
    );
    common(&mut i, true, true);
    lib(&mut i);
    out.push(Plan {
        name: "invoke",
        args: i,
        skip: None,
    });

    let mut th = vec!["throughput".to_string()];
    push(
        &mut th,
        "--transport",
        given_transport.clone().unwrap_or_else(|| "shm,tcp".into()),
    );
    push(&mut th, "--threads", "1,2");
    push(&mut th, "--duration", a.duration.unwrap_or(3.0));
    lib(&mut th);
    out.push(Plan {
        name: "throughput",
        args: th,
        skip: None,
    });

    let mut cs = vec!["cold-start".to_string()];
    push(
        &mut cs,
        "--transport",
        given_transport.unwrap_or_else(|| "shm,tcp".into()),
    );
    push(&mut cs, "--iters", a.iters.unwrap_or(50).clamp(1, 200));
    lib(&mut cs);
    out.push(Plan {
        name: "cold-start",
        args: cs,
        skip: found.no_rfx.clone(),
    });

    let mut c = vec!["coll".to_string()];
    push(
        &mut c,
        "--ranks",
        a.ranks
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(ops) = &a.coll_ops {
        push(&mut c, "--ops", ops);
    }
    common(&mut c, true, true);
    if let Some(m) = &found.mpi {
        push(&mut c, "--mpi", m.display());
    }
    out.push(Plan {
        name: "coll",
        args: c,
        skip: None,
    });

    // OSU on rfx, MPICH and Open MPI (`rfx-bench mpi`): needs MPICH's
    // standard-ABI toolchain (pip install mpich==5.0.2) and the OSU source.
    out.push(Plan {
        name: "mpi",
        args: vec!["mpi".to_string()],
        skip: found.no_mpi_abi.clone(),
    });

    for p in &mut out {
        if a.skip.iter().any(|s| s == p.name) {
            p.skip = Some("--skip".into());
        }
    }
    out
}

/// Why `rfx-bench mpi` cannot run here, if it cannot.
fn mpi_missing() -> Option<String> {
    if crate::cmd::mpi::resolve("mpicc_abi").is_none() {
        return Some(
            "mpicc_abi not found: scripts/baselines.sh installs it into target/mpi-venv".into(),
        );
    }
    let osu = std::env::var_os("RFX_OSU_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::cmd::mpi::default_osu);
    if !osu.join("configure").is_file() {
        return Some(format!("no OSU source at {} (RFX_OSU_DIR)", osu.display()));
    }
    let exe = std::env::current_exe().ok()?;
    (!exe.with_file_name("libmpi_abi.so").is_file())
        .then(|| "libmpi_abi.so is not next to rfx-bench (cargo build --release -p rfx-mpi)".into())
}

fn baselines(found: &Found, mpi_note: &str) -> Vec<Baseline> {
    let ofi_note = if !cfg!(feature = "ofi") {
        "rfx-bench built without --features ofi (cargo build --release -p rfx-bench --features ofi)"
            .to_string()
    } else if !on_path("fi_pingpong") {
        "fi_pingpong not found: apt-get install libfabric-bin (scripts/baselines.sh)".into()
    } else {
        "transport --transport ofi runs fi_pingpong on the same provider".into()
    };
    vec![
        Baseline {
            name: "raw tcp ping-pong".into(),
            found: true,
            note: "in-repo (bench/src/baseline/tcp.rs), in transport.json".into(),
        },
        Baseline {
            name: "raw shm ping-pong".into(),
            found: true,
            note: "in-repo (bench/src/baseline/shm.rs), in transport.json".into(),
        },
        Baseline {
            name: "sockperf".into(),
            found: found.sockperf,
            note: if found.sockperf {
                "sockperf ping-pong over TCP loopback, in sockperf.json".into()
            } else {
                "not installed (scripts/baselines.sh installs it): tcp is judged against the \
                 in-repo raw TCP ping-pong"
                    .into()
            },
        },
        Baseline {
            name: "fi_pingpong".into(),
            found: found.ofi,
            note: ofi_note,
        },
        Baseline {
            name: "ib_write_lat".into(),
            found: false,
            note: format!(
                "needs an RDMA device: runs only in the soft-RoCE VM (scripts/verbs-vm.sh){}",
                if on_path("ib_write_lat") {
                    "; perftest is installed"
                } else {
                    ""
                }
            ),
        },
        Baseline {
            name: "mpi".into(),
            found: found.mpi.is_some(),
            note: mpi_note.to_string(),
        },
        Baseline {
            name: "process spawn".into(),
            found: true,
            note: "cold-start's floor: fork+exec+wait of /bin/true and of rfx --version".into(),
        },
    ]
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Finds the MPI baseline: `--mpi`, else `target/coll_lat` here or in the
/// repository; and what to say about it.
fn find_mpi(given: Option<&Path>) -> (Option<PathBuf>, String) {
    let candidates: Vec<PathBuf> = match given {
        Some(p) => vec![p.to_path_buf()],
        None => vec![
            PathBuf::from("target/coll_lat"),
            repo_root().join("target").join("coll_lat"),
        ],
    };
    let Some(bin) = candidates.into_iter().find(|p| p.is_file()) else {
        return (
            None,
            "no target/coll_lat: scripts/baselines.sh installs Open MPI and builds \
             bench/mpi/coll_lat.c"
                .into(),
        );
    };
    if !on_path("mpirun") {
        return (
            None,
            format!(
                "{} found but no mpirun: apt-get install openmpi-bin",
                bin.display()
            ),
        );
    }
    let note = format!(
        "{} (bench/mpi/coll_lat.c) under mpirun, in coll.json",
        bin.display()
    );
    (Some(bin), note)
}

/// The last lines of a log, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `exe ARGS` with its output in `log`, killed past `limit`.
fn run_child(exe: &Path, args: &[String], log: &Path, limit: Duration) -> anyhow::Result<()> {
    let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            anyhow::ensure!(
                st.success(),
                "{st}; last lines of {}:\n{}",
                log.display(),
                tail(log, 15)
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("ran over {limit:?}; killed (log {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Progress on stderr: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: ProgressBar,
    tty: bool,
    len: u64,
}

impl Progress {
    fn new(len: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let b = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, tty, len }
    }

    fn start(&self, what: &str) {
        if self.tty {
            self.bar.set_message(what.to_string());
        } else {
            eprintln!(
                "rfx-bench all: [{}/{}] {what}",
                self.bar.position() + 1,
                self.len
            );
        }
    }

    /// Prints `text` above the bar.
    fn print(&self, text: &str) {
        self.bar.suspend(|| println!("{text}"));
    }

    fn done(&self) {
        self.bar.inc(1);
    }
}

fn write_manifest(
    dir: &Path,
    started: Instant,
    steps: &[StepResult],
    base: &[Baseline],
) -> anyhow::Result<()> {
    let m = Manifest {
        bench: "all".into(),
        machine: machine::describe(),
        dir: dir.to_path_buf(),
        elapsed_s: started.elapsed().as_secs_f64(),
        steps: steps.to_vec(),
        baselines: base.to_vec(),
    };
    let p = dir.join("all.json");
    std::fs::write(&p, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("writing {}", p.display()))
}

/// `rfx-bench all`.
pub fn run(a: AllArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = a.json.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("locating rfx-bench")?;
    if let Some(d) = a.duration {
        anyhow::ensure!(
            d.is_finite() && d > 0.0 && d <= 3600.0,
            "--duration must be in (0, 3600]"
        );
    }
    let (mpi, mpi_note) = find_mpi(a.mpi.as_deref());
    let mut found = Found {
        sockperf: on_path("sockperf"),
        ofi: cfg!(feature = "ofi") && on_path("fi_pingpong"),
        mpi,
        no_rfx: cold_start::rfx_binary().err().map(|e| format!("{e:#}")),
        lib: None,
        no_mpi_abi: mpi_missing(),
    };
    let base = baselines(&found, &mpi_note);
    let wants_lib = ["invoke", "throughput", "cold-start"]
        .iter()
        .any(|n| !a.skip.iter().any(|s| s == n));
    let mut lib_err = None;
    if wants_lib {
        match library::resolve(a.lib.as_deref()) {
            Ok(l) => found.lib = Some(l),
            Err(e) => lib_err = Some(format!("{e:#}")),
        }
    }
    let plans = plan(&a, &found);
    let run_sockperf = found.sockperf && !a.skip.iter().any(|s| s == "sockperf");
    let progress = Progress::new(plans.len() as u64 + u64::from(run_sockperf));
    let mut steps = Vec::new();
    for p in plans {
        let t0 = Instant::now();
        let file = dir.join(format!("{}.json", p.name));
        let mut args = p.args.clone();
        push(&mut args, "--json", file.display());
        push(
            &mut args,
            "--csv",
            dir.join(format!("{}.csv", p.name)).display(),
        );
        let mut step = StepResult {
            name: p.name.into(),
            status: StepStatus::Skipped,
            seconds: 0.0,
            file: None,
            command: std::iter::once("rfx-bench".to_string())
                .chain(args.iter().cloned())
                .collect(),
            note: String::new(),
        };
        let needs_lib = matches!(p.name, "invoke" | "throughput" | "cold-start");
        let skip = p
            .skip
            .clone()
            .or_else(|| if needs_lib { lib_err.clone() } else { None });
        if let Some(why) = skip {
            step.note = why;
            progress.print(&format!("== {}: skipped: {}", p.name, step.note));
        } else {
            progress.start(&format!("{} ({})", p.name, p.args[1..].join(" ")));
            let _ = std::fs::remove_file(&file);
            let log = dir.join(format!("{}.log", p.name));
            let r = run_child(&exe, &args, &log, Duration::from_secs(a.timeout_s));
            step.seconds = t0.elapsed().as_secs_f64();
            match r {
                Ok(()) => {
                    step.status = StepStatus::Ok;
                    step.file = Some(format!("{}.json", p.name));
                    progress.print(&format!(
                        "== {} ({:.0} s)\n{}",
                        p.name,
                        step.seconds,
                        std::fs::read_to_string(&log).unwrap_or_default().trim_end()
                    ));
                }
                Err(e) => {
                    step.status = StepStatus::Failed;
                    step.note = format!("{e:#}");
                    progress.print(&format!(
                        "== {} FAILED after {:.0} s: {}",
                        p.name, step.seconds, step.note
                    ));
                }
            }
        }
        progress.done();
        steps.push(step);
        write_manifest(&dir, started, &steps, &base)?;
    }
    if run_sockperf {
        let t0 = Instant::now();
        progress.start("sockperf (tcp baseline)");
        let sizes = match &a.sizes {
            Some(s) => schedule::parse_sizes(s).map_err(anyhow::Error::msg)?,
            None => schedule::default_sizes(),
        };
        let secs = a.duration.map_or(2, |d| d.ceil() as u64).clamp(1, 60);
        let r = sockperf::run(&sizes, &["hot", "warm"], secs, pin::pair(None));
        let mut step = StepResult {
            name: "sockperf".into(),
            status: StepStatus::Ok,
            seconds: t0.elapsed().as_secs_f64(),
            file: Some("sockperf.json".into()),
            command: vec![
                "sockperf".into(),
                "ping-pong".into(),
                "--tcp".into(),
                "--full-rtt".into(),
            ],
            note: format!(
                "{secs} s per size and mode; sizes below {} B sent as {} B, above {} B left out",
                sockperf::MIN_MSG,
                sockperf::MIN_MSG,
                sockperf::MAX_MSG
            ),
        };
        match r {
            Ok(rows) => {
                let report = SockperfReport {
                    bench: "sockperf".into(),
                    machine: machine::describe(),
                    seconds_per_point: secs,
                    results: rows,
                };
                // Through a serde_json::Value, whose keys are sorted: the
                // order sockperf.json has always had.
                let v = serde_json::to_value(&report)?;
                std::fs::write(
                    dir.join("sockperf.json"),
                    serde_json::to_string_pretty(&v)? + "\n",
                )?;
                crate::report::csv::write(&dir.join("sockperf.csv"), &report.results)?;
                let lines: Vec<String> = report
                    .results
                    .iter()
                    .map(|r| {
                        format!(
                            "tcp  {:<4} {:>8} | sockperf p50 {:>8.2} p99 {:>8.2} p999 {:>8.2}",
                            r.mode,
                            r.size,
                            r.sockperf.p50_us,
                            r.sockperf.p99_us,
                            r.sockperf.p999_us
                        )
                    })
                    .collect();
                progress.print(&format!(
                    "== sockperf ({:.0} s)\n{}",
                    step.seconds,
                    lines.join("\n")
                ));
            }
            Err(e) => {
                step.status = StepStatus::Failed;
                step.file = None;
                step.note = format!("{e:#}");
                progress.print(&format!("== sockperf FAILED: {}", step.note));
            }
        }
        progress.done();
        steps.push(step);
    }
    write_manifest(&dir, started, &steps, &base)?;
    progress.bar.finish_and_clear();
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let missing: Vec<&str> = base
        .iter()
        .filter(|b| !b.found)
        .map(|b| b.name.as_str())
        .collect();
    println!(
        "rfx-bench all: {} in {:.0} s; results in {}; baselines missing: {}",
        if failed.is_empty() {
            "done"
        } else {
            "finished with failures"
        },
        started.elapsed().as_secs_f64(),
        dir.display(),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    anyhow::ensure!(
        failed.is_empty(),
        "failed: {} (see {}/NAME.log)",
        failed.join(", "),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        all: AllArgs,
    }

    fn args(extra: &[&str]) -> AllArgs {
        Cli::parse_from(std::iter::once("all").chain(extra.iter().copied())).all
    }

    #[test]
    fn plan_passes_common_flags_and_found_baselines() {
        let found = Found {
            mpi: Some(PathBuf::from("target/coll_lat")),
            lib: Some(PathBuf::from("/x/lib.so")),
            no_rfx: Some("no rfx".into()),
            ..Found::default()
        };
        let p = plan(
            &args(&[
                "--sizes",
                "8,1k",
                "--iters",
                "30",
                "--warmup",
                "3",
                "--duration",
                "0.2",
                "--skip",
                "throughput",
            ]),
            &found,
        );
        let names: Vec<&str> = p.iter().map(|x| x.name).collect();
        assert_eq!(
            names,
            [
                "transport",
                "invoke",
                "throughput",
                "cold-start",
                "coll",
                "mpi"
            ]
        );
        let t = p[0].args.join(" ");
        assert_eq!(
            t,
            "transport --transport shm,tcp --sizes 8,1k --iters 30 --warmup 3"
        );
        assert!(p[1]
            .args
            .join(" ")
            .ends_with("--sizes 8,1k --iters 30 --warmup 3 --lib /x/lib.so"));
        assert_eq!(p[2].skip.as_deref(), Some("--skip"));
        assert!(p[2].args.join(" ").contains("--duration 0.2"));
        assert_eq!(p[3].skip.as_deref(), Some("no rfx"));
        assert!(p[3].args.join(" ").contains("--iters 30"));
        assert_eq!(
            p[4].args.join(" "),
            "coll --ranks 2,4 --sizes 8,1k --iters 30 --warmup 3 --mpi target/coll_lat"
        );
        // Defaults: ofi joins transport when found; each benchmark's own
        // sizes and counts.
        let d = plan(
            &args(&[]),
            &Found {
                ofi: true,
                ..Found::default()
            },
        );
        assert_eq!(d[0].args.join(" "), "transport --transport shm,tcp,ofi");
        assert_eq!(d[1].args.join(" "), "invoke --transport shm,tcp");
        assert!(d[3].args.join(" ").contains("--iters 50"));
        assert!(d.iter().all(|x| x.skip.is_none()));
        assert!(!d[4].args.iter().any(|a| a == "--mpi"));
    }
}
