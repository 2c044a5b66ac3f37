//! The durable store of the lease manager, on redb.
//!
//! Tables: `ops` (sequence number → JSON [`StoreOp`], the redo log that
//! [`Manager::replay`](crate::proto::Manager::replay) reads back), `tenants`
//! (name → salted hash of the token), `lease_secrets` (lease id → its
//! 32-byte secret, in clear since executors must check it; deleted with the
//! lease) and `meta` (format version).
//!
//! **The store file is secret**: it holds every live lease's secret. It is
//! created with mode 0600.
//!
//! Every [`commit`](Store::commit) is one redb write transaction with
//! immediate durability (fsync before it returns), so whatever the daemon
//! acknowledged survives `kill -9`. redb locks the file: a second open, from
//! this process or another, fails with [`DaemonError::StoreLocked`].

use crate::auth::TenantRecord;
use crate::error::DaemonError;
use crate::proto::{LeaseId, StoreOp};
use crate::wire::LeaseToken;
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("ops");
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const SECRETS: TableDefinition<u64, &[u8]> = TableDefinition::new("lease_secrets");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this build writes and reads.
const FORMAT: u64 = 1;

/// The open store; one per file (redb holds an exclusive lock).
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The redo log, in order.
    pub(crate) ops: Vec<StoreOp>,
    /// Tenants by name.
    pub(crate) tenants: BTreeMap<String, TenantRecord>,
    /// Secrets of retained leases.
    pub(crate) secrets: HashMap<LeaseId, LeaseToken>,
}

/// Changes committed together, durably, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Log entries, in order.
    pub(crate) ops: Vec<StoreOp>,
    /// Secrets of leases granted by these ops.
    pub(crate) secrets: Vec<(LeaseId, LeaseToken)>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.secrets.is_empty()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (mode 0600) if missing.
    pub(crate) fn open(path: &Path) -> Result<Self, DaemonError> {
        create_private(path)?;
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => DaemonError::StoreLocked {
                path: path.to_owned(),
            },
            e => DaemonError::store("open")(e),
        })?;
        let store = Self { db };
        store.init()?;
        Ok(store)
    }

    /// Creates the tables and checks the format version.
    fn init(&self) -> Result<(), DaemonError> {
        let tx = self.db.begin_write().map_err(DaemonError::store("begin"))?;
        {
            let mut meta = tx
                .open_table(META)
                .map_err(DaemonError::store("open meta"))?;
            let format = meta
                .get("format")
                .map_err(DaemonError::store("read meta"))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(DaemonError::store("write meta"))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(DaemonError::Corrupt(format!(
                        "store format {other}, this build reads {FORMAT}"
                    )))
                }
            }
            tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
            tx.open_table(TENANTS)
                .map_err(DaemonError::store("open tenants"))?;
            tx.open_table(SECRETS)
                .map_err(DaemonError::store("open secrets"))?;
        }
        tx.commit().map_err(DaemonError::store("commit"))
    }

    /// Reads the whole store back.
    pub(crate) fn load(&self) -> Result<Loaded, DaemonError> {
        let tx = self.db.begin_read().map_err(DaemonError::store("begin"))?;
        let mut loaded = Loaded::default();
        let ops = tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
        for entry in ops.iter().map_err(DaemonError::store("read ops"))? {
            let (seq, bytes) = entry.map_err(DaemonError::store("read ops"))?;
            let op = serde_json::from_slice(bytes.value())
                .map_err(|e| DaemonError::Corrupt(format!("log entry {}: {e}", seq.value())))?;
            loaded.ops.push(op);
        }
        loaded.tenants = self.read_tenants(&tx)?;
        let secrets = tx
            .open_table(SECRETS)
            .map_err(DaemonError::store("open secrets"))?;
        for entry in secrets.iter().map_err(DaemonError::store("read secrets"))? {
            let (id, bytes) = entry.map_err(DaemonError::store("read secrets"))?;
            let token = <[u8; 32]>::try_from(bytes.value()).map_err(|_| {
                DaemonError::Corrupt(format!("secret of lease {} is not 32 bytes", id.value()))
            })?;
            loaded
                .secrets
                .insert(LeaseId(id.value()), LeaseToken::from_bytes(token));
        }
        Ok(loaded)
    }

    /// Appends `batch` and makes it durable before returning.
    pub(crate) fn commit(&self, batch: &Batch) -> Result<(), DaemonError> {
        let tx = self.db.begin_write().map_err(DaemonError::store("begin"))?;
        {
            let mut ops = tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
            let mut secrets = tx
                .open_table(SECRETS)
                .map_err(DaemonError::store("open secrets"))?;
            let mut seq = ops
                .last()
                .map_err(DaemonError::store("read ops"))?
                .map_or(0, |(k, _)| k.value().saturating_add(1));
            for (lease, token) in &batch.secrets {
                secrets
                    .insert(lease.0, token.as_bytes().as_slice())
                    .map_err(DaemonError::store("write secret"))?;
            }
            for op in &batch.ops {
                let bytes = serde_json::to_vec(op)
                    .map_err(|e| DaemonError::Corrupt(format!("cannot encode {op:?}: {e}")))?;
                ops.insert(seq, bytes.as_slice())
                    .map_err(DaemonError::store("append op"))?;
                seq = seq.saturating_add(1);
                if let StoreOp::LeaseForgotten { lease } = op {
                    secrets
                        .remove(lease.0)
                        .map_err(DaemonError::store("delete secret"))?;
                }
            }
        }
        tx.commit().map_err(DaemonError::store("commit"))
    }

    /// Adds a tenant; fails if the name is taken.
    pub(crate) fn add_tenant(&self, name: &str, record: &TenantRecord) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| DaemonError::Corrupt(format!("cannot encode tenant: {e}")))?;
        let tx = self.db.begin_write().map_err(DaemonError::store("begin"))?;
        {
            let mut tenants = tx
                .open_table(TENANTS)
                .map_err(DaemonError::store("open tenants"))?;
            if tenants
                .get(name)
                .map_err(DaemonError::store("read tenants"))?
                .is_some()
            {
                return Err(DaemonError::TenantExists(name.to_owned()));
            }
            tenants
                .insert(name, bytes.as_slice())
                .map_err(DaemonError::store("write tenant"))?;
        }
        tx.commit().map_err(DaemonError::store("commit"))
    }

    /// All tenants, by name.
    pub(crate) fn tenants(&self) -> Result<BTreeMap<String, TenantRecord>, DaemonError> {
        let tx = self.db.begin_read().map_err(DaemonError::store("begin"))?;
        self.read_tenants(&tx)
    }

    fn read_tenants(
        &self,
        tx: &redb::ReadTransaction,
    ) -> Result<BTreeMap<String, TenantRecord>, DaemonError> {
        let table = tx
            .open_table(TENANTS)
            .map_err(DaemonError::store("open tenants"))?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(DaemonError::store("read tenants"))? {
            let (name, bytes) = entry.map_err(DaemonError::store("read tenants"))?;
            let record = serde_json::from_slice(bytes.value())
                .map_err(|e| DaemonError::Corrupt(format!("tenant {}: {e}", name.value())))?;
            out.insert(name.value().to_owned(), record);
        }
        Ok(out)
    }
}

