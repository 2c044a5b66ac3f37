//! Generates the bindings of the system libfabric at build time.
//!
//! - libfabric is found with pkg-config (`libfabric.pc`, from Debian's
//!   `libfabric-dev`); its include paths go to bindgen and to `cc`.
//! - `fi_*` calls are `static inline` in the headers: bindgen's
//!   `wrap_static_fns` writes a C file of non-inline wrappers
//!   (`<name>__extern`), compiled here with `cc` into a static library.
//! - Without libfabric (no pkg-config entry) and without the feature
//!   `required`, the build does not fail: it prints a `cargo:warning`,
//!   emits empty bindings and sets the cfg `libfabric_missing`, so that a
//!   workspace-wide build works on machines without libfabric-dev. With
//!   `required` (which rfx-fabric's feature `ofi` turns on) it fails with
//!   one message that says what to install.
//! - It runs again when pkg-config's answer may change: when one of its
//!   variables changes, or when a directory of its search path changes
//!   (installing libfabric-dev adds `libfabric.pc` there). The headers'
//!   own mtimes would not do: a package keeps the mtimes of its build, older
//!   than an earlier run of this script.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
        "PKG_CONFIG",
        "LIBFABRIC_SYS_SKIP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for dir in pkg_config_dirs() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo::rustc-check-cfg=cfg(libfabric_missing)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = out.join("bindings.rs");

    let lib = match env::var_os("LIBFABRIC_SYS_SKIP") {
        Some(_) => Err("LIBFABRIC_SYS_SKIP is set".to_string()),
        None => pkg_config::Config::new()
            .atleast_version("1.10")
            .cargo_metadata(true)
            .probe("libfabric")
            .map_err(|e| e.to_string()),
    };
    let lib = match lib {
        Ok(lib) => lib,
        Err(e) => {
            let why = e
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_owned();
            if env::var_os("CARGO_FEATURE_REQUIRED").is_some() {
                eprintln!(
                    "error: the `ofi` transport needs libfabric >= 1.10, which pkg-config does not \
                     find ({why}): install libfabric-dev, libclang-dev and pkg-config \
                     (apt-get install libfabric-dev libclang-dev pkg-config), or build without \
                     the feature `ofi`"
                );
                std::process::exit(1);
            }
            println!(
                "cargo:warning=libfabric not found by pkg-config ({why}); libfabric-sys is empty. \
                 Install libfabric-dev (and libclang-dev) to build the `ofi` transport."
            );
            println!("cargo:rustc-cfg=libfabric_missing");
            std::fs::write(&bindings, "// libfabric was not found at build time\n")
                .expect("write empty bindings");
            return;
        }
    };
    for p in &lib.include_paths {
        println!(
            "cargo:rerun-if-changed={}",
            p.join("rdma/fabric.h").display()
        );
    }
    println!("cargo:version={}", lib.version);

    let wrappers = out.join("static_wrappers");
    let clang_args: Vec<String> = lib
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("fi_.*")
        .allowlist_type("fi_.*|fid.*")
        .allowlist_var("FI_.*|FID_.*")
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .derive_default(true)
        .layout_tests(false)
        .wrap_unsafe_ops(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over <rdma/fabric.h> failed (is libclang-dev installed?)")
        .write_to_file(&bindings)
        .expect("write bindings");

    // The wrappers include wrapper.h by absolute path; compile them.
    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .include(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .warnings(false)
        .opt_level(2);
    for p in &lib.include_paths {
        build.include(p);
    }
    build.compile("libfabric_static_wrappers");
}

/// The directories pkg-config searches, those that exist:
/// `PKG_CONFIG_PATH`, then `PKG_CONFIG_LIBDIR` or else its built-in
/// `pc_path`.
fn pkg_config_dirs() -> Vec<PathBuf> {
    let default = env::var("PKG_CONFIG_LIBDIR").unwrap_or_else(|_| {
        let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
        std::process::Command::new(pkg_config)
            .args(["--variable", "pc_path", "pkg-config"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    });
    let mut dirs: Vec<PathBuf> = env::var("PKG_CONFIG_PATH")
        .unwrap_or_default()
        .split(':')
        .chain(default.split(':'))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .collect();
    dirs.dedup();
    dirs
}
