//! [`UsageCounter`]: the agent's request counters, per UTC month, in memory and on disk.
//!
//! Counting is the hot path (`POST /usage`, every statsd datagram), so [`UsageCounter::add`]
//! only takes a mutex and adds to an in-memory map: no disk I/O per request. Increments are
//! made durable in batches by [`UsageCounter::flush`] (every `usage.flush_interval`, and once
//! more on a clean shutdown), which rewrites `usage.json` atomically. A power loss can cost at
//! most the increments of the last flush interval; a SIGTERM costs none.
//!
//! Only **flushed** counts are ever reported ([`UsageCounter::report_counts`]). Were unflushed
//! counts reported, a crash right after would restart the agent below what the control plane
//! already holds for this epoch; since the control plane keeps the maximum per bucket, the
//! requests counted after the restart would be absorbed by that gap and never billed.
//! Reporting flushed counts only keeps every report at or below what a restart resumes from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::store::{BucketTotals, UsageFile, UsageStore, UsageStoreError};
use super::{Bucket, RETAINED_MONTHS};
use crate::clock::SharedClock;

/// Most buckets sent in one report.
pub const MAX_BUCKETS_PER_REPORT: usize = 64;

/// A handle to the counters; clones share them.
#[derive(Clone)]
pub struct UsageCounter {
    shared: Arc<Shared>,
}

struct Shared {
    clock: SharedClock,
    store: UsageStore,
    epoch: String,
    created_at: i64,
    counts: Mutex<Counts>,
    /// One flush at a time: a flush computes the next file from the last one written.
    flush_lock: tokio::sync::Mutex<()>,
    /// Bumped after each flush that made new counts durable; the reporter waits on it.
    flushed: watch::Sender<u64>,
}

#[derive(Default)]
struct Counts {
    /// Counted, not yet on disk.
    pending: BTreeMap<Bucket, u64>,
    /// What `usage.json` holds (counts) plus the control plane's latest receipts.
    persisted: BTreeMap<Bucket, BucketTotals>,
    /// A receipt raised a `reported` value that is not on disk yet.
    receipts_unsaved: bool,
    last_flush: Option<i64>,
    last_flush_error: Option<String>,
    report: ReportStatus,
}

/// How reporting to the control plane is going, for `GET /usage` and `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReportStatus {
    /// Unix seconds of the last receipt from the control plane.
    pub last_report_at: Option<i64>,
    /// Why the last attempt failed, in operator words; `None` after a success.
    pub last_error: Option<String>,
    /// Receipts received since start.
    pub reports_confirmed: u64,
}

/// One bucket as `GET /usage` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BucketView {
    pub bucket: Bucket,
    /// Everything counted: durable plus not yet flushed.
    pub request_count: u64,
    /// Counted but not yet flushed to disk.
    pub unflushed: u64,
    /// What the control plane confirmed holding, if it did.
    pub reported: Option<u64>,
}

/// The counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageSnapshot {
    pub epoch: String,
    /// Unix seconds when the epoch began.
    pub epoch_created_at: i64,
    /// Newest first.
    pub buckets: Vec<BucketView>,
    /// Requests counted and not yet durable.
    pub unflushed: u64,
    /// Durable requests the control plane has not confirmed yet.
    pub unreported: u64,
    pub last_flush: Option<i64>,
    pub last_flush_error: Option<String>,
    pub report: ReportStatus,
}

