//! The device role: every device collective and point to point on
//! `HostDevice` (the reference backend: a worker thread as the stream),
//! against the host collectives on the same data, at sizes that cross the
//! staging chunk (the tests shrink it to a few bytes).

use std::sync::Arc;

use rfx_collectives::device::{Device, DeviceVec, HostDevice};
use rfx_collectives::{CollError, Communicator, ReduceOp, Source, TagMatch};

fn vals<T: Copy>(me: usize, count: usize, f: impl Fn(usize) -> T) -> Vec<T> {
    (0..count).map(|i| f(me * 31 + i)).collect()
}

/// The role on `RFX_COLL_TEST_DEVICE`: `host` (default) or `cuda` (GPU 0,
/// shared by every rank: scripts/gpu-test.sh).
pub fn device(c: &mut Communicator) {
    match std::env::var("RFX_COLL_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            #[cfg(feature = "cuda")]
            on(c, &rfx_collectives::device::CudaDevice::open(0).unwrap());
            #[cfg(not(feature = "cuda"))]
            panic!("RFX_COLL_TEST_DEVICE=cuda needs --features cuda");
        }
        _ => {
            let dev = HostDevice::new();
            on(c, &dev);
            // Buffers of two devices are refused, before anything moves.
            let other = HostDevice::new();
            let send = DeviceVec::from_slice(&dev, &[1u32]).unwrap();
            let mut recv = DeviceVec::<u32, _>::zeros(&other, c.size()).unwrap();
            let e = c.allgather_device(&send, &mut recv);
            assert!(matches!(e, Err(CollError::InvalidArgument(_))), "{e:?}");
            // The pipeline overlaps: a message of many chunks had more
            // than one copy in flight at once.
            let big = counts().into_iter().max().unwrap_or(0);
            if c.size() > 1 && big * 4 > 4 * c.config().device_chunk {
                let s = dev.stats();
                assert!(s.max_in_flight >= 2, "no overlap: {s:?}");
            }
        }
    }
    c.barrier().unwrap();
}

