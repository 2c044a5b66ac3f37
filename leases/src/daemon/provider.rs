//! The lease manager's side of elastic capacity: the [`Provisioner`]'s
//! actions carried out through a [`HostProvider`] on blocking threads
//! (sbatch and friends take their time), their results fed back to the
//! core as events, and the scheduler polled for its jobs' states.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::proto::{HostId, Manager, Millis};
use crate::provision::{Action, HostProvider, JobId, JobState, JobStatus, Policy, Provisioner};
use crate::wire::JobInfo;

/// A provider and its policy, for [`DaemonConfig::provider`](super::DaemonConfig::provider).
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The scheduler.
    pub provider: Arc<dyn HostProvider>,
    /// The bounds.
    pub policy: Policy,
    /// How often the scheduler is asked for its jobs' states.
    pub poll_every: Duration,
}

/// What came back from a provider call.
#[derive(Debug)]
pub(super) enum ProviderEvent {
    Submitted(Result<JobId, String>),
    CancelFailed(JobId, String),
    Observed(Result<Vec<JobStatus>, String>),
}

#[derive(Debug)]
pub(super) struct Driver {
    cfg: ProviderConfig,
    prov: Provisioner,
    tx: mpsc::UnboundedSender<ProviderEvent>,
    pub(super) rx: mpsc::UnboundedReceiver<ProviderEvent>,
    polling: bool,
    last_poll: Option<Instant>,
}

impl Driver {
    pub(super) fn new(cfg: ProviderConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            prov: Provisioner::new(cfg.policy.clone()),
            cfg,
            tx,
            rx,
            polling: false,
            last_poll: None,
        }
    }

    /// Carries out what the policy says now.
    pub(super) fn act(&mut self, now: Millis, mgr: &Manager) {
        for action in self.prov.plan(now, mgr) {
            let (p, tx) = (Arc::clone(&self.cfg.provider), self.tx.clone());
            match action {
                Action::Submit => {
                    tracing::info!(provider = p.name(), "asking for a host");
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(ProviderEvent::Submitted(p.submit()));
                    });
                }
                Action::Cancel(job) => {
                    tracing::info!(provider = p.name(), %job, "giving back an idle host");
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = p.cancel(&job) {
                            let _ = tx.send(ProviderEvent::CancelFailed(job, e));
                        }
                    });
                }
            }
        }
        if !self.polling
            && self
                .last_poll
                .is_none_or(|t| t.elapsed() >= self.cfg.poll_every)
        {
            self.polling = true;
            self.last_poll = Some(Instant::now());
            let (p, tx) = (Arc::clone(&self.cfg.provider), self.tx.clone());
            tokio::task::spawn_blocking(move || {
                let _ = tx.send(ProviderEvent::Observed(p.poll()));
            });
        }
    }

    pub(super) fn on_event(&mut self, ev: ProviderEvent) {
        let name = self.cfg.provider.name().to_owned();
        match ev {
            ProviderEvent::Submitted(r) => {
                match &r {
                    Ok(job) => tracing::info!(provider = %name, %job, "job submitted"),
                    Err(e) => tracing::warn!(provider = %name, "submission failed: {e}"),
                }
                self.prov.submitted(super::now_ms(), r);
            }
            ProviderEvent::CancelFailed(job, e) => {
                tracing::warn!(provider = %name, %job, "cancel failed: {e}");
                self.prov.cancel_failed(&job, e);
            }
            ProviderEvent::Observed(Ok(jobs)) => {
                self.polling = false;
                self.prov.observed(super::now_ms(), &jobs);
            }
            ProviderEvent::Observed(Err(e)) => {
                self.polling = false;
                tracing::warn!(provider = %name, "polling the jobs failed: {e}");
            }
        }
    }

    pub(super) fn registered(&mut self, job: &JobId, host: HostId, cores: u32) {
        tracing::info!(%job, %host, "a provided host registered");
        self.prov.registered(job, host, cores);
    }

    /// When the driver next has work without an input: the next poll or
    /// idle timeout.
    pub(super) fn next_wake(&self, now: Millis) -> Duration {
        let poll = self.last_poll.map_or(Duration::ZERO, |t| {
            self.cfg.poll_every.saturating_sub(t.elapsed())
        });
        let idle = self
            .prov
            .next_deadline()
            .map_or(poll, |d| Duration::from_millis(d.saturating_sub(now)));
        poll.min(idle).max(Duration::from_millis(10))
    }

    /// Why waiting requests wait on the scheduler's side.
    pub(super) fn reason(&self) -> Option<String> {
        self.prov.reason(self.cfg.provider.name())
    }

    pub(super) fn jobs(&self) -> Vec<JobInfo> {
        self.prov
            .jobs()
            .map(|j| JobInfo {
                job: j.id.clone(),
                state: if j.cancelling {
                    "cancelling".into()
                } else {
                    match &j.state {
                        JobState::Pending(r) => format!("pending ({r})"),
                        JobState::Running => "running".into(),
                        JobState::Ended(r) => format!("ended ({r})"),
                    }
                },
                host: j.host,
                idle_since_ms: j.idle_since,
            })
            .collect()
    }
}
