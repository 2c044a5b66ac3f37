//! The only module of the ofi provider that calls libfabric, one file
//! per libfabric object: [`info`] (`fi_getinfo`), [`domain`] (fabric and
//! domain), [`mr`] (memory registrations), [`buf`] (memory handed to the
//! provider), [`conn`] (endpoint, address vector, receive slots, sends),
//! [`cq`] (completions and waiting), [`rma`] (writes and reads).
//!
//! Every wrapper here is safe to call: the objects it hands out close
//! themselves in `Drop` (endpoint before the queues and buffers it uses),
//! and every buffer libfabric may touch after a call returns is owned by
//! this module ([`Conn`]'s receive slots, send buffers and read staging
//! buffer, registered [`MemoryRegion`](crate::mr::MemoryRegion)s held by
//! their [`Mr`]) or stays borrowed until its completion has been reaped
//! ([`Conn::write_blocking`]).

mod buf;
mod conn;
mod cq;
mod domain;
mod info;
mod mr;
mod rma;

use std::ffi::CStr;
use std::os::raw::c_void;

use libfabric_sys as ffi;

use crate::error::FabricError;

pub(in crate::ofi) use conn::{Conn, Shape};
pub(in crate::ofi) use cq::{Event, CQ_BATCH};
pub(in crate::ofi) use domain::DomainObj;
pub(in crate::ofi) use info::{Info, Want};
pub(in crate::ofi) use mr::{LentMr, Mr};
pub(in crate::ofi) use rma::ReadEnd;

const _: () = assert!(
    ffi::AVAILABLE,
    "libfabric-sys was built without libfabric: install libfabric-dev, libclang-dev and pkg-config"
);

/// The libfabric API version rfx asks for (works on 1.x and 2.x).
const API: u32 = ffi::fi_version_of(1, 10);

const TAG_RX: u64 = 1;
const TAG_TX: u64 = 2;
const TAG_WRITE: u64 = 3;
const TAG_READ: u64 = 4;

fn ctx(tag: u64, index: usize) -> *mut c_void {
    ((tag << 32) | index as u64) as usize as *mut c_void
}

fn unctx(p: *mut c_void) -> (u64, usize) {
    let v = p as usize as u64;
    (v >> 32, (v & 0xffff_ffff) as usize)
}

/// libfabric's text for a (negative or positive) return code.
pub(in crate::ofi) fn strerror(code: i64) -> String {
    let n = code.unsigned_abs().min(i32::MAX as u64) as i32;
    // SAFETY: fi_strerror accepts any number and returns a pointer to a
    // static NUL-terminated string (never freed).
    let s = unsafe { ffi::fi_strerror(n) };
    if s.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null static C string, see above.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

pub(in crate::ofi) fn fi_err(op: &'static str, code: i64) -> FabricError {
    FabricError::os(
        op,
        std::io::Error::other(format!("{} ({code})", strerror(code))),
    )
}

fn check(op: &'static str, rc: i32) -> Result<(), FabricError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(fi_err(op, rc.into()))
    }
}

/// True for libfabric error numbers (of a CQ error entry) that refuse one access (bad key, range or permission) rather than
/// break the connection.
pub(in crate::ofi) fn is_refusal(code: i32) -> bool {
    [
        ffi::FI_EACCES,
        ffi::FI_EINVAL,
        ffi::FI_EFAULT,
        ffi::FI_EKEYREJECTED,
        ffi::FI_EPERM,
    ]
    .iter()
    // Providers disagree on the sign (shm reports negative numbers).
    .any(|&c| code.unsigned_abs() == c)
}

/// Outcome of a non-blocking post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ofi) enum Posted {
    Done,
    /// `-FI_EAGAIN`: the provider needs progress first; retry.
    Again,
}

fn posted(op: &'static str, rc: isize) -> Result<Posted, FabricError> {
    match rc {
        0 => Ok(Posted::Done),
        x if x == -(ffi::FI_EAGAIN as isize) => Ok(Posted::Again),
        x => Err(fi_err(op, x as i64)),
    }
}

/// The runtime library's version, e.g. `(1, 17)`.
pub(in crate::ofi) fn runtime_version() -> (u32, u32) {
    // SAFETY: no arguments, reads a constant.
    let v = unsafe { ffi::fi_version() };
    (v >> 16, v & 0xffff)
}
