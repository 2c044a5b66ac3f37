//! Every use of a caller's pointer, in one place. The MPI standard makes
//! the caller guarantee that a buffer spans the items it describes, that
//! an output argument points to writable memory of its type, and that a
//! send buffer does not overlap a receive buffer (except `MPI_IN_PLACE`,
//! which never reaches here as a pointer). What can be checked is: null
//! pointers are refused with `MPI_ERR_BUFFER` / `MPI_ERR_ARG` instead of
//! dereferenced, and lengths come from checked arithmetic.

use std::ffi::{c_char, c_int, c_void, CStr};

use crate::abi::{self, Handle};
use crate::error::Failure;
use crate::op::UserFn;

/// `len` bytes at `p` to read (a send buffer).
pub(crate) fn bytes<'a>(p: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::new(abi::MPI_ERR_BUFFER, "a null buffer"));
    }
    // SAFETY: the caller's buffer spans `len` bytes (the standard's
    // contract for count and datatype); not null, checked above.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// `len` bytes at `p` to write (a receive buffer).
pub(crate) fn bytes_mut<'a>(p: *mut c_void, len: usize) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::new(abi::MPI_ERR_BUFFER, "a null buffer"));
    }
    // SAFETY: the caller's buffer spans `len` writable bytes that nothing
    // else refers to during the call (the standard's contract); not null.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// A send buffer of `slen` bytes and a receive buffer of `rlen` bytes of
/// one call. The standard forbids them to overlap; a program that makes
/// them overlap gets `MPI_ERR_BUFFER` instead of two aliasing views.
pub(crate) fn send_recv<'a>(
    send: *const c_void,
    slen: usize,
    recv: *mut c_void,
    rlen: usize,
) -> Result<(&'a [u8], &'a mut [u8]), Failure> {
    let (s, r) = (send as usize, recv as usize);
    if slen > 0 && rlen > 0 && s < r.saturating_add(rlen) && r < s.saturating_add(slen) {
        return Err(Failure::new(
            abi::MPI_ERR_BUFFER,
            "the send and receive buffers overlap (use MPI_IN_PLACE)",
        ));
    }
    Ok((bytes(send, slen)?, bytes_mut(recv, rlen)?))
}

/// The caller's buffer of a non-blocking send (`MPI_Isend`), held by its
/// request: no copy.
pub(crate) fn held(p: *const c_void, len: usize) -> Result<&'static [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::new(abi::MPI_ERR_BUFFER, "a null buffer"));
    }
    // SAFETY: the standard's contract for a non-blocking operation's buffer:
    // it spans `len` bytes and the caller neither frees nor writes it until
    // the request completes (MPI_Wait, MPI_Test) or is freed. rfx's request
    // does not outlive that: it completes, or dropped it first copies what
    // it did not send yet. Not null, checked above.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// The caller's buffer of a non-blocking receive (`MPI_Irecv`), held by
/// its request: the message lands in it directly.
pub(crate) fn held_mut(p: *mut c_void, len: usize) -> Result<&'static mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::new(abi::MPI_ERR_BUFFER, "a null buffer"));
    }
    // SAFETY: as in `held`, and the caller does not read the buffer either
    // until the request completes; a request dropped before writes nothing
    // after (its receive withdraws).
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// `n` values at `p` to read (an array argument).
pub(crate) fn array<'a, T>(p: *const T, n: usize) -> Result<&'a [T], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::arg("a null array"));
    }
    // SAFETY: the caller passes `n` initialized values of `T`; not null.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Reads an input argument.
pub(crate) fn read<T: Copy>(p: *const T) -> Result<T, Failure> {
    if p.is_null() {
        return Err(Failure::arg("a null argument"));
    }
    // SAFETY: an input argument points to an initialized `T`; not null.
    Ok(unsafe { p.read_unaligned() })
}

/// Writes an output argument.
pub(crate) fn write<T>(p: *mut T, v: T) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::arg("a null output argument"));
    }
    // SAFETY: an output argument points to writable memory of a `T`.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Writes an output argument the caller may leave out (`MPI_STATUS_IGNORE`
/// and the like are null).
pub(crate) fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: as in `write`; not null.
        unsafe { p.write_unaligned(v) };
    }
}

/// The `i`-th element of an output array the caller may leave out
/// (`MPI_STATUSES_IGNORE`).
pub(crate) fn write_nth_opt<T>(p: *mut T, i: usize, v: T) {
    if !p.is_null() {
        // SAFETY: a non-null output array has room for as many elements as
        // the call's count, and `i` is below it (callers iterate the count).
        unsafe { p.add(i).write_unaligned(v) };
    }
}

/// Writes `s` as a C string into `buf` of `max` bytes (cut to `max - 1`
/// bytes and a NUL) and its length into `len` when not null.
pub(crate) fn write_str(
    buf: *mut c_char,
    len: *mut c_int,
    s: &str,
    max: usize,
) -> Result<(), Failure> {
    if buf.is_null() || max == 0 {
        return Err(Failure::arg("a null string buffer"));
    }
    let b = s.as_bytes();
    let n = b.len().min(max - 1);
    // SAFETY: the caller's string buffer holds `max` bytes (the standard's
    // MPI_MAX_*_STRING for this argument); we write n + 1 <= max.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    write_opt(len, n as c_int);
    Ok(())
}

/// A NUL-terminated string argument.
pub(crate) fn cstr<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::arg("a null string"));
    }
    // SAFETY: string arguments are NUL-terminated C strings; not null.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| Failure::arg("a string that is not UTF-8"))
}

/// Calls a user reduction function: `inout[i] = input[i] op inout[i]` over
/// `n` items of the datatype `ty`.
pub(crate) fn call_user(f: UserFn, input: &mut [u8], inout: &mut [u8], n: usize, ty: Handle) {
    let mut len = c_int::try_from(n).unwrap_or(c_int::MAX);
    let mut ty = ty;
    // SAFETY: `f` came from MPI_Op_create, whose caller promised a function
    // of this signature; both buffers hold at least `n` items of `ty`
    // (callers pass whole items), and the pointers live for the call.
    unsafe { f(input.as_mut_ptr(), inout.as_mut_ptr(), &mut len, &mut ty) };
}

/// `MPI_Alloc_mem`: `size` bytes from the C heap (`MPI_Free_mem` frees).
pub(crate) fn alloc(size: usize) -> *mut c_void {
    // SAFETY: malloc of any size is sound; null means exhausted.
    unsafe { libc::malloc(size.max(1)) }
}

/// `MPI_Free_mem`.
pub(crate) fn free(p: *mut c_void) {
    // SAFETY: `p` came from `alloc` (MPI_Alloc_mem), or is null.
    unsafe { libc::free(p) }
}
