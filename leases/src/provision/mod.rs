//! Elastic capacity: hosts provided by a batch scheduler, asked for when
//! queued requests cannot be met and given back when idle.
//!
//! [`Provisioner`] is the policy, free of I/O like the lease manager's
//! core: it sees the lease manager's state and the scheduler's jobs and
//! says what to do ([`Action`]). The daemon carries the actions out through
//! a [`HostProvider`] (Slurm: [`slurm::Slurm`]; PBS, Flux or Kubernetes
//! would implement the same three calls) and feeds back what happened.
//!
//! A job runs one executor manager on its node, which registers with the
//! lease manager naming its job (`SLURM_JOB_ID`), so the provisioner knows
//! which host is which job's. Policy:
//! - scale out when requests wait: enough jobs for the cores the waiting
//!   requests ask (a job's cores are learned from the first host that
//!   registers; one per job until then), counting the jobs not registered
//!   yet, up to `max_hosts`; and never fewer live jobs than `min_hosts`;
//! - scale in: a job whose host held no lease for `idle_timeout_ms` is
//!   cancelled, while no request waits and more than `min_hosts` live.

pub mod slurm;

use std::collections::BTreeMap;

use crate::proto::{HostId, Manager, Millis};

/// A scheduler's job id.
pub type JobId = String;

/// The scaling bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Jobs kept alive even when idle.
    pub min_hosts: u32,
    /// Jobs at most, pending ones included.
    pub max_hosts: u32,
    /// A job's host idle (no active lease) this long is given back.
    pub idle_timeout_ms: Millis,
}

/// A job as the scheduler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to start, with the scheduler's reason (`Resources`, `Priority`...).
    Pending(String),
    /// Running.
    Running,
    /// Gone (completed, failed, cancelled, timed out), with how.
    Ended(String),
}

/// One job's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
}

/// What the provisioner asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Submit one more job.
    Submit,
    /// Cancel this job (its host is idle).
    Cancel(JobId),
}

/// What a scheduler must do for the provisioner.
pub trait HostProvider: Send + Sync + std::fmt::Debug {
    /// Its name, for logs and reasons (`slurm`).
    fn name(&self) -> &str;
    /// Submits one job that runs an executor manager; its id.
    fn submit(&self) -> Result<JobId, String>;
    /// Cancels a job.
    fn cancel(&self, job: &JobId) -> Result<(), String>;
    /// The state of every live job this provider submitted (by its name):
    /// a tracked job missing from the answer has ended.
    fn poll(&self) -> Result<Vec<JobStatus>, String>;
}

/// A job the provisioner tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job.
    pub id: JobId,
    /// Its last known state.
    pub state: JobState,
    /// The host its executor manager registered as.
    pub host: Option<HostId>,
    /// Since when its host holds no lease.
    pub idle_since: Option<Millis>,
    /// Asked to cancel.
    pub cancelling: bool,
    /// When it was submitted (0: adopted).
    pub submitted_at: Millis,
    /// Whether the scheduler listed it yet (a poll that started before
    /// the submission returned does not know it).
    pub seen: bool,
}

/// A job the scheduler never listed counts as gone only after this long.
const UNSEEN_GRACE_MS: Millis = 30_000;

/// The scaling policy's state.
#[derive(Debug, Clone)]
pub struct Provisioner {
    policy: Policy,
    jobs: BTreeMap<JobId, Job>,
    /// Submissions under way (no id yet).
    submitting: u32,
    /// Cores a job's host offers, once one registered.
    cores_per_host: Option<u32>,
    /// The last error of the provider, for reasons.
    last_error: Option<String>,
    /// Jobs in a row that ended before their host registered.
    failures: u32,
    /// No submission before this (backoff after failures).
    retry_at: Millis,
}

/// Longest pause between submissions after jobs that fail, ms.
pub const MAX_BACKOFF_MS: Millis = 300_000;

