//! The example function library (`examples/functions`: `noop`, `echo`,
//! `sum_f64`, `matmul`, `rank_info`, `crash`, `panics`, `overclaim`), built
//! from the source tree for the tests, the benchmarks and `rfx demo`.
//!
//! Support for this repository, not part of rfx's API: it runs `cargo build`
//! on a path inside the tree it was compiled from.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `examples/functions/Cargo.toml` in the source tree this crate was built from.
pub fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("functions/Cargo.toml")
}

/// Builds the example library with cargo (`$CARGO`, else `cargo` on the
/// path) into `target_dir`, in release or debug mode, and returns the
/// path of `librfx_example_functions.so`. Cheap when it is up to date.
pub fn build(target_dir: &Path, release: bool) -> Result<PathBuf, String> {
    let manifest = manifest();
    if !manifest.is_file() {
        return Err(format!("{} is not here to build", manifest.display()));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "building the example functions failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lib = target_dir
        .join(if release { "release" } else { "debug" })
        .join("librfx_example_functions.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("cargo built no {}", lib.display()))
    }
}
