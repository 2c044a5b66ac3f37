//! An append-only audit log of tenant, host and operator actions, as JSON
//! lines.
//!
//! [`AuditLog`] appends one JSON object per line to a file: the wall-clock
//! time of the write (`ts_ms`, ms since the Unix epoch), then the fields of
//! an [`AuditEvent`]; fields that do not apply are left out. For instance:
//!
//! ```text
//! {"ts_ms":1718000000123,"actor":"alice","actor_kind":"tenant","action":"lease_granted","lease":7,"host":1,"cores":2,"memory_mib":1024,"expires_at_ms":1718000060123}
//! ```
//!
//! Each line parses back into an [`AuditRecord`].
//!
//! Guarantees:
//!
//! - Append-only: the file is opened with `O_APPEND` (created with mode
//!   0600 if missing) and never truncated, rewritten or read; a restarted
//!   lease manager appends after the lines of the previous run.
//! - Whole lines: every line is written by one `write(2)` of the whole line,
//!   newline included, so writers on the same file, in this process or
//!   another, never interleave within a line. Lines are not buffered in the
//!   process (nothing is lost when the process dies) but not `fsync`ed
//!   either (a power loss may drop the newest lines).
//! - No secrets: events carry names, ids, sizes and reasons, never a tenant
//!   token, a lease token or the cluster key. A refused tenant token is
//!   recorded under the name of the tenant it claims to be, and only if that
//!   tenant exists.
//! - Auditing never fails the audited action: a failed write is reported
//!   with `tracing::warn!` (once per run of consecutive failures) and the
//!   line is dropped.
//!
//! ```no_run
//! use rfx_leases::audit::{AuditAction, AuditEvent, AuditLog};
//! use rfx_leases::proto::LeaseId;
//!
//! let log = AuditLog::open("/var/log/rfx/audit.jsonl")?;
//! log.record(
//!     &AuditEvent::tenant("alice", AuditAction::LeaseReleased).with_lease(LeaseId(7)),
//! );
//! # Ok::<(), rfx_leases::audit::AuditError>(())
//! ```

