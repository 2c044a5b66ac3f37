//! The core task: owns the manager, the tenants and the lease key (lease
//! tokens are derived on demand, never stored); persists, then notifies,
//! then audits, then replies.
//!
//! Audit events are queued as they happen and written once the outputs of
//! the input are durable. Outputs are drained from the manager in two steps
//! so that the order in the audit log is causal: first those of the timers
//! that were due (expiries, silent hosts), then, after the request's own
//! event, its consequences (the leases a crash or a deregistration lost).

use super::{blocking, now_ms};
use crate::audit::{host_actor, ActorKind, AuditAction, AuditEvent, AuditLog};
use crate::auth::{self, ClusterKey, TenantRecord};
use crate::error::DaemonError;
use crate::metrics::LeaseManagerMetrics;
use crate::proto::{
    Event, HostCommand, HostId, Lease, LeaseError, Manager, Output, Queued, StoreOp, TenantId,
    TicketView,
};
use crate::store::{Batch, Store};
use crate::wire::{
    AdminRequest, ClientMsg, Command, ErrorCode, ErrorReply, HostRequest, LeaseInfo, LeaseKey,
    RequestId, Response, ServerMsg, StartLease, TenantRequest, TicketInfo,
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
    /// A scrape of the metrics: their text, now.
    Metrics {
        reply: oneshot::Sender<Result<String, String>>,
    },
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
    audit: AuditLog,
    /// Outputs taken from the manager, not yet performed.
    drained: Vec<Output>,
    /// Audit events of the current input, written after its commit.
    pending: Vec<AuditEvent>,
    /// What `--metrics-listen` serves.
    metrics: LeaseManagerMetrics,
    /// Elastic capacity, with `--provider`.
    provider: Option<super::provider::Driver>,
}

/// What caused the outputs being drained, for their audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Timers: expiries, silent hosts.
    Timers,
    /// The request being handled.
    Request,
}

impl Core {
    pub(super) fn new(
        mgr: Manager,
        store: Arc<Store>,
        tenants: BTreeMap<String, TenantRecord>,
        key: ClusterKey,
        lease_key: LeaseKey,
        log: LogSize,
        audit: AuditLog,
    ) -> Self {
        Self {
            mgr,
            store,
            tenants,
            key,
            lease_key,
            peers: HashMap::new(),
            log,
            audit,
            drained: Vec::new(),
            pending: Vec::new(),
            metrics: LeaseManagerMetrics::new(),
            provider: None,
        }
    }

    /// Asks `cfg`'s scheduler for hosts when requests wait.
    pub(super) fn with_provider(mut self, cfg: Option<super::provider::ProviderConfig>) -> Self {
        self.provider = cfg.map(super::provider::Driver::new);
        self
    }

    /// Lets the provider act on the state as it now stands.
    fn provision(&mut self) {
        if let Some(p) = &mut self.provider {
            p.act(now_ms(), &self.mgr);
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
        self.timers(now_ms());
        self.flush().await?;
        // A log left long by an older build, or by failed checkpoints.
        self.compact().await;
        loop {
            self.provision();
            let now = now_ms();
            let mut sleep = self
                .mgr
                .poll_timeout()
                .map(|t| Duration::from_millis(t.saturating_sub(now)).min(MAX_SLEEP));
            if let Some(p) = &self.provider {
                let wake = p.next_wake(now);
                sleep = Some(sleep.map_or(wake, |s| s.min(wake)));
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msgs(msg, &mut rx).await?,
                    None => return Ok(()),
                },
                Some(ev) = provider_event(&mut self.provider) => {
                    if let Some(p) = &mut self.provider {
                        p.on_event(ev);
                    }
                }
                () = sleep_opt(sleep) => {
                    self.timers(now_ms());
                    self.flush().await?;
                }
            }
        }
    }

