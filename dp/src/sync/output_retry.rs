//! Keeps trying the license file while it cannot be written, connected or not.
//!
//! An update whose file cannot be written is still persisted (the licenses are good) and
//! answered with a retry `Nack`; from then on this task writes the file again with backoff
//! (`sync.backoff_initial` doubling up to `sync.backoff_max`), so once the operator fixes the
//! directory the license appears without a restart. The control plane's next retry of the
//! update is then acknowledged and its `sync_status` goes back to `normal`.

use tokio_util::sync::CancellationToken;

use super::{Applier, Backoff};

/// With `license.prefer_in_force` the license served depends on the date: when the newest one
/// expires at the end of its day, an older one still in force takes over. This writes the
/// file again just after each UTC midnight (a write that changes nothing is skipped), until
/// `shutdown`. Without the option the choice never depends on the date and this returns.
pub(super) async fn at_day_change(applier: Applier, shutdown: CancellationToken) {
    if applier.output.is_none() || !applier.rule.prefer_in_force {
        return;
    }
    loop {
        let wait = until_next_utc_day(time::OffsetDateTime::now_utc());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A failure is recorded and retried by [`run`].
        let _ = applier.retry_output().await;
    }
}

/// From `now` to one second into the next UTC day.
fn until_next_utc_day(now: time::OffsetDateTime) -> std::time::Duration {
    let now = now.to_offset(time::UtcOffset::UTC);
    let next = now
        .date()
        .next_day()
        .map_or(now, |day| day.midnight().assume_utc());
    let wait = (next - now).whole_milliseconds().max(0) as u64 + 1000;
    std::time::Duration::from_millis(wait)
}

/// Runs until `shutdown` is cancelled.
pub(super) async fn run(applier: Applier, mut backoff: Backoff, shutdown: CancellationToken) {
    if applier.output.is_none() {
        return;
    }
    let mut status = applier.status.subscribe();
    loop {
        if status.borrow_and_update().license_file_in_line {
            backoff.reset();
        }
        let out_of_line = async {
            status
                .wait_for(|s| s.state_loaded && !s.license_file_in_line)
                .await
                .is_ok()
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            waiting = out_of_line => if !waiting { return },
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        if let Err(error) = applier.retry_output().await {
            tracing::debug!(%error, "The license file still cannot be written.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::output::LicenseFile;
    use crate::state::{DpState, HeldLicense, MemoryStateStore};
    use crate::sync::SyncStatus;

    #[test]
    fn the_day_changes_one_second_after_utc_midnight() {
        use time::macros::datetime;
        assert_eq!(
            until_next_utc_day(datetime!(2026-12-01 23:59:59 UTC)),
            Duration::from_secs(2)
        );
        assert_eq!(
            until_next_utc_day(datetime!(2026-12-01 00:00:00 +01:00)),
            Duration::from_secs(3600 + 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_file_appears_once_its_directory_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("kong");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let path = blocker.join("license.json");
        let mut state = DpState::default();
        state.upsert(HeldLicense {
            id: "a".into(),
            document: "{\"license\":{}}".into(),
            created_at: 1,
            updated_at: 1,
            revision: 1,
        });
        let applier = Applier {
            store: Arc::new(MemoryStateStore::default()),
            output: Some(LicenseFile::new(&path, &[], Duration::from_secs(1))),
            keys: licsync_common::license::TrustedKeys::default(),
            follow_control_plane_keys: false,
            rule: crate::state::ActiveRule::default(),
            state: watch::channel(Arc::new(state.clone())).0,
            status: watch::channel(SyncStatus {
                state_loaded: true,
                ..SyncStatus::default()
            })
            .0,
        };
        assert!(applier.bring_output_in_line(&state).await.is_err());
        let mut status = applier.status.subscribe();
        let shutdown = CancellationToken::new();
        let backoff = Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(8),
            fastrand::Rng::with_seed(7),
        );
        let task = tokio::spawn(run(applier.clone(), backoff, shutdown.clone()));

        // A minute of (paused) time of retries: the file cannot appear.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!path.exists());
        assert!(!status.borrow_and_update().license_file_in_line);

        std::fs::remove_file(&blocker).unwrap();
        let fixed = status
            .wait_for(|s| s.license_file_in_line)
            .await
            .unwrap()
            .clone();
        assert_eq!(fixed.license_file_error, None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"license\":{}}");
        shutdown.cancel();
        task.await.unwrap();
    }
}
