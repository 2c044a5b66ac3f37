//! sockperf (Debian package `sockperf`) as the TCP baseline of
//! `rfx-bench all`: `sockperf server` and `sockperf ping-pong --full-rtt`
//! on loopback, pinned like the rfx ping-pong (client on the first CPU,
//! server on the second); hot mode is `--nonblocked` (both ends spin on
//! non-blocking sockets), warm mode blocks.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rfx_fabric::TransportKind;
use serde::{Deserialize, Serialize};

use crate::results::f64_or_nan;

/// sockperf's message size limits (its minimum, and the server's largest
/// TCP message).
pub const MIN_MSG: usize = 14;
pub const MAX_MSG: usize = 65_000;

/// Percentiles sockperf printed, µs of a full round trip (`mean_us` is NaN,
/// written as `null`, when sockperf printed no average).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SockperfSummary {
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
    /// `(quantile, µs)` of every percentile sockperf printed.
    pub cdf_us: Vec<(f64, f64)>,
}

/// One size and mode (a row of `sockperf.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Always tcp.
    pub transport: TransportKind,
    /// `hot` (`--nonblocked`) or `warm`.
    pub mode: String,
    /// The size asked for (the rfx size it is compared with).
    pub size: usize,
    /// The size sockperf sent (clamped to its limits).
    pub msg_size: usize,
    pub sockperf: SockperfSummary,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn after_eq(line: &str) -> Option<f64> {
    line.rsplit('=')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Parses the statistics of `sockperf ping-pong --full-rtt`.
pub fn parse(text: &str) -> Option<SockperfSummary> {
    let text = strip_ansi(text);
    let mut cdf = Vec::new();
    let (mut min, mut max, mut mean, mut iters) = (None, None, None, 0u64);
    for line in text.lines() {
        if let Some(rest) = line.split("---> percentile ").nth(1) {
            let point = rest.split_once('=').and_then(|(p, v)| {
                Some((
                    p.trim().parse::<f64>().ok()? / 100.0,
                    v.trim().parse::<f64>().ok()?,
                ))
            });
            cdf.extend(point);
        } else if line.contains("<MAX> observation") {
            max = after_eq(line);
        } else if line.contains("<MIN> observation") {
            min = after_eq(line);
        } else if let Some(rest) = line.split("avg-rtt=").nth(1) {
            mean = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.split("Total ").nth(1) {
            if let Some(n) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                iters = n;
            }
        }
    }
    let (min, max) = (min?, max?);
    cdf.push((0.0, min));
    cdf.push((1.0, max));
    cdf.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at = |q: f64| cdf.iter().find(|p| (p.0 - q).abs() < 1e-9).map(|p| p.1);
    Some(SockperfSummary {
        iters,
        min_us: min,
        p50_us: at(0.5)?,
        p90_us: at(0.9)?,
        p99_us: at(0.99)?,
        p999_us: at(0.999)?,
        max_us: max,
        mean_us: mean.unwrap_or(f64::NAN),
        cdf_us: cdf,
    })
}

/// A child killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(cpu: Option<usize>) -> Command {
    match cpu {
        Some(c) if super::on_path("taskset") => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string(), "sockperf"]);
            cmd
        }
        _ => Command::new("sockperf"),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One ping-pong run; sockperf's statistics.
fn once(
    msg: usize,
    hot: bool,
    seconds: u64,
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<String> {
    let mut last = String::new();
    for attempt in 0..3u64 {
        let port = free_port()?.to_string();
        let mut server = pinned(cpus.1);
        server.args(["server", "-i", "127.0.0.1", "-p", &port, "--tcp"]);
        if hot {
            server.arg("--nonblocked");
        }
        let _server = Reaped(
            server
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning sockperf server")?,
        );
        std::thread::sleep(Duration::from_millis(300 + 300 * attempt));
        let mut client = pinned(cpus.0);
        client.args([
            "ping-pong",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "--tcp",
            "--full-rtt",
        ]);
        client.args(["-m", &msg.to_string(), "-t", &seconds.to_string()]);
        if hot {
            client.arg("--nonblocked");
        }
        let out_path =
            std::env::temp_dir().join(format!("rfx-sockperf-{}-{port}.log", std::process::id()));
        let out_file = std::fs::File::create(&out_path)?;
        let mut child = Reaped(
            client
                .stdin(Stdio::null())
                .stdout(out_file.try_clone()?)
                .stderr(out_file)
                .spawn()
                .context("spawning sockperf ping-pong")?,
        );
        let deadline = Instant::now() + Duration::from_secs(seconds + 20);
        let status = loop {
            if let Some(st) = child.0.try_wait()? {
                break Some(st);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        match status {
            Some(st) if st.success() && parse(&text).is_some() => return Ok(text),
            Some(st) => last = format!("{st}: {}", text.trim()),
            None => last = format!("ran over {}s", seconds + 20),
        }
    }
    bail!("sockperf ping-pong -m {msg} failed three times: {last}")
}

/// sockperf round trips at each size (clamped to its limits; larger
/// sizes are left out) and mode.
pub fn run(
    sizes: &[usize],
    modes: &[&'static str],
    seconds: u64,
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &mode in modes {
        for &size in sizes.iter().filter(|&&s| s <= MAX_MSG) {
            let msg = size.clamp(MIN_MSG, MAX_MSG);
            let text = once(msg, mode == "hot", seconds.max(1), cpus)?;
            let sockperf = parse(&text).context("no statistics in sockperf's output")?;
            rows.push(Row {
                transport: TransportKind::Tcp,
                mode: mode.to_string(),
                size,
                msg_size: msg,
                sockperf,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_sockperf_statistics() {
        let text = "sockperf: \u{1b}[2;35m====> avg-rtt=25.253 (std-dev=211.375)\u{1b}[0m\n\
            sockperf: \u{1b}[2;35mTotal 61293 observations\u{1b}[0m; each percentile contains 612.93 observations\n\
            sockperf: ---> <MAX> observation = 24511.817\n\
            sockperf: ---> percentile 99.999 = 11050.025\n\
            sockperf: ---> percentile 99.990 = 8428.562\n\
            sockperf: ---> percentile 99.900 = 2813.680\n\
            sockperf: ---> percentile 99.000 =  135.162\n\
            sockperf: ---> percentile 90.000 =   13.570\n\
            sockperf: ---> percentile 75.000 =   13.179\n\
            sockperf: ---> percentile 50.000 =   12.869\n\
            sockperf: ---> percentile 25.000 =   12.458\n\
            sockperf: ---> <MIN> observation =   11.527\n";
        let s = super::parse(text).expect("parsed");
        assert_eq!(s.iters, 61293);
        assert_eq!((s.min_us, s.p50_us, s.p90_us), (11.527, 12.869, 13.570));
        assert_eq!(
            (s.p99_us, s.p999_us, s.max_us, s.mean_us),
            (135.162, 2813.680, 24511.817, 25.253)
        );
        assert_eq!(s.cdf_us.len(), 10);
        assert_eq!(s.cdf_us[0], (0.0, 11.527));
        assert!(s.cdf_us.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(super::parse("sockperf: ERROR: connection refused").is_none());
    }
}
