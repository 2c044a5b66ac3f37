//! Latency summaries from hdrhistogram.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::results::f64_or_nan;

/// The quantiles of [`Summary::cdf_us`]: enough points for a latency CDF
/// (percentile plot) of `rfx-bench report`, down to the 99.99th.
pub const CDF_QUANTILES: [f64; 20] = [
    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999,
    0.9995, 0.9999, 1.0,
];

/// `(quantile, µs)` at each of [`CDF_QUANTILES`].
pub type Cdf = [(f64, f64); CDF_QUANTILES.len()];

/// Percentiles of one series of round trips, in microseconds.
/// (Read back by `rfx-bench report`: a figure written as `null`, not
/// finite, reads as NaN.)
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Summary {
    pub iters: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub min_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p50_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p90_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p99_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p999_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean_us: f64,
    /// The histogram's latency at each of [`CDF_QUANTILES`]; `None` for a
    /// baseline that reports only a mean (and in files from before the
    /// CDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdf_us: Option<Cdf>,
}

impl Summary {
    /// A series known only by its mean (e.g. `fi_pingpong`'s `usec/xfer`):
    /// every percentile is the mean, and there is no CDF.
    #[cfg_attr(not(feature = "ofi"), allow(dead_code))]
    pub fn mean_only(iters: u64, mean_us: f64) -> Summary {
        Summary {
            iters,
            min_us: mean_us,
            p50_us: mean_us,
            p90_us: mean_us,
            p99_us: mean_us,
            p999_us: mean_us,
            max_us: mean_us,
            mean_us,
            cdf_us: None,
        }
    }
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
            cdf_us: Some(CDF_QUANTILES.map(|q| (q, us(h.value_at_quantile(q))))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_a_monotone_cdf_ending_at_the_max() {
        let mut r = Recorder::new();
        for ns in 1..=10_000u64 {
            r.record(ns * 10);
        }
        let s = r.summary();
        let cdf = s.cdf_us.expect("a recorder has a CDF");
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cdf[cdf.len() - 1].1, s.max_us);
        assert_eq!(cdf[7], (0.5, s.p50_us));
        assert!((s.p50_us - 50.0).abs() < 0.1, "{s:?}");
        let m = Summary::mean_only(5, 2.5);
        assert_eq!((m.p50_us, m.max_us, m.cdf_us), (2.5, 2.5, None));
    }
}
