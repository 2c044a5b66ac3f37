//! N engines in one thread, joined by [`MemLink`]s, in the manner of
//! quinn's `Pair`: a write a rank posts stays in flight until the test
//! lands it, so a test decides the order of every event and replays it
//! exactly. The engine has no timers in its protocol (only `drain` on
//! drop reads the clock, bounded here by a zero flush timeout), so no
//! clock is needed to make a run deterministic.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::time::Duration;

use rfx_fabric::cma::PeerMemory;
use rfx_fabric::{
    Completion, Config, Fabric, FabricError, MemoryRegion, PollMode, RemoteBuffer, TransportKind,
    WriteCompletion,
};

use super::{online_cpus, Engine, EngineConfig, Lend, Link, Piece};

/// One posted write, not landed yet.
#[derive(Debug, Clone)]
pub(super) struct Write {
    pub(super) data: Vec<u8>,
    pub(super) offset: u64,
    pub(super) imm: u32,
}

/// Everything in flight between the ranks. Keys are (writer, owner):
/// the owner's inbox that the writer writes into.
#[derive(Debug, Default)]
struct Wires {
    flight: HashMap<(usize, usize), VecDeque<Write>>,
    landed: HashMap<(usize, usize), VecDeque<WriteCompletion>>,
    inboxes: HashMap<(usize, usize), MemoryRegion>,
    cut: HashSet<(usize, usize)>,
    writes: u64,
}

/// A link in memory: its writes go in flight, its completions are those
/// the harness landed.
#[derive(Debug)]
pub(super) struct MemLink {
    me: usize,
    peer: usize,
    target: RemoteBuffer,
    wires: Rc<RefCell<Wires>>,
    /// All ranks live in this process: reading "the peer's" memory is
    /// reading our own, through the same system call as between processes.
    mem: Option<PeerMemory>,
    /// The peer runs on our cores (the mesh's ranks may stand for ranks
    /// of several hosts).
    shares_cpus: bool,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Link for MemLink {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn peer_inbox(&self) -> Option<RemoteBuffer> {
        Some(self.target)
    }

    fn write_imm(
        &mut self,
        data: &[u8],
        target: &RemoteBuffer,
        offset: u64,
        imm: u32,
    ) -> Result<(), FabricError> {
        let mut w = self.wires.borrow_mut();
        if w.cut.contains(&pair(self.me, self.peer)) {
            return Err(FabricError::PeerGone("the link was cut".into()));
        }
        // As every provider does: refuse a write outside what the peer
        // exposed before anything is sent.
        let addr = target.addr.saturating_add(offset);
        if *target != self.target || !self.target.contains(addr, data.len() as u64) {
            return Err(FabricError::RemoteAccess {
                rkey: target.rkey,
                addr,
                len: data.len() as u64,
                reason: "outside the peer's inbox",
            });
        }
        w.writes += 1;
        w.flight
            .entry((self.me, self.peer))
            .or_default()
            .push_back(Write {
                data: data.to_vec(),
                offset,
                imm,
            });
        Ok(())
    }

    fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        let mut w = self.wires.borrow_mut();
        if let Some(c) = w
            .landed
            .get_mut(&(self.peer, self.me))
            .and_then(|q| q.pop_front())
        {
            return Ok(Some(Completion::Write(c)));
        }
        if w.cut.contains(&pair(self.me, self.peer)) {
            return Err(FabricError::PeerGone("the link was cut".into()));
        }
        Ok(None)
    }

    fn arm(&mut self) -> Result<bool, FabricError> {
        Ok(false)
    }

    fn disarm(&mut self) {}

    fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn peer_memory(&self) -> Option<&PeerMemory> {
        self.mem.as_ref()
    }

    fn shares_cpus(&self) -> bool {
        self.shares_cpus
    }
}

/// An exposed send the mesh pumps on every step: (from, to, token, bytes).
type Lent = (usize, usize, u64, Vec<u8>);

/// `n` engines joined all to all.
pub(super) struct Mesh {
    pub(super) engines: Vec<Engine<MemLink>>,
    wires: Rc<RefCell<Wires>>,
    lent: Vec<Lent>,
}

impl Mesh {
    /// `n` ranks, each exposing an inbox of `inbox` bytes to every peer;
    /// data writes of at most `fragment` bytes.
    pub(super) fn new(n: usize, inbox: usize, fragment: usize) -> Mesh {
        Mesh::reading(n, inbox, fragment, 0)
    }

    /// As [`Mesh::new`], and exposed sends of at least `single_copy_min`
    /// bytes (0: none) go as read requests, read through the kernel.
    pub(super) fn reading(n: usize, inbox: usize, fragment: usize, single_copy_min: usize) -> Mesh {
        Mesh::build(n, inbox, fragment, single_copy_min, online_cpus(), |_| 0)
    }

    /// `n` ranks of 4 KiB inboxes on hosts of `cores` cores each, rank
    /// `r` on host `host(r)`.
    pub(super) fn placed(n: usize, cores: usize, host: fn(usize) -> usize) -> Mesh {
        Mesh::build(n, 4096, 512, 0, cores, host)
    }

