//! The engine's protocol, driven in memory by [`Mesh`]: sizes, credit
//! starvation, spill, crossed sends, discards, failures and malformed
//! writes, and random traffic under random delivery.

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use super::harness::{pattern, Mesh, Write};
use super::{count_cpu_list, Claimed, Piece, Sink, Small, INLINE_MAX, STAGED_READ_MAX};
use crate::error::CollError;
use crate::wire::{self, Header, Kind};

pub(super) const CTX: u32 = 1;
const STEPS: usize = 100_000;

#[test]
fn cpu_lists() {
    assert_eq!(count_cpu_list("0-1"), 2);
    assert_eq!(count_cpu_list("0-3,5,7-8"), 7);
    assert_eq!(count_cpu_list("0"), 1);
    assert_eq!(count_cpu_list(""), 0);
    assert_eq!(count_cpu_list("x-y,3-1"), 0);
}

/// Posts `len` pattern bytes from `from` to `to`, the rest queued.
fn send(m: &mut Mesh, from: usize, to: usize, tag: u32, seed: u64, len: usize) -> Vec<u8> {
    let data = pattern(seed, len);
    let borrowed = m.engines[from]
        .post(to, CTX, tag, &[&data], super::Lend::Copy)
        .expect("post");
    assert_eq!(borrowed, None, "an owned send hands no token back");
    data
}

/// Consumes the claimed message `c` whole: its bytes.
fn take(e: &mut super::Engine<super::harness::MemLink>, c: Claimed) -> Vec<u8> {
    let mut out = Vec::new();
    e.consume(&c, |_, p, _| {
        out.extend_from_slice(&super::harness::read(&p));
        Ok(())
    })
    .expect("consume");
    out
}

#[test]
fn messages_of_every_size_arrive_whole_and_in_order() {
    let mut m = Mesh::new(2, 4096, 1024);
    // Empty, inline (<= 64), one write (<= 2048 with a 1 KiB fragment:
    // 1024), header + chunks, and several times the inbox.
    let sizes = [0, 1, 47, 63, 64, 65, 1000, 1024, 1025, 2048, 4096, 50_000];
    let sent: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| send(&mut m, 0, 1, 5, i as u64, n))
        .collect();
    for want in &sent {
        let (src, tag, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("arrives");
        assert_eq!((src, tag), (0, 5));
        assert_eq!(&got, want);
    }
    assert!(!m.engines[0].has_pending(1));
    // The receiver's last credit may still be on its way to the sender.
    assert!(m.settle(100) <= 1, "more than the last credit left to move");
    assert_eq!(m.in_flight(0, 1), 0);
    assert_eq!(m.settle(100), 0, "nothing left to move");
}

#[test]
fn only_ranks_on_our_cores_make_a_host_oversubscribed() {
    // Four ranks, hosts of two cores.
    let m = Mesh::placed(4, 2, |_| 0);
    assert!(m.engines.iter().all(|e| e.oversubscribed()), "4 on 2 cores");
    let m = Mesh::placed(4, 2, |r| r / 2);
    assert!(
        m.engines.iter().all(|e| !e.oversubscribed()),
        "2 on each of two hosts"
    );
    let m = Mesh::placed(4, 2, |r| usize::from(r > 0));
    let over: Vec<bool> = m.engines.iter().map(|e| e.oversubscribed()).collect();
    assert_eq!(over, [false, true, true, true], "1 here, 3 there");
}

#[test]
fn reads_start_higher_with_more_ranks_than_cores() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[0].oversubscribed = false;
    assert_eq!(m.engines[0].read_min(1), Some(1024));
    assert!(m.engines[0].reads_in_place(1, 1024));
    m.engines[0].oversubscribed = true;
    assert_eq!(m.engines[0].read_min(1), Some(8192));
    assert!(!m.engines[0].reads_in_place(1, 4096));
}

/// With a core per rank a sweep hands the waiting operation the first new
/// message of a peer and leaves the rest in the link; oversubscribed, it
/// takes the whole burst.
#[test]
fn a_sweep_stops_at_the_first_new_message_unless_oversubscribed() {
    for oversubscribed in [false, true] {
        let mut m = Mesh::new(2, 4096, 1024);
        m.engines[1].oversubscribed = oversubscribed;
        let sent: Vec<Vec<u8>> = (0..3).map(|i| send(&mut m, 0, 1, 4, i, 8)).collect();
        m.land_all();
        assert!(m.engines[1].progress());
        let queued = m.engines[1].peers[0].msgs.len();
        assert_eq!(queued, if oversubscribed { 3 } else { 1 });
        for want in &sent {
            let (_, _, got) = m.recv(1, Some(0), CTX, Some(4), STEPS).expect("arrives");
            assert_eq!(&got, want, "oversubscribed {oversubscribed}");
        }
    }
}

#[test]
fn a_message_to_oneself_is_a_copy() {
    let mut m = Mesh::new(2, 4096, 1024);
    let want = send(&mut m, 1, 1, 9, 3, 10_000);
    assert_eq!(m.writes(), 0, "nothing crosses a link");
    let (src, tag, got) = m.recv(1, None, CTX, None, 10).expect("at once");
    assert_eq!((src, tag, got), (1, 9, want));
}

#[test]
fn a_sender_starved_of_credit_waits_and_resumes_as_the_receiver_consumes() {
    let mut m = Mesh::new(2, 4096, 512);
    let sent: Vec<Vec<u8>> = (0..10).map(|i| send(&mut m, 0, 1, 7, i, 1000)).collect();
    m.settle(1000);
    // The window is full: the sender holds the rest, nothing is in flight,
    // and without a receive nothing moves however long we wait.
    assert!(m.engines[0].has_pending(1));
    assert_eq!(m.in_flight(0, 1), 0);
    let writes = m.writes();
    for _ in 0..1000 {
        m.step();
    }
    assert_eq!(m.writes(), writes, "no write without credit");
    assert!(m.engines[0].has_pending(1));
    for want in &sent {
        let (_, _, got) = m.recv(1, Some(0), CTX, Some(7), STEPS).expect("arrives");
        assert_eq!(&got, want);
    }
    assert!(!m.engines[0].has_pending(1));
}

