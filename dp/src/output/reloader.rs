//! When the reload command runs: off the apply path, one run at a time, requests coalesced.
//!
//! The license file is written as soon as an update is applied; [`Reloader::request`] then
//! asks for a reload and returns at once. A reload that hangs therefore never holds back the
//! next license: it reaches the file immediately, and the reload for it runs once the current
//! run ends (however many licenses came meanwhile, one more run covers them all, since each run
//! makes the gateway read the newest file). [`Reloader::stop`] ends a run still going when the
//! agent stops, killing its process group, so no reload outlives the agent.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::reload::{ReloadCommand, ReloadOutcome};

/// Where the reloads stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadState {
    /// A run is going (or about to start).
    pub running: bool,
    /// Another run was asked for while one was going; it starts when that one ends.
    pub queued: bool,
    /// Runs that have ended since start, however they ended.
    pub runs: u64,
    /// Of those, the runs that failed (`license.reload_failed`): `GET /metrics`'
    /// `licsync_dp_reload_failures_total`.
    pub failures: u64,
}

/// Runs a [`ReloadCommand`] on request. Clones share the same queue.
#[derive(Debug, Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    command: ReloadCommand,
    state: watch::Sender<ReloadState>,
    stop: CancellationToken,
}

impl Reloader {
    pub fn new(command: ReloadCommand) -> Self {
        Self {
            inner: Arc::new(Inner {
                command,
                state: watch::Sender::new(ReloadState::default()),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Asks for a run: starts one now, or, while one is going, queues one for when it ends
    /// (a second request while one is queued adds nothing). Needs a tokio runtime.
    pub fn request(&self) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        let mut start = false;
        self.inner.state.send_modify(|state| {
            if state.running {
                state.queued = true;
            } else {
                state.running = true;
                start = true;
            }
        });
        if start {
            let span = tracing::Span::current();
            tokio::spawn(self.clone().run().instrument(span));
        } else {
            tracing::debug!(
                "A reload is still running; the next one starts when it ends, for the newest license."
            );
        }
    }

    /// Runs the command until no run is queued any more, or the reloader is stopped.
    async fn run(self) {
        loop {
            let failed = tokio::select! {
                biased;
                () = self.inner.stop.cancelled() => {
                    // Dropping the run kills the command's process group.
                    tracing::warn!(
                        event = "license.reload_failed",
                        reason = "the agent is stopping; the reload command was killed with every process it started",
                        "Reload command killed; the gateway may still use the previous license."
                    );
                    true
                }
                outcome = self.inner.command.run() => matches!(outcome, ReloadOutcome::Failed(_)),
            };
            let stopped = self.inner.stop.is_cancelled();
            let mut again = false;
            self.inner.state.send_modify(|state| {
                state.runs += 1;
                state.failures += u64::from(failed);
                again = state.queued && !stopped;
                state.queued = false;
                state.running = again;
            });
            if !again {
                return;
            }
        }
    }

    /// Where the reloads stand, updated as runs start and end.
    pub fn state(&self) -> watch::Receiver<ReloadState> {
        self.inner.state.subscribe()
    }

    /// Waits until no run is going or queued.
    pub async fn idle(&self) {
        let mut state = self.state();
        // Cannot fail: `self` holds the sender.
        let _ = state.wait_for(|s| !s.running).await;
    }

    /// Kills a run that is still going (with its process group), drops a queued one, refuses
    /// new requests, and waits until the run has ended.
    pub async fn stop(&self) {
        self.inner.stop.cancel();
        self.idle().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Each run appends a line to `log`, then waits for `gate` to exist (so a test decides
    /// when a run ends).
    fn gated(dir: &std::path::Path) -> (Reloader, std::path::PathBuf, std::path::PathBuf) {
        let log = dir.join("runs");
        let gate = dir.join("gate");
        let script = format!(
            "echo run >> '{}'; while [ ! -e '{}' ]; do sleep 0.01; done",
            log.display(),
            gate.display()
        );
        let command =
            ReloadCommand::new(&argv(&["/bin/sh", "-c", &script]), Duration::from_secs(60))
                .unwrap();
        (Reloader::new(command), log, gate)
    }

    fn runs_logged(log: &std::path::Path) -> usize {
        std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
    }

    #[tokio::test]
    async fn requests_during_a_run_coalesce_into_one_more_run() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, log, gate) = gated(dir.path());
        let mut state = reloader.state();
        reloader.request();
        // The first run has started (it logged itself) and now waits on the gate.
        while runs_logged(&log) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reloader.request();
        reloader.request();
        reloader.request();
        assert_eq!(
            *state.borrow_and_update(),
            ReloadState {
                running: true,
                queued: true,
                runs: 0,
                failures: 0
            }
        );
        std::fs::write(&gate, b"").unwrap();
        reloader.idle().await;
        assert_eq!(
            state.borrow().runs,
            2,
            "three requests during a run: one more run"
        );
        assert_eq!(runs_logged(&log), 2);
        assert!(!state.borrow().queued);
    }

    #[tokio::test]
    async fn stop_kills_a_running_reload_and_drops_the_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, log, _gate) = gated(dir.path());
        reloader.request();
        while runs_logged(&log) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reloader.request();
        // The gate never opens: only stop ends the run.
        reloader.stop().await;
        let state = *reloader.state().borrow();
        assert_eq!(
            state,
            ReloadState {
                running: false,
                queued: false,
                runs: 1,
                failures: 1
            }
        );
        reloader.request();
        assert!(!reloader.state().borrow().running, "refused once stopped");
        assert_eq!(runs_logged(&log), 1);
    }
}
