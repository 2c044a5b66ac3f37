//! The result files of `rfx-bench`, as types: each measuring subcommand
//! (and `all`) writes its report as one of these with serde, and
//! `rfx-bench report` reads the file back into the same type. The field
//! names and their nesting are the files' format: renaming a field renames
//! a JSON key, and files written before would no longer load.
//!
//! serde_json writes a float that is not finite (NaN, ∞) as `null`; the
//! plain `f64` fields read `null` back as NaN ([`f64_or_nan`]), so that any
//! file this binary wrote loads again. Fields added after the first files
//! were written take a default when absent.

use std::path::PathBuf;

use rfx_fabric::TransportKind;
use serde::{Deserialize, Deserializer, Serialize};

use crate::all::sockperf;
use crate::cold_start::{Sample, Spread};
use crate::coll::Point;
use crate::machine::Machine;
use crate::schedule::Step;
use crate::stats::Summary;
use crate::throughput::ThreadStats;

/// Reads an `f64` that serde_json may have written as `null` (it was not
/// finite) as NaN.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// NaN: the value of a figure absent from an older file.
pub fn nan() -> f64 {
    f64::NAN
}

fn write_op() -> String {
    "write".into()
}

fn pipelined() -> String {
    "pipelined".into()
}

fn lease_chain() -> String {
    "lease".into()
}

/// A result file of a measuring subcommand: `--json` writes all of it,
/// `--csv` its rows.
pub trait ResultFile: Serialize {
    /// One result row.
    type Row: Serialize;
    /// The rows, in the order they were measured.
    fn rows(&self) -> &[Self::Row];
}

/// One row of `transport.json`: a provider, operation, polling mode and
/// size, rfx against the raw baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportRow {
    /// The provider.
    pub transport: TransportKind,
    /// `write` (write_imm round trip) or `read` (one-sided read); files
    /// from before `--op` hold writes only.
    #[serde(default = "write_op")]
    pub op: String,
    /// `hot` (busy poll) or `warm` (blocking).
    pub mode: String,
    /// Payload bytes.
    pub size: usize,
    /// What the raw baseline is, where there is one.
    pub baseline: Option<String>,
    /// rfx's round trips.
    pub rfx: Summary,
    /// The raw baseline's round trips, where there is one.
    pub raw: Option<Summary>,
    /// rfx p50 / baseline p50.
    pub ratio_p50: Option<f64>,
    /// rfx p99 / baseline p99.
    pub ratio_p99: Option<f64>,
}

/// `transport.json`: `rfx-bench transport`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportReport {
    /// `transport`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The CPUs of the client and the server.
    pub cpus: (Option<usize>, Option<usize>),
    /// Sizes and iterations.
    pub schedule: Vec<Step>,
    /// One row per provider, mode and size.
    #[serde(default)]
    pub results: Vec<TransportRow>,
}

impl ResultFile for TransportReport {
    type Row = TransportRow;
    fn rows(&self) -> &[TransportRow] {
        &self.results
    }
}

/// One row of `invoke.json`: a provider, mode, function and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeRow {
    /// The provider.
    pub transport: TransportKind,
    /// `hot` or `warm` (client and executor), or `hot/warm-exec` (a polling
    /// client, a sleeping executor; the baseline is then the hot round trip).
    pub mode: String,
    /// `noop` or `echo`.
    pub function: String,
    /// Input bytes.
    pub size: usize,
    /// The invocation round trips.
    pub invoke: Summary,
    /// The rfx write_imm round trip of the same size (`transport` bench).
    pub transport_pingpong: Summary,
    /// invoke p50 / transport_pingpong p50.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ratio_p50: f64,
    /// invoke p99 / transport_pingpong p99.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ratio_p99: f64,
}

