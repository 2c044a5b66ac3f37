//! rfx under Slurm on one node (Debian's slurm-wlm; `scripts/slurm/`):
//! starts munged, slurmctld and slurmd with a private configuration
//! (`scripts/slurm/local-slurm.sh`), runs the allreduce example as
//! `srun -O -n 2` with `RFX_RENDEZVOUS` set, then the documented batch
//! script (`sbatch -W scripts/slurm/rfx-job.sbatch`: a lease manager, an
//! executor manager per node as an srun step, a lease and an invocation, the
//! program as an srun step), and stops Slurm. Skipped, with the reason
//! printed, where Slurm is not installed or this is not root
//! (`scripts/test.sh` installs it).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::fault::{free_addr, Scratch};
use support::*;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/slurm")
        .join(name)
}

fn installed(bin: &str) -> bool {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .any(|d| Path::new(d).join(bin).exists())
}

/// A one-node Slurm, stopped on drop.
struct Slurm {
    dir: Scratch,
}

impl Slurm {
    fn up() -> Option<Slurm> {
        let required = std::env::var("RFX_REQUIRE_SLURM").as_deref() == Ok("1");
        if let Some(missing) = ["slurmctld", "slurmd", "srun", "sbatch", "munged"]
            .into_iter()
            .find(|b| !installed(b))
        {
            let why = format!(
                "{missing} is not installed (apt-get install slurmctld slurmd slurm-client munge)"
            );
            assert!(!required, "RFX_REQUIRE_SLURM=1 but {why}");
            eprintln!("skipped: {why}");
            return None;
        }
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
            assert!(!required, "RFX_REQUIRE_SLURM=1 but this is not root");
            eprintln!("skipped: a private slurmctld/slurmd needs root here");
            return None;
        }
        let dir = Scratch::new("slurm");
        // Ports of our own, so that another Slurm on the machine is left alone.
        let ctld = free_addr().port();
        let d = free_addr().port();
        let out = run_bounded(
            Command::new(script("local-slurm.sh"))
                .arg("up")
                .arg(&dir.0)
                .env("RFX_SLURMCTLD_PORT", ctld.to_string())
                .env("RFX_SLURMD_PORT", d.to_string()),
            60,
        );
        let s = Slurm { dir };
        assert!(out.0, "local Slurm did not start:\n{}", out.1);
        Some(s)
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(script("local-slurm.sh"))
            .arg("down")
            .arg(&self.dir.0)
            .status();
    }
}

/// Runs `cmd` for at most `secs`; (success, stdout + stderr).
fn run_bounded(cmd: &mut Command, secs: u64) -> (bool, String) {
    let mut p = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (mut o, mut e) = (p.0.stdout.take().unwrap(), p.0.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut o, &mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        s
    });
    let status = p.wait_timeout(Duration::from_secs(secs));
    drop(p);
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("timed out after {secs} s\n{text}")),
    }
}

