//! `GET /metrics` on the local API: the agent's state as OpenMetrics text, for a Prometheus
//! scraping the gateway host.
//!
//! Every value is read at scrape time from what the agent already keeps: the sync status and
//! the held licenses the sync client publishes (`GET /status`, `GET /license`), the usage
//! counters (`GET /usage`) and the reload state. Nothing is added on the request-counting or
//! apply paths, so a scrape costs the agent nothing between scrapes, and the numbers always
//! agree with the JSON routes.
//!
//! | metric | type | value |
//! |---|---|---|
//! | `licsync_dp_connected` | gauge | 1 while a `Sync` stream is open, else 0 |
//! | `licsync_dp_sync_server_info{url}` | info | the control-plane server in use or being tried (`sync.servers`, else the registration file's URL) |
//! | `licsync_dp_last_sync_timestamp_seconds` | gauge | unix seconds of the last update applied; 0 before one |
//! | `licsync_dp_revision` | gauge | the control-plane revision held |
//! | `licsync_dp_license_expiry_timestamp_seconds` | gauge | when the active license stops being in force; absent without one |
//! | `licsync_dp_certificate_expiry_timestamp_seconds` | gauge | when the client certificate expires; absent before it is read |
//! | `licsync_dp_usage_requests_total` | counter | requests counted in the current usage epoch |
//! | `licsync_dp_usage_unreported_requests` | gauge | of those, the ones the control plane has not confirmed |
//! | `licsync_dp_reload_failures_total` | counter | `license.reload_command` runs that failed since start |

use std::fmt;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use licsync_common::license::License;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use time::{Date, OffsetDateTime, Time};
use tokio::sync::watch;

use crate::output::ReloadState;
use crate::state::{ActiveRule, DpState};
use crate::sync::SyncStatus;
use crate::usage::UsageCounter;

/// The content type of the answer: OpenMetrics 1.0 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the metrics are read from; the same sources as the JSON routes.
#[derive(Clone)]
pub struct MetricsSources {
    pub status: watch::Receiver<SyncStatus>,
    pub licenses: watch::Receiver<Arc<DpState>>,
    pub active_rule: ActiveRule,
    pub usage: UsageCounter,
    /// `None` without a reload command: no failures to count.
    pub reloads: Option<watch::Receiver<ReloadState>>,
}

impl fmt::Debug for MetricsSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSources")
            .field("epoch", &self.usage.epoch())
            .finish_non_exhaustive()
    }
}

/// The registry `GET /metrics` encodes: one collector reading [`MetricsSources`].
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
}

impl AgentMetrics {
    pub fn new(sources: MetricsSources) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sources));
        Self {
            registry: Arc::new(registry),
        }
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub async fn get_metrics(State(metrics): State<AgentMetrics>) -> Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        // Writing to a String fails only if a value refuses to format, which none of ours do.
        Err(error) => {
            tracing::warn!(event = "metrics.encode_failed", %error, "Cannot encode the metrics.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded; see the agent's log",
            )
                .into_response()
        }
    }
}