#[test]
fn a_receive_behind_an_unexpected_message_spills_it_and_gets_both() {
    // Rank 0 sends A (tag 1, twice the inbox) then B (tag 2); rank 1 asks
    // for B first. A fills the inbox, so B can only arrive once A is
    // copied out of the way.
    let mut m = Mesh::new(2, 4096, 512);
    let a = send(&mut m, 0, 1, 1, 1, 8192);
    let b = send(&mut m, 0, 1, 2, 2, 3000);
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(2), STEPS).expect("B arrives");
    assert_eq!(got, b);
    let spilled = m.engines[1].peers[0].msgs.front().expect("A is kept");
    assert!(spilled.owned.is_some(), "A was copied out of the inbox");
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(1), STEPS).expect("A arrives");
    assert_eq!(got, a);
}

#[test]
fn crossed_borrowed_sends_larger_than_the_inbox_complete_by_relief() {
    let mut m = Mesh::new(2, 4096, 512);
    let data = [pattern(1, 40_000), pattern(2, 40_000)];
    let tokens: Vec<u64> = (0..2)
        .map(|r| {
            m.engines[r]
                .post(1 - r, CTX, 3, &[&data[r]], super::Lend::Borrow)
                .expect("post")
                .expect("too large to go at once")
        })
        .collect();
    // Both ranks wait in their sends and neither receives: without relief
    // they would wait for each other for good.
    let pump = |m: &mut Mesh| -> [bool; 2] {
        [0, 1].map(|r| {
            let (_, done) = m.engines[r]
                .pump(1 - r, tokens[r], &[&data[r]])
                .expect("pump");
            done
        })
    };
    for _ in 0..200 {
        pump(&mut m);
        m.step();
    }
    assert_eq!(pump(&mut m), [false, false], "stuck without relief");
    let mut done = [false, false];
    for spins in 1..=STEPS as u32 {
        done = pump(&mut m);
        if done == [true, true] {
            break;
        }
        for r in 0..2 {
            if m.engines[r].relieve_due(spins) {
                m.engines[r].relieve(0, None);
            }
        }
        m.step();
    }
    assert_eq!(done, [true, true], "both sends went out");
    for r in 0..2 {
        let (_, _, got) = m
            .recv(r, Some(1 - r), CTX, Some(3), STEPS)
            .expect("arrives");
        assert_eq!(got, data[1 - r]);
    }
}

#[test]
fn a_discarded_message_frees_its_space_and_spares_the_next() {
    let mut m = Mesh::new(2, 4096, 512);
    send(&mut m, 0, 1, 1, 1, 20_000);
    let keep = send(&mut m, 0, 1, 2, 2, 5000);
    m.settle(100);
    let claimer = m.engines[1].token();
    let c = m.engines[1]
        .claim(Some(0), CTX, Some(1), claimer)
        .expect("its header is in");
    assert!(!m.engines[1].arrived_all(&c));
    m.engines[1].discard(&c);
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(2), STEPS).expect("arrives");
    assert_eq!(got, keep);
    m.settle(1000);
    assert!(!m.engines[0].has_pending(1));
    assert!(
        m.engines[1].peers[0].msgs.is_empty(),
        "the discarded one is gone"
    );
    assert!(m.engines[1].claim(Some(0), CTX, None, claimer).is_none());
}

#[test]
fn a_cut_link_fails_that_peer_and_spares_the_others() {
    let mut m = Mesh::new(3, 4096, 512);
    send(&mut m, 0, 1, 1, 1, 30_000);
    let to2 = send(&mut m, 0, 2, 1, 2, 30_000);
    for _ in 0..3 {
        m.step();
    }
    m.cut(0, 1);
    assert!(m.recv(1, Some(0), CTX, Some(1), 1000).is_none());
    assert!(m.engines[1].gone(0).is_some_and(|w| w.contains("cut")));
    match m.engines[1].post(0, CTX, 1, &[b"x"], super::Lend::Copy) {
        Err(CollError::PeerGone { rank: 0, .. }) => {}
        other => panic!("a send to a gone peer: {other:?}"),
    }
    let (_, _, got) = m
        .recv(2, Some(0), CTX, Some(1), STEPS)
        .expect("2 still gets it");
    assert_eq!(got, to2);
    assert!(m.engines[0].gone(2).is_none() && m.engines[2].gone(0).is_none());
}

/// A peer that finished and left (the link is cut after its last
/// writes landed) still has what it sent received, though a write of ours
/// found it gone before we polled it: more writes than one sweep takes.
#[test]
fn what_a_departed_peer_sent_is_received_after_a_failed_write() {
    let mut m = Mesh::new(2, 1 << 16, 1024);
    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| send(&mut m, 1, 0, i, u64::from(i), 8 + i as usize % 40))
        .collect();
    assert_eq!(m.land(1, 0, usize::MAX), 200);
    m.cut(0, 1);
    match m.engines[0].post(1, CTX, 7, &[b"x"], super::Lend::Copy) {
        Err(CollError::PeerGone { rank: 1, .. }) => {}
        other => panic!("a send to a departed peer: {other:?}"),
    }
    for (i, want) in sent.iter().enumerate() {
        let (_, _, got) = m
            .recv(0, Some(1), CTX, Some(i as u32), 10)
            .unwrap_or_else(|| panic!("message {i} was lost"));
        assert_eq!(&got, want);
    }
    assert!(m.engines[0].gone(1).is_some());
}

