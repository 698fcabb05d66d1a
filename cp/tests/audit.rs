//! The audit trail as an operator reads it (`GET /audit`, admin only): every Admin API change
//! with who made it, from where, on what and how it ended, refused attempts included, and a
//! data plane's registration; no secret in any record.

use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /admin-tokens` with `role`; the secret.
async fn token(cp: &ControlPlane, name: &str, role: &str) -> String {
    let (status, body) = cp
        .call(
            Method::POST,
            "/admin-tokens",
            Some(json!({ "name": name, "role": role })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_refusals_and_registrations_are_audited_without_secrets() {
    let cp = ControlPlane::start().await;
    let operator = token(&cp, "ci", "operator").await;
    let viewer = token(&cp, "dash", "viewer").await;
    let document = cp.issuer.license("Audited Inc");
    let (status, created) = send(
        cp.anonymous(Method::POST, "/licenses")
            .bearer_auth(&operator)
            .json(&json!({ "payload": document })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let license_id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = send(
        cp.anonymous(Method::DELETE, &format!("/licenses/{license_id}"))
            .bearer_auth(&viewer),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        cp.anonymous(Method::POST, "/licenses")
            .bearer_auth("lsa_not-a-token")
            .json(&json!({ "payload": "{}" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let dp = cp.register_dataplane(licsync_common::VERSION).await;

    // Only admins read it.
    let (status, _) = send(cp.anonymous(Method::GET, "/audit").bearer_auth(&operator)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = cp
        .call(Method::GET, "/audit?since=0&limit=1000", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let records = body["data"].as_array().unwrap().clone();
    let find = |action: &str, result: &str| -> Value {
        records
            .iter()
            .find(|r| r["action"] == action && r["result"] == result)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} {result} in {records:#?}"))
    };
    let create = find("POST /licenses", "ok");
    assert!(
        create["actor"]
            .as_str()
            .unwrap()
            .starts_with("token 'ci' (id ")
    );
    assert!(create["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(create["resource"], "/licenses");
    assert!(create["at"].as_f64().unwrap() > 1.0e9);
    let denied = find("DELETE /licenses/{id}", "denied (403)");
    assert!(
        denied["actor"]
            .as_str()
            .unwrap()
            .starts_with("token 'dash'")
    );
    assert_eq!(denied["resource"], format!("/licenses/{license_id}"));
    let anonymous = find("POST /licenses", "denied (401)");
    assert_eq!(anonymous["actor"], "-");
    let registered = find("dataplane.register", "ok");
    assert!(
        registered["actor"]
            .as_str()
            .unwrap()
            .starts_with(&format!("dataplane {}", dp.id)),
        "{registered}"
    );
    find("POST /admin-tokens", "ok");

    let text = body.to_string();
    for secret in [operator.as_str(), viewer.as_str(), cp.admin_token()] {
        assert!(!text.contains(secret), "a secret is in the audit trail");
    }
    // Records are in time order and `since`/`limit` page through them.
    let times: Vec<f64> = records.iter().map(|r| r["at"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let (_, two) = cp.call(Method::GET, "/audit?limit=2", None).await;
    assert_eq!(two["data"].as_array().unwrap().len(), 2);
    let (status, body) = cp.call(Method::GET, "/audit?limit=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = cp.call(Method::GET, "/audit?since=yesterday", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("since"),
        "{body}"
    );
}
