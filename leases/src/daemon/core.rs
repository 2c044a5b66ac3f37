//! The core task: owns the manager, the tenants and the lease key (lease
//! tokens are derived on demand, never stored); persists, then notifies,
//! then replies.

use super::{blocking, now_ms};
use crate::auth::{self, ClusterKey, TenantRecord};
use crate::error::DaemonError;
use crate::proto::{HostCommand, HostId, Lease, LeaseError, Manager, Output, TenantId};
use crate::store::{Batch, Store};
use crate::wire::{
    AdminRequest, ClientMsg, Command, ErrorCode, ErrorReply, HostRequest, LeaseInfo, LeaseKey,
    RequestId, Response, ServerMsg, StartLease, TenantRequest,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Identifies one client connection.
pub(super) type ConnId = u64;

/// Longest the core sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What connection tasks tell the core.
#[derive(Debug)]
pub(super) enum CoreMsg {
    /// A connection passed its hello; pushes for it go to `push`.
    Open {
        conn: ConnId,
        push: mpsc::Sender<ServerMsg>,
    },
    /// A request, answered on `reply` after its effects are durable.
    Request {
        conn: ConnId,
        msg: ClientMsg,
        reply: oneshot::Sender<ServerMsg>,
    },
    /// The connection ended.
    Close { conn: ConnId },
}

/// A connected client, and whose pushes it gets.
#[derive(Debug)]
struct Peer {
    push: mpsc::Sender<ServerMsg>,
    tenant: Option<TenantId>,
    host: Option<HostId>,
}

/// How long the lease log is, and when to replace it with a checkpoint.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogSize {
    ops: usize,
    min: usize,
    next: usize,
}

impl LogSize {
    pub(super) fn new(ops: usize, compact_after: usize) -> Self {
        let min = compact_after.max(1);
        Self {
            ops,
            min,
            next: min,
        }
    }

    /// Whether the log is long enough to try a checkpoint.
    fn due(&self) -> bool {
        self.ops >= self.next
    }

    /// A checkpoint of `len` ops replaced the log: try again once the log
    /// has grown well past it.
    fn replaced(&mut self, len: usize) {
        self.ops = len;
        self.next = self.min.max(len.saturating_mul(2));
    }

    /// A checkpoint would not have been much shorter (the state is large):
    /// try again once the log has doubled.
    fn kept(&mut self) {
        self.next = self.min.max(self.ops.saturating_mul(2));
    }

    fn appended(&mut self, n: usize) {
        self.ops = self.ops.saturating_add(n);
    }
}

/// The state the core task owns.
#[derive(Debug)]
pub(super) struct Core {
    mgr: Manager,
    store: Arc<Store>,
    tenants: BTreeMap<String, TenantRecord>,
    key: ClusterKey,
    lease_key: LeaseKey,
    peers: HashMap<ConnId, Peer>,
    log: LogSize,
}

impl Core {
    pub(super) fn new(
        mgr: Manager,
        store: Arc<Store>,
        tenants: BTreeMap<String, TenantRecord>,
        key: ClusterKey,
        lease_key: LeaseKey,
        log: LogSize,
    ) -> Self {
        Self {
            mgr,
            store,
            tenants,
            key,
            lease_key,
            peers: HashMap::new(),
            log,
        }
    }

    /// Replaces a long log with a checkpoint of the state, if that makes it
    /// much shorter. Called right after a commit, so the state holds
    /// exactly what the log does.
    /// A failed checkpoint changes nothing (one transaction): the log
    /// stays as it was and grows on.
    async fn compact(&mut self) {
        if !self.log.due() {
            return;
        }
        let ops = self.mgr.checkpoint();
        if ops.len().saturating_mul(2) > self.log.ops {
            self.log.kept();
            return;
        }
        let (before, after) = (self.log.ops, ops.len());
        let store = Arc::clone(&self.store);
        match blocking(move || store.replace_log(&ops)).await {
            Ok(()) => {
                tracing::info!(before, after, "lease log replaced by a checkpoint");
                self.log.replaced(after);
            }
            Err(e) => {
                tracing::warn!("lease log checkpoint failed, keeping the log: {e}");
                self.log.kept();
            }
        }
    }

