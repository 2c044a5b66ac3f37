//! [`Fabric`] and [`Listener`]: open providers, register memory, and make
//! endpoints through the handshake (the I/O driver of [`crate::wire`] and
//! [`crate::select`]).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::auth::Secret;
use crate::caps::{ProviderInfo, TransportKind};
use crate::config::Config;
use crate::deadline::{read_exact_by, write_all_by};
use crate::endpoint::Endpoint;
use crate::error::FabricError;
use crate::handshake::{self, Client, ClientStep, Refusal, Server};
use crate::mr::{MemoryRegion, RegionTable};
use crate::registry::{self, SetUp, ShmLeg};
use crate::secret::random_bytes;
use crate::wire::{decode_handshake_header, HandshakeKind, Hello, WireError, HANDSHAKE_HEADER_LEN};
use crate::{host, shm};

/// The providers opened in this process, and the memory registered with
/// them.
#[derive(Debug, Clone)]
pub struct Fabric {
    cfg: Config,
    providers: Vec<ProviderInfo>,
}

/// What one side offers when connecting: the regions the peer may write
/// into, opaque application data, and the secret the peer must prove it
/// knows.
///
/// ```
/// # let fabric = rfx_fabric::Fabric::open(Default::default())?;
/// let inbox = fabric.register(4096)?;
/// let opts = rfx_fabric::ConnectOptions::new()
///     .expose(&inbox)
///     .user_data(b"hello".to_vec())
///     .secret(b"lease-token");
/// # Ok::<(), rfx_fabric::FabricError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    expose: Vec<MemoryRegion>,
    user: Vec<u8>,
    secret: Option<Secret>,
}

impl ConnectOptions {
    /// Nothing exposed, no user data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the peer write into `region` and read it
    /// ([`Endpoint::write_imm`], [`Endpoint::read`]). Write-only exposure
    /// would be an illusion on shm, where the peer maps the region.
    pub fn expose(mut self, region: &MemoryRegion) -> Self {
        self.expose.push(region.clone());
        self
    }

    /// Sends `data` to the peer in the handshake. It travels in clear: put
    /// no secret in it (see [`ConnectOptions::secret`]).
    pub fn user_data(mut self, data: Vec<u8>) -> Self {
        self.user = data;
        self
    }

    /// Requires the peer to prove it knows `secret`, and proves it to the
    /// peer, by a mutual challenge-response in the handshake
    /// ([`crate::auth`]): HMAC-SHA256 proofs over fresh nonces from both
    /// sides and both sides' handshake data. The secret itself is never
    /// sent.
    ///
    /// A listener with a secret refuses a client that sends no proof or a
    /// wrong one (the client gets [`FabricError::Rejected`], the listener
    /// [`FabricError::AuthFailed`]); a client with a secret refuses a
    /// listener that does not prove it ([`FabricError::AuthFailed`]), so it
    /// never talks to an impostor. Without a secret on either side nothing
    /// is checked.
    ///
    /// What it proves: the peer knew the secret when the connection was
    /// made, and the handshake data (exposed buffers, user data, chosen
    /// transport) is what the peer sent. What it does not do: the data path
    /// after the handshake is neither encrypted nor authenticated, so an
    /// attacker who can rewrite the traffic between the hosts can read it
    /// and take the connection over; use a trusted network (or a VPN)
    /// against that.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(Secret::new(secret.as_ref()));
        self
    }

    fn secret_bytes(&self) -> Option<&[u8]> {
        self.secret.as_ref().map(Secret::as_bytes)
    }
}

