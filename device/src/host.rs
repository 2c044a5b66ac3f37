//! [`HostDevice`]: the reference backend. Its "device memory" is host
//! memory and its stream a worker thread that runs queued work in order,
//! so work really is asynchronous: a pipeline that reads pinned memory
//! before the copy into it finished, or that never overlaps, shows it here
//! first. CI tests every device path on it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::device::Device;
use crate::elem::{reduce_host, DevOp, Dtype};
use crate::error::{in_range, reduce_operands, within_operands, DeviceError};

/// Longest wait for queued host work: it never blocks, so this only ends
/// a caller that holds a buffer the worker needs (a misuse), with an error.
const STALL: Duration = Duration::from_secs(60);

/// Words (8-byte aligned, so every element type can be viewed in place).
type Words = Arc<Mutex<Vec<u64>>>;

fn words(bytes: usize) -> Words {
    Arc::new(Mutex::new(vec![0; bytes.div_ceil(8)]))
}

fn view(w: &mut [u64], len: usize) -> &mut [u8] {
    &mut bytemuck::cast_slice_mut::<u64, u8>(w)[..len]
}

/// Host memory standing in for device memory.
#[derive(Debug)]
pub struct HostMem {
    words: Words,
    len: usize,
}

/// Host memory standing in for pinned memory: it remembers the last work
/// queued on it, which access waits for.
#[derive(Debug)]
pub struct HostPinned {
    words: Words,
    len: usize,
    last: u64,
}

/// What the worker did, for tests of a pipeline's overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Operations run.
    pub ops: u64,
    /// The most operations queued and not yet finished at once: 1 means
    /// the caller waited for each before queueing the next.
    pub max_in_flight: u64,
}

#[derive(Debug, Default)]
struct Progress {
    issued: u64,
    done: u64,
    stats: HostStats,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    cv: Condvar,
}

type Job = Box<dyn FnOnce() + Send>;

/// The reference device: host memory, a worker thread as the stream.
#[derive(Debug)]
pub struct HostDevice {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<(u64, Job)>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl HostDevice {
    /// A host device with its own worker thread.
    pub fn new() -> Arc<HostDevice> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<(u64, Job)>();
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("rfx-host-device".into())
            .spawn(move || {
                for (seq, job) in rx {
                    job();
                    let mut p = s.progress.lock();
                    p.done = seq;
                    p.stats.ops += 1;
                    s.cv.notify_all();
                }
            })
            .ok();
        Arc::new(HostDevice {
            shared,
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(worker),
        })
    }

    /// What the worker did so far.
    pub fn stats(&self) -> HostStats {
        self.shared.progress.lock().stats
    }

    /// Queues `job`; returns its sequence number.
    fn queue(&self, job: impl FnOnce() + Send + 'static) -> Result<u64, DeviceError> {
        let tx = self.tx.lock();
        let tx = tx
            .as_ref()
            .ok_or_else(|| DeviceError::Driver("host device closed".into()))?;
        let seq = {
            let mut p = self.shared.progress.lock();
            p.issued += 1;
            let in_flight = p.issued - p.done;
            p.stats.max_in_flight = p.stats.max_in_flight.max(in_flight);
            p.issued
        };
        match tx.send((seq, Box::new(job))) {
            Ok(()) => Ok(seq),
            // No worker thread (it could not start): run here, in order.
            Err(mpsc::SendError((seq, job))) => {
                job();
                let mut p = self.shared.progress.lock();
                p.done = seq;
                p.stats.ops += 1;
                Ok(seq)
            }
        }
    }

    /// Checks, then queues a copy of `len` bytes from `src` at `from` to
    /// `dst` at `to` (each given as its words, length and name for errors);
    /// returns the copy's sequence number. Two buffers, never one: their
    /// locks are taken one after the other.
    fn queue_copy(
        &self,
        (src, src_len, src_name): (&Words, usize, &str),
        from: usize,
        (dst, dst_len, dst_name): (&Words, usize, &str),
        to: usize,
        len: usize,
    ) -> Result<u64, DeviceError> {
        in_range(src_name, from, len, src_len)?;
        in_range(dst_name, to, len, dst_len)?;
        let (s, d) = (src.clone(), dst.clone());
        self.queue(move || {
            let s = s.lock();
            let sv = &bytemuck::cast_slice::<u64, u8>(&s)[..src_len];
            view(&mut d.lock(), dst_len)[to..to + len].copy_from_slice(&sv[from..from + len]);
        })
    }

    /// Waits until the work numbered `seq` (and all before it) finished.
    fn wait(&self, seq: u64) -> Result<(), DeviceError> {
        let mut p = self.shared.progress.lock();
        let deadline = std::time::Instant::now() + STALL;
        while p.done < seq {
            if self.shared.cv.wait_until(&mut p, deadline).timed_out() {
                return Err(DeviceError::Driver(format!(
                    "host device stalled: work {seq} not done after {STALL:?}"
                )));
            }
        }
        Ok(())
    }
}

