//! `rfx-bench mpi`: the unmodified OSU Micro-Benchmarks on rfx, on MPICH
//! and on Open MPI in one run, each as OSU reports it, with the ratios; and
//! the cost of the ABI layer per call.
//!
//! One OSU build serves rfx and MPICH: compiled once with MPICH's
//! `mpicc_abi`, the binaries load rfx's `libmpi_abi.so.1` under `rfx run`
//! and MPICH's under its `mpiexec`. Open MPI 4 has no standard ABI: OSU is
//! built a second time with its `mpicc`. Every rank is bound to a core of
//! its own (`--bind-to core` for all three).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;

use super::{Output, OutputArgs};
use crate::osu::{self, Unit};
use crate::results::{MpiReport, MpiRow};
use crate::{machine, mpi_overhead};

#[derive(Args)]
pub(crate) struct MpiArgs {
    /// The OSU Micro-Benchmarks 7.4 source (never written: copied first);
    /// default `../shared/third-party/osu-micro-benchmarks-7.4` beside the
    /// repository.
    #[arg(long, env = "RFX_OSU_DIR")]
    osu: Option<PathBuf>,
    /// OSU binaries to run (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "osu_latency,osu_bw,osu_barrier,osu_bcast,osu_reduce,osu_allreduce,osu_gather,osu_scatter,osu_allgather,osu_alltoall"
    )]
    benchmarks: Vec<String>,
    /// Rank counts (comma-separated); point to point runs on 2 only.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    ranks: Vec<usize>,
    /// Runs of each benchmark per implementation; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// OSU's options for every run (sizes, iterations).
    #[arg(long, default_value = "-m 1:1048576", allow_hyphen_values = true)]
    osu_args: String,
    /// MPICH's standard-ABI compiler (its directory holds `mpiexec`).
    #[arg(long, default_value = "mpicc_abi")]
    mpicc_abi: String,
    /// Open MPI's compiler (its directory holds `mpirun`); `none` skips Open MPI.
    #[arg(long, default_value = "/usr/bin/mpicc")]
    ompi_mpicc: String,
    /// Where the two OSU builds go.
    #[arg(long, default_value = "target/osu-bench")]
    build_dir: PathBuf,
    /// Calls per measurement of the ABI layer's cost (0 skips it).
    #[arg(long, default_value_t = 200_000)]
    overhead_iters: u64,
    /// Bound on each run.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    #[command(flatten)]
    out: OutputArgs,
}

/// A compiler given by name or path (a name on PATH, else in the
/// repository's `target/mpi-venv/bin`, where scripts/baselines.sh and
/// scripts/test.sh install MPICH's).
pub(crate) fn resolve(cc: &str) -> Option<PathBuf> {
    let p = Path::new(cc);
    if cc.contains('/') {
        return p.is_file().then(|| p.to_path_buf());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        path.to_str()?
            .split(':')
            .map(|d| Path::new(d).join(cc))
            .find(|c| c.is_file())
    });
    on_path.or_else(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/mpi-venv/bin")
            .join(cc);
        venv.is_file().then_some(venv)
    })
}

/// `../shared/third-party/osu-micro-benchmarks-7.4` beside the repository.
pub(crate) fn default_osu() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/third-party/osu-micro-benchmarks-7.4")
}

fn sibling(of: &Path, name: &str) -> PathBuf {
    of.with_file_name(name)
}

