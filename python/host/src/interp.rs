//! Starting the one interpreter of the process.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use pyo3::ffi;

/// The interpreter this host was built for (see build.rs).
const PYTHON: &str = concat!(env!("RFX_PYHOST_PYTHON"), "\0");

static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts the interpreter, once; later calls return the first outcome.
pub(crate) fn start() -> Result<(), String> {
    STARTED.get_or_init(start_once).clone()
}

fn start_once() -> Result<(), String> {
    // SAFETY: the calls CPython documents for embedding ("Python
    // Initialization Configuration"), in their order, on a config this
    // function owns; `PYTHON` is NUL-terminated; the config is cleared on
    // every path after initialisation read it. OnceLock runs this once.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitIsolatedConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // Signals belong to the executor (SIGTERM ends it), not to Python.
        config.install_signal_handlers = 0;
        config.site_import = 1;
        // As that interpreter finds its prefix and its venv (pyvenv.cfg).
        let status = ffi::PyConfig_SetBytesString(
            &mut config,
            &mut config.program_name,
            PYTHON.as_ptr().cast(),
        );
        let status = if ffi::PyStatus_Exception(status) != 0 {
            status
        } else {
            ffi::Py_InitializeFromConfig(&config)
        };
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let why = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "starting Python ({}): {why}",
                PYTHON.trim_end_matches('\0')
            ));
        }
        // Initialisation leaves this thread holding the GIL: let go, so
        // that every worker thread takes it per call.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}