impl Drop for HostDevice {
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(w) = self.worker.lock().take() {
            let _ = w.join();
        }
    }
}

impl Device for HostDevice {
    type Mem = HostMem;
    type Pinned = HostPinned;

    fn describe(&self) -> String {
        "host".into()
    }

    fn alloc(&self, bytes: usize) -> Result<HostMem, DeviceError> {
        Ok(HostMem {
            words: words(bytes),
            len: bytes,
        })
    }

    fn mem_len(&self, mem: &HostMem) -> usize {
        mem.len
    }

    fn alloc_pinned(&self, bytes: usize) -> Result<HostPinned, DeviceError> {
        Ok(HostPinned {
            words: words(bytes),
            len: bytes,
            last: 0,
        })
    }

    fn pinned_len(&self, p: &HostPinned) -> usize {
        p.len
    }

    fn download(
        &self,
        src: &HostMem,
        at: usize,
        dst: &mut HostPinned,
        dst_at: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        dst.last = self.queue_copy(
            (&src.words, src.len, "device memory"),
            at,
            (&dst.words, dst.len, "pinned memory"),
            dst_at,
            len,
        )?;
        Ok(())
    }

    fn upload(
        &self,
        src: &mut HostPinned,
        src_at: usize,
        dst: &mut HostMem,
        at: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        // The pinned buffer's next writer waits for this read.
        src.last = self.queue_copy(
            (&src.words, src.len, "pinned memory"),
            src_at,
            (&dst.words, dst.len, "device memory"),
            at,
            len,
        )?;
        Ok(())
    }

    fn copy(
        &self,
        src: &HostMem,
        from: usize,
        dst: &mut HostMem,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        self.queue_copy(
            (&src.words, src.len, "source device memory"),
            from,
            (&dst.words, dst.len, "destination device memory"),
            to,
            len,
        )?;
        Ok(())
    }

    fn copy_within(
        &self,
        mem: &mut HostMem,
        from: usize,
        to: usize,
        len: usize,
    ) -> Result<(), DeviceError> {
        within_operands(from, to, len, mem.len)?;
        let (m, ml) = (mem.words.clone(), mem.len);
        self.queue(move || {
            view(&mut m.lock(), ml).copy_within(from..from + len, to);
        })?;
        Ok(())
    }

    fn reduce(
        &self,
        op: DevOp,
        ty: Dtype,
        acc: &mut HostMem,
        at: usize,
        src: &HostMem,
        from: usize,
        count: usize,
    ) -> Result<(), DeviceError> {
        let len = reduce_operands(ty, count, (at, acc.len), (from, src.len))?;
        let (a, s, (al, sl)) = (acc.words.clone(), src.words.clone(), (acc.len, src.len));
        self.queue(move || {
            let s = s.lock();
            let sv = &bytemuck::cast_slice::<u64, u8>(&s)[..sl];
            reduce_host(
                ty,
                op,
                &mut view(&mut a.lock(), al)[at..at + len],
                &sv[from..from + len],
            );
        })?;
        Ok(())
    }

    fn pinned<R>(&self, p: &HostPinned, f: impl FnOnce(&[u8]) -> R) -> Result<R, DeviceError> {
        self.wait(p.last)?;
        let w = p.words.lock();
        Ok(f(&bytemuck::cast_slice::<u64, u8>(&w)[..p.len]))
    }

    fn pinned_mut<R>(
        &self,
        p: &mut HostPinned,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, DeviceError> {
        self.wait(p.last)?;
        let mut w = p.words.lock();
        Ok(f(view(&mut w, p.len)))
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        let issued = self.shared.progress.lock().issued;
        self.wait(issued)
    }

    fn address(&self, mem: &HostMem) -> u64 {
        // The words never move: buffers are never resized.
        mem.words.lock().as_mut_ptr() as u64
    }

    fn raw_stream(&self) -> u64 {
        0
    }

    fn read(&self, src: &HostMem, at: usize, dst: &mut [u8]) -> Result<(), DeviceError> {
        in_range("device memory", at, dst.len(), src.len)?;
        self.synchronize()?;
        let s = src.words.lock();
        dst.copy_from_slice(&bytemuck::cast_slice::<u64, u8>(&s)[at..at + dst.len()]);
        Ok(())
    }

    fn write(&self, src: &[u8], dst: &mut HostMem, at: usize) -> Result<(), DeviceError> {
        in_range("device memory", at, src.len(), dst.len)?;
        self.synchronize()?;
        let mut d = dst.words.lock();
        view(&mut d, dst.len)[at..at + src.len()].copy_from_slice(src);
        Ok(())
    }
}
