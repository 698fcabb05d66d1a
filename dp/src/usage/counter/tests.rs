//! The counters with a manual clock and a real file in a temp dir: month boundaries, flushes,
//! receipts and pruning, a wrong clock, and the bound on a month.

use std::sync::Arc;

use time::macros::datetime;

use super::*;
use crate::clock::ManualClock;

async fn open(dir: &std::path::Path, clock: &ManualClock) -> UsageCounter {
    let store = UsageStore::new(dir.join("usage.json"));
    UsageCounter::open(store, Arc::new(clock.clone()))
        .await
        .unwrap()
        .0
}

fn bucket(text: &str) -> UsageMonth {
    text.parse().unwrap()
}

#[tokio::test]
async fn counts_before_and_after_midnight_utc_on_the_first_land_in_different_months() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-30 23:59:59.500 UTC));
    let counter = open(dir.path(), &clock).await;
    assert_eq!(counter.add(5), Ok(Counted::Month(bucket("2026-11"))));
    clock.set(datetime!(2026-12-01 00:00:00 UTC));
    assert_eq!(counter.add(2), Ok(Counted::Month(bucket("2026-12"))));
    assert_eq!(counter.flush().await.unwrap(), 7);

    let reopened = open(dir.path(), &clock).await;
    assert_eq!(reopened.epoch(), counter.epoch());
    assert_eq!(
        reopened.report_counts(),
        [(bucket("2026-11"), 5), (bucket("2026-12"), 2)]
    );
    let snapshot = reopened.snapshot();
    let months: Vec<_> = snapshot
        .buckets
        .iter()
        .map(|b| b.bucket.to_string())
        .collect();
    assert_eq!(months, ["2026-12", "2026-11"], "newest first");
}

#[tokio::test]
async fn only_flushed_counts_are_reported_and_nothing_is_lost_while_a_flush_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    let mut flushed = counter.subscribe_flushed();
    counter.add(3).unwrap();
    assert!(counter.report_counts().is_empty(), "nothing durable yet");
    assert_eq!(counter.snapshot().unflushed, 3);
    assert_eq!(counter.flush().await.unwrap(), 3);
    assert!(flushed.has_changed().unwrap());
    flushed.mark_unchanged();
    counter.add(4).unwrap();
    assert_eq!(counter.report_counts(), [(bucket("2026-11"), 3)]);
    let snapshot = counter.snapshot();
    assert_eq!(
        (snapshot.buckets[0].request_count, snapshot.unflushed),
        (7, 4)
    );
    assert_eq!(counter.flush().await.unwrap(), 4);
    assert_eq!(counter.flush().await.unwrap(), 0, "nothing left to write");
    assert_eq!(counter.report_counts(), [(bucket("2026-11"), 7)]);
}

#[tokio::test]
async fn a_failed_flush_keeps_the_counts_in_memory_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(&data, &clock).await;
    counter.add(9).unwrap();
    // The data dir disappears under the agent and a file takes its place.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, b"").unwrap();
    let error = counter.flush().await.unwrap_err().to_string();
    assert!(error.contains("usage.json"), "{error}");
    let snapshot = counter.snapshot();
    assert_eq!(snapshot.unflushed, 9);
    assert!(snapshot.last_flush_error.is_some());
    std::fs::remove_file(&data).unwrap();
    assert_eq!(counter.flush().await.unwrap(), 9);
    assert_eq!(counter.report_counts(), [(bucket("2026-11"), 9)]);
    assert!(counter.snapshot().last_flush_error.is_none());
}

#[tokio::test]
async fn old_months_are_pruned_only_once_confirmed_and_thirteen_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2025-01-15 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    // One request a month for 15 months: 2025-01 .. 2026-03.
    for _ in 0..15 {
        counter.add(1).unwrap();
        counter.flush().await.unwrap();
        clock.advance(time::Duration::days(31));
    }
    clock.set(datetime!(2026-03-20 12:00 UTC));
    assert_eq!(
        counter.report_counts().len(),
        15,
        "unconfirmed months are kept"
    );
    let receipt: Vec<_> = counter.report_counts();
    assert_eq!(counter.record_receipt(&receipt), ReceiptCheck::default());
    counter.flush().await.unwrap();
    let kept: Vec<String> = counter
        .snapshot()
        .buckets
        .iter()
        .map(|b| b.bucket.to_string())
        .collect();
    assert_eq!(kept.len(), 13, "{kept:?}");
    assert_eq!(kept.first().unwrap(), "2026-03");
    assert_eq!(kept.last().unwrap(), "2025-03");
    // The receipts were saved with the counts.
    let reopened = open(dir.path(), &clock).await;
    assert!(
        reopened
            .snapshot()
            .buckets
            .iter()
            .all(|b| b.reported == Some(b.request_count))
    );
}

#[tokio::test]
async fn receipts_keep_the_highest_value_and_flag_a_control_plane_ahead_of_us() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    counter.add(10).unwrap();
    counter.flush().await.unwrap();
    let nov = bucket("2026-11");
    assert!(counter.record_receipt(&[(nov, 10)]).ahead.is_empty());
    // A reordered, older receipt does not lower what we know.
    counter.record_receipt(&[(nov, 4), (bucket("2020-01"), 1)]);
    assert_eq!(counter.snapshot().buckets[0].reported, Some(10));
    assert_eq!(counter.snapshot().unreported, 0);
    assert_eq!(counter.record_receipt(&[(nov, 12)]).ahead, [(nov, 10, 12)]);
    assert_eq!(counter.snapshot().report.reports_confirmed, 3);
}

