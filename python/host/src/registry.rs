//! The modules loaded and the functions resolved, by handle.
//!
//! Handles are indices, never reused; a module's unload forgets its
//! functions, so a stale handle is an error, not a call into freed state.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::interp;

struct Module {
    dir: String,
    obj: Py<PyAny>,
}

/// A resolved function.
pub(crate) struct Function {
    /// The callable.
    pub(crate) f: Py<PyAny>,
    /// Whether it takes the context as a second argument.
    pub(crate) wants_ctx: bool,
    module: usize,
}

static MODULES: Mutex<Vec<Option<Module>>> = Mutex::new(Vec::new());
static FUNCTIONS: Mutex<Vec<Option<Function>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The text a client gets for an exception: its traceback's last line.
pub(crate) fn reason(py: Python<'_>, e: &PyErr) -> String {
    let line = (|| -> PyResult<String> {
        let lines = py
            .import("traceback")?
            .call_method1("format_exception_only", (e.value(py),))?;
        let lines = lines.downcast::<PyList>()?;
        lines
            .get_item(lines.len().saturating_sub(1))?
            .extract::<String>()
    })();
    line.map(|l| l.trim().to_string())
        .unwrap_or_else(|_| e.to_string())
}

/// Imports module `name` from the staged directory `dir`.
pub(crate) fn load(dir: &str, name: &str) -> Result<usize, String> {
    interp::start()?;
    let import_result = Python::with_gil(|py| {
        let import = || -> PyResult<Py<PyAny>> {
            let sys = py.import("sys")?;
            // A module of this name from an earlier session must not be
            // served from the cache.
            forget(py, |n, _| n == name || n.starts_with(&format!("{name}.")))?;
            sys.getattr("path")?.downcast::<PyList>()?.insert(0, dir)?;
            py.import("importlib")?.call_method0("invalidate_caches")?;
            Ok(py
                .import("importlib")?
                .call_method1("import_module", (name,))?
                .unbind())
        };
        import().map_err(|e| format!("importing {name}: {}", reason(py, &e)))
    })?;
    let mut modules = lock(&MODULES);
    modules.push(Some(Module {
        dir: dir.to_owned(),
        obj: import_result,
    }));
    Ok(modules.len() - 1)
}

/// Drops the modules `drop(name, file)` selects from `sys.modules`.
fn forget(py: Python<'_>, drop: impl Fn(&str, &str) -> bool) -> PyResult<()> {
    let modules = py.import("sys")?.getattr("modules")?;
    let modules = modules.downcast::<PyDict>()?;
    let mut gone = Vec::new();
    for (k, v) in modules.iter() {
        let name: String = k.extract().unwrap_or_default();
        let file: String = v
            .getattr("__file__")
            .ok()
            .and_then(|f| f.extract().ok())
            .unwrap_or_default();
        if drop(&name, &file) {
            gone.push(k);
        }
    }
    for k in gone {
        modules.del_item(k)?;
    }
    Ok(())
}

/// Resolves `function` of module `module`.
pub(crate) fn resolve(module: usize, function: &str) -> Result<usize, String> {
    let (f, wants_ctx) = Python::with_gil(|py| {
        let m = lock(&MODULES)
            .get(module)
            .and_then(Option::as_ref)
            .map(|m| m.obj.clone_ref(py))
            .ok_or_else(|| format!("no module {module}"))?;
        let found = || -> PyResult<(Py<PyAny>, bool)> {
            let m = m.bind(py);
            let f = m.getattr(function)?;
            if !f.is_callable() {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{function} is not callable"
                )));
            }
            Ok((f.clone().unbind(), positional(py, &f)? >= 2))
        };
        found().map_err(|e| reason(py, &e))
    })?;
    let mut functions = lock(&FUNCTIONS);
    functions.push(Some(Function {
        f,
        wants_ctx,
        module,
    }));
    Ok(functions.len() - 1)
}

/// How many positional arguments `f` accepts (2 means `(inp, ctx)`).
fn positional(py: Python<'_>, f: &Bound<'_, PyAny>) -> PyResult<usize> {
    let sig = match py.import("inspect")?.call_method1("signature", (f,)) {
        Ok(sig) => sig,
        // Some builtins have no signature: call them with the input only.
        Err(_) => return Ok(1),
    };
    let params = sig.getattr("parameters")?.call_method0("values")?;
    let mut n = 0;
    for p in params.try_iter()? {
        let kind: String = p?.getattr("kind")?.getattr("name")?.extract()?;
        match kind.as_str() {
            "POSITIONAL_ONLY" | "POSITIONAL_OR_KEYWORD" => n += 1,
            "VAR_POSITIONAL" => return Ok(2),
            _ => {}
        }
    }
    Ok(n)
}

/// The function behind a handle, for one call.
pub(crate) fn function(py: Python<'_>, handle: usize) -> Option<(Py<PyAny>, bool)> {
    lock(&FUNCTIONS)
        .get(handle)
        .and_then(Option::as_ref)
        .map(|f| (f.f.clone_ref(py), f.wants_ctx))
}

/// Forgets a module: its functions, its `sys.path` entry, its modules.
pub(crate) fn unload(module: usize) {
    let Some(m) = lock(&MODULES).get_mut(module).and_then(Option::take) else {
        return;
    };
    let dead: Vec<Function> = lock(&FUNCTIONS)
        .iter_mut()
        .filter(|f| f.as_ref().is_some_and(|f| f.module == module))
        .filter_map(Option::take)
        .collect();
    if interp::start().is_err() {
        return;
    }
    Python::with_gil(|py| {
        drop(dead);
        drop(m.obj);
        let under = format!("{}/", m.dir);
        let _ = forget(py, |_, file| file.starts_with(&under));
        if let Ok(path) = py.import("sys").and_then(|s| s.getattr("path")) {
            if let Ok(path) = path.downcast::<PyList>() {
                let _ = path.call_method1("remove", (m.dir.as_str(),));
            }
        }
    });
}
