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
//!
//! # A wrong clock and the bound
//! Requests are counted only under months the control plane accepts ([`UsageMonth`]). While the
//! clock reads a time outside them (1970 after a reset, before NTP has answered), requests are
//! **held**: kept without a month (in memory, and in `usage.json` at the next flush), shown in
//! `GET /usage`, logged (`usage.clock_invalid`, once a minute), and counted in the current
//! month as soon as the clock is right. Held rather than refused, because a gateway does not
//! retry a refused count (a log plugin or a statsd line is fire-and-forget): refusing would
//! lose it. A wrong clock is almost always the first minutes after boot, so the month the
//! clock shows once it is right is the month the requests were served in. Months outside the
//! range that an older agent left in `usage.json` were never stored by any control plane (it
//! refused them), so they are held the same way, with no double count.
//!
//! No month (and no held total) may pass [`MAX_MONTH_REQUESTS`]: an increment that would is
//! refused ([`CountError`]), never saturated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use licsync_common::usage_month::{MAX_MONTH_REQUESTS, UsageMonth};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::store::{BucketTotals, UsageFile, UsageStore, UsageStoreError};
use super::{LogThrottle, RETAINED_MONTHS};
use crate::clock::SharedClock;

mod view;

pub use view::{BucketView, ReportStatus, UsageSnapshot};

/// Most buckets sent in one report.
pub const MAX_BUCKETS_PER_REPORT: usize = 64;

/// How often at most a wrong clock is logged.
const CLOCK_LOG_PERIOD: Duration = Duration::from_secs(60);

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

struct Counts {
    /// Counted, not yet on disk.
    pending: BTreeMap<UsageMonth, u64>,
    /// What `usage.json` holds (counts) plus the control plane's latest receipts.
    persisted: BTreeMap<UsageMonth, BucketTotals>,
    /// Counted under no month (the clock was wrong), on disk or not.
    held: u64,
    /// How much of `held` the last written file holds.
    held_on_disk: u64,
    /// Buckets the control plane refused, with its reason: not sent again while running.
    refused: BTreeMap<UsageMonth, String>,
    /// A receipt raised a `reported` value that is not on disk yet.
    receipts_unsaved: bool,
    last_flush: Option<i64>,
    last_flush_error: Option<String>,
    report: ReportStatus,
    clock_log: LogThrottle,
}

/// Where [`UsageCounter::add`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// In this month.
    Month(UsageMonth),
    /// Held: the clock is outside the usage months.
    Held,
}

/// An increment that was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountError {
    #[error(
        "{month} already counts {counted} requests; {requests} more would pass the bound of {MAX_MONTH_REQUESTS} requests a month, so they were not counted"
    )]
    MonthFull {
        month: UsageMonth,
        counted: u64,
        requests: u64,
    },
    #[error(
        "{held} requests are already held while the clock is wrong; {requests} more would pass the bound of {MAX_MONTH_REQUESTS}, so they were not counted; set the clock right"
    )]
    HeldFull { held: u64, requests: u64 },
}

