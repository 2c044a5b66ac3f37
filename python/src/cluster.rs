//! A whole deployment on this host ([`rfx::local::LocalCluster`]) and the
//! example function library, for demos, tests and a first try.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::errors::ClusterError;
use crate::tenant::Tenant;

/// A lease manager and executor managers on loopback, as child processes
/// of the `rfx` binary at `rfx_bin`; stopped by `close` (or when dropped).
#[pyclass(module = "rfx._native")]
pub(crate) struct LocalCluster {
    inner: Mutex<Option<rfx::local::LocalCluster>>,
    lease_manager: String,
}

fn cluster_err(e: impl std::error::Error) -> PyErr {
    ClusterError::new_err(rfx::fabric::error_chain(&e))
}

#[pymethods]
impl LocalCluster {
    #[new]
    #[pyo3(signature = (rfx_bin, executor_managers = 1, cores = None, sandbox = None, python_host = None))]
    fn new(
        py: Python<'_>,
        rfx_bin: PathBuf,
        executor_managers: usize,
        cores: Option<usize>,
        sandbox: Option<String>,
        python_host: Option<PathBuf>,
    ) -> PyResult<Self> {
        let cores = cores.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let sandbox = sandbox.unwrap_or_else(default_sandbox);
        let cluster = py
            .allow_threads(|| {
                let mut b = rfx::local::LocalCluster::builder(rfx_bin)
                    .executor_managers(executor_managers)
                    .cores(cores)
                    .executor_manager_args(["--sandbox".to_owned(), sandbox]);
                if let Some(host) = python_host {
                    b = b.env("RFX_PYTHON_HOST", host.to_string_lossy());
                }
                b.start()
            })
            .map_err(cluster_err)?;
        let lease_manager = cluster.lease_manager().to_string();
        Ok(LocalCluster {
            inner: Mutex::new(Some(cluster)),
            lease_manager,
        })
    }

    /// `host:port` of the lease manager.
    #[getter]
    fn lease_manager(&self) -> String {
        self.lease_manager.clone()
    }

    /// Adds a tenant; returns its secret token.
    fn add_tenant(&self, py: Python<'_>, name: String) -> PyResult<String> {
        let g = self
            .inner
            .lock()
            .map_err(|_| ClusterError::new_err("poisoned"))?;
        let c = g
            .as_ref()
            .ok_or_else(|| ClusterError::new_err("the cluster is closed"))?;
        py.allow_threads(|| c.add_tenant(&name))
            .map_err(cluster_err)
    }

    /// Adds a tenant and connects as it.
    fn tenant(&self, py: Python<'_>, name: String) -> PyResult<Tenant> {
        let token = self.add_tenant(py, name)?;
        Tenant::connect(py, self.lease_manager.clone(), token)
    }

    /// The end of every process's log (to explain a failure).
    fn logs(&self) -> String {
        match self.inner.lock() {
            Ok(g) => g.as_ref().map(|c| c.logs()).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Stops every process (idempotent).
    fn close(&self, py: Python<'_>) {
        let c = self.inner.lock().ok().and_then(|mut g| g.take());
        py.allow_threads(move || drop(c));
    }
}

/// The sandbox executor managers use by default: `strict` as root (the
/// only way it can run), `off` otherwise.
#[pyfunction]
pub(crate) fn default_sandbox() -> String {
    rfx::executors::sandbox::SandboxMode::default_for_this_process().to_string()
}

/// Builds the example functions (`examples/functions`: noop, echo,
/// sum_f64, crash, panics, ...) of the source tree this package was
/// built from, with cargo, and returns the library's path.
#[pyfunction]
pub(crate) fn example_library(py: Python<'_>) -> PyResult<PathBuf> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("examples-functions");
    py.allow_threads(|| rfx_examples::build(&target, true))
        .map_err(ClusterError::new_err)
}
