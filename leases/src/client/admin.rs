//! The operator's client.

use super::conn::{unexpected, Conn};
use crate::error::DaemonError;
use crate::proto::{Host, Quota};
use crate::wire::{AdminRequest, ClientMsg, JobInfo, Response, TenantInfo, TicketInfo};
use std::fmt;
use tokio::net::ToSocketAddrs;

/// An operator's connection, authenticated by the cluster key: manages
/// tenants while the daemon holds the store.
#[derive(Clone)]
pub struct AdminClient {
    conn: Conn,
    key: String,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient").finish_non_exhaustive()
    }
}

impl AdminClient {
    /// Connects; the key is checked on each request.
    pub async fn connect(addr: impl ToSocketAddrs, cluster_key: &str) -> Result<Self, DaemonError> {
        let (conn, _) = Conn::connect(addr).await?;
        Ok(Self {
            conn,
            key: cluster_key.to_owned(),
        })
    }

    /// Creates a tenant; returns its token (shown once, stored hashed).
    pub async fn add_tenant(&self, name: &str) -> Result<String, DaemonError> {
        let name = name.to_owned();
        match self.call(AdminRequest::AddTenant { name }).await? {
            Response::TenantAdded { token, .. } => Ok(token),
            other => Err(unexpected(&other)),
        }
    }

    /// All tenants, by name.
    pub async fn list_tenants(&self) -> Result<Vec<TenantInfo>, DaemonError> {
        match self.call(AdminRequest::ListTenants).await? {
            Response::Tenants(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// All registered hosts, by id, with their free resources.
    pub async fn list_hosts(&self) -> Result<Vec<Host>, DaemonError> {
        match self.call(AdminRequest::ListHosts).await? {
            Response::Hosts(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets a tenant's quota (all `None`: unlimited).
    pub async fn set_quota(&self, tenant: &str, quota: &Quota) -> Result<(), DaemonError> {
        let req = AdminRequest::SetQuota {
            tenant: tenant.to_owned(),
            quota: quota.clone(),
        };
        match self.call(req).await? {
            Response::Ack => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Every waiting request, all tenants', by id.
    pub async fn queue(&self) -> Result<Vec<TicketInfo>, DaemonError> {
        match self.call(AdminRequest::ListQueue).await? {
            Response::Tickets(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    /// The batch jobs a provider runs hosts in.
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, DaemonError> {
        match self.call(AdminRequest::ListJobs).await? {
            Response::Jobs(j) => Ok(j),
            other => Err(unexpected(&other)),
        }
    }

    async fn call(&self, req: AdminRequest) -> Result<Response, DaemonError> {
        let key = self.key.clone();
        self.conn.call(|id| ClientMsg::Admin { id, key, req }).await
    }
}
