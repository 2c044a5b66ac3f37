//! [`Endpoint`]: a connection to one peer over the chosen provider.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::caps::{Caps, TransportKind};
use crate::completion::{Completion, PollMode, WriteCompletion, WriteData};
use crate::error::FabricError;
use crate::loan::{LentBuffer, Loan};
use crate::mr::{check_remote, RemoteBuffer};
use crate::provider::Provider;
use crate::{shm, tcp};

/// How long a hot wait spins before it also yields the CPU between bursts
/// of polls: longer than a round trip on shm, tcp over loopback or RDMA.
const HOT_SPIN_BUDGET: Duration = Duration::from_micros(50);

/// Static dispatch over the built providers (Lamellar's `Lamellae` enum).
#[derive(Debug)]
pub(crate) enum Inner {
    Tcp(tcp::TcpEndpoint),
    Shm(shm::ShmEndpoint),
    #[cfg(feature = "verbs")]
    Verbs(Box<crate::verbs::VerbsEndpoint>),
    #[cfg(feature = "ofi")]
    Ofi(Box<crate::ofi::OfiEndpoint>),
}

macro_rules! dispatch {
    ($self:expr, $ep:ident => $body:expr) => {
        match $self {
            Inner::Tcp($ep) => $body,
            Inner::Shm($ep) => $body,
            #[cfg(feature = "verbs")]
            Inner::Verbs($ep) => $body,
            #[cfg(feature = "ofi")]
            Inner::Ofi($ep) => $body,
        }
    };
}

/// A connection to one peer: one-sided writes into the peer's exposed
/// buffers, two-sided messages, and completions of what the peer did.
///
/// Posting returns as soon as the local buffer may be reused; many
/// operations may be in flight (bounded by ring or socket space, beyond
/// which a post waits up to the configured op timeout while still
/// draining incoming traffic, so two peers posting at each other never
/// deadlock). Completions arrive in posting order.
///
/// An endpoint is used from one thread at a time (`&mut self`); it can be
/// moved between threads.
#[derive(Debug)]
pub struct Endpoint {
    inner: Inner,
    kind: TransportKind,
    caps: Caps,
    peer_buffers: Vec<RemoteBuffer>,
    peer_user: Vec<u8>,
    max_message: usize,
    peer_shares_cpus: bool,
    dead: Option<String>,
    /// The peer's completions may still be read: the endpoint died on a
    /// post (the peer left), not on what it received.
    inbound_open: bool,
}

impl Endpoint {
    pub(crate) fn new(
        inner: Inner,
        kind: TransportKind,
        caps: Caps,
        peer_buffers: Vec<RemoteBuffer>,
        peer_user: Vec<u8>,
        peer_host: &str,
        max_message: usize,
    ) -> Self {
        Endpoint {
            inner,
            kind,
            caps,
            peer_buffers,
            peer_user,
            max_message,
            peer_shares_cpus: crate::host::same_kernel(peer_host),
            dead: None,
            inbound_open: true,
        }
    }

    /// The transport in use.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// What this endpoint can do.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// The buffers the peer exposed in the handshake, in its order.
    pub fn peer_buffers(&self) -> &[RemoteBuffer] {
        &self.peer_buffers
    }

    /// The opaque data the peer sent in the handshake.
    pub fn peer_user_data(&self) -> &[u8] {
        &self.peer_user
    }

    /// Whether the peer said it runs on this machine's kernel (its boot
    /// id), so on the same CPUs, even from another network namespace or
    /// over tcp. What the peer says of itself: for scheduling decisions,
    /// never for access.
    pub fn peer_shares_cpus(&self) -> bool {
        self.peer_shares_cpus
    }

    /// Largest two-sided message.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    #[inline]
    fn alive(&self) -> Result<(), FabricError> {
        match &self.dead {
            Some(why) => Err(FabricError::PeerGone(why.clone())),
            None => Ok(()),
        }
    }

