//! `rfx fabric info | serve | ping`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use rfx::fabric::registry;
use rfx::fabric::{Completion, Config, ConnectOptions, Endpoint, Fabric, PollMode};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub(crate) enum FabricCmd {
    /// List the transports of this build and whether they work on this host.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Answer `rfx fabric ping` from other hosts: echo every write and message.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// Largest payload accepted.
        #[arg(long, default_value_t = 1 << 20)]
        max_size: usize,
        /// Exit after this many connections (default: serve forever).
        #[arg(long)]
        connections: Option<u64>,
    },
    /// Round trips of write_imm to an `rfx fabric serve`.
    Ping {
        /// Address of the server.
        addr: SocketAddr,
        /// Round trips.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Payload bytes.
        #[arg(long, default_value_t = 8)]
        size: usize,
        /// Poll hot (spin) or warm (block).
        #[arg(long, default_value = "hot", value_parser = ["hot", "warm"])]
        mode: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: FabricCmd, cfg: Config) -> anyhow::Result<()> {
    match cmd {
        FabricCmd::Info { json } => info(cfg, json),
        FabricCmd::Serve {
            listen,
            max_size,
            connections,
        } => serve(cfg, listen, max_size, connections),
        FabricCmd::Ping {
            addr,
            count,
            size,
            mode,
            json,
        } => {
            let mode = if mode == "warm" {
                PollMode::Warm
            } else {
                PollMode::Hot
            };
            ping(cfg, addr, count, size, mode, json)
        }
    }
}

fn info(cfg: Config, json: bool) -> anyhow::Result<()> {
    let rows: Vec<_> = registry::probe_all(&cfg)
        .into_iter()
        .map(|(kind, r)| match r {
            Ok(Some(p)) => {
                json!({"transport": kind, "status": "usable", "caps": format!("{:?}", p.caps),
                                   "max_inline": p.max_inline, "device": p.device})
            }
            Ok(None) => {
                json!({"transport": kind, "status": "unusable", "reason": "no device on this host"})
            }
            Err(e) => json!({"transport": kind, "status": "not built", "reason": e.to_string()}),
        })
        .collect();
    if json {
        let out = json!({"host": rfx::fabric::host::host_id(), "selection": cfg.transport.to_string(), "transports": rows});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "host {}\nselection {}",
        rfx::fabric::host::host_id(),
        cfg.transport
    );
    for r in rows {
        let detail = r
            .get("caps")
            .or_else(|| r.get("reason"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        println!(
            "{:<6} {:<10} {}",
            r["transport"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            detail
        );
    }
    Ok(())
}

fn serve(
    cfg: Config,
    listen: SocketAddr,
    max_size: usize,
    connections: Option<u64>,
) -> anyhow::Result<()> {
    let fabric = Fabric::open(cfg)?;
    let listener = fabric
        .listen(listen)
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("rfx fabric serve: listening on {}", listener.local_addr()?);
    let mut served = 0u64;
    while connections.is_none_or(|n| served < n) {
        let incoming = listener.incoming(None)?;
        served += 1;
        let fabric = fabric.clone();
        let worker = std::thread::spawn(move || -> anyhow::Result<()> {
            let inbox = fabric.register(max_size)?;
            let peer = incoming.peer_addr();
            let ep = incoming.accept(&ConnectOptions::new().expose(&inbox), |_| Ok(()))?;
            eprintln!("rfx fabric serve: {peer} connected over {}", ep.kind());
            echo(ep, &inbox)
        });
        if connections.is_some() {
            // Bounded runs (tests, scripts) serve one peer at a time.
            if let Err(e) = worker
                .join()
                .map_err(|_| anyhow::anyhow!("worker panicked"))?
            {
                eprintln!("rfx fabric serve: {e:#}");
            }
        }
    }
    Ok(())
}

fn echo(mut ep: Endpoint, inbox: &rfx::fabric::MemoryRegion) -> anyhow::Result<()> {
    let Some(&back) = ep.peer_buffers().first() else {
        bail!("the peer exposed no buffer to answer into")
    };
    loop {
        match ep.wait(PollMode::Warm, Duration::from_secs(3600)) {
            Ok(Completion::Write(w)) => {
                let data = inbox.to_vec(w.offset as usize, w.len as usize)?;
                ep.write_imm(&data, &back, 0, w.imm)?;
            }
            Ok(Completion::Recv(m)) => ep.send(&m)?,
            Err(e) if e.is_peer_gone() => return Ok(()),
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn ping(
    cfg: Config,
    addr: SocketAddr,
    count: u32,
    size: usize,
    mode: PollMode,
    json: bool,
) -> anyhow::Result<()> {
    let fabric = Fabric::open(cfg)?;
    let inbox = fabric.register(size)?;
    let t0 = Instant::now();
    let mut ep = fabric
        .connect(addr, &ConnectOptions::new().expose(&inbox))
        .with_context(|| format!("connecting to {addr}"))?;
    let connect_us = t0.elapsed().as_secs_f64() * 1e6;
    let Some(&target) = ep.peer_buffers().first() else {
        bail!("the server exposed no buffer")
    };
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut rtts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        ep.write_imm(&payload, &target, 0, i)?;
        match ep.wait(mode, WAIT)? {
            Completion::Write(w) if w.imm == i && w.len as usize == size => {}
            other => bail!("unexpected reply {other:?}"),
        }
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    if inbox.to_vec(0, size)? != payload {
        bail!("the echoed payload differs from what was sent");
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    if json {
        let out = json!({"addr": addr, "transport": ep.kind(), "size": size, "count": count,
                         "connect_us": connect_us, "p50_us": pct(0.5), "p99_us": pct(0.99), "min_us": pct(0.0), "max_us": pct(1.0)});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{count} round trips of {size} B to {addr} over {}: p50 {:.2} us, p99 {:.2} us, min {:.2} us (connect {:.0} us)",
            ep.kind(),
            pct(0.5),
            pct(0.99),
            pct(0.0),
            connect_us
        );
    }
    Ok(())
}