fn header(total: u64) -> Vec<u8> {
    Header {
        ctx: CTX,
        tag: 1,
        total,
    }
    .encode()
    .to_vec()
}

#[test]
fn malformed_writes_close_only_the_writer_and_panic_nothing() {
    let msg = wire::imm(Kind::Msg);
    let data = wire::imm(Kind::Data);
    let cases: Vec<(&str, Vec<Write>)> = vec![
        ("data outside a message", vec![w(vec![1; 64], 0, data)]),
        ("a write at the wrong offset", vec![w(header(8), 128, msg)]),
        ("a short header", vec![w(vec![0; 8], 0, msg)]),
        ("an unknown kind", vec![w(vec![], 0, 4 << 2 | 3)]),
        (
            "credit for more than was sent",
            vec![w(vec![], 0, wire::imm(Kind::Credit(1 << 20)))],
        ),
        (
            "a first write longer than the message",
            vec![w([header(4), vec![0; 40]].concat(), 0, msg)],
        ),
        (
            "a message longer than announced",
            vec![w(header(100), 0, msg), w(vec![0; 200], 64, data)],
        ),
        (
            "a message inside another",
            vec![w(header(100), 0, msg), w(header(1), 64, msg)],
        ),
        ("an absurd size", vec![w(header(u64::MAX), 0, msg)]),
    ];
    for (what, writes) in cases {
        closes_only_the_writer(Mesh::new(3, 4096, 512), what, writes);
    }
}

/// Rank 1 writes `writes` into rank 0's inbox: rank 0 closes it as
/// malformed, and rank 2 still gets through to rank 0.
/// A read request's (or a push's) bytes: a header of `len`, then number
/// `seq` and one range.
fn desc(seq: u32, addr: u64, len: u64) -> Vec<u8> {
    let mut b = header(len);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&addr.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// As [`desc`], one range with its provider key (a loan).
fn keyed_desc(seq: u32, addr: u64, len: u64, key: u64) -> Vec<u8> {
    let mut b = header(len);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(1u32 | 1 << 31).to_le_bytes());
    b.extend_from_slice(&addr.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&key.to_le_bytes());
    b
}

fn closes_only_the_writer(mut m: Mesh, what: &str, writes: Vec<Write>) {
    for x in writes {
        m.inject(1, 0, x);
    }
    m.settle(100);
    let why = m.engines[0].gone(1).map(str::to_owned);
    assert!(
        why.as_deref().is_some_and(|w| w.contains("malformed")),
        "{what}: {why:?}"
    );
    let want = send(&mut m, 2, 0, 1, 9, 9000);
    let (_, _, got) = m
        .recv(0, Some(2), CTX, None, STEPS)
        .expect("rank 2 still gets through");
    assert_eq!(got, want, "{what}");
}

fn w(data: Vec<u8>, offset: u64, imm: u32) -> Write {
    Write { data, offset, imm }
}

