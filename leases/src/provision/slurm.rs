//! Slurm as a [`HostProvider`]: `sbatch` a job that runs one executor
//! manager, `scancel` it, `squeue` the live ones (found by job name).

use std::process::Command;
use std::time::Duration;

use super::{HostProvider, JobId, JobState, JobStatus};

/// Bound on each Slurm command.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// Submits executor managers as Slurm jobs.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// The job name: how this lease manager finds its jobs (`rfx-em-...`).
    pub job_name: String,
    /// Operator's `sbatch` arguments (partition, account, time, CPUs...).
    pub sbatch_args: Vec<String>,
    /// The command each job runs (through `sh -c`): an executor manager
    /// that registers with this lease manager.
    pub command: String,
    /// Where the jobs' output goes (`%j` is the job id).
    pub output: String,
}

impl Slurm {
    /// The command a job runs: `rfx executor-manager` registering with
    /// `lease_manager`, listening on `ip` (any port; `$(hostname -I)`'s
    /// first address if `ip` is `None`), with the job's CPUs and `extra`
    /// arguments.
    pub fn executor_manager_command(
        rfx: &str,
        lease_manager: &str,
        ip: Option<&str>,
        extra: &[String],
    ) -> String {
        let ip = ip.map_or_else(
            || "$(hostname -I | cut -d' ' -f1)".to_string(),
            ToOwned::to_owned,
        );
        let mut cmd = format!(
            "exec {} executor-manager --lease-manager {} --listen {ip}:0 --cores ${{SLURM_CPUS_ON_NODE:-1}}",
            shell_quote(rfx),
            shell_quote(lease_manager)
        );
        for a in extra {
            cmd.push(' ');
            cmd.push_str(&shell_quote(a));
        }
        cmd
    }
}

/// `s` single-quoted for `sh`.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` for at most [`COMMAND_WAIT`]; its stdout, or why not.
fn run(cmd: &mut Command) -> Result<String, String> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > COMMAND_WAIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} took over {} s", COMMAND_WAIT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{name} failed ({}): {}", out.status, stderr.trim()));
    }
    Ok(stdout)
}

impl HostProvider for Slurm {
    fn name(&self) -> &str {
        "slurm"
    }

    fn submit(&self) -> Result<JobId, String> {
        let out = run(Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--job-name={}", self.job_name))
            .arg(format!("--output={}", self.output))
            .args(&self.sbatch_args)
            .arg(format!("--wrap={}", self.command)))?;
        // `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or("").to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
            return Err(format!("sbatch answered {:?}", out.trim()));
        }
        Ok(id)
    }

    fn cancel(&self, job: &JobId) -> Result<(), String> {
        run(Command::new("scancel").arg(job)).map(|_| ())
    }

    fn poll(&self) -> Result<Vec<JobStatus>, String> {
        let out = run(Command::new("squeue")
            .arg("--noheader")
            .arg(format!("--name={}", self.job_name))
            .arg("--format=%i|%T|%r"))?;
        Ok(out.lines().filter_map(parse_squeue_line).collect())
    }
}

/// One `%i|%T|%r` line of `squeue`.
fn parse_squeue_line(line: &str) -> Option<JobStatus> {
    let mut f = line.trim().split('|');
    let id = f.next()?.trim().to_owned();
    let state = f.next()?.trim();
    let reason = f.next().unwrap_or("").trim().to_owned();
    if id.is_empty() {
        return None;
    }
    let state = match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "RESV_DEL_HOLD" | "SUSPENDED" => {
            JobState::Pending(reason)
        }
        "RUNNING" | "COMPLETING" => JobState::Running,
        other => JobState::Ended(other.to_lowercase()),
    };
    Some(JobStatus { id, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_and_commands() {
        assert_eq!(
            parse_squeue_line("42|PENDING|Resources"),
            Some(JobStatus {
                id: "42".into(),
                state: JobState::Pending("Resources".into())
            })
        );
        assert_eq!(
            parse_squeue_line(" 7|RUNNING|None").map(|s| s.state),
            Some(JobState::Running)
        );
        assert_eq!(
            parse_squeue_line("9|FAILED|NonZeroExitCode").map(|s| s.state),
            Some(JobState::Ended("failed".into()))
        );
        assert_eq!(parse_squeue_line(""), None);
        let cmd = Slurm::executor_manager_command(
            "/opt/rfx bin/rfx",
            "10.0.0.1:7600",
            Some("127.0.0.1"),
            &["--sandbox".into(), "off".into()],
        );
        assert_eq!(
            cmd,
            "exec '/opt/rfx bin/rfx' executor-manager --lease-manager 10.0.0.1:7600 --listen 127.0.0.1:0 --cores ${SLURM_CPUS_ON_NODE:-1} --sandbox off"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
