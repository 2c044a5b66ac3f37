//! The crate's only `unsafe`: the body of every exported entry point
//! (raw pointers from the executor into slices and a [`Context`]), and the
//! calls a function makes back through its group's [`RfxComm`] table.
//!
//! Both rest on the extended ABI's contract, which the executor keeps: the
//! context, the buffers and the table are valid for the duration of the call.

use crate::comm::{CommElement, CommOp, RfxComm};
use crate::context::RfxContext;

/// Support for [`export!`](crate::export); not a public API.
#[doc(hidden)]
pub mod private {
    use std::ffi::c_void;
    use std::panic::{self, AssertUnwindSafe};

    use crate::context::{Context, RfxContext, ABI_VERSION};
    use crate::status::{FunctionOutput, BAD_CONTEXT, PANICKED};

    pub use std::ffi::c_void as CVoid;

    /// The body of every entry point that [`export!`](crate::export) emits.
    ///
    /// # Safety
    ///
    /// `ctx` is null or points to a valid [`RfxContext`]. If it is valid, `input` is null with
    /// `size == 0` or points to `size` readable bytes, and `out` is null with
    /// `ctx.out_capacity == 0` or points to `ctx.out_capacity` writable bytes; the two ranges
    /// do not overlap, and nothing else touches them during the call. This is the extended
    /// ABI's contract, which [`Function::call`](crate::Function::call) keeps.
    pub unsafe fn entry<R, F>(
        ctx: *const RfxContext,
        input: *const c_void,
        size: u32,
        out: *mut c_void,
        f: F,
    ) -> u32
    where
        R: FunctionOutput,
        F: FnOnce(&Context, &[u8], &mut [u8]) -> R,
    {
        // SAFETY: `ctx` is null or valid (contract above); `as_ref` handles null.
        let Some(&raw) = (unsafe { ctx.as_ref() }) else {
            return BAD_CONTEXT;
        };
        // Contexts only grow, so any executor of this version or later is understood.
        if raw.abi_version < ABI_VERSION {
            return BAD_CONTEXT;
        }
        let capacity = raw.out_capacity as usize;
        if (input.is_null() && size != 0) || (out.is_null() && capacity != 0) {
            return BAD_CONTEXT;
        }
        let input: &[u8] = if size == 0 {
            &[]
        } else {
            // SAFETY: non-null (checked) and valid for `size` bytes, not written during the
            // call (contract above).
            unsafe { std::slice::from_raw_parts(input.cast::<u8>(), size as usize) }
        };
        let out: &mut [u8] = if capacity == 0 {
            &mut []
        } else {
            // SAFETY: non-null (checked), valid for `capacity` bytes and not aliased by `input`
            // or anything else during the call (contract above).
            unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), capacity) }
        };
        let ctx = Context::from_raw(raw);
        // A panic must not unwind into the caller's C frames: catch it, return a code.
        match panic::catch_unwind(AssertUnwindSafe(|| f(&ctx, input, out).into_status())) {
            Ok(status) => status,
            Err(payload) => {
                // Dropping the payload runs user code too; a panic there is swallowed.
                if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                    std::mem::forget(again);
                }
                PANICKED
            }
        }
    }
}

// --- the group communicator table (crate::comm), function side -------------------------------
//
// A function calls the executor back through the `RfxComm` table its context points to. The
// table and the buffers are valid for the duration of the call (the executor's contract); the
// entry points check everything else (ranks, types, lengths, alignment).

/// The table `raw.comm` points to, if any.
pub(crate) fn comm_table(raw: &RfxContext) -> Option<&RfxComm> {
    // SAFETY: `comm` is null or points to a table the executor keeps alive for the whole call,
    // and a `Context` (which owns `raw` by value and is neither `Clone` nor `Copy`) is only
    // handed to the function by reference for that call; the returned borrow cannot outlive it.
    unsafe { raw.comm.as_ref() }
}

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