impl Fabric {
    /// Probes the built providers. A forced transport that is not built or
    /// not usable here is an error now, not at the first connect.
    pub fn open(cfg: Config) -> Result<Fabric, FabricError> {
        cfg.validate()?;
        let mut providers = Vec::new();
        for (kind, probed) in registry::probe_all(&cfg) {
            match probed {
                Ok(Some(info)) => providers.push(info),
                Ok(None) => tracing::debug!(%kind, "provider unusable on this host"),
                Err(e) => tracing::debug!(%kind, "provider not available: {e}"),
            }
        }
        if let Some(kind) = cfg.transport.forced() {
            if !providers.iter().any(|p| p.kind == kind) {
                return Err(match registry::probe(kind, &cfg) {
                    Err(e) => e,
                    Ok(_) => FabricError::Unavailable {
                        kind,
                        reason: "no usable device on this host".into(),
                    },
                });
            }
        }
        Ok(Fabric { cfg, providers })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The usable providers, in preference order.
    pub fn providers(&self) -> &[ProviderInfo] {
        &self.providers
    }

    /// Registers `len` bytes of zeroed memory that peers can be allowed to
    /// write into (see [`ConnectOptions::expose`]).
    pub fn register(&self, len: usize) -> Result<MemoryRegion, FabricError> {
        MemoryRegion::new(len)
    }

    /// Listens for peers on `addr` (every connection starts over TCP).
    pub fn listen(&self, addr: SocketAddr) -> Result<Listener, FabricError> {
        let tcp = TcpListener::bind(addr).map_err(|e| FabricError::os("bind", e))?;
        Ok(Listener {
            tcp,
            fabric: self.clone(),
        })
    }

    fn hello(&self, opts: &ConnectOptions) -> Hello {
        Hello {
            host: host::host_id().to_string(),
            pid: std::process::id(),
            forced: self.cfg.transport.forced(),
            providers: self.providers.clone(),
            buffers: opts.expose.iter().map(|r| r.remote()).collect(),
            user: opts.user.clone(),
        }
    }

    /// Connects to a listener at `addr`, runs the handshake and switches to
    /// the selected transport, all within the connect timeout.
    pub fn connect(
        &self,
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Endpoint, FabricError> {
        let timeout = self.cfg.connect_timeout;
        let deadline = Instant::now() + timeout;
        let mut sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => FabricError::Timeout {
                op: "connect",
                after: timeout,
            },
            _ => FabricError::os("connect", e),
        })?;
        sock.set_nodelay(true)
            .map_err(|e| FabricError::os("set_nodelay", e))?;
        let mut client = Client::new(self.hello(opts), random_bytes()?, opts.secret_bytes());
        let accept = loop {
            let (kind, body) = read_msg(&mut sock, deadline)?;
            match client.handle(kind, &body) {
                Ok(ClientStep::Send(bytes)) => write_all_by(&mut sock, &bytes, deadline)?,
                Ok(ClientStep::Established(accept)) => break accept,
                Err(e @ FabricError::AuthFailed(_)) => {
                    tracing::warn!(%addr, "the server failed authentication: {e}");
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        };
        let regions = RegionTable::new(opts.expose.clone());
        let inner = registry::establish(
            accept.transport,
            SetUp {
                sock,
                regions,
                peer: &accept.hello.buffers,
                cfg: &self.cfg,
                deadline,
                shm: match &accept.shm {
                    Some(offer) => ShmLeg::Client(offer),
                    None => ShmLeg::None,
                },
            },
        )?;
        let caps = self.caps_of(accept.transport);
        Ok(Endpoint::new(
            inner,
            accept.transport,
            caps,
            accept.hello.buffers,
            accept.hello.user,
            &accept.hello.host,
            self.cfg.max_message,
        ))
    }

    fn caps_of(&self, kind: TransportKind) -> crate::caps::Caps {
        self.providers
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.caps)
            .unwrap_or(crate::caps::Caps::empty())
    }
}

/// Accepts peers; every accepted connection runs the handshake.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    fabric: Fabric,
}

/// A TCP connection accepted but not yet through the handshake; servers
/// hand it to a worker so that a slow or hostile client does not hold up
/// the accept loop.
#[derive(Debug)]
pub struct Incoming {
    sock: TcpStream,
    peer: SocketAddr,
    fabric: Fabric,
}

impl Listener {
    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, FabricError> {
        self.tcp
            .local_addr()
            .map_err(|e| FabricError::os("local_addr", e))
    }

