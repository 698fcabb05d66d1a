//! `GET /license/report` and `/license/report/key` against the whole control plane (the test
//! kit's) over in-memory storage, data planes registering and reporting usage over gRPC as
//! agents do: the fields a vendor reads, usage summed over data planes and epochs,
//! the active license or UNLICENSED, entitlement, and a signature that verifies offline and
//! fails once anything is edited.

use licsync_common::report::{self, ReportError};
use licsync_common::unix_now;
use licsync_cp::config::StorageBackend;
use licsync_cp::usage::UsageMonth;
use licsync_testkit::dataplane::DataPlane;
use licsync_testkit::fixtures::payload;
use licsync_testkit::{ControlPlane, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// The whole control plane over in-memory storage (so `db_version` says `memory`).
async fn start() -> ControlPlane {
    ControlPlane::builder()
        .config(|c| c.storage.backend = StorageBackend::Memory)
        .start()
        .await
}

fn this_month() -> UsageMonth {
    UsageMonth::of(OffsetDateTime::now_utc()).unwrap()
}

async fn report(api: &ControlPlane, path: &str) -> (Value, String) {
    let response = api.request(Method::GET, path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

async fn public_key(api: &ControlPlane) -> String {
    let (status, body) = send(api.request(Method::GET, "/license/report/key")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["algorithm"], "ed25519");
    body["public_key"].as_str().unwrap().to_owned()
}

/// `dp` reports `counts` for `epoch` over `ReportUsage`, as its agent would.
async fn record(api: &ControlPlane, dp: &DataPlane, epoch: Uuid, counts: &[(UsageMonth, u64)]) {
    let counts: Vec<_> = counts.iter().map(|(m, n)| (m.to_string(), *n)).collect();
    let receipt = api
        .report_usage(dp, &epoch.to_string(), &counts)
        .await
        .unwrap();
    assert!(receipt.refused.is_empty(), "{:?}", receipt.refused);
}

#[tokio::test]
async fn a_new_control_plane_reports_unlicensed_and_no_usage_and_signs_it() {
    let api = start().await;
    let (body, text) = report(&api, "/license/report").await;
    assert_eq!(body["counters"], json!([]));
    assert_eq!(body["total_requests"], 0);
    assert_eq!(body["license"], json!({"license_key": "UNLICENSED"}));
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        body["db_version"],
        format!("memory {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        body["deployment_info"],
        json!({"type": "hybrid", "connected_dataplanes": 0, "registered_dataplanes": 0,
               "entitled_dataplanes": null})
    );
    assert!(body["system_info"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(body["system_info"]["hostname"].as_str().unwrap().len(), 64);
    assert!(
        body["system_info"]["uname"]
            .as_str()
            .unwrap()
            .starts_with("Linux ")
    );
    assert_eq!(body["rbac_users"], 0);
    assert_eq!(body["entitlement_exceeded"], false);
    assert!((body["timestamp"].as_i64().unwrap() - unix_now()).abs() <= 60);
    assert!(body.get("dataplanes").is_none());
    assert_eq!(body["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(body["signature"].as_str().unwrap().len(), 128);

    let verified = report::verify(text.as_bytes(), &public_key(&api).await).unwrap();
    assert_eq!(verified.checksum, body["checksum"]);

    // Users count as RBAC users; API tokens do not.
    for (name, role) in [("alice", "admin"), ("bob", "viewer")] {
        let (status, created) = send(api.request(Method::POST, "/users").json(&json!({
            "username": name, "password": "correct horse battery", "role": role,
        })))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (body, _) = report(&api, "/license/report").await;
    assert_eq!(body["rbac_users"], 2);
    api.shutdown().await;
}

#[tokio::test]
async fn usage_is_summed_over_dataplanes_and_epochs_for_the_last_12_months() {
    let api = start().await;
    let a = api.register_named("edge-a", "0.1.0").await;
    let b = api.register_named("edge-b", "0.1.0").await;
    let _stream = api.sync(&a, "0.1.0").await.unwrap();
    eventually("edge-a to count as connected", || async {
        (api.dataplane(&a.id).await["connected"] == true).then_some(())
    })
    .await;
    let now = this_month();
    let (first, wiped) = (Uuid::new_v4(), Uuid::new_v4());
    record(&api, &a, first, &[(now, 100), (now.minus(1), 40)]).await;
    // A retry and an older (reordered) report change nothing.
    record(&api, &a, first, &[(now, 100)]).await;
    record(&api, &a, first, &[(now, 60)]).await;
    // Its state was wiped: a new epoch adds.
    record(&api, &a, wiped, &[(now, 5)]).await;
    record(&api, &b, Uuid::new_v4(), &[(now, 1), (now.minus(11), 2)]).await;
    // Thirteen months ago: outside the report.
    record(&api, &b, Uuid::new_v4(), &[(now.minus(12), 1000)]).await;

    let (body, _) = report(&api, "/license/report").await;
    assert_eq!(
        body["counters"],
        json!([
            {"bucket": now.to_string(), "request_count": 106},
            {"bucket": now.minus(1).to_string(), "request_count": 40},
            {"bucket": now.minus(11).to_string(), "request_count": 2},
        ])
    );
    assert_eq!(body["total_requests"], 148);
    assert_eq!(body["deployment_info"]["connected_dataplanes"], 1);
    assert_eq!(body["deployment_info"]["registered_dataplanes"], 2);

    let (by, text) = report(&api, "/license/report?by=dataplane").await;
    assert_eq!(by["total_requests"], 148);
    let mut rows = by["dataplanes"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["name"].as_str().unwrap().to_owned());
    assert_eq!(
        rows,
        vec![
            json!({"id": a.id, "name": "edge-a", "total_requests": 145, "counters": [
                {"bucket": now.to_string(), "request_count": 105},
                {"bucket": now.minus(1).to_string(), "request_count": 40}]}),
            json!({"id": b.id, "name": "edge-b", "total_requests": 3, "counters": [
                {"bucket": now.to_string(), "request_count": 1},
                {"bucket": now.minus(11).to_string(), "request_count": 2}]}),
        ]
    );
    report::verify(text.as_bytes(), &public_key(&api).await).unwrap();
    api.shutdown().await;
}

#[tokio::test]
async fn the_active_license_and_its_entitlement_are_reported() {
    let api = start().await;
    let license = |key: &str, expires: &str, dataplanes: &str| {
        let mut p = payload("Example");
        p.insert("license_key".into(), key.into());
        p.insert("license_expiration_date".into(), expires.into());
        p.insert("dataplanes".into(), dataplanes.into());
        api.issuer.sign(&p)
    };
    for document in [
        license("OLD", "2029-01-31", "5"),
        license("NEW", "2031-06-30", "1"),
    ] {
        let (status, body) = send(
            api.request(Method::POST, "/licenses")
                .json(&json!({ "payload": document })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The later write wins the `updated_at` tie.
    let (body, _) = report(&api, "/license/report").await;
    assert_eq!(
        body["license"],
        json!({"license_key": "NEW", "license_expiration_date": "2031-06-30"})
    );
    assert_eq!(body["deployment_info"]["entitled_dataplanes"], 1);
    assert_eq!(body["entitlement_exceeded"], false);
    api.register_named("one", "0.1.0").await;
    let (body, _) = report(&api, "/license/report").await;
    assert_eq!(
        body["entitlement_exceeded"], false,
        "1 of 1 is not exceeded"
    );
    api.register_named("two", "0.1.0").await;
    let (body, _) = report(&api, "/license/report").await;
    assert_eq!(body["entitlement_exceeded"], true);
    assert_eq!(body["deployment_info"]["registered_dataplanes"], 2);
    api.shutdown().await;
}

#[tokio::test]
async fn one_changed_count_breaks_the_checksum_and_a_recomputed_one_the_signature() {
    let api = start().await;
    let dp = api.register_named("edge", "0.1.0").await;
    record(&api, &dp, Uuid::new_v4(), &[(this_month(), 1234)]).await;
    let (_, text) = report(&api, "/license/report").await;
    let key = public_key(&api).await;
    report::verify(text.as_bytes(), &key).unwrap();

    let edited = text.replace("\"request_count\":1234", "\"request_count\":1233");
    assert_ne!(edited, text);
    assert!(matches!(
        report::verify(edited.as_bytes(), &key),
        Err(ReportError::ChecksumMismatch { .. })
    ));

    let mut value: serde_json::Map<String, Value> = serde_json::from_str(&edited).unwrap();
    let checksum = licsync_common::pki::sha256_hex(&report::canonical_bytes(&value));
    value.insert("checksum".into(), json!(checksum));
    assert_eq!(
        report::verify(&serde_json::to_vec(&value).unwrap(), &key),
        Err(ReportError::SignatureInvalid)
    );
    api.shutdown().await;
}

#[tokio::test]
async fn the_report_needs_a_token_and_refuses_unknown_parameters() {
    let api = start().await;
    for path in ["/license/report", "/license/report/key"] {
        let (status, body) = send(api.anonymous(Method::GET, path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    let response = api
        .anonymous(Method::GET, "/license/report")
        .header("Kong-Admin-Token", api.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "Kong-Admin-Token works");
    for (query, says) in [
        ("by=workspace", "by must be 'dataplane'"),
        ("size=10", "unknown query parameter 'size'"),
    ] {
        let (status, body) =
            send(api.request(Method::GET, &format!("/license/report?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    let (status, _) = send(api.request(Method::POST, "/license/report")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    api.shutdown().await;
}
