//! The executor's side of the function ABI: loading tenant libraries ([`Library`]), resolving
//! and calling their functions ([`Function`]), and serving a group's communicator table. (The
//! function's side, with the [`export!`](crate::export) macro, is the crate `rfx-abi`.)
//!
//! This file holds the crate's `unsafe` for native libraries (the Python host's is in
//! `python/host.rs`, MPI's in `mpi.rs`). Everything unsafe here rests on one trust
//! decision made by the design, not by this code: the executor runs the tenant's code in a
//! process of its own (one per lease), so loading a library (which runs its initialisers) and
//! calling a function (which runs arbitrary code on our buffers) are exposed as safe
//! operations. A function that breaks the ABI contract (writes past `out`, keeps pointers,
//! crashes) can corrupt or kill that process only; the executor manager reaps it and reports
//! it. What *can* be checked is checked: the ELF header before `dlopen`, symbol names, the ABI
//! marker, and every returned length against the output capacity.

use std::collections::HashMap;
use std::ffi::{c_void, CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use libloading::os::unix::{Library as DlLibrary, RTLD_LOCAL, RTLD_NOW};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

use rfx_abi::{RfxContext, ABI_VERSION};

use crate::context::{Abi, CallContext};
use crate::device::{DeviceChoice, DeviceSlot, DEVICE_MARKER_PREFIX};
use crate::elf::{self, HeaderProblem};
use crate::error::{CallError, ExecError};
use crate::mpi::{needs_mpi, Runtime};
use crate::python::{
    self,
    host::{PyHost, Staged},
};
use crate::session::ShippedFile;
use rfx_abi::status::{self, MAX_OUTPUT_CAPACITY, RESERVED_MIN};

/// rFaaS: `uint32_t f(void *in, uint32_t size, void *out)`.
type RfaasFn = unsafe extern "C" fn(*mut c_void, u32, *mut c_void) -> u32;

/// Extended: `uint32_t f(const rfx_context *ctx, const void *in, uint32_t size, void *out)`.
type ExtendedFn = unsafe extern "C" fn(*const RfxContext, *const c_void, u32, *mut c_void) -> u32;

/// Prefix of the ABI marker symbol: `rfx_abi_<name>` marks `<name>` as extended.
pub const MARKER_PREFIX: &str = "rfx_abi_";

/// Longest function name accepted by [`Library::function`].
pub const MAX_NAME_LEN: usize = 200;
const _: () = assert!(
    MAX_NAME_LEN == 200,
    "update the InvalidName reason in Inner::resolve"
);

/// How many `/proc/self/fd/N` names [`Library::load_bytes`] tries (see `stale_name`).
const MAX_FD_TRIES: usize = 64;

/// A resolved entry point. The pointer is valid while the library that gave it stays loaded.
#[derive(Clone, Copy)]
enum Entry {
    Rfaas(RfaasFn),
    Extended(ExtendedFn),
    /// An extended-ABI function marked `rfx_device_<name>`: its data is
    /// staged to and from device memory (see [`crate::device`]).
    Device(ExtendedFn),
    /// A Python function: its handle in the Python host.
    Python(&'static PyHost, i64),
}

impl Entry {
    fn abi(self) -> Abi {
        match self {
            Entry::Rfaas(_) => Abi::Rfaas,
            // A Python function keeps the extended ABI's contract.
            Entry::Extended(_) | Entry::Device(_) | Entry::Python(..) => Abi::Extended,
        }
    }
}

/// A loaded library of functions.
///
/// Cloning is cheap and shares the loaded library, which is unloaded when the last clone and
/// the last [`Function`] resolved from it are dropped.
///
/// ```no_run
/// use rfx_executors::{CallContext, Library};
///
/// # fn main() -> Result<(), rfx_executors::ExecError> {
/// let lib = Library::load_path("./libfunctions.so")?;
/// let echo = lib.function("echo")?;
/// let mut out = [0u8; 16];
/// let n = echo.call(&CallContext::new(1), b"hello", &mut out)?;
/// assert_eq!(&out[..n], b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

struct Inner {
    /// Path or given name, for messages.
    name: String,
    /// The loaded library; `None` only while dropping.
    dl: Option<DlLibrary>,
    /// The memfd of a library loaded from bytes. It stays open while the library is loaded,
    /// so that no other file takes its number, and so its `/proc/self/fd/N` name.
    memfd: Option<OwnedFd>,
    cache: Mutex<HashMap<String, Entry>>,
    /// The device of its device functions (opened at the first call).
    device: parking_lot::Mutex<DeviceSlot>,
    /// rfx's MPI library, for a library built against the MPI ABI.
    mpi: Option<&'static Runtime>,
    /// A Python module instead of a native library (`dl` is then `None`).
    python: Option<PythonModule>,
}

/// A Python module loaded in the Python host, and its staged files.
struct PythonModule {
    host: &'static PyHost,
    handle: i64,
    _files: Staged,
}

impl Drop for PythonModule {
    fn drop(&mut self) {
        self.host.unload(self.handle);
    }
}

impl Library {
    /// Loads the shared library at `path`.
    ///
    /// The ELF header is checked first, then the library is opened with `RTLD_NOW |
    /// RTLD_LOCAL` (all its undefined symbols are bound now, not in the middle of a call) and
    /// its initialisers run. A bare file name is taken relative to the current directory, not
    /// searched for in the loader's path. The loader matches libraries by name: loading a path
    /// that is still loaded returns that library, even if the file has changed since (ship
    /// new code with [`load_bytes`](Library::load_bytes), which has no such cache).
    pub fn load_path(path: impl AsRef<Path>) -> Result<Library, ExecError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let image = std::fs::read(path).map_err(|source| ExecError::Read {
            library: name.clone(),
            source,
        })?;
        check_header(&name, &image)?;
        let mpi = mpi_for(&name, &image)?;
        let dl_path = if path.as_os_str().as_bytes().contains(&b'/') {
            path.to_path_buf()
        } else {
            Path::new(".").join(path)
        };
        let dl = dlopen(&name, dl_path.as_os_str())?;
        tracing::debug!(library = %name, "loaded library from a path");
        Ok(Library::new(name, dl, None, mpi))
    }

    /// Loads a library shipped as bytes (as rFaaS clients ship theirs with the allocation).
    ///
    /// The bytes go into a sealed memfd (`memfd_create`), which is opened through
    /// `/proc/self/fd/N`; nothing touches the file system. `name` is used in messages and in
    /// the memfd's name.
    pub fn load_bytes(name: &str, bytes: &[u8]) -> Result<Library, ExecError> {
        check_header(name, bytes)?;
        let mpi = mpi_for(name, bytes)?;
        let stage = |op: &'static str, source: std::io::Error| ExecError::Stage {
            library: name.to_owned(),
            op,
            source,
        };
        let mut fd = memfd(name, bytes).map_err(|(op, e)| stage(op, e))?;
        // glibc finds an already-loaded object by its name before it looks at the file: if a
        // library opened as `/proc/self/fd/N` is still loaded and N has been reused for our
        // memfd, dlopen would hand back the old library. Our own memfds never leave such a name
        // behind (see `Drop for Inner`), but another part of the process may have; move to
        // another number until the name is free. The numbers skipped stay open (in `skipped`)
        // until the new one is loaded, so `try_clone` cannot return them again.
        let mut skipped = Vec::new();
        for _ in 0..MAX_FD_TRIES {
            let proc_path = proc_fd_path(&fd);
            if stale_name(proc_path.as_os_str()) {
                let other = fd
                    .try_clone()
                    .map_err(|e| stage("fcntl(F_DUPFD_CLOEXEC)", e))?;
                skipped.push(std::mem::replace(&mut fd, other));
                continue;
            }
            let dl = dlopen(name, proc_path.as_os_str())?;
            tracing::debug!(library = %name, len = bytes.len(), "loaded library from bytes");
            return Ok(Library::new(name.to_owned(), dl, Some(fd), mpi));
        }
        Err(ExecError::Load {
            library: name.to_owned(),
            reason: format!(
                "{MAX_FD_TRIES} /proc/self/fd names in a row belong to libraries still loaded"
            ),
        })
    }

    /// Loads a shipped Python module into the executor's Python host (see
    /// [`crate::python`]): its files are checked, staged in a fresh private
    /// directory, and `module` imported from there.
    pub fn load_python(module: &str, files: &[ShippedFile]) -> Result<Library, ExecError> {
        let load = |reason: String| ExecError::Load {
            library: module.to_owned(),
            reason,
        };
        python::check(module, files).map_err(load)?;
        let host = PyHost::get().map_err(load)?;
        let staged = Staged::write(files).map_err(|source| ExecError::Stage {
            library: module.to_owned(),
            op: "staging the module's files",
            source,
        })?;
        let handle = host.load(staged.dir(), module).map_err(load)?;
        tracing::debug!(module, files = files.len(), "loaded a Python module");
        Ok(Library {
            inner: Arc::new(Inner {
                name: module.to_owned(),
                dl: None,
                memfd: None,
                cache: Mutex::new(HashMap::new()),
                device: parking_lot::Mutex::new(DeviceSlot::new(DeviceChoice::from_env())),
                mpi: None,
                python: Some(PythonModule {
                    host,
                    handle,
                    _files: staged,
                }),
            }),
        })
    }

    fn new(
        name: String,
        dl: DlLibrary,
        memfd: Option<OwnedFd>,
        mpi: Option<&'static Runtime>,
    ) -> Library {
        Library {
            inner: Arc::new(Inner {
                name,
                dl: Some(dl),
                memfd,
                cache: Mutex::new(HashMap::new()),
                device: parking_lot::Mutex::new(DeviceSlot::new(DeviceChoice::from_env())),
                mpi,
                python: None,
            }),
        }
    }

    /// The path or name the library was loaded from.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The device its device functions run on (default: `RFX_DEVICE`, see
    /// [`DeviceChoice::from_env`]).
    pub fn use_device(&self, choice: DeviceChoice) {
        self.inner.device.lock().choose(choice);
    }

    /// Resolves the function `name` (once: later calls hit a cache).
    ///
    /// `name` must be a C identifier of at most [`MAX_NAME_LEN`] bytes, not starting with
    /// [`MARKER_PREFIX`]. Nothing checks that the symbol is code rather than data (as in rFaaS):
    /// calling a data symbol crashes the process. If the library also
    /// exports `rfx_abi_<name>`, the function uses the extended ABI and the marker must hold
    /// 1 to [`ABI_VERSION`](crate::ABI_VERSION); otherwise it uses the rFaaS ABI. With
    /// `rfx_device_<name>` as well, it is a device function ([`crate::device`]).
    pub fn function(&self, name: &str) -> Result<Function, ExecError> {
        let entry = {
            let mut cache = self
                .inner
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match cache.get(name) {
                Some(entry) => *entry,
                None => {
                    let entry = self.inner.resolve(name)?;
                    cache.insert(name.to_owned(), entry);
                    entry
                }
            }
        };
        Ok(Function {
            lib: Arc::clone(&self.inner),
            name: Arc::from(name),
            entry,
        })
    }
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("name", &self.inner.name)
            .field("memfd", &self.inner.memfd.as_ref().map(AsRawFd::as_raw_fd))
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn dl(&self) -> &DlLibrary {
        self.dl
            .as_ref()
            .expect("a native library is taken only when dropped")
    }

    fn resolve(&self, name: &str) -> Result<Entry, ExecError> {
        let identifier = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let reason = if !identifier {
            Some("not a c identifier")
        } else if name.len() > MAX_NAME_LEN {
            Some("longer than 200 bytes")
        } else if name.starts_with(MARKER_PREFIX) || name.starts_with(DEVICE_MARKER_PREFIX) {
            Some("the rfx_abi_ and rfx_device_ prefixes are reserved for markers")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ExecError::InvalidName {
                name: name.to_owned(),
                reason,
            });
        }
        if let Some(m) = &self.python {
            let f = m
                .host
                .resolve(m.handle, name)
                .map_err(|reason| ExecError::Load {
                    library: self.name.clone(),
                    reason: format!("{name}: {reason}"),
                })?;
            return Ok(Entry::Python(m.host, f));
        }
        let marker_name = format!("{MARKER_PREFIX}{name}");
        // SAFETY: the symbol is only used as the address of a `u32`, the type the marker
        // convention gives it (`const uint32_t rfx_abi_<name>` in C, a `static u32` from
        // `export!`). libloading returns an error, not a null pointer, if it is absent.
        let marker = unsafe { self.dl().get::<*const u32>(marker_name.as_bytes()) }
            .ok()
            .map(|sym| *sym);
        let missing = || ExecError::MissingSymbol {
            library: self.name.clone(),
            symbol: name.to_owned(),
        };
        let Some(marker) = marker else {
            // SAFETY: without a marker the symbol is an rFaaS function by convention; the type
            // only tells how we will call it (see `Function::call`). The pointer stays valid
            // while `self.dl` is loaded, and every `Function` holding it keeps `self` alive.
            let f = unsafe { self.dl().get::<RfaasFn>(name.as_bytes()) }.map_err(|_| missing())?;
            return Ok(Entry::Rfaas(*f));
        };
        // SAFETY: as above, for a symbol marked as an extended-ABI function.
        let f = unsafe { self.dl().get::<ExtendedFn>(name.as_bytes()) }.map_err(|_| missing())?;
        // SAFETY: `marker` is the non-null address dlsym gave for a symbol that, by convention,
        // is a `u32` object of the loaded (and still mapped) library. Read unaligned, so that
        // a carelessly declared marker cannot make this read undefined.
        let value = unsafe { marker.read_unaligned() };
        // Contexts only grow: a function built for an earlier version runs.
        if !(1..=ABI_VERSION).contains(&value) {
            return Err(ExecError::BadAbiMarker {
                library: self.name.clone(),
                symbol: name.to_owned(),
                marker: marker_name,
                value,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: only the symbol's presence is used, never its contents.
        let device = unsafe {
            self.dl()
                .get::<*const u8>(format!("{DEVICE_MARKER_PREFIX}{name}").as_bytes())
        }
        .is_ok();
        Ok(if device {
            Entry::Device(*f)
        } else {
            Entry::Extended(*f)
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(dl) = self.dl.take() else {
            return;
        };
        if let Err(e) = dl.close() {
            tracing::warn!(library = %self.name, error = %e, "dlclose failed");
        }
        let Some(fd) = self.memfd.take() else {
            return;
        };
        let path = proc_fd_path(&fd);
        if stale_name(path.as_os_str()) {
            // The loader kept the library (it is NODELETE, e.g. C++ with unique symbols, or
            // has a leaked handle): keep the number taken for good, so that no later memfd is
            // opened under this name. One fd per such library, which stays mapped anyway.
            tracing::debug!(library = %self.name, "library not unloaded; keeping its memfd");
            let _ = fd.into_raw_fd();
        }
    }
}

/// A function resolved from a [`Library`], ready to call. Keeps its library loaded.
///
/// Cloning is cheap; a `Function` may be called from several threads at once if the function
/// itself allows it (rFaaS functions are expected to be reentrant).
#[derive(Clone)]
pub struct Function {
    lib: Arc<Inner>,
    name: Arc<str>,
    entry: Entry,
}

impl Function {
    /// The function's name (its symbol).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the library it comes from.
    pub fn library(&self) -> &str {
        &self.lib.name
    }

    /// The calling convention it uses.
    pub fn abi(&self) -> Abi {
        self.entry.abi()
    }

    /// Calls the function on `input`, letting it write into `output`, and returns the output
    /// length.
    ///
    /// The length the function returns is not trusted: above the output capacity (the length
    /// of `output`, at most [`MAX_OUTPUT_CAPACITY`]) it is an error, and so is a status code of
    /// the reserved range (see [`status`](crate::status)). An rFaaS-ABI function is not told
    /// the capacity; it must know it from its protocol with the client (as in rFaaS).
    ///
    /// A function that crashes (a segmentation fault, an abort, a Rust function built with
    /// `panic = "abort"` that panics) kills the whole process: that is expected, and handled
    /// one level up, where the executor manager reaps the executor and reports the crash.
    pub fn call(
        &self,
        ctx: &CallContext,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CallError> {
        let size = u32::try_from(input.len()).map_err(|_| CallError::InputTooLarge {
            len: input.len(),
            max: u32::MAX,
        })?;
        let capacity = u32::try_from(output.len())
            .unwrap_or(u32::MAX)
            .min(MAX_OUTPUT_CAPACITY);
        // A failure without a reason reads as an empty one, never as the
        // previous invocation's output.
        if let Some(b) = output.first_mut() {
            *b = 0;
        }
        let ret = match self.entry {
            Entry::Rfaas(f) => {
                // SAFETY: `f` was resolved from `self.lib`, which `self` keeps loaded. `input`
                // is valid for `size` bytes and `output` for at least `capacity` bytes; they
                // are distinct borrows, so they do not overlap. The rFaaS ABI types `in` as
                // `void *` but our contract (crate docs) is that functions do not write to it.
                // Whether the function keeps to the contract cannot be checked (see the module
                // docs for why this is acceptable).
                unsafe {
                    f(
                        input.as_ptr().cast_mut().cast(),
                        size,
                        output.as_mut_ptr().cast(),
                    )
                }
            }
            Entry::Extended(f) => {
                let raw = ctx.to_raw(capacity);
                let call = || {
                    // SAFETY: as for the rFaaS ABI; in addition `raw` lives on our stack for
                    // the whole call and tells the function the output capacity.
                    unsafe {
                        f(
                            &raw,
                            input.as_ptr().cast(),
                            size,
                            output.as_mut_ptr().cast(),
                        )
                    }
                };
                self.in_mpi_group(ctx, call)
            }
            Entry::Device(f) => return self.call_device(f, ctx, input, size, capacity, output),
            Entry::Python(host, f) => host.call(f, &ctx.to_raw(capacity), input, output),
        };
        self.check_return(ret, capacity, output)
    }

    /// Runs `f`, for a group member built against MPI with its group as
    /// MPI_COMM_WORLD.
    fn in_mpi_group<R>(&self, ctx: &CallContext, f: impl FnOnce() -> R) -> R {
        match self.lib.mpi {
            Some(rt) if !ctx.comm.is_null() => rt.with_group(ctx.comm, f),
            _ => f(),
        }
    }

    /// A device function's call: input staged to the device, output read
    /// back from it (see [`crate::device`]).
    fn call_device(
        &self,
        f: ExtendedFn,
        ctx: &CallContext,
        input: &[u8],
        size: u32,
        capacity: u32,
        output: &mut [u8],
    ) -> Result<usize, CallError> {
        let device_err = |e: rfx_device::DeviceError| CallError::Device {
            function: self.name.to_string(),
            reason: e.to_string(),
        };
        let mut slot = self.lib.device.lock();
        let out = output.as_mut_ptr();
        let ret = {
            let run = |raw: &RfxContext| {
                // SAFETY: as for the extended ABI (see `call`): `raw`, and the
                // device buffers it names, live for the whole call; `input` is
                // valid for `size` bytes and `out` for `capacity` (the host
                // buffer, where a failing function writes its reason).
                unsafe { f(raw, input.as_ptr().cast(), size, out.cast()) }
            };
            self.in_mpi_group(ctx, || slot.call(ctx.to_raw(capacity), input, run))
        }
        .map_err(device_err)?;
        if ret <= capacity {
            slot.read_output(&mut output[..ret as usize])
                .map_err(device_err)?;
        }
        self.check_return(ret, capacity, output)
    }

    fn check_return(&self, ret: u32, capacity: u32, output: &[u8]) -> Result<usize, CallError> {
        let function = || self.name.to_string();
        let reason = || rfx_abi::status::read_reason(output);
        match (self.entry, ret) {
            (_, len) if len <= capacity => Ok(len as usize),
            (e, status::PANICKED) if e.abi() == Abi::Extended => Err(CallError::Panicked {
                function: function(),
                reason: reason(),
            }),
            (_, status::FAILED) => Err(CallError::Failed {
                function: function(),
                reason: reason(),
            }),
            // C functions of the rFaaS ABI commonly return (uint32_t)-1 on failure.
            (Entry::Rfaas(_), code) if code >= RESERVED_MIN => Err(CallError::Failed {
                function: function(),
                reason: reason(),
            }),
            (_, code) if code >= RESERVED_MIN => Err(CallError::Status {
                function: function(),
                code,
            }),
            (_, len) => Err(CallError::OutputTooLarge {
                function: function(),
                len,
                capacity,
            }),
        }
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("library", &self.lib.name)
            .field("abi", &self.entry.abi())
            .finish()
    }
}

/// rfx's MPI library, loaded before a library built against the MPI ABI.
fn mpi_for(library: &str, image: &[u8]) -> Result<Option<&'static Runtime>, ExecError> {
    if !needs_mpi(image) {
        return Ok(None);
    }
    Runtime::get(library).map(Some)
}

fn check_header(library: &str, head: &[u8]) -> Result<(), ExecError> {
    elf::check_header(head).map_err(|problem| match problem {
        HeaderProblem::NotSharedLibrary(reason) => ExecError::NotSharedLibrary {
            library: library.to_owned(),
            reason,
        },
        HeaderProblem::WrongArchitecture(found) => ExecError::WrongArchitecture {
            library: library.to_owned(),
            found,
            expected: elf::HOST,
        },
    })
}

fn dlopen(library: &str, path: &OsStr) -> Result<DlLibrary, ExecError> {
    // SAFETY: opening runs the library's initialisers, which is the trust decision described
    // in the module docs. RTLD_NOW makes missing symbols an error here rather than a crash in
    // a call; RTLD_LOCAL keeps one tenant library's symbols from binding another's.
    unsafe { DlLibrary::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| ExecError::Load {
        library: library.to_owned(),
        reason: e.to_string(),
    })
}

/// The name under which the loader opens `fd`.
fn proc_fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Whether the loader already has an object named `path` (so that dlopen would return it).
fn stale_name(path: &OsStr) -> bool {
    // SAFETY: with RTLD_NOLOAD the loader never maps a new object, so no initialiser runs; it
    // only bumps the reference count of an object already loaded, and dropping the handle
    // (dlclose) puts it back.
    unsafe { DlLibrary::open(Some(path), RTLD_NOW | libc::RTLD_NOLOAD) }.is_ok()
}

/// A sealed, close-on-exec memfd holding `bytes`; on error, the failing call and its cause.
fn memfd(name: &str, bytes: &[u8]) -> Result<OwnedFd, (&'static str, std::io::Error)> {
    let mut label: String = format!("rfx:{name}").replace('\0', "?");
    if label.len() > 240 {
        let cut = (0..=240)
            .rev()
            .find(|i| label.is_char_boundary(*i))
            .unwrap_or(0);
        label.truncate(cut);
    }
    let label = CString::new(label).expect("NULs were replaced");
    let fd = memfd_create(
        &label,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| ("memfd_create", e.into()))?;
    let mut file = File::from(fd);
    file.write_all(bytes).map_err(|e| ("write", e))?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| ("fcntl(F_ADD_SEALS)", e.into()))?;
    Ok(OwnedFd::from(file))
}

/// Runs `f` on `len` bytes at `off` of an executor's slot region, in place
/// (the zero-copy input of an invocation).
pub(crate) fn with_region_bytes<R>(
    mr: &rfx_fabric::MemoryRegion,
    off: usize,
    len: usize,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, rfx_fabric::FabricError> {
    // SAFETY: the slot holds an invocation the client wrote and announced
    // with its completion; by the invocation protocol the client does not
    // write that slot again before it has our result, which is sent only
    // after `f` returns. No local code writes slots. A misbehaving client
    // that writes anyway can only change the bytes its own function reads.
    let input = unsafe { mr.as_slice(off, len)? };
    Ok(f(input))
}

// --- the group communicator table, executor side ---------------------------------------------

/// The executor's end of a group: the communicator the table's entry points drive, owned
/// through a raw pointer so that the references the entry points make while a function runs
/// are the only ones (the worker never touches it during a call).
pub(crate) struct GroupComm {
    comm: *mut rfx_collectives::Communicator,
    table: rfx_abi::comm::RfxComm,
}

// SAFETY: the communicator is `Send`; the raw pointers are owned by this value and used only
// by the thread that holds it (the worker calling the function).
unsafe impl Send for GroupComm {}

impl fmt::Debug for GroupComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupComm")
            .field("rank", &self.table.rank)
            .field("size", &self.table.size)
            .finish()
    }
}

impl GroupComm {
    pub(crate) fn new(comm: rfx_collectives::Communicator) -> Box<GroupComm> {
        let (rank, size) = (comm.rank() as u32, comm.size() as u32);
        let comm = Box::into_raw(Box::new(comm));
        Box::new(GroupComm {
            comm,
            table: rfx_abi::comm::RfxComm {
                abi_version: rfx_abi::comm::COMM_ABI_VERSION,
                rank,
                size,
                reserved: 0,
                handle: comm.cast(),
                send: t_send,
                recv: t_recv,
                barrier: t_barrier,
                bcast: t_bcast,
                reduce: t_reduce,
                allreduce: t_allreduce,
                allgather: t_allgather,
                gather: t_gather,
                scatter: t_scatter,
                alltoall: t_alltoall,
            },
        })
    }

    /// The table a call's context points to.
    pub(crate) fn table(&self) -> &rfx_abi::comm::RfxComm {
        &self.table
    }
}

impl Drop for GroupComm {
    fn drop(&mut self) {
        // SAFETY: `comm` came from `Box::into_raw` in `new` and is freed only here; no call
        // (hence no entry point) is running while the worker drops its group.
        drop(unsafe { Box::from_raw(self.comm) });
    }
}

/// Runs an entry point's body: errors become codes, and a panic never unwinds into C.
fn guarded(f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => rfx_abi::comm::code::OK,
        Ok(Err(code)) => code,
        Err(_) => rfx_abi::comm::code::FAILED,
    }
}

fn coll_code(e: rfx_collectives::CollError) -> i32 {
    use rfx_abi::comm::code;
    use rfx_collectives::CollError as E;
    tracing::debug!("group operation failed: {e}");
    match e {
        E::PeerGone { .. } => code::PEER_GONE,
        E::Timeout { .. } => code::TIMEOUT,
        E::Truncated { .. } => code::TRUNCATED,
        E::InvalidRank { .. } | E::InvalidArgument(_) | E::UnsupportedOp { .. } => code::INVALID,
        _ => code::FAILED,
    }
}

/// The communicator behind a table handle.
///
/// # Safety
/// `h` is the handle of a live [`GroupComm`]'s table, and no other reference to its
/// communicator exists for the returned borrow's life (entry points do not nest).
unsafe fn comm_of<'a>(h: *mut c_void) -> Result<&'a mut rfx_collectives::Communicator, i32> {
    // SAFETY: by the contract above.
    unsafe { h.cast::<rfx_collectives::Communicator>().as_mut() }
        .ok_or(rfx_abi::comm::code::INVALID)
}

/// `len` elements of `T` at `p`: null only when empty, aligned.
///
/// # Safety
/// Unless null, `p` is valid for reads of `len` elements during the returned borrow's life.
unsafe fn c_slice<'a, T>(p: *const c_void, len: u64) -> Result<&'a [T], i32> {
    let len = usize::try_from(len).map_err(|_| rfx_abi::comm::code::INVALID)?;
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || p.align_offset(std::mem::align_of::<T>()) != 0 {
        return Err(rfx_abi::comm::code::INVALID);
    }
    // SAFETY: non-null, aligned (checked) and valid for `len` elements (contract above).
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<T>(), len) })
}

