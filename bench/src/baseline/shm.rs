//! A minimal shared-memory ping-pong: copy the payload into the peer's
//! mailbox, then bump its flag; the peer spins on the flag (hot) or sleeps
//! on an eventfd that every message signals (warm). The same bytes move as
//! in an rfx shm `write_imm` round trip, with nothing else.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use memmap2::MmapMut;
use nix::sys::eventfd::{EfdFlags, EventFd};
use rfx_fabric::PollMode;

use crate::pin;
use crate::schedule::Step;
use crate::stats::{Recorder, Summary};

/// Two mailboxes in one anonymous shared mapping: a flag on its own cache
/// line, then the data.
struct Mailboxes {
    map: MmapMut,
    max: usize,
}

impl Mailboxes {
    fn stride(&self) -> usize {
        (64 + self.max + 63) & !63
    }

    fn flag(&self, side: usize) -> &AtomicU64 {
        let off = side * self.stride();
        // SAFETY: `off` is 64-aligned and inside the mapping (two strides
        // were allocated); the word is only ever accessed atomically, and
        // the reference borrows `self`, which owns the mapping.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    fn put(&self, side: usize, data: &[u8]) {
        assert!(data.len() <= self.max);
        let off = side * self.stride() + 64;
        // SAFETY: the destination range lies inside the mapping (checked
        // length, fixed layout). Only the ping-pong's current sender writes
        // a mailbox, and the receiver does not read the data, so there is
        // no concurrent access to these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_ptr().add(off) as *mut u8,
                data.len(),
            )
        }
    }
}

// SAFETY: the mapping is plain memory; all shared words are atomics and the
// data areas are written by one side at a time (see `put`).
unsafe impl Sync for Mailboxes {}

fn wait_flag(flag: &AtomicU64, want: u64, mode: PollMode, wake: &OwnedFd) {
    loop {
        if flag.load(Ordering::Acquire) == want {
            return;
        }
        match mode {
            PollMode::Hot => std::hint::spin_loop(),
            PollMode::Warm => {
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(wake), &mut b);
            }
        }
    }
}

fn signal(wake: &OwnedFd, mode: PollMode) {
    if mode == PollMode::Warm {
        let _ = nix::unistd::write(wake.as_fd(), &1u64.to_ne_bytes());
    }
}

pub fn pingpong(
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let stride = (64 + max + 63) & !63;
    let boxes = Arc::new(Mailboxes {
        map: MmapMut::map_anon(2 * stride)?,
        max,
    });
    let mk = || -> anyhow::Result<OwnedFd> {
        Ok(OwnedFd::from(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC,
        )?))
    };
    let (wake_client, wake_server) = (Arc::new(mk()?), Arc::new(mk()?));
    let plan: Vec<Step> = steps.to_vec();
    let (b2, wc, ws) = (boxes.clone(), wake_client.clone(), wake_server.clone());
    let server = std::thread::spawn(move || {
        pin::pin(cpus.1);
        let reply = vec![0x5au8; max];
        let mut seq = 0u64;
        for step in &plan {
            for _ in 0..step.total() {
                seq += 1;
                wait_flag(b2.flag(1), seq, mode, &ws);
                b2.put(0, &reply[..step.size]);
                b2.flag(0).store(seq, Ordering::Release);
                signal(&wc, mode);
            }
        }
    });
    pin::pin(cpus.0);
    let payload = vec![0xa5u8; max];
    let mut out = Vec::new();
    let mut seq = 0u64;
    for step in steps {
        let mut rec = Recorder::new();
        for i in 0..step.total() {
            seq += 1;
            let t0 = Instant::now();
            boxes.put(1, &payload[..step.size]);
            boxes.flag(1).store(seq, Ordering::Release);
            signal(&wake_server, mode);
            wait_flag(boxes.flag(0), seq, mode, &wake_client);
            if i >= step.warmup {
                rec.record(t0.elapsed().as_nanos() as u64);
            }
        }
        out.push(rec.summary());
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    Ok(out)
}

/// The floor of a shm read: one copy of the step's size out of a shared
/// mapping another thread (pinned to `cpus.1`) filled, timed like the rfx
/// read.
pub fn copy_out(
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let mut shared = MmapMut::map_anon(max.max(1))?;
    // The owner's stores come from the other CPU, as a peer's would.
    std::thread::scope(|s| {
        s.spawn(|| {
            pin::pin(cpus.1);
            shared.fill(0x5a);
        });
    });
    pin::pin(cpus.0);
    let mut out = vec![0u8; max];
    let mut sums = Vec::new();
    for step in steps {
        let mut rec = Recorder::new();
        for i in 0..step.total() {
            let t0 = Instant::now();
            out[..step.size].copy_from_slice(&shared[..step.size]);
            std::hint::black_box(&mut out);
            if i >= step.warmup {
                rec.record(t0.elapsed().as_nanos() as u64);
            }
        }
        sums.push(rec.summary());
    }
    Ok(sums)
}
