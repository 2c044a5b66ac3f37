//! The tenant's side: a connection to the lease manager, and leases.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use rfx::client::InvokerConfig;
use rfx::executors::session::LibrarySource;
use rfx::fabric::{Config, Fabric, PollMode};
use rfx::leases::proto::{LeaseId, LeaseRequest};

use crate::errors::{self, RfxError};
use crate::invoke::Invoker;

/// A tenant connected to a lease manager with its token.
#[pyclass(module = "rfx._native")]
pub(crate) struct Tenant {
    inner: rfx::tenant::Tenant,
}

fn request(
    cores: u32,
    duration_s: f64,
    memory_mib: Option<u64>,
    hot_timeout_ms: Option<i64>,
) -> PyResult<LeaseRequest> {
    if !(duration_s.is_finite() && duration_s > 0.0) {
        return Err(RfxError::new_err(format!(
            "a lease of {duration_s} s: the duration must be positive"
        )));
    }
    let mut req = LeaseRequest::new(cores, (duration_s * 1000.0).ceil() as u64);
    if let Some(m) = memory_mib {
        req = req.with_memory(m);
    }
    if let Some(h) = hot_timeout_ms {
        req = req.with_hot_timeout(h);
    }
    Ok(req)
}

/// A wait in seconds, checked.
fn wait(wait_s: Option<f64>) -> PyResult<Option<Duration>> {
    wait_s
        .map(|w| {
            Duration::try_from_secs_f64(w)
                .map_err(|_| RfxError::new_err(format!("a wait of {w} s: not a duration")))
        })
        .transpose()
}

fn usage_json(u: &rfx::leases::proto::Usage) -> String {
    serde_json::to_string(u).unwrap_or_else(|_| "{}".into())
}

/// Where the functions come from: a native library shipped (or named on
/// the executor's host), or a Python module.
pub(crate) fn source(
    library: &str,
    ship: bool,
    python: bool,
    module: Option<&str>,
) -> PyResult<LibrarySource> {
    if python {
        return rfx::executors::python::ship(library, module)
            .map_err(|e| RfxError::new_err(format!("shipping the Python module {library}: {e}")));
    }
    if !ship {
        return Ok(LibrarySource::Path(library.to_owned()));
    }
    let bytes = std::fs::read(library)
        .map_err(|e| RfxError::new_err(format!("reading the library {library}: {e}")))?;
    Ok(LibrarySource::Bytes {
        name: library.to_owned(),
        bytes,
    })
}

/// This process's fabric, configured from the environment.
pub(crate) fn fabric() -> PyResult<Fabric> {
    Fabric::open(Config::from_env().map_err(|e| errors::tenant(e.into()))?)
        .map_err(|e| errors::tenant(e.into()))
}

impl Tenant {
    pub(crate) fn connect(
        py: Python<'_>,
        lease_manager: String,
        token: String,
    ) -> PyResult<Tenant> {
        let inner = py
            .allow_threads(|| rfx::tenant::Tenant::connect(&lease_manager, &token))
            .map_err(errors::tenant)?;
        Ok(Tenant { inner })
    }
}

#[pymethods]
impl Tenant {
    #[new]
    fn new(py: Python<'_>, lease_manager: String, token: String) -> PyResult<Tenant> {
        Tenant::connect(py, lease_manager, token)
    }

    /// Leases `cores` cores for `duration_s` seconds and waits until the
    /// lease's executor listens; with `wait_s`, waits up to that long for
    /// capacity (queued in the lease manager) instead of being refused.
    #[pyo3(signature = (cores = 1, duration_s = 600.0, memory_mib = None, hot_timeout_ms = None, wait_s = None))]
    fn lease(
        &self,
        py: Python<'_>,
        cores: u32,
        duration_s: f64,
        memory_mib: Option<u64>,
        hot_timeout_ms: Option<i64>,
        wait_s: Option<f64>,
    ) -> PyResult<Lease> {
        let req = request(cores, duration_s, memory_mib, hot_timeout_ms)?;
        let wait = wait(wait_s)?;
        let t = self.inner.clone();
        let l = py
            .allow_threads(move || match wait {
                Some(w) => t.lease_wait(&req, w),
                None => t.lease(&req),
            })
            .map_err(errors::tenant)?;
        Ok(Lease::new(l))
    }

    /// Leases `n` slots at once, one lease per instance, all or nothing
    /// (with `wait_s`: queued as one request, up to that long).
    #[pyo3(signature = (n, cores = 1, duration_s = 600.0, memory_mib = None, hot_timeout_ms = None, wait_s = None))]
    #[allow(clippy::too_many_arguments)]
    fn lease_group(
        &self,
        py: Python<'_>,
        n: usize,
        cores: u32,
        duration_s: f64,
        memory_mib: Option<u64>,
        hot_timeout_ms: Option<i64>,
        wait_s: Option<f64>,
    ) -> PyResult<Vec<Lease>> {
        let req = request(cores, duration_s, memory_mib, hot_timeout_ms)?;
        let wait = wait(wait_s)?;
        let t = self.inner.clone();
        let g = py
            .allow_threads(move || match wait {
                Some(w) => t.lease_group_wait(n, &req, w),
                None => t.lease_group(n, &req),
            })
            .map_err(errors::tenant)?;
        Ok(g.into_leases().into_iter().map(Lease::new).collect())
    }

