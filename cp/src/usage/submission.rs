//! Checking a `ReportUsage` message before anything is stored.
//!
//! A report is refused whole only when it cannot be filed at all (its epoch is not a UUID) or
//! is too large to look at; every refusal names the field and says what is wrong, since it goes
//! back to the data plane as `INVALID_ARGUMENT` and into its log. A bad *bucket* (not
//! `YYYY-MM`, a month outside the range, a month named twice, a count above
//! [`MAX_MONTH_REQUESTS`]) is refused alone and named in the receipt, and the report's other
//! buckets are stored: one month counted under a wrong clock must not stop every later month
//! from being confirmed.

use std::collections::HashMap;

use licsync_common::proto::{RefusedUsage, UsageReport};
use licsync_common::usage_month::{MAX_MONTH_REQUESTS, UsageMonth, UsageMonthError};
use uuid::Uuid;

use super::UsageSubmission;

/// Most months one report may carry: ten years. A data plane reports the months it has not yet
/// seen acknowledged, which after a long outage is still far fewer.
pub const MAX_BUCKETS: usize = 120;

/// A report that cannot be stored at all: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidReport {
    pub field: String,
    pub reason: String,
}

/// A report, checked: the buckets to store, and those refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReport {
    pub submission: UsageSubmission,
    /// In the report's order.
    pub refused: Vec<RefusedUsage>,
}

/// Checks `report` from `dataplane` (the identity of its verified certificate).
pub fn check(dataplane: Uuid, report: UsageReport) -> Result<CheckedReport, InvalidReport> {
    let invalid = |field: &str, reason: String| InvalidReport {
        field: field.into(),
        reason,
    };
    let epoch = parse_epoch(&report.epoch).ok_or_else(|| {
        invalid(
            "epoch",
            format!(
                "'{}' is not a UUID; the data plane creates one with its state directory",
                licsync_common::printable(&report.epoch, 64)
            ),
        )
    })?;
    if report.counts.len() > MAX_BUCKETS {
        return Err(invalid(
            "counts",
            format!(
                "{} buckets; the limit is {MAX_BUCKETS} per report",
                report.counts.len()
            ),
        ));
    }
    let months: Vec<Result<UsageMonth, UsageMonthError>> = report
        .counts
        .iter()
        .map(|count| count.bucket.parse())
        .collect();
    let mut times_named: HashMap<UsageMonth, usize> = HashMap::with_capacity(months.len());
    for month in months.iter().flatten() {
        *times_named.entry(*month).or_default() += 1;
    }
    let mut counts = Vec::with_capacity(report.counts.len());
    let mut refused = Vec::new();
    for (count, month) in report.counts.into_iter().zip(months) {
        let reason = match month {
            Err(error) => Some(error.to_string()),
            // Which of two counts for one month is right cannot be told; storing either could
            // raise the maximum for good.
            Ok(month) if times_named.get(&month).is_some_and(|n| *n > 1) => Some(format!(
                "{month} appears more than once in the report; none of its counts is stored"
            )),
            Ok(month) if count.request_count > MAX_MONTH_REQUESTS => Some(format!(
                "{} requests in {month} is more than the bound of {MAX_MONTH_REQUESTS} a month per data plane and epoch",
                count.request_count
            )),
            Ok(month) => {
                counts.push((month, count.request_count));
                None
            }
        };
        if let Some(reason) = reason {
            refused.push(RefusedUsage {
                bucket: licsync_common::printable(&count.bucket, 32),
                request_count: count.request_count,
                reason,
            });
        }
    }
    Ok(CheckedReport {
        submission: UsageSubmission {
            dataplane,
            epoch,
            counts,
        },
        refused,
    })
}