/// As [`c_slice`], writable.
///
/// # Safety
/// Unless null, `p` is valid for reads and writes of `len` elements, and not aliased, during
/// the returned borrow's life.
unsafe fn c_slice_mut<'a, T>(p: *mut c_void, len: u64) -> Result<&'a mut [T], i32> {
    let len = usize::try_from(len).map_err(|_| rfx_abi::comm::code::INVALID)?;
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() || p.align_offset(std::mem::align_of::<T>()) != 0 {
        return Err(rfx_abi::comm::code::INVALID);
    }
    // SAFETY: non-null, aligned (checked), valid and unaliased (contract above).
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<T>(), len) })
}

// The entry points. Their safety contract is the table's (crate::comm, rfx.h): `h` is the
// table's handle, and every buffer is valid for the length passed, for the call's duration.

unsafe extern "C" fn t_send(
    h: *mut c_void,
    buf: *const c_void,
    len: u64,
    dest: u32,
    tag: u32,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract.
        let (comm, buf) = unsafe { (comm_of(h)?, c_slice::<u8>(buf, len)?) };
        comm.send(buf, dest as usize, tag).map_err(coll_code)
    })
}

unsafe extern "C" fn t_recv(
    h: *mut c_void,
    buf: *mut c_void,
    cap: u64,
    source: u32,
    tag: u32,
    len: *mut u64,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract.
        let (comm, buf) = unsafe { (comm_of(h)?, c_slice_mut::<u8>(buf, cap)?) };
        let source = match source {
            rfx_abi::comm::ANY_SOURCE => rfx_collectives::Source::Any,
            r => rfx_collectives::Source::Rank(r as usize),
        };
        let st = comm.recv(buf, source, tag).map_err(coll_code)?;
        // SAFETY: `len` is null or valid for one u64 (the table's contract).
        if let Some(len) = unsafe { len.as_mut() } {
            *len = st.len as u64;
        }
        Ok(())
    })
}

