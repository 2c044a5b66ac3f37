//! libfabric's own `fi_pingpong` (package libfabric-bin) over the same
//! provider rfx's `ofi` transport uses, with the same sizes and CPUs.
//!
//! `fi_pingpong -e rdm` busy-polls and reports only a mean (`usec/xfer`,
//! half a round trip); the summary carries the mean round trip,
//! `2 * usec/xfer`, in every percentile, so the `x p50` column of the table
//! compares rfx's median with fi_pingpong's mean.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rfx_fabric::{Config, Fabric, TransportKind};

use crate::schedule::Step;
use crate::stats::Summary;

/// The libfabric provider rfx's `ofi` transport uses under `RFX_OFI_PROVIDER`.
pub fn provider() -> anyhow::Result<String> {
    let fabric = Fabric::open(Config::from_env()?)?;
    fabric
        .providers()
        .iter()
        .find(|p| p.kind == TransportKind::Ofi)
        .and_then(|p| p.device.clone())
        .context("no libfabric provider (is rfx-bench built with --features ofi?)")
}

fn taskset(cpu: Option<usize>, prog: &str) -> Command {
    match cpu {
        Some(c) if which("taskset") => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &c.to_string(), prog]);
            cmd
        }
        _ => Command::new(prog),
    }
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
}

/// The mean round trip of `fi_pingpong` per step.
pub fn pingpong(
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let prov = provider()?;
    if !which("fi_pingpong") {
        bail!("fi_pingpong not found: install libfabric-bin");
    }
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let text = run_once(&prov, step, cpus, i)?;
        let half = parse_usec_per_xfer(&text)
            .with_context(|| format!("no usec/xfer in fi_pingpong output:\n{text}"))?;
        let rt = 2.0 * half;
        out.push(Summary::mean_only(step.total(), rt));
    }
    Ok(out)
}

/// One `fi_pingpong` server + client run. A client that starts before the
/// server listens fails; the server is then restarted on another port
/// (a half-connected server may be wedged), three tries, each bounded.
fn run_once(
    prov: &str,
    step: &Step,
    cpus: (Option<usize>, Option<usize>),
    index: usize,
) -> anyhow::Result<String> {
    let mut last_err = String::new();
    for attempt in 0..3u16 {
        let port =
            47_000 + (std::process::id() % 500) as u16 * 4 + (index as u16 % 2) * 2 + attempt % 2;
        let common = |cmd: &mut Command| {
            cmd.args(["120", "fi_pingpong"])
                .args(["-p", prov, "-e", "rdm", "-S", &step.size.to_string()])
                .args(["-I", &step.total().to_string()])
                .env("FI_TCP_IFACE", "lo")
                .stdin(Stdio::null());
        };
        let mut server = taskset(cpus.1, "timeout");
        common(&mut server);
        let mut server = server
            .args(["-B", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the fi_pingpong server")?;
        std::thread::sleep(Duration::from_millis(300 + 300 * u64::from(attempt)));
        let mut client = taskset(cpus.0, "timeout");
        common(&mut client);
        let o = client
            .args(["-P", &port.to_string(), "127.0.0.1"])
            .output()
            .context("running the fi_pingpong client")?;
        let _ = server.kill();
        let _ = server.wait();
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
        }
        last_err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    }
    bail!(
        "fi_pingpong -p {prov} -S {} failed three times: {last_err}",
        step.size
    )
}

/// `usec/xfer` of the result line of `fi_pingpong` (its 7th column).
fn parse_usec_per_xfer(text: &str) -> Option<f64> {
    let mut lines = text.lines();
    let header = lines.find(|l| l.contains("usec/xfer"))?;
    let col = header.split_whitespace().position(|c| c == "usec/xfer")?;
    lines
        .find_map(|l| l.split_whitespace().nth(col))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fi_pingpong_output() {
        let text =
            "bytes   #sent   #ack     total       time     MB/sec    usec/xfer   Mxfers/sec\n\
                    8       2k      =2k      31k         0.11s      0.29      27.42       0.04\n";
        assert_eq!(super::parse_usec_per_xfer(text), Some(27.42));
        assert_eq!(super::parse_usec_per_xfer("garbage"), None);
    }
}
