//! `/status` for operators and `/health/*` for orchestrators.
//!
//! `/status` needs a token like every other route. The health probes do not, so a kubelet or
//! load balancer can call them; they reveal nothing but whether the process is up and ready
//! (storage open and answering, every listener accepting). Why storage does not answer is in
//! the log (`storage.unavailable`), not in the probe's answer: it may name the database host.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use crate::model::Revision;
use crate::state::ControlPlane;
use crate::store::StorageInfo;

/// The `/status` answer.
#[derive(Debug, Serialize)]
struct Status {
    version: &'static str,
    storage: StorageInfo,
    dataplanes: DataPlaneCounts,
    /// The revision of the current license set.
    revision: Revision,
}

#[derive(Debug, Serialize)]
struct DataPlaneCounts {
    connected: usize,
    registered: usize,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

/// The authenticated routes.
pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new().route("/status", get(status))
}

/// The liveness probe's path.
const HEALTH_LIVE: &str = "/health/live";
/// The readiness probe's path.
const HEALTH_READY: &str = "/health/ready";

/// The unauthenticated probes (also served on the status listener, [`crate::status`]).
pub(crate) fn health_routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route(HEALTH_LIVE, get(live))
        .route(HEALTH_READY, get(ready))
}

/// Whether `path` is one of the health probes, the only paths served without a token. It is
/// compared with the request path exactly as the router matches it, so nothing else (no
/// trailing slash, no other `/health/...`) slips past the token check.
pub(super) fn is_health_probe(path: &str) -> bool {
    path == HEALTH_LIVE || path == HEALTH_READY
}

async fn status(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Status>, ApiError> {
    let registered = cp
        .dataplanes()
        .list(licsync_common::unix_now())
        .await
        .map_err(ApiError::storage)?
        .len();
    Ok(Json(Status {
        version: licsync_common::VERSION,
        storage: cp.storage_info().clone(),
        dataplanes: DataPlaneCounts {
            connected: cp.dataplanes().connected_count(),
            registered,
        },
        revision: cp.licenses().current().revision,
    }))
}

async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn ready(State(cp): State<Arc<ControlPlane>>) -> (StatusCode, Json<Health>) {
    if cp.is_ready() {
        (StatusCode::OK, Json(Health { status: "ok" }))
    } else if cp.storage_health().unavailable().is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "storage_unavailable",
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "starting" }),
        )
    }
}
