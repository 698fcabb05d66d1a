//! The Admin API answers as its OpenAPI description says (SPEC §10, `GET /openapi.json`),
//! against the whole control plane: for every described operation, a valid request succeeds
//! and invalid ones (no credential, a role too low, a malformed id, a malformed, unknown or
//! oversized body, a bad query parameter) are refused; each answer's status is one the
//! description lists for that operation and its body matches that status's schema, with no
//! undescribed field. The operations come from the served description, so a route added later
//! is covered without touching this file (its valid request is built from its schema's
//! `example`).

mod openapi_check;

use std::collections::BTreeMap;

use licsync_testkit::ControlPlane;
use openapi_check::{Description, Operation, answer, fill};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What the test created before the calls, so that every `{parameter}` names something real.
struct Fixtures {
    license: String,
    registration_token: String,
    admin_token: String,
    user: String,
    app: String,
    dataplane: String,
    /// A `viewer` token's secret.
    viewer: String,
}

const USER_PASSWORD: &str = "fixture password, long enough";

impl Fixtures {
    async fn create(cp: &ControlPlane) -> Self {
        let created = |status: StatusCode, body: &Value, field: &str| {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body[field].as_str().unwrap().to_owned()
        };
        let (status, body) = cp
            .call(
                Method::POST,
                "/licenses",
                Some(json!({ "payload": cp.issuer.license("Fixture Inc") })),
            )
            .await;
        let license = created(status, &body, "id");
        let (status, body) = cp
            .call(
                Method::POST,
                "/registration-tokens",
                Some(json!({"name": "fixture"})),
            )
            .await;
        let registration_token = created(status, &body, "id");
        let (status, body) = cp
            .call(
                Method::POST,
                "/admin-tokens",
                Some(json!({"name": "fixture-admin", "role": "admin"})),
            )
            .await;
        let admin_token = created(status, &body, "id");
        let (status, body) = cp
            .call(
                Method::POST,
                "/admin-tokens",
                Some(json!({"name": "fixture-viewer", "role": "viewer"})),
            )
            .await;
        let viewer = created(status, &body, "token");
        let (status, body) = cp
            .call(
                Method::POST,
                "/users",
                Some(json!({"username": "fixture-user", "password": USER_PASSWORD, "role": "viewer"})),
            )
            .await;
        let user = created(status, &body, "username");
        let (app, _) = cp.create_app("fixture", &["read:servers"]).await;
        let dataplane = cp.register_dataplane(licsync_common::VERSION).await.id;
        Self {
            license,
            registration_token,
            admin_token,
            user,
            app,
            dataplane,
            viewer,
        }
    }

    /// The parameters of `template` that name what the test created; a parameter of a route
    /// it does not know gets a fresh UUID.
    fn params(&self, template: &str) -> BTreeMap<&'static str, String> {
        let value = match template {
            "/licenses/{id}" => self.license.clone(),
            "/registration-tokens/{id}" => self.registration_token.clone(),
            "/admin-tokens/{id}" => self.admin_token.clone(),
            "/users/{name}" => self.user.clone(),
            "/connected-apps/{client_id}" => self.app.clone(),
            "/clustering/data-planes/{id}" => self.dataplane.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        ["id", "name", "client_id"]
            .into_iter()
            .map(|name| (name, value.clone()))
            .collect()
    }
}

