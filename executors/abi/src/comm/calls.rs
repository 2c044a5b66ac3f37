//! The calls a function makes back through its group's [`RfxComm`] table:
//! the table and the buffers are valid for the duration of the call (the
//! executor's contract); the executor's entry points check everything else
//! (ranks, types, lengths, alignment).

use super::table::{CommElement, CommOp, RfxComm};

pub(crate) fn comm_send(t: &RfxComm, buf: &[u8], dest: u32, tag: u32) -> i32 {
    // SAFETY: the entry point is the executor's; `buf` is valid for `len` bytes during the call.
    unsafe { (t.send)(t.handle, buf.as_ptr().cast(), buf.len() as u64, dest, tag) }
}

pub(crate) fn comm_recv(t: &RfxComm, buf: &mut [u8], source: u32, tag: u32) -> (i32, usize) {
    let mut len = 0u64;
    // SAFETY: `buf` is valid for writes of `cap` bytes and `len` for one u64, during the call.
    let code = unsafe {
        (t.recv)(
            t.handle,
            buf.as_mut_ptr().cast(),
            buf.len() as u64,
            source,
            tag,
            &mut len,
        )
    };
    (
        code,
        usize::try_from(len).unwrap_or(usize::MAX).min(buf.len()),
    )
}

pub(crate) fn comm_barrier(t: &RfxComm) -> i32 {
    // SAFETY: the entry point is the executor's and takes only its handle.
    unsafe { (t.barrier)(t.handle) }
}

pub(crate) fn comm_bcast(t: &RfxComm, buf: &mut [u8], root: u32) -> i32 {
    // SAFETY: `buf` is valid for reads and writes of `len` bytes during the call.
    unsafe { (t.bcast)(t.handle, buf.as_mut_ptr().cast(), buf.len() as u64, root) }
}

pub(crate) fn comm_reduce<T: CommElement>(
    t: &RfxComm,
    input: &[T],
    out: &mut [T],
    op: CommOp,
    root: Option<u32>,
) -> i32 {
    let (i, o, n) = (
        input.as_ptr().cast(),
        out.as_mut_ptr().cast(),
        input.len() as u64,
    );
    let (d, op) = (T::DTYPE as u32, op as u32);
    match root {
        // SAFETY: `input` and `out` hold `n` elements of the type `d` names, aligned, distinct.
        Some(root) => unsafe { (t.reduce)(t.handle, i, o, n, d, op, root) },
        // SAFETY: as above.
        None => unsafe { (t.allreduce)(t.handle, i, o, n, d, op) },
    }
}

pub(crate) fn comm_allgather(t: &RfxComm, block: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: `block` is valid for `len` bytes, `out` for `size * len` (checked by the caller).
    unsafe {
        (t.allgather)(
            t.handle,
            block.as_ptr().cast(),
            block.len() as u64,
            out.as_mut_ptr().cast(),
        )
    }
}

pub(crate) fn comm_gather(t: &RfxComm, block: &[u8], out: &mut [u8], root: u32) -> i32 {
    // SAFETY: `block` is valid for `len` bytes and `out` for its length (`size * len` at the
    // root, checked by the caller); the executor touches `out` only at the root.
    unsafe {
        (t.gather)(
            t.handle,
            block.as_ptr().cast(),
            block.len() as u64,
            out.as_mut_ptr().cast(),
            root,
        )
    }
}

pub(crate) fn comm_scatter(
    t: &RfxComm,
    input: &[u8],
    len: usize,
    out: &mut [u8],
    root: u32,
) -> i32 {
    // SAFETY: `out` is valid for `len` bytes, and the root's `input` for `size * len` (checked
    // by the caller); the executor reads `input` only at the root.
    unsafe {
        (t.scatter)(
            t.handle,
            input.as_ptr().cast(),
            len as u64,
            out.as_mut_ptr().cast(),
            root,
        )
    }
}

pub(crate) fn comm_alltoall(t: &RfxComm, input: &[u8], out: &mut [u8]) -> i32 {
    // SAFETY: `input` and `out` are valid for `size` blocks of `len` bytes (checked by the
    // caller).
    unsafe {
        (t.alltoall)(
            t.handle,
            input.as_ptr().cast(),
            (input.len() / t.size.max(1) as usize) as u64,
            out.as_mut_ptr().cast(),
        )
    }
}
