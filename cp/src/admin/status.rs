//! `/status` for operators and `/health/*` for orchestrators.
//!
//! `/status` needs a token like every other route. The health probes do not, so a kubelet or
//! load balancer can call them; they reveal nothing but whether the process is up and ready
//! (storage open and answering, every listener accepting). Why storage does not answer is in
//! the log (`storage.unavailable`), not in the probe's answer: it may name the database host.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::Described;
use crate::model::Revision;
use crate::state::ControlPlane;
use crate::store::StorageInfo;

/// The `/status` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Status {
    /// The control plane's version.
    version: &'static str,
    storage: StorageInfo,
    dataplanes: DataPlaneCounts,
    /// The revision of the current license set.
    #[schema(value_type = u64)]
    revision: Revision,
}

/// How many data planes this node holds a stream of, and how many are registered.
#[derive(Debug, Serialize, ToSchema)]
struct DataPlaneCounts {
    connected: usize,
    registered: usize,
}

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Probe)]
struct Health {
    /// `ok`, or why not ready: `starting`, `storage_unavailable`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// The authenticated routes.
pub(super) fn routes() -> Described {
    Described::new().with(routes!(status))
}

/// The liveness probe's path.
const HEALTH_LIVE: &str = "/health/live";
/// The readiness probe's path.
const HEALTH_READY: &str = "/health/ready";

/// The unauthenticated probes.
pub(super) fn health_described() -> Described {
    Described::new().with(routes!(live)).with(routes!(ready))
}

/// The unauthenticated probes, for the status listener ([`crate::status`]).
pub(crate) fn health_routes() -> Router<Arc<ControlPlane>> {
    health_described().into_router()
}

/// Whether `path` is one of the health probes, the only paths served without a token. It is
/// compared with the request path exactly as the router matches it, so nothing else (no
/// trailing slash, no other `/health/...`) slips past the token check.
pub(super) fn is_health_probe(path: &str) -> bool {
    path == HEALTH_LIVE || path == HEALTH_READY
}

/// The control plane's version, storage backend, data-plane counts and license revision.
#[utoipa::path(
    get,
    path = "/status",
    tag = "status",
    operation_id = "get_status",
    responses((status = 200, description = "The control plane's status.", body = Status)),
)]
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

/// Whether the process is up.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    operation_id = "health_live",
    responses((status = 200, description = "The process is up: `{\"status\": \"ok\"}`.", body = Health)),
)]
async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether storage and every listener are up.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "health_ready",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ok\"}`.", body = Health),
        (status = 503, description = "Not ready: `starting` or `storage_unavailable` (why is in the log).", body = Health),
    ),
)]
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