/// A valid body for `op`: a fresh signed license for the license writes, else its schema's
/// example.
fn valid_body(cp: &ControlPlane, op: &Operation) -> Option<Value> {
    let schema = op.body.as_ref()?;
    Some(match op.id.as_str() {
        "create_license" | "put_license" | "patch_license" => {
            json!({ "payload": cp.issuer.license(&format!("{} Inc", op.id)) })
        }
        _ => schema
            .get("example")
            .cloned()
            .unwrap_or_else(|| panic!("give the request body schema of {} an example", op.id)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_valid_requests_as_described() {
    let cp = ControlPlane::start().await;
    let fixtures = Fixtures::create(&cp).await;
    let description = Description::fetch(&cp).await;
    let mut operations = description.operations();
    assert!(operations.len() >= 25, "{} operations", operations.len());
    // Deletions last, so every other call finds what it names.
    operations.sort_by_key(|op| op.method == Method::DELETE);
    for op in &operations {
        let path = fill(&op.path, &fixtures.params(&op.path));
        let mut request = cp.request(op.method.clone(), &path);
        if let Some(body) = valid_body(&cp, op) {
            request = request.json(&body);
        }
        let (status, body) = answer(request).await;
        assert!(
            status.is_success(),
            "valid {} {path} ({}): {status} {body}",
            op.method,
            op.id
        );
        description.check(op, "a valid request", status, &body);
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_refuses_invalid_requests_as_described() {
    let cp = ControlPlane::start().await;
    let fixtures = Fixtures::create(&cp).await;
    let description = Description::fetch(&cp).await;
    for op in description.operations() {
        let params = fixtures.params(&op.path);
        let path = fill(&op.path, &params);
        let send = |request: reqwest::RequestBuilder, body: &Option<Value>| {
            let request = match body {
                Some(body) => request.json(body),
                None => request,
            };
            answer(request)
        };
        let body = valid_body(&cp, &op);

        if let Some(role) = &op.role {
            let (status, answer) = send(cp.anonymous(op.method.clone(), &path), &body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {path}", op.method);
            description.check(&op, "no credential", status, &answer);

            let wrong_password = cp
                .anonymous(op.method.clone(), &path)
                .basic_auth(&fixtures.user, Some("not the password"));
            let (status, answer) = send(wrong_password, &body).await;
            assert!(
                [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
                "{} {path}: {status}",
                op.method
            );
            description.check(&op, "a wrong password", status, &answer);

            let viewer = cp
                .anonymous(op.method.clone(), &path)
                .bearer_auth(&fixtures.viewer);
            let (status, answer) = send(viewer, &body).await;
            if role != "viewer" {
                assert_eq!(status, StatusCode::FORBIDDEN, "{} {path}", op.method);
            }
            description.check(&op, "a viewer", status, &answer);
        }

        if op.path.contains('{') {
            let bad: BTreeMap<&str, String> = params
                .keys()
                .map(|name| (*name, "not-a-valid-id".to_owned()))
                .collect();
            let bad_path = fill(&op.path, &bad);
            let (status, answer) = send(cp.request(op.method.clone(), &bad_path), &body).await;
            assert!(
                status.is_client_error(),
                "{} {bad_path}: {status}",
                op.method
            );
            description.check(&op, "an id of the wrong shape", status, &answer);
        }

        if op.body.is_some() {
            for (what, raw) in [
                ("malformed JSON", "{\"payload\": ".to_owned()),
                ("a JSON array", "[]".to_owned()),
                ("an unknown field", "{\"colour\": \"red\"}".to_owned()),
                (
                    "a string field of the wrong type",
                    "{\"name\": 7, \"payload\": 7, \"username\": 7}".to_owned(),
                ),
            ] {
                let request = cp
                    .request(op.method.clone(), &path)
                    .header("content-type", "application/json")
                    .body(raw);
                let (status, answer) = answer(request).await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{what}: {} {path}",
                    op.method
                );
                description.check(&op, what, status, &answer);
            }
            let huge = vec![b' '; 1024 * 1024 + 1];
            let (status, answer) = answer(cp.request(op.method.clone(), &path).body(huge)).await;
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{} {path}",
                op.method
            );
            description.check(&op, "a body over 1 MiB", status, &answer);
        }

        for name in &op.query {
            let request = cp
                .request(op.method.clone(), &path)
                .query(&[(name.as_str(), "x!")]);
            let (status, answer) = send(request, &body).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{} {path}?{name}=x!",
                op.method
            );
            description.check(&op, "a bad query parameter", status, &answer);
        }
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_refuses_answers_the_description_does_not_give() {
    let cp = ControlPlane::start().await;
    let description = Description::fetch(&cp).await;
    let operations = description.operations();
    let find = |id: &str| operations.iter().find(|op| op.id == id).unwrap();
    let (status_op, delete_op) = (find("get_status"), find("delete_license"));
    let (status, body) = cp.call(Method::GET, "/status", None).await;
    assert!(description.verify(status_op, status, &body).is_ok());

    let mut extra = body.clone();
    extra["colour"] = json!("red");
    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("version");
    let mut mistyped = body.clone();
    mistyped["revision"] = json!("seven");
    for (what, status, body) in [
        ("an unlisted status", StatusCode::IM_A_TEAPOT, body.clone()),
        ("an undescribed field", StatusCode::OK, extra),
        ("a missing field", StatusCode::OK, missing),
        ("a mistyped field", StatusCode::OK, mistyped),
    ] {
        assert!(
            description.verify(status_op, status, &body).is_err(),
            "{what} passed"
        );
    }
    assert!(
        description
            .verify(delete_op, StatusCode::NO_CONTENT, &json!({"x": 1}))
            .is_err(),
        "a body on a 204"
    );
    cp.shutdown().await;
}