/// A random message: (from, to, tag, len).
fn traffic() -> impl Strategy<Value = Vec<(usize, usize, u32, usize)>> {
    prop::collection::vec((0..3usize, 0..3usize, 0..3u32, 0..12_000usize), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any traffic between three ranks arrives byte for byte, in order per
    /// (source, tag), whatever the inbox and fragment sizes, whichever
    /// order the receives come in, and however deliveries interleave.
    #[test]
    fn random_traffic_arrives_exactly(
        msgs in traffic(),
        inbox in 1024usize..16_384,
        fragment in 64usize..8192,
        order in prop::collection::vec(any::<u32>(), 24),
        trickle in prop::collection::vec(1usize..4, 16),
        single_copy_min in prop_oneof![Just(0usize), 1usize..8192],
        exposed in prop::collection::vec(any::<bool>(), 24),
        shared in prop::collection::vec(any::<bool>(), 24),
    ) {
        // With reads on, some sends are exposed: small ones pumped from the
        // sender's buffer, large ones read from it by the receiver, some of
        // those shared (the sender writes the first half).
        let mut m = Mesh::reading(3, inbox, fragment, single_copy_min);
        for e in &mut m.engines {
            e.oversubscribed = false;
        }
        let mut expect: HashMap<(usize, usize, u32), VecDeque<Vec<u8>>> = HashMap::new();
        for (i, &(from, to, tag, len)) in msgs.iter().enumerate() {
            let data = if exposed[i % exposed.len()] && from != to {
                let data = pattern(i as u64, len);
                m.lend(from, to, tag, data.clone());
                data
            } else {
                send(&mut m, from, to, tag, i as u64, len)
            };
            expect.entry((to, from, tag)).or_default().push_back(data);
            // Deliveries trickle in between posts: a few writes per link.
            let t = trickle[i % trickle.len()];
            for a in 0..3 {
                for b in 0..3 {
                    m.land(a, b, t);
                }
            }
        }
        let mut keys: Vec<(usize, usize, u32)> = msgs.iter().map(|&(f, t, g, _)| (t, f, g)).collect();
        // Receives in a random order of keys; per key in send order.
        let n = keys.len();
        for i in 0..n {
            let j = order[i % order.len()] as usize % n;
            keys.swap(i, j);
        }
        for (k, (to, from, tag)) in keys.into_iter().enumerate() {
            let want = expect.get_mut(&(to, from, tag)).and_then(|q| q.pop_front()).expect("expected");
            let share = shared[k % shared.len()];
            let got = m.recv_sharing(to, Some(from), CTX, Some(tag), STEPS, share);
            prop_assert!(got.is_some(), "{from}->{to} tag {tag} never completed");
            let (_, _, got) = got.unwrap_or_default();
            prop_assert_eq!(got.len(), want.len());
            prop_assert!(got == want, "{}->{} tag {}: wrong bytes", from, to, tag);
        }
        m.settle(10_000);
        prop_assert_eq!(m.lent(), 0, "exposed sends complete");
        for a in 0..3 {
            for b in 0..3 {
                prop_assert!(!m.engines[a].has_pending(b), "{a}->{b} still queued");
            }
            prop_assert!(m.engines[a].peers.iter().all(|p| p.msgs.is_empty()));
        }
    }
}

#[test]
fn receives_match_in_the_order_they_were_posted() {
    let mut m = Mesh::new(2, 4096, 512);
    let sent: Vec<Vec<u8>> = (0..3).map(|i| send(&mut m, 0, 1, 4, i, 10)).collect();
    m.settle(100);
    let e = &mut m.engines[1];
    let ids: Vec<u64> = (0..3).map(|_| e.token()).collect();
    for &id in &ids {
        e.post_recv(Some(0), CTX, Some(4), id);
    }
    // The last posted receive is stepped first: the earlier ones still get
    // the earlier messages.
    let last = e.claim(Some(0), CTX, Some(4), ids[2]).expect("a message");
    let first = e.claim(Some(0), CTX, Some(4), ids[0]).expect("a message");
    let second = e.claim(Some(0), CTX, Some(4), ids[1]).expect("a message");
    assert_eq!(take(e, first), sent[0]);
    assert_eq!(take(e, second), sent[1]);
    assert_eq!(take(e, last), sent[2]);
    // A withdrawn receive leaves the message to the next one.
    let again = send(&mut m, 0, 1, 4, 9, 10);
    m.settle(100);
    let e = &mut m.engines[1];
    let (a, b) = (e.token(), e.token());
    e.post_recv(Some(0), CTX, Some(4), a);
    e.post_recv(Some(0), CTX, Some(4), b);
    e.unpost(a);
    let got = e
        .claim(Some(0), CTX, Some(4), b)
        .expect("a's message goes to b");
    assert_eq!(take(e, got), again);
    assert!(e.posted.is_empty());
}

/// A landing for [`Engine::take_small`] that takes every message: its tag
/// and bytes.
fn grab(tag: u32, p: Piece<'_>) -> Option<(u32, Vec<u8>)> {
    Some((tag, super::harness::read(&p)))
}

#[test]
fn whole_messages_are_taken_only_by_the_receive_that_would_claim_them() {
    let mut m = Mesh::new(2, 4096, 512);
    let empty = send(&mut m, 0, 1, 4, 1, 0);
    let inline = send(&mut m, 0, 1, 4, 2, INLINE_MAX);
    let landed = send(&mut m, 0, 1, 4, 3, INLINE_MAX + 1);
    let split = send(&mut m, 0, 1, 4, 5, 1500);
    let tagged = send(&mut m, 0, 1, 6, 4, 8);
    m.settle(100);
    let e = &mut m.engines[1];
    let taken = |s: Small<(u32, Vec<u8>)>| match s {
        Small::Taken(got) => Some(got),
        _ => None,
    };
    // Nothing queued from itself.
    assert!(matches!(
        e.take_small(1, (CTX, None), 7, false, 64, grab),
        Small::Empty
    ));
    let (a, b) = (e.token(), e.token());
    e.post_recv(Some(0), CTX, Some(4), a);
    e.post_recv(Some(0), CTX, Some(4), b);
    // A receive posted after another that waits leaves it the message.
    assert!(matches!(
        e.take_small(0, (CTX, Some(4)), b, true, 64, grab),
        Small::Other
    ));
    // Another context, another tag, too small a buffer: not taken.
    assert!(matches!(
        e.take_small(0, (CTX + 1, Some(4)), a, true, 64, grab),
        Small::Other
    ));
    assert!(matches!(
        e.take_small(0, (CTX, Some(5)), a, true, 64, grab),
        Small::Other
    ));
    // The first posted receive takes the first message, its posting too.
    assert_eq!(
        taken(e.take_small(0, (CTX, Some(4)), a, true, 64, grab)),
        Some((4, empty))
    );
    assert_eq!(e.posted.len(), 1);
    assert!(matches!(
        e.take_small(0, (CTX, Some(4)), b, true, INLINE_MAX - 1, grab),
        Small::Other
    ));
    // A landing that declines leaves the message where it was.
    assert!(matches!(
        e.take_small(0, (CTX, None), b, true, INLINE_MAX, |_, _| None::<()>),
        Small::Other
    ));
    assert_eq!(
        taken(e.take_small(0, (CTX, None), b, true, INLINE_MAX, grab)),
        Some((4, inline))
    );
    assert!(e.posted.is_empty());
    // A message in one write, queued in the inbox, is taken from there,
    // also by a receive that is not posted (a collective's).
    let c = e.token();
    let credit = e.peers[0].link.as_ref().map(|l| l.inbox.base);
    assert_eq!(
        taken(e.take_small(0, (CTX, Some(4)), c, false, 1 << 20, grab)),
        Some((4, landed))
    );
    assert_ne!(
        e.peers[0].link.as_ref().map(|l| l.inbox.base),
        credit,
        "its inbox space is free"
    );
    // One in several writes goes the general way.
    assert!(matches!(
        e.take_small(0, (CTX, Some(4)), c, false, 1 << 20, grab),
        Small::Other
    ));
    let claimed = e
        .claim(Some(0), CTX, Some(4), c)
        .expect("the split message");
    assert_eq!(take(e, claimed), split);
    // A message another receive claimed is not taken by this one.
    let d = e.token();
    e.claim(Some(0), CTX, Some(6), d)
        .expect("the tagged message");
    assert!(matches!(
        e.take_small(0, (CTX, Some(6)), c, false, 64, grab),
        Small::Other
    ));
    assert_eq!(
        taken(e.take_small(0, (CTX, Some(6)), d, false, 64, grab)),
        Some((6, tagged))
    );
    assert!(e.peers[0].msgs.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Posted receives stepped in any order, each trying the fast path
    /// first (`take_small`, as a point-to-point receive does), get the
    /// messages MPI's order gives them: the receives, in the order they
    /// were posted, each take the first matching message not taken.
    #[test]
    fn the_fast_path_keeps_the_posted_order(
        msgs in proptest::collection::vec(
            (0u32..3, prop_oneof![0usize..100, 500usize..1200]),
            1..12,
        ),
        any in proptest::collection::vec(any::<bool>(), 12),
        order in proptest::collection::vec(any::<u16>(), 12),
    ) {
        let mut m = Mesh::new(2, 32768, 512);
        let sent: Vec<(u32, Vec<u8>)> = msgs
            .iter()
            .enumerate()
            .map(|(i, &(tag, len))| (tag, send(&mut m, 0, 1, tag, i as u64, len)))
            .collect();
        m.settle(1000);
        // One receive per message, on its tag or on any, posted in order.
        let tags: Vec<Option<u32>> = msgs
            .iter()
            .enumerate()
            .map(|(i, &(tag, _))| (!any[i]).then_some(tag))
            .collect();
        let mut model: Vec<Option<usize>> = Vec::new();
        let mut taken = vec![false; sent.len()];
        for t in &tags {
            let hit = (0..sent.len()).find(|&j| !taken[j] && t.is_none_or(|t| t == sent[j].0));
            if let Some(j) = hit {
                taken[j] = true;
            }
            model.push(hit);
        }
        let e = &mut m.engines[1];
        let ids: Vec<u64> = tags.iter().map(|_| e.token()).collect();
        for (t, &id) in tags.iter().zip(&ids) {
            e.post_recv(Some(0), CTX, *t, id);
        }
        let mut steps: Vec<usize> = (0..tags.len()).collect();
        let n = steps.len();
        for (i, &o) in order.iter().enumerate().take(n) {
            steps.swap(i, o as usize % n);
        }
        for r in steps {
            let got = match e.take_small(0, (CTX, tags[r]), ids[r], true, 1 << 20, grab) {
                Small::Taken((_, bytes)) => Some(bytes),
                _ => e.claim(Some(0), CTX, tags[r], ids[r]).map(|c| take(e, c)),
            };
            let want = model[r].map(|j| sent[j].1.clone());
            prop_assert!(got == want, "receive {} (tag {:?}) got the wrong message", r, tags[r]);
        }
        prop_assert!(e.peers[0].msgs.is_empty());
        prop_assert!(e.posted.is_empty());
    }
}

/// The writes posted while `f` runs.
fn writes_during(m: &mut Mesh, f: impl FnOnce(&mut Mesh)) -> u64 {
    let before = m.writes();
    f(m);
    m.writes() - before
}

#[test]
fn large_exposed_sends_are_read_in_place() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(7, 100_000);
    // Far more than the inbox, yet one read request and one FIN cross.
    let writes = writes_during(&mut m, |m| {
        m.lend(0, 1, 5, want.clone());
        assert_eq!(m.lent(), 1, "pending until the peer read it");
        let (_, _, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("arrives");
        assert_eq!(got, want);
        m.settle(10);
    });
    assert_eq!(writes, 2, "an RTS and a FIN");
    assert_eq!(m.lent(), 0, "the FIN completed the send");
    // Below the threshold, and sends that copy, go through the inbox.
    let small = pattern(8, 1000);
    m.lend(0, 1, 5, small.clone());
    let copied = send(&mut m, 0, 1, 5, 9, 50_000);
    for want in [small, copied] {
        let (_, _, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("arrives");
        assert_eq!(got, want);
    }
    assert!(m.engines.iter().all(|e| e
        .peers
        .iter()
        .filter_map(|p| p.link.as_ref())
        .all(|l| l.reading.is_empty())));
}

#[test]
fn a_reduction_reads_a_request_whole_and_frees_the_sender_before_combining() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    for (len, whole) in [(100_000, true), (STAGED_READ_MAX + 8, false)] {
        let want = pattern(len as u64, len);
        m.lend(0, 1, 5, want.clone());
        m.settle(10);
        let e = &mut m.engines[1];
        let claimer = e.token();
        let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
        let mut got = Vec::new();
        let r = e.consume_with(
            &c,
            &mut Staged::new(|at, p: Piece<'_>, _: &mut [u64]| {
                assert_eq!(matches!(p, Piece::Bytes(_)), whole, "{len} bytes");
                let mut b = vec![0u8; p.len()];
                p.read_at(0, &mut b).unwrap();
                assert_eq!(at, got.len());
                got.extend(b);
                Ok(())
            }),
        );
        assert_eq!(r.unwrap(), (len, true));
        assert_eq!(got, want);
        m.settle(10);
        assert_eq!(m.lent(), 0, "the FIN completed the send");
    }
    // The sender is free before the combining starts: a combining that
    // fails still leaves it free, and the message consumed.
    m.lend(0, 1, 5, pattern(9, 100_000));
    m.settle(10);
    let e = &mut m.engines[1];
    let claimer = e.token();
    let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
    let r = e.consume_with(
        &c,
        &mut Staged::new(|_, _, _: &mut [u64]| {
            Err(CollError::InvalidArgument("combining failed".into()))
        }),
    );
    assert!(matches!(r, Err(CollError::InvalidArgument(_))), "{r:?}");
    m.settle(10);
    assert_eq!(m.lent(), 0, "FIN sent before the combining");
    assert!(m.engines[1].claim(Some(0), CTX, None, claimer).is_none());
}

/// A staged [`Sink`] for these tests: lands through `f`; with `stage`, a
/// staged read of its length lands there, and `combined` counts the
/// combinings (failing them with `fail`).
struct Staged<F> {
    f: F,
    stage: Option<Vec<u8>>,
    combined: usize,
    fail: bool,
}

impl<F: FnMut(usize, Piece<'_>, &mut [u64]) -> Result<(), CollError>> Staged<F> {
    fn new(f: F) -> Self {
        Staged {
            f,
            stage: None,
            combined: 0,
            fail: false,
        }
    }
}

impl<F: FnMut(usize, Piece<'_>, &mut [u64]) -> Result<(), CollError>> Sink for &mut Staged<F> {
    fn land(&mut self, off: usize, piece: Piece<'_>, scratch: &mut [u64]) -> Result<(), CollError> {
        (self.f)(off, piece, scratch)
    }
    fn staged(&self) -> bool {
        true
    }
    fn stage(&mut self, _len: usize) -> Option<&mut [u8]> {
        self.stage.as_deref_mut()
    }
    fn combine_staged(&mut self) -> Result<(), CollError> {
        self.combined += 1;
        match self.fail {
            true => Err(CollError::InvalidArgument("combining failed".into())),
            false => Ok(()),
        }
    }
}

#[test]
fn a_staged_read_lands_where_the_sink_says_and_is_combined_there_after_the_fin() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let never = |_: usize, _: Piece<'_>, _: &mut [u64]| -> Result<(), CollError> {
        panic!("a read staged in the sink's bytes is not landed again")
    };
    let want = pattern(21, 50_000);
    m.lend(0, 1, 5, want.clone());
    m.settle(10);
    let e = &mut m.engines[1];
    let claimer = e.token();
    let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
    let mut sink = Staged::new(never);
    sink.stage = Some(vec![0u8; want.len()]);
    assert_eq!(e.consume_with(&c, &mut sink).unwrap(), (want.len(), true));
    assert_eq!(sink.stage.as_deref(), Some(&want[..]), "read straight in");
    assert_eq!(sink.combined, 1);
    m.settle(10);
    assert_eq!(m.lent(), 0, "the FIN completed the send");

    // Bytes of another length are not used: the engine stages the read
    // in its own buffer and lands it.
    let want = pattern(22, 30_000);
    m.lend(0, 1, 5, want.clone());
    m.settle(10);
    let e = &mut m.engines[1];
    let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
    let mut got = Vec::new();
    let mut sink = Staged::new(|at, p: Piece<'_>, _: &mut [u64]| {
        assert!(matches!(p, Piece::Bytes(_)));
        let mut b = vec![0u8; p.len()];
        p.read_at(0, &mut b).unwrap();
        assert_eq!(at, 0);
        got = b;
        Ok(())
    });
    sink.stage = Some(vec![0u8; 10]);
    assert_eq!(e.consume_with(&c, &mut sink).unwrap(), (want.len(), true));
    assert_eq!(sink.combined, 0);
    drop(sink);
    assert_eq!(got, want);

    // A combining in place that fails: the sender is free all the same,
    // and the message consumed.
    m.lend(0, 1, 5, pattern(23, 20_000));
    m.settle(10);
    let e = &mut m.engines[1];
    let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
    let mut sink = Staged::new(never);
    sink.stage = Some(vec![0u8; 20_000]);
    sink.fail = true;
    let r = e.consume_with(&c, &mut sink);
    assert!(matches!(r, Err(CollError::InvalidArgument(_))), "{r:?}");
    assert_eq!(sink.combined, 1);
    m.settle(10);
    assert_eq!(m.lent(), 0, "FIN sent before the combining");
    assert!(m.engines[1].claim(Some(0), CTX, None, claimer).is_none());
}