unsafe extern "C" fn t_barrier(h: *mut c_void) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract.
        unsafe { comm_of(h)? }.barrier().map_err(coll_code)
    })
}

unsafe extern "C" fn t_bcast(h: *mut c_void, buf: *mut c_void, len: u64, root: u32) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract.
        let (comm, buf) = unsafe { (comm_of(h)?, c_slice_mut::<u8>(buf, len)?) };
        comm.bcast(buf, root as usize).map_err(coll_code)
    })
}

/// `out = input`, then the reduction in place on `out` (to `root`, or to all).
///
/// # Safety
/// The table's contract, with `input` and `out` holding `count` elements of `T`.
unsafe fn reduce_typed<T: rfx_collectives::Element>(
    h: *mut c_void,
    input: *const c_void,
    out: *mut c_void,
    count: u64,
    op: rfx_abi::comm::CommOp,
    root: Option<u32>,
) -> Result<(), i32> {
    // SAFETY: the contract above.
    let (comm, input, out) = unsafe {
        (
            comm_of(h)?,
            c_slice::<T>(input, count)?,
            c_slice_mut::<T>(out, count)?,
        )
    };
    out.copy_from_slice(input);
    let op = reduce_op(op);
    match root {
        Some(root) => comm.reduce(out, root as usize, op),
        None => comm.allreduce(out, op),
    }
    .map_err(coll_code)
}

