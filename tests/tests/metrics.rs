//! Both programs' `GET /metrics`, scraped from the real binaries as Prometheus would and read
//! with an OpenMetrics parser: the values move as a data plane connects, a license is written
//! and usage is reported, and the two sides agree.

use std::collections::HashMap;
use std::time::Duration;

use licsync_testkit::{Issuer, eventually};
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use prometheus_parse::{Scrape, Value};

/// Every counter and gauge sample of one scrape, by name and sorted `k=v` labels.
async fn scrape(url: &str) -> HashMap<String, f64> {
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .unwrap()
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(_) | Value::Summary(_) => return None,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            Some((format!("{}{{{}}}", sample.metric, labels.join(",")), value))
        })
        .collect()
}

/// Scrapes `url` until every `(sample, value)` of `want` holds; returns that scrape.
async fn scrape_until(url: &str, what: &str, want: &[(&str, f64)]) -> HashMap<String, f64> {
    eventually(what, || async {
        let metrics = scrape(url).await;
        want.iter()
            .all(|(name, value)| metrics.get(*name) == Some(value))
            .then_some(metrics)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_programs_metrics_follow_connection_license_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let cp_url = cp.status_url.clone();
    scrape_until(
        &cp_url,
        "an empty fleet",
        &[
            ("licsync_cp_dataplanes{state=connected}", 0.0),
            ("licsync_cp_dataplanes{state=registered}", 0.0),
            ("licsync_cp_revision{}", 0.0),
        ],
    )
    .await;

    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge-metrics").await;
    let dp = Dp::start(&dp_dir, "[usage]\nreport_interval = \"1s\"\n").await;
    scrape_until(
        &cp_url,
        "the data plane connected",
        &[
            ("licsync_cp_dataplanes{state=connected}", 1.0),
            ("licsync_cp_dataplanes{state=registered}", 1.0),
        ],
    )
    .await;
    scrape_until(
        &dp.local_url,
        "the agent connected",
        &[("licsync_dp_connected{}", 1.0)],
    )
    .await;

    // A license reaches the agent: both sides show its revision and its expiry.
    let document = issuer.license_expiring("Metrics Corp", "2030-01-31");
    let entity = cp.create_license(&document).await;
    let id = entity["id"].as_str().unwrap();
    dp.wait_for_license(Some(&document), Duration::from_secs(20))
        .await;
    let expiry = 1_896_134_400.0; // 2030-02-01T00:00:00Z
    scrape_until(
        &cp_url,
        "the license acknowledged",
        &[
            ("licsync_cp_revision{}", 1.0),
            (
                &format!("licsync_cp_license_expiry_timestamp_seconds{{license_id={id}}}"),
                expiry,
            ),
            ("licsync_cp_sync_propagation_seconds_count{}", 1.0),
        ],
    )
    .await;
    scrape_until(
        &dp.local_url,
        "the agent holding it",
        &[
            ("licsync_dp_revision{}", 1.0),
            ("licsync_dp_license_expiry_timestamp_seconds{}", expiry),
        ],
    )
    .await;

    // Requests counted by the agent reach the control plane's per-month counter.
    let response = reqwest::Client::new()
        .post(format!("{}/usage", dp.local_url))
        .body(r#"{"request_count": 1234}"#)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let month =
        licsync_common::usage_month::UsageMonth::of(time::OffsetDateTime::now_utc()).unwrap();
    scrape_until(
        &dp.local_url,
        "the usage confirmed",
        &[
            ("licsync_dp_usage_requests_total{}", 1234.0),
            ("licsync_dp_usage_unreported_requests{}", 0.0),
        ],
    )
    .await;
    scrape_until(
        &cp_url,
        "the usage reported",
        &[(
            &format!("licsync_cp_usage_requests_total{{month={month}}}"),
            1234.0,
        )],
    )
    .await;
}