/// A goal of `invoke.json`: the no-op 8 B invocation against the round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeGoal {
    /// The provider.
    pub transport: TransportKind,
    /// `hot` or `warm`.
    pub mode: String,
    /// What is compared.
    pub what: String,
    /// The ratio measured.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ratio_p50: f64,
    /// The goal's bound on it.
    pub limit: f64,
    /// `ratio_p50 <= limit`.
    pub met: bool,
}

/// `invoke.json`: `rfx-bench invoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeReport {
    /// `invoke`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The CPUs of the client and the executor.
    pub cpus: (Option<usize>, Option<usize>),
    /// The function library.
    pub library: PathBuf,
    /// What `transport_pingpong` is.
    pub baseline: String,
    /// Sizes and iterations.
    pub schedule: Vec<Step>,
    /// One row per provider, mode, function and size.
    #[serde(default)]
    pub results: Vec<InvokeRow>,
    /// The goals judged by the run.
    #[serde(default)]
    pub goals: Vec<InvokeGoal>,
}

impl ResultFile for InvokeReport {
    type Row = InvokeRow;
    fn rows(&self) -> &[InvokeRow] {
        &self.results
    }
}

/// One row of `throughput.json`: a provider and a number of client threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// The provider.
    pub transport: TransportKind,
    /// `hot` or `warm`.
    pub mode: String,
    /// Client threads (and executor workers).
    pub threads: usize,
    /// Invocations in flight per client thread.
    pub depth: usize,
    /// Client plus executor threads polling, above the CPUs available.
    pub oversubscribed: bool,
    /// Invocations completed.
    pub invocations: u64,
    /// Invocations per second, all threads.
    #[serde(deserialize_with = "f64_or_nan")]
    pub invocations_per_s: f64,
    /// Each client thread's share.
    pub per_thread: Vec<ThreadStats>,
    /// Submit-to-result time of one invocation in 16, in the pipeline.
    pub latency: Summary,
}

/// `throughput.json`: `rfx-bench throughput`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputReport {
    /// `throughput`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The CPUs this process could use.
    pub cpus: Vec<usize>,
    /// The function library.
    pub library: PathBuf,
    /// Seconds per measurement.
    #[serde(deserialize_with = "f64_or_nan")]
    pub duration_s: f64,
    /// The goal, invocations per second.
    #[serde(deserialize_with = "f64_or_nan")]
    pub goal_per_s: f64,
    /// One row per provider and thread count.
    #[serde(default)]
    pub results: Vec<ThroughputRow>,
}

impl ResultFile for ThroughputReport {
    type Row = ThroughputRow;
    fn rows(&self) -> &[ThroughputRow] {
        &self.results
    }
}

/// One row of `cold-start.json`: the phases of a provider's cold starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartRow {
    /// `lease` (the full chain through the managers) or `direct`.
    pub chain: String,
    /// The provider.
    pub transport: TransportKind,
    /// How the client waits: `hot` or `warm`.
    pub mode: String,
    /// Cold starts measured.
    pub iters: u64,
    /// The CreateLease round trip (lease chain only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Spread>,
    /// Until the executor's address is known.
    pub spawn: Spread,
    /// Spawn to the address on stderr (direct chain only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spread>,
    /// Connecting to the executor.
    pub connect: Spread,
    /// Shipping and loading the library.
    pub load: Spread,
    /// The first `noop` result.
    pub first_result: Spread,
    /// All of it.
    pub total: Spread,
    /// The phases of each sample, in order (names of the fields above).
    #[serde(default)]
    pub phases: Vec<String>,
    /// Per iteration, nanoseconds of each phase.
    pub samples_ns: Vec<Sample>,
    /// Release waits (until the lookup forgets the lease) that hit their
    /// bound (lease chain only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_timeouts: Option<u64>,
}

impl ColdStartRow {
    /// The spread of the phase named `phase` (one of [`Self::phases`]),
    /// if this row has it.
    pub fn phase(&self, phase: &str) -> Option<&Spread> {
        match phase {
            "lease" => self.lease.as_ref(),
            "spawn" => Some(&self.spawn),
            "listen" => self.listen.as_ref(),
            "connect" => Some(&self.connect),
            "load" => Some(&self.load),
            "first_result" => Some(&self.first_result),
            "total" => Some(&self.total),
            _ => None,
        }
    }
}

