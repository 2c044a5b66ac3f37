//! The staging pipeline: runs a schedule's steps ([`Step`]) over device
//! memory, chunk by chunk through pinned host slots, with the copies on
//! the device's stream overlapping the network.
//!
//! One pipeline serves every backend (the host reference in CI, CUDA on a
//! GPU): only the [`Device`] calls differ.
//!
//! - A send queues the downloads of its first `slots` chunks, then for each
//!   chunk waits for its download, sends it, and queues the download of the
//!   chunk `slots` ahead into the slot it freed.
//! - A receive takes each chunk into a slot (waiting only for that slot's
//!   previous upload), then queues its upload, or for a reduction its
//!   upload into device scratch and the reduction kernel, and goes on to
//!   the next chunk while the device works.
//! - Device work is ordered by the stream, so a chunk received and then
//!   forwarded (trees, rings) is downloaded after its upload without a
//!   wait; the pipeline waits only before the CPU touches a slot, and once
//!   at the end.
//!
//! A message of `len` bytes travels as `ceil(len / chunk)` messages of
//! `chunk` bytes (the last shorter), on a context of its own so it never
//! matches a host receive; both sides know `len` from the schedule.

use std::ops::Range;

use rfx_device::{DevOp, Device, Dtype};

use crate::comm::Communicator;
use crate::error::CollError;
use crate::matching::{Source, Status, TagMatch};
use crate::schedule::{Combine, Step};

pub(crate) fn dev_err(e: rfx_device::DeviceError) -> CollError {
    CollError::Device(e.to_string())
}

/// Pinned slots and device scratch of one device, kept by a communicator
/// between calls (pinned allocations cost milliseconds on a GPU).
pub(crate) struct Staging<D: Device> {
    pub(crate) dev: std::sync::Arc<D>,
    slots: Vec<D::Pinned>,
    /// `slots * chunk` bytes: the operands of reductions.
    scratch: Option<D::Mem>,
    /// Working memory of collectives that do not run in place
    /// (reduce_scatter), grown to the largest call.
    work: Option<D::Mem>,
    chunk: usize,
}

/// Where a message's bytes `lo..hi` lie in memory: `(memory offset,
/// offset from lo, length)` for each piece, the message being the
/// concatenation of `blocks` (byte ranges).
pub(crate) fn pieces(blocks: &[Range<usize>], lo: usize, hi: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for b in blocks {
        let (s, e) = (pos, pos + b.len());
        let (a, z) = (s.max(lo), e.min(hi));
        if a < z {
            out.push((b.start + (a - s), a - lo, z - a));
        }
        pos = e;
        if pos >= hi {
            break;
        }
    }
    out
}

/// One collective or point-to-point transfer in flight: where its chunks go.
pub(crate) struct Wire {
    pub(crate) ctx: u32,
    pub(crate) tag: u32,
}