#[test]
fn a_waiting_receiver_reads_requests_out_so_the_sender_is_free() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(3, 40_000);
    m.lend(0, 1, 5, want.clone());
    let other = send(&mut m, 0, 1, 6, 4, 100);
    // Rank 1 waits for tag 6 only: it reads tag 5 out on the way.
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(6), STEPS).expect("tag 6");
    assert_eq!(got, other);
    for _ in 0..1100 {
        if m.lent() == 0 {
            break;
        }
        let claimer = m.engines[1].token();
        m.engines[1].relieve(claimer, None);
        m.step();
    }
    assert_eq!(m.lent(), 0, "the sender got its buffer back unmatched");
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("tag 5");
    assert_eq!(got, want, "read out before the sender moved on");
}

#[test]
fn a_copying_peer_gets_no_read_requests_and_lies_close_the_liar() {
    // Rank 1 does not read: rank 0 sends it everything through the inbox.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[0].peers[1].link.as_mut().unwrap().peer_reads = Some(false);
    let want = pattern(5, 30_000);
    m.lend(0, 1, 5, want.clone());
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("arrives");
    assert_eq!(got, want);

    let rts = wire::imm(Kind::Rts);
    let real = pattern(1, 256);
    let cases: Vec<(&str, bool, Vec<Write>)> = vec![
        (
            "a read request to a rank that never offered to read",
            false,
            vec![w(desc(0, real.as_ptr() as u64, 256), 0, rts)],
        ),
        (
            "a read request whose ranges disagree with its header",
            true,
            vec![w(
                [header(10), desc(0, 4096, 256)[16..].to_vec()].concat(),
                0,
                rts,
            )],
        ),
        (
            // Loans are read through a link that lends (verbs, ofi); on this
            // one a key names nothing, whatever it forges.
            "a read request naming loans on a link that does not lend",
            true,
            vec![w(keyed_desc(0, real.as_ptr() as u64, 256, 0x1234), 0, rts)],
        ),
        (
            "a FIN for nothing",
            true,
            vec![w(vec![], 0, wire::imm(Kind::Fin(3)))],
        ),
        (
            "a second word on reading",
            true,
            vec![w(vec![], 0, wire::imm(Kind::Reads(true)))],
        ),
    ];
    for (what, reads, writes) in cases {
        let m = Mesh::reading(3, 4096, 512, if reads { 1024 } else { 0 });
        closes_only_the_writer(m, what, writes);
    }
    // Ranges that are not mapped in the sender: the receive fails, the
    // sender is taken for gone, nothing panics.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.inject(0, 1, w(desc(0, 16, 4096), 0, rts));
    m.settle(10);
    let e = &mut m.engines[1];
    let claimer = e.token();
    let c = e.claim(Some(0), CTX, None, claimer).expect("the request");
    let mut out = vec![0u8; 4096];
    let r = e.consume(&c, |at, p, _| {
        p.read_at(0, &mut out[at..at + p.len()])
            .map_err(|source| CollError::Fabric { rank: 0, source })
    });
    assert!(
        matches!(r, Err(CollError::PeerGone { rank: 0, .. })),
        "{r:?}"
    );
    assert!(m.engines[1].gone(0).is_some());
}

