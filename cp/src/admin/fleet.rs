//! `/clustering/data-planes`: the registered data planes and how their sync is going, as
//! Kong's `/clustering/data-planes` shows a hybrid-mode fleet, with RHACS's health words; and
//! revocation (`DELETE`), which cuts a data plane off for good; and
//! `/clustering/control-planes`, the control-plane nodes sharing this node's database.
//!
//! With several nodes, every node shows the whole fleet: a data plane connected to another
//! node is `connected`, with that node's id in `control_plane` (from the nodes registry).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use licsync_common::unix_now;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::{Described, ErrorBody};
use super::params::{EntityId, Page};
use crate::dataplanes::DataPlaneView;
use crate::ha::nodes::ControlPlaneView;
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list))
        .with(routes!(fetch, revoke))
        .with(routes!(control_planes))
}

/// Lists every registered data plane, with the node holding its stream.
#[utoipa::path(
    get,
    path = "/clustering/data-planes",
    tag = "data-planes",
    operation_id = "list_data_planes",
    responses((status = 200, description = "Every registered data plane (`next` is null).", body = Page<DataPlaneView>)),
)]
async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<DataPlaneView>>, ApiError> {
    let dataplanes = cp.fleet(unix_now()).await.map_err(ApiError::storage)?;
    Ok(Json(Page::all(dataplanes)))
}

/// `{"data": [...]}`: every node in the registry, this one first-hand.
#[derive(serde::Serialize, ToSchema)]
struct ControlPlanes {
    data: Vec<ControlPlaneView>,
}

/// Lists the control-plane nodes sharing this node's storage.
#[utoipa::path(
    get,
    path = "/clustering/control-planes",
    tag = "data-planes",
    operation_id = "list_control_planes",
    responses((status = 200, description = "Every node in the registry.", body = ControlPlanes)),
)]
async fn control_planes(
    State(cp): State<Arc<ControlPlane>>,
) -> Result<Json<ControlPlanes>, ApiError> {
    let data = cp
        .nodes()
        .list(unix_now())
        .await
        .map_err(ApiError::storage)?;
    Ok(Json(ControlPlanes { data }))
}

/// One data plane.
#[utoipa::path(
    get,
    path = "/clustering/data-planes/{id}",
    tag = "data-planes",
    operation_id = "get_data_plane",
    params(("id" = uuid::Uuid, Path, description = "The data plane's id (a hyphenated UUID).")),
    responses(
        (status = 200, description = "The data plane.", body = DataPlaneView),
        (status = 404, description = "No registered data plane has this id.", body = ErrorBody),
    ),
)]
async fn fetch(
    State(cp): State<Arc<ControlPlane>>,
    id: EntityId,
) -> Result<Json<DataPlaneView>, ApiError> {
    let id = id.or_not_found()?;
    let dataplane = cp
        .fleet_member(id, unix_now())
        .await
        .map_err(ApiError::storage)?;
    dataplane.map(Json).ok_or_else(ApiError::not_found)
}

/// Revokes a data plane: its stream is closed and its certificates are refused from now on.
///
/// Durable before the answer, then its open stream is ended. It disappears from the listing;
/// it comes back only by registering anew with a registration token.
#[utoipa::path(
    delete,
    path = "/clustering/data-planes/{id}",
    tag = "data-planes",
    operation_id = "revoke_data_plane",
    params(("id" = uuid::Uuid, Path, description = "The data plane's id (a hyphenated UUID).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No registered data plane has this id.", body = ErrorBody),
    ),
)]
async fn revoke(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<StatusCode, ApiError> {
    let id = id.or_not_found()?;
    let revoked = cp
        .dataplanes()
        .revoke(id)
        .await
        .map_err(ApiError::storage)?
        .ok_or_else(ApiError::not_found)?;
    tracing::info!(
        event = "dataplane.revoked",
        dataplane.id = %revoked.id,
        dataplane.name = %revoked.name,
        "Revoked a data plane; its certificates are refused from now on."
    );
    Ok(StatusCode::NO_CONTENT)
}
