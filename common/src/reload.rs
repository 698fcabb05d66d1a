//! SIGHUP reload, the same for both programs: the file is read again as at start, a file that
//! does not load changes nothing, and the outcome is logged with the same events
//! (`config.reload_requested`, `config.reload_failed`, `config.log_level_kept`). What a
//! reload applies is each program's own (`licsync_cp::reload`, `licsync_dp::reload`).

use std::fmt::Display;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{self, LevelReload, LogConfig};

/// At each SIGHUP, calls `load` and sends what it read to `reloads`; a failure is logged
/// (`config.reload_failed`) and nothing is sent.
pub async fn forward_sighup<T, E: Display>(
    load: impl Fn() -> Result<T, E>,
    reloads: mpsc::Sender<T>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(event = "config.reload_unavailable", reason = %e, "Cannot install the SIGHUP handler; configuration changes need a restart.");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!(
            event = "config.reload_requested",
            "SIGHUP received; reloading the configuration."
        );
        match load() {
            Ok(config) => {
                if reloads.send(config).await.is_err() {
                    return;
                }
            }
            Err(bad) => tracing::error!(
                event = "config.reload_failed",
                reason = %bad,
                "Configuration not reloaded; the running one stays in force. Fix the file and send SIGHUP again."
            ),
        }
    }
}

/// Calls `apply` with each configuration from `reloads` until `shutdown`.
pub async fn each<T>(
    mut reloads: mpsc::Receiver<T>,
    shutdown: CancellationToken,
    mut apply: impl FnMut(T),
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            next = reloads.recv() => match next {
                Some(config) => apply(config),
                None => return,
            },
        }
    }
}

/// Applies `log.level`; called after the reload's outcome is logged, so a reload to `warn`
/// still says that it happened.
pub fn apply_log_level(log: &LogConfig) {
    match telemetry::reload_level(log) {
        Ok(LevelReload::Applied(_) | LevelReload::NotInstalled) => {}
        Ok(LevelReload::KeptEnvironment) => tracing::info!(
            event = "config.log_level_kept",
            "LICSYNC_LOG is set and keeps precedence over log.level."
        ),
        // The configuration was validated; should the filter still fail, the old one stays.
        Err(bad) => {
            tracing::error!(event = "config.reload_failed", reason = %bad, "log.level not reloaded.")
        }
    }
}
