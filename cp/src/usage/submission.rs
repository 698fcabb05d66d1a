//! Checking a `ReportUsage` message before anything is stored. Every refusal names the field
//! and says what is wrong, since it goes back to the data plane as `INVALID_ARGUMENT` and into
//! its log.

use std::collections::HashSet;

use licsync_common::proto::UsageReport;
use uuid::Uuid;

use super::{Month, UsageSubmission};

/// Most months one report may carry: ten years. A data plane reports the months it has not yet
/// seen acknowledged, which after a long outage is still far fewer.
pub const MAX_BUCKETS: usize = 120;

/// A report that cannot be stored: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidReport {
    pub field: String,
    pub reason: String,
}

/// Checks `report` from `dataplane` (the identity of its verified certificate).
pub fn check(dataplane: Uuid, report: UsageReport) -> Result<UsageSubmission, InvalidReport> {
    let invalid = |field: String, reason: String| InvalidReport { field, reason };
    let epoch = parse_epoch(&report.epoch).ok_or_else(|| {
        invalid(
            "epoch".into(),
            format!(
                "'{}' is not a UUID; the data plane creates one with its state directory",
                report.epoch.chars().take(64).collect::<String>()
            ),
        )
    })?;
    if report.counts.len() > MAX_BUCKETS {
        return Err(invalid(
            "counts".into(),
            format!(
                "{} buckets; the limit is {MAX_BUCKETS} per report",
                report.counts.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(report.counts.len());
    let mut counts = Vec::with_capacity(report.counts.len());
    for (index, count) in report.counts.into_iter().enumerate() {
        let field = || format!("counts[{index}].bucket");
        let month: Month = count
            .bucket
            .parse()
            .map_err(|e: super::month::BadMonth| invalid(field(), e.to_string()))?;
        if !seen.insert(month) {
            return Err(invalid(
                field(),
                format!("{month} appears more than once in the report"),
            ));
        }
        counts.push((month, count.request_count));
    }
    Ok(UsageSubmission {
        dataplane,
        epoch,
        counts,
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
            report(&epoch.to_string(), &[("2026-11", u64::MAX), ("2026-10", 0)]),
        )
        .unwrap();
        assert_eq!(checked.dataplane, dp);
        assert_eq!(checked.epoch, epoch);
        assert_eq!(
            checked.counts,
            vec![
                ("2026-11".parse().unwrap(), u64::MAX),
                ("2026-10".parse().unwrap(), 0)
            ]
        );
    }

    #[test]
    fn every_refusal_names_the_field() {
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
        let e = refuse(report(&epoch, &[("2026-11", 1), ("2026-13", 1)]));
        assert_eq!(e.field, "counts[1].bucket");
        assert!(e.reason.contains("'2026-13' is not a month"), "{e}");
        let e = refuse(report(&epoch, &[("2026-11", 1), ("2026-11", 2)]));
        assert_eq!(e.field, "counts[1].bucket");
        assert!(e.reason.contains("more than once"), "{e}");
        let many: Vec<(String, u64)> = (0..=MAX_BUCKETS)
            .map(|i| (format!("{}-{:02}", 2000 + i / 12, i % 12 + 1), 1))
            .collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(b, c)| (b.as_str(), *c)).collect();
        let e = refuse(report(&epoch, &many));
        assert_eq!(e.field, "counts");
        assert!(e.reason.contains("limit is 120"), "{e}");
    }
}
