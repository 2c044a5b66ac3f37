//! Real processes: the test binary re-executes itself as N ranks (its
//! `peer_entry` test), with a rendezvous served by the test process.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use rfx_collectives::Rendezvous;

/// Ranks of one job, killed if still running when dropped.
pub struct Job {
    children: Vec<Child>,
}

impl Drop for Job {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `role` on `n` ranks over `transport`; returns each rank's exit
/// status and the wall time, failing the test if a rank outlives `limit`.
pub fn run(
    role: &str,
    n: usize,
    transport: &str,
    env: &[(&str, &str)],
    limit: Duration,
) -> (Vec<ExitStatus>, Duration) {
    let key = "5eed";
    let rv = Rendezvous::bind("127.0.0.1:0".parse().unwrap(), n, vec![0x5e, 0xed]).unwrap();
    let addr = rv.local_addr().unwrap();
    let server = rv.spawn(limit);
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut job = Job {
        children: Vec::new(),
    };
    for rank in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
            .env("RFX_COLL_TEST_ROLE", role)
            .env("RFX_RANK", rank.to_string())
            .env("RFX_SIZE", n.to_string())
            .env("RFX_RENDEZVOUS", addr.to_string())
            .env("RFX_RENDEZVOUS_EXTERNAL", "1")
            .env("RFX_JOB_KEY", key)
            .env("RFX_TRANSPORT", transport)
            .stdout(std::process::Stdio::null());
        if n > 2 {
            // More ranks than cores: sleep instead of spinning.
            cmd.env("RFX_COLL_PROGRESS", "warm");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        job.children.push(cmd.spawn().expect("spawn rank"));
    }
    let mut status: Vec<Option<ExitStatus>> = vec![None; n];
    while status.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < limit,
            "role {role} on {n} ranks over {transport} still running after {limit:?}"
        );
        for (i, c) in job.children.iter_mut().enumerate() {
            if status[i].is_none() {
                status[i] = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    if n > 1 {
        let _ = server.join();
    }
    (status.into_iter().map(Option::unwrap).collect(), elapsed)
}

/// Runs a role and asserts every rank exited 0.
pub fn run_ok(role: &str, n: usize, transport: &str, env: &[(&str, &str)]) {
    let (st, t) = run(role, n, transport, env, Duration::from_secs(150));
    for (r, s) in st.iter().enumerate() {
        assert!(
            s.success(),
            "rank {r} of {n} ({role}, {transport}) failed: {s}"
        );
    }
    eprintln!("{role} on {n} ranks over {transport}: {t:?}");
}
