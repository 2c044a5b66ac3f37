//! End to end: `rfx run` launches an MPI-like program on N ranks (the
//! `allreduce` example), wires them through its rendezvous, and fails the
//! job as a whole when one rank fails.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{allreduce_example, RFX};

fn rfx_run(args: &[&str]) -> std::process::Output {
    Command::new(RFX).args(args).output().unwrap()
}

#[test]
fn runs_an_allreduce_on_n_ranks() {
    let prog = allreduce_example();
    for (n, transport) in [(1, "auto"), (3, "shm"), (4, "tcp")] {
        let out = rfx_run(&[
            "--transport",
            transport,
            "run",
            "-n",
            &n.to_string(),
            "--timeout-s",
            "60",
            prog.to_str().unwrap(),
            "5000",
            "3",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "n={n}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("on {n} ranks")), "{stdout}");
        assert!(stdout.contains("result checked"), "{stdout}");
        if n > 1 {
            assert!(stdout.contains(&format!("over {transport}")), "{stdout}");
        }
    }
}

#[test]
fn tags_output_with_ranks() {
    let out = rfx_run(&[
        "run",
        "-n",
        "2",
        "--tag-output",
        "sh",
        "-c",
        "echo hi from $RFX_RANK of $RFX_SIZE",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[0] hi from 0 of 2"), "{stdout}");
    assert!(stdout.contains("[1] hi from 1 of 2"), "{stdout}");
}

#[test]
fn a_failing_rank_stops_the_job_with_its_code() {
    // Rank 1 exits 7 at once; the others would wait for it forever.
    let out = rfx_run(&[
        "run",
        "-n",
        "3",
        "sh",
        "-c",
        "if [ \"$RFX_RANK\" = 1 ]; then exit 7; fi; sleep 60",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 1 failed with exit code 7"),
        "{stderr}"
    );
}

#[test]
fn a_job_over_its_time_is_stopped() {
    let out = rfx_run(&["run", "-n", "2", "--timeout-s", "1", "sleep", "60"]);
    assert_eq!(out.status.code(), Some(124));
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let out = rfx_run(&["run", "-n", "2", "/nonexistent/program"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start rank 0"), "{stderr}");
}
