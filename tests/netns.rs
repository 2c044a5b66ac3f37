//! A cluster of "hosts" in network namespaces on this machine
//! (`scripts/cluster-netns.sh`): a lease manager in one namespace, an
//! executor manager in each of two others, the tenant (this test) in the
//! root namespace. Leases, invocations and a group invocation whose
//! instances run collectives across "hosts" go over tcp (host identity
//! includes the network namespace, so shm is never chosen across them);
//! then `rfx run --hosts` starts ranks in the namespaces through
//! `scripts/netns-rsh.sh` as its remote shell. Skipped, with the reason
//! printed, where namespaces cannot be created (not root).

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rfx::client::InvokerConfig;
use rfx::fabric::{Config, Fabric, PollMode, TransportKind};
use rfx::leases::proto::LeaseRequest;
use support::fault::{retry, wait_for, wait_listening, Scratch, KEY};
use support::*;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Namespaces of one test, removed on drop (`cluster-netns.sh down`).
struct Net {
    env: Vec<(String, String)>,
    subnet: String,
}

impl Net {
    /// `hosts + 1` namespaces with a prefix and subnet of their own, or
    /// `None` (and why, printed) where this machine does not allow them.
    fn up(tag: u32, hosts: usize) -> Option<Net> {
        let pid = std::process::id();
        let prefix = format!("rx{}{tag}", pid % 100_000);
        let subnet = format!("10.{}.{}", 180 + tag, pid % 250);
        let env = vec![
            ("RFX_NETNS_PREFIX".to_string(), prefix.clone()),
            ("RFX_NETNS_SUBNET".to_string(), subnet.clone()),
            (
                "RFX_NETNS_STATE".to_string(),
                std::env::temp_dir()
                    .join(format!("{prefix}-netns"))
                    .display()
                    .to_string(),
            ),
        ];
        let net = Net { env, subnet };
        let check = net.script(&["check"]).output().unwrap();
        if !check.status.success() {
            eprintln!(
                "skipped: network namespaces unavailable here: {}{}",
                String::from_utf8_lossy(&check.stdout).trim(),
                String::from_utf8_lossy(&check.stderr).trim()
            );
            return None;
        }
        let up = net.script(&["up", &hosts.to_string()]).output().unwrap();
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        Some(net)
    }

