//! MPI inside functions: a function library built against the MPI standard
//! ABI (it needs `libmpi_abi.so.1`) runs on rfx's MPI library, and in a
//! group invocation `MPI_COMM_WORLD` is the group.
//!
//! The executor loads rfx's `libmpi_abi.so` before such a library, so that
//! the loader satisfies the library's dependency with it (matched by its
//! soname) rather than another implementation's that the library's run
//! path may name. Around each group call it attaches the group's
//! communicator table (`rfx_mpi_attach`) and detaches it after
//! (`rfx_mpi_detach`). The executor manager shows the library read-only
//! inside the sandbox.

use std::path::PathBuf;

/// rfx's MPI library: `RFX_MPI_LIB`, else `libmpi_abi.so` next to the
/// running `rfx` (where cargo builds both). `None` if neither exists.
pub fn library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RFX_MPI_LIB") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libmpi_abi.so");
    lib.is_file().then_some(lib)
}

#[cfg(feature = "executor")]
pub(crate) use runtime::{needs_mpi, Runtime};

#[cfg(feature = "executor")]
mod runtime {
    use std::ffi::c_int;
    use std::sync::OnceLock;

    use libloading::os::unix::{Library as DlLibrary, Symbol, RTLD_LOCAL, RTLD_NOW};
    use rfx_abi::comm::RfxComm;

    use crate::error::ExecError;

    /// The soname a library built against the standard ABI depends on.
    const SONAME: &[u8] = b"libmpi_abi.so.1\0";

    type AttachFn = unsafe extern "C" fn(*const RfxComm) -> c_int;
    type DetachFn = unsafe extern "C" fn() -> c_int;

    /// True if the ELF image names `libmpi_abi.so.1` (its dynamic string
    /// table holds the names of its dependencies).
    pub(crate) fn needs_mpi(image: &[u8]) -> bool {
        image.windows(SONAME.len()).any(|w| w == SONAME)
    }

    /// rfx's MPI library, loaded once per executor.
    #[derive(Debug)]
    pub(crate) struct Runtime {
        _lib: DlLibrary,
        attach: Symbol<AttachFn>,
        detach: Symbol<DetachFn>,
    }

    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

    impl Runtime {
        /// Loads rfx's MPI library (once), before a library that needs it.
        pub(crate) fn get(library: &str) -> Result<&'static Runtime, ExecError> {
            RUNTIME
                .get_or_init(Runtime::load)
                .as_ref()
                .map_err(|reason| ExecError::Load {
                    library: library.to_owned(),
                    reason: format!("it needs libmpi_abi.so.1: {reason}"),
                })
        }

        fn load() -> Result<Runtime, String> {
            let path = super::library().ok_or_else(|| {
                "rfx's MPI library is neither in RFX_MPI_LIB nor next to rfx (cargo build -p rfx-mpi)"
                    .to_string()
            })?;
            // SAFETY: rfx's own MPI library: its initialisers are Rust's
            // (no tenant code); RTLD_NOW binds everything now.
            let lib = unsafe { DlLibrary::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // SAFETY: the symbols rfx-mpi exports with these signatures
            // (mpi/src/group.rs).
            let (attach, detach) = unsafe {
                (
                    lib.get::<AttachFn>(b"rfx_mpi_attach\0"),
                    lib.get::<DetachFn>(b"rfx_mpi_detach\0"),
                )
            };
            let bad = |e: libloading::Error| format!("{}: {e} (not rfx's)", path.display());
            tracing::debug!(library = %path.display(), "loaded rfx's MPI library");
            Ok(Runtime {
                attach: attach.map_err(bad)?,
                detach: detach.map_err(bad)?,
                _lib: lib,
            })
        }

        /// Runs `f` with `table` as `MPI_COMM_WORLD`.
        pub(crate) fn with_group<R>(&self, table: *const RfxComm, f: impl FnOnce() -> R) -> R {
            // SAFETY: `table` is the executor's communicator table, valid
            // for the whole call (CallContext's contract).
            let rc = unsafe { (self.attach)(table) };
            if rc != 0 {
                tracing::warn!(rc, "rfx_mpi_attach failed: MPI calls of this function fail");
            }
            let r = f();
            // SAFETY: takes no arguments; ends what attach began.
            unsafe { (self.detach)() };
            r
        }
    }
}