impl<D: Device> Staging<D> {
    pub(crate) fn new(
        dev: &std::sync::Arc<D>,
        chunk: usize,
        slots: usize,
    ) -> Result<Staging<D>, CollError> {
        let slots = (0..slots.max(2))
            .map(|_| dev.alloc_pinned(chunk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(dev_err)?;
        Ok(Staging {
            dev: dev.clone(),
            slots,
            scratch: None,
            work: None,
            chunk,
        })
    }

    /// Working device memory of at least `bytes` bytes (the kept one if it
    /// is large enough); give it back with [`Staging::put_work`].
    pub(crate) fn take_work(&mut self, bytes: usize) -> Result<D::Mem, CollError> {
        match self.work.take() {
            Some(m) if self.dev.mem_len(&m) >= bytes => Ok(m),
            _ => self.dev.alloc(bytes).map_err(dev_err),
        }
    }

    /// Keeps `mem` for the next [`Staging::take_work`].
    pub(crate) fn put_work(&mut self, mem: D::Mem) {
        self.work = Some(mem);
    }

    /// Whether this staging serves `dev` with this shape.
    pub(crate) fn fits(&self, dev: &std::sync::Arc<D>, chunk: usize, slots: usize) -> bool {
        std::sync::Arc::ptr_eq(&self.dev, dev)
            && self.chunk == chunk
            && self.slots.len() == slots.max(2)
    }

    fn chunks(&self, total: usize) -> usize {
        total.div_ceil(self.chunk)
    }

    /// Runs `steps` (element ranges of `esize` bytes) over `mem`.
    pub(crate) fn run(
        &mut self,
        comm: &mut Communicator,
        wire: &Wire,
        steps: &[Step],
        mem: &mut D::Mem,
        esize: usize,
        op: Option<(DevOp, Dtype)>,
    ) -> Result<(), CollError> {
        let bytes = |blocks: &[Range<usize>]| -> Vec<Range<usize>> {
            blocks
                .iter()
                .map(|r| r.start * esize..r.end * esize)
                .collect()
        };
        for step in steps {
            match step {
                Step::Send { to, blocks } => self.send(comm, wire, *to, &bytes(blocks), mem)?,
                Step::Recv {
                    from,
                    blocks,
                    combine,
                } => {
                    let op = match combine {
                        Combine::Replace => None,
                        // Every device reduction is commutative.
                        Combine::Reduce | Combine::ReduceLeft | Combine::ReduceFrom { .. } => {
                            Some(op.ok_or_else(|| {
                                CollError::Device("a reducing step without a reduction".into())
                            })?)
                        }
                    };
                    if let Combine::ReduceFrom { back, .. } = combine {
                        // The input under the output first, then reduce there.
                        for b in blocks {
                            self.dev
                                .copy_within(
                                    mem,
                                    (b.start - back) * esize,
                                    b.start * esize,
                                    b.len() * esize,
                                )
                                .map_err(dev_err)?;
                        }
                    }
                    self.recv(comm, wire, *from, &bytes(blocks), mem, op)?;
                }
                Step::Copy { from, to } => self
                    .dev
                    .copy_within(mem, from.start * esize, to * esize, from.len() * esize)
                    .map_err(dev_err)?,
            }
        }
        self.dev.synchronize().map_err(dev_err)
    }

    /// Queues the downloads of chunk `k` of a message into slot `slot`.
    fn download(
        &mut self,
        blocks: &[Range<usize>],
        total: usize,
        k: usize,
        slot: usize,
        mem: &D::Mem,
    ) -> Result<(), CollError> {
        let (lo, hi) = (k * self.chunk, ((k + 1) * self.chunk).min(total));
        for (at, off, len) in pieces(blocks, lo, hi) {
            self.dev
                .download(mem, at, &mut self.slots[slot], off, len)
                .map_err(dev_err)?;
        }
        Ok(())
    }

    /// Sends the concatenation of `blocks` of `mem` to `to`.
    pub(crate) fn send(
        &mut self,
        comm: &mut Communicator,
        wire: &Wire,
        to: usize,
        blocks: &[Range<usize>],
        mem: &D::Mem,
    ) -> Result<(), CollError> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        let (n, s) = (self.chunks(total), self.slots.len());
        for k in 0..n.min(s) {
            self.download(blocks, total, k, k, mem)?;
        }
        for k in 0..n {
            let slot = k % s;
            let len = self.chunk.min(total - k * self.chunk);
            self.dev
                .pinned(&self.slots[slot], |b| {
                    comm.send_in::<u8>(wire.ctx, &b[..len], to, wire.tag)
                })
                .map_err(dev_err)??;
            if k + s < n {
                self.download(blocks, total, k + s, slot, mem)?;
            }
        }
        Ok(())
    }

    /// Receives a message from `from` into `blocks` of `mem`: replacing, or
    /// reduced into them with `op`.
    pub(crate) fn recv(
        &mut self,
        comm: &mut Communicator,
        wire: &Wire,
        from: usize,
        blocks: &[Range<usize>],
        mem: &mut D::Mem,
        op: Option<(DevOp, Dtype)>,
    ) -> Result<(), CollError> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        let (n, s, chunk) = (self.chunks(total), self.slots.len(), self.chunk);
        if op.is_some() && self.scratch.is_none() {
            self.scratch = Some(self.dev.alloc(s * chunk).map_err(dev_err)?);
        }
        for k in 0..n {
            let slot = k % s;
            let lo = k * chunk;
            let len = chunk.min(total - lo);
            let st = self.recv_chunk(comm, wire, from, slot, len)?;
            if st.len != len {
                return Err(CollError::Device(format!(
                    "chunk {k} from rank {from}: {} bytes where {len} were due",
                    st.len
                )));
            }
            let parts = pieces(blocks, lo, lo + len);
            match (op, self.scratch.as_mut()) {
                (Some((op, ty)), Some(scratch)) => {
                    let base = slot * chunk;
                    self.dev
                        .upload(&mut self.slots[slot], 0, scratch, base, len)
                        .map_err(dev_err)?;
                    for (at, off, plen) in parts {
                        self.dev
                            .reduce(op, ty, mem, at, scratch, base + off, plen / ty.size())
                            .map_err(dev_err)?;
                    }
                }
                _ => {
                    for (at, off, plen) in parts {
                        self.dev
                            .upload(&mut self.slots[slot], off, mem, at, plen)
                            .map_err(dev_err)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives and drops `total` bytes of chunks (a message too long for
    /// the receiver), keeping the stream of chunks in step.
    pub(crate) fn drain(
        &mut self,
        comm: &mut Communicator,
        wire: &Wire,
        from: usize,
        total: usize,
    ) -> Result<(), CollError> {
        for k in 0..self.chunks(total) {
            let len = self.chunk.min(total - k * self.chunk);
            self.recv_chunk(comm, wire, from, 0, len)?;
        }
        Ok(())
    }

    /// Receives the next chunk of `len` bytes from `from` into `slot`,
    /// once the work queued on the slot finished.
    fn recv_chunk(
        &mut self,
        comm: &mut Communicator,
        wire: &Wire,
        from: usize,
        slot: usize,
        len: usize,
    ) -> Result<Status, CollError> {
        self.dev
            .pinned_mut(&mut self.slots[slot], |b| {
                comm.recv_in::<u8>(
                    wire.ctx,
                    &mut b[..len],
                    Source::Rank(from),
                    TagMatch::Tag(wire.tag),
                )
            })
            .map_err(dev_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_cut_a_message_across_blocks() {
        let blocks = [0..10, 20..25, 40..50];
        // The whole message.
        assert_eq!(
            pieces(&blocks, 0, 25),
            [(0, 0, 10), (20, 10, 5), (40, 15, 10)]
        );
        // A chunk straddling the first two blocks.
        assert_eq!(pieces(&blocks, 8, 12), [(8, 0, 2), (20, 2, 2)]);
        // A chunk inside the last block.
        assert_eq!(pieces(&blocks, 17, 21), [(42, 0, 4)]);
        assert!(pieces(&blocks, 25, 25).is_empty());
    }
}
