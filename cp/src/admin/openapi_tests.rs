//! The OpenAPI description against the router it is generated with: every described
//! operation is served by the route of that template and method, and on a described path
//! every other method is refused `405`; every operation has a unique id, its role, and a
//! JSON error body for each failure. Routes cannot be added undescribed at all (see
//! [`super::openapi::Described`]), so together these tie the two both ways. What the served
//! routes answer, and that it matches the description, is tested against a running control
//! plane in `cp/tests/openapi.rs`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use std::collections::HashSet;
use tower::ServiceExt;

use super::openapi::operations;
use super::tests::{bootstrapped, control_plane};
use super::{description, metrics, router};

/// Every method a client might send.
const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// `template` with each `{parameter}` replaced by a value of the right shape.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "00000000-0000-4000-8000-000000000000"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_described_operation_is_served_by_its_route_and_only_those() {
    let (store, token) = bootstrapped().await;
    let cp = control_plane(store).await;
    cp.set_ready(true);
    let app = router(cp);

    let described = operations(&description());
    let paths: HashSet<&str> = described.iter().map(|(_, path)| path.as_str()).collect();
    assert!(paths.len() >= 20, "{paths:?}");
    for path in paths {
        for method in METHODS {
            // HEAD is answered by the GET handler, without a body.
            let is_described = |m: &Method| described.contains(&(m.clone(), path.to_owned()));
            let served =
                is_described(&method) || (method == Method::HEAD && is_described(&Method::GET));
            let request = Request::builder()
                .method(method.clone())
                .uri(concrete(path))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            if served {
                assert_eq!(
                    metrics::answered_by(&response).as_deref(),
                    Some(path),
                    "{method} {path} is described, so its route must answer it"
                );
                assert_ne!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not described, so it must not be served"
                );
            }
        }
    }
}

#[test]
fn every_operation_has_an_id_a_role_and_json_errors() {
    let api = serde_json::to_value(description()).unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut ids = HashSet::new();
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId '{id}' twice"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} has no success answer"
            );
            let public = operation["security"] == Value::Array(vec![]);
            assert_eq!(
                public,
                super::access::needs_no_token(path),
                "{method} {path}: security"
            );
            if !public {
                let role = operation["x-required-role"].as_str().unwrap_or_default();
                assert!(
                    ["viewer", "operator", "admin"].contains(&role),
                    "{method} {path}"
                );
                assert!(responses.contains_key("401"), "{method} {path}");
            }
            for (status, response) in responses {
                // `/health/ready`'s 503 is the probe's own answer, `{"status": ...}`.
                if status.starts_with('2') || path == "/health/ready" {
                    continue;
                }
                let text = response.to_string();
                assert!(
                    text.contains("#/components/schemas/Error")
                        || text.contains("#/components/responses/"),
                    "{method} {path} {status}: not the error body: {text}"
                );
            }
        }
    }
    let schemes = &api["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["kong_admin_token"]["name"], "Kong-Admin-Token");
}

/// Prints the description, for a look while developing: `cargo test -p licsync-cp --lib
/// print_the_description -- --ignored --nocapture`.
#[test]
#[ignore = "prints the description"]
fn print_the_description() {
    println!("{}", serde_json::to_string_pretty(&description()).unwrap());
}
