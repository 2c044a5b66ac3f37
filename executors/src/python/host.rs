//! The executor's side of the Python host: loading `librfx_pyhost.so`,
//! staging a shipped module's files, and the calls into the host (this
//! concern's unsafe code, in one place).

use std::ffi::{c_char, CStr, CString};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use libloading::os::unix::{Library as DlLibrary, RTLD_GLOBAL, RTLD_LAZY, RTLD_LOCAL, RTLD_NOW};
use rfx_abi::RfxContext;

use crate::session::ShippedFile;

/// The version of the host's entry points this executor speaks
/// (`HOST_ABI` in python/host).
const HOST_ABI: u32 = 1;

/// Room for a reason from the host.
const REASON_CAP: usize = 2048;

type AbiFn = unsafe extern "C" fn() -> u32;
type DirsFn = unsafe extern "C" fn() -> *const c_char;
type LoadFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut u8, u32) -> i64;
type ResolveFn = unsafe extern "C" fn(i64, *const c_char, *mut u8, u32) -> i64;
type CallFn = unsafe extern "C" fn(i64, *const RfxContext, *const u8, u32, *mut u8) -> u32;
type UnloadFn = unsafe extern "C" fn(i64);

/// The loaded host, for the executor's life.
pub(crate) struct PyHost {
    _lib: DlLibrary,
    load: LoadFn,
    resolve: ResolveFn,
    call: CallFn,
    unload: UnloadFn,
}

impl std::fmt::Debug for PyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PyHost")
    }
}

static HOST: OnceLock<Result<PyHost, String>> = OnceLock::new();

impl PyHost {
    /// The host, loaded on first use.
    pub(crate) fn get() -> Result<&'static PyHost, String> {
        HOST.get_or_init(PyHost::open)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn open() -> Result<PyHost, String> {
        let path = super::host_path().ok_or_else(|| {
            "this executor has no Python host: librfx_pyhost.so is neither in RFX_PYTHON_HOST nor next to rfx (see docs/python.md)".to_string()
        })?;
        // RTLD_GLOBAL: C extension modules (numpy...) do not link
        // libpython; they find its symbols in the global scope, where this
        // puts the host's libpython. The host is the operator's code.
        // SAFETY: the operator's host library; its initialisers are
        // Rust's and libpython's, which start nothing.
        let lib = unsafe { DlLibrary::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |e: libloading::Error| format!("{}: {e} (not rfx's Python host)", path.display());
        // SAFETY: the symbols python/host exports with these signatures
        // (its ffi.rs); function pointers copied out stay valid while
        // `lib` is loaded, which is for the process's life (a static).
        unsafe {
            let abi = *lib.get::<AbiFn>(b"rfx_pyhost_abi\0").map_err(bad)?;
            let v = abi();
            if v != HOST_ABI {
                return Err(format!(
                    "{}: host ABI {v}, this executor speaks {HOST_ABI}",
                    path.display()
                ));
            }
            Ok(PyHost {
                load: *lib.get::<LoadFn>(b"rfx_pyhost_load\0").map_err(bad)?,
                resolve: *lib.get::<ResolveFn>(b"rfx_pyhost_resolve\0").map_err(bad)?,
                call: *lib.get::<CallFn>(b"rfx_pyhost_call\0").map_err(bad)?,
                unload: *lib.get::<UnloadFn>(b"rfx_pyhost_unload\0").map_err(bad)?,
                _lib: lib,
            })
        }
    }

    /// Imports `module` from `dir`; its handle.
    pub(crate) fn load(&self, dir: &Path, module: &str) -> Result<i64, String> {
        let dir = c_string(dir.to_str().ok_or("a staging path that is not UTF-8")?)?;
        let module = c_string(module)?;
        let mut why = vec![0u8; REASON_CAP];
        // SAFETY: NUL-terminated strings and a reason buffer of its
        // length, alive for the call (the host's contract).
        let h = unsafe {
            (self.load)(
                dir.as_ptr(),
                module.as_ptr(),
                why.as_mut_ptr(),
                REASON_CAP as u32,
            )
        };
        handle(h, &why)
    }

    /// Resolves `name` in a loaded module; its handle.
    pub(crate) fn resolve(&self, module: i64, name: &str) -> Result<i64, String> {
        let name = c_string(name)?;
        let mut why = vec![0u8; REASON_CAP];
        // SAFETY: as in `load`.
        let h =
            unsafe { (self.resolve)(module, name.as_ptr(), why.as_mut_ptr(), REASON_CAP as u32) };
        handle(h, &why)
    }

    /// Calls function `f` (the extended ABI's contract): an output length
    /// or a status code, as a native function returns.
    pub(crate) fn call(&self, f: i64, ctx: &RfxContext, input: &[u8], output: &mut [u8]) -> u32 {
        debug_assert!(ctx.out_capacity as usize <= output.len());
        // SAFETY: `ctx` lives for the call and says an output capacity of
        // at most `output.len()`; `input` and `output` are distinct borrows
        // valid for their lengths. The host keeps no pointer past the call.
        unsafe {
            (self.call)(
                f,
                ctx,
                input.as_ptr(),
                input.len() as u32,
                output.as_mut_ptr(),
            )
        }
    }

    /// Forgets a module and its functions.
    pub(crate) fn unload(&self, module: i64) {
        // SAFETY: takes a handle only.
        unsafe { (self.unload)(module) }
    }
}

fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL"))
}

