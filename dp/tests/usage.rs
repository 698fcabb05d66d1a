//! Usage metering at the data plane, against real agents: `POST /usage` and the statsd
//! listener counting, counters surviving SIGKILL and SIGTERM of the real binary, a wiped data
//! dir starting a new epoch, license expiry logs, and exactly-once reporting to the real
//! control plane.
//!
//! The reporting tests (`reported_*`) need the control plane's side of usage metering
//! (`LicenseSync.ReportUsage` and `GET /license/report`); until it is there they are ignored.

mod support;

use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_dp::clock::ManualClock;
use licsync_dp::config::{DpConfig, SyncConfig, UsageConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::agent::Agent;
use support::usage_agent::{
    AgentProcess, ProcessConfig, bucket_count, offline_registration, total_count,
};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Events, Issuer, eventually};
use time::OffsetDateTime;
use time::macros::datetime;

/// The UTC month now, as the agent buckets it.
fn this_month() -> String {
    let now = OffsetDateTime::now_utc();
    format!("{:04}-{:02}", now.year(), u8::from(now.month()))
}

fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff_initial: HumanDuration(Duration::from_millis(20)),
        backoff_max: HumanDuration(Duration::from_millis(200)),
        ..SyncConfig::default()
    }
}

/// An agent configuration in `dir` (registration file `dir/registration.yaml`), flushing and
/// reporting fast.
fn agent_config(dir: &std::path::Path) -> DpConfig {
    DpConfig {
        data_dir: dir.join("data"),
        registration_file: dir.join("registration.yaml"),
        sync: fast_sync(),
        usage: UsageConfig {
            flush_interval: HumanDuration(Duration::from_millis(50)),
            report_interval: HumanDuration(Duration::from_millis(200)),
            ..UsageConfig::default()
        },
        ..DpConfig::default()
    }
}

