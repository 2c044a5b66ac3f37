//! The function ABI against real libraries: the Rust examples (`examples/functions`, built with
//! cargo into `target/examples-functions`) and the C examples (`examples/c`, built with `cc`).
//! Both are built once per test binary, on first use.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use rfx_executors::device::DeviceChoice;
use rfx_executors::{status, Abi, CallContext, CallError, ExecError, Library};

/// Set in the child process of `crash_kills_only_the_calling_process`: the library to crash in.
const CRASH_CHILD_ENV: &str = "RFX_TEST_ABI_CRASH_LIBRARY";

struct Artifacts {
    /// `librfx_example_functions.so`.
    rust: PathBuf,
    /// `examples/c/functions.c` as a shared library.
    c: PathBuf,
    /// `examples/c/functions.c` as an object file (not a library).
    c_object: PathBuf,
    /// `examples/c/edge_cases.c` with `RFX_VARIANT` 1 and 2, linked `-z nodelete`.
    edge: [PathBuf; 2],
    /// `examples/c/gpu_functions.c`: the SAXPY device function.
    gpu: PathBuf,
}

fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(build_artifacts)
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("executors/ has a parent")
}

fn build_artifacts() -> Artifacts {
    // `target/examples-functions`, beside the workspace's own build directories.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .join("examples-functions");
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = repo_root().join("examples/functions/Cargo.toml");
    run(Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target));
    let rust = target.join("debug/librfx_example_functions.so");
    assert!(rust.is_file(), "cargo built no {}", rust.display());

    let c_dir = repo_root().join("examples/c");
    let out = target.join("c");
    std::fs::create_dir_all(&out).expect("create target/examples-functions/c");
    // Test processes run in parallel (nextest): each writes a private file
    // and renames it into place, so no process ever loads a half-written one.
    let cc = |args: &[&str], source: &str, output: &Path| {
        let tmp = output.with_extension(format!("tmp{}", std::process::id()));
        run(Command::new("cc")
            .args(["-Wall", "-Wextra", "-Werror", "-fPIC", "-I"])
            .arg(&c_dir)
            .args(args)
            .arg(c_dir.join(source))
            .arg("-o")
            .arg(&tmp));
        std::fs::rename(&tmp, output).expect("rename the built file into place");
    };
    let c = out.join("libfunctions_c.so");
    cc(&["-shared"], "functions.c", &c);
    let c_object = out.join("functions.o");
    cc(&["-c"], "functions.c", &c_object);
    let edge = [1, 2].map(|variant| {
        let path = out.join(format!("libedge_cases_{variant}.so"));
        let define = format!("-DRFX_VARIANT={variant}");
        cc(
            &["-shared", "-Wl,-z,nodelete", &define],
            "edge_cases.c",
            &path,
        );
        path
    });
    let gpu = out.join("libgpu_functions.so");
    cc(&["-shared"], "gpu_functions.c", &gpu);
    eprintln!(
        "built the example functions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Artifacts {
        rust,
        c,
        c_object,
        edge,
        gpu,
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn f64s(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read_f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn call(lib: &Library, name: &str, input: &[u8], capacity: usize) -> Result<Vec<u8>, CallError> {
    let f = lib.function(name).expect("resolve");
    let mut out = vec![0u8; capacity];
    let n = f.call(&CallContext::new(1), input, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Calls every well-behaved example function of the Rust library and checks its output.
fn check_rust_functions(lib: &Library) {
    assert_eq!(call(lib, "noop", b"ignored", 16), Ok(vec![]));

    let input: Vec<u8> = (0..=255).collect();
    assert_eq!(call(lib, "echo", &input, 1024), Ok(input.clone()));
    assert_eq!(call(lib, "echo", &[], 0), Ok(vec![]));

    let sum = call(lib, "sum_f64", &f64s(&[1.5, 2.5, 3.0]), 64).expect("sum_f64");
    assert_eq!(read_f64s(&sum), [7.0]);

    let n = 3;
    let a: Vec<f64> = (0..n * n).map(|i| i as f64 + 1.0).collect();
    let b: Vec<f64> = (0..n * n).map(|i| (i as f64) * 0.5 - 2.0).collect();
    let mut want = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            want[i * n + j] = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
        }
    }
    let mut input = (n as u32).to_le_bytes().to_vec();
    input.extend(f64s(&a));
    input.extend(f64s(&b));
    let product = call(lib, "matmul", &input, 8 * n * n).expect("matmul");
    assert_eq!(read_f64s(&product), want);

    let rank_info = lib.function("rank_info").expect("rank_info");
    assert_eq!(rank_info.abi(), Abi::Extended);
    let mut out = [0u8; 8];
    let ctx = CallContext::new(99).in_group(2, 4);
    assert_eq!(rank_info.call(&ctx, &[], &mut out), Ok(8));
    assert_eq!(u32s(&out), [2, 4]);
}

#[test]
fn rust_functions_loaded_by_path() {
    let lib = Library::load_path(&artifacts().rust).expect("load");
    assert_eq!(lib.name(), artifacts().rust.display().to_string());
    check_rust_functions(&lib);
}

#[test]
fn rust_functions_loaded_from_bytes() {
    let bytes = std::fs::read(&artifacts().rust).expect("read");
    let lib = Library::load_bytes("shipped rust functions", &bytes).expect("load");
    assert_eq!(lib.name(), "shipped rust functions");
    check_rust_functions(&lib);
}

#[test]
fn c_functions_by_path_and_from_bytes() {
    let bytes = std::fs::read(&artifacts().c).expect("read");
    for lib in [
        Library::load_path(&artifacts().c).expect("load path"),
        Library::load_bytes("functions.c", &bytes).expect("load bytes"),
    ] {
        let echo = lib.function("echo_c").expect("echo_c");
        assert_eq!(echo.abi(), Abi::Rfaas);
        assert_eq!(
            call(&lib, "echo_c", b"rfaas style", 64),
            Ok(b"rfaas style".to_vec())
        );

        let input: Vec<u8> = [1u32, 2, 3, 4_000_000_000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let sum = call(&lib, "sum_u32", &input, 4).expect("sum_u32");
        assert_eq!(u32s(&sum), [1u32.wrapping_add(2 + 3 + 4_000_000_000)]);
        // Returns RFX_FAILED for a length that is not a multiple of 4.
        assert!(matches!(
            call(&lib, "sum_u32", &[1, 2, 3], 4),
            Err(CallError::Failed { function, reason }) if function == "sum_u32" && reason.is_empty()
        ));

        let rank_info = lib.function("rank_info_c").expect("rank_info_c");
        assert_eq!(rank_info.abi(), Abi::Extended);
        let mut out = [0u8; 8];
        let ctx = CallContext::new(5).in_group(2, 4);
        assert_eq!(rank_info.call(&ctx, &[], &mut out), Ok(8));
        assert_eq!(u32s(&out), [2, 4]);
    }
}

#[test]
fn unknown_function_is_a_clear_error() {
    let lib = Library::load_path(&artifacts().rust).expect("load");
    let err = lib
        .function("no_such_function")
        .expect_err("resolved a missing symbol");
    assert!(
        matches!(&err, ExecError::MissingSymbol { symbol, .. } if symbol == "no_such_function"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "library `{}` has no function `no_such_function`",
            artifacts().rust.display()
        )
    );
    // A marker is not a function.
    let err = lib.function("rfx_abi_echo").expect_err("resolved a marker");
    assert_eq!(
        err.to_string(),
        "invalid function name \"rfx_abi_echo\": the rfx_abi_ and rfx_device_ prefixes are reserved for markers"
    );
}

#[test]
fn names_that_are_not_c_identifiers_are_refused() {
    let lib = Library::load_path(&artifacts().c).expect("load");
    let long = "x".repeat(rfx_executors::MAX_NAME_LEN + 1);
    for name in [
        "",
        "echo c",
        "../echo_c",
        "1echo",
        "echo_c\0",
        "échо",
        long.as_str(),
    ] {
        let err = lib.function(name).expect_err(name);
        assert!(
            matches!(err, ExecError::InvalidName { .. }),
            "{name:?}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("invalid function name"),
            "{err}"
        );
    }
}

#[test]
fn files_that_are_not_libraries_are_refused() {
    // Deterministic "random" bytes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let err = Library::load_bytes("noise", &noise).expect_err("loaded noise");
    assert_eq!(
        err.to_string(),
        "`noise` is not a shared library: no elf magic"
    );

    let err = Library::load_bytes("empty", &[]).expect_err("loaded nothing");
    assert!(matches!(err, ExecError::NotSharedLibrary { .. }), "{err:?}");

    let script = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-library.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").expect("write");
    let err = Library::load_path(&script).expect_err("loaded a script");
    assert!(
        err.to_string()
            .contains("not-a-library.sh` is not a shared library"),
        "{err}"
    );

    let object = &artifacts().c_object;
    let err = Library::load_path(object).expect_err("loaded an object file");
    assert!(
        matches!(&err, ExecError::NotSharedLibrary { reason, .. } if reason.contains(".o")),
        "{err:?}"
    );

    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-library.so");
    let err = Library::load_path(&missing).expect_err("loaded a missing file");
    assert!(matches!(err, ExecError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-library.so"), "{err}");
}

#[test]
fn truncated_library_is_refused_by_the_loader() {
    let bytes = std::fs::read(&artifacts().c).expect("read");
    let err = Library::load_bytes("truncated", &bytes[..100]).expect_err("loaded half a library");
    assert!(matches!(err, ExecError::Load { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot load library `truncated`: "),
        "{err}"
    );
}

#[test]
#[cfg(all(target_endian = "little", target_pointer_width = "64"))]
fn library_for_another_architecture_is_refused() {
    let mut bytes = std::fs::read(&artifacts().c).expect("read");
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    let err = Library::load_bytes("foreign", &bytes).expect_err("loaded a foreign library");
    assert!(
        matches!(err, ExecError::WrongArchitecture { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("`foreign` is built for "), "{msg}");
    assert!(msg.contains(&format!("(e_machine {other})")), "{msg}");
    assert!(msg.ends_with(std::env::consts::ARCH), "{msg}");

    bytes[4] = 1; // ELFCLASS32
    let err = Library::load_bytes("foreign", &bytes).expect_err("loaded a 32-bit library");
    assert!(err.to_string().contains("32-bit"), "{err}");
}

#[test]
fn output_length_beyond_capacity_is_refused() {
    let rust = Library::load_path(&artifacts().rust).expect("load");
    let err = call(&rust, "overclaim", &[], 16).expect_err("trusted an overclaim");
    assert_eq!(
        err,
        CallError::OutputTooLarge {
            function: "overclaim".to_owned(),
            len: 17,
            capacity: 16
        }
    );
    assert_eq!(
        err.to_string(),
        "function `overclaim` returned output length 17, larger than the output capacity 16"
    );

    let c = Library::load_path(&artifacts().c).expect("load");
    assert!(matches!(
        call(&c, "overclaim_c", b"abc", 64),
        Err(CallError::OutputTooLarge {
            len: 0x4000_0000,
            capacity: 64,
            ..
        })
    ));

    // Well-behaved functions refuse instead of overflowing.
    assert!(matches!(
        call(&rust, "echo", b"too long for four", 4),
        Err(CallError::Failed { .. })
    ));
    assert!(matches!(
        call(&rust, "sum_f64", &f64s(&[1.0]), 7),
        Err(CallError::Failed { .. })
    ));
    assert!(matches!(
        call(&rust, "rank_info", &[], 7),
        Err(CallError::Failed { .. })
    ));
}

#[test]
fn matmul_refuses_n_too_large_for_the_output() {
    let lib = Library::load_path(&artifacts().rust).expect("load");
    let n = 3usize;
    let mut input = (n as u32).to_le_bytes().to_vec();
    input.extend(f64s(&vec![1.0; 2 * n * n]));
    assert!(matches!(
        call(&lib, "matmul", &input, 8 * n * n - 1),
        Err(CallError::Failed { function, reason })
            if function == "matmul" && reason == "product does not fit in the output buffer"
    ));
    // A huge n with a short input: refused, no allocation, no overflow.
    let mut input = u32::MAX.to_le_bytes().to_vec();
    input.extend(f64s(&[1.0; 4]));
    assert!(matches!(
        call(&lib, "matmul", &input, 1 << 20),
        Err(CallError::Failed { .. })
    ));
    // An input length that does not match n.
    let mut input = 2u32.to_le_bytes().to_vec();
    input.extend(f64s(&[1.0; 7]));
    assert!(matches!(
        call(&lib, "matmul", &input, 1 << 10),
        Err(CallError::Failed { .. })
    ));
    assert!(matches!(
        call(&lib, "matmul", &[1, 0], 64),
        Err(CallError::Failed { .. })
    ));
}

#[test]
fn panicking_function_returns_an_error_and_the_process_survives() {
    let lib = Library::load_path(&artifacts().rust).expect("load");
    let panics = lib.function("panics").expect("panics");
    for _ in 0..3 {
        let err = panics
            .call(&CallContext::new(1), b"", &mut [0u8; 64])
            .expect_err("a panic returned a length");
        assert_eq!(
            err,
            CallError::Panicked {
                function: "panics".to_owned(),
                reason: "this function panics on purpose".to_owned(),
            }
        );
        assert_eq!(
            err.to_string(),
            "function `panics` panicked: this function panics on purpose"
        );
        // An output too small for the reason: cut, still terminated.
        let err = panics
            .call(&CallContext::new(1), b"", &mut [0u8; 5])
            .expect_err("a panic returned a length");
        assert_eq!(err.reason(), "this");
    }
    assert_eq!(status::PANICKED, u32::MAX);
    // Still alive, and the library still works.
    assert_eq!(call(&lib, "echo", b"alive", 8), Ok(b"alive".to_vec()));
}

#[test]
fn crash_kills_only_the_calling_process() {
    if let Some(library) = std::env::var_os(CRASH_CHILD_ENV) {
        // Child: crash for real, without leaving a core file behind.
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
            .expect("disable core dumps");
        let lib = Library::load_path(library).expect("load in the child");
        let crash = lib.function("crash").expect("crash");
        let result = crash.call(&CallContext::new(1), &[], &mut [0u8; 8]);
        panic!("crash returned {result:?}");
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--exact",
            "crash_kills_only_the_calling_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CRASH_CHILD_ENV, &artifacts().rust)
        .output()
        .expect("run the child");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "the child should die of SIGSEGV, got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The parent is fine and can still call functions.
    let lib = Library::load_path(&artifacts().rust).expect("load");
    assert_eq!(call(&lib, "noop", &[], 0), Ok(vec![]));
}

#[test]
fn bad_abi_marker_is_refused() {
    let lib = Library::load_path(&artifacts().edge[0]).expect("load");
    let err = lib.function("bad_marker").expect_err("accepted marker 7");
    assert!(
        matches!(&err, ExecError::BadAbiMarker { value: 7, expected: 2, symbol, marker, .. }
            if symbol == "bad_marker" && marker == "rfx_abi_bad_marker"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("abi marker `rfx_abi_bad_marker` of function `bad_marker` is 7"),
        "{msg}"
    );
    assert!(msg.contains("libedge_cases_1.so"), "{msg}");
}

#[test]
fn shipped_library_never_aliases_one_still_loaded() {
    // Both variants are linked `-z nodelete`: dropping them leaves them loaded under their
    // `/proc/self/fd/N` names, and the next memfd usually gets the same N.
    let [v1, v2] = &artifacts().edge;
    let (v1, v2) = (
        std::fs::read(v1).expect("read"),
        std::fs::read(v2).expect("read"),
    );
    for round in 0..3 {
        for (bytes, want) in [(&v1, 1u32), (&v2, 2)] {
            let lib = Library::load_bytes("edge cases", bytes).expect("load");
            let out = call(&lib, "variant", &[], 4).expect("variant");
            assert_eq!(u32s(&out), [want], "round {round}");
        }
    }
}

#[test]
fn shipped_library_skips_a_proc_fd_name_taken_by_another_load() {
    // Load v1 (nodelete) under the name `/proc/self/fd/N` of a plain file descriptor, then
    // free N: the next memfd usually gets N, a name the loader still maps to v1.
    let [v1, v2] = &artifacts().edge;
    let file = std::fs::File::open(v1).expect("open");
    let name = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
    let lib = Library::load_path(&name).expect("load by /proc name");
    assert_eq!(u32s(&call(&lib, "variant", &[], 4).expect("variant")), [1]);
    drop(lib);
    drop(file);
    let lib = Library::load_bytes("v2", &std::fs::read(v2).expect("read")).expect("load");
    assert_eq!(u32s(&call(&lib, "variant", &[], 4).expect("variant")), [2]);
}

#[test]
fn functions_outlive_their_library_handle_and_are_shared_across_threads() {
    let echo = {
        let lib = Library::load_path(&artifacts().rust).expect("load");
        let first = lib.function("echo").expect("echo");
        let again = lib.function("echo").expect("echo, cached");
        assert_eq!((again.name(), again.abi()), (first.name(), first.abi()));
        first
    };
    assert_eq!(echo.library(), artifacts().rust.display().to_string());
    std::thread::scope(|s| {
        for t in 0u8..4 {
            let echo = echo.clone();
            s.spawn(move || {
                for i in 0u8..100 {
                    let input = [t, i, t ^ i];
                    let mut out = [0u8; 3];
                    let ctx = CallContext::new(u64::from(i));
                    assert_eq!(echo.call(&ctx, &input, &mut out), Ok(3));
                    assert_eq!(out, input);
                }
            });
        }
    });
}

#[test]
fn library_and_function_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<Library>();
    check::<rfx_executors::Function>();
}

/// SAXPY's input: a, n, x[n], y[n].
fn saxpy_input(a: f32, x: &[f32], y: &[f32]) -> Vec<u8> {
    let mut v = a.to_le_bytes().to_vec();
    v.extend_from_slice(&(x.len() as u32).to_le_bytes());
    x.iter()
        .chain(y)
        .for_each(|f| v.extend_from_slice(&f.to_le_bytes()));
    v
}

/// A device function on the host reference device: its input staged into
/// device memory, its output read back from there (the host `out` is not
/// where it writes), buffers grown and reused across calls.
#[test]
fn device_functions_run_on_staged_device_buffers() {
    let lib = Library::load_path(&artifacts().gpu).expect("load");
    lib.use_device(DeviceChoice::Host);
    let f = lib.function("saxpy").expect("resolve");
    assert_eq!(f.abi(), Abi::Extended);
    for n in [0usize, 1, 1000, 70_000] {
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut out = vec![0xAAu8; n * 4 + 16];
        let len = f
            .call(&CallContext::new(1), &saxpy_input(1.5, &x, &y), &mut out)
            .expect("saxpy");
        assert_eq!(len, n * 4);
        let r: Vec<f32> = out[..len]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 1.5 * x + y).collect();
        assert_eq!(r, want, "n = {n}");
        // Only the returned length was copied back (the first byte is
        // cleared before every call, for an empty failure reason).
        assert!(out[len.max(1)..].iter().all(|&b| b == 0xAA));
    }
    // A refusal's reason still comes through the host buffer.
    let mut out = vec![0u8; 64];
    let e = f
        .call(&CallContext::new(2), b"short", &mut out)
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Failed { reason, .. } if reason.contains("shorter than its header")),
        "{e:?}"
    );
}

/// Without a GPU (or without the cuda feature), a device function fails
/// with a clear error and the executor goes on.
#[test]
fn device_functions_without_a_gpu_fail_clearly() {
    if rfx_device::CUDA_BUILT && std::env::var_os("RFX_TEST_EXPECT_GPU").is_some() {
        return;
    }
    let lib = Library::load_path(&artifacts().gpu).expect("load");
    lib.use_device(DeviceChoice::Cuda);
    let f = lib.function("saxpy").expect("resolve");
    let mut out = vec![0u8; 64];
    let e = f
        .call(
            &CallContext::new(1),
            &saxpy_input(2.0, &[1.0], &[1.0]),
            &mut out,
        )
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Device { reason, .. } if reason.starts_with("no CUDA device")),
        "{e:?}"
    );
    // The same library's device functions run once a device is there.
    lib.use_device(DeviceChoice::Host);
    let n = f
        .call(
            &CallContext::new(2),
            &saxpy_input(2.0, &[1.0], &[1.0]),
            &mut out,
        )
        .expect("on the host device");
    assert_eq!(f32::from_le_bytes(out[..n].try_into().unwrap()), 3.0);
}