/// The collectives crate's operation for a table's.
fn reduce_op(op: rfx_abi::comm::CommOp) -> rfx_collectives::ReduceOp {
    use rfx_abi::comm::CommOp as C;
    use rfx_collectives::ReduceOp as R;
    match op {
        C::Sum => R::Sum,
        C::Prod => R::Prod,
        C::Min => R::Min,
        C::Max => R::Max,
        C::BitAnd => R::BitAnd,
        C::BitOr => R::BitOr,
        C::BitXor => R::BitXor,
    }
}

/// Dispatches a reduction on the C type code.
///
/// # Safety
/// As [`reduce_typed`] for the type `dtype` names.
unsafe fn reduce_any(
    h: *mut c_void,
    input: *const c_void,
    out: *mut c_void,
    count: u64,
    dtype: u32,
    op: u32,
    root: Option<u32>,
) -> Result<(), i32> {
    use rfx_abi::comm::{code, CommOp, Dtype};
    let op = CommOp::from_u32(op).ok_or(code::INVALID)?;
    let dtype = Dtype::from_u32(dtype).ok_or(code::INVALID)?;
    // SAFETY: the element type matches the caller's `dtype` (the contract above).
    unsafe {
        match dtype {
            Dtype::U8 => reduce_typed::<u8>(h, input, out, count, op, root),
            Dtype::I32 => reduce_typed::<i32>(h, input, out, count, op, root),
            Dtype::U32 => reduce_typed::<u32>(h, input, out, count, op, root),
            Dtype::I64 => reduce_typed::<i64>(h, input, out, count, op, root),
            Dtype::U64 => reduce_typed::<u64>(h, input, out, count, op, root),
            Dtype::F32 => reduce_typed::<f32>(h, input, out, count, op, root),
            Dtype::F64 => reduce_typed::<f64>(h, input, out, count, op, root),
        }
    }
}