    /// Errors that end the endpoint stick: every later call reports them
    /// (except that `poll` still delivers what the peer sent before it
    /// left, when a post found it gone).
    #[inline]
    fn track<T>(&mut self, r: Result<T, FabricError>) -> Result<T, FabricError> {
        if let Err(e) = &r {
            if matches!(
                e,
                FabricError::PeerGone(_) | FabricError::Malformed(_) | FabricError::Os { .. }
            ) {
                self.dead = Some(e.to_string());
                if !matches!(e, FabricError::PeerGone(_)) {
                    self.inbound_open = false;
                }
            }
        }
        r
    }

    /// Writes `data` at `offset` of the peer's buffer `remote` and delivers
    /// `imm` with it: the peer gets a [`Completion::Write`] once the data
    /// has landed.
    ///
    /// The access is checked against the buffers the peer exposed; a wrong
    /// rkey or a range outside them is refused here with
    /// [`FabricError::RemoteAccess`] and nothing is sent.
    pub fn write_imm(
        &mut self,
        data: &[u8],
        remote: &RemoteBuffer,
        offset: u64,
        imm: u32,
    ) -> Result<(), FabricError> {
        self.alive()?;
        let addr = check_remote(&self.peer_buffers, remote, offset, data.len() as u64)?;
        if data.len() > u32::MAX as usize {
            return Err(FabricError::TooLarge {
                len: data.len(),
                max: u32::MAX as usize,
            });
        }
        let r = dispatch!(&mut self.inner, ep => ep.write(addr, remote.rkey, imm, data));
        self.track(r)
    }

