//! The local HTTP API on `local.listen` (default `127.0.0.1:8007`), for the gateway beside the
//! agent, operators on the host and orchestrator probes.
//!
//! | route | answer |
//! |---|---|
//! | `GET /license` | the active license and its metadata, or 404 before one was received |
//! | `GET /status` | connection, last sync, revision, certificate expiry, usage counting and reporting |
//! | `POST /usage` | counts gateway requests ([`crate::usage::http`]) |
//! | `GET /usage` | the usage counters and what the control plane confirmed |
//! | `GET /metrics` | the same state as OpenMetrics text ([`crate::metrics`]) |
//! | `GET /health/live` | 200 while the process runs |
//! | `GET /health/ready` | 200 once the state is loaded and the license file is in line, else 503 |
//!
//! It only reads what the sync client publishes through `watch` channels and the in-memory
//! usage counters, so it never waits on the control plane or the disk. Connections are served
//! by the shared loop of `licsync_common::http_server` with the `[local]` limits
//! ([`http_limits`]); the declared body limit is `POST /usage`'s 4 KiB, the only body taken.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use licsync_common::http_server::{self, HttpLimits};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::LocalConfig;
use crate::metrics::{self, AgentMetrics, MetricsSources};
use crate::output::ReloadState;
use crate::state::{ActiveRule, DpState};
use crate::sync::SyncStatus;
use crate::usage::http::{self as usage_http, UsageApi};

/// What the local API reads.
#[derive(Clone)]
pub struct LocalApi {
    /// Where the active license is written (`license.output_path`).
    pub license_path: PathBuf,
    pub status: watch::Receiver<SyncStatus>,
    pub licenses: watch::Receiver<Arc<DpState>>,
    /// Which held license is the gateway's (`license.prefer_in_force`).
    pub active_rule: ActiveRule,
    pub usage: UsageApi,
    /// Where the reload command's runs stand (`GET /metrics`); `None` without one.
    pub reloads: Option<watch::Receiver<ReloadState>>,
}

impl FromRef<LocalApi> for UsageApi {
    fn from_ref(api: &LocalApi) -> Self {
        api.usage.clone()
    }
}