    fn script(&self, args: &[&str]) -> Command {
        let mut c = Command::new(script("cluster-netns.sh"));
        c.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn addr(&self, host: usize) -> String {
        format!("{}.{}", self.subnet, 10 + host)
    }

    /// `rfx ARGS` in host `host`'s namespace, killed on drop.
    fn rfx(&self, host: usize, args: &[&str], log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        let mut c = self.script(&["exec", &host.to_string(), RFX]);
        c.args(args)
            .env("RFX_CLUSTER_KEY", KEY)
            .env("RFX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(f);
        Proc(c.spawn().unwrap())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.script(&["down"]).status();
    }
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn leases_invocations_and_a_group_across_namespaces() {
    let Some(net) = Net::up(0, 2) else { return };
    let dir = Scratch::new("netns");
    let lm: SocketAddr = format!("{}:7600", net.addr(0)).parse().unwrap();
    let _lm = net.rfx(
        0,
        &[
            "lease-manager",
            "--listen",
            &lm.to_string(),
            "--db",
            dir.join("leases.redb").to_str().unwrap(),
        ],
        &dir.join("lm.log"),
    );
    wait_listening(lm, Duration::from_secs(20));
    let mut ems = Vec::new();
    for h in 1..=2 {
        let listen: SocketAddr = format!("{}:7700", net.addr(h)).parse().unwrap();
        ems.push(net.rfx(
            h,
            &[
                "executor-manager",
                "--lease-manager",
                &lm.to_string(),
                "--listen",
                &listen.to_string(),
                "--cores",
                "2",
                "--gpu",
                "0",
                // `ip netns exec` gives a fresh /sys without the cgroup
                // mounts the sandbox needs; tests/sandbox.rs covers it.
                "--sandbox",
                "off",
            ],
            &dir.join(&format!("em{h}.log")),
        ));
        wait_listening(listen, Duration::from_secs(20));
    }
    let admin = rfx::leases::client::blocking::AdminClient::connect(&lm.to_string(), KEY).unwrap();
    wait_for(Duration::from_secs(15), "both hosts registered", || {
        (admin.list_hosts().unwrap().iter().filter(|h| h.up).count() == 2).then_some(())
    });
    let token = admin.add_tenant("alice").unwrap();
    let tenant = rfx::tenant::Tenant::connect(&lm.to_string(), &token).unwrap();
    let fabric = Fabric::open(Config::default()).unwrap();
    let lib = || shipped(&examples().rust);
    let cfg = InvokerConfig {
        timeout: Duration::from_secs(30),
        mode: PollMode::Warm,
        ..InvokerConfig::default()
    };

    // One lease, invoked from the root namespace: tcp, not shm.
    let req = |cores| LeaseRequest::new(cores, 600_000).with_hot_timeout(0);
    let lease = retry(Duration::from_secs(10), "lease", || tenant.lease(&req(1)));
    let ip = lease.executor().ip().to_string();
    assert!(ip.starts_with(&net.subnet), "executor at {ip}");
    let mut inv = lease
        .invoker(&fabric, lib(), &["echo"], cfg.clone())
        .unwrap();
    assert_eq!(inv.transport(), TransportKind::Tcp);
    for i in 0..100u32 {
        let p = i.to_le_bytes().repeat(i as usize % 9 + 1);
        assert_eq!(inv.invoke("echo", &p).unwrap(), p);
    }
    drop(inv);
    lease.release().unwrap();

    // A group of two instances of 2 cores: one per host; their
    // communicator crosses the namespaces.
    let group = retry(Duration::from_secs(10), "group lease", || {
        tenant.lease_group(2, &req(2))
    });
    let hosts: Vec<_> = group.leases().iter().map(|l| l.info().lease.host).collect();
    assert_ne!(hosts[0], hosts[1], "both instances on one host");
    let mut g = group
        .group(&fabric, lib(), &["dot", "rank_info"], cfg.clone())
        .unwrap();
    assert!(g.transports().iter().all(|t| *t == TransportKind::Tcp));
    let ranks = g.invoke_all("rank_info", b"").unwrap();
    assert_eq!(ranks.len(), 2);
    let len = 4096usize;
    let x: Vec<f64> = (0..len).map(|v| v as f64).collect();
    let want: f64 = x.iter().map(|v| v * 0.5).sum();
    let inputs: Vec<Vec<u8>> = x
        .chunks(len / 2)
        .map(|piece| {
            let mut v = f64s(piece);
            v.extend(f64s(&vec![0.5; piece.len()]));
            v
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    for _ in 0..3 {
        for out in g.invoke("dot", &refs).unwrap() {
            assert_eq!(f64::from_le_bytes(out.try_into().unwrap()), want);
        }
    }
    drop(g);
    group.release().unwrap();
    wait_for(Duration::from_secs(15), "every core free", || {
        admin
            .list_hosts()
            .unwrap()
            .iter()
            .all(|h| h.free.free_cores() == h.capacity.cores)
            .then_some(())
    });
}

#[test]
fn rfx_run_across_namespaces() {
    let Some(net) = Net::up(1, 2) else { return };
    let hosts = format!("{},{}", net.addr(1), net.addr(2));
    let mut cmd = Command::new(RFX);
    cmd.args(["run", "-n", "4", "--timeout-s", "60", "--hosts", &hosts])
        .arg(allreduce_example())
        .args(["20000", "3"])
        .env("RFX_RSH", script("netns-rsh.sh"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc(cmd.spawn().unwrap());
    let status = p
        .wait_timeout(Duration::from_secs(90))
        .expect("rfx run over its bound");
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("on 4 ranks"), "{out}");
    assert!(out.contains("result checked"), "{out}");
    assert!(
        out.contains("tcp"),
        "ranks on different hosts must use tcp: {out}"
    );
}
