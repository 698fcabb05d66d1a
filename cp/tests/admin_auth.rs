//! Admin API authentication, routing and health, as a client sees it (SPEC §3): every route
//! but the health probes needs a known token, checked before routing; the bootstrap token file.

mod support;

use support::*;

#[tokio::test]
async fn every_route_but_health_requires_a_known_token() {
    let api = Api::start().await;

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

    let (status, body) = send(api.get("/licenses")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "next": null}));

    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .header("Kong-Admin-Token", &api.token),
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
    api.stop().await;
}

#[tokio::test]
async fn the_token_is_checked_before_routing() {
    let api = Api::start().await;
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
            "Bearer",
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
    let (status, body) = send(api.get("/nope")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, body) = send(api.call(Method::DELETE, "/licenses")).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method not allowed"})
        )
    );
    api.stop().await;
}

#[tokio::test]
async fn a_deleted_token_stops_working_at_once() {
    let api = Api::start().await;
    let (status, _) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::OK);
    for token in api.store.api_tokens().await.unwrap() {
        api.store.delete_api_token(token.id).await.unwrap();
    }
    let (status, _) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.stop().await;
}

#[tokio::test]
async fn health_probes_follow_readiness() {
    let api = Api::start().await;
    let (status, body) = send(api.anonymous(Method::GET, "/health/live")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let (status, body) = send(api.anonymous(Method::GET, "/health/ready")).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting"})
        )
    );
    api.cp.set_ready(true);
    let (status, body) = send(api.anonymous(Method::GET, "/health/ready")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    api.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let api = Api::start().await;
    let (status, body) = send(api.get("/consumers")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = api.call(method.clone(), "/licenses").send().await.unwrap();
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
    api.stop().await;
}

#[tokio::test]
async fn bootstrap_writes_a_private_working_token_once() {
    let api = Api::start().await;
    let path = api.dir.path().join(admin::ADMIN_TOKEN_FILE);
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

    let stored = api.store.api_tokens().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, admin::BOOTSTRAP_TOKEN_NAME);
    assert_eq!(
        stored[0].token_hash,
        secrets::hash(&token),
        "only the hash is stored"
    );

    let again = admin::bootstrap_admin_token(api.store.as_ref(), api.dir.path())
        .await
        .unwrap();
    assert_eq!(again, None, "a second start creates nothing");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        token,
        "and leaves the file alone"
    );
    assert_eq!(api.store.api_tokens().await.unwrap().len(), 1);
    api.stop().await;
}