/// What a receipt told us beyond "recorded".
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReceiptCheck {
    /// Buckets where the control plane holds more than this agent ever counted for the epoch:
    /// the data dir was restored from an older copy (or shared by two agents).
    pub ahead: Vec<(Bucket, u64, u64)>,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UsageCounter {
    /// Opens the counters in `store`, creating a new epoch when there is no file yet.
    /// Returns the counter and whether the epoch is new.
    pub async fn open(
        store: UsageStore,
        clock: SharedClock,
    ) -> Result<(Self, bool), UsageStoreError> {
        let now = clock.now().unix_timestamp();
        let (file, created) = store.load_or_create(now).await?;
        let UsageFile {
            epoch,
            created_at,
            buckets,
            ..
        } = file;
        let counts = Counts {
            persisted: buckets,
            ..Counts::default()
        };
        let (flushed, _) = watch::channel(0);
        let shared = Shared {
            clock,
            store,
            epoch,
            created_at,
            counts: Mutex::new(counts),
            flush_lock: tokio::sync::Mutex::new(()),
            flushed,
        };
        Ok((
            Self {
                shared: Arc::new(shared),
            },
            created,
        ))
    }

    /// The epoch this agent counts under.
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// Counts `requests` in the current UTC month; returns that month. Memory only.
    pub fn add(&self, requests: u64) -> Bucket {
        let bucket = Bucket::of(self.shared.clock.now());
        let mut counts = lock(&self.shared.counts);
        let slot = counts.pending.entry(bucket).or_insert(0);
        *slot = slot.saturating_add(requests);
        bucket
    }

    /// A receiver that changes after each flush that made new counts durable.
    pub fn subscribe_flushed(&self) -> watch::Receiver<u64> {
        self.shared.flushed.subscribe()
    }

    /// Makes everything counted so far durable (and receipts not saved yet). Returns how many
    /// requests were written. On failure nothing is lost from memory: the next flush retries.
    ///
    /// Old buckets are pruned here: those more than [`RETAINED_MONTHS`] months old, and only
    /// once the control plane has confirmed everything in them.
    pub async fn flush(&self) -> Result<u64, UsageStoreError> {
        let _one_at_a_time = self.shared.flush_lock.lock().await;
        let current = Bucket::of(self.shared.clock.now());
        let (file, taken) = {
            let mut counts = lock(&self.shared.counts);
            if counts.pending.is_empty() && !counts.receipts_unsaved {
                return Ok(0);
            }
            let taken = counts.pending.clone();
            let mut next = counts.persisted.clone();
            for (bucket, requests) in &taken {
                let totals = next.entry(*bucket).or_default();
                totals.request_count = totals.request_count.saturating_add(*requests);
            }
            next.retain(|bucket, totals| {
                bucket.months_before(current) < RETAINED_MONTHS || !totals.confirmed()
            });
            counts.receipts_unsaved = false;
            let file = UsageFile {
                format: super::store::USAGE_FORMAT,
                epoch: self.shared.epoch.clone(),
                created_at: self.shared.created_at,
                buckets: next,
            };
            (file, taken)
        };
        let result = self.shared.store.save(&file).await;
        let mut counts = lock(&self.shared.counts);
        if let Err(error) = result {
            counts.receipts_unsaved = true;
            counts.last_flush_error = Some(error.to_string());
            return Err(error);
        }
        let mut written = 0u64;
        for (bucket, requests) in &taken {
            written = written.saturating_add(*requests);
            if let Some(left) = counts.pending.get_mut(bucket) {
                *left -= (*left).min(*requests);
                if *left == 0 {
                    counts.pending.remove(bucket);
                }
            }
        }
        // Counts change only here (one flush at a time); receipts may have arrived meanwhile.
        let previous = std::mem::take(&mut counts.persisted);
        counts.persisted = file
            .buckets
            .into_iter()
            .map(|(bucket, mut totals)| {
                let receipt = previous.get(&bucket).and_then(|t| t.reported);
                totals.reported = totals.reported.max(receipt);
                (bucket, totals)
            })
            .collect();
        counts.last_flush = Some(self.shared.clock.now().unix_timestamp());
        counts.last_flush_error = None;
        drop(counts);
        if written > 0 {
            self.shared
                .flushed
                .send_modify(|generation| *generation += 1);
        }
        Ok(written)
    }

    /// The durable cumulative counts to report, at most [`MAX_BUCKETS_PER_REPORT`]: buckets
    /// the control plane has not confirmed first (oldest first), then the confirmed ones
    /// (newest first), so nothing unconfirmed is starved and a control plane restored from a
    /// backup relearns the recent months. Empty when nothing was ever flushed.
    pub fn report_counts(&self) -> Vec<(Bucket, u64)> {
        let counts = lock(&self.shared.counts);
        let unconfirmed = counts.persisted.iter().filter(|(_, t)| !t.confirmed());
        let confirmed = counts.persisted.iter().rev().filter(|(_, t)| t.confirmed());
        unconfirmed
            .chain(confirmed)
            .take(MAX_BUCKETS_PER_REPORT)
            .map(|(bucket, totals)| (*bucket, totals.request_count))
            .collect()
    }

    /// Records what the control plane says it holds (its receipt), keeping the highest value
    /// seen per bucket. Unknown buckets are ignored.
    pub fn record_receipt(&self, recorded: &[(Bucket, u64)]) -> ReceiptCheck {
        let mut check = ReceiptCheck::default();
        let now = self.shared.clock.now().unix_timestamp();
        let mut counts = lock(&self.shared.counts);
        let mut raised = false;
        for (bucket, held) in recorded {
            let Some(totals) = counts.persisted.get_mut(bucket) else {
                continue;
            };
            if *held > totals.request_count {
                check.ahead.push((*bucket, totals.request_count, *held));
            }
            if totals.reported.is_none_or(|r| r < *held) {
                totals.reported = Some(*held);
                raised = true;
            }
        }
        counts.receipts_unsaved |= raised;
        counts.report.last_report_at = Some(now);
        counts.report.last_error = None;
        counts.report.reports_confirmed += 1;
        check
    }

    /// Records why the last report did not get through.
    pub fn report_failed(&self, reason: String) {
        lock(&self.shared.counts).report.last_error = Some(reason);
    }

    /// The counters now, for the local API.
    pub fn snapshot(&self) -> UsageSnapshot {
        let counts = lock(&self.shared.counts);
        let mut merged: BTreeMap<Bucket, BucketView> = BTreeMap::new();
        let mut unreported = 0u64;
        for (bucket, totals) in &counts.persisted {
            unreported = unreported.saturating_add(
                totals.request_count - totals.reported.unwrap_or(0).min(totals.request_count),
            );
            merged.insert(
                *bucket,
                BucketView {
                    bucket: *bucket,
                    request_count: totals.request_count,
                    unflushed: 0,
                    reported: totals.reported,
                },
            );
        }
        let mut unflushed = 0u64;
        for (bucket, requests) in &counts.pending {
            unflushed = unflushed.saturating_add(*requests);
            let view = merged.entry(*bucket).or_insert(BucketView {
                bucket: *bucket,
                request_count: 0,
                unflushed: 0,
                reported: None,
            });
            view.request_count = view.request_count.saturating_add(*requests);
            view.unflushed = *requests;
        }
        UsageSnapshot {
            epoch: self.shared.epoch.clone(),
            epoch_created_at: self.shared.created_at,
            buckets: merged.into_values().rev().collect(),
            unflushed,
            unreported,
            last_flush: counts.last_flush,
            last_flush_error: counts.last_flush_error.clone(),
            report: counts.report.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn bucket(text: &str) -> Bucket {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn counts_before_and_after_midnight_utc_on_the_first_land_in_different_months() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(datetime!(2026-11-30 23:59:59.500 UTC));
        let counter = open(dir.path(), &clock).await;
        assert_eq!(counter.add(5), bucket("2026-11"));
        clock.set(datetime!(2026-12-01 00:00:00 UTC));
        assert_eq!(counter.add(2), bucket("2026-12"));
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
        counter.add(3);
        assert!(counter.report_counts().is_empty(), "nothing durable yet");
        assert_eq!(counter.snapshot().unflushed, 3);
        assert_eq!(counter.flush().await.unwrap(), 3);
        assert!(flushed.has_changed().unwrap());
        flushed.mark_unchanged();
        counter.add(4);
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
        counter.add(9);
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
            counter.add(1);
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
        counter.add(10);
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
}
