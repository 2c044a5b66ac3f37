//! How long the executor manager waits on executors and on the lease
//! manager: every wait is bounded.

use std::time::Duration;

/// How long an executor (or a standby) may take to say it is ready.
pub(crate) const START_WAIT: Duration = Duration::from_secs(30);

/// How long a killed executor may take to be reaped.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

/// Bound on each report to the lease manager.
pub(crate) const REPORT_WAIT: Duration = Duration::from_secs(5);

/// How long the output of an exited executor is read to its end.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(2);
