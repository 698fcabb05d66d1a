//! The status listener (`status.listen`, default `127.0.0.1:8100`): what a monitoring system
//! and an orchestrator call without the admin token.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | OpenMetrics text ([`crate::metrics`]) |
//! | `GET /health/live` | `200 {"status": "ok"}` while the process serves |
//! | `GET /health/ready` | `200` once storage is open and every listener accepts, else `503` (as on the admin listener) |
//!
//! Nothing else is served (`404`/`405` with `{"message"}`), and nothing here changes state.
//! Connections are bounded by the `[admin]` limits, through the same serving loop as the
//! Admin API (`licsync_common::http_server`): a scraper is a client like any other.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use licsync_common::http_server::{self, json_error};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Certificates, Snapshot};
use crate::state::ControlPlane;

/// What `GET /metrics` reads.
#[derive(Clone)]
struct Sources {
    cp: Arc<ControlPlane>,
    certificates: Certificates,
}

/// The status routes over `cp`.
pub fn router(cp: Arc<ControlPlane>, certificates: Certificates) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(get_metrics))
        .with_state(Sources {
            cp: cp.clone(),
            certificates,
        });
    Router::new()
        .merge(metrics)
        .merge(crate::admin::health_routes().with_state(cp))
        .method_not_allowed_fallback(|| async {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                "Not found: the status listener serves GET /metrics, /health/live and /health/ready",
            )
        })
}

/// Serves the status routes on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    cp: Arc<ControlPlane>,
    certificates: Certificates,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = crate::admin::http_limits(&cp.config().admin);
    let stop = CancellationToken::new();
    let serving = http_server::serve(listener, router(cp, certificates), limits, stop.clone());
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        () = shutdown => stop.cancel(),
    }
    serving.await
}

/// `GET /metrics`.
async fn get_metrics(State(sources): State<Sources>) -> Response {
    let snapshot = Snapshot::read(&sources.cp, &sources.certificates).await;
    match metrics::scrape::render(sources.cp.metrics(), snapshot) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        // Writing to a String fails only if a value refuses to format, which none of ours do.
        Err(error) => {
            tracing::warn!(event = "metrics.encode_failed", %error, "Cannot encode the metrics.");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded; see the control plane's log",
            )
        }
    }
}
