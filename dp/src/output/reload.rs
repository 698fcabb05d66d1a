//! `license.reload_command`: tells the gateway the license file changed.
//!
//! The command is an argv list run directly, never through a shell, so a path with spaces or
//! quotes cannot turn into something else. Its exit status is logged, and the tail of its
//! output when it fails.
//!
//! It runs in a process group of its own, and when it outlives its timeout, or the run is
//! abandoned (the agent stops), the whole group is killed: a script's background children
//! (`sh -c 'kong reload & wait'`) go with it instead of living on after the agent. A command
//! that exits in time is not chased further: what it left running on purpose (a daemon it
//! detached) is its business.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::Instrument;

/// How the reload command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    Succeeded,
    Failed(String),
}

/// A configured reload command.
#[derive(Debug, Clone)]
pub struct ReloadCommand {
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

/// Most output kept from a failed command.
const OUTPUT_TAIL: usize = 2048;

impl ReloadCommand {
    /// `None` for an empty argv (no reload).
    pub fn new(argv: &[String], timeout: Duration) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
            timeout,
        })
    }

    /// Runs the command to completion (or its timeout) and logs how it ended.
    pub async fn run(&self) -> ReloadOutcome {
        let span = tracing::info_span!("reload_command", program = %self.program);
        async {
            let outcome = self.run_inner().await;
            match &outcome {
                ReloadOutcome::Succeeded => {
                    tracing::info!(event = "license.reloaded", "Reload command succeeded.")
                }
                ReloadOutcome::Failed(reason) => tracing::warn!(
                    event = "license.reload_failed",
                    reason = %reason,
                    "Reload command failed; the gateway may still use the previous license."
                ),
            }
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_inner(&self) -> ReloadOutcome {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group (id = its pid), so everything it starts can be killed with it.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                return ReloadOutcome::Failed(format!(
                    "cannot start '{}': {e}; check license.reload_command",
                    self.program
                ));
            }
        };
        // Armed until the command ended on its own: a timeout, or this future being dropped
        // (the agent stopping), kills the whole group.
        let mut group = ProcessGroup(child.id());
        let waited = tokio::time::timeout(self.timeout, child.wait_with_output()).await;
        if waited.is_ok() {
            group.disarm();
        }
        match waited {
            Err(_) => ReloadOutcome::Failed(format!(
                "still running after {:?}; killed with every process it started (raise license.reload_timeout if it needs longer)",
                self.timeout
            )),
            Ok(Err(e)) => ReloadOutcome::Failed(format!("cannot wait for it: {e}")),
            Ok(Ok(output)) if output.status.success() => ReloadOutcome::Succeeded,
            Ok(Ok(output)) => {
                let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stdout));
                let text = text.trim();
                let mut start = text.len().saturating_sub(OUTPUT_TAIL);
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                let tail = &text[start..];
                ReloadOutcome::Failed(format!("exited with {}: {tail}", output.status))
            }
        }
    }
}

/// A running command's process group, killed (`SIGKILL`) when dropped unless disarmed.
///
/// The group's id cannot be reused while any of its members lives, so killing it reaches only
/// what the command started; once all of them are gone there is nothing left to kill.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(id) = self.0.and_then(|id| i32::try_from(id).ok()) else {
            return;
        };
        match killpg(Pid::from_raw(id), Signal::SIGKILL) {
            Ok(()) => tracing::debug!(pgid = id, "Killed the reload command's process group."),
            // Already gone.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pgid = id, %error, "Cannot kill the reload command's process group.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn reports_success_failure_and_timeout() {
        let ok = ReloadCommand::new(&argv(&["/bin/true"]), Duration::from_secs(5)).unwrap();
        assert_eq!(ok.run().await, ReloadOutcome::Succeeded);

        let failing = ReloadCommand::new(
            &argv(&["/bin/sh", "-c", "echo no kong here >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        let ReloadOutcome::Failed(reason) = failing.run().await else {
            panic!("a non-zero exit is a failure");
        };
        assert!(
            reason.contains("3") && reason.contains("no kong here"),
            "{reason}"
        );

        let slow =
            ReloadCommand::new(&argv(&["/bin/sleep", "30"]), Duration::from_millis(200)).unwrap();
        let ReloadOutcome::Failed(reason) = slow.run().await else {
            panic!("a command past its timeout is a failure");
        };
        assert!(reason.contains("killed"), "{reason}");

        let missing =
            ReloadCommand::new(&argv(&["/nonexistent/kong"]), Duration::from_secs(1)).unwrap();
        let ReloadOutcome::Failed(reason) = missing.run().await else {
            panic!("a missing program is a failure");
        };
        assert!(reason.contains("/nonexistent/kong"), "{reason}");
        assert!(ReloadCommand::new(&[], Duration::from_secs(1)).is_none());
    }

    /// A shell that records its pid and its background child's, then waits on both.
    fn forking(dir: &std::path::Path, timeout: Duration) -> (ReloadCommand, std::path::PathBuf) {
        let pids = dir.join("pids");
        let script = format!(
            "echo $$ >> '{0}'; sleep 600 & echo $! >> '{0}'; sleep 600",
            pids.display()
        );
        let cmd = ReloadCommand::new(&argv(&["/bin/sh", "-c", &script]), timeout).unwrap();
        (cmd, pids)
    }

    fn pids(path: &std::path::Path) -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Running (a zombie waiting for its parent to reap it counts as gone).
    pub(crate) fn alive(pid: i32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    }

    async fn all_gone(pids: &[i32]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while pids.iter().any(|&pid| alive(pid)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running: {:?}",
                pids.iter().filter(|&&pid| alive(pid)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_command_started_too() {
        let dir = tempfile::tempdir().unwrap();
        let (cmd, path) = forking(dir.path(), Duration::from_secs(2));
        let ReloadOutcome::Failed(reason) = cmd.run().await else {
            panic!("a command past its timeout is a failure");
        };
        assert!(reason.contains("killed"), "{reason}");
        let pids = pids(&path);
        assert_eq!(
            pids.len(),
            2,
            "the shell and its background sleep: {pids:?}"
        );
        all_gone(&pids).await;
    }

    #[tokio::test]
    async fn an_abandoned_run_kills_what_the_command_started() {
        let dir = tempfile::tempdir().unwrap();
        let (cmd, path) = forking(dir.path(), Duration::from_secs(600));
        let run = tokio::spawn(async move { cmd.run().await });
        while pids(&path).len() < 2 {
            assert!(!run.is_finished());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pids = pids(&path);
        assert!(pids.iter().all(|&pid| alive(pid)), "{pids:?}");
        run.abort();
        assert!(run.await.unwrap_err().is_cancelled());
        all_gone(&pids).await;
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a b; touch pwned");
        let cmd = ReloadCommand::new(
            &argv(&["/usr/bin/touch", target.to_str().unwrap()]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(cmd.run().await, ReloadOutcome::Succeeded);
        assert!(target.exists());
        assert!(!std::path::Path::new("pwned").exists());
    }
}
