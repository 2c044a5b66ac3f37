//! The C entry points the executor calls, and the views of its memory
//! handed to Python: the host's unsafe boundary with the executor.
//!
//! The executor's side of the contract (`rfx_executors::python`): strings
//! are NUL-terminated; an error buffer is valid for its capacity; a call's
//! context is valid for the call, its input for `size` bytes, its output
//! for `ctx.out_capacity` bytes, the two not overlapping. Nothing here
//! unwinds into the executor.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::ffi as py;
use pyo3::prelude::*;
use rfx_abi::status::{self, write_reason};
use rfx_abi::RfxContext;

use crate::{invoke, registry};

/// The directories the interpreter reads (build.rs), `:`-separated.
const DIRS: &str = concat!(env!("RFX_PYHOST_DIRS"), "\0");

/// [`HOST_ABI`](crate::HOST_ABI).
#[no_mangle]
pub extern "C" fn rfx_pyhost_abi() -> u32 {
    crate::HOST_ABI
}

/// The directories the interpreter reads, `:`-separated: the executor
/// manager shows them read-only in the sandbox. Needs no interpreter.
#[no_mangle]
pub extern "C" fn rfx_pyhost_dirs() -> *const c_char {
    DIRS.as_ptr().cast()
}

/// # Safety
/// `p` is null or NUL-terminated.
unsafe fn text<'a>(p: *const c_char) -> Result<&'a str, String> {
    if p.is_null() {
        return Err("a null string".into());
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| "a string that is not UTF-8".into())
}

/// # Safety
/// `err` is null or valid for `cap` bytes.
unsafe fn report(err: *mut u8, cap: u32, why: &str) {
    if !err.is_null() {
        // SAFETY: the caller's contract.
        write_reason(
            unsafe { std::slice::from_raw_parts_mut(err, cap as usize) },
            why,
        );
    }
}

fn handle(r: std::thread::Result<Result<usize, String>>) -> Result<i64, String> {
    match r {
        Ok(Ok(h)) => i64::try_from(h).map_err(|_| "out of handles".into()),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("the Python host panicked".into()),
    }
}

/// Imports module `module` from directory `dir`; its handle, or -1 with
/// the reason in `err`.
///
/// # Safety
/// The contract of the module docs.
#[no_mangle]
pub unsafe extern "C" fn rfx_pyhost_load(
    dir: *const c_char,
    module: *const c_char,
    err: *mut u8,
    err_cap: u32,
) -> i64 {
    // SAFETY: the caller's contract.
    let r = catch_unwind(|| unsafe { registry::load(text(dir)?, text(module)?) });
    handle(r).unwrap_or_else(|why| {
        // SAFETY: the caller's contract.
        unsafe { report(err, err_cap, &why) };
        -1
    })
}

/// Resolves `name` in a loaded module; its handle, or -1 with the reason.
///
/// # Safety
/// The contract of the module docs.
#[no_mangle]
pub unsafe extern "C" fn rfx_pyhost_resolve(
    module: i64,
    name: *const c_char,
    err: *mut u8,
    err_cap: u32,
) -> i64 {
    let r = catch_unwind(|| {
        let m = usize::try_from(module).map_err(|_| format!("no module {module}"))?;
        // SAFETY: the caller's contract.
        registry::resolve(m, unsafe { text(name)? })
    });
    handle(r).unwrap_or_else(|why| {
        // SAFETY: the caller's contract.
        unsafe { report(err, err_cap, &why) };
        -1
    })
}

/// Forgets a module and its functions.
#[no_mangle]
pub extern "C" fn rfx_pyhost_unload(module: i64) {
    if let Ok(m) = usize::try_from(module) {
        let _ = catch_unwind(|| registry::unload(m));
    }
}

/// Calls a resolved function: the extended ABI's contract, with the
/// function's handle first.
///
/// # Safety
/// The contract of the module docs.
#[no_mangle]
pub unsafe extern "C" fn rfx_pyhost_call(
    function: i64,
    ctx: *const RfxContext,
    input: *const u8,
    size: u32,
    out: *mut u8,
) -> u32 {
    // SAFETY: the caller's contract: valid for the call.
    let Some(ctx) = (unsafe { ctx.as_ref() }) else {
        return status::BAD_CONTEXT;
    };
    let mut mem = Memory {
        input,
        size: size as usize,
        out,
        cap: ctx.out_capacity as usize,
    };
    match catch_unwind(AssertUnwindSafe(|| invoke::call(function, ctx, &mut mem))) {
        Ok(code) => code,
        Err(_) => {
            write_reason(mem.out(), "the Python host panicked");
            status::PANICKED
        }
    }
}

/// One call's memory: the slot's input and the client's result slot.
pub(crate) struct Memory {
    input: *const u8,
    size: usize,
    out: *mut u8,
    cap: usize,
}

impl Memory {
    /// A read-only `memoryview` of the input (no copy). It must be
    /// released before the call returns.
    pub(crate) fn input_view<'py>(&self, p: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `input` is valid for `size` bytes for the whole call
        // (the contract); the view is read-only and released when the
        // call ends (invoke.rs).
        unsafe { view(p, self.input.cast_mut(), self.size, py::PyBUF_READ) }
    }

    /// A writable `memoryview` of the output (`ctx.out`).
    pub(crate) fn out_view<'py>(&self, p: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `out` is valid for `cap` bytes for the whole call, and
        // nothing in Rust borrows it while Python runs; released with the
        // context when the call ends.
        unsafe { view(p, self.out, self.cap, py::PyBUF_WRITE) }
    }

    /// The output, for the result's copy once Python has returned.
    pub(crate) fn out(&mut self) -> &mut [u8] {
        if self.cap == 0 || self.out.is_null() {
            return &mut [];
        }
        // SAFETY: valid for `cap` bytes (the contract); `&mut self` makes
        // this the only Rust borrow, taken while no Python code runs.
        unsafe { std::slice::from_raw_parts_mut(self.out, self.cap) }
    }

    /// The output's address, to tell a returned view of it from a copy.
    pub(crate) fn out_addr(&self) -> usize {
        self.out as usize
    }
}

/// # Safety
/// `ptr` is valid for `len` bytes (writable with `PyBUF_WRITE`) while the
/// view lives.
unsafe fn view(p: Python<'_>, ptr: *mut u8, len: usize, flags: i32) -> PyResult<Bound<'_, PyAny>> {
    let len =
        isize::try_from(len).map_err(|_| pyo3::exceptions::PyOverflowError::new_err("size"))?;
    // An empty view still needs an address; it is never read.
    let ptr = if ptr.is_null() {
        std::ptr::NonNull::<u8>::dangling().as_ptr()
    } else {
        ptr
    };
    // SAFETY: the caller's contract; CPython copies nothing and keeps the
    // pointer until the view is released.
    unsafe {
        let v = py::PyMemoryView_FromMemory(ptr.cast(), len, flags);
        Bound::from_owned_ptr_or_err(p, v)
    }
}
