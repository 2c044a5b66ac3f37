//! MPICH's standard-ABI toolchain and rfx's MPI library, for the tests
//! that build MPI programs (`tests/mpi.rs`, `tests/sandbox.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::RFX;

/// `RFX_SKIP_MPI=1`: the MPI tests skip.
pub fn skip() -> bool {
    std::env::var("RFX_SKIP_MPI").is_ok_and(|v| v == "1")
}

/// MPICH's standard-ABI toolchain.
pub struct Toolchain {
    pub mpicc: PathBuf,
    pub mpicxx: PathBuf,
    pub mpiexec: PathBuf,
    /// The standard ABI's header, `mpi_abi.h`.
    pub header: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub fn toolchain() -> &'static Toolchain {
    static T: OnceLock<Toolchain> = OnceLock::new();
    T.get_or_init(|| {
        let mpicc = std::env::var_os("RFX_MPICC_ABI")
            .map(PathBuf::from)
            .or_else(|| on_path("mpicc_abi"))
            .unwrap_or_else(|| {
                panic!(
                    "mpicc_abi not found: `pip install mpich==5.0.2` into a venv on PATH \
                     (scripts/test.sh does), set RFX_MPICC_ABI, or RFX_SKIP_MPI=1 to skip"
                )
            });
        let bin = mpicc.parent().expect("a directory").to_path_buf();
        let header = bin.join("../include/mpi_abi.h");
        assert!(header.is_file(), "{} is missing", header.display());
        Toolchain {
            mpicxx: bin.join("mpicxx_abi"),
            mpiexec: bin.join("mpiexec"),
            mpicc,
            header,
        }
    })
}

/// rfx's `libmpi_abi.so`, built by cargo for this test's profile.
pub fn rfx_library() -> &'static PathBuf {
    static L: OnceLock<PathBuf> = OnceLock::new();
    L.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "rfx-mpi"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building rfx-mpi failed");
        let lib = Path::new(RFX).with_file_name("libmpi_abi.so");
        assert!(lib.is_file(), "{} not built", lib.display());
        lib
    })
}

pub fn compile(src: &Path, out: &Path) {
    let o = Command::new(&toolchain().mpicc)
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(out)
        .arg(src)
        .output()
        .expect("mpicc_abi runs");
    assert!(
        o.status.success(),
        "{} does not compile:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An output's status and streams, for failure messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
