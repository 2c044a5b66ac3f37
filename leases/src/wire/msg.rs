//! The messages of the control protocol.

use super::error::ErrorReply;
use super::token::LeaseToken;
use crate::proto::{
    Capacity, Event, Host, HostId, Lease, LeaseId, LeaseRequest, Millis, Quota, TenantId, Ticket,
    TicketId, Usage, UsageReport,
};
use serde::{Deserialize, Serialize};

/// Chosen by the client, echoed in the reply; unique among a connection's
/// requests in flight.
pub type RequestId = u64;

/// The first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's protocol version; must equal the daemon's.
    pub version: u32,
    /// Free-form client name and version, for logs.
    #[serde(default)]
    pub agent: String,
}

impl Hello {
    /// The hello of this build.
    pub fn current() -> Self {
        Self {
            version: super::PROTOCOL_VERSION,
            agent: concat!("rfx-leases/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A frame from a client to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Opens the session (first frame only).
    Hello(Hello),
    /// A tenant's request, with the tenant's token.
    Tenant {
        /// Request id.
        id: RequestId,
        /// The tenant token that `rfx tenant add` printed.
        token: String,
        /// The request.
        req: TenantRequest,
    },
    /// An executor manager's request, with the cluster key.
    Host {
        /// Request id.
        id: RequestId,
        /// The cluster key.
        key: String,
        /// The request.
        req: HostRequest,
    },
    /// An operator's request, with the cluster key.
    Admin {
        /// Request id.
        id: RequestId,
        /// The cluster key.
        key: String,
        /// The request.
        req: AdminRequest,
    },
}

impl ClientMsg {
    /// The request id, if this is a request.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Self::Hello(_) => None,
            Self::Tenant { id, .. } | Self::Host { id, .. } | Self::Admin { id, .. } => Some(*id),
        }
    }
}

/// What a tenant can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantRequest {
    /// Checks the token and sends this tenant's events to this connection
    /// (any authenticated request does too). Reply: [`Response::Subscribed`].
    Subscribe,
    /// Asks for a lease. Reply: [`Response::Lease`].
    CreateLease(LeaseRequest),
    /// The tenant's retained leases. Reply: [`Response::Leases`].
    ListLeases,
    /// One lease. Reply: [`Response::Lease`].
    ShowLease(LeaseId),
    /// Moves a lease's expiry later. Reply: [`Response::Renewed`].
    Renew {
        /// The lease.
        lease: LeaseId,
        /// How much later, in ms.
        extra_ms: u64,
    },
    /// Ends a lease. Reply: [`Response::Released`].
    Release(LeaseId),
    /// A lease's usage so far. Reply: [`Response::Usage`].
    Usage(LeaseId),
    /// Asks for `count` leases of `request` at once, waiting up to
    /// `wait_ms` for capacity. Reply: [`Response::Ticket`] (granted at
    /// once, or waiting).
    QueueLease {
        /// What each lease gets.
        request: LeaseRequest,
        /// Leases granted together (a group's).
        count: u32,
        /// Longest wait, ms.
        wait_ms: u64,
    },
    /// A queued request as it stands. Reply: [`Response::Ticket`].
    ShowTicket(TicketId),
    /// The tenant's retained queued requests. Reply: [`Response::Tickets`].
    ListTickets,
    /// Withdraws a waiting request. Reply: [`Response::Ack`].
    CancelTicket(TicketId),
}

/// What an executor manager can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostRequest {
    /// Registers (or registers again) the host and binds this connection to
    /// it; a [`Command::Sync`] follows. Reply: [`Response::Registered`].
    Register {
        /// Where tenants reach this host's executors (`host:port`).
        addr: String,
        /// What the host offers.
        capacity: Capacity,
        /// The batch job it runs in, if a provider started it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<String>,
    },
    /// The host is alive. Reply: [`Response::Ack`].
    Heartbeat {
        /// The host.
        host: HostId,
    },
    /// Usage of a lease since the previous report. Reply: [`Response::Ack`].
    UsageReport {
        /// The host.
        host: HostId,
        /// The lease.
        lease: LeaseId,
        /// The usage since the last report.
        delta: UsageReport,
    },
    /// A lease's executor died. Reply: [`Response::Ack`].
    ExecutorCrashed {
        /// The host.
        host: HostId,
        /// The lease.
        lease: LeaseId,
        /// What happened (exit status, signal).
        reason: String,
        /// Set when the kernel's OOM killer ended it: the lease's memory
        /// limit, MiB (the lease is then lost as out of memory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out_of_memory_mib: Option<u64>,
    },
    /// The host leaves: its leases are lost. Reply: [`Response::Ack`].
    Deregister {
        /// The host.
        host: HostId,
    },
}

