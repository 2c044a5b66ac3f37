//! `rfx-bench transport`: write_imm ping-pong, or one-sided reads, over an
//! rfx endpoint.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rfx_fabric::{
    Completion, Config, ConnectOptions, Endpoint, Fabric, PollMode, TransportChoice, TransportKind,
};

use crate::pin;
use crate::schedule::Step;
use crate::stats::{Recorder, Summary};

const WAIT: Duration = Duration::from_secs(30);

/// How long the read server keeps serving one client.
const SERVE_AT_MOST: Duration = Duration::from_secs(3600);

/// Round trips of `write_imm` + completion, client pinned to `cpus.0`,
/// echo server to `cpus.1`. With `read_payload` both read what arrived
/// (the server echoes the bytes it got, the client reads the reply), as an
/// `echo` invocation does.
pub fn rfx_pingpong(
    kind: TransportKind,
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
    read_payload: bool,
) -> anyhow::Result<Vec<Summary>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let client = with_server(kind, cpus, max, move |ep, region| {
        let rb = ep.peer_buffers()[0];
        let mut reply = vec![0x5a; max];
        loop {
            match ep.wait(mode, WAIT) {
                Ok(Completion::Write(w)) => {
                    let n = w.len as usize;
                    if read_payload {
                        region.read_at(0, &mut reply[..n])?;
                    }
                    ep.write_imm(&reply[..n], &rb, 0, w.imm)?
                }
                Ok(Completion::Recv(_)) => bail!("unexpected message"),
                Err(e) if e.is_peer_gone() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    })?;
    let inbox = client.fabric.register(max)?;
    let mut ep = client.connect(&ConnectOptions::new().expose(&inbox))?;
    let rb = ep.peer_buffers()[0];
    let payload = vec![0xa5; max];
    let mut seq = 0u32;
    let mut got = vec![0u8; max];
    let out = measure(steps, |size| {
        seq = seq.wrapping_add(1);
        ep.write_imm(&payload[..size], &rb, 0, seq)?;
        match ep.wait(mode, WAIT)? {
            Completion::Write(w) if w.imm == seq && w.len as usize == size => {
                if read_payload {
                    inbox.read_at(0, &mut got[..size])?;
                }
                Ok(())
            }
            other => bail!("unexpected completion {other:?}"),
        }
    })?;
    client.finish(ep)?;
    Ok(out)
}

/// One-sided reads of the server's exposed region, timed at the client
/// (pinned to `cpus.0`); the server (`cpus.1`) only keeps its endpoint
/// polled, which tcp needs to answer.
pub fn rfx_read(
    kind: TransportKind,
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let client = with_server(kind, cpus, max, move |ep, region| {
        region.write_at(0, &vec![0x5a; max])?;
        // Reads complete nothing here: wait in short slices until the
        // client leaves, within a bound no benchmark reaches.
        let end = Instant::now() + SERVE_AT_MOST;
        while Instant::now() < end {
            match ep.wait(mode, Duration::from_millis(100)) {
                Ok(other) => bail!("unexpected completion {other:?}"),
                Err(e) if e.is_peer_gone() => return Ok(()),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
        }
        bail!("client still connected after {SERVE_AT_MOST:?}")
    })?;
    let mut ep = client.connect(&ConnectOptions::new())?;
    let rb = ep.peer_buffers()[0];
    let mut buf = vec![0u8; max];
    let out = measure(steps, |size| {
        ep.read(&rb, 0, &mut buf[..size])?;
        Ok(())
    })?;
    if buf.iter().any(|&b| b != 0x5a) {
        bail!("reads returned wrong data");
    }
    client.finish(ep)?;
    Ok(out)
}

/// The whole cost of reading a buffer that is not registered memory, as a
/// zero-copy rendezvous pays it: the lender lends it (a registration),
/// the reader reads the loan one-sided, the lender ends the loan. Both
/// endpoints live on this thread (pinned to `cpus.0`): the lender's device
/// serves the read without its CPU. Needs a provider with `Caps::LEND`.
pub fn rfx_read_lent(
    kind: TransportKind,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let (fabric, listener, addr) = listen_forced(kind)?;
    let accept = std::thread::spawn(move || listener.accept(&ConnectOptions::new()));
    let mut reader = fabric.connect(addr, &ConnectOptions::new())?;
    let mut lender = accept
        .join()
        .map_err(|_| anyhow::anyhow!("accept thread panicked"))??;
    if !lender.caps().contains(rfx_fabric::Caps::LEND) {
        bail!("transport {kind} does not lend memory (no Caps::LEND)");
    }
    pin::pin(cpus.0);
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let lent = vec![0x5au8; max];
    let mut buf = vec![0u8; max];
    let out = measure(steps, |size| {
        let loan = lender
            .lend(lent.as_ptr(), size)?
            .ok_or_else(|| anyhow::anyhow!("no loan from a Caps::LEND provider"))?;
        reader.read_lent(&loan.lent(), 0, &mut buf[..size])?;
        drop(loan);
        Ok(())
    })?;
    if buf.iter().any(|&b| b != 0x5a) {
        bail!("reads of lent memory returned wrong data");
    }
    Ok(out)
}

/// Times `op(size)` per step on this thread (pinned by [`with_server`]).
fn measure(
    steps: &[Step],
    mut op: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Summary>> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let mut rec = Recorder::new();
        for i in 0..step.total() {
            let t0 = Instant::now();
            op(step.size)?;
            let dt = t0.elapsed();
            if i >= step.warmup {
                rec.record(dt.as_nanos() as u64);
            }
        }
        out.push(rec.summary());
    }
    Ok(out)
}

/// A fabric forced to `kind`, listening on loopback.
fn listen_forced(
    kind: TransportKind,
) -> anyhow::Result<(Fabric, rfx_fabric::Listener, std::net::SocketAddr)> {
    let cfg = Config {
        transport: TransportChoice::Forced(kind),
        ..Config::from_env()?
    };
    let fabric = Fabric::open(cfg).with_context(|| format!("opening transport {kind}"))?;
    let listener = fabric.listen("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    Ok((fabric, listener, addr))
}

/// The client's side of [`with_server`].
struct Client {
    fabric: Fabric,
    addr: std::net::SocketAddr,
    server: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Client {
    fn connect(&self, opts: &ConnectOptions) -> anyhow::Result<Endpoint> {
        Ok(self.fabric.connect(self.addr, opts)?)
    }

    /// Closes the endpoint and returns how the server ended.
    fn finish(self, ep: Endpoint) -> anyhow::Result<()> {
        drop(ep);
        self.server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?
    }
}

/// A fabric forced to `kind`, and a server thread pinned to `cpus.1` that
/// exposes a `max`-byte region to its one client and runs `serve`; the
/// calling thread is pinned to `cpus.0`.
fn with_server(
    kind: TransportKind,
    cpus: (Option<usize>, Option<usize>),
    max: usize,
    serve: impl FnOnce(&mut Endpoint, &rfx_fabric::MemoryRegion) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<Client> {
    let (fabric, listener, addr) = listen_forced(kind)?;
    let sfabric = fabric.clone();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        pin::pin(cpus.1);
        let region = sfabric.register(max.max(1))?;
        let mut ep = listener.accept(&ConnectOptions::new().expose(&region))?;
        serve(&mut ep, &region)
    });
    pin::pin(cpus.0);
    Ok(Client {
        fabric,
        addr,
        server,
    })
}
