//! `rfx-bench`: latency benchmarks of rfx, each printed next to a raw
//! baseline measured in the same run, with the ratio.
//!
//! ```text
//! rfx-bench transport [--transport tcp,shm] [--mode hot,warm] [--sizes 8,4k,1m]
//!                     [--iters N] [--warmup N] [--cpus 0,1] [--json [FILE|-]]
//! rfx-bench invoke [--transport shm,tcp] [--mode hot,warm] [--sizes ...] [--iters N]
//!                  [--warmup N] [--cpus 0,1] [--lib PATH] [--json [FILE|-]]
//! rfx-bench throughput [--transport shm,tcp] [--threads 1,2] [--duration-s 3]
//!                      [--depth 32] [--mode hot] [--lib PATH] [--json [FILE|-]]
//! rfx-bench cold-start [--with-lease|--direct] [--transport shm,tcp] [--iters 20]
//!                      [--lib PATH] [--json [FILE|-]]
//! rfx-bench coll [--ranks 2,4] [--ops allreduce,bcast,...] [--sizes 8,1k,1m] [--iters N]
//!                [--mpi target/coll_lat] [--transport auto] [--json [FILE|-]]
//! rfx-bench all [--json out/] [--sizes ...] [--iters N] [--warmup N] [--duration S]
//! rfx-bench report [out/]
//! ```
//!
//! Every measuring subcommand also takes `--csv FILE` (one line per result
//! row, nested fields flattened to `a.b` columns).

mod all;
mod baseline;
mod cmd;
mod cold_start;
mod coll;
mod invoke;
mod library;
mod load;
mod machine;
mod mpi_overhead;
mod osu;
mod pin;
mod queue;
mod report;
mod results;
mod schedule;
mod stats;
mod throughput;
mod transport;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rfx-bench",
    version,
    about = "rfx latency benchmarks against raw baselines"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// write_imm ping-pong per provider and size, hot and warm, against a
    /// raw TCP socket / raw shared-memory ping-pong.
    Transport(cmd::transport::TransportArgs),
    /// Round trips of `noop` and `echo` invocations through an in-process
    /// executor, per size, hot and warm, against the rfx transport round
    /// trip measured in the same run.
    Invoke(cmd::invoke::InvokeArgs),
    /// Pipelined `noop` invocations per second, N client threads each with
    /// its own connection to a worker of an in-process executor.
    Throughput(cmd::throughput::ThroughputArgs),
    /// Lease (or, with --direct, spawn an `rfx executor` process), connect,
    /// ship the library, first `noop` result: the time of each phase,
    /// against a trivial spawn.
    ColdStart(cmd::cold_start::ColdStartArgs),
    /// Latency of each collective per size and rank count by OSU's method
    /// (each call timed alone, a barrier between calls; `--method
    /// pipelined` times back-to-back calls instead, which is throughput),
    /// and with --mpi of an MPI implementation run the same way, with the
    /// ratio.
    Coll(cmd::coll::CollArgs),
    /// The unmodified OSU Micro-Benchmarks on rfx (rfx's libmpi_abi.so.1),
    /// on MPICH (its libmpi_abi.so.1, the same binaries) and on Open MPI,
    /// as OSU reports them, with the ratios; and the ABI layer's cost per
    /// call.
    Mpi(cmd::mpi::MpiArgs),
    /// Bounded load test: many tenants leasing, invoking and releasing
    /// against one lease manager and several executor managers (child
    /// processes); counts errors and lost results, latency under load.
    Load(load::LoadArgs),
    /// The lease manager's queue: 10 000 one-core requests of 100 tenants
    /// queued, then served when capacity frees; queueing and grant rates,
    /// and whether grants went round robin between tenants.
    Queue(queue::QueueArgs),
    /// One rank of `coll` (started by it).
    #[command(hide = true)]
    CollRank(cmd::coll::CollRankArgs),
    /// Collectives on device memory (a GPU with --device cuda, or the host
    /// reference device) against the same on host memory, OSU's method, and
    /// the reduction kernel's bandwidth against a device copy.
    Device(cmd::device::DeviceArgs),
    /// One rank of `device` (started by it).
    #[command(hide = true)]
    DeviceRank(cmd::device::DeviceRankArgs),
    /// Every benchmark above with its baselines found on this machine
    /// (scripts/baselines.sh installs them), one JSON file each in a
    /// directory, plus `all.json` saying what ran and what was missing.
    All(all::AllArgs),
    /// Reads the result files of a directory (`all --json DIR`) and writes
    /// DIR/report.md and DIR/report.html with SVG plots in DIR/plots/.
    Report(report::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Transport(a) => cmd::transport::run(a),
        Cmd::Invoke(a) => cmd::invoke::run(a),
        Cmd::Throughput(a) => cmd::throughput::run(a),
        Cmd::ColdStart(a) => cmd::cold_start::run(a),
        Cmd::Coll(a) => cmd::coll::run(a),
        Cmd::Mpi(a) => cmd::mpi::run(a),
        Cmd::Load(a) => load::run(a),
        Cmd::Queue(a) => queue::run(a),
        Cmd::All(a) => all::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::CollRank(a) => cmd::coll::rank(a),
        Cmd::Device(a) => cmd::device::run(a),
        Cmd::DeviceRank(a) => cmd::device::rank(a),
    }
}