#[tokio::test]
async fn post_usage_counts_valid_increments_and_refuses_every_bad_body_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let agent = Agent::start(agent_config(&dir.path().join("dp"))).await;
    let api = &agent.api;

    let (status, body) = api.post_usage(r#"{"request_count": 3}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"bucket": this_month(), "request_count": 3}));
    // Any content type: a gateway's log plugin or `curl -d` sends what it sends.
    let response = reqwest::Client::new()
        .post(format!("{}/usage", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"request_count":1000000000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let oversized = format!(
        "{{\"request_count\": 1, \"pad\": \"{}\"}}",
        "x".repeat(5000)
    );
    for (body, status, reason) in [
        ("", StatusCode::BAD_REQUEST, "not valid JSON"),
        ("request_count=5", StatusCode::BAD_REQUEST, "not valid JSON"),
        ("[5]", StatusCode::BAD_REQUEST, "not a JSON object"),
        ("{}", StatusCode::BAD_REQUEST, "request_count is missing"),
        (
            r#"{"request_count": 0}"#,
            StatusCode::BAD_REQUEST,
            "at least 1",
        ),
        (
            r#"{"request_count": -4}"#,
            StatusCode::BAD_REQUEST,
            "at least 1",
        ),
        (
            r#"{"request_count": 2.5}"#,
            StatusCode::BAD_REQUEST,
            "an integer",
        ),
        (
            r#"{"request_count": "7"}"#,
            StatusCode::BAD_REQUEST,
            "not a string",
        ),
        (
            r#"{"request_count": null}"#,
            StatusCode::BAD_REQUEST,
            "not null",
        ),
        (
            r#"{"request_count": 1000000001}"#,
            StatusCode::BAD_REQUEST,
            "more than 1000000000",
        ),
        (
            r#"{"request_count": 1, "service": "orders"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field 'service'",
        ),
        (
            &oversized,
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than 4096 bytes",
        ),
    ] {
        let (got, answer) = api.post_usage(body.to_owned()).await;
        assert_eq!(got, status, "{body:.80}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{body:.80}: {answer}");
    }
    let response = reqwest::Client::new()
        .put(format!("{}/usage", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Only the accepted increments were counted, and they become durable.
    let usage = api
        .usage_when("the counts to be flushed", |u| u["unflushed"] == 0)
        .await;
    assert_eq!(
        bucket_count(&usage, &this_month()),
        1_000_000_003,
        "{usage}"
    );
    let (_, status) = api.get("/status").await;
    assert_eq!(status["usage"]["epoch"], usage["epoch"], "{status}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dp/data/usage.json")).unwrap())
            .unwrap();
    assert_eq!(file["epoch"], usage["epoch"]);
    assert_eq!(file["buckets"][0]["request_count"], 1_000_000_003);
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn requests_before_and_after_midnight_utc_on_the_first_land_in_different_months() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let clock = ManualClock::new(datetime!(2026-12-31 23:59:59.900 UTC));
    let config = agent_config(&dir.path().join("dp"));
    let agent = Agent::start_with_clock(config.clone(), Arc::new(clock.clone())).await;
    let (_, answer) = agent.api.post_usage(r#"{"request_count": 4}"#).await;
    assert_eq!(answer["bucket"], "2026-12");
    clock.set(datetime!(2027-01-01 00:00:00 UTC));
    let (_, answer) = agent.api.post_usage(r#"{"request_count": 6}"#).await;
    assert_eq!(answer["bucket"], "2027-01");
    agent.stop().await;

    // Both months are on disk, newest first.
    let agent = Agent::start_with_clock(config, Arc::new(clock)).await;
    let usage = agent.api.usage().await;
    let months: Vec<(&str, u64)> = usage["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bucket"].as_str().unwrap(),
                b["request_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(months, [("2027-01", 6), ("2026-12", 4)], "{usage}");
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn statsd_datagrams_over_udp_are_counted_and_malformed_lines_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let mut config = agent_config(&dir.path().join("dp"));
    config.usage.statsd_listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = Agent::start(config).await;
    let usage = agent.api.usage().await;
    let listen: std::net::SocketAddr = usage["statsd"]["listen"].as_str().unwrap().parse().unwrap();

    let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // What Kong's statsd plugin sends for three requests (one sampled at 0.5, so two), with
    // the per-consumer and latency siblings that must not count, and some junk.
    gateway
        .send_to(
            b"kong.service.orders.request.count:1|c\n\
              kong.service.orders.user.bob.request.count:1|c\n\
              kong.service.orders.latency:12|ms\n\
              kong.service.orders.request.count:1|c|@0.5\n\
              kong.request.count:one|c\n",
            listen,
        )
        .await
        .unwrap();
    gateway
        .send_to(b"envoy.http.ingress_http.downstream_rq_total:4|c", listen)
        .await
        .unwrap();
    gateway.send_to(b"\x00\x01\x02", listen).await.unwrap();

    let usage = agent
        .api
        .usage_when("three datagrams", |u| u["statsd"]["datagrams"] == 3)
        .await;
    assert_eq!(bucket_count(&usage, &this_month()), 1 + 2 + 4, "{usage}");
    let statsd = &usage["statsd"];
    assert_eq!(statsd["counted_lines"], 3, "{statsd}");
    assert_eq!(statsd["ignored_lines"], 2, "{statsd}");
    assert_eq!(statsd["rejected_lines"], 2, "{statsd}");
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["usage"]["statsd_rejected_lines"], 2, "{status}");
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn the_binary_keeps_its_counts_through_sigkill_after_a_flush_and_sigterm_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    offline_registration(&dir.path().join("registration.yaml"));
    let mut config = ProcessConfig {
        dir: dir.path().to_owned(),
        flush_interval: "100ms",
    };
    let month = this_month();

    let agent = AgentProcess::start(&config).await;
    for n in [5, 7, 11] {
        agent.api.count(n).await;
    }
    let before = agent
        .api
        .usage_when("the counts to be flushed", |u| {
            u["unflushed"] == 0 && total_count(u) == 23
        })
        .await;
    agent.kill().await;

    // A flush interval longer than the test: only the shutdown flush can save what follows.
    config.flush_interval = "1h";
    let agent = AgentProcess::start(&config).await;
    let after = agent.api.usage().await;
    assert_eq!(
        after["epoch"], before["epoch"],
        "the same epoch after a crash"
    );
    assert_eq!(bucket_count(&after, &month), 23, "{after}");
    agent.api.count(19).await;
    let usage = agent.api.usage().await;
    assert_eq!(usage["unflushed"], 19, "{usage}");
    agent.terminate().await;

    let agent = AgentProcess::start(&config).await;
    let usage = agent.api.usage().await;
    assert_eq!(usage["epoch"], before["epoch"]);
    assert_eq!(bucket_count(&usage, &month), 42, "{usage}");
    assert_eq!(usage["unflushed"], 0, "{usage}");
    agent.terminate().await;
}

#[tokio::test]
async fn a_wiped_data_dir_counts_under_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    offline_registration(&dir.path().join("registration.yaml"));
    let config = ProcessConfig {
        dir: dir.path().to_owned(),
        flush_interval: "1s",
    };
    let agent = AgentProcess::start(&config).await;
    let first = agent.api.usage().await;
    agent.api.count(8).await;
    agent.terminate().await;

    let agent = AgentProcess::start(&config).await;
    assert_eq!(agent.api.usage().await["epoch"], first["epoch"]);
    agent.terminate().await;

    std::fs::remove_dir_all(config.data_dir()).unwrap();
    let agent = AgentProcess::start(&config).await;
    let wiped = agent.api.usage().await;
    let epoch = wiped["epoch"].as_str().unwrap();
    assert_ne!(epoch, first["epoch"].as_str().unwrap());
    assert!(uuid_like(epoch), "{epoch}");
    assert_eq!(total_count(&wiped), 0, "{wiped}");
    agent.terminate().await;
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn the_agent_logs_license_expiry_on_kongs_schedule_and_keeps_serving_an_expired_license() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let today = OffsetDateTime::now_utc().date();
    let in_days = |days: i64| (today + time::Duration::days(days)).to_string();
    cp.create_license(&issuer.license_expiring("Soon Corp", &in_days(60)))
        .await;
    let agent = Agent::start(agent_config(&dir.path().join("dp"))).await;

    let expiring = eventually("a license.expiring line", || async {
        events
            .named("license.expiring")
            .into_iter()
            .find(|e| e.field("license_key").is_none())
    })
    .await;
    assert_eq!(expiring.field("severity"), Some("warning"));
    assert_eq!(expiring.field("days_left"), Some("60"));

    // The control plane accepts an expired license; written last, it becomes the active one.
    let expired_doc = issuer.license_expiring("Lapsed Corp", &in_days(-3));
    let expired_id = cp.create_license(&expired_doc).await;
    // The agent's line: the in-process control plane logs one too, naming the license key.
    let expired = eventually("a license.expired line", || async {
        events
            .named("license.expired")
            .into_iter()
            .find(|e| e.field("license_key").is_none())
    })
    .await;
    assert_eq!(expired.field("severity"), Some("critical"));
    assert_eq!(expired.field("days_ago"), Some("3"));
    assert_eq!(expired.field("license.id"), Some(expired_id.as_str()));
    let (_, license) = agent.api.get("/license").await;
    assert_eq!(
        license["id"],
        expired_id.as_str(),
        "still served: {license}"
    );
    agent.stop().await;
    cp.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Reporting to the control plane.
// ---------------------------------------------------------------------------------------

/// `GET /license/report`.
async fn report(cp: &ControlPlane, query: &str) -> Value {
    let (status, body) = cp
        .call(Method::GET, &format!("/license/report{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the control plane's report counts `total` requests, then checks its counters.
async fn cp_total_reaches(cp: &ControlPlane, total: u64) -> Value {
    let body = eventually(&format!("the control plane to count {total}"), || async {
        let body = report(cp, "").await;
        (body["total_requests"] == total).then_some(body)
    })
    .await;
    let month = this_month();
    let counted: u64 = body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["bucket"] == month.as_str())
        .filter_map(|c| c["request_count"].as_u64())
        .sum();
    assert_eq!(counted, total, "{body}");
    body
}

/// The per-data-plane total in `?by=dataplane`: the object that names `id` and carries a
/// `total_requests`, wherever the breakdown puts it.
fn dataplane_total(report: &Value, id: &str) -> Option<u64> {
    match report {
        Value::Object(map) => {
            if map.values().any(|v| v == id)
                && let Some(total) = map.get("total_requests").and_then(Value::as_u64)
            {
                return Some(total);
            }
            map.values().find_map(|v| dataplane_total(v, id))
        }
        Value::Array(items) => items.iter().find_map(|v| dataplane_total(v, id)),
        _ => None,
    }
}

/// Waits until the agent has a confirmed report at least `reports` times.
async fn confirmed_reports(agent: &Agent, reports: u64) {
    agent
        .api
        .usage_when("reports to be confirmed", |u| {
            u["report"]["reports_confirmed"].as_u64() >= Some(reports)
        })
        .await;
}

#[tokio::test]
async fn reported_counts_reach_the_control_plane_once_across_duplicates_and_a_cp_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let agent = Agent::start(agent_config(&dir.path().join("dp"))).await;
    agent.api.count(3).await;
    agent.api.count(4).await;
    cp_total_reaches(&cp, 7).await;
    let usage = agent
        .api
        .usage_when("the receipt", |u| u["unreported"] == 0)
        .await;
    assert_eq!(usage["buckets"][0]["reported"], 7, "{usage}");

    // The same cumulative counts are reported again every report_interval: still 7.
    let seen = agent.api.usage().await["report"]["reports_confirmed"]
        .as_u64()
        .unwrap();
    confirmed_reports(&agent, seen + 3).await;
    let body = cp_total_reaches(&cp, 7).await;
    assert_eq!(body["total_requests"], 7);
    let by_dp = report(&cp, "?by=dataplane").await;
    assert_eq!(
        dataplane_total(&by_dp, &registration.dataplane_id),
        Some(7),
        "{by_dp}"
    );

    // Counts made while the control plane restarts are delivered once it is back.
    let cp = cp.restart().await;
    agent.api.count(5).await;
    cp_total_reaches(&cp, 12).await;
    agent.stop().await;

    // The agent restarted (same data dir, same epoch) resends its totals: no double count.
    let agent = Agent::start(agent_config(&dir.path().join("dp"))).await;
    confirmed_reports(&agent, 2).await;
    cp_total_reaches(&cp, 12).await;
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn reported_counts_are_not_doubled_by_a_sigkill_after_a_delivered_report() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    let dp = dir.path().join("dp");
    cp.register(&dp).await;
    let config = ProcessConfig {
        dir: dp,
        flush_interval: "100ms",
    };
    let agent = AgentProcess::start(&config).await;
    agent.api.count(10).await;
    cp_total_reaches(&cp, 10).await;
    agent
        .api
        .usage_when("the receipt", |u| u["unreported"] == 0)
        .await;
    agent.kill().await;

    let agent = AgentProcess::start(&config).await;
    agent.api.count(6).await;
    cp_total_reaches(&cp, 16).await;
    agent.terminate().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn reported_counts_of_a_wiped_data_plane_are_added_under_its_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let config = agent_config(&dir.path().join("dp"));
    let agent = Agent::start(config.clone()).await;
    agent.api.count(10).await;
    cp_total_reaches(&cp, 10).await;
    agent.stop().await;

    std::fs::remove_dir_all(&config.data_dir).unwrap();
    let agent = Agent::start(config).await;
    agent.api.count(3).await;
    let body = cp_total_reaches(&cp, 13).await;
    assert_eq!(
        body["total_requests"], 13,
        "not 10 (undercounted) nor 3 (lost)"
    );
    let by_dp = report(&cp, "?by=dataplane").await;
    assert_eq!(
        dataplane_total(&by_dp, &registration.dataplane_id),
        Some(13),
        "{by_dp}"
    );
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn reported_counts_stop_at_certificate_expiry_while_counting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .dataplane_cert_ttl(Duration::from_secs(4))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    // Without rotation, or the agent would renew its 4 s certificate before it expires.
    let mut config = agent_config(&dir.path().join("dp"));
    config.sync.rotate_certificate = false;
    let agent = Agent::start(config).await;
    agent.api.count(2).await;
    cp_total_reaches(&cp, 2).await;

    // Once the certificate has expired the control plane refuses this data plane.
    tokio::time::sleep(Duration::from_secs(5)).await;
    agent.api.count(9).await;
    let usage = agent
        .api
        .usage_when("the refusal to show", |u| {
            total_count(u) == 11 && u["unflushed"] == 0 && u["report"]["last_error"].is_string()
        })
        .await;
    assert_eq!(usage["unreported"], 9, "{usage}");
    cp_total_reaches(&cp, 2).await;
    agent.stop().await;
    cp.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A wrong clock and the bound on a month.
// ---------------------------------------------------------------------------------------

/// `usage.json` as an older agent left it: the clock once read 1999, and that month stays in
/// the file next to the current one.
fn usage_file_with(dir: &std::path::Path, buckets: &[(&str, u64)]) {
    std::fs::create_dir_all(dir).unwrap();
    let rows: Vec<Value> = buckets
        .iter()
        .map(|(bucket, count)| json!({"bucket": bucket, "request_count": count}))
        .collect();
    let file = json!({
        "format": 1,
        "epoch": uuid::Uuid::new_v4().to_string(),
        "created_at": 1,
        "buckets": rows,
    });
    std::fs::write(dir.join("usage.json"), file.to_string()).unwrap();
}

#[tokio::test]
async fn reported_current_month_is_confirmed_although_usage_json_holds_a_1999_month() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let config = agent_config(&dir.path().join("dp"));
    let month = this_month();
    usage_file_with(&config.data_dir, &[("1999-12", 5), (&month, 7)]);
    let agent = Agent::start(config).await;

    // The 1999 requests were never stored by any control plane: they are counted once, in the
    // current month, and that month is confirmed.
    cp_total_reaches(&cp, 12).await;
    let usage = agent
        .api
        .usage_when("the receipt", |u| u["unreported"] == 0 && u["held"] == 0)
        .await;
    assert_eq!(usage["buckets"].as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage["buckets"][0]["bucket"], month.as_str(), "{usage}");
    assert_eq!(usage["buckets"][0]["reported"], 12, "{usage}");
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn post_usage_past_the_bound_of_a_month_is_refused_with_400_and_never_saturates() {
    let dir = tempfile::tempdir().unwrap();
    offline_registration(&dir.path().join("registration.yaml"));
    let config = agent_config(dir.path());
    let bound: u64 = 1_000_000_000_000_000;
    usage_file_with(&config.data_dir, &[("2026-11", bound - 5)]);
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let agent = Agent::start_with_clock(config, Arc::new(clock.clone())).await;

    let (status, body) = agent.api.post_usage(r#"{"request_count": 5}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = agent.api.post_usage(r#"{"request_count": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["message"],
        "2026-11 already counts 1000000000000000 requests; 1 more would pass the bound of 1000000000000000 requests a month, so they were not counted"
    );
    let usage = agent.api.usage().await;
    assert_eq!(bucket_count(&usage, "2026-11"), bound, "{usage}");
    // The next month counts again.
    clock.set(datetime!(2026-12-01 00:00 UTC));
    agent.api.count(1).await;
    assert_eq!(bucket_count(&agent.api.usage().await, "2026-12"), 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_clock_at_1970_counts_nothing_under_1970_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let config = agent_config(&dir.path().join("dp"));
    let clock = ManualClock::new(datetime!(1970-01-01 00:00:42 UTC));
    let agent = Agent::start_with_clock(config.clone(), Arc::new(clock.clone())).await;

    let (status, body) = agent.api.post_usage(r#"{"request_count": 3}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"bucket": null, "request_count": 3, "held": true})
    );
    let usage = agent
        .api
        .usage_when("the held requests to be written", |u| u["unflushed"] == 0)
        .await;
    assert_eq!(usage["held"], 3, "{usage}");
    assert_eq!(usage["buckets"], json!([]), "{usage}");
    assert!(
        usage["clock_error"]
            .as_str()
            .is_some_and(|e| e.contains("1970-01 is outside")),
        "{usage}"
    );
    let file = std::fs::read_to_string(config.data_dir.join("usage.json")).unwrap();
    assert!(!file.contains("1970"), "{file}");
    // Restarted with the clock still wrong: still held, still not reported.
    agent.stop().await;
    let agent = Agent::start_with_clock(config, Arc::new(clock.clone())).await;
    assert_eq!(agent.api.usage().await["held"], 3);

    // The clock is right again: the held requests land in the current month, once.
    clock.set(OffsetDateTime::now_utc());
    agent.api.count(2).await;
    cp_total_reaches(&cp, 5).await;
    let usage = agent
        .api
        .usage_when("the receipt", |u| u["unreported"] == 0 && u["held"] == 0)
        .await;
    assert_eq!(bucket_count(&usage, &this_month()), 5, "{usage}");
    agent.stop().await;
    cp.shutdown().await;
}
