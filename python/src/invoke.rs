//! A connection to a leased executor: submit invocations, collect their
//! results in any order (what the Python `Executor`'s futures are built
//! on), or invoke and wait in one call.
//!
//! The Rust invoker sits behind a mutex that is only ever taken with the
//! GIL released, so a thread waiting for results never blocks a thread
//! that submits while holding the GIL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rfx::client::Ticket;

use crate::buffer;
use crate::errors::{self, RfxError};

struct State {
    inv: Option<rfx::client::Invoker>,
    tickets: HashMap<u16, Ticket>,
}

/// Invocations on one executor (one worker of it per invoker).
#[pyclass(module = "rfx._native")]
pub(crate) struct Invoker {
    state: Mutex<State>,
}

impl Invoker {
    pub(crate) fn new(inv: rfx::client::Invoker) -> Invoker {
        Invoker {
            state: Mutex::new(State {
                inv: Some(inv),
                tickets: HashMap::new(),
            }),
        }
    }
}

/// Runs `f` on the invoker with the GIL released.
fn with<R: Send>(
    py: Python<'_>,
    m: &Mutex<State>,
    f: impl FnOnce(&mut State) -> PyResult<R> + Send,
) -> PyResult<R> {
    py.allow_threads(|| {
        let mut g = m
            .lock()
            .map_err(|_| RfxError::new_err("the invoker's lock is poisoned"))?;
        f(&mut g)
    })
}

fn live(s: &mut State) -> PyResult<&mut rfx::client::Invoker> {
    s.inv
        .as_mut()
        .ok_or_else(|| RfxError::new_err("the invoker is closed"))
}

#[pymethods]
impl Invoker {
    /// Starts an invocation of `function` on `data` (a byte buffer, copied
    /// once into the executor's slot); returns its ticket number.
    fn submit(&self, py: Python<'_>, function: String, data: PyBuffer<u8>) -> PyResult<u16> {
        let input = buffer::slice(&data)?;
        with(py, &self.state, |s| {
            let t = live(s)?.submit(&function, input).map_err(errors::invoke)?;
            s.tickets.insert(t.id(), t);
            Ok(t.id())
        })
    }

    /// Waits for the result of ticket `id`.
    fn wait<'py>(&self, py: Python<'py>, id: u16) -> PyResult<Bound<'py, PyBytes>> {
        let out = with(py, &self.state, |s| {
            let t = s
                .tickets
                .remove(&id)
                .ok_or_else(|| RfxError::new_err(format!("no pending invocation {id}")))?;
            live(s)?.wait(t).map_err(errors::invoke)
        })?;
        Ok(PyBytes::new(py, &out))
    }

    /// The next result to arrive, of any ticket, waiting at most
    /// `timeout_s`: `(id, bytes, None)`, `(id, None, exception)` for a
    /// failed invocation, or `None` (nothing in time, or nothing pending).
    /// An exception raised here means the connection itself failed.
    #[allow(clippy::type_complexity)]
    fn wait_any<'py>(
        &self,
        py: Python<'py>,
        timeout_s: f64,
    ) -> PyResult<Option<(u16, Option<Bound<'py, PyBytes>>, Option<PyErr>)>> {
        let wait = Duration::from_secs_f64(timeout_s.clamp(0.0, 3600.0));
        let got = with(py, &self.state, |s| {
            let r = live(s)?.wait_any(wait).map_err(errors::invoke)?;
            if let Some((t, _)) = &r {
                s.tickets.remove(&t.id());
            }
            Ok(r)
        })?;
        Ok(got.map(|(t, r)| match r {
            Ok(out) => (t.id(), Some(PyBytes::new(py, &out)), None),
            Err(e) => (t.id(), None, Some(errors::invoke(e))),
        }))
    }

    /// Invokes `function` on `data` and waits for its result.
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        function: String,
        data: PyBuffer<u8>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let input = buffer::slice(&data)?;
        let out = with(py, &self.state, |s| {
            live(s)?.invoke(&function, input).map_err(errors::invoke)
        })?;
        Ok(PyBytes::new(py, &out))
    }

    /// Invokes `function` on `data` and writes the result into `out` (a
    /// writable byte buffer); returns its length.
    fn invoke_into(
        &self,
        py: Python<'_>,
        function: String,
        data: PyBuffer<u8>,
        mut out: PyBuffer<u8>,
    ) -> PyResult<usize> {
        buffer::disjoint(&data, &out)?;
        let input = buffer::slice(&data)?;
        let cap = out.len_bytes();
        let dst = buffer::slice_mut(&mut out)?;
        with(py, &self.state, |s| {
            let r = live(s)?.invoke(&function, input).map_err(errors::invoke)?;
            let d = dst.get_mut(..r.len()).ok_or_else(|| {
                errors::PayloadTooLarge::new_err(format!(
                    "a result of {} bytes for a buffer of {}",
                    r.len(),
                    cap
                ))
            })?;
            d.copy_from_slice(&r);
            Ok(r.len())
        })
    }

    /// Invocations submitted and not yet collected.
    #[getter]
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        with(py, &self.state, |s| {
            Ok(s.inv.as_ref().map_or(0, |i| i.pending()))
        })
    }

    /// Closes the connection (idempotent); pending results are dropped.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let inv = with(py, &self.state, |s| {
            s.tickets.clear();
            Ok(s.inv.take())
        })?;
        py.allow_threads(move || drop(inv));
        Ok(())
    }
}
