//! A PostgreSQL outage under a running control plane, with a real server stopped and started
//! again mid-test: writes fail `503 storage unavailable: ...` and lose nothing acknowledged,
//! `/health/ready` turns `503` and back, open data-plane streams stay up throughout, and
//! once the database returns a write reaches the data plane as before.
//!
//! It stops the test binary's one PostgreSQL server, so it is alone in this file.

use std::time::Duration;

use licsync_testkit::postgres::{fresh_database, start_server, stop_server};
use licsync_testkit::{ControlPlane, Events, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `/health/ready`'s status and body.
async fn readiness(cp: &ControlPlane) -> (StatusCode, Value) {
    licsync_testkit::send(cp.anonymous(Method::GET, "/health/ready")).await
}

// One thread: the log capture sees the events of tasks on it only.
#[tokio::test]
async fn writes_answer_503_and_streams_stay_up_while_the_database_is_down() {
    let (events, _capture) = Events::capture();
    let url = fresh_database().await;
    let cp = ControlPlane::builder()
        .postgres(&url)
        .config(|c| c.storage.postgres.poll_interval.0 = Duration::from_millis(100))
        .start()
        .await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;
    let before = cp.create_license(&cp.issuer.license("Before")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted[0].id, before);
    stream.ack(&update).await;

    stop_server();
    let (status, body) = cp
        .call(
            Method::POST,
            "/licenses",
            Some(json!({ "payload": cp.issuer.license("During") })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("storage unavailable: "),
        "the message says what is wrong: {message}"
    );
    eventually("/health/ready reports storage unavailable", || async {
        let (status, body) = readiness(&cp).await;
        (status == StatusCode::SERVICE_UNAVAILABLE && body["status"] == "storage_unavailable")
            .then_some(())
    })
    .await;
    // Once the outage is known, the change feed's polls stop failing every interval (the
    // outage was logged once): none of them logs in a stretch of several poll intervals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = events.mark();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in [
        "cluster_feed.catch_up_failed",
        "cluster_feed.heartbeat_failed",
    ] {
        assert!(
            events.since(quiet, name).is_empty(),
            "{name} logged during the outage"
        );
    }
    assert_eq!(events.named("storage.unavailable").len(), 1);

    // Every Admin API token is checked against storage (so a revocation takes effect on the
    // next request at every node): reads answer the same 503 rather than serve a caller
    // whose token may have been revoked.
    let (status, body) = cp.call(Method::GET, "/licenses", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The open stream stays up: its heartbeat is answered.
    stream.heartbeat().await;
    stream.heartbeat_answer().await;

    start_server();
    eventually("/health/ready recovers", || async {
        (readiness(&cp).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let after = cp.create_license(&cp.issuer.license("After")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1, "only the new license is sent");
    assert_eq!(update.upserted[0].id, after);
    assert_eq!(update.revision, 2, "the refused write took no revision");
    stream.ack(&update).await;

    // Nothing acknowledged was lost and nothing refused was stored: a restarted node reads
    // exactly the two licenses back from the database.
    let cp = cp.restart().await;
    let (status, body) = cp.call(Method::GET, "/licenses", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![before.as_str(), after.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}