    /// Waits up to `timeout` (forever if `None`) for the next connection.
    pub fn incoming(&self, timeout: Option<Duration>) -> Result<Incoming, FabricError> {
        if let Some(t) = timeout {
            let ms = t.as_millis().clamp(0, i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.tcp.as_fd(), PollFlags::POLLIN)];
            let n = nix::poll::poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            )
            .map_err(|e| FabricError::os("poll", io::Error::from(e)))?;
            if n == 0 {
                return Err(FabricError::Timeout {
                    op: "accept",
                    after: t,
                });
            }
        }
        let (sock, peer) = self
            .tcp
            .accept()
            .map_err(|e| FabricError::os("accept", e))?;
        Ok(Incoming {
            sock,
            peer,
            fabric: self.fabric.clone(),
        })
    }

    /// Accepts the next peer with no check of its user data (its proof of
    /// the secret is checked if `opts` has one).
    pub fn accept(&self, opts: &ConnectOptions) -> Result<Endpoint, FabricError> {
        self.incoming(None)?.accept(opts, |_| Ok(()))
    }
}

impl Incoming {
    /// The peer's TCP address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Runs the server side of the handshake: the challenge, the check of
    /// the client's proof when `opts` has a secret
    /// ([`ConnectOptions::secret`]; a failure is
    /// [`FabricError::AuthFailed`] here and a rejection for the client),
    /// then `verify`, which sees the client's hello (e.g. to check its user
    /// data; a secret belongs in `opts`, not there): an `Err(reason)` is sent
    /// to the client as a rejection.
    pub fn accept(
        mut self,
        opts: &ConnectOptions,
        verify: impl FnOnce(&Hello) -> Result<(), String>,
    ) -> Result<Endpoint, FabricError> {
        let fabric = &self.fabric;
        let cfg = &fabric.cfg;
        let deadline = Instant::now() + cfg.connect_timeout;
        let _ = self.sock.set_nodelay(true);
        let (mut server, challenge) = Server::new(random_bytes()?, opts.secret_bytes());
        write_all_by(&mut self.sock, &challenge, deadline)?;
        let (kind, body) = match read_msg(&mut self.sock, deadline) {
            Ok(msg) => msg,
            Err(FabricError::Malformed(e @ WireError::Version { .. })) => {
                return Err(self.refuse(deadline, handshake::refuse_header(e)))
            }
            Err(e) => return Err(e),
        };
        let hello = fabric.hello(opts);
        let verified = match server.handle(kind, &body, &hello, verify) {
            Ok(v) => v,
            Err(refusal) => return Err(self.refuse(deadline, refusal)),
        };
        let transport = verified.transport;
        let regions = RegionTable::new(opts.expose.clone());
        // Only shm needs a second rendezvous, announced in the accept.
        let shm_listener = match transport {
            TransportKind::Shm => Some(shm::rendezvous::offer()?),
            _ => None,
        };
        let offer = shm_listener.as_ref().map(|(_, offer)| offer.clone());
        let accept = server.accept(&verified, hello, offer);
        write_all_by(&mut self.sock, &accept, deadline)?;
        let client = verified.request.hello;
        let inner = registry::establish(
            transport,
            SetUp {
                sock: self.sock,
                regions,
                peer: &client.buffers,
                cfg,
                deadline,
                shm: match shm_listener {
                    Some((listener, offer)) => ShmLeg::Server(listener, offer),
                    None => ShmLeg::None,
                },
            },
        )?;
        Ok(Endpoint::new(
            inner,
            transport,
            fabric.caps_of(transport),
            client.buffers,
            client.user,
            &client.host,
            cfg.max_message,
        ))
    }

    /// Tells the client why (best effort) and returns the error for us.
    fn refuse(&mut self, deadline: Instant, r: Refusal) -> FabricError {
        if let Some(reply) = &r.reply {
            let _ = write_all_by(&mut self.sock, reply, deadline);
        }
        if let FabricError::AuthFailed(e) = &r.error {
            tracing::warn!(peer = %self.peer, "a client failed authentication: {e}");
        }
        tracing::debug!(peer = %self.peer, "handshake refused: {}", r.error);
        r.error
    }
}

fn read_msg(
    sock: &mut TcpStream,
    deadline: Instant,
) -> Result<(HandshakeKind, Vec<u8>), FabricError> {
    let mut head = [0u8; HANDSHAKE_HEADER_LEN];
    read_exact_by(sock, &mut head, deadline)?;
    let (kind, len) = decode_handshake_header(&head).map_err(FabricError::Malformed)?;
    let mut body = vec![0u8; len];
    read_exact_by(sock, &mut body, deadline)?;
    Ok((kind, body))
}
