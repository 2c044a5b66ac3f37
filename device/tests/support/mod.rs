//! The contract every backend keeps, as one suite: run on `HostDevice`
//! everywhere (tests/host.rs) and on a GPU (tests/cuda.rs).

use std::sync::Arc;

use rfx_device::{reduce_host, DevOp, Device, DeviceError, DeviceVec, Dtype};

/// Bytes of `n` elements of `ty` with varied values (small, so that
/// products stay exact in floats).
fn sample(ty: Dtype, n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * ty.size());
    for i in 0..n as u64 {
        let x = (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97)) % 13;
        let v = x as i64 - 6;
        match ty {
            Dtype::U8 => out.push(x as u8),
            Dtype::I32 => out.extend_from_slice(&(v as i32).to_ne_bytes()),
            Dtype::U32 => out.extend_from_slice(&(x as u32).to_ne_bytes()),
            Dtype::I64 => out.extend_from_slice(&v.to_ne_bytes()),
            Dtype::U64 => out.extend_from_slice(&x.to_ne_bytes()),
            Dtype::F32 => out.extend_from_slice(&(v as f32 * 0.5).to_ne_bytes()),
            Dtype::F64 => out.extend_from_slice(&(v as f64 * 0.25).to_ne_bytes()),
        }
    }
    out
}

/// Every reduction kernel on every type, at offsets, against the host
/// reference; the bytes around the range untouched.
pub fn reductions<D: Device>(dev: &Arc<D>) {
    // Crosses a grid of 256-thread blocks, and one element.
    for n in [1usize, 1000, 70_001] {
        for ty in Dtype::ALL {
            for op in DevOp::ALL {
                let (a, b) = (sample(ty, n + 2, 1), sample(ty, n + 1, 2));
                let mut acc = dev.alloc(a.len()).unwrap();
                let mut src = dev.alloc(b.len()).unwrap();
                dev.write(&a, &mut acc, 0).unwrap();
                dev.write(&b, &mut src, 0).unwrap();
                // acc[1..n+1] op= src[1..n+1]
                let s = ty.size();
                dev.reduce(op, ty, &mut acc, s, &src, s, n).unwrap();
                let mut got = vec![0u8; a.len()];
                dev.read(&acc, 0, &mut got).unwrap();
                let mut want = a.clone();
                reduce_host(ty, op, &mut want[s..s + n * s], &b[s..s + n * s]);
                assert_eq!(got, want, "{op} on {n} {ty}");
            }
        }
    }
}

/// Copies at offsets, pinned memory ordering, range checks.
pub fn copies<D: Device>(dev: &Arc<D>) {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let mut m = dev.alloc(data.len()).unwrap();
    assert_eq!(dev.mem_len(&m), data.len());
    dev.write(&data, &mut m, 0).unwrap();
    // Download two pieces into one pinned buffer, upload it elsewhere.
    let mut p = dev.alloc_pinned(4096).unwrap();
    dev.download(&m, 100, &mut p, 0, 2000).unwrap();
    dev.download(&m, 5000, &mut p, 2000, 2096).unwrap();
    let first = dev.pinned(&p, |b| b.to_vec()).unwrap();
    assert_eq!(&first[..2000], &data[100..2100]);
    assert_eq!(&first[2000..], &data[5000..7096]);
    let mut m2 = dev.alloc(8192).unwrap();
    dev.upload(&mut p, 0, &mut m2, 10, 4096).unwrap();
    // Writing the pinned buffer waits for the upload that reads it.
    dev.pinned_mut(&mut p, |b| b.fill(7)).unwrap();
    let mut got = vec![0u8; 4096];
    dev.read(&m2, 10, &mut got).unwrap();
    assert_eq!(got, first);
    // Device to device, across buffers and within one.
    dev.copy(&m, 0, &mut m2, 4106, 4000).unwrap();
    dev.copy_within(&mut m2, 4106, 0, 10).unwrap();
    let mut all = vec![0u8; 8192];
    dev.read(&m2, 0, &mut all).unwrap();
    assert_eq!(&all[..10], &data[..10]);
    assert_eq!(&all[4106..8106], &data[..4000]);
    // Out of range: an error, nothing queued.
    for e in [
        dev.download(&m, 9_000, &mut p, 0, 2000).unwrap_err(),
        dev.upload(&mut p, 1, &mut m2, 0, 4096).unwrap_err(),
        dev.copy(&m, usize::MAX, &mut m2, 0, 2).unwrap_err(),
        dev.copy_within(&mut m2, 0, 5, 10).unwrap_err(),
        dev.copy_within(&mut m2, 8190, 0, 10).unwrap_err(),
        dev.reduce(DevOp::Sum, Dtype::F64, &mut m2, 4, &m, 0, 1)
            .unwrap_err(),
        dev.reduce(DevOp::Sum, Dtype::F64, &mut m2, 0, &m, 0, 2000)
            .unwrap_err(),
    ] {
        assert!(matches!(e, DeviceError::Range(_)), "{e:?}");
    }
    dev.synchronize().unwrap();
    // Typed vectors, and a zero-length one.
    let v = DeviceVec::from_slice(dev, &[1.5f64, -2.0, 3.25]).unwrap();
    assert_eq!(v.to_vec().unwrap(), [1.5, -2.0, 3.25]);
    let e = DeviceVec::<u32, D>::zeros(dev, 0).unwrap();
    assert!(e.is_empty() && e.to_vec().unwrap().is_empty());
}
