//! One conformance suite, run against every provider (UCX's
//! `UCT_INSTANTIATE_TEST_CASE`). A provider added later adds one line to
//! the `conformance!` invocation below.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod cases;
mod selection;
mod util;

use rfx_fabric::TransportKind;

macro_rules! conformance {
    ($($name:ident => $kind:expr;)*) => {$(
        mod $name {
            use super::*;
            const K: TransportKind = $kind;
            #[test] fn write_imm_lands() { cases::write_imm_lands(K) }
            #[test] fn payload_sizes_0_to_16mib() { cases::payload_sizes(K) }
            #[test] fn ordered_with_many_in_flight() { cases::ordered_with_many_in_flight(K) }
            #[test] fn bidirectional_flood_does_not_deadlock() { cases::bidirectional_flood(K) }
            #[test] fn access_violations_refused() { cases::access_violations_refused(K) }
            #[test] fn waits_are_bounded() { cases::waits_are_bounded(K) }
            #[test] fn warm_wakes_on_arrival() { cases::warm_wakes_on_arrival(K) }
            #[test] fn event_fd_wakes_an_armed_sleeper() { cases::event_fd_wakes_an_armed_sleeper(K) }
            #[test] fn advertised_caps_work() { cases::advertised_caps_work(K) }
            #[test] fn oversized_send_refused() { cases::oversized_send_refused(K) }
            #[test] fn peer_death_detected() { cases::peer_death_detected(K) }
            #[test] fn peer_killed_while_waiting() { cases::peer_killed_while_waiting(K) }
            #[test] fn malformed_handshakes() { cases::malformed_handshakes(K) }
        }
    )*};
}

conformance! {
    tcp => TransportKind::Tcp;
    shm => TransportKind::Shm;
}

#[test]
fn tcp_hostile_frames() {
    cases::tcp_hostile_frames()
}

#[test]
fn tcp_peer_gone_mid_transfer() {
    cases::tcp_peer_gone_mid_transfer()
}

/// Not a test: the entry point of the peer processes the cases spawn
/// (`PeerProcess`); without `RFX_CONFORMANCE_ROLE` it returns at once.
#[test]
fn peer_entry() {
    if let Ok(role) = std::env::var("RFX_CONFORMANCE_ROLE") {
        cases::peer_main(&role);
    }
}
