//! `/clustering/data-planes`: the registered data planes and how their sync is going, as
//! Kong's `/clustering/data-planes` shows a hybrid-mode fleet.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::params::{EntityId, Page};
use crate::dataplanes::DataPlaneView;
use crate::state::ControlPlane;

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/clustering/data-planes", get(list))
        .route("/clustering/data-planes/{id}", get(fetch))
}

async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<DataPlaneView>>, ApiError> {
    let dataplanes = cp.dataplanes.list().await.map_err(ApiError::storage)?;
    Ok(Json(Page::all(dataplanes)))
}

async fn fetch(
    State(cp): State<Arc<ControlPlane>>,
    id: EntityId,
) -> Result<Json<DataPlaneView>, ApiError> {
    let id = id.or_not_found()?;
    let dataplane = cp.dataplanes.get(id).await.map_err(ApiError::storage)?;
    dataplane.map(Json).ok_or_else(ApiError::not_found)
}
