//! Group invocations: one function on N executors at once, each instance
//! with its rank, the group size and a communicator to the others
//! ([`crate::comm`]), so that the instances message each other and run
//! collectives peer to peer, across hosts, without the client.
//!
//! [`Group::connect`] hosts a rendezvous, connects to every member's
//! executor (in parallel) with a [`GroupSpec`] in the set-up; the executors
//! join the rendezvous, build their communicator (one endpoint per pair,
//! shm on one host, tcp or RDMA across) and only then answer. A
//! [`Group::invoke`] submits to every member, then collects every result.
//!
//! ```no_run
//! use rfx_executors::client::InvokerConfig;
//! use rfx_executors::group::{Group, Member};
//! use rfx_executors::session::LibrarySource;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fabric = rfx_fabric::Fabric::open(rfx_fabric::Config::from_env()?)?;
//! let members = vec![
//!     Member { addr: "10.0.0.1:7700".parse()?, token: b"lease-1-token".to_vec() },
//!     Member { addr: "10.0.0.2:7700".parse()?, token: b"lease-2-token".to_vec() },
//! ];
//! let lib = LibrarySource::Path("/opt/fn/librfx_example_functions.so".into());
//! let mut group = Group::connect(&fabric, &members, lib, &["dot"], InvokerConfig::default())?;
//! let halves: Vec<Vec<u8>> = vec![vec![0; 16], vec![0; 16]];
//! let outputs = group.invoke("dot", &halves.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use rfx_collectives::Rendezvous;
use rfx_fabric::{Fabric, TransportKind};

use crate::client::{InvokeError, Invoker, InvokerConfig};
use crate::session::{GroupSpec, LibrarySource};

/// How long members have to join the rendezvous.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// One member of a group: a leased executor.
#[derive(Debug, Clone)]
pub struct Member {
    /// The executor's address.
    pub addr: SocketAddr,
    /// Its lease token.
    pub token: Vec<u8>,
}

/// N executors that run each group invocation together.
#[derive(Debug)]
pub struct Group {
    members: Vec<Invoker>,
}

/// The address the members reach this client at (the source address the
/// kernel routes from towards the first member; no packet is sent).
fn advertised_ip(members: &[Member]) -> IpAddr {
    let Some(first) = members.first() else {
        return Ipv4Addr::LOCALHOST.into();
    };
    if first.addr.ip().is_loopback() {
        return Ipv4Addr::LOCALHOST.into();
    }
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(first.addr).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(Ipv4Addr::LOCALHOST.into())
}

impl Group {
    /// Connects to every member, ships `library`, resolves `functions`, and
    /// waits until the members' communicator is up. A member that fails
    /// fails the whole group (the others' joins time out).
    pub fn connect(
        fabric: &Fabric,
        members: &[Member],
        library: LibrarySource,
        functions: &[&str],
        cfg: InvokerConfig,
    ) -> Result<Group, InvokeError> {
        if members.is_empty() {
            return Err(InvokeError::Protocol("a group needs members".into()));
        }
        let size = members.len();
        let mut key = vec![0u8; 16];
        getrandom::getrandom(&mut key)
            .map_err(|e| InvokeError::Protocol(format!("no randomness for the group key: {e}")))?;
        let rv = Rendezvous::bind(
            SocketAddr::new(advertised_ip(members), 0),
            size,
            key.clone(),
        )
        .map_err(|e| InvokeError::Protocol(format!("group rendezvous: {e}")))?;
        let rv_addr = rv
            .local_addr()
            .map_err(|e| InvokeError::Protocol(format!("group rendezvous: {e}")))?;
        let rv_thread = rv.spawn(JOIN_WAIT);
        let functions: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
        let joined: Vec<Result<Invoker, InvokeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = members
                .iter()
                .enumerate()
                .map(|(rank, m)| {
                    let (fabric, library, functions, key, cfg) = (
                        fabric.clone(),
                        library.clone(),
                        &functions,
                        key.clone(),
                        cfg.clone(),
                    );
                    let spec = GroupSpec {
                        rank: rank as u32,
                        size: size as u32,
                        rendezvous: rv_addr.to_string(),
                        key,
                    };
                    s.spawn(move || {
                        let names: Vec<&str> = functions.iter().map(String::as_str).collect();
                        Invoker::connect_member(
                            &fabric,
                            m.addr,
                            &m.token,
                            library,
                            &names,
                            cfg,
                            Some(spec),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(InvokeError::Protocol("a member's connect panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(size);
        for (rank, r) in joined.into_iter().enumerate() {
            out.push(r.map_err(|e| InvokeError::Protocol(format!("group member {rank}: {e}")))?);
        }
        if let Ok(Err(e)) = rv_thread.join() {
            tracing::debug!("group rendezvous: {e}");
        }
        Ok(Group { members: out })
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The transport each member's invocations use.
    pub fn transports(&self) -> Vec<TransportKind> {
        self.members.iter().map(Invoker::transport).collect()
    }

    /// The members' invokers, by rank (for single invocations on one).
    pub fn members(&mut self) -> &mut [Invoker] {
        &mut self.members
    }

    /// Runs `function` on every member at once, member `r` on `inputs[r]`;
    /// the outputs by rank. The first failure is returned after every
    /// member's result was collected, so the group stays usable.
    pub fn invoke(
        &mut self,
        function: &str,
        inputs: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, InvokeError> {
        if inputs.len() != self.members.len() {
            return Err(InvokeError::Protocol(format!(
                "{} inputs for a group of {}",
                inputs.len(),
                self.members.len()
            )));
        }
        let tickets: Vec<_> = self
            .members
            .iter_mut()
            .zip(inputs)
            .map(|(m, input)| m.submit(function, input))
            .collect();
        let mut outputs = Vec::with_capacity(tickets.len());
        let mut first_error = None;
        for (rank, (m, t)) in self.members.iter_mut().zip(tickets).enumerate() {
            match t.and_then(|t| m.wait(t)) {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    first_error.get_or_insert((rank, e));
                    outputs.push(Vec::new());
                }
            }
        }
        match first_error {
            None => Ok(outputs),
            Some((_, e)) => Err(e),
        }
    }

    /// Runs `function` on every member with the same `input`.
    pub fn invoke_all(
        &mut self,
        function: &str,
        input: &[u8],
    ) -> Result<Vec<Vec<u8>>, InvokeError> {
        let inputs = vec![input; self.members.len()];
        self.invoke(function, &inputs)
    }
}