use crate::proto::{HostId, LeaseId, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The names [`AuditEvent`]'s own fields (and `ts_ms`) take in a line;
/// extra fields ([`AuditEvent::with_field`]) may not reuse them.
const RESERVED: [&str; 9] = [
    "ts_ms",
    "actor",
    "actor_kind",
    "action",
    "lease",
    "host",
    "cores",
    "memory_mib",
    "detail",
];

/// Why an audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Opening or creating the file failed.
    #[error("cannot open the audit log {}", path.display())]
    Open {
        /// The audit log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What was done: the `action` field, in snake case.
///
/// New actions may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// A lease was granted to a tenant.
    LeaseGranted,
    /// A tenant's lease request was refused (`detail`: why).
    LeaseRefused,
    /// A tenant moved a lease's expiry later.
    LeaseRenewed,
    /// A tenant released a lease.
    LeaseReleased,
    /// A lease reached its expiry.
    LeaseExpired,
    /// A lease ended by a failure (`detail`: what failed).
    LeaseLost,
    /// Another request of an authenticated tenant or operator was refused
    /// (a renewal or release of an ended lease, a tenant that exists...;
    /// `detail`: why).
    RequestRefused,
    /// An operator added a tenant.
    TenantAdded,
    /// An operator removed a tenant.
    TenantRemoved,
    /// An executor manager registered its host (or registered again).
    HostRegistered,
    /// An executor manager deregistered its host.
    HostDeregistered,
    /// A host missed its heartbeats and was marked down.
    HostDown,
    /// An executor manager reported a crashed executor (`detail`: its
    /// report).
    ExecutorCrashed,
    /// An executor manager started the executor of a lease (its pid, uid
    /// and sandbox in the fields).
    ExecutorStarted,
    /// An executor manager stopped the executor of a lease (released,
    /// expired, shut down).
    ExecutorStopped,
    /// A tenant opened an invocation session with an executor.
    InvocationSessionOpened,
    /// A tenant's invocation session ended.
    InvocationSessionClosed,
    /// A sandboxed executor was killed.
    SandboxKill,
    /// A function ran past its time limit.
    FunctionTimeout,
    /// A lookup (of a lease's executors) was refused.
    LookupRefused,
    /// A credential was refused: a tenant token, the cluster key.
    AuthRefused,
    /// A tenant's lease request was queued to wait for capacity.
    LeaseQueued,
    /// A queued request stopped waiting without a grant (timed out,
    /// cancelled; `detail`: which).
    TicketEnded,
    /// An operator set a tenant's quota.
    QuotaSet,
}

impl AuditAction {
    /// The name written in the `action` field, e.g. `"lease_granted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeaseGranted => "lease_granted",
            Self::LeaseRefused => "lease_refused",
            Self::LeaseRenewed => "lease_renewed",
            Self::LeaseReleased => "lease_released",
            Self::LeaseExpired => "lease_expired",
            Self::LeaseLost => "lease_lost",
            Self::RequestRefused => "request_refused",
            Self::TenantAdded => "tenant_added",
            Self::TenantRemoved => "tenant_removed",
            Self::HostRegistered => "host_registered",
            Self::HostDeregistered => "host_deregistered",
            Self::HostDown => "host_down",
            Self::ExecutorCrashed => "executor_crashed",
            Self::ExecutorStarted => "executor_started",
            Self::ExecutorStopped => "executor_stopped",
            Self::InvocationSessionOpened => "invocation_session_opened",
            Self::InvocationSessionClosed => "invocation_session_closed",
            Self::SandboxKill => "sandbox_kill",
            Self::FunctionTimeout => "function_timeout",
            Self::LookupRefused => "lookup_refused",
            Self::AuthRefused => "auth_refused",
            Self::LeaseQueued => "lease_queued",
            Self::TicketEnded => "ticket_ended",
            Self::QuotaSet => "quota_set",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who the `actor` field names: the `actor_kind` field, in snake case.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActorKind {
    /// An authenticated tenant, by name; also the owner of a lease that
    /// expired or was lost.
    Tenant,
    /// An executor manager, as `host:ID`.
    Host,
    /// An operator (cluster key holder): the actor is `operator`.
    Operator,
    /// A peer whose credential was refused: the actor is who it claimed to
    /// be (an existing tenant's name, `host:ID`, `host`, `operator`) or
    /// `unknown`.
    Unauthenticated,
    /// The lease manager or an executor manager acting on its own; the
    /// actor names it.
    System,
}

/// One audited action: who did what, to which lease, and why.
///
/// Build one with [`tenant`](Self::tenant), [`host`](Self::host),
/// [`operator`](Self::operator) or [`new`](Self::new), then the `with_*`
/// methods. Never put a secret (a token, a key) in any field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Who acted: a tenant's name, `host:ID`, `operator`, ...
    pub actor: String,
    /// What `actor` names.
    pub actor_kind: ActorKind,
    /// What was done.
    pub action: AuditAction,
    /// The lease concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// The host concerned (where the lease runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// Cores granted or asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory granted or asked for, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Why: a refusal's reason, a crash report, how a lease was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Further fields, written at the top level of the line after the
    /// others (see [`with_field`](Self::with_field)).
    #[serde(flatten)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl AuditEvent {
    /// `actor` (of kind `kind`) did `action`.
    pub fn new(kind: ActorKind, actor: impl Into<String>, action: AuditAction) -> Self {
        Self {
            actor: actor.into(),
            actor_kind: kind,
            action,
            lease: None,
            host: None,
            cores: None,
            memory_mib: None,
            detail: None,
            fields: BTreeMap::new(),
        }
    }

    /// The tenant named `name` did `action` (or, for an expiry or a loss,
    /// `action` happened to its lease).
    pub fn tenant(name: impl Into<String>, action: AuditAction) -> Self {
        Self::new(ActorKind::Tenant, name, action)
    }

    /// The executor manager of `host` did `action`: the actor is `host:ID`
    /// and the `host` field is set.
    pub fn host(host: HostId, action: AuditAction) -> Self {
        Self::new(ActorKind::Host, host_actor(host), action).with_host(host)
    }

    /// An operator did `action`: the actor is `operator`.
    pub fn operator(action: AuditAction) -> Self {
        Self::new(ActorKind::Operator, "operator", action)
    }

    /// Sets the lease concerned.
    #[must_use]
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Sets the host concerned.
    #[must_use]
    pub fn with_host(mut self, host: HostId) -> Self {
        self.host = Some(host);
        self
    }

    /// Sets the cores granted or asked for.
    #[must_use]
    pub fn with_cores(mut self, cores: u32) -> Self {
        self.cores = Some(cores);
        self
    }

    /// Sets the memory granted or asked for, in MiB.
    #[must_use]
    pub fn with_memory_mib(mut self, memory_mib: u64) -> Self {
        self.memory_mib = Some(memory_mib);
        self
    }

    /// Sets the reason: why a request was refused, what a crash report
    /// said, how a lease was lost.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a field to the line (replacing one of the same name). A name
    /// taken by the line's own fields (`ts_ms`, `actor`, `lease`, ...) is
    /// written as `extra_NAME` instead; a value that does not serialize is
    /// written as `null`.
    #[must_use]
    pub fn with_field(mut self, name: &str, value: impl Serialize) -> Self {
        let name = if RESERVED.contains(&name) {
            format!("extra_{name}")
        } else {
            name.to_owned()
        };
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.fields.insert(name, value);
        self
    }
}

/// The actor name of an executor manager: `host:ID`.
pub fn host_actor(host: HostId) -> String {
    format!("host:{host}")
}

/// One line of an audit log, parsed back: when it was written and what.
///
/// ```
/// use rfx_leases::audit::{AuditAction, AuditRecord};
/// let line = r#"{"ts_ms":5,"actor":"alice","actor_kind":"tenant","action":"lease_released","lease":7}"#;
/// let rec: AuditRecord = serde_json::from_str(line)?;
/// assert_eq!((rec.ts_ms, rec.event.action), (5, AuditAction::LeaseReleased));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When the line was written, in ms since the Unix epoch.
    pub ts_ms: Millis,
    /// What was recorded.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// An append-only JSON-lines audit log (see the [module docs](self)), or a
/// disabled one that records nothing.
///
/// Cheap to clone (clones share the file and its lock); usable from any
/// thread through `&self`.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Writer>,
}