fn counts() -> Vec<usize> {
    std::env::var("RFX_COLL_TEST_COUNTS")
        .unwrap_or_else(|_| "0,1,7,33,1000,20000".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect()
}

fn on<D: Device>(c: &mut Communicator, dev: &Arc<D>) {
    let (me, n) = (c.rank(), c.size());
    let dev = dev.clone();
    let counts = counts();
    for &count in &counts {
        // allreduce, four types and four reductions.
        let mine = vals(me, count, |x| (x % 17) as f32 - 3.0);
        let mut want = mine.clone();
        c.allreduce(&mut want, ReduceOp::Sum).unwrap();
        let mut d = DeviceVec::from_slice(&dev, &mine).unwrap();
        c.allreduce_device(&mut d, ReduceOp::Sum).unwrap();
        assert_eq!(d.to_vec().unwrap(), want, "allreduce f32 sum of {count}");

        let mine = vals(me, count, |x| (x as i64 * 7919) % 1001 - 500);
        let mut want = mine.clone();
        c.allreduce(&mut want, ReduceOp::Max).unwrap();
        let mut d = DeviceVec::from_slice(&dev, &mine).unwrap();
        c.allreduce_device(&mut d, ReduceOp::Max).unwrap();
        assert_eq!(d.to_vec().unwrap(), want, "allreduce i64 max of {count}");

        let mine = vals(me, count, |x| (x % 251) as u8 | 1);
        let mut want = mine.clone();
        c.allreduce(&mut want, ReduceOp::Prod).unwrap();
        let mut d = DeviceVec::from_slice(&dev, &mine).unwrap();
        c.allreduce_device(&mut d, ReduceOp::Prod).unwrap();
        assert_eq!(d.to_vec().unwrap(), want, "allreduce u8 prod of {count}");

        // reduce to the last rank, f64 min.
        let root = n - 1;
        let mine = vals(me, count, |x| ((x * 13) % 101) as f64 * 0.5);
        let mut want = mine.clone();
        c.reduce(&mut want, root, ReduceOp::Min).unwrap();
        let mut d = DeviceVec::from_slice(&dev, &mine).unwrap();
        c.reduce_device(&mut d, root, ReduceOp::Min).unwrap();
        if me == root {
            assert_eq!(d.to_vec().unwrap(), want, "reduce f64 min of {count}");
        }

        // bcast from rank 1 (or 0), u32.
        let root = 1 % n;
        let mine = if me == root {
            vals(0, count, |x| x as u32 * 3 + 1)
        } else {
            vec![0; count]
        };
        let mut d = DeviceVec::from_slice(&dev, &mine).unwrap();
        c.bcast_device(&mut d, root).unwrap();
        assert_eq!(
            d.to_vec().unwrap(),
            vals(0, count, |x| x as u32 * 3 + 1),
            "bcast u32 of {count}"
        );

        // allgather, f64.
        let mine = vals(me, count, |x| x as f64);
        let mut want = vec![0f64; n * count];
        c.allgather(&mine, &mut want).unwrap();
        let send = DeviceVec::from_slice(&dev, &mine).unwrap();
        let mut recv = DeviceVec::<f64, _>::zeros(&dev, n * count).unwrap();
        c.allgather_device(&send, &mut recv).unwrap();
        assert_eq!(recv.to_vec().unwrap(), want, "allgather f64 of {count}");

        // reduce_scatter, i32 sum.
        let mine = vals(me, n * count, |x| (x % 1000) as i32 - 200);
        let mut want = vec![0i32; count];
        c.reduce_scatter(&mine, &mut want, ReduceOp::Sum).unwrap();
        let send = DeviceVec::from_slice(&dev, &mine).unwrap();
        let mut recv = DeviceVec::<i32, _>::zeros(&dev, count).unwrap();
        c.reduce_scatter_device(&send, &mut recv, ReduceOp::Sum)
            .unwrap();
        assert_eq!(
            recv.to_vec().unwrap(),
            want,
            "reduce_scatter i32 of {count}"
        );
    }

    let big = counts.iter().copied().max().unwrap_or(0);
    if n < 2 {
        return;
    }
    // Point to point around a ring, sends first (they do not wait).
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let count = big.max(1);
    let d = DeviceVec::from_slice(&dev, &vals(me, count, |x| x as u64)).unwrap();
    c.send_device(&d, right, 7).unwrap();
    let mut r = DeviceVec::<u64, _>::zeros(&dev, count + 5).unwrap();
    let st = c
        .recv_device(&mut r, Source::Any, TagMatch::Tag(7))
        .unwrap();
    assert_eq!((st.source, st.tag, st.len), (left, 7, count));
    let got = r.to_vec().unwrap();
    assert_eq!(&got[..count], &vals(left, count, |x| x as u64)[..]);
    assert_eq!(&got[count..], &[0; 5]);

    // Too long a message: Truncated, and the next one still arrives whole.
    if me == 0 {
        let d = DeviceVec::from_slice(&dev, &[9u64; 100]).unwrap();
        c.send_device(&d, 1, 8).unwrap();
        let d = DeviceVec::from_slice(&dev, &[4u64; 3]).unwrap();
        c.send_device(&d, 1, 8).unwrap();
    } else if me == 1 {
        let mut r = DeviceVec::<u64, _>::zeros(&dev, 10).unwrap();
        let e = c.recv_device(&mut r, 0, 8).unwrap_err();
        assert!(
            matches!(e, CollError::Truncated { got: 800, cap: 80 }),
            "{e:?}"
        );
        let st = c.recv_device(&mut r, 0, 8).unwrap();
        assert_eq!(st.len, 3);
        assert_eq!(&r.to_vec().unwrap()[..3], &[4, 4, 4]);
    }

    // Reductions a device does not run are refused before anything moves.
    let mut d = DeviceVec::from_slice(&dev, &[1u32, 2]).unwrap();
    let e = c.allreduce_device(&mut d, ReduceOp::BitXor).unwrap_err();
    assert!(matches!(e, CollError::InvalidArgument(_)), "{e:?}");
}