#[test]
fn a_send_being_read_is_waited_for_before_it_is_handed_back() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.lend(0, 1, 5, pattern(2, 20_000));
    m.settle(10);
    let (token, data) = m.lent_mut(0);
    let (token, data) = (token, data.clone());
    // The harness's flush timeout is zero: the wait gives up at once and
    // takes the reader for gone rather than free a buffer it may read.
    m.engines[0].unborrow(1, token, &[&data]);
    assert!(m.engines[0]
        .gone(1)
        .is_some_and(|w| w.contains("read a message in place")));
    // A request still queued for credit is turned into a copy instead.
    let mut m = Mesh::reading(2, 1024, 128, 1024);
    let fill = send(&mut m, 0, 1, 1, 1, 4000);
    let want = pattern(6, 5000);
    m.lend(0, 1, 2, want.clone());
    let (token, data) = m.lent_mut(0);
    let (token, data) = (token, data.clone());
    assert!(m.engines[0].peers[1]
        .link
        .as_ref()
        .unwrap()
        .out
        .iter()
        .any(|o| o.rts.is_some()));
    m.engines[0].unborrow(1, token, &[&data]);
    m.lent_mut(0).1.fill(0);
    for (tag, want) in [(1, fill), (2, want)] {
        let (_, _, got) = m.recv(1, Some(0), CTX, Some(tag), STEPS).expect("arrives");
        assert_eq!(got, want);
    }
}

