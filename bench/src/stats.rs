//! Latency summaries from hdrhistogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one series of round trips, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub iters: u64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// A recorder of nanosecond samples.
pub struct Recorder(Histogram<u64>);

impl Recorder {
    pub fn new() -> Self {
        // 1 ns .. 100 s at 3 significant digits.
        Recorder(Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Adds the samples of `other` (same bounds, so it cannot fail).
    pub fn merge(&mut self, other: &Recorder) {
        self.0.add(&other.0).expect("recorders share their bounds");
    }

    pub fn summary(&self) -> Summary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.0;
        Summary {
            iters: h.len(),
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}
