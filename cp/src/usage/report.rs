//! The content of `GET /license/report`, after Kong Gateway's license report, sealed with the
//! report key ([`licsync_common::report`]: checksum and signature over the canonical JSON).
//!
//! - `counters`: `[{"bucket": "2026-11", "request_count": N}, ...]`, newest first: every month
//!   from 11 months before the current UTC month on that any data plane reported (later months
//!   too, should a data plane's clock run ahead), summed over data planes and epochs.
//! - `total_requests`: the sum of `counters`.
//! - `license`: `license_key` and `license_expiration_date` of the active license (newest
//!   `updated_at`, ties to the later write), or `{"license_key": "UNLICENSED"}`.
//! - `version`, `db_version` (`"<backend> <version>"`), `deployment_info` (`type: "hybrid"`,
//!   `connected_dataplanes`, `registered_dataplanes`, `entitled_dataplanes`), `system_info`
//!   ([`SystemInfo`]), `rbac_users`, `entitlement_exceeded`, `timestamp` (Unix seconds).
//! - With `?by=dataplane`, `dataplanes`: per registered data plane, `id`, `name`, `counters`
//!   and `total_requests` over the same months. Counts of data planes no longer registered
//!   stay in the totals.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::system_info::SystemInfo;
use super::{ReportKey, UsageMonth, UsageRow};
use crate::dataplanes::DataPlaneView;
use crate::entitlement::ActiveLicense;
use crate::state::ControlPlane;
use crate::store::{StoreError, StoreResult};

/// Months a report covers, the current one included.
pub const MONTHS: u32 = 12;
/// What `license.license_key` says when no license is stored.
pub const UNLICENSED: &str = "UNLICENSED";

/// What the caller asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// Add the per-data-plane breakdown.
    pub by_dataplane: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    counters: Vec<Counter>,
    total_requests: u64,
    license: LicenseSummary,
    version: &'static str,
    db_version: String,
    deployment_info: DeploymentInfo,
    system_info: SystemInfo,
    rbac_users: u64,
    entitlement_exceeded: bool,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataplanes: Option<Vec<DataPlaneUsage>>,
}

/// One month's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// `YYYY-MM`.
    pub bucket: String,
    pub request_count: u64,
}

#[derive(Debug, Serialize)]
struct LicenseSummary {
    license_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_expiration_date: Option<String>,
}

#[derive(Debug, Serialize)]
struct DeploymentInfo {
    #[serde(rename = "type")]
    kind: &'static str,
    connected_dataplanes: usize,
    registered_dataplanes: usize,
    /// The active license's `dataplanes`; null when it does not say.
    entitled_dataplanes: Option<u64>,
}

/// One registered data plane's requests per month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataPlaneUsage {
    pub id: Uuid,
    pub name: String,
    pub counters: Vec<Counter>,
    pub total_requests: u64,
}

/// The report's request counts: per month over every data plane (and epoch), and per data
/// plane when asked. What the status page's usage charts show, so they cannot disagree with
/// `/license/report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotals {
    /// Newest month first.
    pub counters: Vec<Counter>,
    pub total_requests: u64,
    /// With [`ReportOptions::by_dataplane`]: per registered data plane, in `dataplanes`' order.
    pub dataplanes: Option<Vec<DataPlaneUsage>>,
}

/// The first month a report made at `now` covers ([`MONTHS`] months, the current one included).
pub fn first_month(now: OffsetDateTime) -> UsageMonth {
    UsageMonth::clamped(now).minus(MONTHS - 1)
}

/// The request counts of `rows` from month `since` on: per month, and with `options`, per
/// data plane of `dataplanes` (counts of data planes no longer registered stay in the
/// monthly sums). Pure: `/license/report` and the status page both call it.
pub fn totals(
    rows: &[UsageRow],
    dataplanes: &[DataPlaneView],
    options: ReportOptions,
    since: UsageMonth,
) -> StoreResult<UsageTotals> {
    let counters = monthly(rows.iter().filter(|r| r.month >= since))?;
    let per_dataplane = if options.by_dataplane {
        let mut by_id: HashMap<Uuid, Vec<&UsageRow>> = HashMap::new();
        for row in rows.iter().filter(|r| r.month >= since) {
            by_id.entry(row.dataplane).or_default().push(row);
        }
        let mut usage = Vec::with_capacity(dataplanes.len());
        for dp in dataplanes {
            let counters = monthly(by_id.remove(&dp.id).unwrap_or_default())?;
            usage.push(DataPlaneUsage {
                id: dp.id,
                name: dp.name.clone(),
                total_requests: total(&counters)?,
                counters,
            });
        }
        Some(usage)
    } else {
        None
    };
    Ok(UsageTotals {
        total_requests: total(&counters)?,
        counters,
        dataplanes: per_dataplane,
    })
}

/// How many users (`POST /users`) the control plane has: Kong's `rbac_users`. API tokens are
/// not users and do not count.
async fn rbac_users(cp: &ControlPlane) -> StoreResult<u64> {
    cp.principals().user_count().await
}

