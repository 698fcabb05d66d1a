//! The counters as the local API shows them (`GET /usage`, `GET /status`): per month what is
//! counted, what is not on disk yet, what the control plane confirmed or refused, and what is
//! held while the clock is wrong.

use std::collections::BTreeMap;

use licsync_common::usage_month::UsageMonth;

use super::{UsageCounter, lock};

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
    pub bucket: UsageMonth,
    /// Everything counted: durable plus not yet flushed.
    pub request_count: u64,
    /// Counted but not yet flushed to disk.
    pub unflushed: u64,
    /// What the control plane confirmed holding, if it did.
    pub reported: Option<u64>,
    /// Why the control plane refused this bucket, if it did; it is not sent again until the
    /// agent restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageSnapshot {
    pub epoch: String,
    /// Unix seconds when the epoch began.
    pub epoch_created_at: i64,
    /// Newest first.
    pub buckets: Vec<BucketView>,
    /// Requests counted and not yet durable (held ones included).
    pub unflushed: u64,
    /// Durable requests the control plane has not confirmed yet.
    pub unreported: u64,
    /// Requests counted while the clock was outside the usage months, waiting for a right
    /// clock to be counted in the current month.
    pub held: u64,
    /// Why the clock cannot name a usage month now, if it cannot.
    pub clock_error: Option<String>,
    pub last_flush: Option<i64>,
    pub last_flush_error: Option<String>,
    pub report: ReportStatus,
}

impl UsageCounter {
    /// The counters now, for the local API.
    pub fn snapshot(&self) -> UsageSnapshot {
        let clock_error = UsageMonth::of(self.shared.clock.now())
            .err()
            .map(|e| e.to_string());
        let counts = lock(&self.shared.counts);
        let mut merged: BTreeMap<UsageMonth, BucketView> = BTreeMap::new();
        // Display sums: each month is bounded by 10^15, so these cannot reach u64::MAX unless
        // an older agent's usage.json already holds a saturated count, which they then show.
        let mut unreported = 0u64;
        for (month, totals) in &counts.persisted {
            unreported = unreported.saturating_add(
                totals.request_count - totals.reported.unwrap_or(0).min(totals.request_count),
            );
            merged.insert(
                *month,
                BucketView {
                    bucket: *month,
                    request_count: totals.request_count,
                    unflushed: 0,
                    reported: totals.reported,
                    refused: counts.refused.get(month).cloned(),
                },
            );
        }
        let mut unflushed = counts.held.saturating_sub(counts.held_on_disk);
        for (month, requests) in &counts.pending {
            unflushed = unflushed.saturating_add(*requests);
            let view = merged.entry(*month).or_insert(BucketView {
                bucket: *month,
                request_count: 0,
                unflushed: 0,
                reported: None,
                refused: None,
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
            held: counts.held,
            clock_error,
            last_flush: counts.last_flush,
            last_flush_error: counts.last_flush_error.clone(),
            report: counts.report.clone(),
        }
    }
}
