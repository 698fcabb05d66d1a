//! Registration tokens (shown once, listed without the secret, revocable), `/status` and the
//! fleet listing, against the whole control plane (the test kit's). That only the secret's
//! digest is stored is unit-tested in `cp/src/registration_tokens.rs`.

use licsync_common::unix_now;
use licsync_cp::config::StorageBackend;
use licsync_cp::secrets;
use licsync_testkit::{ControlPlane, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn registration_tokens_are_shown_once_listed_without_secret_and_revocable() {
    let api = ControlPlane::start().await;
    let (status, created) = send(
        api.request(Method::POST, "/registration-tokens")
            .json(&json!({"name": "edge-eu-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("lsr_"), "{secret}");
    assert_eq!(created["name"], "edge-eu-1");
    assert_eq!(created["max_uses"], 1);
    assert_eq!(created["ca_cert_sha256"], api.ca_fingerprint());
    assert_eq!(created["cluster_url"], api.config().cluster.cluster_url());
    let expires_in = created["expires_at"].as_i64().unwrap() - unix_now();
    assert!(
        (4 * 3600 - 60..=4 * 3600).contains(&expires_in),
        "{expires_in}"
    );

    let digest = secrets::hash(&secret);
    let response = api
        .request(Method::GET, "/registration-tokens")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret) && !text.contains(&digest), "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["next"], Value::Null);
    assert_eq!(
        listed["data"],
        json!([{"id": created["id"], "name": "edge-eu-1", "created_at": listed["data"][0]["created_at"],
                "expires_at": created["expires_at"], "max_uses": 1, "uses": 0, "expired": false}])
    );

    let (status, custom) = send(
        api.request(Method::POST, "/registration-tokens")
            .json(&json!({"name": "fleet", "ttl": "30d", "max_uses": 50})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(custom["max_uses"], 50);
    assert!(custom["expires_at"].as_i64().unwrap() - unix_now() > 29 * 86_400);

    let (status, _) = send(api.request(
        Method::DELETE,
        &format!("/registration-tokens/{}", created["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = send(api.request(Method::GET, "/registration-tokens")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], custom["id"]);
    api.shutdown().await;
}

#[tokio::test]
async fn registration_token_limits_are_explained() {
    let api = ControlPlane::start().await;
    for (body, says) in [
        (json!({"ttl": "31d"}), "30d"),
        (json!({"ttl": "0s"}), "1s"),
        (json!({"ttl": "soon"}), "e.g."),
        (json!({"max_uses": 0}), "1 to 10000"),
        (json!({"max_uses": 10_001}), "1 to 10000"),
        (json!({"name": "n".repeat(129)}), "128"),
    ] {
        let (status, answer) = send(
            api.request(Method::POST, "/registration-tokens")
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, listed) = send(api.request(Method::GET, "/registration-tokens")).await;
    assert_eq!((status, &listed["data"]), (StatusCode::OK, &json!([])));
    api.shutdown().await;
}

#[tokio::test]
async fn status_and_fleet_report_what_the_control_plane_knows() {
    let api = ControlPlane::builder()
        .config(|c| c.storage.backend = StorageBackend::Memory)
        .start()
        .await;
    api.create_license(&api.issuer.license("A")).await;
    let dataplane = api.register_dataplane("0.1.0").await;
    let _stream = api.sync(&dataplane, "0.1.0").await.unwrap();

    let body = eventually("the data plane to count as connected", || async {
        let (status, body) = send(api.request(Method::GET, "/status")).await;
        assert_eq!(status, StatusCode::OK);
        (body["dataplanes"]["connected"] == 1).then_some(body)
    })
    .await;
    assert_eq!(body["version"], licsync_common::VERSION);
    assert_eq!(body["storage"]["backend"], "memory");
    assert_eq!(body["dataplanes"], json!({"connected": 1, "registered": 1}));
    assert_eq!(body["revision"], 1);

    let (status, body) = send(api.request(Method::GET, "/clustering/data-planes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["next"], Value::Null);
    let listed = &body["data"][0];
    assert_eq!(listed["id"], dataplane.id);
    assert_eq!(listed["hostname"], "edge-1.example");
    assert_eq!(listed["ip"], "127.0.0.1");
    assert_eq!(listed["version"], "0.1.0");
    assert_eq!(listed["connected"], true);

    // The one shown is the one listed (the stream may move it on between two calls).
    eventually("GET of the data plane to match its listing", || async {
        let one = api.dataplane(&dataplane.id).await;
        let listed = api.dataplanes().await;
        (listed.len() == 1 && one == listed[0]).then_some(())
    })
    .await;
    let (status, _) = send(api.request(
        Method::GET,
        &format!("/clustering/data-planes/{}", Uuid::new_v4()),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.shutdown().await;
}
