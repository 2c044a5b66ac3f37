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
    apart(
        (a.buf_ptr() as usize, a.len_bytes()),
        (b.buf_ptr() as usize, b.len_bytes()),
    )
}

/// Refuses two byte ranges `(address, length)` that overlap.
fn apart((x, xl): (usize, usize), (y, yl): (usize, usize)) -> PyResult<()> {
    if xl > 0 && yl > 0 && x < y.saturating_add(yl) && y < x.saturating_add(xl) {
        return Err(PyBufferError::new_err(
            "the send and receive buffers overlap (use one buffer for in-place operations)",
        ));
    }
    Ok(())
}

/// A held C-contiguous buffer of any element type, which its `struct`
/// format character says (numpy's `dtype.char` for a native-order array):
/// one buffer request gives both the type and the memory, without a
/// Python-level look at the object.
pub(crate) struct Held {
    view: Box<pyo3::ffi::Py_buffer>,
}

impl Held {
    /// Requests `obj`'s buffer, C-contiguous with its format (and
    /// writable if asked).
    pub(crate) fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Held> {
        use pyo3::ffi;
        let mut view = Box::new(std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed());
        let mut flags = ffi::PyBUF_FORMAT | ffi::PyBUF_C_CONTIGUOUS;
        if writable {
            flags |= ffi::PyBUF_WRITABLE;
        }
        // SAFETY: `view` is a zeroed Py_buffer that CPython fills on
        // success (and leaves to us to release, in Drop) and does not
        // touch on failure; `obj` is a live object (the GIL is held).
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } == -1 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: filled by the successful call above.
        Ok(Held {
            view: unsafe { view.assume_init() },
        })
    }

    /// The element's format character (native byte order only).
    pub(crate) fn code(&self) -> PyResult<char> {
        if self.view.format.is_null() {
            return Ok('B');
        }
        // SAFETY: a non-null format is a NUL-terminated string owned by
        // the exporter while the buffer is held.
        let f = unsafe { std::ffi::CStr::from_ptr(self.view.format) }.to_bytes();
        let f = match f {
            [b'@' | b'=', rest @ ..] => rest,
            #[cfg(target_endian = "little")]
            [b'<', rest @ ..] => rest,
            #[cfg(target_endian = "big")]
            [b'>' | b'!', rest @ ..] => rest,
            f => f,
        };
        match f {
            [c] if c.is_ascii_alphabetic() => Ok(*c as char),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unsupported buffer format {:?} (native-order numbers only)",
                String::from_utf8_lossy(f)
            ))),
        }
    }

    fn bytes(&self) -> usize {
        usize::try_from(self.view.len).unwrap_or(0)
    }

    /// The items, as `T` (whose size must be the buffer's item size).
    pub(crate) fn slice<T: Copy>(&self) -> PyResult<&[T]> {
        let n = self.items::<T>()?;
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: a held C-contiguous buffer of `len` bytes at `buf`, of
        // items of T's size and alignment (checked in `items`); the borrow
        // cannot outlive `self`, which holds it. Concurrent writes by
        // Python code are excluded by the module's rule.
        Ok(unsafe { std::slice::from_raw_parts(self.view.buf.cast::<T>(), n) })
    }

    /// The items, writable.
    pub(crate) fn slice_mut<T: Copy>(&mut self) -> PyResult<&mut [T]> {
        if self.view.readonly != 0 {
            return Err(PyBufferError::new_err("the buffer is read-only"));
        }
        let n = self.items::<T>()?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `slice`, for a buffer requested writable; `&mut`
        // on the holder makes this its only view (callers refuse two
        // overlapping buffers: `overlap`).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.view.buf.cast::<T>(), n) })
    }

    fn items<T>(&self) -> PyResult<usize> {
        let size = std::mem::size_of::<T>();
        let item = usize::try_from(self.view.itemsize).unwrap_or(0);
        if item != size || self.bytes() % size != 0 {
            return Err(PyBufferError::new_err(format!(
                "items of {item} bytes where {size} were expected"
            )));
        }
        if (self.view.buf as usize) % std::mem::align_of::<T>() != 0 {
            return Err(PyBufferError::new_err(
                "the buffer is not aligned for its type",
            ));
        }
        Ok(self.bytes() / size)
    }

    /// Refuses `other` if it overlaps this buffer (MPI's rule).
    pub(crate) fn disjoint(&self, other: &Held) -> PyResult<()> {
        apart(
            (self.view.buf as usize, self.bytes()),
            (other.view.buf as usize, other.bytes()),
        )
    }

    /// Refuses `other` if its element type differs.
    pub(crate) fn same_type(&self, other: &Held) -> PyResult<()> {
        let (a, b) = (self.code()?, other.code()?);
        // Codes of one Rust type (the `typed!` groups) are the same type.
        let group = |c: char| match c {
            'q' | 'l' | 'n' => 'q',
            'Q' | 'L' | 'N' => 'Q',
            'B' | 'c' => 'B',
            c => c,
        };
        if group(a) != group(b) {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "buffers of element types {a:?} and {b:?}"
            )));
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is
        // released once; a Held never leaves the GIL-holding call that
        // made it (it is not Send).
        unsafe { pyo3::ffi::PyBuffer_Release(&mut *self.view) }
    }
}