fn build(src: &Path, dest: &Path, cc: &Path, cxx: &Path) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/osu-build.sh");
    let o = Command::new(script)
        .arg(src)
        .arg(dest)
        .arg(cc)
        .arg(cxx)
        .output()
        .context("scripts/osu-build.sh")?;
    anyhow::ensure!(
        o.status.success(),
        "building OSU with {}: {}",
        cc.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// The command that runs `n` ranks of a binary with OSU's arguments.
type Launch = Box<dyn Fn(usize, &Path, &[String]) -> Command>;

/// One implementation: how to launch `n` ranks of a binary of its build.
struct Impl {
    name: &'static str,
    build: PathBuf,
    launch: Launch,
    how: String,
}

fn run_once(
    im: &Impl,
    bench: &str,
    n: usize,
    args: &[String],
    timeout: u64,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let (dir, _) = osu::find(bench).with_context(|| format!("no benchmark {bench}"))?;
    let bin = im.build.join(dir).join(bench);
    let cmd = (im.launch)(n, &bin, args);
    let o = Command::new("timeout")
        .arg(timeout.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .with_context(|| format!("running {bench} on {}", im.name))?;
    let rows = osu::parse(&String::from_utf8_lossy(&o.stdout));
    anyhow::ensure!(
        o.status.success() && !rows.is_empty(),
        "{bench} on {} ({n} ranks) failed ({}): {}",
        im.name,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(rows)
}

/// Median per size over `rounds` runs.
fn measure(
    im: &Impl,
    bench: &str,
    n: usize,
    a: &MpiArgs,
    args: &[String],
) -> anyhow::Result<Vec<(usize, f64)>> {
    let mut per: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    for _ in 0..a.rounds.max(1) {
        for (s, v) in run_once(im, bench, n, args, a.timeout_s)? {
            per.entry(s).or_default().push(v);
        }
    }
    Ok(per
        .into_iter()
        .filter_map(|(s, vs)| Some((s, osu::median(vs)?)))
        .collect())
}

pub(crate) fn run(a: MpiArgs) -> anyhow::Result<()> {
    let mut out = Output::new(&a.out);
    let mpicc = resolve(&a.mpicc_abi)
        .with_context(|| format!("{} not found (pip install mpich==5.0.2)", a.mpicc_abi))?;
    let exe = std::env::current_exe()?;
    let rfx = sibling(&exe, "rfx");
    let lib = sibling(&exe, "libmpi_abi.so");
    anyhow::ensure!(
        rfx.is_file() && lib.is_file(),
        "rfx and libmpi_abi.so are not next to rfx-bench (cargo build --release -p rfx -p rfx-mpi)"
    );
    // `cargo build -p rfx-bench` leaves the library as it was: a library
    // older than the bench may not hold the code being measured.
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(l), Some(e)) = (modified(&lib), modified(&exe)) {
        if e.duration_since(l)
            .is_ok_and(|d| d > std::time::Duration::from_secs(60))
        {
            eprintln!(
                "rfx-bench mpi: warning: {} is older than rfx-bench; if the MPI or \
                 collectives code changed since, rebuild it (cargo build --release -p rfx-mpi)",
                lib.display()
            );
        }
    }
    let osu_src = a.osu.clone().unwrap_or_else(default_osu);
    anyhow::ensure!(
        osu_src.join("configure").is_file(),
        "no OSU source at {} (--osu or RFX_OSU_DIR)",
        osu_src.display()
    );
    let abi_build = a.build_dir.join("abi");
    build(&osu_src, &abi_build, &mpicc, &sibling(&mpicc, "mpicxx_abi"))?;
    let mut impls = Vec::new();
    let (rfx2, lib2) = (rfx.clone(), lib.clone());
    impls.push(Impl {
        name: "rfx",
        build: abi_build.clone(),
        how: format!(
            "rfx run --bind-to core, {} (OSU built with mpicc_abi)",
            lib.display()
        ),
        launch: Box::new(move |n, bin, args| {
            let mut c = Command::new(&rfx2);
            c.args(["run", "--bind-to-core", "-n", &n.to_string()])
                .arg(bin)
                .args(args)
                .env("RFX_MPI_LIB", &lib2);
            c
        }),
    });
    let mpiexec = sibling(&mpicc, "mpiexec");
    impls.push(Impl {
        name: "mpich",
        build: abi_build,
        how: format!(
            "{} -bind-to core, MPICH's libmpi_abi.so.1 (the same binaries)",
            mpiexec.display()
        ),
        launch: Box::new(move |n, bin, args| {
            let mut c = Command::new(&mpiexec);
            c.args(["-n", &n.to_string(), "-bind-to", "core"])
                .arg(bin)
                .args(args);
            c
        }),
    });
    if a.ompi_mpicc != "none" {
        match resolve(&a.ompi_mpicc) {
            Some(cc) => {
                let ompi_build = a.build_dir.join("ompi");
                build(&osu_src, &ompi_build, &cc, &sibling(&cc, "mpicxx"))?;
                let mpirun = sibling(&cc, "mpirun");
                impls.push(Impl {
                    name: "ompi",
                    build: ompi_build,
                    how: format!(
                        "{} --bind-to core --mca pml ob1 --mca btl self,vader (OSU built with {})",
                        mpirun.display(),
                        cc.display()
                    ),
                    launch: Box::new(move |n, bin, args| {
                        let mut c = Command::new(&mpirun);
                        c.args([
                            "--allow-run-as-root",
                            "-np",
                            &n.to_string(),
                            "--bind-to",
                            "core",
                        ])
                        .args(["--mca", "pml", "ob1", "--mca", "btl", "self,vader"])
                        .arg(bin)
                        .args(args);
                        c
                    }),
                });
            }
            None => writeln!(out.table, "Open MPI's {} not found: skipped", a.ompi_mpicc)?,
        }
    }

    let overhead = if a.overhead_iters > 0 {
        mpi_overhead::measure(&lib, a.overhead_iters)?
    } else {
        Vec::new()
    };
    for o in &overhead {
        writeln!(
            out.table,
            "ABI layer: {:<36} direct {:>7.1} ns  through the ABI {:>7.1} ns  overhead {:>6.1} ns",
            o.call, o.direct_ns, o.abi_ns, o.overhead_ns
        )?;
    }

    let osu_args: Vec<String> = a.osu_args.split_whitespace().map(String::from).collect();
    let mut results = Vec::new();
    for bench in &a.benchmarks {
        let (_, unit) = osu::find(bench).with_context(|| format!("no benchmark {bench}"))?;
        let pt2pt = matches!(bench.as_str(), "osu_latency" | "osu_bw");
        let args: Vec<String> = if bench == "osu_barrier" {
            Vec::new()
        } else {
            osu_args.clone()
        };
        for &n in &a.ranks {
            if pt2pt && n != 2 {
                continue;
            }
            let mut figs = Vec::new();
            for im in &impls {
                figs.push(measure(im, bench, n, &a, &args)?);
            }
            writeln!(out.table, "{bench}, {n} ranks ({})", unit.name())?;
            writeln!(
                out.table,
                "{:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
                "size", "rfx", "MPICH", "Open MPI", "x MPICH", "x OMPI"
            )?;
            for &(size, rfx_v) in &figs[0] {
                let at = |i: usize| {
                    figs.get(i)
                        .and_then(|f| f.iter().find(|(s, _)| *s == size))
                        .map(|x| x.1)
                };
                let (mpich, ompi) = (at(1), at(2));
                let ratio = |o: Option<f64>| o.filter(|v| *v > 0.0).map(|v| rfx_v / v);
                let row = MpiRow {
                    benchmark: bench.clone(),
                    ranks: n,
                    size,
                    unit: unit.name().to_string(),
                    rfx: rfx_v,
                    mpich,
                    ompi,
                    x_mpich: ratio(mpich),
                    x_ompi: ratio(ompi),
                };
                let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
                writeln!(
                    out.table,
                    "{:>9} {:>10.2} {:>10} {:>10} {:>8} {:>8}",
                    size,
                    rfx_v,
                    f(mpich),
                    f(ompi),
                    f(row.x_mpich),
                    f(row.x_ompi)
                )?;
                results.push(row);
            }
            if unit == Unit::MBps {
                writeln!(
                    out.table,
                    "(bandwidth: a ratio above 1 means rfx is faster)"
                )?;
            }
        }
    }
    let report = MpiReport {
        bench: "mpi".into(),
        machine: machine::describe(),
        implementations: impls
            .iter()
            .map(|i| format!("{}: {}", i.name, i.how))
            .collect(),
        rounds: a.rounds,
        overhead,
        results,
    };
    out.finish(&report)
}
