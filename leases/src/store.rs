//! The durable store of the lease manager, on redb.
//!
//! Tables: `ops` (sequence number → JSON [`StoreOp`], the redo log that
//! [`Manager::replay`](crate::proto::Manager::replay) reads back), `tenants`
//! (name → salted hash of the token) and `meta` (format version).
//!
//! No lease secret is stored: lease tokens are derived from the cluster key
//! ([`LeaseKey`](crate::wire::LeaseKey)). Format 1 stores kept them in a
//! `lease_secrets` table; opening one upgrades it to format 2 and deletes
//! that table (tokens of leases granted before the upgrade change). The
//! file is still created with mode 0600 (tenant hashes, the lease log).
//!
//! The log does not grow forever: the daemon replaces it with a checkpoint
//! of the state ([`Manager::checkpoint`](crate::proto::Manager::checkpoint),
//! the few ops that rebuild it) once it is long
//! ([`replace_log`](Store::replace_log), one transaction).
//!
//! Every [`commit`](Store::commit) is one redb write transaction with
//! immediate durability (fsync before it returns), so whatever the daemon
//! acknowledged survives `kill -9`. redb locks the file: a second open, from
//! this process or another, fails with [`DaemonError::StoreLocked`].

use crate::auth::TenantRecord;
use crate::error::DaemonError;
use crate::proto::StoreOp;
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

const OPS: TableDefinition<u64, &[u8]> = TableDefinition::new("ops");
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Format 1 only: lease secrets in clear; deleted on upgrade.
const OLD_SECRETS: TableDefinition<u64, &[u8]> = TableDefinition::new("lease_secrets");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this build writes and reads.
const FORMAT: u64 = 2;

/// The older layout this build upgrades (it had `lease_secrets`).
const FORMAT_WITH_SECRETS: u64 = 1;

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
}

