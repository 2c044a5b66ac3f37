//! The verbs floor: a bare WRITE_WITH_IMM ping-pong on two RC queue pairs
//! ([`rfx_fabric::verbs_baseline`], the loop of perftest's
//! `ib_write_lat --write_with_imm`), with the same sizes and CPUs as the
//! rfx ping-pong. Busy-polling only (perftest's latency loop), so it is the
//! baseline of hot rows.

use std::time::Instant;

use anyhow::{ensure, Context};
use rfx_fabric::verbs_baseline;

use crate::pin;
use crate::schedule::Step;
use crate::stats::{Recorder, Summary};

/// Round trips of the raw ping-pong per step: client on `cpus.0`, echo
/// thread on `cpus.1`.
pub fn pingpong(
    steps: &[Step],
    cpus: (Option<usize>, Option<usize>),
) -> anyhow::Result<Vec<Summary>> {
    let max = steps.iter().map(|s| s.size).max().unwrap_or(8);
    let (mut client, mut server) = verbs_baseline::pair(max).context("raw verbs queue pairs")?;
    let plan: Vec<Step> = steps.to_vec();
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        pin::pin(cpus.1);
        for step in &plan {
            for _ in 0..step.total() {
                let got = server.recv()?;
                ensure!(
                    got == step.size,
                    "raw echo got {got} bytes, not {}",
                    step.size
                );
                server.send(step.size)?;
            }
        }
        Ok(())
    });
    pin::pin(cpus.0);
    let mut out = Vec::new();
    for step in steps {
        let mut rec = Recorder::new();
        for i in 0..step.total() {
            let t0 = Instant::now();
            client.send(step.size)?;
            let got = client.recv()?;
            if i >= step.warmup {
                rec.record(t0.elapsed().as_nanos() as u64);
            }
            ensure!(
                got == step.size,
                "raw client got {got} bytes, not {}",
                step.size
            );
        }
        out.push(rec.summary());
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("raw verbs echo thread panicked"))??;
    Ok(out)
}
