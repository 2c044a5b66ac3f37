//! Bootstrap: the [`Rendezvous`] that gathers every rank's listener
//! address, and [`Communicator::join`] / [`Communicator::from_env`] that
//! wire the ranks up: each rank connects to the lower ranks and accepts
//! the higher ones, with its rank in the fabric handshake's user data and
//! the job key as the handshake's shared secret
//! ([`rfx_fabric::ConnectOptions::secret`]). The key is proven by
//! challenge-response, to the rendezvous ([`proto`]) as to the peers, and
//! never sent.

pub mod env;
pub mod proto;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use rfx_fabric::{ConnectOptions, Endpoint, Fabric, MemoryRegion};

use crate::comm::Communicator;
use crate::config::CollConfig;
use crate::engine::{Engine, EngineConfig, MIN_INBOX};
use crate::error::CollError;
use env::LaunchEnv;
use proto::{Challenge, Gather, Register, Reply};
use rfx_fabric::wire::Nonce;

fn nonce() -> Result<Nonce, CollError> {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n)
        .map_err(|e| CollError::io("getrandom", std::io::Error::from(e)))?;
    Ok(n)
}

/// Serves the rendezvous of one job of `size` ranks on a TCP address.
///
/// ```no_run
/// use rfx_collectives::Rendezvous;
/// use std::time::Duration;
/// let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), 4, Vec::new())?;
/// let addr = rv.local_addr()?; // give it to the ranks as RFX_RENDEZVOUS
/// let server = rv.spawn(Duration::from_secs(60));
/// // ... start 4 ranks ...
/// server.join().unwrap()?;
/// # Ok::<(), rfx_collectives::CollError>(())
/// ```
#[derive(Debug)]
pub struct Rendezvous {
    listener: TcpListener,
    size: usize,
    key: Vec<u8>,
}

fn remaining(deadline: Instant, what: &str) -> Result<Duration, CollError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(CollError::Bootstrap(format!("timed out {what}")));
    }
    Ok(deadline - now)
}

