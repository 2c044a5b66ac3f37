//! One invocation: the function called on views of the slot, its result
//! copied once into the client's result slot.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt};
use rfx_abi::status::{self, write_reason};
use rfx_abi::RfxContext;

use crate::context::Context;
use crate::ffi::Memory;
use crate::registry;

/// Calls function `handle`; an output length or a status code.
pub(crate) fn call(handle: i64, ctx: &RfxContext, mem: &mut Memory) -> u32 {
    Python::with_gil(|py| {
        let found = usize::try_from(handle)
            .ok()
            .and_then(|h| registry::function(py, h));
        let Some((f, wants_ctx)) = found else {
            write_reason(mem.out(), &format!("no Python function {handle}"));
            return status::FAILED;
        };
        match run(py, &f, wants_ctx, ctx, mem) {
            Ok(len) => len,
            Err(why) => {
                write_reason(mem.out(), &why);
                status::FAILED
            }
        }
    })
}

fn run(
    py: Python<'_>,
    f: &Py<PyAny>,
    wants_ctx: bool,
    raw: &RfxContext,
    mem: &mut Memory,
) -> Result<u32, String> {
    let fail = |e: PyErr| registry::reason(py, &e);
    let inp = mem.input_view(py).map_err(fail)?;
    let ctx = if wants_ctx {
        let out = mem.out_view(py).map_err(fail)?;
        Some(Bound::new(py, Context::new(raw, out)).map_err(fail)?)
    } else {
        None
    };
    let r = match &ctx {
        Some(c) => f.call1(py, (&inp, c)),
        None => f.call1(py, (&inp,)),
    };
    // The result is copied while the views live (it may be one of them),
    // then the views end with the call. One the function kept (a numpy
    // array over it, still alive) cannot be released; the memory stays
    // mapped for the executor's life, so a kept view reads later slots'
    // bytes of this same tenant, never freed memory.
    let result = r
        .map_err(fail)
        .and_then(|ret| output(py, ret.bind(py), mem));
    let _ = inp.call_method0("release");
    if let Some(c) = &ctx {
        c.borrow_mut().end(py);
    }
    result
}

/// Copies what the function returned into the result slot.
fn output(py: Python<'_>, ret: &Bound<'_, PyAny>, mem: &mut Memory) -> Result<u32, String> {
    let cap = mem.out().len();
    let too_long = |len: usize| format!("an output of {len} bytes exceeds the result slot's {cap}");
    if ret.is_none() {
        return Ok(0);
    }
    if let Ok(n) = ret.downcast::<PyInt>() {
        // The function wrote `n` bytes into ctx.out itself.
        let n: usize = n
            .extract()
            .map_err(|_| "a returned length must be a non-negative int".to_string())?;
        return if n <= cap {
            Ok(n as u32)
        } else {
            Err(too_long(n))
        };
    }
    if let Ok(b) = ret.downcast::<PyBytes>() {
        let b = b.as_bytes();
        let dst = mem
            .out()
            .get_mut(..b.len())
            .ok_or_else(|| too_long(b.len()))?;
        dst.copy_from_slice(b);
        return Ok(b.len() as u32);
    }
    let fail = |e: PyErr| registry::reason(py, &e);
    // Bytes-like buffers (a view of the input, bytearray, uint8 arrays)
    // directly; others through a byte view of them.
    let view;
    let buf = match PyBuffer::<u8>::get(ret) {
        Ok(b) if b.is_c_contiguous() => b,
        _ => {
            view = py
                .import("builtins")
                .and_then(|b| b.getattr("memoryview"))
                .and_then(|mv| mv.call1((ret,)))
                .and_then(|v| v.call_method1("cast", ("B",)))
                .map_err(|e| {
                    format!(
                        "the function returned {}, not bytes, a buffer, an int or None ({})",
                        ret.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        fail(e)
                    )
                })?;
            PyBuffer::<u8>::get(&view).map_err(fail)?
        }
    };
    let len = buf.len_bytes();
    if len > cap {
        return Err(too_long(len));
    }
    // A view of ctx.out itself is already in place.
    if buf.buf_ptr() as usize != mem.out_addr() {
        buf.copy_to_slice(py, &mut mem.out()[..len]).map_err(fail)?;
    }
    Ok(len as u32)
}
