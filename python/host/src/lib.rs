//! The Python host of rfx executors: CPython embedded in the executor
//! process, serving functions written in Python.
//!
//! The executor (`rfx_executors::python`) loads this library only for a
//! lease whose client shipped a Python module, so that `rfx` itself never
//! links libpython. It talks to it through five C entry points (`ffi.rs`):
//! load a module from a staged directory, resolve a function, call it on a
//! slot's input, unload the module, and the directories the interpreter
//! reads (for the sandbox). One interpreter per executor process, started
//! on the first load, isolated from the environment (`PyConfig` isolated:
//! no `PYTHON*` variables, no user site) and seeing the packages of the
//! interpreter the host was built for (`PYO3_PYTHON`, a venv included).
//!
//! A function is `def f(inp: memoryview) -> bytes | memoryview | int | None`
//! (or `def f(inp, ctx)` for the [`Context`](context::Context)): `inp` is a
//! read-only view of the invocation's slot, no copy; what it returns is
//! copied once into the client's result slot (an `int` says it wrote that
//! many bytes into `ctx.out` itself). An exception fails the invocation
//! with the exception's last traceback line as the reason.

mod comm;
mod context;
mod ffi;
mod interp;
mod invoke;
mod registry;

/// Version of the C entry points; the executor refuses another.
pub const HOST_ABI: u32 = 1;
