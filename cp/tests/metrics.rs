//! `GET /metrics` on the status listener, read with an OpenMetrics parser as Prometheus would,
//! moving as an operator acts: a data plane registers and connects, a license is written and
//! acknowledged (or refused), usage is reported, the Admin API is called. Also the status
//! listener's health probes and its bind error.

use licsync_common::usage_month::UsageMonth;
use licsync_testkit::{ControlPlane, eventually, send};
use prometheus_parse::{Scrape, Value};
use reqwest::{Method, StatusCode};

/// A sample: its name, its labels and its value.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape, every sample with its labels (histogram buckets left out: their `_count` and
/// `_sum` samples carry what the tests check).
struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

impl Metrics {
    /// The sample `name` whose labels include every one of `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(metric, have, _)| {
                metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, _, value)| *value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} is missing from\n{}", self.text))
    }

    /// A counter or histogram count that has not moved yet reads 0.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

async fn scrape(cp: &ControlPlane) -> Metrics {
    let response = reqwest::get(format!("{}/metrics", cp.status_url()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    let samples = scrape
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(_) | Value::Summary(_) => return None,
            };
            let labels = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((sample.metric, labels, value))
        })
        .collect();
    Metrics { samples, text }
}

/// Scrapes until `ready` holds.
async fn scrape_when(cp: &ControlPlane, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    eventually(what, || async {
        let metrics = scrape(cp).await;
        ready(&metrics).then_some(metrics)
    })
    .await
}

const DATAPLANES: &str = "licsync_cp_dataplanes";
const SYNC: &str = "licsync_cp_sync_updates_total";
const PROPAGATION: &str = "licsync_cp_sync_propagation_seconds_count";
const REQUESTS: &str = "licsync_cp_admin_requests_total";

