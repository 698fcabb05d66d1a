//! One scrape: the control plane's state read into a [`Snapshot`] (asynchronously: the fleet
//! and the usage ledger are in storage), then encoded with the event metrics as OpenMetrics
//! text.
//!
//! A storage read that fails leaves its metrics out of this scrape (and logs
//! `metrics.read_failed`) rather than failing the whole answer: the process, sync and
//! certificate metrics are what an operator needs most while storage is down.

use std::fmt;
use std::sync::Arc;

use licsync_common::expiry::license_end;
use licsync_common::license::License;
use licsync_common::usage_month::UsageMonth;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use uuid::Uuid;

use super::CpMetrics;
use crate::cluster::server_cert::ServerIdentity;
use crate::dataplanes::SyncStatus;
use crate::entitlement::ActiveLicense;
use crate::state::ControlPlane;

/// The content type of the answer: OpenMetrics 1.0 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many months `licsync_cp_usage_requests_total` shows (the newest reported): the current
/// one and a year before it, enough for any monthly comparison, while the ledger keeps more.
pub const USAGE_MONTHS: usize = 13;

/// Every `sync_status` a data plane can have, in the order shown.
const SYNC_STATUSES: [(SyncStatus, &str); 5] = [
    (SyncStatus::Unknown, "unknown"),
    (SyncStatus::Normal, "normal"),
    (SyncStatus::LicenseRejected, "license_rejected"),
    (SyncStatus::ApplyFailed, "apply_failed"),
    (SyncStatus::VersionIncompatible, "version_incompatible"),
];

/// The control plane's own certificates.
#[derive(Clone)]
pub struct Certificates {
    /// The cluster server certificate in use (rotated while running).
    pub server: Arc<ServerIdentity>,
    /// The cluster CA's expiry (unix seconds).
    pub ca_not_after: i64,
}

/// The fleet as one scrape sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fleet {
    registered: u64,
    connected: u64,
    by_status: [u64; SYNC_STATUSES.len()],
    earliest_certificate_expiry: Option<i64>,
}

/// Everything the gauges show, read at one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    ready: bool,
    revision: u64,
    /// `None` when storage could not be read.
    fleet: Option<Fleet>,
    /// Each stored license and when it stops being in force (`None`: its document does not
    /// parse, which only a corrupted record can do).
    licenses: Vec<(Uuid, Option<i64>)>,
    entitled: Option<u64>,
    /// Requests reported per month, the newest [`USAGE_MONTHS`]; `None` when storage could
    /// not be read.
    usage: Option<Vec<(UsageMonth, u64)>>,
    ca_expiry: i64,
    server_expiry: i64,
}

impl Snapshot {
    /// Reads the control plane's state now.
    pub async fn read(cp: &ControlPlane, certificates: &Certificates) -> Self {
        let now = licsync_common::unix_now();
        let set = cp.licenses().current();
        let fleet = match cp.dataplanes().list(now).await {
            Ok(views) => {
                let mut fleet = Fleet::default();
                for view in &views {
                    fleet.registered += 1;
                    fleet.connected += u64::from(view.connected);
                    if let Some(i) = SYNC_STATUSES
                        .iter()
                        .position(|(s, _)| *s == view.sync_status)
                    {
                        fleet.by_status[i] += 1;
                    }
                    fleet.earliest_certificate_expiry = Some(
                        fleet
                            .earliest_certificate_expiry
                            .map_or(view.cert_expires_at, |e| e.min(view.cert_expires_at)),
                    );
                }
                Some(fleet)
            }
            Err(error) => {
                read_failed("the fleet", &error);
                None
            }
        };
        let usage = match cp.usage().by_month().await {
            Ok(months) => {
                let skip = months.len().saturating_sub(USAGE_MONTHS);
                Some(months.into_iter().skip(skip).collect())
            }
            Err(error) => {
                read_failed("usage", &error);
                None
            }
        };
        Self {
            ready: cp.is_ready(),
            revision: set.revision,
            fleet,
            licenses: set
                .licenses
                .values()
                .map(|stored| {
                    let end = License::parse(&stored.document)
                        .ok()
                        .map(|license| license_end(license.expiration_date()));
                    (stored.id, end)
                })
                .collect(),
            entitled: ActiveLicense::of(&set).and_then(|active| active.license.dataplanes()),
            usage,
            ca_expiry: certificates.ca_not_after,
            server_expiry: certificates.server.in_use().not_after.unix_timestamp(),
        }
    }
}

fn read_failed(what: &str, error: &crate::store::StoreError) {
    tracing::warn!(event = "metrics.read_failed", what, %error, "Cannot read state for the metrics; leaving it out of this scrape.");
}