#[test]
fn a_send_read_before_its_reader_left_is_done() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let data = pattern(4, 30_000);
    let token = m.engines[0]
        .post(1, CTX, 5, &[&data], super::Lend::Expose)
        .expect("post")
        .expect("a read request is borrowed");
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(5), STEPS).expect("read");
    assert_eq!(got, data);
    m.land_all();
    m.engines[0].progress();
    // The reader leaves right after its FIN.
    m.cut(0, 1);
    m.engines[0].progress();
    assert!(m.engines[0].gone(1).is_some());
    assert_eq!(
        m.engines[0].pump(1, token, &[&data]).expect("done"),
        (0, true)
    );
}

/// Rank 1 claims rank 0's read request of `want` and answers with PUSH
/// into `out`.
fn push_into(m: &mut Mesh, want: &[u8], out: &mut [u8]) -> Claimed {
    let c = lent_and_claimed(m, want);
    let e = &mut m.engines[1];
    assert!(e.is_read_request(&c));
    let segs = [(out.as_mut_ptr() as u64, out.len() as u64)];
    assert!(e.push(&c, &segs).expect("push"), "a pushable request");
    c
}

/// Rank 0 lends `want` to rank 1 (tag 5), which claims it.
fn lent_and_claimed(m: &mut Mesh, want: &[u8]) -> Claimed {
    m.lend(0, 1, 5, want.to_vec());
    m.settle(10);
    let e = &mut m.engines[1];
    let claimer = e.token();
    e.claim(Some(0), CTX, Some(5), claimer)
        .expect("the request")
}

#[test]
fn a_pushed_read_request_is_written_by_its_sender() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(7, 30_000);
    let mut out = vec![0u8; want.len()];
    let c = push_into(&mut m, &want, &mut out);
    assert!(!m.engines[1].is_read_request(&c), "no longer ours to read");
    // Until the sender sees the PUSH and writes, the receive is not done.
    assert_eq!(
        m.engines[1].consume(&c, |_, _, _| Ok(())).expect("waits"),
        (0, false)
    );
    m.settle(10);
    assert_eq!(m.lent(), 0, "the send completed by writing");
    let (got, done) = m.engines[1]
        .consume(&c, |_, _, _| panic!("nothing to hand over"))
        .expect("written");
    assert_eq!((got, done), (want.len(), true));
    assert_eq!(out, want);
    let s = m.engines[1].stats;
    assert_eq!(
        (s.messages_written_in_place, s.bytes_written_in_place),
        (1, want.len() as u64)
    );
    assert_eq!(s.messages_read_in_place, 0);
    // A second message on the same link still flows.
    let again = pattern(8, 20_000);
    m.lend(0, 1, 6, again.clone());
    let (_, _, got) = m.recv(1, Some(0), CTX, Some(6), STEPS).expect("read");
    assert_eq!(got, again);
}