struct Writer {
    file: File,
    /// Whether the last write failed (a failure run is warned about once).
    failing: bool,
    /// Lines dropped by failed writes since the file was opened.
    dropped: u64,
}

impl AuditLog {
    /// Opens `path` for appending, creating it with mode 0600 if missing
    /// (its directory must exist). An existing file is kept as it is; one
    /// readable by others than its owner is warned about.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        #[cfg(unix)]
        if let Ok(meta) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_file() && mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the audit log is accessible to other users; consider chmod 600"
                );
            }
        }
        Ok(Self {
            inner: Some(Arc::new(Inner {
                path,
                writer: Mutex::new(Writer {
                    file,
                    failing: false,
                    dropped: 0,
                }),
            })),
        })
    }

    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether events are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The file written to, if enabled.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_deref().map(|i| i.path.as_path())
    }

    /// Lines dropped by failed writes since the file was opened (0 if
    /// disabled).
    pub fn dropped_lines(&self) -> u64 {
        self.inner.as_deref().map_or(0, |i| i.lock().dropped)
    }

    /// Appends `event` as one line, stamped with the wall clock. Never
    /// fails and never panics: a failed write is warned about (once per run
    /// of failures) and the line dropped.
    pub fn record(&self, event: &AuditEvent) {
        let Some(inner) = self.inner.as_deref() else {
            return;
        };
        let mut w = inner.lock();
        // Stamped under the lock: times do not go backwards within the file
        // (unless the wall clock does).
        let line = Line {
            ts_ms: now_ms(),
            event,
        };
        let mut buf = match serde_json::to_vec(&line) {
            Ok(buf) => buf,
            Err(e) => {
                // Only a field of `event.fields` could fail: not expected.
                tracing::warn!(action = %event.action, "audit event not serializable, dropped: {e}");
                w.dropped = w.dropped.saturating_add(1);
                return;
            }
        };
        buf.push(b'\n');
        match write_line(&mut w.file, &buf) {
            Ok(()) => {
                if w.failing {
                    w.failing = false;
                    tracing::warn!(
                        path = %inner.path.display(),
                        dropped = w.dropped,
                        "audit log writable again"
                    );
                }
            }
            Err(e) => {
                w.dropped = w.dropped.saturating_add(1);
                if !w.failing {
                    w.failing = true;
                    tracing::warn!(
                        path = %inner.path.display(),
                        action = %event.action,
                        "audit log write failed; dropping lines until it works again: {e}"
                    );
                }
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // Nothing panics while holding the lock; if something did, the file
        // is still fine to append to.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path() {
            Some(path) => f.debug_tuple("AuditLog").field(&path).finish(),
            None => f.write_str("AuditLog(disabled)"),
        }
    }
}

