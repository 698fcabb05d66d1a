//! Scoped Admin API tokens and user logins, as a client sees them (SPEC §10): tokens created
//! with a role and a lifetime through `/admin-tokens`, shown once; each role reaches what it
//! covers and gets `403` naming the role needed elsewhere; an expired or revoked token gets
//! `401` on its next request; the bootstrap token can be revoked once another admin token
//! exists, never before; users log in with HTTP Basic under their own role.

use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /admin-tokens` as the bootstrap admin; returns the answer.
async fn create_token(cp: &ControlPlane, body: Value) -> (StatusCode, Value) {
    cp.call(Method::POST, "/admin-tokens", Some(body)).await
}

/// A new token's secret and id, asserting `201`.
async fn token(cp: &ControlPlane, name: &str, role: &str) -> (String, String) {
    let (status, body) = create_token(cp, json!({ "name": name, "role": role, "ttl": "1h" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"], role);
    assert!(body["expires_at"].as_i64().unwrap() > body["created_at"].as_i64().unwrap());
    (
        body["token"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// `method path` with `secret` as the bearer token.
async fn call_as(
    cp: &ControlPlane,
    secret: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = cp.anonymous(method, path).bearer_auth(secret);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_what_it_covers_and_is_told_what_it_lacks() {
    let cp = ControlPlane::start().await;
    let (viewer, _) = token(&cp, "dashboards", "viewer").await;
    let (operator, _) = token(&cp, "ci", "operator").await;
    let (admin, _) = token(&cp, "second-admin", "admin").await;
    let license = cp.issuer.license("Roles Inc");

    // A viewer reads, and is told which role a change needs.
    for path in [
        "/licenses",
        "/clustering/data-planes",
        "/registration-tokens",
        "/status",
    ] {
        let (status, body) = call_as(&cp, &viewer, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "viewer GET {path}: {body}");
    }
    let (status, body) = call_as(
        &cp,
        &viewer,
        Method::POST,
        "/licenses",
        Some(json!({ "payload": license })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("token 'dashboards'")
            && message.contains("has the viewer role")
            && message.contains("POST /licenses needs the operator role"),
        "{message}"
    );
    let (status, _) = call_as(&cp, &viewer, Method::GET, "/admin-tokens", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tokens are not for viewers");

    // An operator runs the fleet, but not who may use the API.
    let (status, body) = call_as(
        &cp,
        &operator,
        Method::POST,
        "/licenses",
        Some(json!({ "payload": license })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call_as(
        &cp,
        &operator,
        Method::POST,
        "/registration-tokens",
        Some(json!({ "name": "edge", "ttl": "1h", "max_uses": 1 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (method, path) in [
        (Method::GET, "/admin-tokens"),
        (Method::POST, "/admin-tokens"),
        (Method::GET, "/users"),
        (Method::POST, "/users"),
        (Method::GET, "/connected-apps"),
    ] {
        let (status, body) = call_as(&cp, &operator, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "operator {method} {path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("needs the admin role"),
            "{body}"
        );
    }

    // An admin made through the API can do what the bootstrap token can.
    let (status, body) = call_as(&cp, &admin, Method::GET, "/admin-tokens", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["data"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "bootstrap and three new: {body}");
    for row in listed {
        assert!(
            row.get("token").is_none() && row.get("token_hash").is_none(),
            "{row}"
        );
    }
    let text = body.to_string();
    for secret in [&viewer, &operator, &admin] {
        assert!(
            !text.contains(secret.as_str()),
            "a listing never shows a secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stop_at_once_and_the_last_admin_token_stays() {
    let cp = ControlPlane::start().await;
    let (status, body) = cp.call(Method::GET, "/admin-tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let bootstrap_id = body["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["data"][0]["name"], "bootstrap-admin");
    assert_eq!(body["data"][0]["role"], "admin");

    // Alone, the bootstrap token cannot be revoked: nobody could use the API afterwards.
    let (status, body) = cp
        .call(
            Method::DELETE,
            &format!("/admin-tokens/{bootstrap_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("create another admin token"),
        "{body}"
    );

    // A viewer token is revoked at once.
    let (viewer, viewer_id) = token(&cp, "temp", "viewer").await;
    assert_eq!(
        call_as(&cp, &viewer, Method::GET, "/licenses", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = cp
        .call(Method::DELETE, &format!("/admin-tokens/{viewer_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = call_as(&cp, &viewer, Method::GET, "/licenses", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = cp
        .call(Method::DELETE, &format!("/admin-tokens/{viewer_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone");

    // With a second admin token, the bootstrap token can go, and stops working.
    let (admin, _) = token(&cp, "successor", "admin").await;
    let (status, body) = call_as(
        &cp,
        &admin,
        Method::DELETE,
        &format!("/admin-tokens/{bootstrap_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = cp.call(Method::GET, "/licenses", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the bootstrap token is revoked"
    );
    assert_eq!(
        call_as(&cp, &admin, Method::GET, "/admin-tokens", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_requests_are_refused_with_what_to_fix() {
    let cp = ControlPlane::start().await;
    for (body, needle) in [
        (json!({ "role": "admin" }), "name: required field missing"),
        (
            json!({ "name": "x", "role": "root" }),
            "expected one of: admin, operator, viewer",
        ),
        (
            json!({ "name": "x", "role": "viewer", "ttl": "10s" }),
            "ttl: expected a duration from 1m",
        ),
        (
            json!({ "name": "line\nbreak", "role": "viewer" }),
            "control characters",
        ),
    ] {
        let (status, answer) = create_token(&cp, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.to_string().contains(needle), "{body}: {answer}");
    }
    let (status, body) = cp.call(Method::GET, "/admin-tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_with_http_basic_under_their_role() {
    let cp = ControlPlane::start().await;
    cp.create_admin_user("alice", "correct horse battery").await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/users",
            Some(
                json!({ "username": "victor", "password": "viewer password 1", "role": "viewer" }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let basic = |user: &str, password: &str, method: Method, path: &str| {
        cp.anonymous(method, path).basic_auth(user, Some(password))
    };
    let (status, body) = send(basic(
        "alice",
        "correct horse battery",
        Method::GET,
        "/users",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        basic("victor", "viewer password 1", Method::POST, "/licenses")
            .json(&json!({ "payload": cp.issuer.license("X") })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("user 'victor' has the viewer role")
    );
    let (status, _) = send(basic(
        "victor",
        "viewer password 1",
        Method::GET,
        "/licenses",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = send(basic("alice", "wrong password!!", Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Invalid username or password")
    );
    let (status, body) = send(
        cp.anonymous(Method::GET, "/licenses")
            .header("authorization", "Basic not-base64!"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Malformed"));
}