    fn build(
        n: usize,
        inbox: usize,
        fragment: usize,
        single_copy_min: usize,
        cores: usize,
        host: fn(usize) -> usize,
    ) -> Mesh {
        let fabric = Fabric::open(Config::default()).expect("a fabric with no network");
        let wires = Rc::new(RefCell::new(Wires::default()));
        for owner in 0..n {
            for writer in (0..n).filter(|&w| w != owner) {
                let mr = fabric.register(inbox).expect("an inbox");
                wires.borrow_mut().inboxes.insert((writer, owner), mr);
            }
        }
        let cfg = EngineConfig {
            progress: PollMode::Hot,
            fragment,
            flush_timeout: Duration::ZERO,
            single_copy_min,
            lend_min: 0,
            push_min: single_copy_min,
            cores,
            share_min: single_copy_min,
        };
        let engines = (0..n)
            .map(|me| {
                let links = (0..n)
                    .map(|peer| {
                        (peer != me).then(|| {
                            let w = wires.borrow();
                            let link = MemLink {
                                me,
                                peer,
                                target: w.inboxes[&(me, peer)].remote(),
                                wires: Rc::clone(&wires),
                                mem: (single_copy_min > 0).then(|| {
                                    PeerMemory::this_process().expect("reading our own memory")
                                }),
                                shares_cpus: host(peer) == host(me),
                            };
                            (link, w.inboxes[&(peer, me)].clone())
                        })
                    })
                    .collect();
                Engine::new(me, links, cfg.clone()).expect("an engine")
            })
            .collect();
        let mut m = Mesh {
            engines,
            wires,
            lent: Vec::new(),
        };
        // Each rank's first write says whether it reads its peers' memory:
        // deliver those, and count writes from here.
        m.settle(10);
        m.wires.borrow_mut().writes = 0;
        m
    }

    /// Sends `data` from `from` to `to` exposed ([`Lend::Expose`]): the
    /// mesh holds it and pumps it on every step until it completes.
    pub(super) fn lend(&mut self, from: usize, to: usize, tag: u32, data: Vec<u8>) {
        let token = self.engines[from]
            .post(to, super::tests::CTX, tag, &[&data], Lend::Expose)
            .expect("post");
        if let Some(t) = token {
            self.lent.push((from, to, t, data));
        }
    }

    /// Exposed sends not complete yet.
    pub(super) fn lent(&self) -> usize {
        self.lent.len()
    }

    /// The token and bytes of exposed send number `i` (still held by the
    /// mesh).
    pub(super) fn lent_mut(&mut self, i: usize) -> (u64, &mut Vec<u8>) {
        let l = &mut self.lent[i];
        (l.2, &mut l.3)
    }

    fn pump_lent(&mut self) -> bool {
        let mut moved = false;
        let engines = &mut self.engines;
        self.lent.retain(|(from, to, token, data)| {
            match engines[*from].pump(*to, *token, &[data]) {
                Ok((n, done)) => {
                    moved |= n > 0;
                    if !done {
                        // As a sender waiting in the library does: what it
                        // will not take itself leaves its inbox, so that the
                        // receiver's PUSH gets through.
                        engines[*from].relieve(0, None);
                    }
                    !done
                }
                Err(_) => false,
            }
        });
        moved
    }

    /// Lands up to `max` of the writes `from` posted to `to`, in order.
    /// Returns how many landed.
    pub(super) fn land(&mut self, from: usize, to: usize, max: usize) -> usize {
        let mut w = self.wires.borrow_mut();
        let mut n = 0;
        while n < max {
            let Some(x) = w.flight.get_mut(&(from, to)).and_then(|q| q.pop_front()) else {
                break;
            };
            let mr = &w.inboxes[&(from, to)];
            mr.write_at(x.offset as usize, &x.data).expect("in bounds");
            let c = WriteCompletion {
                imm: x.imm,
                rkey: mr.rkey(),
                offset: x.offset,
                len: x.data.len() as u32,
            };
            w.landed.entry((from, to)).or_default().push_back(c);
            n += 1;
        }
        n
    }

    /// Lands everything in flight.
    pub(super) fn land_all(&mut self) -> usize {
        let n = self.engines.len();
        let mut landed = 0;
        for from in 0..n {
            for to in 0..n {
                landed += self.land(from, to, usize::MAX);
            }
        }
        landed
    }

    /// Puts a write in flight from `from` to `to` as if `from`'s engine had
    /// posted it (a hostile or broken peer).
    pub(super) fn inject(&mut self, from: usize, to: usize, x: Write) {
        self.wires
            .borrow_mut()
            .flight
            .entry((from, to))
            .or_default()
            .push_back(x);
    }

    /// Breaks the link between `a` and `b` for good (writes in flight are
    /// lost, as with a crashed peer).
    pub(super) fn cut(&mut self, a: usize, b: usize) {
        let mut w = self.wires.borrow_mut();
        w.cut.insert(pair(a, b));
        w.flight.remove(&(a, b));
        w.flight.remove(&(b, a));
    }

