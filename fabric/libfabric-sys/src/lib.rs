//! Raw FFI bindings to the system libfabric, generated at build time.
//!
//! - Found with pkg-config (`libfabric.pc`); works with libfabric 1.x
//!   (Debian 12 ships 1.17) and 2.x: nothing is checked in, bindgen runs
//!   against the installed headers.
//! - The `fi_*` calls that the headers define `static inline` (`fi_getinfo`
//!   is a real symbol, but `fi_domain`, `fi_endpoint`, `fi_send`,
//!   `fi_writedata`, `fi_cq_read`, ...) are reached through generated C
//!   wrappers: each is bound here under its own name (bindgen's
//!   `wrap_static_fns` links `fi_send` to the compiled `fi_send__extern`).
//! - Without libfabric at build time the crate is empty and
//!   [`AVAILABLE`] is false (the build prints a warning), so a
//!   workspace-wide build never fails on a machine without libfabric-dev.
//!
//! Everything here is `unsafe` and raw; rfx-fabric's `ofi/sys/` is the
//! only place that calls it.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_docs,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// True when the bindings were generated (libfabric was found at build time).
#[cfg(not(libfabric_missing))]
pub const AVAILABLE: bool = true;
/// True when the bindings were generated (libfabric was found at build time).
#[cfg(libfabric_missing)]
pub const AVAILABLE: bool = false;

/// `FI_VERSION(major, minor)` (a macro in `fabric.h`).
pub const fn fi_version_of(major: u32, minor: u32) -> u32 {
    (major << 16) | minor
}
