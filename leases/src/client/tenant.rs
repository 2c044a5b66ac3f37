//! The tenant client.

use super::conn::{unexpected, Conn};
use crate::error::DaemonError;
use crate::proto::{Event, LeaseId, LeaseRequest, Millis, TenantId, TicketId, Usage};
use crate::wire::{ClientMsg, LeaseInfo, Response, TenantRequest, TicketInfo};
use futures::Stream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::ToSocketAddrs;
use tokio::sync::mpsc;

/// A tenant's connection to the lease manager.
///
/// ```no_run
/// # async fn f() -> Result<(), rfx_leases::DaemonError> {
/// use rfx_leases::client::TenantClient;
/// use rfx_leases::proto::LeaseRequest;
/// let mut alice = TenantClient::connect("10.0.0.1:7400", "alice.0123...").await?;
/// let info = alice.create_lease(&LeaseRequest::new(4, 60_000).with_accelerators("gpu", 1)).await?;
/// println!("executors at {} (lease {})", info.host_addr, info.lease.id);
/// alice.renew(info.lease.id, 60_000).await?;
/// let usage = alice.release(info.lease.id).await?;
/// # Ok(()) }
/// ```
pub struct TenantClient {
    conn: Conn,
    token: String,
    tenant: TenantId,
    events: Option<Events>,
}

impl fmt::Debug for TenantClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantClient")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantClient {
    /// Connects and checks the token; this connection then receives the
    /// tenant's [`Event`]s. A wrong token is
    /// [`ErrorCode::Unauthorized`](crate::wire::ErrorCode::Unauthorized).
    pub async fn connect(
        addr: impl ToSocketAddrs,
        token: impl Into<String>,
    ) -> Result<Self, DaemonError> {
        let (conn, pushes) = Conn::connect(addr).await?;
        let token = token.into();
        let tok = token.clone();
        let reply = conn
            .call(|id| ClientMsg::Tenant {
                id,
                token: tok,
                req: TenantRequest::Subscribe,
            })
            .await?;
        let Response::Subscribed { tenant } = reply else {
            return Err(unexpected(&reply));
        };
        Ok(Self {
            conn,
            token,
            tenant,
            events: Some(Events { rx: pushes.events }),
        })
    }

    /// The tenant this client's token belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Asks for a lease; the reply says where its executors are and the
    /// lease's secret.
    pub async fn create_lease(&self, req: &LeaseRequest) -> Result<LeaseInfo, DaemonError> {
        match self.call(TenantRequest::CreateLease(req.clone())).await? {
            Response::Lease(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The tenant's retained leases (active and recently ended), by id.
    pub async fn list(&self) -> Result<Vec<LeaseInfo>, DaemonError> {
        match self.call(TenantRequest::ListLeases).await? {
            Response::Leases(infos) => Ok(infos),
            other => Err(unexpected(&other)),
        }
    }

    /// One lease.
    pub async fn show(&self, lease: LeaseId) -> Result<LeaseInfo, DaemonError> {
        match self.call(TenantRequest::ShowLease(lease)).await? {
            Response::Lease(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Moves the lease's expiry `extra_ms` later; returns the new expiry
    /// (ms since the Unix epoch).
    pub async fn renew(&self, lease: LeaseId, extra_ms: u64) -> Result<Millis, DaemonError> {
        match self.call(TenantRequest::Renew { lease, extra_ms }).await? {
            Response::Renewed { expires_at_ms, .. } => Ok(expires_at_ms),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the lease; returns its final usage.
    pub async fn release(&self, lease: LeaseId) -> Result<Usage, DaemonError> {
        match self.call(TenantRequest::Release(lease)).await? {
            Response::Released { usage, .. } => Ok(usage),
            other => Err(unexpected(&other)),
        }
    }

    /// The lease's usage so far.
    pub async fn usage(&self, lease: LeaseId) -> Result<Usage, DaemonError> {
        match self.call(TenantRequest::Usage(lease)).await? {
            Response::Usage { usage, .. } => Ok(usage),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks for `count` leases of `req` at once, waiting up to `wait_ms`
    /// for capacity: the ticket, granted already or waiting.
    pub async fn queue_lease(
        &self,
        req: &LeaseRequest,
        count: u32,
        wait_ms: u64,
    ) -> Result<TicketInfo, DaemonError> {
        let msg = TenantRequest::QueueLease {
            request: req.clone(),
            count,
            wait_ms,
        };
        match self.call(msg).await? {
            Response::Ticket(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// A queued request as it stands.
    pub async fn ticket(&self, ticket: TicketId) -> Result<TicketInfo, DaemonError> {
        match self.call(TenantRequest::ShowTicket(ticket)).await? {
            Response::Ticket(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// The tenant's retained queued requests, by id.
    pub async fn tickets(&self) -> Result<Vec<TicketInfo>, DaemonError> {
        match self.call(TenantRequest::ListTickets).await? {
            Response::Tickets(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// Withdraws a waiting request.
    pub async fn cancel_ticket(&self, ticket: TicketId) -> Result<(), DaemonError> {
        match self.call(TenantRequest::CancelTicket(ticket)).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The next pushed event; `None` once the connection is closed or the
    /// events were taken by [`take_events`](Self::take_events).
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.as_mut()?.recv().await
    }

    /// The receiver of pushed events, to await them while issuing requests
    /// (once; later calls return `None`).
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    async fn call(&self, req: TenantRequest) -> Result<Response, DaemonError> {
        let token = self.token.clone();
        self.conn
            .call(|id| ClientMsg::Tenant { id, token, req })
            .await
    }
}

/// Events pushed to a tenant: leases lost or expired. Ends when the
/// connection closes.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// An event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
