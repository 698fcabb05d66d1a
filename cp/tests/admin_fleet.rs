//! Registration tokens (shown once, listed without the secret, revocable), `/status` and the
//! fleet listing, against a real server on `127.0.0.1:0`.

mod support;

use support::*;

#[tokio::test]
async fn registration_tokens_are_shown_once_listed_without_secret_and_revocable() {
    let api = Api::start().await;
    let (status, created) = send(
        api.call(Method::POST, "/registration-tokens")
            .json(&json!({"name": "edge-eu-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("lsr_"), "{secret}");
    assert_eq!(created["name"], "edge-eu-1");
    assert_eq!(created["max_uses"], 1);
    assert_eq!(created["ca_cert_sha256"], FINGERPRINT);
    assert_eq!(created["cluster_url"], api.cp.cluster_url());
    let expires_in = created["expires_at"].as_i64().unwrap() - unix_now();
    assert!(
        (4 * 3600 - 60..=4 * 3600).contains(&expires_in),
        "{expires_in}"
    );

    let stored = api.store.registration_tokens().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].token_hash,
        secrets::hash(&secret),
        "stored hashed"
    );
    assert_ne!(stored[0].token_hash, secret);

    let response = api.get("/registration-tokens").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&secret) && !text.contains(&stored[0].token_hash),
        "{text}"
    );
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["next"], Value::Null);
    assert_eq!(
        listed["data"],
        json!([{"id": created["id"], "name": "edge-eu-1", "created_at": stored[0].created_at,
                "expires_at": created["expires_at"], "max_uses": 1, "uses": 0, "expired": false}])
    );

    let (status, custom) = send(
        api.call(Method::POST, "/registration-tokens")
            .json(&json!({"name": "fleet", "ttl": "30d", "max_uses": 50})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(custom["max_uses"], 50);
    assert!(custom["expires_at"].as_i64().unwrap() - unix_now() > 29 * 86_400);

    let (status, _) = send(api.call(
        Method::DELETE,
        &format!("/registration-tokens/{}", created["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = send(api.get("/registration-tokens")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], custom["id"]);
    api.stop().await;
}

#[tokio::test]
async fn registration_token_limits_are_explained() {
    let api = Api::start().await;
    for (body, says) in [
        (json!({"ttl": "31d"}), "30d"),
        (json!({"ttl": "0s"}), "1s"),
        (json!({"ttl": "soon"}), "e.g."),
        (json!({"max_uses": 0}), "1 to 10000"),
        (json!({"max_uses": 10_001}), "1 to 10000"),
        (json!({"name": "n".repeat(129)}), "128"),
    ] {
        let (status, answer) =
            send(api.call(Method::POST, "/registration-tokens").json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert!(api.store.registration_tokens().await.unwrap().is_empty());
    api.stop().await;
}

#[tokio::test]
async fn status_and_fleet_report_what_the_control_plane_knows() {
    let api = Api::start().await;
    api.create("A").await;
    let dataplane = DataPlaneRecord {
        id: Uuid::new_v4(),
        name: "edge-1".into(),
        hostname: "edge-1.example".into(),
        ip: "10.0.0.7".into(),
        version: "0.1.0".into(),
        registered_at: unix_now(),
        cert_serial: "01".into(),
        previous_cert_serial: None,
        retired_cert_serials: Vec::new(),
        cert_expires_at: unix_now() + 86_400,
        last_seen: None,
        license_id: None,
        license_updated_at: None,
        revoked: false,
    };
    api.store.put_dataplane(&dataplane).await.unwrap();
    api.cp.dataplanes().stream_opened(dataplane.id, unix_now());

    let (status, body) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], licsync_common::VERSION);
    assert_eq!(body["storage"]["backend"], "memory");
    assert_eq!(body["dataplanes"], json!({"connected": 1, "registered": 1}));
    assert_eq!(body["revision"], 1);

    let (status, body) = send(api.get("/clustering/data-planes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["next"], Value::Null);
    let listed = &body["data"][0];
    assert_eq!(listed["id"], dataplane.id.to_string());
    assert_eq!(listed["hostname"], "edge-1.example");
    assert_eq!(listed["connected"], true);

    let (status, one) = send(api.get(&format!("/clustering/data-planes/{}", dataplane.id))).await;
    assert_eq!((status, &one), (StatusCode::OK, listed));
    let (status, _) = send(api.get(&format!("/clustering/data-planes/{}", Uuid::new_v4()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.stop().await;
}