/// Builds the report at `now` and seals it with `key`.
pub async fn build(
    cp: &ControlPlane,
    key: &ReportKey,
    options: ReportOptions,
    now: OffsetDateTime,
) -> StoreResult<Map<String, Value>> {
    let since = first_month(now);
    let rows = cp.usage().rows().await?;
    let dataplanes = cp.dataplanes().list(now.unix_timestamp()).await?;
    let active = ActiveLicense::of(&cp.licenses().current());
    let entitled = active.as_ref().and_then(|a| a.license.dataplanes());
    let registered = dataplanes.len();
    let exceeded = entitled.is_some_and(|n| registered as u64 > n);

    let UsageTotals {
        counters,
        total_requests,
        dataplanes: per_dataplane,
    } = totals(&rows, &dataplanes, options, since)?;
    let storage = cp.storage_info().clone();
    let report = Report {
        total_requests,
        counters,
        license: match &active {
            Some(active) => LicenseSummary {
                license_key: active.license.license_key().to_owned(),
                license_expiration_date: Some(active.license.expiration_date().to_string()),
            },
            None => LicenseSummary {
                license_key: UNLICENSED.into(),
                license_expiration_date: None,
            },
        },
        version: licsync_common::VERSION,
        db_version: format!("{} {}", storage.backend, storage.version),
        deployment_info: DeploymentInfo {
            kind: "hybrid",
            connected_dataplanes: cp.dataplanes().connected_count(),
            registered_dataplanes: registered,
            entitled_dataplanes: entitled,
        },
        system_info: SystemInfo::current(),
        rbac_users: rbac_users(cp).await?,
        entitlement_exceeded: exceeded,
        timestamp: now.unix_timestamp(),
        dataplanes: per_dataplane,
    };
    let body = match serde_json::to_value(&report) {
        Ok(Value::Object(body)) => body,
        _ => {
            return Err(StoreError::Backend(
                "cannot encode the report as a JSON object".into(),
            ));
        }
    };
    Ok(licsync_common::report::seal(body, key.signing_key()))
}

/// Per-month sums of `rows`, newest first.
///
/// Sums are checked, never saturated: a report that silently stopped counting would be wrong in
/// the vendor's favour or the customer's. Each stored count is at most
/// [`licsync_common::usage_month::MAX_MONTH_REQUESTS`], so only counts stored before that
/// bound existed can overflow, and the report then says so instead of showing a wrong number.
fn monthly<'a>(rows: impl IntoIterator<Item = &'a UsageRow>) -> StoreResult<Vec<Counter>> {
    let mut months: BTreeMap<UsageMonth, u64> = BTreeMap::new();
    for row in rows {
        let sum = months.entry(row.month).or_default();
        *sum = sum
            .checked_add(row.count)
            .ok_or_else(|| overflow(&row.month.to_string()))?;
    }
    Ok(months
        .into_iter()
        .rev()
        .map(|(month, request_count)| Counter {
            bucket: month.to_string(),
            request_count,
        })
        .collect())
}

fn total(counters: &[Counter]) -> StoreResult<u64> {
    counters.iter().try_fold(0u64, |sum, c| {
        sum.checked_add(c.request_count)
            .ok_or_else(|| overflow("the report's months"))
    })
}

fn overflow(what: &str) -> StoreError {
    StoreError::Corrupt {
        key: format!("usage/{what}"),
        reason: format!(
            "the request counts of {what} add up to more than {}: a data plane's count above the bound of {} a month was stored before this control plane refused such counts",
            u64::MAX,
            licsync_common::usage_month::MAX_MONTH_REQUESTS
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, count: u64) -> UsageRow {
        UsageRow {
            dataplane: Uuid::nil(),
            epoch: Uuid::nil(),
            month: month.parse().unwrap(),
            count,
        }
    }

    #[test]
    fn counters_sum_per_month_newest_first() {
        let rows = [
            row("2026-10", 5),
            row("2026-11", 1),
            row("2026-10", 7),
            row("2025-12", 2),
        ];
        let counters = monthly(&rows).unwrap();
        let shown: Vec<(&str, u64)> = counters
            .iter()
            .map(|c| (c.bucket.as_str(), c.request_count))
            .collect();
        assert_eq!(shown, vec![("2026-11", 1), ("2026-10", 12), ("2025-12", 2)]);
        assert_eq!(total(&counters).unwrap(), 15);
    }

    #[test]
    fn sums_past_u64_are_an_error_not_a_saturated_count() {
        let rows = [row("2026-11", u64::MAX), row("2026-11", 1)];
        let error = monthly(&rows).unwrap_err().to_string();
        assert!(
            error.contains("usage/2026-11") && error.contains("add up to more than"),
            "{error}"
        );
        let counters = monthly(&[row("2026-11", u64::MAX), row("2026-10", 1)]).unwrap();
        let error = total(&counters).unwrap_err().to_string();
        assert!(error.contains("add up to more than"), "{error}");
    }
}
