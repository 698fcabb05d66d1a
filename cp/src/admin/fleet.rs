//! `/clustering/data-planes`: the registered data planes and how their sync is going, as
//! Kong's `/clustering/data-planes` shows a hybrid-mode fleet, with RHACS's health words; and
//! revocation (`DELETE`), which cuts a data plane off for good; and
//! `/clustering/control-planes`, the control-plane nodes sharing this node's database.
//!
//! With several nodes, every node shows the whole fleet: a data plane connected to another
//! node is `connected`, with that node's id in `control_plane` (from the nodes registry).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use licsync_common::unix_now;

use super::error::ApiError;
use super::params::{EntityId, Page};
use crate::dataplanes::DataPlaneView;
use crate::ha::nodes::ControlPlaneView;
use crate::state::ControlPlane;

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/clustering/data-planes", get(list))
        .route("/clustering/data-planes/{id}", get(fetch).delete(revoke))
        .route("/clustering/control-planes", get(control_planes))
}

async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<DataPlaneView>>, ApiError> {
    let dataplanes = cp.fleet(unix_now()).await.map_err(ApiError::storage)?;
    Ok(Json(Page::all(dataplanes)))
}

/// `{"data": [...]}`: every node in the registry, this one first-hand.
#[derive(serde::Serialize)]
struct ControlPlanes {
    data: Vec<ControlPlaneView>,
}

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

/// Revokes a data plane: durable before the answer, then its open stream is ended. Its
/// certificates are refused from then on and it disappears from the listing; it comes back
/// only by registering anew with a registration token.
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
