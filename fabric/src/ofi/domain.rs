//! Opened libfabric domains, one per provider and local address, shared by
//! the endpoints of the process; and their memory-registration cache: a
//! [`MemoryRegion`] is registered once per domain and the registration is
//! reused by every endpoint that exposes it, until the last one is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::sys::{self, DomainObj, Info, Mr, Want};
use crate::caps::TransportKind;
use crate::error::FabricError;
use crate::mr::MemoryRegion;

/// A shared domain with its registration cache.
#[derive(Debug)]
pub(super) struct Domain {
    pub(super) obj: Arc<DomainObj>,
    mrs: Mutex<HashMap<(u64, u32), Weak<Mr>>>,
}

/// `fi_getinfo` for `provider`, preferring providers that do not need
/// local registration (FI_MR_LOCAL), then accepting them.
pub(super) fn getinfo(provider: &str, node: Option<&str>) -> Result<Info, i32> {
    Info::get(Want {
        provider,
        node,
        mr_local: false,
    })
    .or_else(|_| {
        Info::get(Want {
            provider,
            node,
            mr_local: true,
        })
    })
}

/// Why an `fi_info` match cannot carry rfx, if it cannot.
pub(super) fn unsuitable(info: &Info) -> Option<String> {
    if info.cq_data_size() < 8 {
        return Some(format!(
            "it carries {} bytes of remote CQ data; rfx needs 8",
            info.cq_data_size()
        ));
    }
    if info.mr_endpoint() {
        return Some("it binds memory registrations to endpoints (FI_MR_ENDPOINT)".into());
    }
    None
}

impl Domain {
    /// The domain of `provider` bound to `node` (a local IP for IP-based
    /// providers), opened on first use.
    pub(super) fn get(provider: &str, node: Option<&str>) -> Result<Arc<Domain>, FabricError> {
        static DOMAINS: OnceLock<Mutex<HashMap<String, Weak<Domain>>>> = OnceLock::new();
        let key = format!("{provider}\0{}", node.unwrap_or(""));
        let map = DOMAINS.get_or_init(Default::default);
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(d);
        }
        let info = getinfo(provider, node).map_err(|code| FabricError::Unavailable {
            kind: TransportKind::Ofi,
            reason: format!(
                "libfabric provider `{provider}` has no RDM endpoint{}: {}",
                node.map(|n| format!(" on {n}")).unwrap_or_default(),
                sys::strerror(code.into())
            ),
        })?;
        if let Some(why) = unsuitable(&info) {
            return Err(FabricError::Unavailable {
                kind: TransportKind::Ofi,
                reason: format!("libfabric provider `{provider}` cannot be used: {why}"),
            });
        }
        let d = Arc::new(Domain {
            obj: Arc::new(DomainObj::open(info)?),
            mrs: Mutex::new(HashMap::new()),
        });
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&d));
        Ok(d)
    }

    /// The registration of `region` in this domain, made on first use.
    pub(super) fn register(&self, region: &MemoryRegion) -> Result<Arc<Mr>, FabricError> {
        let mut mrs = self.mrs.lock().unwrap_or_else(|e| e.into_inner());
        let key = (region.addr(), region.rkey());
        if let Some(mr) = mrs.get(&key).and_then(Weak::upgrade) {
            return Ok(mr);
        }
        let mr = Arc::new(Mr::register(&self.obj, region, u64::from(region.rkey()))?);
        mrs.retain(|_, w| w.strong_count() > 0);
        mrs.insert(key, Arc::downgrade(&mr));
        Ok(mr)
    }
}