#[tokio::test]
async fn metrics_move_with_the_fleet_licenses_sync_usage_and_admin_api() {
    let cp = ControlPlane::start().await;
    let now = licsync_common::unix_now() as f64;

    let before = scrape(&cp).await;
    assert_eq!(before.value(DATAPLANES, &[("state", "connected")]), 0.0);
    assert_eq!(before.value(DATAPLANES, &[("state", "registered")]), 0.0);
    assert_eq!(before.value("licsync_cp_revision", &[]), 0.0);
    assert_eq!(before.value("licsync_cp_ready", &[]), 1.0);
    assert_eq!(
        before.value(
            "licsync_cp_build_info",
            &[("version", licsync_common::VERSION)]
        ),
        1.0
    );
    for role in ["ca", "server"] {
        let expiry = before.value(
            "licsync_cp_certificate_expiry_timestamp_seconds",
            &[("role", role)],
        );
        assert!(expiry > now, "{role}: {expiry}");
    }
    assert_eq!(
        before.get("licsync_cp_license_entitled_dataplanes", &[]),
        None,
        "no license, no entitlement"
    );
    assert_eq!(
        before.get(
            "licsync_cp_dataplane_certificate_expiry_earliest_timestamp_seconds",
            &[]
        ),
        None,
        "no data plane, no certificate"
    );

    // A data plane registers and connects; its first (empty) update is acknowledged.
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let hello = stream.update().await;
    stream.ack(&hello).await;
    let connected = scrape_when(&cp, "the data plane connected and synced", |m| {
        m.get(DATAPLANES, &[("state", "connected")]) == Some(1.0)
            && m.count(SYNC, &[("result", "acked")]) == 1.0
    })
    .await;
    assert_eq!(connected.value(DATAPLANES, &[("state", "registered")]), 1.0);
    assert_eq!(
        connected.value(
            "licsync_cp_dataplanes_by_sync_status",
            &[("status", "normal")]
        ),
        1.0
    );
    assert_eq!(
        connected.value(
            "licsync_cp_dataplanes_by_sync_status",
            &[("status", "unknown")]
        ),
        0.0
    );
    assert!(
        connected.value(
            "licsync_cp_dataplane_certificate_expiry_earliest_timestamp_seconds",
            &[]
        ) > now
    );
    // Telling a data plane it is up to date propagates nothing.
    assert_eq!(connected.count(PROPAGATION, &[]), 0.0);

    // A license is written and acknowledged: revision, expiry, entitlement and propagation.
    let license = cp
        .create_license(&cp.issuer.license_with(
            "Metrics Corp",
            &[
                ("license_expiration_date", "2030-01-31"),
                ("dataplanes", "5"),
            ],
        ))
        .await;
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1);
    stream.ack(&update).await;
    let written = scrape_when(&cp, "the license acknowledged", |m| {
        m.count(PROPAGATION, &[]) == 1.0
    })
    .await;
    assert_eq!(written.value(SYNC, &[("result", "acked")]), 2.0);
    assert_eq!(written.value("licsync_cp_revision", &[]), 1.0);
    assert_eq!(
        written.value(
            "licsync_cp_license_expiry_timestamp_seconds",
            &[("license_id", &license)]
        ),
        // 2030-02-01T00:00:00Z: in force through 2030-01-31.
        1_896_134_400.0
    );
    assert_eq!(
        written.value("licsync_cp_license_entitled_dataplanes", &[]),
        5.0
    );
    assert!(written.value("licsync_cp_sync_propagation_seconds_sum", &[]) >= 0.0);

    // Admin API requests are counted by route template, never by raw path.
    let post = [
        ("method", "POST"),
        ("route", "/licenses"),
        ("status", "201"),
    ];
    assert_eq!(written.value(REQUESTS, &post), 1.0);
    let (status, _) = send(cp.request(Method::GET, &format!("/licenses/{license}"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(cp.request(Method::GET, "/no/such/route")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(cp.anonymous(Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let called = scrape_when(&cp, "the requests counted", |m| {
        m.count(REQUESTS, &[("route", "unmatched"), ("status", "401")]) == 1.0
    })
    .await;
    // prometheus-parse 0.2 skips a sample with a `}` inside a label value (Prometheus reads
    // it), so the template routes are checked in the text itself.
    for line in [
        "licsync_cp_admin_requests_total{method=\"GET\",route=\"/licenses/{id}\",status=\"200\"} 1\n",
        "licsync_cp_admin_request_duration_seconds_count{method=\"GET\",route=\"/licenses/{id}\"} 1\n",
    ] {
        assert!(called.text.contains(line), "{line}in\n{}", called.text);
    }
    assert_eq!(
        called.value(REQUESTS, &[("route", "unmatched"), ("status", "404")]),
        1.0
    );
    assert!(
        !called.text.contains("/no/such/route"),
        "a raw path never becomes a label: {}",
        called.text
    );

    // Usage reported by the data plane, per month.
    let month = UsageMonth::of(time::OffsetDateTime::now_utc())
        .unwrap()
        .to_string();
    cp.report_usage(
        &dp,
        &uuid::Uuid::new_v4().to_string(),
        &[(month.clone(), 42)],
    )
    .await
    .unwrap();
    scrape_when(&cp, "the usage reported", |m| {
        m.get("licsync_cp_usage_requests_total", &[("month", &month)]) == Some(42.0)
    })
    .await;

    // A Nack refusing the next license counts as rejected.
    let refused = cp.create_license(&cp.issuer.license("Refused Corp")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted[0].id, refused);
    let revision = update.upserted[0].revision;
    stream
        .nack(
            &update,
            "validation failed",
            &[(&refused, revision, "untrusted key")],
        )
        .await;
    let rejected = scrape_when(&cp, "the rejection counted", |m| {
        m.count(SYNC, &[("result", "rejected")]) == 1.0
    })
    .await;
    assert_eq!(
        rejected.value(
            "licsync_cp_dataplanes_by_sync_status",
            &[("status", "license_rejected")]
        ),
        1.0
    );
    assert_eq!(rejected.value(SYNC, &[("result", "timed_out")]), 0.0);
    assert_eq!(
        rejected.value(PROPAGATION, &[]),
        1.0,
        "a refusal propagated nothing"
    );

    // The data plane goes away: still registered, no longer connected.
    drop(stream);
    let gone = scrape_when(&cp, "the data plane disconnected", |m| {
        m.get(DATAPLANES, &[("state", "connected")]) == Some(0.0)
    })
    .await;
    assert_eq!(gone.value(DATAPLANES, &[("state", "registered")]), 1.0);
}

#[tokio::test]
async fn the_status_listener_serves_the_health_probes_and_nothing_else() {
    let cp = ControlPlane::start().await;
    let http = reqwest::Client::new();
    let status = cp.status_url();
    for probe in ["/health/live", "/health/ready"] {
        let (code, body) = send(http.get(format!("{status}{probe}"))).await;
        assert_eq!(code, StatusCode::OK, "{probe}");
        assert_eq!(body["status"], "ok", "{probe}");
    }
    let (code, body) = send(http.get(format!("{status}/licenses"))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("/metrics"),
        "{body}"
    );
    let (code, body) = send(http.post(format!("{status}/metrics"))).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    // The admin listener does not serve the metrics.
    let (code, _) = send(cp.request(Method::GET, "/metrics")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_taken_status_address_names_the_key_to_change() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = licsync_cp::config::CpConfig::default();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.cluster.listen = ([127, 0, 0, 1], 0).into();
    config.status.listen = taken.local_addr().unwrap();
    let error = match licsync_cp::server::Listeners::bind(&config).await {
        Ok(_) => panic!("bound an address in use"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(&format!("cannot listen on {}", config.status.listen))
            && error.ends_with("set status.listen"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unanswered_update_counts_as_timed_out() {
    let cp = ControlPlane::builder()
        .config(|config| {
            config.cluster.ack_timeout =
                licsync_common::duration::HumanDuration(std::time::Duration::from_secs(1));
        })
        .start()
        .await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    stream.update().await;
    // Never answered: the stream ends after cluster.ack_timeout.
    assert!(stream.ended().await.is_some());
    let ended = scrape_when(&cp, "the timeout counted", |m| {
        m.count(SYNC, &[("result", "timed_out")]) == 1.0
    })
    .await;
    assert_eq!(ended.value(SYNC, &[("result", "acked")]), 0.0);
}