/// The routes, for serving or for calling in tests.
pub fn router(api: LocalApi) -> Router {
    let metrics = AgentMetrics::new(MetricsSources {
        status: api.status.clone(),
        licenses: api.licenses.clone(),
        active_rule: api.active_rule,
        usage: api.usage.counter.clone(),
        reloads: api.reloads.clone(),
    });
    Router::new()
        .route("/license", get(license))
        .route("/status", get(status))
        .route(
            "/usage",
            post(usage_http::post_usage).get(usage_http::get_usage),
        )
        .route("/metrics", get(metrics::get_metrics).with_state(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// The local API's connection limits: `[local]`'s timeouts and cap, and `POST /usage`'s body
/// limit with its message, so a declared length over it gets the same 413.
pub fn http_limits(config: &LocalConfig) -> HttpLimits {
    HttpLimits {
        header_read_timeout: config.header_read_timeout.0,
        idle_timeout: config.idle_timeout.0,
        body_read_timeout: config.body_read_timeout.0,
        max_connections: config.max_connections,
        ..HttpLimits::new(
            usage_http::MAX_BODY_BYTES as u64,
            usage_http::too_large_message(),
        )
    }
}

/// Serves on an already-bound listener until `shutdown` is cancelled, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    api: LocalApi,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    http_server::serve(listener, router(api), limits, shutdown).await
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

async fn license(State(api): State<LocalApi>) -> Response {
    let state = api.licenses.borrow().clone();
    let choice = state.choose(api.active_rule, OffsetDateTime::now_utc().date());
    let Some(active) = choice.active else {
        let text = match api.status.borrow().rejection_summary() {
            Some(summary) => format!("no license is in use: {summary}"),
            None => "no license has been received yet".to_owned(),
        };
        return message(StatusCode::NOT_FOUND, &text);
    };
    // Verified licenses are JSON; the raw string is a fallback that cannot normally happen.
    let document = serde_json::from_str::<Value>(&active.document)
        .unwrap_or_else(|_| Value::String(active.document.clone()));
    Json(json!({
        "id": active.id,
        "created_at": active.created_at,
        "updated_at": active.updated_at,
        "revision": active.revision,
        "path": api.license_path,
        "license": document,
        // The newest license, when it has expired while an older held one is in force.
        "expired_newest_license_id": choice.expired_over_in_force.map(|l| l.id.as_str()),
    }))
    .into_response()
}

async fn status(State(api): State<LocalApi>) -> Response {
    let status = api.status.borrow().clone();
    Json(json!({
        "dataplane_id": status.dataplane_id,
        "connected": status.connected,
        "last_sync": status.last_sync,
        "revision": status.revision,
        "cert_expires_at": status.cert_expires_at,
        "cluster_url": status.cluster_url,
        "version": licsync_common::VERSION,
        "ready": status.ready(),
        // A connection problem first; else why the licenses offered were refused.
        "last_error": status.last_error.clone().or_else(|| status.rejection_summary()),
        "apply_error": status.apply_error,
        "license_file_error": status.license_file_error,
        "rejected_licenses": status.rejected_licenses,
        "revoked": status.revoked,
        "last_heartbeat": status.last_heartbeat,
        "licenses_resent": status.licenses_resent,
        "usage": api.usage.status(),
    }))
    .into_response()
}

async fn live() -> Response {
    Json(json!({ "message": "alive" })).into_response()
}

async fn ready(State(api): State<LocalApi>) -> Response {
    let status = api.status.borrow().clone();
    if status.ready() {
        Json(json!({ "message": "ready" })).into_response()
    } else if !status.state_loaded {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the saved state is not loaded yet",
        )
    } else {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the license file could not be written; see the agent's log",
        )
    }
}

async fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> Response {
    message(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed; see the local API's routes in the licsync-dp documentation",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::state::HeldLicense;
    use crate::usage::{UsageCounter, UsageStore};

    async fn get_json(router: &Router, path: &str) -> (StatusCode, Value) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn answers_reflect_what_the_sync_client_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let (counter, _) = UsageCounter::open(
            UsageStore::new(dir.path().join("usage.json")),
            crate::clock::system(),
        )
        .await
        .unwrap();
        let (status_tx, status) = watch::channel(SyncStatus {
            dataplane_id: "dp-1".into(),
            cluster_url: "https://cp:8005".into(),
            ..SyncStatus::default()
        });
        let (state_tx, licenses) = watch::channel(Arc::new(DpState::default()));
        let router = router(LocalApi {
            license_path: PathBuf::from("/etc/kong/license.json"),
            status,
            licenses,
            active_rule: ActiveRule::default(),
            usage: UsageApi {
                counter: counter.clone(),
                statsd: None,
                flush_interval: std::time::Duration::from_secs(1),
                report_interval: std::time::Duration::from_secs(10),
            },
            reloads: None,
        });

        let (code, body) = get_json(&router, "/license").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"message": "no license has been received yet"}));
        status_tx.send_modify(|s| {
            s.rejected_licenses.insert(
                "lic-0".into(),
                crate::sync::status::Rejection {
                    revision: 2,
                    reason:
                        "validation failed: the signature does not verify with the 1 trusted key"
                            .into(),
                },
            );
        });
        let rejected = "1 license received from the control plane rejected: lic-0 (revision 2): \
                        validation failed: the signature does not verify with the 1 trusted key";
        let (code, body) = get_json(&router, "/license").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"message": format!("no license is in use: {rejected}")})
        );
        let (_, body) = get_json(&router, "/status").await;
        assert_eq!(body["last_error"], rejected);
        assert_eq!(body["rejected_licenses"]["lic-0"]["revision"], 2);
        status_tx.send_modify(|s| s.rejected_licenses.clear());
        assert_eq!(get_json(&router, "/health/live").await.0, StatusCode::OK);
        assert_eq!(
            get_json(&router, "/health/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let mut state = DpState::default();
        state.upsert(HeldLicense {
            id: "lic-1".into(),
            document: r#"{"license":{"payload":{"customer":"X"},"signature":"ab","version":"1"}}"#
                .into(),
            created_at: 10,
            updated_at: 20,
            revision: 3,
        });
        state_tx.send_replace(Arc::new(state));
        status_tx.send_modify(|s| {
            s.connected = true;
            s.last_sync = Some(1_700_000_000);
            s.revision = 3;
            s.cert_expires_at = Some(1_800_000_000);
            s.state_loaded = true;
            s.license_file_in_line = true;
        });

        let (code, body) = get_json(&router, "/license").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["id"], "lic-1");
        assert_eq!(body["revision"], 3);
        assert_eq!(body["path"], "/etc/kong/license.json");
        assert_eq!(body["license"]["license"]["payload"]["customer"], "X");

        let (_, body) = get_json(&router, "/status").await;
        for (key, value) in [
            ("dataplane_id", json!("dp-1")),
            ("connected", json!(true)),
            ("last_sync", json!(1_700_000_000)),
            ("revision", json!(3)),
            ("cert_expires_at", json!(1_800_000_000)),
            ("cluster_url", json!("https://cp:8005")),
            ("version", json!(licsync_common::VERSION)),
            ("licenses_resent", json!(0)),
        ] {
            assert_eq!(body[key], value, "{key}");
        }
        assert_eq!(body["usage"]["epoch"], counter.epoch());
        assert_eq!(get_json(&router, "/health/ready").await.0, StatusCode::OK);

        let (code, body) = get_json(&router, "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body["message"].is_string());

        let response = router
            .clone()
            .oneshot(Request::delete("/license").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
