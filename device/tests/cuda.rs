//! The CUDA backend (feature `cuda`). Without a GPU, opening one is a
//! clear `NoDevice` error; with one (`scripts/gpu-test.sh` on a GPU
//! machine), the device contract and the SAXPY kernel run on it.
//! `RFX_TEST_SKIP_CUDA=1` skips the GPU tests where there is no GPU.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
#![cfg(feature = "cuda")]

mod support;

use std::sync::Arc;

use rfx_device::{CudaDevice, Device, DeviceError, DeviceVec};

fn gpu() -> Option<Arc<CudaDevice>> {
    match CudaDevice::open(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("RFX_TEST_SKIP_CUDA").is_some() => {
            eprintln!("skipped (RFX_TEST_SKIP_CUDA): {e}");
            None
        }
        Err(e) => panic!("no GPU to test on ({e}); set RFX_TEST_SKIP_CUDA=1 to skip"),
    }
}

#[test]
fn opening_a_missing_gpu_is_a_clear_error() {
    let n = CudaDevice::count();
    let e = CudaDevice::open(n).unwrap_err();
    assert!(matches!(e, DeviceError::NoDevice(_)), "{e:?}");
    assert!(e.to_string().starts_with("no CUDA device"), "{e}");
}

#[test]
fn cuda_reductions_match_the_reference() {
    if let Some(d) = gpu() {
        eprintln!("on {}", d.describe());
        support::reductions(&d);
    }
}

#[test]
fn cuda_copies_keep_order_and_ranges() {
    if let Some(d) = gpu() {
        support::copies(&d);
    }
}

#[test]
fn cuda_saxpy_runs_on_the_gpu() {
    let Some(d) = gpu() else { return };
    let n = 100_003;
    let x: Vec<f32> = (0..n).map(|i| (i % 100) as f32).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let dx = DeviceVec::from_slice(&d, &x).unwrap();
    let mut dy = DeviceVec::from_slice(&d, &y).unwrap();
    d.saxpy(2.0, dx.mem(), dy.mem_mut(), n).unwrap();
    let got = dy.to_vec().unwrap();
    for i in 0..n {
        assert_eq!(got[i], 2.0 * x[i] + y[i], "element {i}");
    }
}
