//! `/users` and `/connected-apps` as an operator uses them: create, list, show, delete; a
//! secret shown once and never again; the token check; Kong-style 400, 404 and 409 answers;
//! against the whole control plane (the test kit's). How passwords and secrets are stored (an
//! Argon2id PHC string, a digest, both kept out of `Debug`) is unit-tested in
//! `cp/src/principals/users.rs` and `apps.rs`.

use licsync_cp::secrets;
use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn users_are_created_listed_shown_and_deleted_without_their_password() {
    let api = ControlPlane::start().await;

    let (status, body) = send(api.request(Method::POST, "/users").json(&json!({
        "username": "alice", "password": PASSWORD, "role": "admin"
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["role"], "admin");
    assert!(body["created_at"].as_i64().unwrap() > 0);
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "no password or hash: {body}"
    );

    // A form body works too, as with Kong's Admin API.
    let (status, body) = send(api.request(Method::POST, "/users").form(&[
        ("username", "bob"),
        ("password", PASSWORD),
        ("role", "viewer"),
    ]))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = send(api.request(Method::GET, "/users")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec![("alice", "admin"), ("bob", "viewer")]);
    assert_eq!(body["next"], Value::Null);
    let text = body.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains("argon2"),
        "{text}"
    );

    let (status, body) = send(api.request(Method::GET, "/users/bob")).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );

    let (status, _) = send(api.request(Method::DELETE, "/users/bob")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(api.request(Method::DELETE, "/users/bob")).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not found"))
    );
    let (status, _) = send(api.request(Method::GET, "/users/bob")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(api.request(Method::GET, "/users/no%20such%20user")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.shutdown().await;
}

#[tokio::test]
async fn a_taken_username_is_a_409_and_bad_fields_are_400s_that_say_what_to_fix() {
    let api = ControlPlane::start().await;
    let alice = json!({"username": "alice", "password": PASSWORD, "role": "viewer"});
    let (status, _) = send(api.request(Method::POST, "/users").json(&alice)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(api.request(Method::POST, "/users").json(&alice)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["message"],
        "UNIQUE violation detected on '{username=\"alice\"}'"
    );
    assert_eq!(body["name"], "unique constraint violation");

    for (request, field, says) in [
        (
            json!({"username": "alice smith", "password": PASSWORD, "role": "admin"}),
            "username",
            "character ' ' is not allowed",
        ),
        (
            json!({"username": "x".repeat(65), "password": PASSWORD, "role": "admin"}),
            "username",
            "1 to 64 characters",
        ),
        (
            json!({"username": "carol", "password": "hunter2", "role": "admin"}),
            "password",
            "at least 12 characters long (got 7)",
        ),
        (
            json!({"username": "carol", "password": "x".repeat(1025), "role": "admin"}),
            "password",
            "at most 1024 bytes",
        ),
        (
            json!({"username": "carol", "password": PASSWORD, "role": "root"}),
            "role",
            "expected one of: admin, operator, viewer",
        ),
        (
            json!({"username": "carol", "password": PASSWORD}),
            "role",
            "required field missing",
        ),
        (
            json!({"username": "carol", "password": PASSWORD, "role": "admin", "email": "c@x"}),
            "email",
            "unknown field",
        ),
    ] {
        let (status, body) = send(api.request(Method::POST, "/users").json(&request)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let reason = body["fields"][field].as_str().unwrap_or_default();
        assert!(reason.contains(says), "{request}: {body}");
        assert!(!body.to_string().contains("hunter2"), "{body}");
    }
    let (status, body) = send(api.request(Method::GET, "/users")).await;
    assert_eq!(
        (status, body["data"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    api.shutdown().await;
}

#[tokio::test]
async fn connected_apps_get_a_generated_id_and_a_secret_shown_once() {
    let api = ControlPlane::start().await;
    let (status, created) = send(api.request(Method::POST, "/connected-apps").json(&json!({
        "name": "ci-renewals", "scopes": ["manage:servers", "read:servers"]
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(client_id.len(), 32);
    assert!(secret.starts_with("lsc_") && secret.len() > 40, "{secret}");
    assert_eq!(created["name"], "ci-renewals");
    assert_eq!(created["scopes"], json!(["read:servers", "manage:servers"]));

    // No later answer carries the secret or its digest.
    let digest = secrets::hash(&secret);
    let (status, listed) = send(api.request(Method::GET, "/connected-apps")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["client_id"], client_id.as_str());
    let (status, shown) =
        send(api.request(Method::GET, &format!("/connected-apps/{client_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["scopes"], json!(["read:servers", "manage:servers"]));
    for body in [&listed, &shown] {
        let text = body.to_string();
        assert!(!text.contains(&secret) && !text.contains(&digest), "{text}");
        assert!(!text.contains("client_secret"), "{text}");
    }

    let (status, second) = send(
        api.request(Method::POST, "/connected-apps")
            .json(&json!({"name": "ci-renewals", "scopes": ["view:organization"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(second["client_id"], client_id.as_str());
    assert_ne!(second["client_secret"], secret.as_str());

    let path = format!("/connected-apps/{client_id}");
    let (status, _) = send(api.request(Method::DELETE, &path)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send(api.request(Method::DELETE, &path)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(api.request(Method::GET, &path)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(api.request(Method::GET, "/connected-apps/not-a-client-id")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, listed) = send(api.request(Method::GET, "/connected-apps")).await;
    assert_eq!(
        (status, listed["data"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    api.shutdown().await;
}

#[tokio::test]
async fn an_unknown_scope_is_a_400_naming_it() {
    let api = ControlPlane::start().await;
    let (status, body) = send(api.request(Method::POST, "/connected-apps").json(&json!({
        "name": "ci", "scopes": ["read:servers", "manage:everything"]
    })))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(
            "unknown scope 'manage:everything'; known scopes: read:servers, manage:servers, view:organization"
        ),
        "{message}"
    );
    let (status, body) = send(
        api.request(Method::POST, "/connected-apps")
            .json(&json!({"name": "ci", "scopes": []})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send(
        api.request(Method::POST, "/connected-apps")
            .json(&json!({"name": "ci"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["fields"]["scopes"]
            .as_str()
            .unwrap()
            .contains("required field missing")
    );
    let (_, listed) = send(api.request(Method::GET, "/connected-apps")).await;
    assert_eq!(listed["data"], json!([]), "nothing was created");
    api.shutdown().await;
}

#[tokio::test]
async fn principals_routes_need_the_admin_token() {
    let api = ControlPlane::start().await;
    let routes = [
        (Method::GET, "/users"),
        (Method::POST, "/users"),
        (Method::GET, "/users/alice"),
        (Method::DELETE, "/users/alice"),
        (Method::GET, "/connected-apps"),
        (Method::POST, "/connected-apps"),
        (
            Method::GET,
            "/connected-apps/0123456789abcdef0123456789abcdef",
        ),
        (
            Method::DELETE,
            "/connected-apps/0123456789abcdef0123456789abcdef",
        ),
    ];
    for (method, path) in routes {
        let request = api
            .anonymous(method.clone(), path)
            .json(&json!({"username": "mallory", "password": PASSWORD, "role": "admin"}));
        let (status, body) = send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }
    for path in ["/users", "/connected-apps"] {
        let (status, listed) = send(api.request(Method::GET, path)).await;
        assert_eq!(
            (status, &listed["data"]),
            (StatusCode::OK, &json!([])),
            "{path}"
        );
    }
    api.shutdown().await;
}
