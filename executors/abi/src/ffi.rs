//! The `unsafe` of the entry points: the body of every exported function
//! (raw pointers from the executor into slices and a [`Context`]). The
//! calls back through a group's table are `comm/calls.rs`.
//!
//! Both rest on the extended ABI's contract, which the executor keeps: the
//! context, the buffers and the table are valid for the duration of the call.

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
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            let r = f(&ctx, input, &mut *out);
            r.into_status(&mut *out)
        }));
        match r {
            Ok(status) => status,
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned());
                if let Some(why) = why {
                    crate::status::write_reason(out, &why);
                }
                // Dropping the payload runs user code too; a panic there is swallowed.
                if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                    std::mem::forget(again);
                }
                PANICKED
            }
        }
    }
}