    /// Handles `first` and the messages already waiting behind it (up to
    /// [`MAX_BATCH`]) with one durable commit for all of them (group
    /// commit), then answers each: write-ahead holds for every reply,
    /// and the commit's fsync is shared instead of paid per request.
    async fn on_msgs(
        &mut self,
        first: CoreMsg,
        rx: &mut mpsc::Receiver<CoreMsg>,
    ) -> Result<(), DaemonError> {
        let mut replies = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(msg) = next.take() {
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
                CoreMsg::Metrics { reply } => {
                    let jobs = self
                        .provider
                        .as_ref()
                        .map(super::provider::Driver::jobs)
                        .unwrap_or_default();
                    let _ = reply.send(self.metrics.render(&self.mgr, &jobs));
                }
                CoreMsg::Request { conn, msg, reply } => {
                    let id = msg.id();
                    let result = self.handle(conn, msg).await;
                    // Each request's outputs (and audit events) in order.
                    self.drain(Cause::Request);
                    replies.push((reply, id, result));
                }
            }
            handled += 1;
            if handled < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Write-ahead: effects are durable before anyone hears of them.
        self.flush().await?;
        for (reply, id, result) in replies {
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
                self.check_key(id, &key, || host_claim(&req))?;
                self.host(conn, id, req)
            }
            ClientMsg::Admin { id, key, req } => {
                self.check_key(id, &key, || admin_claim(&req))?;
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
            self.audit(self.token_refusal(token, &req));
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
        self.timers(now);
        let refuse = |e: LeaseError| refusal(id, &e);
        let audit = |action| AuditEvent::tenant(tenant.as_str(), action);
        match req {
            TenantRequest::Subscribe => Ok(Response::Subscribed { tenant }),
            TenantRequest::CreateLease(req) => {
                let lease = match self.mgr.request_lease(now, &tenant, &req) {
                    Ok(lease) => lease,
                    Err(e) => {
                        let mut event = audit(AuditAction::LeaseRefused)
                            .with_cores(req.cores)
                            .with_memory_mib(req.memory_mib)
                            .with_detail(e.to_string());
                        if !req.accelerators.is_empty() {
                            event = event.with_field("accelerators", &req.accelerators);
                        }
                        self.audit(event.with_field("duration_ms", req.duration_ms));
                        return Err(refuse(e.into()));
                    }
                };
                tracing::info!(lease = %lease.id, %tenant, host = %lease.host, "lease granted");
                let mut event = audit(AuditAction::LeaseGranted)
                    .with_lease(lease.id)
                    .with_host(lease.host)
                    .with_cores(lease.cores)
                    .with_memory_mib(lease.memory_mib);
                if !lease.accelerators.is_empty() {
                    event = event.with_field("accelerators", &lease.accelerators);
                }
                self.audit(event.with_field("expires_at_ms", lease.expires_at_ms));
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
            TenantRequest::Renew { lease, extra_ms } => {
                let result = self.mgr.renew(now, &tenant, lease, extra_ms);
                let event = match &result {
                    Ok(expires_at_ms) => audit(AuditAction::LeaseRenewed)
                        .with_field("extra_ms", extra_ms)
                        .with_field("expires_at_ms", expires_at_ms),
                    Err(e) => audit(AuditAction::RequestRefused)
                        .with_detail(e.to_string())
                        .with_field("request", "renew"),
                };
                self.audit(event.with_lease(lease));
                result
                    .map(|expires_at_ms| Response::Renewed {
                        lease,
                        expires_at_ms,
                    })
                    .map_err(refuse)
            }
            TenantRequest::Release(lease) => {
                let result = self.mgr.release(now, &tenant, lease);
                let event = match &result {
                    Ok(usage) => audit(AuditAction::LeaseReleased).with_field("usage", usage),
                    Err(e) => audit(AuditAction::RequestRefused)
                        .with_detail(e.to_string())
                        .with_field("request", "release"),
                };
                self.audit(event.with_lease(lease));
                result
                    .map(|usage| Response::Released { lease, usage })
                    .map_err(refuse)
            }
            TenantRequest::Usage(lease) => self
                .mgr
                .lease(&tenant, lease)
                .map(|l| Response::Usage {
                    lease,
                    usage: l.usage_at(now),
                })
                .map_err(refuse),
            TenantRequest::QueueLease {
                request,
                count,
                wait_ms,
            } => {
                let queued = match self.mgr.queue_lease(now, &tenant, &request, count, wait_ms) {
                    Ok(q) => q,
                    Err(e) => {
                        self.audit(
                            audit(AuditAction::LeaseRefused)
                                .with_cores(request.cores)
                                .with_detail(e.to_string())
                                .with_field("count", count),
                        );
                        return Err(refuse(e.into()));
                    }
                };
                let ticket = match queued {
                    Queued::Granted { ticket, .. } => ticket,
                    Queued::Waiting { ticket, reason } => {
                        tracing::info!(%ticket, %tenant, %reason, "lease request queued");
                        self.audit(
                            audit(AuditAction::LeaseQueued)
                                .with_cores(request.cores)
                                .with_detail(reason)
                                .with_field("ticket", ticket.0)
                                .with_field("count", count)
                                .with_field("wait_ms", wait_ms),
                        );
                        ticket
                    }
                };
                let view = self.mgr.ticket(&tenant, ticket).map_err(refuse)?;
                Ok(Response::Ticket(self.ticket_info(view)))
            }
            TenantRequest::ShowTicket(ticket) => {
                let view = self.mgr.ticket(&tenant, ticket).map_err(refuse)?;
                Ok(Response::Ticket(self.ticket_info(view)))
            }
            TenantRequest::ListTickets => Ok(Response::Tickets(
                self.mgr
                    .tickets_of(&tenant)
                    .into_iter()
                    .map(|v| self.ticket_info(v))
                    .collect(),
            )),
            TenantRequest::CancelTicket(ticket) => {
                self.mgr
                    .cancel_ticket(now, &tenant, ticket)
                    .map_err(refuse)?;
                self.audit(
                    audit(AuditAction::TicketEnded)
                        .with_detail("cancelled")
                        .with_field("ticket", ticket.0),
                );
                Ok(Response::Ack)
            }
        }
    }

    /// A ticket as its tenant sees it, with its leases' secrets once granted.
    fn ticket_info(&self, view: TicketView) -> TicketInfo {
        // A waiting request also waits for the hosts asked for it.
        let reason = match (view.reason, self.provider.as_ref().and_then(|p| p.reason())) {
            (Some(r), Some(p)) => Some(format!("{r}; {p}")),
            (r, _) => r,
        };
        TicketInfo {
            leases: view.leases.iter().map(|l| self.info(l)).collect(),
            ticket: view.ticket,
            reason,
            ahead: view.ahead.map(|n| n as u64),
        }
    }

    fn host(
        &mut self,
        conn: ConnId,
        id: RequestId,
        req: HostRequest,
    ) -> Result<Response, ErrorReply> {
        let now = now_ms();
        self.timers(now);
        let refuse = |e: LeaseError| refusal(id, &e);
        match req {
            HostRequest::Register {
                addr,
                capacity,
                job,
            } => {
                let (cores, memory_mib) = (capacity.cores, capacity.memory_mib);
                let accelerators = capacity.accelerators.clone();
                let host = self
                    .mgr
                    .register_host(now, addr.clone(), capacity)
                    .map_err(refuse)?;
                tracing::info!(%host, %addr, "host registered");
                let mut event = AuditEvent::host(host, AuditAction::HostRegistered)
                    .with_cores(cores)
                    .with_memory_mib(memory_mib)
                    .with_field("addr", &addr);
                if !accelerators.is_empty() {
                    event = event.with_field("accelerators", &accelerators);
                }
                self.audit(event);
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.host = Some(host);
                }
                if let (Some(job), Some(p)) = (&job, &mut self.provider) {
                    p.registered(job, host, cores);
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
                out_of_memory_mib,
            } => {
                tracing::warn!(%host, %lease, %reason, "executor crashed");
                let event = AuditEvent::host(host, AuditAction::ExecutorCrashed)
                    .with_lease(lease)
                    .with_detail(reason.as_str());
                match out_of_memory_mib {
                    Some(limit_mib) => self.mgr.executor_lost(
                        now,
                        host,
                        lease,
                        crate::proto::LostReason::OutOfMemory { limit_mib },
                    ),
                    None => self.mgr.executor_crashed(now, host, lease, reason),
                }
                .map_err(refuse)?;
                // Before the loss it caused (drained at the flush).
                self.audit(event);
                Ok(Response::Ack)
            }
            HostRequest::Deregister { host } => {
                tracing::info!(%host, "host deregistered");
                self.mgr.deregister_host(now, host).map_err(refuse)?;
                self.audit(AuditEvent::host(host, AuditAction::HostDeregistered));
                Ok(Response::Ack)
            }
        }
    }

    async fn admin(&mut self, id: RequestId, req: AdminRequest) -> Result<Response, ErrorReply> {
        match req {
            AdminRequest::AddTenant { name } => {
                let invalid = |e: DaemonError| {
                    ErrorReply::new(Some(id), ErrorCode::InvalidArgument, e.to_string())
                };
                if let Err(e) = auth::validate_name(&name) {
                    // Not the name itself: it may be anything, a secret
                    // pasted by mistake included.
                    self.audit(
                        AuditEvent::operator(AuditAction::RequestRefused)
                            .with_detail("invalid tenant name")
                            .with_field("request", "add_tenant"),
                    );
                    return Err(invalid(e));
                }
                if self.tenants.contains_key(&name) {
                    self.audit(
                        AuditEvent::operator(AuditAction::RequestRefused)
                            .with_detail("tenant already exists")
                            .with_field("request", "add_tenant")
                            .with_field("tenant", &name),
                    );
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
                self.audit(
                    AuditEvent::operator(AuditAction::TenantAdded).with_field("tenant", &name),
                );
                self.tenants.insert(name.clone(), record);
                Ok(Response::TenantAdded { name, token })
            }
            AdminRequest::ListTenants => Ok(Response::Tenants(
                self.tenants.iter().map(|(n, r)| r.info(n)).collect(),
            )),
            AdminRequest::ListHosts => Ok(Response::Hosts(self.mgr.hosts().cloned().collect())),
            AdminRequest::SetQuota { tenant, quota } => {
                if !self.tenants.contains_key(&tenant) {
                    return Err(ErrorReply::new(
                        Some(id),
                        ErrorCode::NotFound,
                        format!("no tenant {tenant}"),
                    ));
                }
                self.mgr
                    .set_quota(now_ms(), &TenantId::from(tenant.as_str()), quota.clone());
                self.audit(
                    AuditEvent::operator(AuditAction::QuotaSet)
                        .with_field("tenant", &tenant)
                        .with_field("quota", &quota),
                );
                Ok(Response::Ack)
            }
            AdminRequest::ListJobs => Ok(Response::Jobs(
                self.provider
                    .as_ref()
                    .map(super::provider::Driver::jobs)
                    .unwrap_or_default(),
            )),
            AdminRequest::ListQueue => Ok(Response::Tickets(
                self.mgr
                    .waiting()
                    .map(|t| TicketInfo {
                        ticket: t.clone(),
                        reason: None,
                        ahead: None,
                        leases: Vec::new(),
                    })
                    .collect(),
            )),
        }
    }

    /// Checks the cluster key; `claim` says who the peer claims to be and
    /// what it asked, for the audit log.
    fn check_key(
        &mut self,
        id: RequestId,
        key: &str,
        claim: impl FnOnce() -> (String, &'static str),
    ) -> Result<(), ErrorReply> {
        if self.key.verify(key) {
            Ok(())
        } else {
            tracing::info!("refused a wrong cluster key");
            let (actor, request) = claim();
            self.audit(
                AuditEvent::new(ActorKind::Unauthenticated, actor, AuditAction::AuthRefused)
                    .with_detail("wrong cluster key")
                    .with_field("request", request),
            );
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

    /// The audit event of a refused tenant token: under the name it claims
    /// only if that tenant exists (the part before the dot of a mistyped
    /// secret is no tenant's name), never with the token.
    fn token_refusal(&self, token: &str, req: &TenantRequest) -> AuditEvent {
        let claimed = token
            .split_once('.')
            .map(|(name, _)| name)
            .filter(|name| self.tenants.contains_key(*name));
        AuditEvent::new(
            ActorKind::Unauthenticated,
            claimed.unwrap_or("unknown"),
            AuditAction::AuthRefused,
        )
        .with_detail(if claimed.is_some() {
            "wrong secret in tenant token"
        } else {
            "unknown tenant token"
        })
        .with_field("request", tenant_request_name(req))
    }

    /// Queues an audit event, written after the input's commit.
    fn audit(&mut self, event: AuditEvent) {
        if self.audit.is_enabled() {
            self.pending.push(event);
        }
    }

    /// Runs the timers due at `now` and takes their outputs, so that their
    /// audit events precede those of the request that follows.
    fn timers(&mut self, now: u64) {
        self.mgr.handle_timeout(now);
        self.drain(Cause::Timers);
    }

    /// Takes the manager's outputs so far, queueing their audit events:
    /// leases expired or lost, hosts marked down for silence.
    fn drain(&mut self, cause: Cause) {
        let start = self.pending.len();
        while let Some(out) = self.mgr.poll_output() {
            if self.audit.is_enabled() {
                if let Some(event) = self.output_event(&out, cause) {
                    // The manager ends a silent host's leases before it
                    // marks the host down: the cause goes first in the log.
                    let at = match (event.action, event.host) {
                        (AuditAction::HostDown, Some(host)) => self.pending[start..]
                            .iter()
                            .position(|e| {
                                e.action == AuditAction::LeaseLost && e.host == Some(host)
                            })
                            .map_or(self.pending.len(), |i| start + i),
                        _ => self.pending.len(),
                    };
                    self.pending.insert(at, event);
                }
            }
            self.metrics.observe(&self.mgr, &out);
            self.drained.push(out);
        }
    }

    /// The audit event of one output, if it is one the request's own event
    /// does not already cover.
    fn output_event(&self, out: &Output, cause: Cause) -> Option<AuditEvent> {
        match out {
            Output::NotifyTenant(tenant, Event::LeaseExpired { lease }) => {
                let mut event = AuditEvent::tenant(tenant.as_str(), AuditAction::LeaseExpired)
                    .with_lease(*lease);
                if let Some(l) = self.mgr.state().lease(*lease) {
                    event = event.with_host(l.host);
                }
                Some(event)
            }
            Output::NotifyTenant(
                tenant,
                Event::LeaseLost {
                    lease,
                    host,
                    reason,
                },
            ) => Some(
                AuditEvent::tenant(tenant.as_str(), AuditAction::LeaseLost)
                    .with_lease(*lease)
                    .with_host(*host)
                    .with_detail(reason.to_string()),
            ),
            Output::NotifyTenant(tenant, Event::TicketGranted { ticket, leases }) => Some(
                AuditEvent::tenant(tenant.as_str(), AuditAction::LeaseGranted)
                    .with_field("ticket", ticket.0)
                    .with_field("leases", leases),
            ),
            Output::NotifyTenant(tenant, Event::TicketTimedOut { ticket }) => Some(
                AuditEvent::tenant(tenant.as_str(), AuditAction::TicketEnded)
                    .with_detail("timed out")
                    .with_field("ticket", ticket.0),
            ),
            // A deregistration also marks its host down: audited as such.
            Output::Persist(StoreOp::HostDown { host }) if cause == Cause::Timers => Some(
                AuditEvent::host(*host, AuditAction::HostDown).with_detail(format!(
                    "no heartbeat within {} ms",
                    self.mgr.config().heartbeat_timeout_ms
                )),
            ),
            _ => None,
        }
    }

    /// Performs the manager's outputs in order: one durable commit of every
    /// store op, then the pushes, then the audit lines.
    async fn flush(&mut self) -> Result<(), DaemonError> {
        self.drain(Cause::Request);
        let outputs = std::mem::take(&mut self.drained);
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
        // A host told more than this in one input (a queue served onto it)
        // gets one Sync of its active leases instead: the same end state,
        // and no push queue overflows.
        let mut per_host: HashMap<HostId, usize> = HashMap::new();
        for out in &outputs {
            if let Output::NotifyHost(host, _) = out {
                *per_host.entry(*host).or_default() += 1;
            }
        }
        let mut synced = std::collections::HashSet::new();
        let mut told: HashMap<TenantId, usize> = HashMap::new();
        for out in outputs {
            match out {
                Output::Persist(_) => {}
                Output::NotifyHost(host, _) if per_host[&host] > MAX_COMMANDS_PER_INPUT => {
                    if synced.insert(host) {
                        let active = self.mgr.state().active_on_host(host);
                        let cmd = command(HostCommand::Sync(active));
                        self.push(|p| p.host == Some(host), &ServerMsg::Command(cmd));
                    }
                }
                Output::NotifyHost(host, cmd) => {
                    self.push(|p| p.host == Some(host), &ServerMsg::Command(command(cmd)));
                }
                Output::NotifyTenant(tenant, event) => {
                    tracing::info!(%tenant, ?event, "lease event");
                    // Events are advice (tenants read their leases and
                    // tickets): past a cap per input they are not pushed,
                    // rather than overflow the tenant's queue.
                    let n = told.entry(tenant.clone()).or_default();
                    *n += 1;
                    if *n > MAX_COMMANDS_PER_INPUT {
                        continue;
                    }
                    self.push(
                        |p| p.tenant.as_ref() == Some(&tenant),
                        &ServerMsg::Event(event),
                    );
                }
            }
        }
        for event in self.pending.drain(..) {
            self.audit.record(&event);
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

/// Who a host request with a refused key claims to be, and what it asked.
fn host_claim(req: &HostRequest) -> (String, &'static str) {
    match req {
        HostRequest::Register { .. } => ("host".to_owned(), "register"),
        HostRequest::Heartbeat { host } => (host_actor(*host), "heartbeat"),
        HostRequest::UsageReport { host, .. } => (host_actor(*host), "usage_report"),
        HostRequest::ExecutorCrashed { host, .. } => (host_actor(*host), "executor_crashed"),
        HostRequest::Deregister { host } => (host_actor(*host), "deregister"),
    }
}

/// What an admin request with a refused key asked.
fn admin_claim(req: &AdminRequest) -> (String, &'static str) {
    let request = match req {
        AdminRequest::AddTenant { .. } => "add_tenant",
        AdminRequest::ListTenants => "list_tenants",
        AdminRequest::ListHosts => "list_hosts",
        AdminRequest::SetQuota { .. } => "set_quota",
        AdminRequest::ListQueue => "list_queue",
        AdminRequest::ListJobs => "list_jobs",
    };
    ("operator".to_owned(), request)
}

/// A tenant request's name, for the audit log.
fn tenant_request_name(req: &TenantRequest) -> &'static str {
    match req {
        TenantRequest::Subscribe => "subscribe",
        TenantRequest::CreateLease(_) => "create_lease",
        TenantRequest::ListLeases => "list_leases",
        TenantRequest::ShowLease(_) => "show_lease",
        TenantRequest::Renew { .. } => "renew",
        TenantRequest::Release(_) => "release",
        TenantRequest::Usage(_) => "usage",
        TenantRequest::QueueLease { .. } => "queue_lease",
        TenantRequest::ShowTicket(_) => "show_ticket",
        TenantRequest::ListTickets => "list_tickets",
        TenantRequest::CancelTicket(_) => "cancel_ticket",
    }
}

fn refusal(id: RequestId, e: &LeaseError) -> ErrorReply {
    ErrorReply::new(Some(id), ErrorCode::from(e), e.to_string())
}

fn internal(id: RequestId, e: &dyn std::error::Error) -> ErrorReply {
    tracing::error!("request {id} failed: {e}");
    ErrorReply::new(Some(id), ErrorCode::Internal, e.to_string())
}

/// The provider's next event, or never without a provider.
async fn provider_event(
    p: &mut Option<super::provider::Driver>,
) -> Option<super::provider::ProviderEvent> {
    match p {
        Some(p) => p.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Messages handled before one group commit at most.
const MAX_BATCH: usize = 256;

/// Host commands of one input beyond which a host gets one `Sync` instead
/// (well below the push queue of a connection).
const MAX_COMMANDS_PER_INPUT: usize = 64;

/// Sleeps for `d`, or forever.
async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
