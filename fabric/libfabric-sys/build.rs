//! Generates the bindings of the system libfabric at build time.
//!
//! - libfabric is found with pkg-config (`libfabric.pc`, from Debian's
//!   `libfabric-dev`); its include paths go to bindgen and to `cc`.
//! - `fi_*` calls are `static inline` in the headers: bindgen's
//!   `wrap_static_fns` writes a C file of non-inline wrappers
//!   (`<name>__extern`), compiled here with `cc` into a static library.
//! - Without libfabric (no pkg-config entry), the build does not fail: it
//!   prints a `cargo:warning`, emits empty bindings and sets the cfg
//!   `libfabric_missing`, so that a workspace-wide build works on machines
//!   without libfabric-dev. Crates that need the bindings (rfx-fabric's
//!   feature `ofi`) then fail to compile with a clear message.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=LIBFABRIC_SYS_SKIP");
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
            println!(
                "cargo:warning=libfabric not found by pkg-config ({}); libfabric-sys is empty. \
                 Install libfabric-dev (and libclang-dev) to build the `ofi` transport.",
                e.lines().next().unwrap_or("")
            );
            // Rerun when it shows up (a missing path always counts as changed).
            println!("cargo:rerun-if-changed=/usr/include/rdma/fabric.h");
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