/// Creates `path` readable by its owner only, unless it exists.
fn create_private(path: &Path) -> Result<(), DaemonError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DaemonError::Io {
            op: "create the store file",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{HostId, LeaseState};

    fn ops() -> Vec<StoreOp> {
        vec![
            StoreOp::HostDown { host: HostId(1) },
            StoreOp::LeaseEnded {
                lease: LeaseId(1),
                state: LeaseState::Expired,
                at: 5,
            },
        ]
    }

    #[test]
    fn commits_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).expect("opens");
            let batch = Batch {
                ops: ops(),
                secrets: vec![(LeaseId(1), LeaseToken::from_bytes([1; 32]))],
            };
            store.commit(&batch).expect("commits");
            let batch = Batch {
                ops: vec![StoreOp::HostDown { host: HostId(2) }],
                secrets: vec![(LeaseId(2), LeaseToken::from_bytes([2; 32]))],
            };
            store.commit(&batch).expect("commits");
            let forget = Batch {
                ops: vec![StoreOp::LeaseForgotten { lease: LeaseId(1) }],
                secrets: vec![],
            };
            store.commit(&forget).expect("commits");
        }
        let loaded = Store::open(&path).expect("reopens").load().expect("loads");
        let mut want = ops();
        want.push(StoreOp::HostDown { host: HostId(2) });
        want.push(StoreOp::LeaseForgotten { lease: LeaseId(1) });
        assert_eq!(loaded.ops, want);
        assert_eq!(
            loaded.secrets,
            HashMap::from([(LeaseId(2), LeaseToken::from_bytes([2; 32]))])
        );
    }

    #[test]
    fn second_open_is_refused_while_held() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.redb");
        let held = Store::open(&path).expect("opens");
        assert!(matches!(
            Store::open(&path),
            Err(DaemonError::StoreLocked { .. })
        ));
        drop(held);
        Store::open(&path).expect("free again");
    }

    #[cfg(unix)]
    #[test]
    fn store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.redb");
        Store::open(&path).expect("opens");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tenants_are_unique_and_hashed() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("opens");
        let (rec, token) = crate::auth::new_tenant("alice", 7).expect("tenant");
        store.add_tenant("alice", &rec).expect("added");
        assert!(matches!(
            store.add_tenant("alice", &rec),
            Err(DaemonError::TenantExists(_))
        ));
        let tenants = store.tenants().expect("tenants");
        assert_eq!(tenants.get("alice"), Some(&rec));
        let secret = token.split_once('.').expect("dot").1;
        let bytes = std::fs::read(dir.path().join("s.redb")).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "token stored in clear");
    }
}