unsafe extern "C" fn t_reduce(
    h: *mut c_void,
    input: *const c_void,
    out: *mut c_void,
    count: u64,
    dtype: u32,
    op: u32,
    root: u32,
) -> i32 {
    // SAFETY: the table's contract.
    guarded(|| unsafe { reduce_any(h, input, out, count, dtype, op, Some(root)) })
}

unsafe extern "C" fn t_allreduce(
    h: *mut c_void,
    input: *const c_void,
    out: *mut c_void,
    count: u64,
    dtype: u32,
    op: u32,
) -> i32 {
    // SAFETY: the table's contract.
    guarded(|| unsafe { reduce_any(h, input, out, count, dtype, op, None) })
}

unsafe extern "C" fn t_allgather(
    h: *mut c_void,
    input: *const c_void,
    len: u64,
    out: *mut c_void,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract; `out` holds `size * len` bytes.
        let comm = unsafe { comm_of(h)? };
        let total = len
            .checked_mul(comm.size() as u64)
            .ok_or(rfx_abi::comm::code::INVALID)?;
        // SAFETY: as above.
        let (input, out) = unsafe { (c_slice::<u8>(input, len)?, c_slice_mut::<u8>(out, total)?) };
        comm.allgather(input, out).map_err(coll_code)
    })
}