/// An epoch is a UUID in its hyphenated form, as the data plane writes it.
fn parse_epoch(text: &str) -> Option<Uuid> {
    (text.len() == 36).then(|| Uuid::try_parse(text).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use licsync_common::proto::UsageCount;

    fn report(epoch: &str, buckets: &[(&str, u64)]) -> UsageReport {
        UsageReport {
            epoch: epoch.into(),
            counts: buckets
                .iter()
                .map(|(bucket, request_count)| UsageCount {
                    bucket: (*bucket).into(),
                    request_count: *request_count,
                })
                .collect(),
        }
    }

    #[test]
    fn a_good_report_keeps_its_counts_in_order() {
        let dp = Uuid::new_v4();
        let epoch = Uuid::new_v4();
        let checked = check(
            dp,
            report(
                &epoch.to_string(),
                &[("2026-11", MAX_MONTH_REQUESTS), ("2026-10", 0)],
            ),
        )
        .unwrap();
        assert_eq!(checked.submission.dataplane, dp);
        assert_eq!(checked.submission.epoch, epoch);
        assert_eq!(
            checked.submission.counts,
            vec![
                ("2026-11".parse().unwrap(), MAX_MONTH_REQUESTS),
                ("2026-10".parse().unwrap(), 0)
            ]
        );
        assert!(checked.refused.is_empty());
    }

    #[test]
    fn a_bad_bucket_is_refused_alone_and_named_with_the_reason() {
        let epoch = Uuid::new_v4().to_string();
        let checked = check(
            Uuid::new_v4(),
            report(
                &epoch,
                &[
                    ("1999-12", 4),
                    ("2026-11", 7),
                    ("2026-13", 1),
                    ("2026-10", u64::MAX),
                    ("2026-09", MAX_MONTH_REQUESTS + 1),
                    ("2026-08", 1),
                    ("2026-08", 2),
                    ("2101-01", 1),
                    ("20\n6-01", 1),
                ],
            ),
        )
        .unwrap();
        assert_eq!(
            checked.submission.counts,
            vec![("2026-11".parse().unwrap(), 7)],
            "only the valid bucket is stored"
        );
        let refused: Vec<(&str, u64, &str)> = checked
            .refused
            .iter()
            .map(|r| (r.bucket.as_str(), r.request_count, r.reason.as_str()))
            .collect();
        assert_eq!(refused.len(), 8, "{refused:?}");
        assert_eq!(refused[0].0, "1999-12");
        assert!(
            refused[0]
                .2
                .contains("outside the months usage is counted in (2000-01 to 2100-12)"),
            "{refused:?}"
        );
        assert!(
            refused[1].2.contains("'2026-13' is not a month"),
            "{refused:?}"
        );
        assert_eq!(refused[2].1, u64::MAX);
        assert_eq!(
            refused[2].2,
            "18446744073709551615 requests in 2026-10 is more than the bound of 1000000000000000 a month per data plane and epoch"
        );
        assert!(refused[3].2.contains("more than the bound"), "{refused:?}");
        assert!(refused[4].2.contains("more than once"), "{refused:?}");
        assert!(refused[5].2.contains("more than once"), "{refused:?}");
        assert!(refused[6].2.contains("2101-01 is outside"), "{refused:?}");
        assert_eq!(refused[7].0, "20\\n6-01", "escaped for the log");
    }

    #[test]
    fn a_report_is_refused_whole_only_when_it_cannot_be_filed() {
        let epoch = Uuid::new_v4().to_string();
        let refuse = |r: UsageReport| check(Uuid::new_v4(), r).unwrap_err();
        let e = refuse(report("not-a-uuid", &[]));
        assert_eq!(e.field, "epoch");
        assert!(
            e.to_string()
                .starts_with("epoch: 'not-a-uuid' is not a UUID"),
            "{e}"
        );
        assert_eq!(
            refuse(report(&Uuid::new_v4().simple().to_string(), &[])).field,
            "epoch"
        );
        let many: Vec<(String, u64)> = (0..=MAX_BUCKETS)
            .map(|i| (format!("{}-{:02}", 2000 + i / 12, i % 12 + 1), 1))
            .collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(b, c)| (b.as_str(), *c)).collect();
        let e = refuse(report(&epoch, &many));
        assert_eq!(e.field, "counts");
        assert!(e.reason.contains("limit is 120"), "{e}");
    }
}