    /// Writes in flight from `from` to `to`.
    pub(super) fn in_flight(&self, from: usize, to: usize) -> usize {
        self.wires
            .borrow()
            .flight
            .get(&(from, to))
            .map_or(0, |q| q.len())
    }

    /// Writes posted since the start.
    pub(super) fn writes(&self) -> u64 {
        self.wires.borrow().writes
    }

    /// Lands everything, then progresses every engine once. True if
    /// anything moved.
    pub(super) fn step(&mut self) -> bool {
        let landed = self.land_all() > 0;
        let mut moved = landed | self.pump_lent();
        for e in &mut self.engines {
            moved |= e.progress();
        }
        self.check_invariants();
        moved
    }

    /// Steps until nothing moves, at most `max` times. Returns the steps.
    pub(super) fn settle(&mut self, max: usize) -> usize {
        for i in 0..max {
            if !self.step() {
                return i;
            }
        }
        max
    }

    /// The flow-control invariants of every link, both directions.
    pub(super) fn check_invariants(&self) {
        for (me, e) in self.engines.iter().enumerate() {
            for (peer, p) in e.peers.iter().enumerate() {
                let Some(c) = &p.link else { continue };
                assert!(
                    c.win.ring.outstanding() <= c.win.ring.cap(),
                    "{me}->{peer}: {} bytes outstanding in a window of {}",
                    c.win.ring.outstanding(),
                    c.win.ring.cap()
                );
                assert!(c.inbox.credited <= c.inbox.freed && c.inbox.freed <= c.inbox.rpos);
                assert!(c.inbox.rpos - c.inbox.freed <= c.inbox.size);
                let ids: Vec<u64> = p.msgs.iter().map(|m| m.id).collect();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "messages in order");
            }
        }
    }

    /// Receives at `at` the message from `src` on `ctx` with `tag` (any
    /// if `None`), relieving the inboxes as a waiting receive does.
    /// `None` if it is not complete after `max` steps.
    pub(super) fn recv(
        &mut self,
        at: usize,
        src: Option<usize>,
        ctx: u32,
        tag: Option<u32>,
        max: usize,
    ) -> Option<(usize, u32, Vec<u8>)> {
        self.recv_sharing(at, src, ctx, tag, max, false)
    }

    /// As [`Mesh::recv`]; with `share`, a read request is shared with its
    /// sender where the engine allows it (a PUSH for the first half, the
    /// rest read here), as a bcast's leaf does.
    pub(super) fn recv_sharing(
        &mut self,
        at: usize,
        src: Option<usize>,
        ctx: u32,
        tag: Option<u32>,
        max: usize,
        share: bool,
    ) -> Option<(usize, u32, Vec<u8>)> {
        let claimer = self.engines[at].token();
        let mut out = Vec::new();
        // Where a shared message lands whole (the sender writes its first
        // half there): allocated once, never moved.
        let mut whole: Option<(Vec<u8>, usize)> = None;
        let mut claimed = None;
        for spins in 1..=max as u32 {
            let e = &mut self.engines[at];
            if claimed.is_none() {
                claimed = e.claim(src, ctx, tag, claimer);
                if let Some(c) = claimed.filter(|c| share && e.is_read_request(c)) {
                    let mut buf = vec![0u8; c.total];
                    let half = super::shared_part(c.total);
                    let segs = [(buf.as_mut_ptr() as u64, half as u64)];
                    if half > 0 && e.push(&c, &segs).expect("push") {
                        whole = Some((buf, half));
                    }
                }
            }
            if let Some(c) = claimed {
                let (_, done) = e
                    .consume(&c, |at, piece, _| {
                        match &mut whole {
                            Some((buf, half)) => {
                                assert!(at >= *half, "only the rest is ours to read");
                                buf[at..at + piece.len()].copy_from_slice(&read(&piece));
                            }
                            None => {
                                assert_eq!(at, out.len(), "pieces in order");
                                out.extend_from_slice(&read(&piece));
                            }
                        }
                        Ok(())
                    })
                    .expect("consume");
                if done {
                    if let Some((buf, _)) = whole.take() {
                        out = buf;
                    }
                    assert_eq!(out.len(), c.total);
                    return Some((c.src, c.tag, out));
                }
                // As a receive task does: the rest never comes.
                if e.gone(c.src).is_some() {
                    e.unclaim(&c);
                    return None;
                }
            }
            if self.engines[at].relieve_due(spins) {
                self.engines[at].relieve(claimer, None);
            }
            self.step();
        }
        if let Some(c) = claimed {
            self.engines[at].unclaim(&c);
        }
        None
    }
}

/// The bytes of a piece.
pub(super) fn read(p: &Piece<'_>) -> Vec<u8> {
    let mut out = vec![0; p.len()];
    p.read_at(0, &mut out).expect("the piece's bytes");
    out
}

/// `len` bytes that differ by message and position.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}
