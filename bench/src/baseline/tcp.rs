//! Plain TCP socket ping-pong (TCP_NODELAY): hot mode spins on a
//! non-blocking read, warm mode blocks in read.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use rfx_fabric::PollMode;

use crate::pin;
use crate::schedule::Step;
use crate::stats::{Recorder, Summary};

fn read_exact(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match sock.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all(sock: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        match sock.write(&buf[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn setup(sock: &TcpStream, mode: PollMode) -> io::Result<()> {
    sock.set_nodelay(true)?;
    sock.set_nonblocking(mode == PollMode::Hot)
}

pub fn pingpong(
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    exchange(mode, steps, cpus, None)
}

/// The floor of a read over TCP: a `request`-byte ask answered by the
/// step's size.
pub fn request_reply(
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
    request: usize,
) -> anyhow::Result<Vec<Summary>> {
    exchange(mode, steps, cpus, Some(request))
}

/// Round trips of `request` bytes (the step's size when `None`) out and
/// the step's size back.
fn exchange(
    mode: PollMode,
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
    request: Option<usize>,
) -> anyhow::Result<Vec<Summary>> {
    let max = steps
        .iter()
        .map(|s| s.size)
        .chain(request)
        .max()
        .unwrap_or(8);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let plan: Vec<Step> = steps.to_vec();
    let server = std::thread::spawn(move || -> io::Result<()> {
        pin::pin(cpus.1);
        let (mut s, _) = listener.accept()?;
        setup(&s, mode)?;
        let mut buf = vec![0u8; max];
        for step in &plan {
            for _ in 0..step.total() {
                read_exact(&mut s, &mut buf[..request.unwrap_or(step.size)])?;
                write_all(&mut s, &buf[..step.size])?;
            }
        }
        Ok(())
    });
    pin::pin(cpus.0);
    let mut c = TcpStream::connect(addr)?;
    setup(&c, mode)?;
    let payload = vec![0xa5u8; max];
    let mut back = vec![0u8; max];
    let mut out = Vec::new();
    for step in steps {
        let mut rec = Recorder::new();
        for i in 0..step.total() {
            let t0 = Instant::now();
            write_all(&mut c, &payload[..request.unwrap_or(step.size)])?;
            read_exact(&mut c, &mut back[..step.size])?;
            if i >= step.warmup {
                rec.record(t0.elapsed().as_nanos() as u64);
            }
        }
        out.push(rec.summary());
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(out)
}
