//! A device function on a real GPU (feature `cuda`): the SAXPY of
//! `examples/c/gpu_functions.c`, its input staged into GPU memory, its
//! kernel on the executor's stream, its output read back. Runs on a GPU
//! machine (scripts/gpu-test.sh); without a GPU it fails with the reason
//! unless `RFX_TEST_SKIP_CUDA=1`.
//!
//! The library is `RFX_GPU_FUNCTIONS_LIB`, else built here with `cc`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
#![cfg(feature = "cuda")]

use std::path::PathBuf;
use std::process::Command;

use rfx_executors::device::DeviceChoice;
use rfx_executors::{CallContext, Library};

fn library() -> PathBuf {
    if let Some(p) = std::env::var_os("RFX_GPU_FUNCTIONS_LIB") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libgpu_functions.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(root.join("examples/c"))
        .arg(root.join("examples/c/gpu_functions.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(st.success(), "cc failed");
    out
}

#[test]
fn saxpy_runs_on_the_gpu_as_a_device_function() {
    if rfx_device::CudaDevice::count() == 0 {
        if std::env::var_os("RFX_TEST_SKIP_CUDA").is_some() {
            eprintln!("skipped: no GPU (RFX_TEST_SKIP_CUDA)");
            return;
        }
        panic!("no GPU here; set RFX_TEST_SKIP_CUDA=1 to skip");
    }
    let lib = Library::load_path(library()).expect("load");
    lib.use_device(DeviceChoice::Cuda);
    let f = lib.function("saxpy").expect("resolve");
    for n in [1usize, 1000, 1 << 20] {
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
        let mut input = 3.0f32.to_le_bytes().to_vec();
        input.extend_from_slice(&(n as u32).to_le_bytes());
        x.iter()
            .chain(&y)
            .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
        let mut out = vec![0u8; n * 4];
        let len = f
            .call(&CallContext::new(1), &input, &mut out)
            .expect("saxpy on the GPU");
        assert_eq!(len, n * 4);
        for (i, c) in out.chunks_exact(4).enumerate() {
            let got = f32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(got, 3.0 * x[i] + y[i], "element {i} of {n}");
        }
    }
}
