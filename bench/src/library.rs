//! The function library the invocation benchmarks load: `--lib PATH`, else
//! the example functions (`examples/functions`, with `noop` and `echo`)
//! built with cargo in release mode into `target/examples-functions`, as the
//! executors' tests do (in debug there).

use std::path::{Path, PathBuf};
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
    eprintln!(
        "rfx-bench: no --lib given: building examples/functions (release) into {}",
        target.display()
    );
    let started = Instant::now();
    let lib = rfx_examples::build(&target, true)
        .map_err(|e| anyhow::anyhow!("{e}: pass --lib PATH to a library with `noop` and `echo`"))?;
    eprintln!(
        "rfx-bench: built {} in {:.1} s",
        lib.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(lib)
}
