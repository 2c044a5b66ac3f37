//! Names the shared library as the MPI-5 standard ABI requires
//! (`libmpi_abi.so.1`) and generates the entry points of every function
//! rfx does not implement from `src/unsupported.txt`.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/unsupported.txt");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmpi_abi.so.1");
    let list = std::fs::read_to_string("src/unsupported.txt").expect("src/unsupported.txt");
    let mut out = String::new();
    for name in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        for prefix in ["MPI", "PMPI"] {
            writeln!(
                out,
                "#[no_mangle]\nextern \"C\" fn {prefix}_{name}() -> c_int {{ unsupported(\"MPI_{name}\") }}"
            )
            .expect("a String takes writes");
        }
    }
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("unsupported.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
