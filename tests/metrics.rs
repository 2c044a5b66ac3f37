//! Prometheus metrics of both managers: served with `--metrics-listen`,
//! valid for `promtool check metrics`, right about leases, the queue and
//! executors, and scraped by a real Prometheus.
//!
//! Needs `promtool` and `prometheus` (Debian's `prometheus`, which
//! scripts/test.sh installs); without them the test fails with the reason,
//! unless `RFX_TEST_SKIP_PROMETHEUS=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rfx::leases::proto::LeaseRequest;
use rfx::local::LocalCluster;
use rfx::tenant::Tenant;
use support::*;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` over HTTP/1.0: the response's head and body.
fn request(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text:?}")))?;
    Ok((head.to_owned(), body.to_owned()))
}

fn ok(head: &str) -> bool {
    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
}

/// `GET path`; the body of a 200, and anything else fails the test.
fn get(addr: SocketAddr, path: &str) -> String {
    let (head, body) = request(addr, path).unwrap();
    assert!(ok(&head), "{head}");
    body
}

/// The value of the sample `name` (with its labels, as written).
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn tools() -> bool {
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("promtool") && have("prometheus") {
        return true;
    }
    assert!(
        std::env::var("RFX_TEST_SKIP_PROMETHEUS").as_deref() == Ok("1"),
        "promtool and prometheus are needed (apt-get install prometheus), or RFX_TEST_SKIP_PROMETHEUS=1"
    );
    false
}

fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn both_managers_serve_valid_metrics_that_prometheus_scrapes() {
    if !tools() {
        return;
    }
    let (lm_metrics, em_metrics) = (free_port(), free_port());
    let c = LocalCluster::builder(RFX)
        .cores(1)
        .lease_manager_args(["--metrics-listen".to_owned(), lm_metrics.to_string()])
        .executor_manager_args([
            "--gpu".to_owned(),
            "0".to_owned(),
            "--metrics-listen".to_owned(),
            em_metrics.to_string(),
        ])
        .start()
        .unwrap();
    let lms = c.lease_manager().to_string();
    let alice = Tenant::connect(&lms, &c.add_tenant("alice").unwrap()).unwrap();
    let bob = Tenant::connect(&lms, &c.add_tenant("bob").unwrap()).unwrap();
    let held = alice.lease(&LeaseRequest::new(1, 120_000)).unwrap();
    let queued = bob
        .client()
        .queue_lease(&LeaseRequest::new(1, 120_000), 1, 60_000)
        .unwrap();
    assert!(queued.ticket.is_waiting());

    let lm = get(lm_metrics, "/metrics");
    promtool_check(&lm);
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_leases{state="active"}"#),
        Some(1.0),
        "{lm}"
    );
    assert_eq!(
        sample(&lm, "rfx_lease_manager_queue_depth"),
        Some(1.0),
        "{lm}"
    );
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_tenant_queued{tenant="bob"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_tenant_cores{tenant="alice"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_hosts{state="up"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_cores{state="in_use"}"#),
        Some(1.0)
    );
    // The host offers no GPU: the gauges are there, at 0.
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_gpus{state="total"}"#),
        Some(0.0),
        "{lm}"
    );
    assert_eq!(
        sample(&lm, r#"rfx_lease_manager_tenant_gpus{tenant="alice"}"#),
        Some(0.0)
    );
    let em = get(em_metrics, "/metrics");
    promtool_check(&em);
    assert_eq!(
        sample(&em, "rfx_executor_manager_executors_running"),
        Some(1.0),
        "{em}"
    );
    assert_eq!(
        sample(&em, "rfx_executor_manager_executor_starts_total"),
        Some(1.0)
    );

    // The release grants bob's request: the queue's wait is observed.
    held.release().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lm = get(lm_metrics, "/metrics");
        if sample(&lm, "rfx_lease_manager_queue_wait_seconds_count") == Some(1.0) {
            assert_eq!(sample(&lm, "rfx_lease_manager_queue_depth"), Some(0.0));
            assert_eq!(
                sample(
                    &lm,
                    r#"rfx_lease_manager_tickets_ended_total{outcome="granted"}"#
                ),
                Some(1.0)
            );
            assert_eq!(
                sample(
                    &lm,
                    r#"rfx_lease_manager_leases_ended_total{how="released"}"#
                ),
                Some(1.0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the grant never showed:\n{lm}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A real Prometheus scrapes both (OpenMetrics, negotiated).
    let dir = c.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let web = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rfx\n    static_configs:\n      - targets: ['{lm_metrics}', '{em_metrics}']\n"
        ),
    )
    .unwrap();
    let mut prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Prometheus answers 503 until its storage is open: not ready yet.
        let ready = request(web, "/-/ready").is_ok_and(|(head, _)| ok(&head));
        let scraped = ready && {
            let up = get(web, "/api/v1/query?query=sum(up)");
            let granted = get(
                web,
                "/api/v1/query?query=rfx_lease_manager_leases_granted_total",
            );
            up.contains(r#""value":["#) && up.contains(r#","2"]"#) && granted.contains(r#","2"]"#)
        };
        if scraped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped both managers"
        );
        assert!(prom.0.try_wait().unwrap().is_none(), "prometheus exited");
        std::thread::sleep(Duration::from_millis(250));
    }
}
