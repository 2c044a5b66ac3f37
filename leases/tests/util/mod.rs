//! Test harness: an in-process daemon on 127.0.0.1:0 with a temp-dir store,
//! on its own runtime so that a test can kill it abruptly.

#![allow(dead_code, unreachable_pub)]

pub mod pki;

use rfx_leases::client::{Commands, HostClient, TenantClient};
use rfx_leases::daemon::{self, Daemon, DaemonConfig};
use rfx_leases::proto::Capacity;
use rfx_leases::wire::Command;
use rfx_leases::DaemonError;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

pub const KEY: &str = "test-cluster-key";

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A temp dir holding the store.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub rt: Runtime,
}

impl Env {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            rt,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("leases.redb")
    }

    /// A config for this env's store: hosts time out after 60 s.
    pub fn config(&self) -> DaemonConfig {
        let mut cfg = DaemonConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            self.db(),
            KEY.to_owned(),
        );
        cfg.heartbeat_timeout = Duration::from_secs(60);
        cfg.hello_timeout = Duration::from_secs(2);
        cfg
    }

    /// Adds a tenant on the store (daemon stopped); returns its token.
    pub fn tenant(&self, name: &str) -> String {
        daemon::add_tenant(&self.db(), name).expect("add tenant")
    }

    /// Runs client code on the client runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// A daemon on its own runtime.
pub struct TestDaemon {
    rt: Option<Runtime>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), DaemonError>>>,
}

impl TestDaemon {
    pub fn start(cfg: DaemonConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("daemon runtime");
        let daemon = rt.block_on(Daemon::bind(cfg)).expect("daemon binds");
        let addr = daemon.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = rt.spawn(daemon.run(stopped));
        Self {
            rt: Some(rt),
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Drops the runtime with every task mid-flight: no graceful shutdown.
    pub fn kill(mut self) {
        drop(self.rt.take());
    }

    /// Asks for a graceful stop and returns how `run` ended.
    pub fn stop(mut self) -> Result<(), DaemonError> {
        let rt = self.rt.take().expect("running");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.take().expect("running");
        rt.block_on(async { tokio::time::timeout(WAIT, done).await })
            .expect("daemon stops in time")
            .expect("daemon task")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `f`, or a panic after [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub async fn tenant(addr: SocketAddr, token: &str) -> TenantClient {
    within("tenant connects", TenantClient::connect(addr, token))
        .await
        .expect("tenant connects")
}

/// Registers a host and consumes its first (empty or not) sync.
pub async fn host(addr: SocketAddr, name: &str, cap: Capacity) -> (HostClient, Commands) {
    let (host, mut cmds) = within("host registers", HostClient::register(addr, KEY, name, cap))
        .await
        .expect("host registers");
    match next_command(&mut cmds).await {
        Command::Sync(_) => {}
        other => panic!("expected a sync, got {other:?}"),
    }
    (host, cmds)
}

pub async fn next_command(cmds: &mut Commands) -> Command {
    within("host command", cmds.recv())
        .await
        .expect("connection open")
}
