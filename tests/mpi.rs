//! MPI programs built once against the MPI-5 standard ABI (MPICH's
//! `mpicc_abi`) run unchanged on rfx's `libmpi_abi.so.1` under `rfx run`,
//! and the same binaries on MPICH's own library: rfx's C test programs
//! (`mpi/tests/c/`), the unmodified OSU Micro-Benchmarks 7.4 with their
//! validation on, a rank that dies, and the export of every function of
//! the ABI.
//!
//! Needs `mpicc_abi` and `mpiexec` (`pip install mpich==5.0.2`; CI puts the
//! venv on PATH, or set `RFX_MPICC_ABI`) and the OSU source
//! (`../shared/third-party/osu-micro-benchmarks-7.4`, or `RFX_OSU_DIR`).
//! Without them the tests fail with the reason; `RFX_SKIP_MPI=1` skips.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rfx::client::InvokerConfig;
use rfx::executors::group::{Group, Member};
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, TransportChoice, TransportKind};
use support::mpi::{compile, rfx_library, skip, text, toolchain};
use support::RFX;

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mpi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `prog` on `n` ranks under `rfx run` with rfx's library.
fn on_rfx(n: usize, prog: &Path, args: &[&str]) -> Output {
    Command::new(RFX)
        .args(["run", "--timeout-s", "240", "-n", &n.to_string()])
        .arg(prog)
        .args(args)
        .env("RFX_MPI_LIB", rfx_library())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("rfx run")
}

/// Runs `prog` on `n` ranks under MPICH's `mpiexec` with MPICH's library
/// (the binary's own run path).
fn on_mpich(n: usize, prog: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("240")
        .arg(&toolchain().mpiexec)
        .args(["-n", &n.to_string()])
        .arg(prog)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("RFX_RANK")
        .output()
        .expect("mpiexec")
}

#[test]
fn the_c_test_programs_pass_on_rfx_and_on_mpich() {
    if skip() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mpi/tests/c");
    let mut progs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    progs.sort();
    assert!(progs.len() >= 5, "the C test programs in {}", dir.display());
    let out = scratch();
    for src in &progs {
        let name = src.file_stem().unwrap().to_str().unwrap();
        let bin = out.join(name);
        compile(src, &bin);
        for n in [2, 3, 4] {
            let o = on_rfx(n, &bin, &[]);
            let want = format!("OK {name} {n} ranks");
            assert!(
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&want),
                "{name} on rfx, {n} ranks: {}",
                text(&o)
            );
        }
        let o = on_mpich(2, &bin, &[]);
        assert!(
            o.status.success(),
            "{name} on MPICH (the reference), 2 ranks: {}",
            text(&o)
        );
    }
}

/// A copy of OSU 7.4 configured with `mpicc_abi` and the ten benchmarks
/// built, once per target directory.
fn osu() -> &'static PathBuf {
    static O: OnceLock<PathBuf> = OnceLock::new();
    O.get_or_init(|| {
        let src = std::env::var_os("RFX_OSU_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/third-party/osu-micro-benchmarks-7.4")
            });
        assert!(
            src.join("configure").is_file(),
            "OSU 7.4 is not at {} (set RFX_OSU_DIR, or RFX_SKIP_MPI=1 to skip)",
            src.display()
        );
        let dir = scratch().join("osu");
        let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/osu-build.sh"))
            .arg(&src)
            .arg(&dir)
            .arg(&toolchain().mpicc)
            .arg(&toolchain().mpicxx)
            .output()
            .expect("scripts/osu-build.sh runs");
        assert!(o.status.success(), "building OSU: {}", text(&o));
        dir
    })
}

const PT2PT: [&str; 2] = ["osu_latency", "osu_bw"];
const COLL: [&str; 8] = [
    "osu_bcast",
    "osu_reduce",
    "osu_allreduce",
    "osu_barrier",
    "osu_gather",
    "osu_scatter",
    "osu_allgather",
    "osu_alltoall",
];

fn osu_bin(name: &str) -> PathBuf {
    let sub = if PT2PT.contains(&name) {
        "c/mpi/pt2pt/standard"
    } else {
        "c/mpi/collective/blocking"
    };
    osu().join(sub).join(name)
}

/// OSU's arguments: validation where it has it, sizes to 64 KiB, few
/// iterations (figures come from `rfx-bench mpi`, not from here).
fn osu_args(name: &str) -> Vec<&'static str> {
    match name {
        "osu_barrier" => vec!["-i", "200", "-x", "20"],
        _ => vec!["-c", "-m", "1:65536", "-i", "50", "-x", "5"],
    }
}