/// The floor of a cold start: spawning a trivial process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    /// The process and what was timed.
    pub what: String,
    /// Its spawns.
    pub spread: Spread,
}

/// `cold-start.json`: `rfx-bench cold-start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStartReport {
    /// `cold-start`.
    pub bench: String,
    /// `lease` or `direct`.
    #[serde(default = "lease_chain")]
    pub chain: String,
    /// Where it ran.
    pub machine: Machine,
    /// The `rfx` binary.
    pub rfx: PathBuf,
    /// The function library shipped.
    pub library: PathBuf,
    /// Its size.
    pub library_bytes: u64,
    /// The CPUs of the client and the executor's worker.
    pub cpus: (Option<usize>, Option<usize>),
    /// The goal: total p50 below this, µs.
    #[serde(deserialize_with = "f64_or_nan")]
    pub goal_total_p50_us: f64,
    /// The process-spawn floors.
    #[serde(default)]
    pub floor: Vec<Floor>,
    /// One row per provider.
    #[serde(default)]
    pub results: Vec<ColdStartRow>,
}

impl ResultFile for ColdStartReport {
    type Row = ColdStartRow;
    fn rows(&self) -> &[ColdStartRow] {
        &self.results
    }
}

/// One row of `coll.json`: an operation, rank count and size, rfx against
/// MPI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollRow {
    /// The operation.
    pub op: String,
    /// Ranks.
    pub ranks: usize,
    /// Bytes per rank.
    pub size: usize,
    /// rfx's mean per-call latency, µs.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rfx_avg_us: f64,
    /// MPI's, where measured.
    pub mpi_avg_us: Option<f64>,
    /// rfx / MPI.
    pub ratio: Option<f64>,
}

/// `coll.json`: `rfx-bench coll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollReport {
    /// `coll`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The transport between ranks, as given.
    pub transport: String,
    /// `osu` (per-call latency, a barrier between calls) or `pipelined`
    /// (back-to-back calls: throughput); files from before the method was
    /// recorded are pipelined.
    #[serde(default = "pipelined")]
    pub method: String,
    /// Every point each implementation printed.
    #[serde(default)]
    pub points: Vec<Point>,
    /// rfx's points next to MPI's.
    #[serde(default)]
    pub rows: Vec<CollRow>,
}

impl ResultFile for CollReport {
    type Row = CollRow;
    fn rows(&self) -> &[CollRow] {
        &self.rows
    }
}

/// `sockperf.json`: sockperf as the TCP baseline of `rfx-bench all`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SockperfReport {
    /// `sockperf`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// Seconds per size and mode.
    pub seconds_per_point: u64,
    /// One row per mode and size.
    #[serde(default)]
    pub results: Vec<sockperf::Row>,
}

impl ResultFile for SockperfReport {
    type Row = sockperf::Row;
    fn rows(&self) -> &[sockperf::Row] {
        &self.results
    }
}

/// A baseline and whether this run has it (`all.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Its name.
    pub name: String,
    /// Whether this machine has it.
    pub found: bool,
    /// Where it is used, or how to install it.
    pub note: String,
}

/// What became of one benchmark of `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// It ran and wrote its file.
    Ok,
    /// It failed (the note says how).
    Failed,
    /// It did not run (the note says why).
    Skipped,
}