    /// Reads `out.len()` bytes at `offset` of the peer's buffer `remote`
    /// into `out`: a one-sided read (RDMA READ on verbs, `fi_read` on ofi, a
    /// copy from the mapped region on shm, a request served by the peer's
    /// endpoint on tcp). The peer's application takes no part and gets no
    /// completion.
    ///
    /// Returns once the bytes are in `out`. Meanwhile the endpoint keeps
    /// draining incoming traffic: completions that arrive are kept for
    /// [`Endpoint::poll`], in order, and reads the peer makes of our
    /// buffers are served. Bounded by the configured op timeout.
    ///
    /// Access is checked as for [`Endpoint::write_imm`]: a peer may read
    /// exactly the buffers it may write (those it was
    /// [exposed](crate::ConnectOptions::expose)). The owner checks again on
    /// the transports where it takes part (tcp), so a forged range fails
    /// with [`FabricError::RemoteAccess`] either way and the endpoint stays
    /// usable.
    ///
    /// ```
    /// # use rfx_fabric::{Config, ConnectOptions, Fabric};
    /// # let fabric = Fabric::open(Config::default())?;
    /// let shared = fabric.register(64)?;
    /// shared.write_at(8, b"remote bytes")?;
    /// # let listener = fabric.listen("127.0.0.1:0".parse().unwrap())?;
    /// # let addr = listener.local_addr()?;
    /// # let opts = ConnectOptions::new().expose(&shared);
    /// # let t = std::thread::spawn(move || {
    /// #     let mut peer = listener.accept(&opts)?;
    /// #     // tcp serves reads from the owner's endpoint: keep it polled.
    /// #     let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// #     while peer.poll().is_ok() && std::time::Instant::now() < until {}
    /// #     Ok::<(), rfx_fabric::FabricError>(())
    /// # });
    /// let mut ep = fabric.connect(addr, &ConnectOptions::new())?;
    /// let remote = ep.peer_buffers()[0];
    /// let mut out = [0u8; 12];
    /// ep.read(&remote, 8, &mut out)?;
    /// assert_eq!(&out, b"remote bytes");
    /// # drop(ep);
    /// # t.join().unwrap()?;
    /// # Ok::<(), rfx_fabric::FabricError>(())
    /// ```
    pub fn read(
        &mut self,
        remote: &RemoteBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        self.alive()?;
        let addr = check_remote(&self.peer_buffers, remote, offset, out.len() as u64)?;
        if out.len() > u32::MAX as usize {
            return Err(FabricError::TooLarge {
                len: out.len(),
                max: u32::MAX as usize,
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        let r = dispatch!(&mut self.inner, ep => ep.read(addr, remote.rkey, out));
        self.track(r)
    }

    /// Sends a two-sided message; the peer gets a [`Completion::Recv`].
    pub fn send(&mut self, data: &[u8]) -> Result<(), FabricError> {
        self.alive()?;
        if data.len() > self.max_message {
            return Err(FabricError::TooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        let r = dispatch!(&mut self.inner, ep => ep.send(data));
        self.track(r)
    }

    /// The next completion, if one is ready; never blocks. What a peer
    /// sent before it left is delivered even after a post of ours found it
    /// gone; then [`FabricError::PeerGone`].
    pub fn poll(&mut self) -> Result<Option<Completion>, FabricError> {
        if !self.inbound_open {
            self.alive()?;
        }
        match dispatch!(&mut self.inner, ep => ep.poll()) {
            // Delivered even after a post found the peer gone: it sent this
            // before it left (a peer's last words are not lost).
            Ok(Some(c)) => Ok(Some(c)),
            Ok(None) => {
                self.alive()?;
                Ok(None)
            }
            Err(e) => {
                self.inbound_open = false;
                self.track(Err(e))
            }
        }
    }

    /// Offers the next completion to `take` if it is a write: its
    /// [`WriteCompletion`] and where its bytes are ([`WriteData`]). An
    /// inline write (shm, up to 224 bytes) comes with its bytes, copied out
    /// of the record; if taken, they do not land in the target region. A
    /// larger one has landed in the region already. If `take` returns
    /// `Some`, the write is consumed; otherwise nothing is consumed and
    /// [`Endpoint::poll`] delivers it as usual. `None` as well when nothing
    /// is there, the next completion is another kind, the provider offers
    /// nothing (tcp, verbs, ofi), or something is wrong (which `poll`
    /// reports).
    ///
    /// This is the short way for a receiver that takes the bytes straight
    /// into their destination: one copy fewer for inline writes, and for
    /// all none of the bookkeeping of a completion handed back by `poll`.
    #[inline]
    pub fn take_write<R>(
        &mut self,
        take: impl FnOnce(&WriteCompletion, WriteData<'_>) -> Option<R>,
    ) -> Option<R> {
        if !self.inbound_open || self.dead.is_some() {
            return None;
        }
        dispatch!(&mut self.inner, ep => ep.take_write(take))
    }

    /// The file descriptor an event loop (epoll, tokio's `AsyncFd`) waits
    /// on: it becomes readable when completions may be ready, once the
    /// endpoint is [armed](Endpoint::arm). Readiness is a hint: always
    /// [`Endpoint::poll`] after waking.
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        dispatch!(&self.inner, ep => ep.event_fd())
    }

    /// Prepares a sleep on [`Endpoint::event_fd`]. `Ok(false)`: completions
    /// (or the peer's end) may already be there, so poll instead of
    /// sleeping. After the sleep, call [`Endpoint::disarm`].
    ///
    /// ```
    /// # use rfx_fabric::{Config, ConnectOptions, Fabric, Completion};
    /// # let fabric = Fabric::open(Config::default())?;
    /// # let listener = fabric.listen("127.0.0.1:0".parse().unwrap())?;
    /// # let addr = listener.local_addr()?;
    /// # let t = std::thread::spawn(move || listener.accept(&ConnectOptions::new()));
    /// # let mut ep = fabric.connect(addr, &ConnectOptions::new())?;
    /// # let mut peer = t.join().unwrap()?;
    /// # peer.send(b"hi")?;
    /// let got = loop {
    ///     if let Some(c) = ep.poll()? {
    ///         break c;
    ///     }
    ///     if ep.arm()? {
    ///         let mut fds = [nix::poll::PollFd::new(ep.event_fd(), nix::poll::PollFlags::POLLIN)];
    ///         let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
    ///         ep.disarm();
    ///     }
    /// };
    /// assert_eq!(got, Completion::Recv(bytes::Bytes::from_static(b"hi")));
    /// # Ok::<(), rfx_fabric::FabricError>(())
    /// ```
    pub fn arm(&mut self) -> Result<bool, FabricError> {
        self.alive()?;
        let r = dispatch!(&mut self.inner, ep => ep.arm());
        self.track(r)
    }

    /// Ends a sleep prepared by [`Endpoint::arm`].
    pub fn disarm(&mut self) {
        dispatch!(&mut self.inner, ep => ep.disarm())
    }

    /// Lends `len` bytes at `ptr` to the peer for one-sided reads
    /// ([`Endpoint::read_lent`] on its side) until the returned [`Loan`]
    /// is dropped: the lender's half of a zero-copy rendezvous. The peer
    /// learns the [`LentBuffer`](crate::LentBuffer) from the caller's own
    /// messages. `Ok(None)` where the provider does not lend (without
    /// [`Caps::LEND`]: tcp, shm).
    ///
    /// On verbs the bytes are registered for remote read only (the pages
    /// pinned until the loan drops; a range that is not mapped is an
    /// error); the device serves the peer's RDMA READs of exactly them and
    /// refuses anything else. On ofi they are registered with
    /// `fi_mr_reg(FI_REMOTE_READ)` in the endpoint's domain, and the
    /// provider serves the peer's `fi_read`s (on `tcp`, while this process
    /// drives its endpoints). A registration costs a system call, more for
    /// larger buffers: lend what is large enough for a copy to cost more.
    ///
    /// Nothing in this process is read or written through `ptr`, so this
    /// is safe to call; what it decides is what the peer may see. The peer
    /// reads whatever the bytes hold at the time, until the loan drops
    /// (even memory the caller has since freed and reused): lend only what
    /// the peer may read, keep it unchanged until the peer says it has
    /// read it, and drop the loan then.
    pub fn lend(&mut self, ptr: *const u8, len: usize) -> Result<Option<Loan>, FabricError> {
        self.alive()?;
        if len == 0 {
            return Ok(None);
        }
        let r = dispatch!(&mut self.inner, ep => ep.lend(ptr, len));
        self.track(r)
    }

    /// Reads `out.len()` bytes at `offset` of a buffer the peer lent
    /// ([`Endpoint::lend`]), one-sided, with no copy on either side where
    /// the provider allows:
    /// - verbs: RDMA READs straight into `out`, registered for the call
    ///   (local write only) from `RFX_VERBS_LANDING_MIN` bytes (256 KiB);
    ///   smaller reads land in a registered bounce buffer and are copied;
    /// - ofi: `fi_read` straight into `out` where the provider needs no
    ///   local registration (`tcp`, `shm`), else through a staging buffer.
    ///
    /// Returns once the bytes are in `out`, draining incoming traffic
    /// meanwhile, as [`Endpoint::read`] does, and bounded by the op
    /// timeout. A read that fails or times out while the provider may
    /// still write `out` ends the connection first, so nothing lands in
    /// `out` after this returns.
    ///
    /// `lent` comes from the peer and is checked only against itself here
    /// (the range must lie inside it): the peer's provider checks the key
    /// and the range. On verbs a key or range it refuses breaks the
    /// connection ([`FabricError::PeerGone`]: an RC queue pair has no way
    /// back); on ofi it is [`FabricError::RemoteAccess`] and the endpoint
    /// lives on. Either way a peer that lies about its loan loses no more
    /// than its own connection.
    pub fn read_lent(
        &mut self,
        lent: &LentBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), FabricError> {
        self.alive()?;
        let end = offset.checked_add(out.len() as u64);
        let Some(addr) = end
            .filter(|&e| e <= lent.len)
            .and_then(|_| lent.addr.checked_add(offset))
        else {
            return Err(FabricError::RemoteAccess {
                rkey: 0,
                addr: lent.addr.wrapping_add(offset),
                len: out.len() as u64,
                reason: "outside the peer's loan",
            });
        };
        if out.is_empty() {
            return Ok(());
        }
        let r = dispatch!(&mut self.inner, ep => ep.read_lent(addr, lent.key, out));
        self.track(r)
    }

    /// The peer's memory, readable with one copy (cross-memory attach):
    /// only over shm, and only where the kernel and any seccomp filter
    /// let this process read the peer's ([`crate::cma`]).
    pub fn peer_memory(&self) -> Option<&crate::cma::PeerMemory> {
        dispatch!(&self.inner, ep => ep.peer_memory())
    }

    /// Starts an orderly close: the peer learns that this side is done and
    /// nothing more is sent. Poll [`Endpoint::close_done`] (bounded by a
    /// deadline) before dropping the endpoint, so that nothing sent is lost
    /// in flight; several endpoints close together this way.
    ///
    /// ```
    /// # use rfx_fabric::{Config, ConnectOptions, Fabric};
    /// # use std::time::{Duration, Instant};
    /// # let fabric = Fabric::open(Config::default())?;
    /// # let listener = fabric.listen("127.0.0.1:0".parse().unwrap())?;
    /// # let addr = listener.local_addr()?;
    /// # let t = std::thread::spawn(move || listener.accept(&ConnectOptions::new()));
    /// # let mut ep = fabric.connect(addr, &ConnectOptions::new())?;
    /// # let mut peer = t.join().unwrap()?;
    /// ep.send(b"last words")?;
    /// ep.close_start();
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// // The peer reads what was sent and the close (here, on this thread).
    /// assert!(peer.wait(rfx_fabric::PollMode::Warm, Duration::from_secs(5)).is_ok());
    /// while !ep.close_done() && Instant::now() < deadline {
    ///     let _ = peer.poll();
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert!(ep.close_done());
    /// # Ok::<(), rfx_fabric::FabricError>(())
    /// ```
    pub fn close_start(&mut self) {
        dispatch!(&mut self.inner, ep => ep.close_start())
    }

    /// True once dropping this endpoint cannot lose anything it sent: the
    /// peer read it all, or is gone. Never blocks; input that arrives
    /// meanwhile is dropped. Asked before [`Endpoint::close_start`], it
    /// says whether the peer is gone (always true on providers that need no
    /// orderly close).
    pub fn close_done(&mut self) -> bool {
        dispatch!(&mut self.inner, ep => ep.close_done())
    }

    /// Waits up to `timeout` for the next completion, busy polling
    /// ([`PollMode::Hot`]) or sleeping on the endpoint's fd
    /// ([`PollMode::Warm`]). [`FabricError::Timeout`] if none came; a dead
    /// peer is [`FabricError::PeerGone`], never a hang.
    pub fn wait(&mut self, mode: PollMode, timeout: Duration) -> Result<Completion, FabricError> {
        match mode {
            PollMode::Hot => {
                // The clock is read only after a first burst of polls: on the
                // fast path a message arrives before it is needed.
                let mut deadline = None;
                let mut polite_from = None;
                loop {
                    for _ in 0..64 {
                        if let Some(c) = self.poll()? {
                            return Ok(c);
                        }
                        std::hint::spin_loop();
                    }
                    let now = Instant::now();
                    if now >= *deadline.get_or_insert(now + timeout) {
                        return Err(FabricError::Timeout {
                            op: "wait",
                            after: timeout,
                        });
                    }
                    // Past the spin budget, offer the CPU once per burst: a
                    // no-op on an idle core, but when more pollers than
                    // cores share the machine the peer we wait for may be
                    // the thread queued behind us.
                    if now >= *polite_from.get_or_insert(now + HOT_SPIN_BUDGET) {
                        std::thread::yield_now();
                    }
                }
            }
            PollMode::Warm => {
                if let Some(c) = self.poll()? {
                    return Ok(c);
                }
                let deadline = Instant::now() + timeout;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(FabricError::Timeout {
                            op: "wait",
                            after: timeout,
                        });
                    }
                    let r = dispatch!(&mut self.inner, ep => ep.block(deadline - now));
                    self.track(r)?;
                    if let Some(c) = self.poll()? {
                        return Ok(c);
                    }
                }
            }
        }
    }
}
