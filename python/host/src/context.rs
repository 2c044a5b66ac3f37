//! `ctx`: what a function of two arguments gets besides its input.

use pyo3::prelude::*;
use rfx_abi::RfxContext;

use crate::comm::ExecutorComm;

/// The invocation's context: `rank`, `size`, `invocation_id`, `out` (a
/// writable view of the result slot: write there and return the length to
/// skip the result's copy) and `comm` (the group's communicator in a group
/// invocation, else None). Valid during the call only.
#[pyclass(unsendable, module = "rfx_host", name = "Context")]
pub(crate) struct Context {
    /// This instance's rank in its group (0 alone).
    #[pyo3(get)]
    rank: u32,
    /// The group's size (1 alone).
    #[pyo3(get)]
    size: u32,
    /// The invocation's id.
    #[pyo3(get)]
    invocation_id: u64,
    out: Option<Py<PyAny>>,
    table: usize,
    comm: Option<(Py<ExecutorComm>, Py<PyAny>)>,
}

impl Context {
    pub(crate) fn new(raw: &RfxContext, out: Bound<'_, PyAny>) -> Context {
        Context {
            rank: raw.rank,
            size: raw.size,
            invocation_id: raw.invocation_id,
            out: Some(out.unbind()),
            table: raw.comm as usize,
            comm: None,
        }
    }

    /// Ends the context with its call: the output view is released and
    /// the communicator refuses further use.
    pub(crate) fn end(&mut self, py: Python<'_>) {
        if let Some(out) = self.out.take() {
            let _ = out.call_method0(py, "release");
        }
        if let Some((c, _)) = &self.comm {
            c.borrow_mut(py).end();
        }
        self.table = 0;
    }
}

#[pymethods]
impl Context {
    /// A writable view of the result slot.
    #[getter]
    fn out(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.out
            .as_ref()
            .map(|o| o.clone_ref(py))
            .ok_or_else(|| gone("ctx.out"))
    }

    /// The group's communicator (`rfx.collectives.Communicator`), or None
    /// outside a group invocation.
    #[getter]
    fn comm(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if let Some((_, c)) = &self.comm {
            return Ok(Some(c.clone_ref(py)));
        }
        if self.table == 0 {
            return if self.out.is_some() {
                Ok(None)
            } else {
                Err(gone("ctx.comm"))
            };
        }
        let native = Py::new(py, ExecutorComm::new(self.table, self.rank, self.size))?;
        // mpi4py's names, as for a program's communicator, when the rfx
        // package is importable; the bare table's methods otherwise.
        let wrapped = match py.import("rfx.collectives") {
            Ok(m) => m
                .getattr("Communicator")?
                .call1((native.clone_ref(py),))?
                .unbind(),
            Err(_) => native.clone_ref(py).into_any(),
        };
        self.comm = Some((native, wrapped.clone_ref(py)));
        Ok(Some(wrapped))
    }

    fn __repr__(&self) -> String {
        format!(
            "Context(rank={}, size={}, invocation_id={})",
            self.rank, self.size, self.invocation_id
        )
    }
}

fn gone(what: &str) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(format!(
        "{what} is used after its invocation returned"
    ))
}