/// When a license expiring on `date` stops being in force: the end of that day, UTC (a license
/// is in force through its whole expiration date).
pub fn license_end(date: Date) -> i64 {
    let end = date.next_day().unwrap_or(date);
    end.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()
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

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// Gauges are signed 64-bit; a count past `i64::MAX` (never reached: months are bounded by
/// 10^15) shows as the maximum.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for MetricsSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let status = self.status.borrow().clone();
        let seconds = Unit::Seconds;
        gauge(
            &mut encoder,
            "licsync_dp_connected",
            "1 while a Sync stream to the control plane is open, else 0.",
            None,
            i64::from(status.connected),
        )?;
        if !status.cluster_url.is_empty() {
            // A URL parsed as https://HOST:PORT: nothing in it needs escaping in a label.
            let metric = encoder.encode_descriptor(
                "licsync_dp_sync_server",
                "The control-plane server the agent uses or is trying (sync.servers, else the registration file's URL).",
                None,
                MetricType::Info,
            )?;
            Info::new([("url", status.cluster_url.as_str())]).encode(metric)?;
        }
        gauge(
            &mut encoder,
            "licsync_dp_last_sync_timestamp",
            "Unix time of the last update from the control plane that was applied; 0 before one.",
            Some(&seconds),
            status.last_sync.unwrap_or(0),
        )?;
        gauge(
            &mut encoder,
            "licsync_dp_revision",
            "The control-plane revision of the licenses this agent holds.",
            None,
            signed(status.revision),
        )?;

        let state = self.licenses.borrow().clone();
        let today = OffsetDateTime::now_utc().date();
        // Held licenses were verified on arrival; one that does not parse (a state file edited
        // by hand) has no expiry to show, like no license at all.
        let expiry = state
            .choose(self.active_rule, today)
            .active
            .and_then(|active| License::parse(&active.document).ok())
            .map(|license| license_end(license.expiration_date()));
        if let Some(expiry) = expiry {
            gauge(
                &mut encoder,
                "licsync_dp_license_expiry_timestamp",
                "Unix time when the active license stops being in force: the end (UTC) of its license_expiration_date.",
                Some(&seconds),
                expiry,
            )?;
        }
        if let Some(expiry) = status.cert_expires_at {
            gauge(
                &mut encoder,
                "licsync_dp_certificate_expiry_timestamp",
                "Unix time when the agent's client certificate expires.",
                Some(&seconds),
                expiry,
            )?;
        }

        let usage = self.usage.snapshot();
        let mut counted = usage.held;
        let mut confirmed = 0u64;
        for bucket in &usage.buckets {
            counted = counted.saturating_add(bucket.request_count);
            confirmed =
                confirmed.saturating_add(bucket.reported.unwrap_or(0).min(bucket.request_count));
        }
        counter(
            &mut encoder,
            "licsync_dp_usage_requests",
            "Requests counted by this agent in its current usage epoch (the months it keeps).",
            counted,
        )?;
        gauge(
            &mut encoder,
            "licsync_dp_usage_unreported_requests",
            "Requests counted but not yet confirmed by the control plane.",
            None,
            signed(counted - confirmed),
        )?;

        let failures = self.reloads.as_ref().map_or(0, |r| r.borrow().failures);
        counter(
            &mut encoder,
            "licsync_dp_reload_failures",
            "Runs of license.reload_command that failed since the agent started.",
            failures,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use licsync_common::usage_month::UsageMonth;
    use tower::ServiceExt;

    use super::*;
    use crate::local_api::{LocalApi, router};
    use crate::state::HeldLicense;
    use crate::usage::UsageStore;
    use crate::usage::http::UsageApi;

    /// The sample line of `name`, if any.
    fn sample<'t>(text: &'t str, name: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
    }

    #[tokio::test]
    async fn the_answer_is_openmetrics_text_with_every_metric_described() {
        let dir = tempfile::tempdir().unwrap();
        let (counter, _) = UsageCounter::open(
            UsageStore::new(dir.path().join("usage.json")),
            crate::clock::system(),
        )
        .await
        .unwrap();
        counter.add(7).unwrap();
        counter.flush().await.unwrap();
        let month = UsageMonth::of(OffsetDateTime::now_utc()).unwrap();
        counter.record_receipt(&[(month, 3)]);
        counter.add(2).unwrap();
        let (status_tx, status) = watch::channel(SyncStatus {
            connected: true,
            last_sync: Some(1_700_000_000),
            revision: 4,
            cert_expires_at: Some(1_800_000_000),
            cluster_url: "https://cp2.example.com:8005".into(),
            ..SyncStatus::default()
        });
        let mut state = DpState::default();
        state.upsert(HeldLicense {
            id: "lic-1".into(),
            document: licsync_testkit::Issuer::new().license_expiring("X", "2030-01-31"),
            created_at: 10,
            updated_at: 20,
            revision: 4,
        });
        let (state_tx, licenses) = watch::channel(Arc::new(state));
        let app = router(LocalApi {
            license_path: PathBuf::from("/etc/kong/license.json"),
            status,
            licenses,
            active_rule: ActiveRule::default(),
            usage: UsageApi {
                counter,
                statsd: None,
                flush_interval: Duration::from_secs(1),
                report_interval: Duration::from_secs(10),
            },
            reloads: None,
        });

        let get = || async {
            let response = app
                .clone()
                .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let text = get().await;
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(
            text.contains("# TYPE licsync_dp_sync_server info\n"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "licsync_dp_sync_server_info{url=\"https://cp2.example.com:8005\"}"
            ),
            Some("1"),
            "{text}"
        );
        for (family, kind, unit, name, value) in [
            (
                "licsync_dp_connected",
                "gauge",
                None,
                "licsync_dp_connected",
                "1",
            ),
            (
                "licsync_dp_last_sync_timestamp_seconds",
                "gauge",
                Some("seconds"),
                "licsync_dp_last_sync_timestamp_seconds",
                "1700000000",
            ),
            (
                "licsync_dp_revision",
                "gauge",
                None,
                "licsync_dp_revision",
                "4",
            ),
            (
                "licsync_dp_license_expiry_timestamp_seconds",
                "gauge",
                Some("seconds"),
                "licsync_dp_license_expiry_timestamp_seconds",
                // 2030-02-01T00:00:00Z: in force through 2030-01-31.
                "1896134400",
            ),
            (
                "licsync_dp_certificate_expiry_timestamp_seconds",
                "gauge",
                Some("seconds"),
                "licsync_dp_certificate_expiry_timestamp_seconds",
                "1800000000",
            ),
            (
                "licsync_dp_usage_requests",
                "counter",
                None,
                "licsync_dp_usage_requests_total",
                "9",
            ),
            (
                "licsync_dp_usage_unreported_requests",
                "gauge",
                None,
                "licsync_dp_usage_unreported_requests",
                "6",
            ),
            (
                "licsync_dp_reload_failures",
                "counter",
                None,
                "licsync_dp_reload_failures_total",
                "0",
            ),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}: {text}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            if let Some(unit) = unit {
                assert!(
                    text.contains(&format!("# UNIT {family} {unit}\n")),
                    "{text}"
                );
            }
            assert_eq!(sample(&text, name), Some(value), "{name}: {text}");
        }

        // Without a license or a certificate, their expiry is left out rather than shown as 0.
        status_tx.send_modify(|s| {
            s.connected = false;
            s.cert_expires_at = None;
        });
        state_tx.send_replace(Arc::new(DpState::default()));
        let text = get().await;
        assert_eq!(sample(&text, "licsync_dp_connected"), Some("0"));
        assert!(!text.contains("licsync_dp_license_expiry"), "{text}");
        assert!(!text.contains("licsync_dp_certificate_expiry"), "{text}");
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn a_license_ends_at_the_end_of_its_expiration_date() {
        let date = Date::from_calendar_date(2030, time::Month::January, 31).unwrap();
        assert_eq!(license_end(date), 1_896_134_400);
    }
}
