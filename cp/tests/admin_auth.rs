//! Admin API authentication, routing and health, as a client sees it (SPEC §3), against the
//! whole control plane (the test kit's): every route but the health probes needs a known
//! token, checked before routing; the bootstrap token file. What only storage shows (a deleted
//! token, readiness before start-up, the stored digest) is unit-tested in `cp/src/admin/tests.rs`
//! and `cp/src/principals/bootstrap.rs`.

use std::os::unix::fs::PermissionsExt;

use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn every_route_but_health_requires_a_known_token() {
    let api = ControlPlane::start().await;

    let (status, body) = send(api.anonymous(Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer <token>"),
        "{message}"
    );
    assert!(message.contains("Kong-Admin-Token"), "{message}");

    let (status, body) = send(
        api.anonymous(Method::GET, "/status")
            .bearer_auth("lsa_not-a-real-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid API token")
    );

    let (status, _) = send(
        api.anonymous(Method::POST, "/registration-tokens")
            .header("Kong-Admin-Token", "wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = send(api.request(Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "next": null}));

    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .header("Kong-Admin-Token", api.admin_token()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "Kong's header is accepted too");

    for path in ["/health/live", "/health/ready"] {
        let response = api.anonymous(Method::GET, path).send().await.unwrap();
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let response = api
            .anonymous(Method::GET, path)
            .bearer_auth("lsa_not-a-real-token")
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a stale token"
        );
    }
    api.shutdown().await;
}

#[tokio::test]
async fn the_token_is_checked_before_routing() {
    let api = ControlPlane::start().await;
    // Without a token, a wrong method or an unknown path is refused like any other request:
    // the answer must not depend on (or reveal) which routes exist.
    let requests = [
        (Method::PUT, "/licenses"),
        (Method::PATCH, "/licenses"),
        (Method::DELETE, "/licenses"),
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/health"),
        (Method::GET, "/health/live/"),
        (Method::GET, "/health/other"),
    ];
    for (method, path) in requests {
        let response = api.anonymous(method.clone(), path).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer, Basic realm=\"licsync\"",
            "{method} {path}"
        );
        assert!(
            response.headers().get("allow").is_none(),
            "{method} {path} reveals the route's methods"
        );
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("No API token found in request"),
            "{method} {path}: {message}"
        );

        let (status, body) = send(
            api.anonymous(method.clone(), path)
                .header("Kong-Admin-Token", "wrong"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid API token"),
            "{method} {path}: {body}"
        );
    }

    // With a token, routing answers as before: JSON 404 and 405.
    let (status, body) = send(api.request(Method::GET, "/nope")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, body) = send(api.request(Method::DELETE, "/licenses")).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method not allowed"})
        )
    );
    api.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let api = ControlPlane::start().await;
    let (status, body) = send(api.request(Method::GET, "/consumers")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = api
            .request(method.clone(), "/licenses")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "Method not allowed"}), "{method}");
    }
    api.shutdown().await;
}

#[tokio::test]
async fn bootstrap_writes_a_private_working_token_once() {
    let api = ControlPlane::start().await;
    let path = api.data_dir().join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(token.starts_with("lsa_"));

    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .bearer_auth(token.trim()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the file's token works as a bearer");

    // A second start creates no token and leaves the file alone: the first one still works.
    let api = api.restart().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        token,
        "a second start leaves the file alone"
    );
    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .bearer_auth(token.trim()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "and the token still works");
    api.shutdown().await;
}
