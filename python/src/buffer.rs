//! Views of Python buffers (`bytes`, `bytearray`, `memoryview`, numpy
//! arrays) as Rust slices without copying: the binding's one unsafe
//! concern, in one place.
//!
//! pyo3 hands a buffer's items as cells, since Python code may change
//! them at any time. rfx reads an input once and writes a result once,
//! while the buffer is held (its exporter can neither free nor resize
//! it); that another Python thread must not touch those bytes during the
//! call is the caller's rule, as with mpi4py.

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

/// A C-contiguous buffer's items.
pub(crate) fn slice<T: Element>(b: &PyBuffer<T>) -> PyResult<&[T]> {
    if !b.is_c_contiguous() {
        return Err(PyBufferError::new_err("the buffer is not C-contiguous"));
    }
    if b.item_count() == 0 {
        return Ok(&[]);
    }
    // SAFETY: `b` is a held, C-contiguous buffer of `item_count` items of
    // `T` (pyo3 checked the format and item size when it was taken), so
    // the pointer is valid and aligned for that many `T`s for as long as
    // `b` lives, which the returned borrow cannot outlive. Concurrent
    // writes by Python code are excluded by the module's rule (above).
    Ok(unsafe { std::slice::from_raw_parts(b.buf_ptr().cast::<T>(), b.item_count()) })
}

/// A writable C-contiguous buffer's items.
pub(crate) fn slice_mut<T: Element>(b: &mut PyBuffer<T>) -> PyResult<&mut [T]> {
    if b.readonly() {
        return Err(PyBufferError::new_err("the buffer is read-only"));
    }
    if !b.is_c_contiguous() {
        return Err(PyBufferError::new_err("the buffer is not C-contiguous"));
    }
    if b.item_count() == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as in `slice`, and the exporter said the buffer is
    // writable; `&mut` on the holder makes this the only view through it.
    // Two holders of one Python object would alias: the callers refuse
    // overlapping buffers of one call (see `disjoint`).
    Ok(unsafe { std::slice::from_raw_parts_mut(b.buf_ptr().cast::<T>(), b.item_count()) })
}

/// Refuses two buffers of one call that overlap (MPI's rule for send and
/// receive buffers; rfx's functions take them as distinct slices).
pub(crate) fn disjoint<A: Element, B: Element>(a: &PyBuffer<A>, b: &PyBuffer<B>) -> PyResult<()> {
    let (x, y) = (a.buf_ptr() as usize, b.buf_ptr() as usize);
    let (xl, yl) = (a.len_bytes(), b.len_bytes());
    if xl > 0 && yl > 0 && x < y.saturating_add(yl) && y < x.saturating_add(xl) {
        return Err(PyBufferError::new_err(
            "the send and receive buffers overlap (use one buffer for in-place operations)",
        ));
    }
    Ok(())
}
