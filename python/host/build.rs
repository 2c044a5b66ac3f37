//! Bakes in the interpreter this host serves (pyo3's, `PYO3_PYTHON`): its
//! path, for CPython to find its prefix and venv as that interpreter would,
//! and the directories its `sys.path` reads, for the executor manager to
//! show read-only inside the sandbox. Sets the run path to libpython's
//! directory, which need not be in the loader's default path (pyenv).

use std::process::Command;

/// Prints the directories the interpreter's modules come from, `:`-separated.
const SCRIPT: &str = "import sys, os
dirs = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
dirs += [p for p in sys.path if p and os.path.isabs(p)]
seen = []
for d in dirs:
    d = os.path.realpath(d)
    if os.path.exists(d) and d not in seen:
        seen.append(d)
print(':'.join(seen))";

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
    let cfg = pyo3_build_config::get();
    let exe = cfg
        .executable
        .clone()
        .expect("pyo3 found no Python interpreter: set PYO3_PYTHON");
    if let Some(dir) = &cfg.lib_dir {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,{dir}");
    }
    let out = Command::new(&exe)
        .args(["-I", "-c", SCRIPT])
        .output()
        .unwrap_or_else(|e| panic!("running {exe}: {e}"));
    assert!(
        out.status.success(),
        "{exe} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dirs = String::from_utf8(out.stdout).expect("paths are UTF-8");
    println!("cargo:rustc-env=RFX_PYHOST_PYTHON={exe}");
    println!("cargo:rustc-env=RFX_PYHOST_DIRS={}", dirs.trim());
}