#[test]
fn srun_and_the_batch_script_run_rfx() {
    let Some(slurm) = Slurm::up() else { return };
    let prog = allreduce_example();
    let rv = free_addr();
    let (ok, out) = run_bounded(
        Command::new("srun")
            .args(["-O", "-n", "2", "--time=2"])
            .arg(&prog)
            .args(["3000", "3"])
            .env("SLURM_CONF", slurm.conf())
            .env("RFX_RENDEZVOUS", rv.to_string()),
        60,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("on 2 ranks") && out.contains("result checked"),
        "{out}"
    );

    // The documented batch script, on this one node.
    let job_out = slurm.dir.join("job.out");
    let lib = examples().rust.clone();
    let ports: Vec<String> = (0..3).map(|_| free_addr().port().to_string()).collect();
    let (ok, out) = run_bounded(
        Command::new("sbatch")
            .args(["-W", "-N", "1", "-n", "2", "--time=5", "-o"])
            .arg(&job_out)
            .arg(script("rfx-job.sbatch"))
            .arg(&prog)
            .args(["2000", "3"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SLURM_CONF", slurm.conf())
            .env("RFX", RFX)
            .env("RFX_FUNCTIONS", &lib)
            .env("RFX_LM_PORT", &ports[0])
            .env("RFX_RV_PORT", &ports[1])
            .env("RFX_EM_PORT", &ports[2]),
        120,
    );
    let job = std::fs::read_to_string(&job_out).unwrap_or_default();
    assert!(ok, "{out}\n{job}");
    assert!(job.contains("executor managers registered"), "{job}");
    assert!(job.contains("hello from node 1"), "{job}");
    assert!(job.contains("result checked"), "{job}");
    assert!(job.contains("rfx-job: done"), "{job}");
}

/// `rfx lease-manager --provider slurm`: a lease request waiting on an
/// empty cluster makes the lease manager submit a job that runs an
/// executor manager, the request is granted when it registers, a second
/// waiting tenant gets a second host, and idle hosts are given back.
#[test]
fn the_slurm_provider_grows_the_cluster_for_waiting_requests_and_shrinks_it_when_idle() {
    use rfx::leases::client::blocking::AdminClient;
    use rfx::leases::proto::LeaseRequest;
    use rfx::local::LocalCluster;
    use rfx::tenant::Tenant;
    use std::time::Instant;

    let Some(slurm) = Slurm::up() else { return };
    const KEY: &str = "cluster-key-for-the-slurm-provider";
    let idle_s = 2.0;
    let idle = idle_s.to_string();
    let c = LocalCluster::builder(RFX)
        .cluster_key(KEY)
        .executor_managers(0)
        .env("SLURM_CONF", slurm.conf().display().to_string())
        .env("RFX_LOG", "info")
        .lease_manager_args([
            "--provider",
            "slurm",
            "--min-hosts",
            "0",
            "--max-hosts",
            "2",
            "--idle-timeout-s",
            idle.as_str(),
            "--provider-poll-s",
            "0.5",
            "--sbatch-args=--cpus-per-task=1 --time=5",
            "--provider-executor-args=--sandbox off --gpu 0",
        ])
        .start()
        .unwrap();
    let lms = c.lease_manager().to_string();
    let admin = AdminClient::connect(&lms, KEY).unwrap();
    assert!(admin.list_hosts().unwrap().is_empty());
    let alice = Tenant::connect(&lms, &c.add_tenant("alice").unwrap()).unwrap();
    let bob = Tenant::connect(&lms, &c.add_tenant("bob").unwrap()).unwrap();
    let req = LeaseRequest::new(1, 120_000);

    // Scale out from nothing: a job, its executor manager, the grant.
    let t0 = Instant::now();
    let a = alice
        .lease_wait(&req, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let first = t0.elapsed();
    let jobs = admin.jobs().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].host, Some(a.info().lease.host), "{jobs:?}");
    eprintln!("scale out: a lease on an empty cluster granted in {first:?}");
    // The provided host serves invocations.
    let fabric = rfx::fabric::Fabric::open(rfx::fabric::Config::from_env().unwrap()).unwrap();
    let lib = rfx::executors::session::LibrarySource::Path(examples().rust.display().to_string());
    let mut inv = a
        .invoker(
            &fabric,
            lib,
            &["echo"],
            rfx::client::InvokerConfig::default(),
        )
        .unwrap();
    assert_eq!(
        inv.invoke("echo", b"through slurm").unwrap(),
        b"through slurm"
    );
    drop(inv);

    // A second tenant waits: a second host.
    let t1 = Instant::now();
    let b = bob.lease_wait(&req, Duration::from_secs(60)).unwrap();
    eprintln!("scale out: a second host in {:?}", t1.elapsed());
    assert_ne!(a.info().lease.host, b.info().lease.host);
    assert_eq!(
        admin.list_hosts().unwrap().iter().filter(|h| h.up).count(),
        2
    );

    // Scale in: both released; each host goes within the idle timeout
    // plus the poll and the job's end.
    a.release().unwrap();
    b.release().unwrap();
    let released = Instant::now();
    let deadline = released + Duration::from_secs(30);
    loop {
        let up = admin.list_hosts().unwrap().iter().filter(|h| h.up).count();
        if up == 0 && admin.jobs().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hosts still up: {up}, jobs {:?}\n{}",
            admin.jobs().unwrap(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = released.elapsed();
    eprintln!("scale in: idle hosts gone {gone:?} after the release (idle timeout {idle_s} s)");
    // Where the time went, from the lease manager's log.
    let log = std::fs::read_to_string(c.dir().join("lease-manager.log")).unwrap_or_default();
    for line in log.lines().filter(|l| {
        [
            "asking for a host",
            "job submitted",
            "provided host registered",
            "lease granted",
            "giving back",
            "host registered",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        eprintln!("  {line}");
    }
    assert!(gone < Duration::from_secs_f64(idle_s + 5.0), "{gone:?}");
}
