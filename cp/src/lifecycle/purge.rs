//! The purge task: every so often, removes the data planes [`crate::dataplanes::purge`] says
//! are gone for good, and logs `dataplane.purged` for each.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::unix_now;
use tokio_util::sync::CancellationToken;

use crate::model::DataPlaneRecord;
use crate::state::ControlPlane;

/// How often the registry is checked: a quarter of the delay, between 1 s and 1 h, so a purge
/// happens at most about a quarter of the delay late.
pub fn interval(delay: Duration) -> Duration {
    (delay / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Purges once, as of `now`; returns what was removed (already logged).
pub async fn purge_once(cp: &ControlPlane, now: i64) -> Vec<DataPlaneRecord> {
    let delay = cp.config().cluster.dataplane_purge_delay.0;
    let delay_s = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    match cp.dataplanes().purge(cp.started_at(), now, delay_s).await {
        Ok(purged) => {
            for record in &purged {
                tracing::info!(
                    event = "dataplane.purged",
                    dataplane.id = %record.id,
                    dataplane.name = %record.name,
                    last_seen = record.last_seen,
                    registered_at = record.registered_at,
                    purge_delay_s = delay_s,
                    "Removed a data plane not seen for longer than cluster.dataplane_purge_delay; it must register again."
                );
            }
            purged
        }
        Err(error) => {
            tracing::warn!(event = "dataplane.purge_failed", %error, "Could not purge long-silent data planes; retrying later.");
            Vec::new()
        }
    }
}

/// Runs [`purge_once`] every [`interval`] until `shutdown`.
pub async fn run(cp: Arc<ControlPlane>, shutdown: CancellationToken) {
    let every = interval(cp.config().cluster.dataplane_purge_delay.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        purge_once(&cp, unix_now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_often_enough_for_short_and_long_delays() {
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(
            interval(Duration::from_secs(14 * 86_400)),
            Duration::from_secs(3600)
        );
    }
}
