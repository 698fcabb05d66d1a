//! What the Admin API does with state no client can set: readiness before the control plane
//! is ready, and an API token deleted from storage behind its back. The rest of the Admin
//! API is tested black-box against the whole control plane (`cp/tests/admin_*.rs`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use licsync_common::license::TrustedKeys;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::router;
use crate::config::CpConfig;
use crate::licenses::Licenses;
use crate::state::ControlPlane;
use crate::store::{MemoryStore, PrincipalStore};

/// A control plane over `store`, not yet marked ready (as `server::run` builds it before its
/// listeners are up).
pub(super) async fn control_plane(store: Arc<MemoryStore>) -> Arc<ControlPlane> {
    let licenses = Licenses::load(store.clone(), TrustedKeys::parse::<&str>(&[]).unwrap())
        .await
        .unwrap();
    Arc::new(ControlPlane::new(
        CpConfig::default(),
        store,
        Arc::new(licenses),
        String::new(),
        "ab12".into(),
    ))
}

/// An empty store with its bootstrap admin token, and that token.
pub(super) async fn bootstrapped() -> (Arc<MemoryStore>, String) {
    let store = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let file = super::bootstrap_admin_token(store.as_ref(), dir.path())
        .await
        .unwrap()
        .expect("an empty store gets a bootstrap token");
    (store, std::fs::read_to_string(file).unwrap())
}

/// `GET path` through the router, with `token` as a bearer when given.
async fn get(cp: &Arc<ControlPlane>, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(cp.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn health_probes_follow_readiness() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    let (status, body) = get(&cp, "/health/live", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let (status, body) = get(&cp, "/health/ready", None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting"})
        )
    );
    cp.set_ready(true);
    let (status, body) = get(&cp, "/health/ready", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn a_deleted_token_stops_working_at_once() {
    let (store, token) = bootstrapped().await;
    let cp = control_plane(store.clone()).await;

    let (status, _) = get(&cp, "/status", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    for stored in store.api_tokens().await.unwrap() {
        store.delete_api_token(stored.id).await.unwrap();
    }
    let (status, _) = get(&cp, "/status", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_token_is_refused_with_when_it_expired() {
    let store = Arc::new(MemoryStore::new());
    let secret = "lsa_expired-token-for-the-test";
    store
        .put_api_token(&crate::model::ApiToken {
            id: uuid::Uuid::new_v4(),
            name: "old-ci".into(),
            token_hash: crate::secrets::hash(secret),
            created_at: 1,
            role: crate::model::Role::Admin,
            expires_at: Some(2),
        })
        .await
        .unwrap();
    let cp = control_plane(store).await;
    let (status, body) = get(&cp, "/status", Some(secret)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("API token 'old-ci' expired at 2 (unix time)"),
        "{message}"
    );
}

#[tokio::test]
async fn health_reports_storage_unavailable_apart_from_starting() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    cp.set_ready(true);
    assert!(
        cp.storage_health()
            .set_unavailable("postgres: connection refused".into())
    );
    let (status, body) = get(&cp, "/health/ready", None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "storage_unavailable"})
        ),
        "the reason stays in the log"
    );
    assert!(cp.storage_health().set_available());
    assert!(!cp.storage_health().set_available(), "logged once");
    assert_eq!(get(&cp, "/health/ready", None).await.0, StatusCode::OK);
}