fn read_frame(sock: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, CollError> {
    let mut head = [0u8; 4];
    read_exact(sock, &mut head, deadline)?;
    let len = proto::decode_len(head).map_err(|e| CollError::Bootstrap(e.to_string()))?;
    let mut body = vec![0u8; len];
    read_exact(sock, &mut body, deadline)?;
    Ok(body)
}

fn read_exact(sock: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), CollError> {
    let mut got = 0;
    while got < buf.len() {
        sock.set_read_timeout(Some(remaining(deadline, "reading from the rendezvous")?))
            .map_err(|e| CollError::io("set_read_timeout", e))?;
        match sock.read(&mut buf[got..]) {
            Ok(0) => return Err(CollError::Bootstrap("connection closed".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(CollError::io("rendezvous read", e)),
        }
    }
    Ok(())
}

fn write_frame(sock: &mut TcpStream, bytes: &[u8], deadline: Instant) -> Result<(), CollError> {
    sock.set_write_timeout(Some(remaining(deadline, "writing to the rendezvous")?))
        .map_err(|e| CollError::io("set_write_timeout", e))?;
    sock.write_all(bytes)
        .map_err(|e| CollError::io("rendezvous write", e))
}

impl Rendezvous {
    /// Listens on `addr` for a job of `size` ranks presenting `key`.
    pub fn bind(addr: SocketAddr, size: usize, key: Vec<u8>) -> Result<Rendezvous, CollError> {
        if size == 0 {
            return Err(CollError::InvalidArgument("a job of 0 ranks".into()));
        }
        let listener = TcpListener::bind(addr).map_err(|e| CollError::io("rendezvous bind", e))?;
        Ok(Rendezvous {
            listener,
            size,
            key,
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, CollError> {
        self.listener
            .local_addr()
            .map_err(|e| CollError::io("local_addr", e))
    }

    /// Serves until every rank registered and got the table, or `timeout`.
    pub fn serve(self, timeout: Duration) -> Result<(), CollError> {
        let deadline = Instant::now() + timeout;
        let mut gather = Gather::new(self.size, self.key.clone());
        // Each registered rank's connection, the challenge it answered and
        // its own nonce (the table's proof covers both).
        let mut conns: Vec<(TcpStream, Nonce, Nonce)> = Vec::new();
        while gather.poll_table().is_none() {
            let left = match remaining(deadline, "") {
                Ok(l) => l,
                Err(_) => {
                    let why = format!("ranks {:?} never registered", gather.missing());
                    for (mut c, _, _) in conns {
                        let _ = write_frame(
                            &mut c,
                            &proto::encode(&Reply::Refused(why.clone())),
                            Instant::now() + Duration::from_secs(1),
                        );
                    }
                    return Err(CollError::Bootstrap(format!("rendezvous: {why}")));
                }
            };
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let ms = left.as_millis().clamp(1, 200) as u16;
            if nix::poll::poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
                continue;
            }
            let Ok((mut sock, peer)) = self.listener.accept() else {
                continue;
            };
            // A slow or silent client holds the loop up for a bounded time.
            let read_by = Instant::now() + left.min(Duration::from_secs(5));
            let challenge = Challenge {
                version: proto::VERSION,
                nonce: nonce()?,
            };
            if write_frame(&mut sock, &proto::encode(&challenge), read_by).is_err() {
                continue;
            }
            let reg = read_frame(&mut sock, read_by).and_then(|b| {
                proto::decode_body::<Register>(&b).map_err(|e| CollError::Bootstrap(e.to_string()))
            });
            let outcome = match reg {
                Ok(reg) => gather
                    .handle_register(&reg, &challenge.nonce)
                    .map(|rank| (rank, reg.nonce)),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok((rank, rank_nonce)) => {
                    tracing::debug!(rank, %peer, "rank registered");
                    conns.push((sock, challenge.nonce, rank_nonce));
                }
                Err(why) => {
                    tracing::warn!(%peer, "registration refused: {why}");
                    let _ = write_frame(&mut sock, &proto::encode(&Reply::Refused(why)), read_by);
                }
            }
        }
        let table = gather.poll_table().expect("loop ends when complete");
        for (mut c, challenge, rank_nonce) in conns {
            let proof = proto::table_proof(gather.key(), &challenge, &rank_nonce, &table);
            // A rank that vanished in between fails its own bootstrap.
            let _ = write_frame(
                &mut c,
                &proto::encode(&Reply::Table(table.clone(), proof)),
                deadline.max(Instant::now() + Duration::from_secs(1)),
            );
        }
        Ok(())
    }

    /// Serves on a thread.
    pub fn spawn(self, timeout: Duration) -> JoinHandle<Result<(), CollError>> {
        std::thread::spawn(move || self.serve(timeout))
    }
}

/// How a process joins a job (see [`Communicator::join`]).
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// This process's rank.
    pub rank: usize,
    /// The job size.
    pub size: usize,
    /// The rendezvous address.
    pub rendezvous: SocketAddr,
    /// The job key: the rendezvous and every peer check it.
    pub key: Vec<u8>,
    /// The address to listen on for peers; default: the local address
    /// used to reach the rendezvous.
    pub bind: Option<IpAddr>,
    /// Communicator settings.
    pub config: CollConfig,
}

/// Handshake magic; the digit is the version of the message protocol
/// ([`crate::wire`]): ranks of different versions refuse each other.
const MAGIC: &[u8; 4] = b"RFX2";

/// A rank's handshake data: magic and rank. The job key is not in it: it is
/// the handshake's secret ([`connect_options`]).
fn user_data(rank: usize) -> Vec<u8> {
    let mut u = MAGIC.to_vec();
    u.extend_from_slice(&(rank as u32).to_le_bytes());
    u
}

/// The rank a peer claims in its handshake data (believed only once the
/// fabric checked its proof of the key).
fn peer_rank(user: &[u8]) -> Option<usize> {
    let r: [u8; 4] = user.strip_prefix(MAGIC)?.try_into().ok()?;
    Some(u32::from_le_bytes(r) as usize)
}

/// This rank's handshake options: its rank, and the job key as the shared
/// secret every peer must prove (none for an empty key).
fn connect_options(key: &[u8], rank: usize) -> ConnectOptions {
    let opts = ConnectOptions::new().user_data(user_data(rank));
    if key.is_empty() {
        opts
    } else {
        opts.secret(key)
    }
}

fn connect_rendezvous(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, CollError> {
    let mut pause = Duration::from_millis(5);
    loop {
        let left = remaining(deadline, &format!("reaching the rendezvous at {addr}"))?;
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(2))) {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(%addr, "rendezvous not there yet: {e}");
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

impl Communicator {
    /// Joins a job: registers with the rendezvous, gets the table, connects
    /// to the lower ranks and accepts the higher ones, all within
    /// [`CollConfig::bootstrap_timeout`]. Executors and launchers call this;
    /// programs usually call [`Communicator::from_env`].
    pub fn join(opts: JoinOptions) -> Result<Communicator, CollError> {
        let JoinOptions {
            rank: me,
            size,
            rendezvous,
            key,
            bind,
            config,
        } = opts;
        config.validate()?;
        if me >= size {
            return Err(CollError::InvalidRank { rank: me, size });
        }
        let deadline = Instant::now() + config.bootstrap_timeout;
        let mut fcfg = config.fabric.clone();
        fcfg.connect_timeout = fcfg.connect_timeout.max(config.bootstrap_timeout);
        let fabric =
            Fabric::open(fcfg).map_err(|e| CollError::Bootstrap(format!("fabric: {e}")))?;
        let mut eps: Vec<Option<(Endpoint, MemoryRegion)>> = (0..size).map(|_| None).collect();
        // Each peer writes into an inbox of its own here (see `wire`): no
        // more than a quarter of an shm ring, so that the ring never fills
        // with the records of one window.
        let inbox_len = config
            .window
            .min(config.fabric.shm_ring_bytes / 4)
            .max(MIN_INBOX)
            .next_power_of_two();
        let inbox = || {
            fabric
                .register(inbox_len)
                .map_err(|e| CollError::Bootstrap(format!("registering an inbox: {e}")))
        };
        if size > 1 {
            let mut rv = connect_rendezvous(rendezvous, deadline)?;
            let ip = match bind {
                Some(ip) => ip,
                None => rv
                    .local_addr()
                    .map_err(|e| CollError::io("local_addr", e))?
                    .ip(),
            };
            let listener = fabric
                .listen(SocketAddr::new(ip, 0))
                .map_err(|e| CollError::Bootstrap(format!("listen on {ip}: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| CollError::Bootstrap(e.to_string()))?;
            let challenge = match proto::decode_body::<Challenge>(&read_frame(&mut rv, deadline)?) {
                Ok(c) if c.version == proto::VERSION => c,
                Ok(c) => {
                    return Err(CollError::Bootstrap(format!(
                        "the rendezvous speaks protocol version {} (this rank {})",
                        c.version,
                        proto::VERSION
                    )))
                }
                Err(e) => return Err(CollError::Bootstrap(format!("rendezvous: {e}"))),
            };
            let reg = Register {
                version: proto::VERSION,
                rank: me as u32,
                size: size as u32,
                addr,
                nonce: nonce()?,
                proof: [0; 32],
            }
            .prove(&key, &challenge.nonce);
            write_frame(&mut rv, &proto::encode(&reg), deadline)?;
            let body = read_frame(&mut rv, deadline)?;
            let table = match proto::decode_body::<Reply>(&body) {
                Ok(Reply::Table(t, proof))
                    if !proto::verify_table(&key, &challenge.nonce, &reg.nonce, &t, &proof) =>
                {
                    return Err(CollError::Bootstrap(
                        "the rendezvous did not prove the job key (authentication failed)".into(),
                    ))
                }
                Ok(Reply::Table(t, _)) if t.len() == size => t,
                Ok(Reply::Table(t, _)) => {
                    return Err(CollError::Bootstrap(format!(
                        "table of {} ranks for a job of {size}",
                        t.len()
                    )))
                }
                Ok(Reply::Refused(why)) => {
                    return Err(CollError::Bootstrap(format!("rendezvous refused: {why}")))
                }
                Err(e) => return Err(CollError::Bootstrap(e.to_string())),
            };
            drop(rv);
            let ours = connect_options(&key, me);
            for (r, &peer_addr) in table.iter().enumerate().take(me) {
                let mr = inbox()?;
                let ep = fabric
                    .connect(peer_addr, &ours.clone().expose(&mr))
                    .map_err(|e| {
                        CollError::Bootstrap(format!("connecting to rank {r} at {peer_addr}: {e}"))
                    })?;
                if peer_rank(ep.peer_user_data()) != Some(r) {
                    return Err(CollError::Bootstrap(format!(
                        "the peer at {peer_addr} is not rank {r} of this job"
                    )));
                }
                eps[r] = Some((ep, mr));
            }
            let mut missing = size - me - 1;
            while missing > 0 {
                let left = remaining(deadline, &format!("waiting for {missing} higher ranks"))?;
                let inc = listener
                    .incoming(Some(left))
                    .map_err(|e| CollError::Bootstrap(format!("accept: {e}")))?;
                let mut who = None;
                let taken: Vec<bool> = eps.iter().map(Option::is_some).collect();
                let mr = inbox()?;
                let r = inc.accept(&ours.clone().expose(&mr), |hello| {
                    match peer_rank(&hello.user) {
                        Some(r) if r > me && r < size && !taken[r] => {
                            who = Some(r);
                            Ok(())
                        }
                        _ => Err("not a rank of this job".to_string()),
                    }
                });
                match (r, who) {
                    (Ok(ep), Some(r)) => {
                        eps[r] = Some((ep, mr));
                        missing -= 1;
                    }
                    (Err(e), _) => tracing::warn!("refused a connection: {e}"),
                    (Ok(_), None) => {}
                }
            }
        }
        let ecfg = EngineConfig::of(&config);
        let mut engine = Engine::new(me, eps, ecfg)?;
        engine.await_peers(deadline)?;
        Ok(Communicator::from_engine(engine, config))
    }

    /// Joins the job described by the environment (see the crate docs):
    /// rank and size from `RFX_RANK/RFX_SIZE`, `SLURM_*`, `OMPI_*` or
    /// `PMI_*`; the rendezvous at `RFX_RENDEZVOUS`, hosted by rank 0 unless
    /// `RFX_RENDEZVOUS_EXTERNAL=1`.
    pub fn from_env() -> Result<Communicator, CollError> {
        let env = LaunchEnv::from_vars(|k| std::env::var(k).ok())?;
        let config = CollConfig::from_env()?;
        Communicator::from_launch_env(env, config)
    }

    /// As [`Communicator::from_env`] with the environment already read.
    pub fn from_launch_env(env: LaunchEnv, config: CollConfig) -> Result<Communicator, CollError> {
        let rendezvous = env
            .rendezvous
            .to_socket_addrs()
            .map_err(|e| CollError::Env(format!("RFX_RENDEZVOUS={:?}: {e}", env.rendezvous)))?
            .next()
            .ok_or_else(|| {
                CollError::Env(format!("RFX_RENDEZVOUS={:?}: no address", env.rendezvous))
            })?;
        let server = if env.rank == 0 && !env.external && env.size > 1 {
            let rv = Rendezvous::bind(rendezvous, env.size, env.key.clone())?;
            Some(rv.spawn(config.bootstrap_timeout))
        } else {
            None
        };
        let comm = Communicator::join(JoinOptions {
            rank: env.rank,
            size: env.size,
            rendezvous,
            key: env.key,
            bind: env.bind,
            config,
        })?;
        if let Some(s) = server {
            s.join()
                .map_err(|_| CollError::Bootstrap("the rendezvous thread panicked".into()))??;
        }
        Ok(comm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_identity() {
        let u = user_data(5);
        assert_eq!(peer_rank(&u), Some(5));
        assert_eq!(peer_rank(b"RFXC"), None);
        assert_eq!(peer_rank(b"RFX2\x01\0\0"), None);
        assert_eq!(peer_rank(b"RFX2\x01\0\0\0\0"), None);
        assert_eq!(peer_rank(b""), None);
    }

    #[test]
    fn threads_join_and_allreduce() {
        // Real sockets and shared memory, ranks as threads of one process.
        let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), 3, b"k".to_vec()).unwrap();
        let addr = rv.local_addr().unwrap();
        let server = rv.spawn(Duration::from_secs(20));
        let ranks: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut c = Communicator::join(JoinOptions {
                        rank,
                        size: 3,
                        rendezvous: addr,
                        key: b"k".to_vec(),
                        bind: None,
                        config: CollConfig::default(),
                    })
                    .unwrap();
                    let mut v = vec![rank as u64 + 1; 5];
                    c.allreduce(&mut v, crate::ReduceOp::Sum).unwrap();
                    assert_eq!(v, vec![6; 5]);
                    c.barrier().unwrap();
                })
            })
            .collect();
        for r in ranks {
            r.join().unwrap();
        }
        server.join().unwrap().unwrap();
    }

    #[test]
    fn impostor_rendezvous_is_refused() {
        // A rendezvous that does not know the key: it takes any
        // registration and hands out a table it cannot prove.
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = fake.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = fake.accept().unwrap();
            let by = Instant::now() + Duration::from_secs(10);
            let challenge = Challenge {
                version: proto::VERSION,
                nonce: [1; 32],
            };
            write_frame(&mut s, &proto::encode(&challenge), by).unwrap();
            let reg: Register = proto::decode_body(&read_frame(&mut s, by).unwrap()).unwrap();
            assert!(reg.verify(b"good", &challenge.nonce));
            assert!(!reg.verify(b"guess", &challenge.nonce));
            let table = vec![reg.addr, reg.addr];
            let proof = proto::table_proof(b"guess", &challenge.nonce, &reg.nonce, &table);
            write_frame(&mut s, &proto::encode(&Reply::Table(table, proof)), by).unwrap();
        });
        let r = Communicator::join(JoinOptions {
            rank: 1,
            size: 2,
            rendezvous: addr,
            key: b"good".to_vec(),
            bind: None,
            config: CollConfig::default(),
        });
        assert!(
            matches!(&r, Err(CollError::Bootstrap(m)) if m.contains("authentication failed")),
            "{:?}",
            r.map(|_| ())
        );
        server.join().unwrap();
    }

    #[test]
    fn wrong_key_is_refused() {
        let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), 2, b"good".to_vec()).unwrap();
        let addr = rv.local_addr().unwrap();
        let server = rv.spawn(Duration::from_secs(2));
        let r = Communicator::join(JoinOptions {
            rank: 1,
            size: 2,
            rendezvous: addr,
            key: b"bad".to_vec(),
            bind: None,
            config: CollConfig::default(),
        });
        assert!(matches!(r, Err(CollError::Bootstrap(m)) if m.contains("key")));
        assert!(server.join().unwrap().is_err());
    }
}