impl Provisioner {
    /// No jobs yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            jobs: BTreeMap::new(),
            submitting: 0,
            cores_per_host: None,
            last_error: None,
            failures: 0,
            retry_at: 0,
        }
    }

    /// The jobs tracked, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// The job of a host, if a tracked job registered it.
    pub fn job_of(&self, host: HostId) -> Option<&Job> {
        self.jobs.values().find(|j| j.host == Some(host))
    }

    /// A submission finished at `now`: its job, or why not.
    pub fn submitted(&mut self, now: Millis, result: Result<JobId, String>) {
        self.submitting = self.submitting.saturating_sub(1);
        match result {
            Ok(id) => {
                self.last_error = None;
                self.jobs.entry(id.clone()).or_insert(Job {
                    id,
                    state: JobState::Pending("submitted".into()),
                    host: None,
                    idle_since: None,
                    cancelling: false,
                    submitted_at: now,
                    seen: false,
                });
            }
            Err(e) => self.last_error = Some(e),
        }
    }

    /// A cancellation failed: try again later.
    pub fn cancel_failed(&mut self, job: &JobId, why: String) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.cancelling = false;
        }
        self.last_error = Some(why);
    }

    /// A host registered naming `job` (one of ours, or adopted).
    pub fn registered(&mut self, job: &JobId, host: HostId, cores: u32) {
        let j = self.jobs.entry(job.clone()).or_insert(Job {
            id: job.clone(),
            state: JobState::Running,
            host: None,
            idle_since: None,
            cancelling: false,
            submitted_at: 0,
            seen: true,
        });
        j.host = Some(host);
        j.state = JobState::Running;
        self.cores_per_host.get_or_insert(cores.max(1));
        self.failures = 0;
        self.retry_at = 0;
        self.last_error = None;
    }

    /// The scheduler's view of the live jobs at `now`: tracked jobs absent
    /// from it have ended and are forgotten. One that ended before its host
    /// registered (and was not cancelled) is a failure: submissions pause
    /// for 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF_MS`], so that a job that
    /// cannot start does not flood the scheduler.
    pub fn observed(&mut self, now: Millis, statuses: &[JobStatus]) {
        for s in statuses {
            if let Some(j) = self.jobs.get_mut(&s.id) {
                j.state = s.state.clone();
                j.seen = true;
            }
        }
        let gone: Vec<Job> = self
            .jobs
            .values()
            .filter(|j| match statuses.iter().any(|s| s.id == j.id) {
                true => matches!(j.state, JobState::Ended(_)),
                // Not listed: gone, unless the poll may predate it.
                false => j.seen || now.saturating_sub(j.submitted_at) > UNSEEN_GRACE_MS,
            })
            .cloned()
            .collect();
        for j in gone {
            self.jobs.remove(&j.id);
            if j.host.is_none() && !j.cancelling {
                self.failures = self.failures.saturating_add(1);
                let pause = 1000u64
                    .saturating_mul(1 << self.failures.min(20).saturating_sub(1))
                    .min(MAX_BACKOFF_MS);
                self.retry_at = now.saturating_add(pause);
                let how = match &j.state {
                    JobState::Ended(how) => how.clone(),
                    _ => "gone from the queue".into(),
                };
                self.last_error = Some(format!(
                    "job {} ended before its executor manager registered ({how}); {} in a row, next try in {} s",
                    j.id,
                    self.failures,
                    pause / 1000
                ));
            }
        }
    }

    /// What to do now, given the lease manager's state.
    pub fn plan(&mut self, now: Millis, mgr: &Manager) -> Vec<Action> {
        let mut actions = Vec::new();
        // Idleness of the registered jobs' hosts.
        for j in self.jobs.values_mut() {
            let busy = j
                .host
                .is_some_and(|h| mgr.state().active_on(h).next().is_some());
            let up = j.host.is_some_and(|h| mgr.host(h).is_some_and(|x| x.up));
            j.idle_since = match (up, busy) {
                (true, false) => Some(j.idle_since.unwrap_or(now)),
                _ => None,
            };
        }
        let live = self.jobs.values().filter(|j| !j.cancelling).count() as u32 + self.submitting;
        let unregistered = self
            .jobs
            .values()
            .filter(|j| !j.cancelling && j.host.is_none())
            .count() as u32
            + self.submitting;
        // Scale out: the cores waiting requests ask, in hosts.
        let per_host = u64::from(self.cores_per_host.unwrap_or(1));
        let waiting_cores: u64 = mgr
            .waiting()
            .filter(|t| self.cores_per_host.is_none_or(|c| t.request.cores <= c))
            .map(|t| u64::from(t.count) * u64::from(t.request.cores))
            .sum();
        let hosts_wanted = waiting_cores.div_ceil(per_host) as u32;
        let room = if now < self.retry_at {
            0
        } else {
            self.policy.max_hosts.saturating_sub(live)
        };
        let mut new = hosts_wanted.saturating_sub(unregistered).min(room);
        new = new.max(self.policy.min_hosts.saturating_sub(live).min(room));
        for _ in 0..new {
            actions.push(Action::Submit);
        }
        self.submitting += new;
        // Scale in: idle past the timeout, nothing waiting, above the minimum.
        if mgr.queue_depth() == 0 {
            let mut keep = live;
            let idle: Vec<JobId> = self
                .jobs
                .values()
                .filter(|j| !j.cancelling)
                .filter(|j| {
                    j.idle_since
                        .is_some_and(|t| now.saturating_sub(t) >= self.policy.idle_timeout_ms)
                })
                .map(|j| j.id.clone())
                .collect();
            for id in idle {
                if keep <= self.policy.min_hosts {
                    break;
                }
                keep -= 1;
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.cancelling = true;
                }
                actions.push(Action::Cancel(id));
            }
        }
        actions
    }

    /// When the next idle host's timeout falls, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.jobs
            .values()
            .filter(|j| !j.cancelling)
            .filter_map(|j| j.idle_since)
            .min()
            .map(|t| t.saturating_add(self.policy.idle_timeout_ms))
    }

    /// Why waiting requests wait on the provider's side, for tenants.
    pub fn reason(&self, provider: &str) -> Option<String> {
        if let Some(e) = &self.last_error {
            return Some(format!("{provider}: {e}"));
        }
        let pending: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.host.is_none() && !j.cancelling)
            .map(|j| match &j.state {
                JobState::Pending(r) => format!("job {} pending ({r})", j.id),
                JobState::Running => format!("job {} starting", j.id),
                JobState::Ended(r) => format!("job {} ended ({r})", j.id),
            })
            .collect();
        if pending.is_empty() && self.submitting == 0 {
            return None;
        }
        Some(format!(
            "hosts asked from {provider}: {}",
            if pending.is_empty() {
                "submitting".to_string()
            } else {
                pending.join(", ")
            }
        ))
    }
}

#[cfg(test)]
mod tests;
