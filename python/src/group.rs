//! Group invocations: one function on several leases at once, instance `r`
//! rank `r` of a communicator of them all (`ctx.comm` in a Python
//! function, the `rfx_comm` table in a native one).

use std::sync::Mutex;
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rfx::client::InvokerConfig;
use rfx::executors::group::Member;
use rfx::fabric::PollMode;

use crate::buffer;
use crate::errors::{self, RfxError};
use crate::tenant::{fabric, source, Lease};

/// The executors of several leases, connected as one group.
#[pyclass(module = "rfx._native")]
pub(crate) struct Group {
    inner: Mutex<Option<rfx::executors::group::Group>>,
    size: usize,
}

#[pymethods]
impl Group {
    /// Connects to every lease's executor and wires their communicator;
    /// `library`, `ship`, `python` and `module` as for `Lease.invoker`.
    #[new]
    #[pyo3(signature = (leases, library, functions, timeout_s = 30.0, hot = true, ship = true, python = false, module = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        leases: Vec<PyRef<'_, Lease>>,
        library: String,
        functions: Vec<String>,
        timeout_s: f64,
        hot: bool,
        ship: bool,
        python: bool,
        module: Option<String>,
    ) -> PyResult<Group> {
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(RfxError::new_err("the timeout must be positive"));
        }
        if leases.is_empty() {
            return Err(RfxError::new_err("a group of no leases"));
        }
        let members = leases
            .iter()
            .map(|l| {
                l.with(|l| {
                    Ok(Member {
                        addr: l.executor(),
                        token: l.info().token.to_hex().into_bytes(),
                    })
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let cfg = InvokerConfig {
            timeout: Duration::from_secs_f64(timeout_s),
            mode: if hot { PollMode::Hot } else { PollMode::Warm },
            ..InvokerConfig::default()
        };
        let size = members.len();
        let g = py.allow_threads(|| {
            let lib = source(&library, ship, python, module.as_deref())?;
            let names: Vec<&str> = functions.iter().map(String::as_str).collect();
            rfx::executors::group::Group::connect(&fabric()?, &members, lib, &names, cfg)
                .map_err(errors::invoke)
        })?;
        Ok(Group {
            inner: Mutex::new(Some(g)),
            size,
        })
    }

    /// Members in the group.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Runs `function` on every member at once, member `r` on
    /// `inputs[r]` (byte buffers); the outputs by rank.
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        function: String,
        inputs: Vec<PyBuffer<u8>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let slices = inputs
            .iter()
            .map(buffer::slice)
            .collect::<PyResult<Vec<&[u8]>>>()?;
        let outs = py.allow_threads(|| {
            let mut g = self
                .inner
                .lock()
                .map_err(|_| RfxError::new_err("the group's lock is poisoned"))?;
            let g = g
                .as_mut()
                .ok_or_else(|| RfxError::new_err("the group is closed"))?;
            g.invoke(&function, &slices).map_err(errors::invoke)
        })?;
        Ok(outs.iter().map(|o| PyBytes::new(py, o)).collect())
    }

    /// Disconnects from every member (idempotent).
    fn close(&self, py: Python<'_>) {
        let g = self.inner.lock().ok().and_then(|mut g| g.take());
        py.allow_threads(move || drop(g));
    }
}