/// The root, and the bytes of a rooted collective's all-ranks buffer on
/// this rank: `size * len` at the root, none elsewhere.
fn at_root(comm: &rfx_collectives::Communicator, root: u32, len: u64) -> Result<(usize, u64), i32> {
    let root = root as usize;
    if comm.rank() != root {
        return Ok((root, 0));
    }
    let total = len
        .checked_mul(comm.size() as u64)
        .ok_or(rfx_abi::comm::code::INVALID)?;
    Ok((root, total))
}

unsafe extern "C" fn t_gather(
    h: *mut c_void,
    input: *const c_void,
    len: u64,
    out: *mut c_void,
    root: u32,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract; the root's `out` holds `size * len` bytes.
        let comm = unsafe { comm_of(h)? };
        let (root, total) = at_root(comm, root, len)?;
        // SAFETY: as above; `out` is not touched elsewhere than at the root.
        let (input, out) = unsafe { (c_slice::<u8>(input, len)?, c_slice_mut::<u8>(out, total)?) };
        comm.gather(input, out, root).map_err(coll_code)
    })
}

unsafe extern "C" fn t_scatter(
    h: *mut c_void,
    input: *const c_void,
    len: u64,
    out: *mut c_void,
    root: u32,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract; the root's `input` holds `size * len` bytes.
        let comm = unsafe { comm_of(h)? };
        let (root, total) = at_root(comm, root, len)?;
        // SAFETY: as above; `input` is not read elsewhere than at the root.
        let (input, out) = unsafe { (c_slice::<u8>(input, total)?, c_slice_mut::<u8>(out, len)?) };
        comm.scatter(input, out, root).map_err(coll_code)
    })
}

unsafe extern "C" fn t_alltoall(
    h: *mut c_void,
    input: *const c_void,
    len: u64,
    out: *mut c_void,
) -> i32 {
    guarded(|| {
        // SAFETY: the table's contract: `input` and `out` hold `size * len` bytes.
        let comm = unsafe { comm_of(h)? };
        let total = len
            .checked_mul(comm.size() as u64)
            .ok_or(rfx_abi::comm::code::INVALID)?;
        // SAFETY: as above.
        let (input, out) =
            unsafe { (c_slice::<u8>(input, total)?, c_slice_mut::<u8>(out, total)?) };
        comm.alltoall(input, out).map_err(coll_code)
    })
}