    /// The ids of this tenant's leases, as the lease manager lists them:
    /// the active ones, or with `ended` those that ended too.
    #[pyo3(signature = (ended = false))]
    fn leases(&self, py: Python<'_>, ended: bool) -> PyResult<Vec<u64>> {
        let t = self.inner.clone();
        let list = py
            .allow_threads(move || t.client().list())
            .map_err(|e| errors::tenant(e.into()))?;
        Ok(list
            .iter()
            .filter(|i| ended || i.lease.is_active())
            .map(|i| i.lease.id.0)
            .collect())
    }

    /// The usage of lease `id` as JSON (core-ms, invocations, bytes...).
    fn usage_json(&self, py: Python<'_>, id: u64) -> PyResult<String> {
        let t = self.inner.clone();
        let u = py
            .allow_threads(move || t.client().usage(LeaseId(id)))
            .map_err(|e| errors::tenant(e.into()))?;
        Ok(usage_json(&u))
    }
}

/// A granted lease: where its executor listens, its cores; `invoker`
/// connects to the executor, `release` ends it.
#[pyclass(module = "rfx._native")]
pub(crate) struct Lease {
    inner: Mutex<Option<rfx::tenant::Lease>>,
    id: u64,
    cores: Vec<u32>,
}

impl Lease {
    fn new(l: rfx::tenant::Lease) -> Lease {
        Lease {
            id: l.info().lease.id.0,
            cores: l.info().lease.core_ids.clone(),
            inner: Mutex::new(Some(l)),
        }
    }

    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&rfx::tenant::Lease) -> PyResult<R>,
    ) -> PyResult<R> {
        let g = self
            .inner
            .lock()
            .map_err(|_| RfxError::new_err("the lease's lock is poisoned"))?;
        match g.as_ref() {
            Some(l) => f(l),
            None => Err(RfxError::new_err(format!("lease {} was released", self.id))),
        }
    }
}

#[pymethods]
impl Lease {
    /// The lease's id.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The host's cores the lease holds.
    #[getter]
    fn cores(&self) -> Vec<u32> {
        self.cores.clone()
    }

    /// `host:port` of the lease's executor.
    #[getter]
    fn executor(&self) -> PyResult<String> {
        self.with(|l| Ok(l.executor().to_string()))
    }

    /// Connects to the executor, ships `library` (a path to a shared
    /// library of rfx functions: its bytes go with the set-up, as rFaaS
    /// ships code; with `ship=False` the executor loads that path on its
    /// own host) and resolves `functions`.
    /// With `python=True`, `library` is a Python module instead: a `.py`
    /// file, or a directory shipped whole with `module` the one imported.
    #[pyo3(signature = (library, functions, depth = 32, timeout_s = 30.0, hot = true, ship = true, python = false, module = None))]
    #[allow(clippy::too_many_arguments)]
    fn invoker(
        &self,
        py: Python<'_>,
        library: String,
        functions: Vec<String>,
        depth: usize,
        timeout_s: f64,
        hot: bool,
        ship: bool,
        python: bool,
        module: Option<String>,
    ) -> PyResult<Invoker> {
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(RfxError::new_err("the timeout must be positive"));
        }
        let cfg = InvokerConfig {
            depth: depth.max(1),
            timeout: Duration::from_secs_f64(timeout_s),
            mode: if hot { PollMode::Hot } else { PollMode::Warm },
            ..InvokerConfig::default()
        };
        self.with(|l| {
            let inv = py.allow_threads(|| {
                let source = source(&library, ship, python, module.as_deref())?;
                let fabric = fabric()?;
                let names: Vec<&str> = functions.iter().map(String::as_str).collect();
                l.invoker(&fabric, source, &names, cfg)
                    .map_err(errors::tenant)
            })?;
            Ok(Invoker::new(inv))
        })
    }

    /// What the lease used so far, as JSON.
    fn usage_json(&self, py: Python<'_>) -> PyResult<String> {
        self.with(|l| {
            let u = py.allow_threads(|| l.usage()).map_err(errors::tenant)?;
            Ok(usage_json(&u))
        })
    }

    /// Ends the lease (idempotent); its usage as JSON the first time.
    fn release(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let l = self
            .inner
            .lock()
            .map_err(|_| RfxError::new_err("the lease's lock is poisoned"))?
            .take();
        match l {
            None => Ok(None),
            Some(l) => {
                let u = py
                    .allow_threads(move || l.release())
                    .map_err(errors::tenant)?;
                Ok(Some(usage_json(&u)))
            }
        }
    }
}