/// Changes committed together, durably, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Log entries, in order.
    pub(crate) ops: Vec<StoreOp>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
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

    /// Creates the tables and checks the format version; upgrades a format 1
    /// store (deletes its lease secrets).
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
                Some(FORMAT_WITH_SECRETS) => {
                    tracing::info!(
                        "store format {FORMAT_WITH_SECRETS}: deleting its lease secrets (tokens are derived now)"
                    );
                    meta.insert("format", FORMAT)
                        .map_err(DaemonError::store("write meta"))?;
                }
                Some(other) => {
                    return Err(DaemonError::Corrupt(format!(
                        "store format {other}, this build reads {FORMAT}"
                    )))
                }
            }
            tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
            tx.open_table(TENANTS)
                .map_err(DaemonError::store("open tenants"))?;
        }
        // Also after a crash between an upgrade's steps: one transaction.
        tx.delete_table(OLD_SECRETS)
            .map_err(DaemonError::store("delete lease secrets"))?;
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
        Ok(loaded)
    }

    /// Appends `batch` and makes it durable before returning.
    pub(crate) fn commit(&self, batch: &Batch) -> Result<(), DaemonError> {
        let tx = self.db.begin_write().map_err(DaemonError::store("begin"))?;
        {
            let mut ops = tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
            let mut seq = ops
                .last()
                .map_err(DaemonError::store("read ops"))?
                .map_or(0, |(k, _)| k.value().saturating_add(1));
            for op in &batch.ops {
                let bytes = serde_json::to_vec(op)
                    .map_err(|e| DaemonError::Corrupt(format!("cannot encode {op:?}: {e}")))?;
                ops.insert(seq, bytes.as_slice())
                    .map_err(DaemonError::store("append op"))?;
                seq = seq.saturating_add(1);
            }
        }
        tx.commit().map_err(DaemonError::store("commit"))
    }

    /// Replaces the whole log with `ops` (a checkpoint) in one durable
    /// transaction: a crash leaves either the old log or the new one.
    pub(crate) fn replace_log(&self, ops: &[StoreOp]) -> Result<(), DaemonError> {
        let tx = self.db.begin_write().map_err(DaemonError::store("begin"))?;
        tx.delete_table(OPS)
            .map_err(DaemonError::store("drop the old log"))?;
        {
            let mut table = tx.open_table(OPS).map_err(DaemonError::store("open ops"))?;
            for (seq, op) in (0u64..).zip(ops) {
                let bytes = serde_json::to_vec(op)
                    .map_err(|e| DaemonError::Corrupt(format!("cannot encode {op:?}: {e}")))?;
                table
                    .insert(seq, bytes.as_slice())
                    .map_err(DaemonError::store("write checkpoint"))?;
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
    use crate::proto::{HostId, LeaseId, LeaseState};

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
            let batch = Batch { ops: ops() };
            store.commit(&batch).expect("commits");
            let batch = Batch {
                ops: vec![StoreOp::HostDown { host: HostId(2) }],
            };
            store.commit(&batch).expect("commits");
            let forget = Batch {
                ops: vec![StoreOp::LeaseForgotten { lease: LeaseId(1) }],
            };
            store.commit(&forget).expect("commits");
        }
        let loaded = Store::open(&path).expect("reopens").load().expect("loads");
        let mut want = ops();
        want.push(StoreOp::HostDown { host: HostId(2) });
        want.push(StoreOp::LeaseForgotten { lease: LeaseId(1) });
        assert_eq!(loaded.ops, want);
    }

    /// A store written by a format 1 build (with a `lease_secrets` table)
    /// opens: its log and tenants are read, its secrets deleted from the
    /// file, its format moved to 2.
    #[test]
    fn format_1_store_opens_and_loses_its_secrets() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.redb");
        let secret = [0x5a_u8; 32];
        let (rec, _) = crate::auth::new_tenant("alice", 7).expect("tenant");
        {
            // What a format 1 build wrote.
            let db = Database::create(&path).expect("creates");
            let tx = db.begin_write().expect("tx");
            {
                let mut meta = tx.open_table(META).expect("meta");
                meta.insert("format", FORMAT_WITH_SECRETS).expect("meta");
                let mut log = tx.open_table(OPS).expect("ops");
                let op = serde_json::to_vec(&StoreOp::HostDown { host: HostId(3) }).expect("json");
                log.insert(0, op.as_slice()).expect("op");
                let mut t = tx.open_table(TENANTS).expect("tenants");
                let r = serde_json::to_vec(&rec).expect("json");
                t.insert("alice", r.as_slice()).expect("tenant");
                let mut s = tx.open_table(OLD_SECRETS).expect("secrets");
                s.insert(1, secret.as_slice()).expect("secret");
            }
            tx.commit().expect("commit");
        }
        let has_secret = |f: &[u8]| f.windows(32).any(|w| w == secret);
        assert!(has_secret(&std::fs::read(&path).expect("reads")));
        {
            let store = Store::open(&path).expect("opens");
            let loaded = store.load().expect("loads");
            assert_eq!(loaded.ops, vec![StoreOp::HostDown { host: HostId(3) }]);
            assert_eq!(loaded.tenants.get("alice"), Some(&rec));
            let tx = store.db.begin_read().expect("tx");
            assert!(
                tx.open_table(OLD_SECRETS).is_err(),
                "the lease secrets table survived"
            );
            let meta = tx.open_table(META).expect("meta");
            let format = meta.get("format").expect("read").map(|v| v.value());
            assert_eq!(format, Some(FORMAT));
        }
        assert!(
            !has_secret(&std::fs::read(&path).expect("reads")),
            "a deleted lease secret is still in the file"
        );
        // Reopening the upgraded store works too.
        Store::open(&path).expect("reopens").load().expect("loads");
        // A format from the future is refused.
        {
            let db = Database::create(&path).expect("opens");
            let tx = db.begin_write().expect("tx");
            tx.open_table(META)
                .expect("meta")
                .insert("format", 99)
                .expect("meta");
            tx.commit().expect("commit");
        }
        assert!(matches!(Store::open(&path), Err(DaemonError::Corrupt(_))));
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
