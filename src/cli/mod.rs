//! Command-line parsing and dispatch.

mod demo;
mod exec;
mod fabric;
mod lease;
mod manager;
mod run;

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
    /// Serve one lease's invocations (started by the executor manager, or by
    /// hand with RFX_LEASE_TOKEN set).
    Executor(exec::ExecutorArgs),
    /// Invoke a function on an executor (lease token in RFX_LEASE_TOKEN).
    Invoke(exec::InvokeArgs),
    /// Run the lease manager (cluster key in RFX_CLUSTER_KEY).
    LeaseManager(lease::LeaseManagerArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(lease::TenantCmd),
    /// Lease executor slots (tenant token in RFX_TENANT_TOKEN).
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Run the executor manager of this host (cluster key in RFX_CLUSTER_KEY).
    ExecutorManager(manager::ExecutorManagerArgs),
    /// The hosts registered with a lease manager, and the batch jobs of
    /// those it asked a scheduler for (cluster key in RFX_CLUSTER_KEY).
    Hosts(lease::HostsArgs),
    /// Everything on this machine in one command: lease manager, executor
    /// manager, a tenant, a lease, invocations over each transport, usage.
    Demo(demo::DemoArgs),
    /// Launch an MPI-like program on N ranks wired up by a rendezvous
    /// (`rfx run -n 4 PROGRAM`).
    Run(run::RunArgs),
}

/// The fabric configuration: environment, then the command line.
fn config(cli_transport: Option<TransportChoice>) -> anyhow::Result<Config> {
    let mut cfg = Config::from_env()?;
    if let Some(t) = cli_transport {
        cfg.transport = t;
    }
    Ok(cfg)
}

/// Runs one command; the process's exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let transport = cli.transport;
    let cfg = || config(transport);
    let done = match cli.cmd {
        // The launcher passes the transport on to its ranks; it opens no fabric.
        Cmd::Run(a) => return run::run(a, transport.map(|t| t.to_string())),
        Cmd::Fabric(c) => fabric::run(c, cfg()?),
        Cmd::Executor(a) => exec::executor(a, cfg()?),
        Cmd::Invoke(a) => exec::invoke(a, cfg()?),
        Cmd::LeaseManager(a) => {
            // It holds the cluster key: no process of the same uid may read
            // its memory or environment (the executor manager does the same).
            nix::sys::prctl::set_dumpable(false)?;
            lease::lease_manager(a)
        }
        Cmd::Tenant(c) => lease::tenant(c),
        Cmd::Lease(c) => lease::lease(c),
        Cmd::ExecutorManager(a) => manager::executor_manager(a),
        Cmd::Hosts(a) => lease::hosts(a),
        Cmd::Demo(a) => demo::demo(a),
    };
    done.map(|()| 0)
}
