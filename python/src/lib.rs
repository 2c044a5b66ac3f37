//! `rfx._native`: the Rust half of the `rfx` Python package. The Python
//! half (`python/rfx/`) builds the user-facing API on it: futures over
//! invocations, context managers, mpi4py-style names.
//!
//! Every call that can wait (leasing, invoking, a collective) releases
//! the GIL while it waits; every rfx error becomes an exception of the
//! hierarchy under [`RfxError`], carrying rfx's reason.

use pyo3::prelude::*;

mod buffer;
mod cluster;
mod comm;
mod errors;
mod group;
mod invoke;
mod tenant;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<cluster::LocalCluster>()?;
    m.add_class::<tenant::Tenant>()?;
    m.add_class::<tenant::Lease>()?;
    m.add_class::<invoke::Invoker>()?;
    m.add_class::<group::Group>()?;
    m.add_class::<comm::Communicator>()?;
    m.add_function(wrap_pyfunction!(comm::set_in_place, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::example_library, m)?)?;
    m.add_function(wrap_pyfunction!(cluster::default_sandbox, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The source tree this module was built from (where `find_rfx` and
    // `example_library` build with cargo when nothing else is found).
    m.add(
        "SOURCE_DIR",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    )?;
    Ok(())
}
