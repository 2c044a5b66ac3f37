//! [`export!`](crate::export): Rust functions with the extended C ABI.

/// Exports Rust functions from a `cdylib` so that an rfx executor can call them.
///
/// Two forms, mixed freely in one invocation:
///
/// - `fn name(input: &[u8], out: &mut [u8]) -> R { ... }`
/// - `fn name(ctx: &Context, input: &[u8], out: &mut [u8]) -> R { ... }`, where
///   [`Context`](crate::Context) tells the rank, size, invocation id and output capacity.
///
/// `R` is `usize` (the output length) or `Result<usize, E>` (an `Err` returns
/// [`status::FAILED`](crate::status::FAILED)); see [`FunctionOutput`](crate::FunctionOutput).
/// `out` is exactly the output buffer the executor offers, so `out.len()` is the capacity.
/// Names are global C symbols of the library: avoid those of libc (`write`, `free`...).
///
/// Each function becomes a `#[no_mangle] unsafe extern "C" fn name` with the **extended** ABI
/// (both forms: only the extended ABI carries the output capacity that `&mut [u8]` needs),
/// plus its marker `static rfx_abi_name: u32 = 1`. A panic is caught with
/// [`std::panic::catch_unwind`] and returns [`status::PANICKED`](crate::status::PANICKED)
/// (`u32::MAX`) instead of unwinding into the executor, which reports
/// [`CallError::Panicked`](crate::CallError::Panicked); this needs the default
/// `panic = "unwind"` (with `panic = "abort"` a panic aborts the executor).
///
/// ```
/// use rfx_abi::Context;
///
/// rfx_abi::export! {
///     /// Copies the input to the output.
///     fn echo(input: &[u8], out: &mut [u8]) -> Result<usize, &'static str> {
///         let dst = out.get_mut(..input.len()).ok_or("output buffer too small")?;
///         dst.copy_from_slice(input);
///         Ok(input.len())
///     }
///
///     /// Writes this instance's rank and the group size as two little-endian u32.
///     fn rank_info(ctx: &Context, _input: &[u8], out: &mut [u8]) -> usize {
///         out[..4].copy_from_slice(&ctx.rank().to_le_bytes());
///         out[4..8].copy_from_slice(&ctx.size().to_le_bytes());
///         8
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    () => {};
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident(
            $ctx:ident : $ctx_ty:ty,
            $input:ident : $input_ty:ty,
            $out:ident : $out_ty:ty $(,)?
        ) -> $ret:ty $body:block
        $($rest:tt)*
    ) => {
        $crate::__rfx_export_entry! {
            $(#[$attr])* $vis $name,
            fn __rfx_function($ctx: $ctx_ty, $input: $input_ty, $out: $out_ty) -> $ret $body,
            __rfx_function
        }
        $crate::export! { $($rest)* }
    };
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident(
            $input:ident : $input_ty:ty,
            $out:ident : $out_ty:ty $(,)?
        ) -> $ret:ty $body:block
        $($rest:tt)*
    ) => {
        $crate::__rfx_export_entry! {
            $(#[$attr])* $vis $name,
            fn __rfx_function($input: $input_ty, $out: $out_ty) -> $ret $body,
            |_: &$crate::Context, input: &[u8], out: &mut [u8]| __rfx_function(input, out)
        }
        $crate::export! { $($rest)* }
    };
}

/// The entry point and marker of one function of [`export!`]; not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __rfx_export_entry {
    ($(#[$attr:meta])* $vis:vis $name:ident, $inner:item, $call:expr) => {
        $(#[$attr])*
        ///
        /// # Safety
        ///
        /// Exported for rfx executors, which call it with the extended function ABI.
        #[no_mangle]
        $vis unsafe extern "C" fn $name(
            ctx: *const $crate::RfxContext,
            input: *const $crate::__private::CVoid,
            size: u32,
            out: *mut $crate::__private::CVoid,
        ) -> u32 {
            $inner
            // SAFETY: our caller keeps the extended ABI's contract, which is `entry`'s.
            unsafe { $crate::__private::entry(ctx, input, size, out, $call) }
        }

        const _: () = {
            #[export_name = concat!("rfx_abi_", stringify!($name))]
            static MARKER: u32 = $crate::ABI_VERSION;
        };
    };
}
