//! The function library the invocation benchmarks load: `--lib PATH`, else
//! the example functions (`examples/functions`, with `noop` and `echo`)
//! built with cargo in release mode into `target/examples-functions`, as the
//! executors' tests do (in debug there).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

/// The repository root: the parent of `bench/`.
fn repo_root() -> anyhow::Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench/ has no parent directory")
}

/// The library given, else the example functions built in release mode.
pub fn resolve(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--lib {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let root = repo_root()?;
    let target = root.join("target").join("examples-functions");
    let manifest = root.join("examples").join("functions").join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no --lib given and {} is missing: pass --lib PATH to a library with `noop` and `echo`",
            manifest.display()
        );
    }
    eprintln!(
        "rfx-bench: no --lib given: building examples/functions (release) into {}",
        target.display()
    );
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let out = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "building examples/functions failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lib = target.join("release").join("librfx_example_functions.so");
    if !lib.is_file() {
        bail!("cargo built no {}", lib.display());
    }
    eprintln!(
        "rfx-bench: built {} in {:.1} s",
        lib.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(lib)
}
