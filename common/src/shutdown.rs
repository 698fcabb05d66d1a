//! How both binaries stop: on SIGTERM or SIGINT, within one drain deadline.
//!
//! The contract is the same for the control plane and the agent (stop accepting, end streams,
//! flush storage, exit 0 within 10 s), so the signal handling and the deadline live here once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long draining may take after a signal before the process stops anyway: inside the
/// 10 s an orchestrator waits between SIGTERM and SIGKILL, with room for the last flush.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);

/// Cancels `shutdown` at the first SIGTERM or SIGINT, logs which (`<component>.signal`) and
/// tells systemd the process is stopping.
/// When the SIGTERM handler cannot be installed it says so
/// (`<component>.signal_handler_failed`) and waits for Ctrl-C alone.
pub async fn cancel_on_signal(component: &'static str, shutdown: CancellationToken) {
    let signal = wait_for_signal(component).await;
    let event = format!("{component}.signal");
    tracing::info!(
        event = event.as_str(),
        signal,
        "Signal received; shutting down."
    );
    crate::sd_notify::stopping();
    shutdown.cancel();
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
async fn wait_for_signal(component: &'static str) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let event = format!("{component}.signal_handler_failed");
            tracing::warn!(
                event = event.as_str(),
                "Cannot install the SIGTERM handler; only SIGINT (Ctrl-C) stops the process."
            );
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
