//! The device contract on the host reference backend.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use rfx_device::HostDevice;

#[test]
fn host_reductions_match_the_reference() {
    support::reductions(&HostDevice::new());
}

#[test]
fn host_copies_keep_order_and_ranges() {
    let dev = HostDevice::new();
    support::copies(&dev);
    // Work really was queued behind other work.
    assert!(dev.stats().max_in_flight >= 2, "{:?}", dev.stats());
}