fn handle(h: i64, why: &[u8]) -> Result<i64, String> {
    if h >= 0 {
        Ok(h)
    } else {
        Err(rfx_abi::status::read_reason(why))
    }
}

/// The directories the host's Python environment reads, from the host
/// (opened lazily and closed again; nothing of Python starts).
pub(crate) fn dirs() -> Vec<PathBuf> {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let Some(path) = super::host_path() else {
            return Vec::new();
        };
        // SAFETY: the operator's host library (see `PyHost::open`); only
        // a function returning a static string is called, and it is
        // copied before the library closes.
        let text = unsafe {
            let Ok(lib) = DlLibrary::open(Some(&path), RTLD_LAZY | RTLD_LOCAL) else {
                return Vec::new();
            };
            let text = lib
                .get::<DirsFn>(b"rfx_pyhost_dirs\0")
                .ok()
                .map(|f| f())
                .filter(|p| !p.is_null())
                .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned());
            let _ = lib.close();
            text.unwrap_or_default()
        };
        let mut all: Vec<PathBuf> = text
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        all.extend(path.canonicalize().ok());
        outermost(all)
    })
    .clone()
}

/// `paths` without those beneath another of them.
pub(crate) fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort_by_key(|p| p.as_os_str().len());
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    kept
}

/// A shipped module's files, written to a fresh private directory and
/// removed with it.
#[derive(Debug)]
pub(crate) struct Staged {
    dir: PathBuf,
}

impl Staged {
    /// Writes `files` (already [`check`](super::check)ed) beneath a new
    /// directory of the temporary directory (the sandbox's own `/tmp`).
    pub(crate) fn write(files: &[ShippedFile]) -> std::io::Result<Staged> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rfx-py-{}-{n}", std::process::id()));
        // Not recursive: fails if the name exists, so nobody else's
        // directory (or link) is ever written into.
        DirBuilder::new().mode(0o700).create(&dir)?;
        let staged = Staged { dir };
        for f in files {
            let path = staged.dir.join(&f.path);
            if let Some(parent) = path.parent() {
                DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(parent)?;
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?
                .write_all(&f.bytes)?;
        }
        Ok(staged)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_directories_are_bound() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            outermost(vec![p("/a/b/c"), p("/a/b"), p("/x"), p("/a/bc"), p("/a/b")]),
            [p("/x"), p("/a/b"), p("/a/bc")]
        );
    }

    #[test]
    fn staged_files_land_beneath_a_private_directory_that_goes_with_them() {
        use std::os::unix::fs::PermissionsExt;
        let files = vec![
            ShippedFile {
                path: "m.py".into(),
                bytes: b"x = 1\n".to_vec(),
            },
            ShippedFile {
                path: "pkg/sub/a.py".into(),
                bytes: b"y = 2\n".to_vec(),
            },
        ];
        let staged = Staged::write(&files).unwrap();
        let dir = staged.dir().to_path_buf();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read(dir.join("pkg/sub/a.py")).unwrap(), b"y = 2\n");
        drop(staged);
        assert!(!dir.exists());
    }
}
