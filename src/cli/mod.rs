//! Command-line parsing and dispatch.

mod fabric;

use clap::{Parser, Subcommand};
use rfx::fabric::{Config, TransportChoice};

/// rfx: a peer-to-peer function fabric for HPC.
#[derive(Debug, Parser)]
#[command(name = "rfx", version, about)]
pub struct Cli {
    /// Transport: auto, tcp, shm, verbs, ofi (overrides RFX_TRANSPORT).
    #[arg(long, global = true)]
    transport: Option<TransportChoice>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The transport layer: list providers, check connectivity.
    #[command(subcommand)]
    Fabric(fabric::FabricCmd),
}

/// The fabric configuration: environment, then the command line.
fn config(cli_transport: Option<TransportChoice>) -> anyhow::Result<Config> {
    let mut cfg = Config::from_env()?;
    if let Some(t) = cli_transport {
        cfg.transport = t;
    }
    Ok(cfg)
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = config(cli.transport)?;
    match cli.cmd {
        Cmd::Fabric(c) => fabric::run(c, cfg),
    }
}
