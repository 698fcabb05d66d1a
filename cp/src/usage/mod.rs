//! Usage metering at the control plane: what data planes report, how it is kept so that every
//! gateway request counts exactly once, and the signed report built from it.
//!
//! A data plane reports *cumulative* counts per UTC month ([`UsageMonth`], shared with the
//! agent) for one *epoch* of its counter store (created with its state directory). The control plane keeps, per (data plane,
//! epoch, month), the maximum count ever reported: a retried, duplicated or reordered report
//! changes nothing, a lower count after a higher one changes nothing, and a data plane whose
//! state was wiped reports under a new epoch, which adds. Totals are sums over data planes and
//! epochs.
//!
//! A report's months outside the range and counts above
//! [`licsync_common::usage_month::MAX_MONTH_REQUESTS`] are refused one bucket at a time, and the
//! rest is stored: the receipt names what was refused and why.
//!
//! # Layout
//! - [`submission`]: checking a `ReportUsage` message into a [`UsageSubmission`] and the
//!   buckets refused.
//! - [`ledger`]: group commit: reports arriving together share one storage write and one flush.
//! - [`report`]: `GET /license/report`'s content; [`report_key`]: the key that signs it.
//! - [`system_info`]: the host facts the report carries.

pub mod ledger;
pub mod report;
pub mod report_key;
pub mod submission;
pub mod system_info;

pub use ledger::UsageLedger;
pub use licsync_common::usage_month::UsageMonth;
pub use report_key::ReportKey;

// The records the usage store keeps live in storage's own model; metering names them here.
pub use crate::store::{UsageRow, UsageSubmission};