    /// Serves requests and timers until every sender is gone (`Ok`) or the
    /// store fails.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<CoreMsg>) -> Result<(), DaemonError> {
        // Timers due while the daemon was down (expiries) run first.
        self.mgr.handle_timeout(now_ms());
        self.flush().await?;
        // A log left long by an older build, or by failed checkpoints.
        self.compact().await;
        loop {
            let sleep = self
                .mgr
                .poll_timeout()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())).min(MAX_SLEEP));
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg).await?,
                    None => return Ok(()),
                },
                () = sleep_opt(sleep) => {
                    self.mgr.handle_timeout(now_ms());
                    self.flush().await?;
                }
            }
        }
    }

    async fn on_msg(&mut self, msg: CoreMsg) -> Result<(), DaemonError> {
        match msg {
            CoreMsg::Open { conn, push } => {
                let peer = Peer {
                    push,
                    tenant: None,
                    host: None,
                };
                self.peers.insert(conn, peer);
            }
            CoreMsg::Close { conn } => {
                self.peers.remove(&conn);
            }
            CoreMsg::Request { conn, msg, reply } => {
                let id = msg.id();
                let result = self.handle(conn, msg).await;
                // Write-ahead: effects are durable before anyone hears of them.
                self.flush().await?;
                let msg = match (result, id) {
                    (Ok(body), Some(id)) => ServerMsg::Reply { id, body },
                    (Ok(_), None) => ServerMsg::Error(ErrorReply::new(
                        None,
                        ErrorCode::Protocol,
                        "a reply without request",
                    )),
                    (Err(e), _) => ServerMsg::Error(e),
                };
                // The client may be gone; its effects stand.
                let _ = reply.send(msg);
            }
        }
        Ok(())
    }

    async fn handle(&mut self, conn: ConnId, msg: ClientMsg) -> Result<Response, ErrorReply> {
        match msg {
            // Connection tasks refuse a second hello themselves.
            ClientMsg::Hello(_) => Err(ErrorReply::new(
                None,
                ErrorCode::Protocol,
                "hello sent twice",
            )),
            ClientMsg::Tenant { id, token, req } => self.tenant(conn, id, &token, req),
            ClientMsg::Host { id, key, req } => {
                self.check_key(id, &key)?;
                self.host(conn, id, req)
            }
            ClientMsg::Admin { id, key, req } => {
                self.check_key(id, &key)?;
                self.admin(id, req).await
            }
        }
    }

    fn tenant(
        &mut self,
        conn: ConnId,
        id: RequestId,
        token: &str,
        req: TenantRequest,
    ) -> Result<Response, ErrorReply> {
        let Some(name) = auth::check_token(token, |n| self.tenants.get(n)) else {
            tracing::info!(conn, "refused an unknown tenant token");
            return Err(ErrorReply::new(
                Some(id),
                ErrorCode::Unauthorized,
                "unknown tenant token",
            ));
        };
        let tenant = TenantId::from(name);
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.tenant = Some(tenant.clone());
        }
        let now = now_ms();
        self.mgr.handle_timeout(now);
        let refuse = |e: LeaseError| refusal(id, &e);
        match req {
            TenantRequest::Subscribe => Ok(Response::Subscribed { tenant }),
            TenantRequest::CreateLease(req) => {
                let lease = self
                    .mgr
                    .request_lease(now, &tenant, &req)
                    .map_err(|e| refuse(e.into()))?;
                tracing::info!(lease = %lease.id, %tenant, host = %lease.host, "lease granted");
                Ok(Response::Lease(self.info(&lease)))
            }
            TenantRequest::ListLeases => {
                let leases: Vec<Lease> = self.mgr.leases_of(&tenant).cloned().collect();
                Ok(Response::Leases(
                    leases.iter().map(|l| self.info(l)).collect(),
                ))
            }
            TenantRequest::ShowLease(lease) => {
                let lease = self.mgr.lease(&tenant, lease).map_err(refuse)?;
                Ok(Response::Lease(self.info(lease)))
            }
            TenantRequest::Renew { lease, extra_ms } => self
                .mgr
                .renew(now, &tenant, lease, extra_ms)
                .map(|expires_at_ms| Response::Renewed {
                    lease,
                    expires_at_ms,
                })
                .map_err(refuse),
            TenantRequest::Release(lease) => self
                .mgr
                .release(now, &tenant, lease)
                .map(|usage| Response::Released { lease, usage })
                .map_err(refuse),
            TenantRequest::Usage(lease) => self
                .mgr
                .lease(&tenant, lease)
                .map(|l| Response::Usage {
                    lease,
                    usage: l.usage_at(now),
                })
                .map_err(refuse),
        }
    }

    fn host(
        &mut self,
        conn: ConnId,
        id: RequestId,
        req: HostRequest,
    ) -> Result<Response, ErrorReply> {
        let now = now_ms();
        let refuse = |e: LeaseError| refusal(id, &e);
        match req {
            HostRequest::Register { addr, capacity } => {
                let host = self
                    .mgr
                    .register_host(now, addr.clone(), capacity)
                    .map_err(refuse)?;
                tracing::info!(%host, %addr, "host registered");
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.host = Some(host);
                }
                Ok(Response::Registered {
                    host,
                    heartbeat_timeout_ms: self.mgr.config().heartbeat_timeout_ms,
                })
            }
            HostRequest::Heartbeat { host } => {
                self.mgr.heartbeat(now, host).map_err(refuse).map(ack)
            }
            HostRequest::UsageReport { host, lease, delta } => self
                .mgr
                .report_usage(now, host, lease, &delta)
                .map_err(refuse)
                .map(ack),
            HostRequest::ExecutorCrashed {
                host,
                lease,
                reason,
            } => {
                tracing::warn!(%host, %lease, %reason, "executor crashed");
                self.mgr
                    .executor_crashed(now, host, lease, reason)
                    .map_err(refuse)
                    .map(ack)
            }
            HostRequest::Deregister { host } => {
                tracing::info!(%host, "host deregistered");
                self.mgr.deregister_host(now, host).map_err(refuse).map(ack)
            }
        }
    }

    async fn admin(&mut self, id: RequestId, req: AdminRequest) -> Result<Response, ErrorReply> {
        match req {
            AdminRequest::AddTenant { name } => {
                let invalid = |e: DaemonError| {
                    ErrorReply::new(Some(id), ErrorCode::InvalidArgument, e.to_string())
                };
                auth::validate_name(&name).map_err(invalid)?;
                if self.tenants.contains_key(&name) {
                    return Err(ErrorReply::new(
                        Some(id),
                        ErrorCode::AlreadyExists,
                        format!("tenant {name} already exists"),
                    ));
                }
                let (record, token) =
                    auth::new_tenant(&name, now_ms()).map_err(|e| internal(id, &e))?;
                let store = Arc::clone(&self.store);
                let (n, r) = (name.clone(), record.clone());
                blocking(move || store.add_tenant(&n, &r))
                    .await
                    .map_err(|e| internal(id, &e))?;
                tracing::info!(tenant = %name, "tenant added");
                self.tenants.insert(name.clone(), record);
                Ok(Response::TenantAdded { name, token })
            }
            AdminRequest::ListTenants => Ok(Response::Tenants(
                self.tenants.iter().map(|(n, r)| r.info(n)).collect(),
            )),
            AdminRequest::ListHosts => Ok(Response::Hosts(self.mgr.hosts().cloned().collect())),
        }
    }

    fn check_key(&self, id: RequestId, key: &str) -> Result<(), ErrorReply> {
        if self.key.verify(key) {
            Ok(())
        } else {
            tracing::info!("refused a wrong cluster key");
            Err(ErrorReply::new(
                Some(id),
                ErrorCode::Unauthorized,
                "wrong cluster key",
            ))
        }
    }

    /// A lease with its host's address and its (derived) secret.
    fn info(&self, lease: &Lease) -> LeaseInfo {
        let host_addr = self
            .mgr
            .host(lease.host)
            .map(|h| h.address.clone())
            .unwrap_or_default();
        LeaseInfo {
            lease: lease.clone(),
            host_addr,
            token: self.lease_key.token(lease),
        }
    }

    /// Performs the manager's outputs in order: one durable commit of every
    /// store op, then the pushes.
    async fn flush(&mut self) -> Result<(), DaemonError> {
        let outputs: Vec<Output> = std::iter::from_fn(|| self.mgr.poll_output()).collect();
        let mut batch = Batch::default();
        for out in &outputs {
            if let Output::Persist(op) = out {
                batch.ops.push(op.clone());
            }
        }
        if !batch.is_empty() {
            let n = batch.ops.len();
            let store = Arc::clone(&self.store);
            if let Err(e) = blocking(move || store.commit(&batch)).await {
                tracing::error!("store commit failed, stopping: {e}");
                return Err(e);
            }
            self.log.appended(n);
            self.compact().await;
        }
        for out in outputs {
            match out {
                Output::Persist(_) => {}
                Output::NotifyHost(host, cmd) => {
                    self.push(|p| p.host == Some(host), &ServerMsg::Command(command(cmd)));
                }
                Output::NotifyTenant(tenant, event) => {
                    tracing::info!(%tenant, ?event, "lease event");
                    self.push(
                        |p| p.tenant.as_ref() == Some(&tenant),
                        &ServerMsg::Event(event),
                    );
                }
            }
        }
        Ok(())
    }

    /// Queues `msg` to every matching peer; a peer whose queue is full is
    /// disconnected (it re-syncs when it comes back).
    fn push(&mut self, to: impl Fn(&Peer) -> bool, msg: &ServerMsg) {
        self.peers.retain(|conn, peer| {
            if !to(peer) {
                return true;
            }
            match peer.push.try_send(msg.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(conn, "peer too slow for its pushes; disconnecting");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// The wire form of a host command: leases only, no secrets (executor
/// managers derive the tokens).
fn command(cmd: HostCommand) -> Command {
    let start = |lease: Lease| StartLease { lease };
    match cmd {
        HostCommand::Start(lease) => Command::Start(start(lease)),
        HostCommand::Stop(lease) => Command::Stop { lease },
        HostCommand::Sync(leases) => Command::Sync(leases.into_iter().map(start).collect()),
    }
}

fn ack(_: ()) -> Response {
    Response::Ack
}

fn refusal(id: RequestId, e: &LeaseError) -> ErrorReply {
    ErrorReply::new(Some(id), ErrorCode::from(e), e.to_string())
}

fn internal(id: RequestId, e: &dyn std::error::Error) -> ErrorReply {
    tracing::error!("request {id} failed: {e}");
    ErrorReply::new(Some(id), ErrorCode::Internal, e.to_string())
}

/// Sleeps for `d`, or forever.
async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
