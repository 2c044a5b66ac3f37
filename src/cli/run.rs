//! `rfx run`: the launcher of MPI-like programs (see [`rfx::launch`]).

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;
use rfx::launch::{self, LaunchSpec};

/// `rfx run -n N [--hosts H,...] PROGRAM [ARGS...]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of ranks.
    #[arg(short = 'n', long = "np", default_value_t = 1)]
    ranks: usize,
    /// Hosts to place the ranks on, in blocks (default: this host).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// Prefix each output line with its rank.
    #[arg(long)]
    tag_output: bool,
    /// Kill the job after this many seconds (exit code 124).
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Remote shell for other hosts (default `ssh -o BatchMode=yes`).
    #[arg(long, env = "RFX_RSH", value_delimiter = ' ')]
    rsh: Vec<String>,
    /// Extra environment for every rank, `KEY=VALUE` (repeatable).
    #[arg(short = 'x', long = "env")]
    env: Vec<String>,
    /// Do not give ranks rfx's MPI library: programs built against the MPI
    /// standard ABI then load the implementation their own paths name.
    #[arg(long)]
    no_mpi: bool,
    /// Bind each rank on this machine to a CPU of its own (round robin over
    /// the CPUs `rfx run` may use), as `mpirun --bind-to core`: busy-polling
    /// ranks then never share a core while one is free.
    #[arg(long)]
    bind_to_core: bool,
    /// The program.
    program: OsString,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Runs the job; returns the exit code for the process.
pub fn run(a: RunArgs, transport: Option<String>) -> anyhow::Result<i32> {
    let mut env = Vec::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env wants KEY=VALUE, got {kv}"))?;
        env.push((k.to_string(), v.to_string()));
    }
    if let Some(t) = transport {
        env.push(("RFX_TRANSPORT".into(), t));
    }
    let spec = LaunchSpec {
        ranks: a.ranks,
        hosts: a.hosts,
        program: a.program,
        args: a.args,
        tag_output: a.tag_output,
        timeout: a.timeout_s.map(Duration::from_secs),
        rsh: a.rsh.into_iter().filter(|s| !s.is_empty()).collect(),
        env,
        bind_to_core: a.bind_to_core,
        mpi: if a.no_mpi {
            None
        } else {
            launch::MpiLibrary::find()
        },
    };
    let report = launch::run(&spec)?;
    if let Some(r) = report.first_failure {
        eprintln!(
            "rfx run: rank {r} failed with exit code {}; the other ranks were stopped",
            report.codes[r]
        );
    } else if report.timed_out {
        eprintln!("rfx run: timed out; every rank was stopped");
    }
    Ok(report.exit_code())
}
