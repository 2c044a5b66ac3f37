//! The executor manager's Prometheus metrics (`--metrics-listen`):
//! executors running, started and ended by how, restarts at the time
//! limit, and the invocations and bytes its executors reported.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rfx_leases::metrics::{label, Labels};
use rfx_leases::proto::UsageReport;

/// Counters and gauges, updated where things happen (atomics: no lock
/// with the driver), encoded at each scrape.
#[derive(Debug)]
pub(crate) struct ManagerMetrics {
    registry: Registry,
    running: Gauge,
    starts: Counter,
    ended: Family<Labels, Counter>,
    restarts: Counter,
    invocations: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl ManagerMetrics {
    pub(crate) fn new() -> Self {
        let mut r = Registry::with_prefix("rfx_executor_manager");
        let m = Self {
            registry: Registry::default(),
            running: Gauge::default(),
            starts: Counter::default(),
            ended: Family::default(),
            restarts: Counter::default(),
            invocations: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
        };
        r.register(
            "executors_running",
            "Executors running (one per lease)",
            m.running.clone(),
        );
        r.register("executor_starts", "Executors started", m.starts.clone());
        r.register(
            "executor_ends",
            "Executors that ended, by how (stopped, crashed, out_of_memory)",
            m.ended.clone(),
        );
        r.register(
            "executor_restarts",
            "Executors restarted within their lease after a function ran past its time limit",
            m.restarts.clone(),
        );
        r.register(
            "invocations",
            "Invocations the executors reported",
            m.invocations.clone(),
        );
        r.register(
            "bytes_in",
            "Input bytes the executors reported",
            m.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Output bytes the executors reported",
            m.bytes_out.clone(),
        );
        Self { registry: r, ..m }
    }

    pub(crate) fn started(&self) {
        self.starts.inc();
        self.running.inc();
    }

    /// An executor's supervisor ended: `how` it did.
    pub(crate) fn ended(&self, how: &str) {
        self.running.dec();
        self.ended.get_or_create(&label("how", how)).inc();
    }

    pub(crate) fn restarted(&self) {
        self.restarts.inc();
    }

    pub(crate) fn usage(&self, delta: &UsageReport) {
        self.invocations.inc_by(delta.invocations);
        self.bytes_in.inc_by(delta.bytes_in);
        self.bytes_out.inc_by(delta.bytes_out);
    }

    pub(crate) fn render(&self) -> Result<String, String> {
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