impl StepStatus {
    /// The name in `all.json`.
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One benchmark of `all` (`all.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// The benchmark.
    pub name: String,
    /// What became of it.
    pub status: StepStatus,
    /// How long it took.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
    /// Its result file, in the same directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// How it ran.
    #[serde(default)]
    pub command: Vec<String>,
    /// Why it failed or was skipped.
    #[serde(default)]
    pub note: String,
}

/// `all.json`: what `rfx-bench all` ran, how long it took, and which
/// baselines were found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `all`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The directory of the result files.
    pub dir: PathBuf,
    /// Seconds since the start.
    #[serde(deserialize_with = "f64_or_nan")]
    pub elapsed_s: f64,
    /// Each benchmark, in order.
    #[serde(default)]
    pub steps: Vec<StepResult>,
    /// Each baseline.
    #[serde(default)]
    pub baselines: Vec<Baseline>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_written_as_null_reads_back_as_nan() {
        let row = CollRow {
            op: "bcast".into(),
            ranks: 2,
            size: 8,
            rfx_avg_us: f64::NAN,
            mpi_avg_us: None,
            ratio: Some(f64::INFINITY),
        };
        let text = serde_json::to_string(&row).expect("serialize");
        assert_eq!(
            text,
            r#"{"op":"bcast","ranks":2,"size":8,"rfx_avg_us":null,"mpi_avg_us":null,"ratio":null}"#
        );
        let back: CollRow = serde_json::from_str(&text).expect("deserialize");
        assert!(back.rfx_avg_us.is_nan());
        assert_eq!((back.mpi_avg_us, back.ratio), (None, None));
    }

    #[test]
    fn older_transport_rows_default_to_writes() {
        let row: TransportRow = serde_json::from_str(
            r#"{"transport": "tcp", "mode": "hot", "size": 8, "baseline": "raw",
                "rfx": {"iters": 1, "min_us": 1.0, "p50_us": 2.0, "p90_us": 2.0, "p99_us": 2.0,
                        "p999_us": 2.0, "max_us": 3.0, "mean_us": 2.0},
                "raw": null, "ratio_p50": 1.5, "ratio_p99": null}"#,
        )
        .expect("a row without op");
        assert_eq!(row.op, "write");
        assert_eq!(row.transport, TransportKind::Tcp);
        assert!(row.raw.is_none() && row.rfx.cdf_us.is_none());
        assert_eq!((row.ratio_p50, row.ratio_p99), (Some(1.5), None));
    }

    #[test]
    fn older_spreads_lack_the_tail_percentiles() {
        let s: Spread = serde_json::from_str(r#"{"p50_us": 1.0, "p90_us": 2.0, "max_us": 3.0}"#)
            .expect("a spread from before p99");
        assert_eq!((s.p50_us, s.p90_us, s.max_us), (1.0, 2.0, 3.0));
        assert!(s.p99_us.is_nan() && s.p999_us.is_nan() && s.mean_us.is_nan());
    }
}

/// One row of `mpi.json`: an OSU benchmark at one size and rank count, as
/// OSU printed it for rfx and for the MPI implementations it ran next to
/// (medians over the rounds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MpiRow {
    /// The OSU binary, e.g. `osu_allreduce`.
    pub benchmark: String,
    /// Ranks.
    pub ranks: usize,
    /// Bytes (0 for `osu_barrier`).
    pub size: usize,
    /// `us` (average latency, lower is better) or `MB/s` (higher is better).
    pub unit: String,
    /// rfx's figure.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rfx: f64,
    /// MPICH's (its `libmpi_abi.so.1`, the same binary), where it ran.
    pub mpich: Option<f64>,
    /// Open MPI's (the benchmark built with its `mpicc`), where it ran.
    pub ompi: Option<f64>,
    /// rfx / MPICH.
    pub x_mpich: Option<f64>,
    /// rfx / Open MPI.
    pub x_ompi: Option<f64>,
}

/// The cost of the ABI layer: a call through `libmpi_abi.so.1` against
/// the same call on `rfx_collectives::Communicator`, one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MpiOverhead {
    /// What was called, e.g. `MPI_Allreduce 1 int`.
    pub call: String,
    /// ns per call on the communicator.
    #[serde(deserialize_with = "f64_or_nan")]
    pub direct_ns: f64,
    /// ns per call through the ABI.
    #[serde(deserialize_with = "f64_or_nan")]
    pub abi_ns: f64,
    /// The difference.
    #[serde(deserialize_with = "f64_or_nan")]
    pub overhead_ns: f64,
}

/// `mpi.json`: `rfx-bench mpi`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MpiReport {
    /// `mpi`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// How each implementation ran (launcher, binding, library).
    pub implementations: Vec<String>,
    /// Rounds per benchmark (figures are medians).
    pub rounds: usize,
    /// The ABI layer's cost per call.
    #[serde(default)]
    pub overhead: Vec<MpiOverhead>,
    /// The figures.
    #[serde(default)]
    pub results: Vec<MpiRow>,
}

impl ResultFile for MpiReport {
    type Row = MpiRow;
    fn rows(&self) -> &[MpiRow] {
        &self.results
    }
}

/// One row of `python.json` (`bench/python/bench.py`): a framework running
/// one task kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonRow {
    /// The framework and how it ran, e.g. `Ray (actor method calls)`.
    pub framework: String,
    /// `noop` or `echo` (4 KiB).
    pub task: String,
    /// Latency one at a time, µs.
    #[serde(deserialize_with = "f64_or_nan")]
    pub p50_us: f64,
    /// Its 99th percentile, µs.
    #[serde(deserialize_with = "f64_or_nan")]
    pub p99_us: f64,
    /// Tasks per second with many in flight.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tasks_per_s: f64,
    /// From starting the framework to the first result, s.
    #[serde(deserialize_with = "f64_or_nan")]
    pub cold_start_s: f64,
}

/// `python.json`: rfx from Python next to Ray, Dask, Parsl and
/// `ProcessPoolExecutor`, one run (`bench/python/bench.py --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonReport {
    /// `python`.
    pub bench: String,
    /// Python version, CPUs, iterations, tasks in flight.
    #[serde(default)]
    pub meta: serde_json::Value,
    /// The figures.
    #[serde(default)]
    pub rows: Vec<PythonRow>,
    /// Frameworks not measured, and why (not installed, failed).
    #[serde(default)]
    pub skipped: std::collections::BTreeMap<String, String>,
}

/// One row of `device.json`: a collective on device memory against the
/// same collective on host memory, one size, one rank count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRow {
    /// The operation.
    pub op: String,
    /// Ranks.
    pub ranks: usize,
    /// Bytes per rank.
    pub size: usize,
    /// Mean per-call latency on host memory, µs.
    pub host_us: f64,
    /// Mean per-call latency on device memory, µs.
    pub device_us: f64,
    /// device / host: the cost of staging.
    pub ratio: f64,
}

/// One row of the kernel part of `device.json`: a reduction kernel's
/// bandwidth against a device-to-device copy of the same bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelRow {
    /// Bytes of each operand.
    pub size: usize,
    /// `acc += src` (f32 sum): bytes moved (read acc, read src, write
    /// acc) per second, GB/s.
    pub reduce_gbps: f64,
    /// A copy of `size` bytes (read, write), GB/s.
    pub copy_gbps: f64,
    /// reduce / copy.
    pub ratio: f64,
}

/// `device.json`: `rfx-bench device`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceReport {
    /// `device`.
    pub bench: String,
    /// Where it ran.
    pub machine: Machine,
    /// The device (`host`, or `cuda:0 NVIDIA H100 ...`).
    pub device: String,
    /// Staging chunk and slots.
    pub chunk: usize,
    /// Pinned slots.
    pub slots: usize,
    /// Every point each side printed (`host`, `device`).
    pub points: Vec<Point>,
    /// Device against host per size.
    pub rows: Vec<DeviceRow>,
    /// Reduction kernel against copy bandwidth.
    pub kernels: Vec<KernelRow>,
}

impl ResultFile for DeviceReport {
    type Row = DeviceRow;
    fn rows(&self) -> &[DeviceRow] {
        &self.rows
    }
}
