//! Errors of the executors crate: [`ExecError`] for loading libraries and resolving functions,
//! [`CallError`] for one invocation (the executor branches on it to pick a return code).

use std::io;

/// An error of the executors crate.
///
/// Loading and resolving errors name the library (its path, or the name given to
/// [`Library::load_bytes`](crate::Library::load_bytes)) and, where there is one, the symbol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The library file could not be read.
    #[error("cannot read library `{library}`")]
    Read {
        /// The library.
        library: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The in-memory file (memfd) holding a shipped library could not be set up.
    #[error("cannot stage library `{library}` in memory: {op} failed")]
    Stage {
        /// The library.
        library: String,
        /// The system call that failed.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The bytes are not an ELF shared library (not ELF at all, an executable, an object file...).
    #[error("`{library}` is not a shared library: {reason}")]
    NotSharedLibrary {
        /// The library.
        library: String,
        /// What is wrong, e.g. "no elf magic".
        reason: String,
    },
    /// The library is an ELF shared library for another machine, word size or byte order.
    #[error("`{library}` is built for {found}, but this executor runs on {expected}")]
    WrongArchitecture {
        /// The library.
        library: String,
        /// What the library is built for, e.g. "aarch64 (e_machine 183)".
        found: String,
        /// What this process is.
        expected: &'static str,
    },
    /// The dynamic loader refused the library (unresolved dependency, missing symbol version...).
    #[error("cannot load library `{library}`: {reason}")]
    Load {
        /// The library.
        library: String,
        /// The loader's message.
        reason: String,
    },
    /// A function name that cannot name a function (it may come from the wire).
    #[error("invalid function name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Why, e.g. "not a c identifier".
        reason: &'static str,
    },
    /// The library does not export the function.
    #[error("library `{library}` has no function `{symbol}`")]
    MissingSymbol {
        /// The library.
        library: String,
        /// The symbol looked up.
        symbol: String,
    },
    /// The function's ABI marker `rfx_abi_<name>` holds a value this executor does not know.
    #[error(
        "library `{library}`: abi marker `{marker}` of function `{symbol}` is {value}, \
         expected {expected} (extended abi version)"
    )]
    BadAbiMarker {
        /// The library.
        library: String,
        /// The function.
        symbol: String,
        /// The marker symbol, `rfx_abi_<symbol>`.
        marker: String,
        /// The value found.
        value: u32,
        /// The extended ABI version this executor implements.
        expected: u32,
    },
    /// An invocation failed.
    #[error("invocation failed")]
    Call(#[from] CallError),
    /// The executor's configuration is unusable.
    #[error("invalid executor configuration: {0}")]
    Config(String),
    /// A client broke the session protocol.
    #[error("session protocol: {0}")]
    Protocol(String),
    /// A transport error.
    #[error(transparent)]
    Fabric(#[from] rfx_fabric::FabricError),
}

/// Why one call of a [`Function`](crate::Function) produced no output.
///
/// None of these leave the executor in a bad state: the caller reports the error for this
/// invocation and goes on. (A function that crashes takes the process down instead; see
/// [`Function::call`](crate::Function::call).)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The input is longer than the ABI's `uint32_t size` can say.
    #[error("input of {len} bytes is too large for the function abi (at most {max} bytes)")]
    InputTooLarge {
        /// The input length.
        len: usize,
        /// The largest input length.
        max: u32,
    },
    /// The function returned an output length larger than the output buffer it was given.
    /// The output is not trusted.
    #[error(
        "function `{function}` returned output length {len}, \
         larger than the output capacity {capacity}"
    )]
    OutputTooLarge {
        /// The function.
        function: String,
        /// The length it returned.
        len: u32,
        /// The output capacity it was given.
        capacity: u32,
    },
    /// A Rust function panicked; the panic was caught at the ABI boundary
    /// ([`status::PANICKED`](crate::status::PANICKED)).
    #[error("function `{function}` panicked{}", reason_suffix(.reason))]
    Panicked {
        /// The function.
        function: String,
        /// The panic's message, if it had one.
        reason: String,
    },
    /// A device function could not get its device, or its data moved to or
    /// from it failed (`no CUDA device: ...` where the executor has none).
    #[error("device function `{function}`: {reason}")]
    Device {
        /// The function.
        function: String,
        /// What failed.
        reason: String,
    },
    /// The function reported a failure ([`status::FAILED`](crate::status::FAILED)).
    #[error("function `{function}` reported a failure{}", reason_suffix(.reason))]
    Failed {
        /// The function.
        function: String,
        /// What it wrote as its reason (see [`rfx_abi::status::write_reason`]).
        reason: String,
    },
    /// The function returned another code of the reserved range
    /// (see [`status`](crate::status)).
    #[error("function `{function}` returned status {code:#x} ({})", crate::status::describe(*.code))]
    Status {
        /// The function.
        function: String,
        /// The code.
        code: u32,
    },
}

/// `": reason"`, or nothing for an empty one.
fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl CallError {
    /// Why the function failed, as it said (empty if it did not).
    pub fn reason(&self) -> &str {
        match self {
            CallError::Failed { reason, .. }
            | CallError::Panicked { reason, .. }
            | CallError::Device { reason, .. } => reason,
            _ => "",
        }
    }
}
