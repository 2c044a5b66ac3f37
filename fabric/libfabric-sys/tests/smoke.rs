//! The bindings link and talk to the installed libfabric: `fi_version`, and
//! `fi_getinfo` finds the `tcp` provider on 127.0.0.1 (loopback only).
#![allow(clippy::unwrap_used)]
#![cfg_attr(libfabric_missing, allow(unused))]

#[cfg(not(libfabric_missing))]
#[test]
fn version_and_getinfo_tcp_loopback() {
    use libfabric_sys::*;
    use std::ffi::{CStr, CString};

    // SAFETY: fi_version takes no arguments and only reads a constant.
    let v = unsafe { fi_version() };
    let (major, minor) = (v >> 16, v & 0xffff);
    println!("libfabric runtime version {major}.{minor}");
    assert!(major >= 1, "unexpected libfabric version {v:#x}");

    let prov = CString::new("tcp").unwrap();
    let node = CString::new("127.0.0.1").unwrap();
    // SAFETY: fi_allocinfo returns a zeroed, owned fi_info tree (or null).
    let hints = unsafe { fi_allocinfo() };
    assert!(!hints.is_null());
    // SAFETY: `hints` is the live allocation above; its attribute pointers
    // are allocated by fi_allocinfo. prov_name is owned by hints from here
    // on and freed by fi_freeinfo, hence strdup.
    unsafe {
        (*(*hints).fabric_attr).prov_name = libc_strdup(prov.as_ptr());
        (*(*hints).ep_attr).type_ = fi_ep_type_FI_EP_RDM;
        (*hints).caps = (FI_MSG | FI_RMA) as u64;
    }
    let mut info: *mut fi_info = std::ptr::null_mut();
    // SAFETY: all pointers are valid C strings / the hints above; `info`
    // receives a list we free below.
    let rc = unsafe {
        fi_getinfo(
            fi_version_of(1, 10),
            node.as_ptr(),
            std::ptr::null(),
            0,
            hints,
            &mut info,
        )
    };
    assert_eq!(rc, 0, "fi_getinfo(tcp, 127.0.0.1) failed with {rc}");
    assert!(!info.is_null());
    // SAFETY: `info` is the list fi_getinfo returned; the names are C strings
    // owned by it.
    let name = unsafe { CStr::from_ptr((*(*info).fabric_attr).prov_name) }
        .to_string_lossy()
        .into_owned();
    println!("first match: provider {name}");
    assert!(name.contains("tcp"), "{name}");
    // SAFETY: both lists are owned here and freed once.
    unsafe {
        fi_freeinfo(info);
        fi_freeinfo(hints);
    }
}

#[cfg(not(libfabric_missing))]
unsafe fn libc_strdup(s: *const std::os::raw::c_char) -> *mut std::os::raw::c_char {
    extern "C" {
        fn strdup(s: *const std::os::raw::c_char) -> *mut std::os::raw::c_char;
    }
    // SAFETY: the caller passes a valid NUL-terminated string.
    unsafe { strdup(s) }
}

/// Built without libfabric: a skip, unless `RFX_REQUIRE_PROVIDERS` lists
/// `ofi` (CI where it must run), which makes it a failure.
#[cfg(libfabric_missing)]
#[test]
fn libfabric_missing() {
    let required = std::env::var("RFX_REQUIRE_PROVIDERS").unwrap_or_default();
    assert!(
        !required.split(',').any(|p| p.trim() == "ofi"),
        "libfabric was not found at build time but RFX_REQUIRE_PROVIDERS={required}"
    );
    println!("skipped: libfabric was not found at build time");
}