#[test]
fn a_shared_read_request_is_half_written_by_its_sender_and_half_read() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(9, 30_001);
    let mut out = vec![0u8; want.len()];
    let c = lent_and_claimed(&mut m, &want);
    let half = 15_000;
    let segs = [(out.as_mut_ptr() as u64, half as u64)];
    assert!(m.engines[1].push(&c, &segs).expect("a partial push"));
    // We read the rest now; the sender has not written its part yet, so
    // the receive waits, and the send is not done either.
    let mut tail = vec![0u8; want.len() - half];
    let (got, done) = m.engines[1]
        .consume(&c, |at, p, _| {
            assert_eq!((at, p.len()), (half, want.len() - half));
            p.read_at(0, &mut tail)
                .map_err(|source| CollError::Fabric { rank: 0, source })
        })
        .expect("our half");
    assert_eq!((got, done), (0, false));
    assert_eq!(tail, want[half..]);
    m.settle(10);
    assert_eq!(m.lent(), 1, "the send waits for our FIN after writing");
    let (got, done) = m.engines[1]
        .consume(&c, |_, _, _| panic!("nothing left to read"))
        .expect("both halves");
    assert_eq!((got, done), (want.len(), true));
    assert_eq!(out[..half], want[..half], "the sender's half");
    m.settle(10);
    assert_eq!(m.lent(), 0, "the FIN completed the send");
    let s = m.engines[1].stats;
    assert_eq!((s.messages_shared, s.bytes_shared), (1, want.len() as u64));
    assert_eq!(s.messages_read_in_place + s.messages_written_in_place, 0);
    // Too small to share: no PUSH, nothing sent; still ours to read.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[1].cfg.share_min = 64 << 10;
    let c = lent_and_claimed(&mut m, &want);
    let before = m.writes();
    assert!(!m.engines[1].push(&c, &segs).unwrap());
    assert_eq!(m.writes(), before);
    assert!(m.engines[1].is_read_request(&c));
}

#[test]
fn a_push_is_only_for_a_read_request_of_a_writing_peer() {
    // Below the threshold, to a peer that cannot write, or for a message
    // in the inbox: no PUSH, nothing sent.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[1].peers[0].link.as_mut().unwrap().peer_writes = false;
    let want = pattern(3, 30_000);
    let c = lent_and_claimed(&mut m, &want);
    let mut out = vec![0u8; want.len()];
    let segs = [(out.as_mut_ptr() as u64, out.len() as u64)];
    let before = m.writes();
    assert!(!m.engines[1].push(&c, &segs).unwrap());
    assert_eq!(m.writes(), before);
    assert!(m.engines[1].is_read_request(&c), "still to be read");
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[1].cfg.push_min = 64 << 10;
    let c = lent_and_claimed(&mut m, &want);
    assert!(!m.engines[1].push(&c, &segs).unwrap(), "under push_min");
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    m.engines[0]
        .post(1, CTX, 5, &[&want], super::Lend::Copy)
        .unwrap();
    m.settle(10);
    let c = m.engines[1].claim(Some(0), CTX, Some(5), 9).expect("claim");
    assert!(!m.engines[1].is_read_request(&c));
    assert!(!m.engines[1].push(&c, &segs).unwrap(), "in the inbox");
}

#[test]
fn a_receive_that_gives_up_waits_for_the_write_it_asked_for() {
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(9, 30_000);
    let mut out = vec![0u8; want.len()];
    let c = push_into(&mut m, &want, &mut out);
    // The sender never runs again; the harness's flush timeout is zero:
    // the receiver takes it for gone rather than return a buffer it may
    // still write into.
    m.engines[1].discard(&c);
    assert!(m.engines[1]
        .gone(0)
        .is_some_and(|w| w.contains("write a message in place")));
}

#[test]
fn pushes_and_wrotes_that_answer_nothing_close_the_liar() {
    let push = wire::imm(Kind::Push);
    let cases: Vec<(&str, bool, Vec<Write>)> = vec![
        (
            "a push to a rank that never offered to write",
            false,
            vec![w(desc(0, 4096, 256), 0, push)],
        ),
        (
            "a push for no read request",
            true,
            vec![w(desc(0, 4096, 256), 0, push)],
        ),
        (
            "a WROTE for nothing",
            true,
            vec![w(vec![], 0, wire::imm(Kind::Wrote(3)))],
        ),
        (
            "a second word on writing",
            true,
            vec![w(vec![], 0, wire::imm(Kind::Writes))],
        ),
    ];
    for (what, writes_ok, writes) in cases {
        let m = Mesh::reading(3, 4096, 512, if writes_ok { 1024 } else { 0 });
        closes_only_the_writer(m, what, writes);
    }
}

#[test]
fn a_push_for_more_than_the_message_fails_the_send_not_the_process() {
    // A receiver asks the sender to write more bytes than its message
    // holds (a share's PUSH names a first part, never more): the sender
    // writes nothing, takes the receiver for lost, nothing panics.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(5, 4096);
    m.lend(0, 1, 5, want.clone());
    m.settle(10);
    let out = vec![0u8; 2 * want.len()];
    let push = wire::imm(Kind::Push);
    m.inject(
        1,
        0,
        w(desc(0, out.as_ptr() as u64, out.len() as u64), 0, push),
    );
    m.settle(10);
    assert!(m.engines[0].gone(1).is_some(), "the liar is lost");
    assert!(out.iter().all(|&b| b == 0), "nothing written");
    assert_eq!(m.lent(), 0, "the send ended");
}

#[test]
fn a_push_into_unmapped_ranges_fails_the_send_not_the_process() {
    // A receiver that names ranges it does not have: the sender's write
    // fails, it takes the receiver for gone, nothing panics.
    let mut m = Mesh::reading(2, 4096, 512, 1024);
    let want = pattern(2, 4096);
    m.lend(0, 1, 5, want.clone());
    m.settle(10);
    let c = m.engines[1].claim(Some(0), CTX, Some(5), 9).expect("claim");
    assert!(m.engines[1].push(&c, &[(16, want.len() as u64)]).unwrap());
    m.settle(10);
    assert!(
        m.engines[0].gone(1).is_some(),
        "the writer gave up on rank 1"
    );
}