/// What one line holds.
#[derive(Serialize)]
struct Line<'a> {
    ts_ms: Millis,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// Writes `buf` with one `write(2)` (`O_APPEND`: atomic for a regular file).
/// Should the kernel take only part of it (a full disk), the rest follows,
/// so that the line still ends where it should.
fn write_line(file: &mut File, buf: &[u8]) -> std::io::Result<()> {
    let n = loop {
        match file.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    if n < buf.len() {
        file.write_all(&buf[n..])?;
    }
    Ok(())
}

/// The wall clock, in ms since the Unix epoch.
fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read the log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn one_json_object_per_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        assert!(log.is_enabled());
        assert_eq!(log.path(), Some(path.as_path()));
        let before = now_ms();
        log.record(
            &AuditEvent::tenant("alice", AuditAction::LeaseGranted)
                .with_lease(LeaseId(7))
                .with_host(HostId(1))
                .with_cores(2)
                .with_memory_mib(1024)
                .with_field("expires_at_ms", 99u64),
        );
        log.record(
            &AuditEvent::host(HostId(3), AuditAction::ExecutorCrashed)
                .with_lease(LeaseId(8))
                .with_detail("killed by signal 9\nand a \"quote\""),
        );
        log.record(&AuditEvent::operator(AuditAction::TenantAdded).with_field("tenant", "bob"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with('\n'));
        let lines = lines(&path);
        assert_eq!(lines.len(), 3, "{text}");

        // The exact layout of the first line, but for the time.
        let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
        let ts = v["ts_ms"].as_u64().expect("ts_ms");
        assert!(ts >= before && ts <= now_ms() + 1, "{ts}");
        let expected = format!(
            r#"{{"ts_ms":{ts},"actor":"alice","actor_kind":"tenant","action":"lease_granted","lease":7,"host":1,"cores":2,"memory_mib":1024,"expires_at_ms":99}}"#
        );
        assert_eq!(lines[0], expected);

        let crash: AuditRecord = serde_json::from_str(&lines[1]).expect("record");
        assert_eq!(crash.event.actor, "host:3");
        assert_eq!(crash.event.actor_kind, ActorKind::Host);
        assert_eq!(crash.event.action, AuditAction::ExecutorCrashed);
        assert_eq!(
            (crash.event.lease, crash.event.host),
            (Some(LeaseId(8)), Some(HostId(3)))
        );
        assert_eq!(
            crash.event.detail.as_deref(),
            Some("killed by signal 9\nand a \"quote\"")
        );
        assert!(crash.event.fields.is_empty());

        let added: AuditRecord = serde_json::from_str(&lines[2]).expect("record");
        assert_eq!(added.event.actor, "operator");
        assert_eq!(added.event.fields["tenant"], "bob");
        assert_eq!(added.event.lease, None);
        assert!(
            !lines[2].contains("\"lease\""),
            "absent fields are left out"
        );
    }

    #[test]
    fn records_round_trip() {
        let event = AuditEvent::tenant("alice", AuditAction::LeaseRefused)
            .with_cores(64)
            .with_detail("no host has 64 free cores")
            .with_field("request", serde_json::json!({"nested": [1, 2]}));
        let rec = AuditRecord { ts_ms: 12, event };
        let line = serde_json::to_string(&rec).expect("json");
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&line).expect("parses"),
            rec
        );
    }

    #[test]
    fn reserved_field_names_are_not_duplicated() {
        let e = AuditEvent::operator(AuditAction::TenantAdded)
            .with_field("lease", 5)
            .with_field("ts_ms", 1);
        let json = serde_json::to_string(&Line {
            ts_ms: 2,
            event: &e,
        })
        .expect("json");
        assert_eq!(
            json,
            r#"{"ts_ms":2,"actor":"operator","actor_kind":"operator","action":"tenant_added","extra_lease":5,"extra_ts_ms":1}"#
        );
    }

    #[test]
    fn action_names_match_serde() {
        for a in [
            AuditAction::LeaseGranted,
            AuditAction::LeaseRefused,
            AuditAction::LeaseRenewed,
            AuditAction::LeaseReleased,
            AuditAction::LeaseExpired,
            AuditAction::LeaseLost,
            AuditAction::RequestRefused,
            AuditAction::TenantAdded,
            AuditAction::TenantRemoved,
            AuditAction::HostRegistered,
            AuditAction::HostDeregistered,
            AuditAction::HostDown,
            AuditAction::ExecutorCrashed,
            AuditAction::ExecutorStarted,
            AuditAction::ExecutorStopped,
            AuditAction::InvocationSessionOpened,
            AuditAction::InvocationSessionClosed,
            AuditAction::SandboxKill,
            AuditAction::FunctionTimeout,
            AuditAction::LookupRefused,
            AuditAction::AuthRefused,
            AuditAction::LeaseQueued,
            AuditAction::TicketEnded,
            AuditAction::QuotaSet,
        ] {
            let json = serde_json::to_string(&a).expect("json");
            assert_eq!(json, format!("\"{a}\""));
        }
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        const THREADS: usize = 4;
        const LINES: usize = 200;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        // A second handle on the same file, as a second process would have.
        let other = AuditLog::open(&path).expect("open again");
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = if t % 2 == 0 {
                    log.clone()
                } else {
                    other.clone()
                };
                std::thread::spawn(move || {
                    // Long enough lines that a torn write would show.
                    let pad = "x".repeat(500 + t * 100);
                    for i in 0..LINES {
                        log.record(
                            &AuditEvent::tenant(format!("t{t}"), AuditAction::LeaseRenewed)
                                .with_lease(LeaseId(i as u64))
                                .with_detail(pad.clone()),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), THREADS * LINES);
        let mut seen = BTreeSet::new();
        for line in &lines {
            let rec: AuditRecord = serde_json::from_str(line).expect("an intact line");
            let t: usize = rec.event.actor[1..].parse().expect("thread number");
            assert_eq!(rec.event.detail.map(|d| d.len()), Some(500 + t * 100));
            assert!(seen.insert((t, rec.event.lease.expect("lease").0)));
        }
        // Each writer's lines are in its order.
        for t in 0..THREADS {
            let mine: Vec<u64> = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
                .filter(|r| r.event.actor == format!("t{t}"))
                .filter_map(|r| r.event.lease.map(|l| l.0))
                .collect();
            assert_eq!(mine, (0..LINES as u64).collect::<Vec<_>>());
        }
        assert_eq!(log.dropped_lines(), 0);
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        AuditLog::open(&path)
            .expect("open")
            .record(&AuditEvent::operator(AuditAction::TenantAdded));
        let first = lines(&path);
        AuditLog::open(&path)
            .expect("open again")
            .record(&AuditEvent::operator(AuditAction::TenantRemoved));
        let both = lines(&path);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], first[0]);
        assert!(both[1].contains("tenant_removed"));
    }

    #[cfg(unix)]
    #[test]
    fn created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let _log = AuditLog::open(&path).expect("open");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing-dir").join("audit.jsonl");
        let err = AuditLog::open(&path).expect_err("no such directory");
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn disabled_records_nothing() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        assert_eq!(log.path(), None);
        log.record(&AuditEvent::operator(AuditAction::TenantAdded));
        assert_eq!(log.dropped_lines(), 0);
        assert_eq!(format!("{log:?}"), "AuditLog(disabled)");
        assert!(!AuditLog::default().is_enabled());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn write_failures_are_survived() {
        // Every write to /dev/full fails with ENOSPC.
        let log = AuditLog::open("/dev/full").expect("open /dev/full");
        for _ in 0..3 {
            log.record(&AuditEvent::operator(AuditAction::TenantAdded));
        }
        assert_eq!(log.dropped_lines(), 3);
        assert!(format!("{log:?}").contains("/dev/full"));
    }
}