/// What an operator can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Creates a tenant. Reply: [`Response::TenantAdded`] with its token.
    AddTenant {
        /// The tenant name.
        name: String,
    },
    /// All tenants. Reply: [`Response::Tenants`].
    ListTenants,
    /// All registered hosts. Reply: [`Response::Hosts`].
    ListHosts,
    /// Sets a tenant's quota (all `None`: unlimited). Reply: [`Response::Ack`].
    SetQuota {
        /// The tenant name.
        tenant: String,
        /// Its limits.
        quota: Quota,
    },
    /// Every waiting request, all tenants'. Reply: [`Response::Tickets`]
    /// (without leases).
    ListQueue,
    /// The batch jobs a provider runs hosts in. Reply: [`Response::Jobs`].
    ListJobs,
}

/// A provider's job, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The scheduler's job id.
    pub job: String,
    /// `pending (reason)`, `running`, `cancelling`.
    pub state: String,
    /// The host its executor manager registered as.
    pub host: Option<HostId>,
    /// Since when (ms since the Unix epoch) its host holds no lease.
    pub idle_since_ms: Option<Millis>,
}

/// A queued request as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketInfo {
    /// The ticket.
    pub ticket: Ticket,
    /// Why it waits, while it does (the first resource short, or the quota).
    pub reason: Option<String>,
    /// Waiting requests ahead of it, while it waits.
    pub ahead: Option<u64>,
    /// Its leases, once granted.
    pub leases: Vec<LeaseInfo>,
}

/// A lease as a tenant sees it: where to reach it and the secret its
/// executors check (derived by [`LeaseKey`](super::LeaseKey), never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease.
    pub lease: Lease,
    /// The address its host's executor manager advertised.
    pub host_addr: String,
    /// The per-lease secret to present to the executor.
    pub token: LeaseToken,
}

/// A tenant, as listed to operators (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// The tenant name.
    pub name: String,
    /// When it was added, in ms since the Unix epoch.
    pub created_at_ms: Millis,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one value per frame, moved once: no boxing
pub enum Response {
    /// The token is valid; this connection gets the tenant's events.
    Subscribed {
        /// The tenant the token belongs to.
        tenant: TenantId,
    },
    /// One lease (created or shown).
    Lease(LeaseInfo),
    /// The tenant's leases, by id.
    Leases(Vec<LeaseInfo>),
    /// The new expiry of a renewed lease.
    Renewed {
        /// The lease.
        lease: LeaseId,
        /// Its new expiry, in ms since the Unix epoch.
        expires_at_ms: Millis,
    },
    /// The final usage of a released lease.
    Released {
        /// The lease.
        lease: LeaseId,
        /// Its usage.
        usage: Usage,
    },
    /// A lease's usage so far.
    Usage {
        /// The lease.
        lease: LeaseId,
        /// Its usage, with core time accrued to now.
        usage: Usage,
    },
    /// The host is registered.
    Registered {
        /// Its id (the same for the same address).
        host: HostId,
        /// Heartbeat at least this often, or the host is marked down.
        heartbeat_timeout_ms: Millis,
    },
    /// Done.
    Ack,
    /// A tenant was created.
    TenantAdded {
        /// The tenant name.
        name: String,
        /// Its token: shown once, never stored in clear.
        token: String,
    },
    /// All tenants, by name.
    Tenants(Vec<TenantInfo>),
    /// All registered hosts, by id.
    Hosts(Vec<Host>),
    /// One queued request.
    Ticket(TicketInfo),
    /// Queued requests, by id.
    Tickets(Vec<TicketInfo>),
    /// A provider's jobs, by id (empty without a provider).
    Jobs(Vec<JobInfo>),
}

/// A lease for an executor manager to run. The secret its executor checks
/// is not sent: the executor manager derives it from the lease with the
/// [`LeaseKey`](super::LeaseKey) of the cluster key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartLease {
    /// The lease.
    pub lease: Lease,
}

/// A command pushed to an executor manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one value per frame, moved once: no boxing
pub enum Command {
    /// Start an executor for this lease (ignore if running).
    Start(StartLease),
    /// Stop the executor of this lease.
    Stop {
        /// The lease.
        lease: LeaseId,
    },
    /// Run exactly these leases: start the missing, stop every other.
    Sync(Vec<StartLease>),
}

/// A frame from the daemon to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The hello was accepted.
    Welcome {
        /// The daemon's protocol version.
        version: u32,
    },
    /// The answer to request `id`.
    Reply {
        /// Request id.
        id: RequestId,
        /// The answer.
        body: Response,
    },
    /// A refusal of one request, or of the connection (then closed).
    Error(ErrorReply),
    /// Something happened to one of the tenant's leases.
    Event(Event),
    /// A command for the host registered on this connection.
    Command(Command),
}