fn check_osu(name: &str, n: usize, o: &Output, on: &str) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{name} on {on}, {n} ranks: {}", text(o));
    assert!(
        out.contains("# OSU MPI"),
        "{name} on {on}: no OSU header: {}",
        text(o)
    );
    assert!(
        !out.contains("Fail"),
        "{name} on {on}, {n} ranks: validation failed: {}",
        text(o)
    );
    if name != "osu_barrier" {
        assert!(
            out.contains("Pass"),
            "{name} on {on}: nothing validated: {}",
            text(o)
        );
    }
}

#[test]
fn the_osu_benchmarks_validate_on_rfx_and_run_on_mpich() {
    if skip() {
        return;
    }
    for name in PT2PT.iter().chain(COLL.iter()) {
        let bin = osu_bin(name);
        let args = osu_args(name);
        let ranks: &[usize] = if PT2PT.contains(name) { &[2] } else { &[2, 4] };
        for &n in ranks {
            check_osu(name, n, &on_rfx(n, &bin, &args), "rfx");
        }
        check_osu(name, 2, &on_mpich(2, &bin, &args), "MPICH");
    }
}

#[test]
fn every_function_of_the_abi_is_exported() {
    if skip() {
        return;
    }
    let header = std::fs::read_to_string(&toolchain().header).unwrap();
    // Declarations: `ret MPI_name(args);` (typedefs of callbacks aside).
    let wanted: Vec<&str> = header
        .lines()
        .filter(|l| {
            !l.starts_with(' ') && !l.starts_with("typedef") && l.trim_end().ends_with(");")
        })
        .filter_map(|l| {
            let end = l.find('(')?;
            let start = l[..end]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            Some(&l[start..end]).filter(|name| name.starts_with("MPI_"))
        })
        .collect();
    assert!(
        wanted.len() > 600,
        "{} functions in the header",
        wanted.len()
    );
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(rfx_library())
        .output()
        .expect("nm");
    let syms = String::from_utf8_lossy(&nm.stdout);
    let have: std::collections::HashSet<&str> = syms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(|f| [f.to_string(), format!("P{f}")])
        .filter(|f| !have.contains(f.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    let soname = Command::new("readelf")
        .arg("-d")
        .arg(rfx_library())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&soname.stdout).contains("[libmpi_abi.so.1]"));
}

const DEATH: &str = r#"
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, x = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) _exit(0); /* gone without a word, and without failing the job */
    int rc = MPI_Recv(&x, 1, MPI_INT, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    int cls = -1;
    MPI_Error_class(rc, &cls);
    char msg[MPI_MAX_ERROR_STRING]; int len = 0;
    MPI_Error_string(rc, msg, &len);
    printf("recv from a dead rank: class %d (MPI_ERR_PROC_ABORTED is %d): %s\n", cls, MPI_ERR_PROC_ABORTED, msg);
    int w = 0;
    rc = MPI_Win_fence(0, MPI_WIN_NULL);
    MPI_Error_class(rc, &w);
    printf("unsupported: class %d\n", w);
    return 0;
}
"#;