/// The OpenMetrics text of `events` and `snapshot`, ending with `# EOF`.
pub fn render(events: &CpMetrics, snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        events: events.clone(),
        snapshot,
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// What one scrape encodes.
#[derive(Debug)]
struct Scrape {
    events: CpMetrics,
    snapshot: Snapshot,
}

/// Gauges are signed 64-bit; a count past `i64::MAX` (never reached) shows as the maximum.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One gauge family with a single label, a sample per `(label value, value)`.
fn labelled_gauges<'v>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&Unit>),
    label: &str,
    samples: impl IntoIterator<Item = (&'v str, i64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (value_label, value) in samples {
        let labels = [(label, value_label)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let seconds = Unit::Seconds;
        let snapshot = &self.snapshot;
        let events = &self.events;
        {
            let version = [("version", licsync_common::VERSION)];
            let mut info = encoder.encode_descriptor(
                "licsync_cp_build",
                "The running licsync-cp's version.",
                None,
                MetricType::Info,
            )?;
            info.encode_info(&version)?;
        }
        gauge(
            &mut encoder,
            "licsync_cp_ready",
            "1 while the control plane is ready (/health/ready answers 200), else 0.",
            None,
            i64::from(snapshot.ready),
        )?;
        gauge(
            &mut encoder,
            "licsync_cp_revision",
            "Revision of the published license set (raised by every license write).",
            None,
            signed(snapshot.revision),
        )?;
        if let Some(fleet) = &snapshot.fleet {
            labelled_gauges(
                &mut encoder,
                (
                    "licsync_cp_dataplanes",
                    "Registered (unrevoked) data planes, and those of them with a sync stream open.",
                    None,
                ),
                "state",
                [
                    ("connected", signed(fleet.connected)),
                    ("registered", signed(fleet.registered)),
                ],
            )?;
            labelled_gauges(
                &mut encoder,
                (
                    "licsync_cp_dataplanes_by_sync_status",
                    "Registered data planes per sync_status (as in GET /clustering/data-planes).",
                    None,
                ),
                "status",
                SYNC_STATUSES
                    .iter()
                    .zip(fleet.by_status)
                    .map(|((_, name), count)| (*name, signed(count))),
            )?;
            if let Some(earliest) = fleet.earliest_certificate_expiry {
                gauge(
                    &mut encoder,
                    "licsync_cp_dataplane_certificate_expiry_earliest_timestamp",
                    "Unix time when the first registered data plane's client certificate expires.",
                    Some(&seconds),
                    earliest,
                )?;
            }
        }
        let ids: Vec<(String, i64)> = snapshot
            .licenses
            .iter()
            .filter_map(|(id, end)| Some((id.to_string(), (*end)?)))
            .collect();
        labelled_gauges(
            &mut encoder,
            (
                "licsync_cp_license_expiry_timestamp",
                "Unix time when each stored license stops being in force: the end (UTC) of its license_expiration_date.",
                Some(&seconds),
            ),
            "license_id",
            ids.iter().map(|(id, end)| (id.as_str(), *end)),
        )?;
        if let Some(entitled) = snapshot.entitled {
            gauge(
                &mut encoder,
                "licsync_cp_license_entitled_dataplanes",
                "The active license's dataplanes: how many data planes it entitles.",
                None,
                signed(entitled),
            )?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "licsync_cp_sync_updates",
                "Answers to license updates sent to data planes: acked (applied), rejected (some licenses refused), timed_out (no answer within cluster.ack_timeout).",
                None,
                MetricType::Counter,
            )?;
            for (result, counter) in [
                ("acked", &events.sync_acked),
                ("rejected", &events.sync_rejected),
                ("timed_out", &events.sync_timed_out),
            ] {
                counter.encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        events.propagation.encode(encoder.encode_descriptor(
            "licsync_cp_sync_propagation",
            "Time from a license write being committed to its acknowledgement by a data plane (one observation per data plane).",
            Some(&seconds),
            MetricType::Histogram,
        )?)?;
        events.admin_requests.encode(encoder.encode_descriptor(
            "licsync_cp_admin_requests",
            "Admin API requests answered, by method, route template (unmatched: no route, or refused before routing) and status.",
            None,
            MetricType::Counter,
        )?)?;
        events.admin_durations.encode(encoder.encode_descriptor(
            "licsync_cp_admin_request_duration",
            "Admin API request latency, from the request head to the response head.",
            Some(&seconds),
            MetricType::Histogram,
        )?)?;
        if let Some(usage) = &snapshot.usage {
            let mut family = encoder.encode_descriptor(
                "licsync_cp_usage_requests",
                "Gateway requests reported by data planes, per UTC month (the newest 13 months reported).",
                None,
                MetricType::Counter,
            )?;
            for (month, count) in usage {
                let month = month.to_string();
                ConstCounter::new(*count)
                    .encode(family.encode_family(&[("month", month.as_str())])?)?;
            }
        }
        labelled_gauges(
            &mut encoder,
            (
                "licsync_cp_certificate_expiry_timestamp",
                "Unix time when the cluster CA and the cluster server certificate in use expire.",
                Some(&seconds),
            ),
            "role",
            [
                ("ca", snapshot.ca_expiry),
                ("server", snapshot.server_expiry),
            ],
        )
    }
}