/// A clock reset to 1970 (or any time outside 2000-01..2100-12): nothing is counted under that
/// month, nothing is lost, and once the clock is right the held requests land in the current
/// month, durably and exactly once, across a restart too.
#[tokio::test]
async fn a_wrong_clock_holds_the_counts_until_it_is_right_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(1970-01-01 00:00:05 UTC));
    let counter = open(dir.path(), &clock).await;
    assert_eq!(counter.add(4), Ok(Counted::Held));
    assert_eq!(counter.add(3), Ok(Counted::Held));
    let snapshot = counter.snapshot();
    assert!(
        snapshot.buckets.is_empty(),
        "nothing under 1970: {snapshot:?}"
    );
    assert_eq!((snapshot.held, snapshot.unflushed), (7, 7));
    assert!(
        snapshot
            .clock_error
            .as_deref()
            .is_some_and(|e| e.contains("1970-01 is outside")),
        "{snapshot:?}"
    );
    // Flushed while the clock is still wrong: held on disk, not under a month, not reported.
    assert_eq!(counter.flush().await.unwrap(), 0);
    assert_eq!(counter.snapshot().unflushed, 0);
    assert!(counter.report_counts().is_empty());
    let text = std::fs::read_to_string(dir.path().join("usage.json")).unwrap();
    assert!(!text.contains("1970"), "{text}");

    // A restart while the clock is still wrong keeps them.
    let counter = open(dir.path(), &clock).await;
    assert_eq!(counter.snapshot().held, 7);
    clock.set(datetime!(2026-11-10 12:00 UTC));
    assert_eq!(counter.add(1), Ok(Counted::Month(bucket("2026-11"))));
    assert_eq!(counter.snapshot().held, 0);
    assert_eq!(counter.flush().await.unwrap(), 8);
    assert_eq!(counter.report_counts(), [(bucket("2026-11"), 8)]);
    let reopened = open(dir.path(), &clock).await;
    assert_eq!(reopened.snapshot().held, 0, "moved, not copied");
    assert_eq!(reopened.report_counts(), [(bucket("2026-11"), 8)]);
}

/// An older agent left months outside the range in usage.json: they never block the others,
/// and their requests are counted once in the current month.
#[tokio::test]
async fn out_of_range_months_from_an_older_agent_are_held_and_counted_now() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = uuid::Uuid::new_v4();
    std::fs::write(
        dir.path().join("usage.json"),
        format!(
            r#"{{"format":1,"epoch":"{epoch}","created_at":1,"buckets":[
                {{"bucket":"1999-12","request_count":5}},
                {{"bucket":"2026-10","request_count":2}}]}}"#
        ),
    )
    .unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    assert_eq!(counter.epoch(), epoch.to_string());
    assert_eq!(counter.snapshot().held, 5);
    assert_eq!(counter.report_counts(), [(bucket("2026-10"), 2)]);
    assert_eq!(counter.flush().await.unwrap(), 5);
    assert_eq!(
        counter.report_counts(),
        [(bucket("2026-10"), 2), (bucket("2026-11"), 5)]
    );
    let text = std::fs::read_to_string(dir.path().join("usage.json")).unwrap();
    assert!(!text.contains("1999-12"), "{text}");
}

#[tokio::test]
async fn a_month_never_passes_the_bound_and_is_never_saturated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    let nov = bucket("2026-11");
    let step = MAX_MONTH_REQUESTS / 4;
    for _ in 0..3 {
        counter.add(step).unwrap();
    }
    counter.flush().await.unwrap();
    counter.add(step).unwrap();
    assert_eq!(
        counter.add(1),
        Err(CountError::MonthFull {
            month: nov,
            counted: MAX_MONTH_REQUESTS,
            requests: 1
        })
    );
    assert!(
        counter
            .add(u64::MAX)
            .unwrap_err()
            .to_string()
            .contains("would pass the bound of 1000000000000000 requests a month"),
    );
    counter.flush().await.unwrap();
    assert_eq!(counter.report_counts(), [(nov, MAX_MONTH_REQUESTS)]);
    // The next month starts afresh; what is held is bounded the same way.
    clock.set(datetime!(2026-12-01 00:00 UTC));
    assert_eq!(counter.add(1), Ok(Counted::Month(bucket("2026-12"))));
    clock.set(datetime!(1999-12-31 23:00 UTC));
    assert!(matches!(
        counter.add(u64::MAX),
        Err(CountError::HeldFull { held: 0, .. })
    ));
    assert_eq!(counter.snapshot().held, 0);
}

#[tokio::test]
async fn a_refused_bucket_is_not_sent_again_and_shows_why() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let counter = open(dir.path(), &clock).await;
    counter.add(3).unwrap();
    clock.set(datetime!(2026-12-10 12:00 UTC));
    counter.add(4).unwrap();
    counter.flush().await.unwrap();
    counter.record_refused(bucket("2026-11"), "no".into());
    assert_eq!(counter.report_counts(), [(bucket("2026-12"), 4)]);
    let snapshot = counter.snapshot();
    assert_eq!(snapshot.buckets[1].refused.as_deref(), Some("no"));
    assert_eq!(snapshot.buckets[1].request_count, 3, "kept, not dropped");
}