#[test]
fn a_dead_rank_is_an_error_not_a_hang_and_stubs_name_themselves() {
    if skip() {
        return;
    }
    let dir = scratch();
    let src = dir.join("death.c");
    std::fs::write(&src, DEATH).unwrap();
    let bin = dir.join("death");
    compile(&src, &bin);
    // Built (a cargo build, which may wait on other tests' builds) before
    // the clock starts: the bound is on the run alone.
    rfx_library();
    let t = std::time::Instant::now();
    let o = on_rfx(2, &bin, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("class 58 (MPI_ERR_PROC_ABORTED is 58)"),
        "{}",
        text(&o)
    );
    assert!(out.contains("unsupported: class 55"), "{}", text(&o));
    assert!(t.elapsed().as_secs() < 60, "{:?}", t.elapsed());

    // Under the default handler, a stub ends the program naming itself.
    let fatal = DEATH.replace(
        "MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);",
        "MPI_Win_fence(0, MPI_WIN_NULL);",
    );
    let src = dir.join("fatal.c");
    std::fs::write(&src, fatal).unwrap();
    let bin = dir.join("fatal");
    compile(&src, &bin);
    let o = on_rfx(1, &bin, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("MPI_Win_fence is not implemented"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_mpi_kernel_runs_inside_a_group_invocation() {
    if skip() {
        return;
    }
    // The executors find rfx's MPI library next to `rfx`.
    rfx_library();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = scratch().join("libmpi_kernel.so");
    let o = Command::new(&toolchain().mpicc)
        .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("examples/c"))
        .arg("-o")
        .arg(&lib)
        .arg(root.join("examples/c/mpi_kernel.c"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let n = 3;
    let (_procs, members): (Vec<_>, Vec<_>) = (0..n)
        .map(|i| {
            let token = format!("mpi-kernel-{i}");
            let (p, addr) = support::executor(&token, "shm", &["--hot-timeout-ms", "0"]);
            (
                p,
                Member {
                    addr,
                    token: token.into_bytes(),
                },
            )
        })
        .unzip();
    let fabric = Fabric::open(Config {
        transport: TransportChoice::Forced(TransportKind::Shm),
        ..Config::default()
    })
    .unwrap();
    let source = LibrarySource::Bytes {
        name: "mpi_kernel".into(),
        bytes: std::fs::read(&lib).unwrap(),
    };
    let cfg = InvokerConfig {
        timeout: std::time::Duration::from_secs(40),
        ..InvokerConfig::default()
    };
    let mut g = Group::connect(&fabric, &members, source, &["mpi_sum"], cfg).unwrap();
    let inputs: Vec<Vec<u8>> = (0..n)
        .map(|r| {
            [1.0f64 + r as f64, 10.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    // Twice: MPI is attached afresh for every call.
    for _ in 0..2 {
        let outs = g.invoke("mpi_sum", &refs).unwrap();
        for (r, out) in outs.iter().enumerate() {
            assert_eq!(out.len(), 20);
            let sum = f64::from_le_bytes(out[..8].try_into().unwrap());
            let int = |i: usize| i32::from_le_bytes(out[8 + 4 * i..12 + 4 * i].try_into().unwrap());
            assert_eq!(sum, 1.0 + 2.0 + 3.0 + 30.0, "rank {r}");
            assert_eq!(
                (int(1), int(2)),
                (r as i32, n as i32),
                "MPI's rank and size"
            );
            assert_eq!(
                int(0),
                ((r + n - 1) % n) as i32,
                "the left neighbour's rank"
            );
        }
    }
}

const RING: &str = r#"
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size, got = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Sendrecv(&rank, 1, MPI_INT, (rank + 1) % size, 0, &got, 1, MPI_INT,
                 (rank + size - 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
    MPI_Get_library_version(lib, &len);
    printf("rank %d of %d got %d from %s\n", rank, size, got, lib);
    MPI_Finalize();
    return got == (rank + size - 1) % size ? 0 : 1;
}
"#;

/// What `srun` (or `mpirun`) gives each rank: its rank and the job size in
/// the launcher's variables, the rendezvous in `RFX_RENDEZVOUS`, and rfx's
/// library first in `LD_LIBRARY_PATH` (a directory with the link).
#[test]
fn an_mpi_program_starts_from_a_launchers_environment() {
    if skip() {
        return;
    }
    let dir = scratch();
    let src = dir.join("ring.c");
    std::fs::write(&src, RING).unwrap();
    let bin = dir.join("ring");
    compile(&src, &bin);
    let libdir = dir.join("launcher-lib");
    let _ = std::fs::remove_dir_all(&libdir);
    std::fs::create_dir_all(&libdir).unwrap();
    std::os::unix::fs::symlink(rfx_library(), libdir.join("libmpi_abi.so.1")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let n = 3;
    let ranks: Vec<support::Proc> = (0..n)
        .map(|r| {
            let p = Command::new(&bin)
                .env("SLURM_PROCID", r.to_string())
                .env("SLURM_NTASKS", n.to_string())
                .env("RFX_RENDEZVOUS", format!("127.0.0.1:{port}"))
                .env("LD_LIBRARY_PATH", &libdir)
                .env_remove("RFX_RANK")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            support::Proc(p)
        })
        .collect();
    for (r, mut p) in ranks.into_iter().enumerate() {
        let st = p
            .wait_timeout(std::time::Duration::from_secs(60))
            .expect("ends");
        let mut out = String::new();
        std::io::Read::read_to_string(p.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(st.success(), "rank {r}: {st}\n{out}\n{err}");
        let want = format!("rank {r} of {n} got {} from rfx", (r + n - 1) % n);
        assert!(out.contains(&want), "rank {r}: {out}\n{err}");
    }
}