/// What a receipt told us beyond "recorded".
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReceiptCheck {
    /// Buckets where the control plane holds more than this agent ever counted for the epoch:
    /// the data dir was restored from an older copy (or shared by two agents).
    pub ahead: Vec<(UsageMonth, u64, u64)>,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `counted + more` when that stays within the bound.
fn within_bound(counted: u64, more: u64) -> Option<u64> {
    counted
        .checked_add(more)
        .filter(|total| *total <= MAX_MONTH_REQUESTS)
}

impl Counts {
    /// Everything counted in `month`: durable plus pending. Only compared with the bound (a
    /// count that an older agent saturated on disk reads as full), never stored.
    fn counted(&self, month: UsageMonth) -> u64 {
        let durable = self.persisted.get(&month).map_or(0, |t| t.request_count);
        let pending = self.pending.get(&month).copied().unwrap_or(0);
        durable.saturating_add(pending)
    }

    /// Moves what is held into `month` (a month a right clock shows), as far as the bound
    /// allows. Returns how many requests moved.
    fn settle_held(&mut self, month: UsageMonth) -> u64 {
        let room = MAX_MONTH_REQUESTS.saturating_sub(self.counted(month));
        let moved = self.held.min(room);
        if moved > 0 {
            self.held -= moved;
            *self.pending.entry(month).or_insert(0) += moved;
        }
        moved
    }
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
            held,
            out_of_range,
            ..
        } = file;
        let mut counts = Counts {
            pending: BTreeMap::new(),
            persisted: buckets,
            held,
            held_on_disk: held,
            refused: BTreeMap::new(),
            receipts_unsaved: !out_of_range.is_empty(),
            last_flush: None,
            last_flush_error: None,
            report: ReportStatus::default(),
            clock_log: LogThrottle::new(CLOCK_LOG_PERIOD),
        };
        for (bucket, totals) in out_of_range {
            hold_out_of_range(&mut counts, &bucket, totals, &epoch);
        }
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

    /// Counts `requests` in the current UTC month, or holds them while the clock is outside
    /// the usage months. Memory only. Refused when the month (or what is held) would pass
    /// [`MAX_MONTH_REQUESTS`].
    pub fn add(&self, requests: u64) -> Result<Counted, CountError> {
        let now = self.shared.clock.now();
        let mut counts = lock(&self.shared.counts);
        let Ok(month) = UsageMonth::of(now) else {
            let held = counts.held;
            counts.held =
                within_bound(held, requests).ok_or(CountError::HeldFull { held, requests })?;
            let log = counts
                .clock_log
                .allow()
                .map(|suppressed| (suppressed, counts.held));
            drop(counts);
            if let Some((suppressed, held)) = log {
                log_clock_invalid(now, held, suppressed);
            }
            return Ok(Counted::Held);
        };
        if counts.held > 0 {
            let moved = counts.settle_held(month);
            log_settled(moved, month);
        }
        let counted = counts.counted(month);
        within_bound(counted, requests).ok_or(CountError::MonthFull {
            month,
            counted,
            requests,
        })?;
        *counts.pending.entry(month).or_insert(0) += requests;
        Ok(Counted::Month(month))
    }

    /// A receiver that changes after each flush that made new counts durable.
    pub fn subscribe_flushed(&self) -> watch::Receiver<u64> {
        self.shared.flushed.subscribe()
    }

    /// Makes everything counted so far durable (and receipts not saved yet). Returns how many
    /// requests were written under a month. On failure nothing is lost from memory: the next
    /// flush retries.
    ///
    /// Old buckets are pruned here: those more than [`RETAINED_MONTHS`] months old, and only
    /// once the control plane has confirmed everything in them; never while the clock is wrong.
    pub async fn flush(&self) -> Result<u64, UsageStoreError> {
        let _one_at_a_time = self.shared.flush_lock.lock().await;
        let current = UsageMonth::of(self.shared.clock.now()).ok();
        let (file, taken) = {
            let mut counts = lock(&self.shared.counts);
            if let Some(month) = current.filter(|_| counts.held > 0) {
                let moved = counts.settle_held(month);
                log_settled(moved, month);
            }
            if counts.pending.is_empty()
                && counts.held == counts.held_on_disk
                && !counts.receipts_unsaved
            {
                return Ok(0);
            }
            let taken = counts.pending.clone();
            let mut next = counts.persisted.clone();
            for (month, requests) in &taken {
                let totals = next.entry(*month).or_default();
                // `add` kept durable plus pending within the bound, far below u64::MAX.
                totals.request_count += *requests;
            }
            if let Some(current) = current {
                next.retain(|month, totals| {
                    month.months_before(current) < RETAINED_MONTHS || !totals.confirmed()
                });
            }
            counts.receipts_unsaved = false;
            let file = UsageFile {
                format: super::store::USAGE_FORMAT,
                epoch: self.shared.epoch.clone(),
                created_at: self.shared.created_at,
                buckets: next,
                held: counts.held,
                out_of_range: BTreeMap::new(),
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
        counts.held_on_disk = file.held;
        let mut written = 0u64;
        for (month, requests) in &taken {
            written += *requests;
            if let Some(left) = counts.pending.get_mut(month) {
                *left -= (*left).min(*requests);
                if *left == 0 {
                    counts.pending.remove(month);
                }
            }
        }
        // Counts change only here (one flush at a time); receipts may have arrived meanwhile.
        let previous = std::mem::take(&mut counts.persisted);
        counts.persisted = file
            .buckets
            .into_iter()
            .map(|(month, mut totals)| {
                let receipt = previous.get(&month).and_then(|t| t.reported);
                totals.reported = totals.reported.max(receipt);
                (month, totals)
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
    /// backup relearns the recent months. Buckets the control plane refused are left out.
    /// Empty when nothing was ever flushed.
    pub fn report_counts(&self) -> Vec<(UsageMonth, u64)> {
        let counts = lock(&self.shared.counts);
        let sendable = counts
            .persisted
            .iter()
            .filter(|(month, _)| !counts.refused.contains_key(month));
        let unconfirmed = sendable.clone().filter(|(_, t)| !t.confirmed());
        let confirmed = sendable.rev().filter(|(_, t)| t.confirmed());
        unconfirmed
            .chain(confirmed)
            .take(MAX_BUCKETS_PER_REPORT)
            .map(|(month, totals)| (*month, totals.request_count))
            .collect()
    }

    /// Records what the control plane says it holds (its receipt), keeping the highest value
    /// seen per bucket. Unknown buckets are ignored.
    pub fn record_receipt(&self, recorded: &[(UsageMonth, u64)]) -> ReceiptCheck {
        let mut check = ReceiptCheck::default();
        let now = self.shared.clock.now().unix_timestamp();
        let mut counts = lock(&self.shared.counts);
        let mut raised = false;
        for (month, held) in recorded {
            let Some(totals) = counts.persisted.get_mut(month) else {
                continue;
            };
            if *held > totals.request_count {
                check.ahead.push((*month, totals.request_count, *held));
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

    /// Records that the control plane refused `month` for `reason`: a refusal is permanent
    /// (a month out of its range, a count above its bound only grows), so the bucket is not
    /// sent again while this agent runs. It stays in `usage.json` and in `GET /usage`.
    pub fn record_refused(&self, month: UsageMonth, reason: String) {
        lock(&self.shared.counts).refused.insert(month, reason);
    }

    /// Records why the last report did not get through.
    pub fn report_failed(&self, reason: String) {
        lock(&self.shared.counts).report.last_error = Some(reason);
    }
}

/// Moves a month an older agent counted under a wrong clock into what is held. Only what the
/// control plane has not confirmed moves; no control plane ever stored such a month, so that
/// is all of it in practice.
fn hold_out_of_range(counts: &mut Counts, bucket: &str, totals: BucketTotals, epoch: &str) {
    let unconfirmed = totals.request_count - totals.reported.unwrap_or(0).min(totals.request_count);
    match within_bound(counts.held, unconfirmed) {
        Some(held) => {
            counts.held = held;
            tracing::warn!(
                event = "usage.month_out_of_range",
                %bucket,
                %epoch,
                requests = unconfirmed,
                "usage.json counts requests under a month outside 2000-01..2100-12 (a wrong clock, from an older licsync-dp); they are held and counted in the current month once the clock is right."
            );
        }
        None => tracing::error!(
            event = "usage.month_out_of_range",
            %bucket,
            %epoch,
            requests = unconfirmed,
            bound = MAX_MONTH_REQUESTS,
            "usage.json counts more requests under a month outside 2000-01..2100-12 than the bound allows; they are not counted."
        ),
    }
}

fn log_clock_invalid(now: OffsetDateTime, held: u64, suppressed: u64) {
    tracing::warn!(
        event = "usage.clock_invalid",
        clock = %now,
        held,
        suppressed,
        "The clock reads a time outside 2000-01..2100-12: requests are held, not counted under a month, until it is right. Check NTP."
    );
}

fn log_settled(moved: u64, month: UsageMonth) {
    if moved > 0 {
        tracing::info!(
            event = "usage.held_counted",
            requests = moved,
            %month,
            "The clock is right again: requests held while it was wrong are counted in the current month."
        );
    }
}

#[cfg(test)]
mod tests;
