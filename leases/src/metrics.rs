//! Prometheus metrics over HTTP: the exporter both managers run with
//! `--metrics-listen ADDR` (tiny_http on a thread of its own), and the
//! lease manager's metrics (prometheus-client, OpenMetrics text).
//!
//! `GET /metrics` answers what `render` returns; any other path is a 404.
//! The exporter never touches the managers' state itself: `render` asks
//! their owner (the lease manager's core task answers a message).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The content type of OpenMetrics text (what prometheus-client encodes),
/// served to scrapers that accept it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus' text format 0.0.4, served otherwise
/// (curl, `promtool check metrics`).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus' text format 0.0.4: the same samples; a
/// counter's `HELP` and `TYPE` name its `_total` samples, and the `UNIT`
/// and `EOF` lines go.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{p}{name}{total} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A running exporter; stops when dropped.
pub struct Exporter {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Exporter {
    /// Serves `render()` at `http://listen/metrics`.
    pub fn serve(
        listen: SocketAddr,
        render: impl Fn() -> Result<String, String> + Send + 'static,
    ) -> std::io::Result<Exporter> {
        let server = tiny_http::Server::http(listen).map_err(std::io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the exporter listens on no IP address"))?;
        let server = Arc::new(server);
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("rfx-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let openmetrics = req.headers().iter().any(|h| {
                        h.field.equiv("Accept")
                            && h.value.as_str().contains("application/openmetrics-text")
                    });
                    let reply = match (req.method(), req.url()) {
                        (tiny_http::Method::Get, "/metrics") => match render() {
                            Ok(body) => {
                                let (body, kind) = if openmetrics {
                                    (body, OPENMETRICS)
                                } else {
                                    (to_text_format(&body), TEXT)
                                };
                                tiny_http::Response::from_string(body).with_header(
                                    tiny_http::Header::from_bytes("Content-Type", kind)
                                        .expect("a valid header"),
                                )
                            }
                            Err(e) => tiny_http::Response::from_string(e).with_status_code(503),
                        },
                        _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
                    };
                    if let Err(e) = req.respond(reply) {
                        tracing::debug!("metrics reply failed: {e}");
                    }
                }
            })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        Ok(Exporter {
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Label sets: `[("tenant", "alice")]`.
pub type Labels = Vec<(String, String)>;

/// One label.
pub fn label(k: &str, v: impl Into<String>) -> Labels {
    vec![(k.to_owned(), v.into())]
}

#[cfg(feature = "server")]
pub(crate) use lease_manager::LeaseManagerMetrics;

#[cfg(feature = "server")]
mod lease_manager {
    use super::{label, Labels};
    use crate::proto::{LeaseState, Manager, Output, StoreOp, TicketOutcome, GPU};
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    /// What the lease manager counts as it goes (counters, the queue's
    /// wait times) and reads from its state at each scrape (gauges).
    #[derive(Debug)]
    pub(crate) struct LeaseManagerMetrics {
        registry: Registry,
        leases: Family<Labels, Gauge>,
        granted: Counter,
        ended: Family<Labels, Counter>,
        queue_depth: Gauge,
        queue_wait: Histogram,
        tickets_ended: Family<Labels, Counter>,
        hosts: Family<Labels, Gauge>,
        cores: Family<Labels, Gauge>,
        tenant_leases: Family<Labels, Gauge>,
        tenant_cores: Family<Labels, Gauge>,
        tenant_gpus: Family<Labels, Gauge>,
        gpus: Family<Labels, Gauge>,
        tenant_queued: Family<Labels, Gauge>,
        tenant_invocations: Family<Labels, Counter>,
        tenant_bytes_in: Family<Labels, Counter>,
        tenant_bytes_out: Family<Labels, Counter>,
        tenant_exec_ms: Family<Labels, Counter>,
        tenant_restarts: Family<Labels, Counter>,
        provider_jobs: Family<Labels, Gauge>,
    }

    impl LeaseManagerMetrics {
        pub(crate) fn new() -> Self {
            let mut r = Registry::with_prefix("rfx_lease_manager");
            let m = Self {
                leases: Family::default(),
                granted: Counter::default(),
                ended: Family::default(),
                queue_depth: Gauge::default(),
                queue_wait: Histogram::new([
                    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
                ]),
                tickets_ended: Family::default(),
                hosts: Family::default(),
                cores: Family::default(),
                tenant_leases: Family::default(),
                tenant_cores: Family::default(),
                tenant_gpus: Family::default(),
                gpus: Family::default(),
                tenant_queued: Family::default(),
                tenant_invocations: Family::default(),
                tenant_bytes_in: Family::default(),
                tenant_bytes_out: Family::default(),
                tenant_exec_ms: Family::default(),
                tenant_restarts: Family::default(),
                provider_jobs: Family::default(),
                registry: Registry::default(),
            };
            r.register("leases", "Retained leases by state", m.leases.clone());
            r.register("leases_granted", "Leases granted", m.granted.clone());
            r.register(
                "leases_ended",
                "Leases ended, by how (released, expired, lost)",
                m.ended.clone(),
            );
            r.register(
                "queue_depth",
                "Lease requests waiting for capacity",
                m.queue_depth.clone(),
            );
            r.register(
                "queue_wait_seconds",
                "How long granted requests waited in the queue",
                m.queue_wait.clone(),
            );
            r.register(
                "tickets_ended",
                "Queued requests that stopped waiting, by outcome",
                m.tickets_ended.clone(),
            );
            r.register(
                "hosts",
                "Registered hosts by state (up, down)",
                m.hosts.clone(),
            );
            r.register(
                "cores",
                "Cores of the hosts that are up, by state (total, in_use)",
                m.cores.clone(),
            );
            r.register(
                "tenant_leases",
                "Active leases per tenant",
                m.tenant_leases.clone(),
            );
            r.register(
                "tenant_cores",
                "Cores held by active leases per tenant",
                m.tenant_cores.clone(),
            );
            r.register(
                "tenant_gpus",
                "GPUs held by active leases per tenant",
                m.tenant_gpus.clone(),
            );
            r.register(
                "gpus",
                "GPUs of the hosts that are up, by state (total, in_use)",
                m.gpus.clone(),
            );
            r.register(
                "tenant_queued",
                "Waiting lease requests per tenant",
                m.tenant_queued.clone(),
            );
            r.register(
                "tenant_invocations",
                "Invocations reported per tenant",
                m.tenant_invocations.clone(),
            );
            r.register(
                "tenant_bytes_in",
                "Input bytes reported per tenant",
                m.tenant_bytes_in.clone(),
            );
            r.register(
                "tenant_bytes_out",
                "Output bytes reported per tenant",
                m.tenant_bytes_out.clone(),
            );
            r.register(
                "tenant_exec_ms",
                "Milliseconds of function execution reported per tenant",
                m.tenant_exec_ms.clone(),
            );
            r.register(
                "tenant_executor_restarts",
                "Executor restarts (a function past its time limit) reported per tenant",
                m.tenant_restarts.clone(),
            );
            r.register(
                "provider_jobs",
                "Batch jobs running hosts (--provider), by state (pending, running, cancelling)",
                m.provider_jobs.clone(),
            );
            Self { registry: r, ..m }
        }

        /// Counts what one output of the manager did (before it is sent).
        pub(crate) fn observe(&self, mgr: &Manager, out: &Output) {
            let Output::Persist(op) = out else {
                return;
            };
            match op {
                StoreOp::LeaseGranted(_) => {
                    self.granted.inc();
                }
                StoreOp::LeaseEnded { state, .. } => {
                    let how = match state {
                        LeaseState::Released => "released",
                        LeaseState::Expired => "expired",
                        LeaseState::Lost { .. } => "lost",
                        LeaseState::Active => return,
                    };
                    self.ended.get_or_create(&label("how", how)).inc();
                }
                StoreOp::TicketEnded {
                    ticket,
                    outcome,
                    at,
                } => {
                    let what = match outcome {
                        TicketOutcome::Granted(_) => {
                            if let Some(t) = mgr.state().ticket(*ticket) {
                                let waited = at.saturating_sub(t.queued_at_ms);
                                self.queue_wait.observe(waited as f64 / 1000.0);
                            }
                            "granted"
                        }
                        TicketOutcome::TimedOut => "timed_out",
                        TicketOutcome::Cancelled => "cancelled",
                    };
                    self.tickets_ended
                        .get_or_create(&label("outcome", what))
                        .inc();
                }
                StoreOp::UsageReported { lease, delta, .. } => {
                    let Some(l) = mgr.state().lease(*lease) else {
                        return;
                    };
                    let t = label("tenant", l.tenant.as_str());
                    self.tenant_invocations
                        .get_or_create(&t)
                        .inc_by(delta.invocations);
                    self.tenant_bytes_in
                        .get_or_create(&t)
                        .inc_by(delta.bytes_in);
                    self.tenant_bytes_out
                        .get_or_create(&t)
                        .inc_by(delta.bytes_out);
                    self.tenant_exec_ms.get_or_create(&t).inc_by(delta.exec_ms);
                    self.tenant_restarts
                        .get_or_create(&t)
                        .inc_by(delta.function_timeouts);
                }
                _ => {}
            }
        }

        /// The metrics, with the gauges read from `mgr` and the provider's
        /// `jobs` now.
        pub(crate) fn render(
            &self,
            mgr: &Manager,
            jobs: &[crate::wire::JobInfo],
        ) -> Result<String, String> {
            self.provider_jobs.clear();
            for j in jobs {
                let state = j.state.split(' ').next().unwrap_or("unknown");
                self.provider_jobs
                    .get_or_create(&label("state", state))
                    .inc();
            }
            let state = mgr.state();
            self.leases.clear();
            self.tenant_leases.clear();
            self.tenant_cores.clear();
            self.tenant_gpus.clear();
            self.tenant_queued.clear();
            for l in state.leases() {
                let s = match l.state {
                    LeaseState::Active => "active",
                    LeaseState::Released => "released",
                    LeaseState::Expired => "expired",
                    LeaseState::Lost { .. } => "lost",
                };
                self.leases.get_or_create(&label("state", s)).inc();
                if l.is_active() {
                    let t = label("tenant", l.tenant.as_str());
                    self.tenant_leases.get_or_create(&t).inc();
                    self.tenant_cores
                        .get_or_create(&t)
                        .inc_by(i64::from(l.cores));
                    let gpus = l.accelerators.get(GPU).map_or(0, Vec::len);
                    self.tenant_gpus.get_or_create(&t).inc_by(gpus as i64);
                }
            }
            for t in mgr.waiting() {
                self.tenant_queued
                    .get_or_create(&label("tenant", t.tenant.as_str()))
                    .inc();
            }
            self.queue_depth.set(mgr.queue_depth() as i64);
            self.hosts.clear();
            self.cores.clear();
            self.gpus.clear();
            for s in ["up", "down"] {
                self.hosts.get_or_create(&label("state", s)).set(0);
            }
            for h in state.hosts() {
                let s = if h.up { "up" } else { "down" };
                self.hosts.get_or_create(&label("state", s)).inc();
                if h.up {
                    self.cores
                        .get_or_create(&label("state", "total"))
                        .inc_by(i64::from(h.capacity.cores));
                    self.cores
                        .get_or_create(&label("state", "in_use"))
                        .inc_by(i64::from(h.capacity.cores - h.free.free_cores()));
                    let total = h.capacity.accelerators.get(GPU).copied().unwrap_or(0);
                    self.gpus
                        .get_or_create(&label("state", "total"))
                        .inc_by(i64::from(total));
                    self.gpus
                        .get_or_create(&label("state", "in_use"))
                        .inc_by(i64::from(total.saturating_sub(h.free.free_devices(GPU))));
                }
            }
            let mut out = String::new();
            encode(&mut out, &self.registry).map_err(|e| e.to_string())?;
            Ok(out)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::proto::{Capacity, Config, LeaseRequest, TenantId};

        #[test]
        fn gpus_are_counted_per_host_and_tenant() {
            let mut mgr = Manager::new(Config::default());
            let cap = Capacity::new(8, 4096).with_accelerators(GPU, 3);
            mgr.register_host(0, "a:1", cap).unwrap();
            let req = LeaseRequest::new(1, 60_000).with_accelerators(GPU, 2);
            mgr.request_lease(0, &TenantId::from("alice"), &req)
                .unwrap();
            let text = LeaseManagerMetrics::new().render(&mgr, &[]).unwrap();
            for line in [
                "rfx_lease_manager_gpus{state=\"total\"} 3",
                "rfx_lease_manager_gpus{state=\"in_use\"} 2",
                "rfx_lease_manager_tenant_gpus{tenant=\"alice\"} 2",
            ] {
                assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 3\n# HELP b Depth.\n# TYPE b gauge\n# UNIT b seconds\nb 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 3\n# HELP b Depth.\n# TYPE b gauge\nb 1\n"
        );
    }
}
