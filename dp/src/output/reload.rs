//! `license.reload_command`: tells the gateway the license file changed.
//!
//! The command is an argv list run directly, never through a shell, so a path with spaces or
//! quotes cannot turn into something else. It is killed when it outlives its timeout; its exit
//! status is logged, and the tail of its output when it fails.

use std::process::Stdio;
use std::time::Duration;

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
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => ReloadOutcome::Failed(format!(
                "still running after {:?}; killed (raise license.reload_timeout if it needs longer)",
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
