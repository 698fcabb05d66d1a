//! `GET /backup` (admin only, [`super::access`]): a consistent backup of the whole control
//! plane, as the JSON document `licsync-cp backup` saves and `licsync-cp restore` reads
//! ([`crate::backup`]).
//!
//! The answer holds secret keys, so it is marked `Cache-Control: no-store` for every cache on
//! the way, and the call is audited whatever its outcome (the authentication middleware audits
//! `/backup` reads as it audits changes). One backup is built at a time per node, which bounds
//! the memory backups take to one document.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ApiError;
use super::openapi::{Described, ErrorBody};
use crate::backup::BackupError;
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new().with(routes!(backup))
}

/// One point in time of the whole control plane, secret keys included: save it with
/// `licsync-cp backup`, restore it with `licsync-cp restore`.
#[utoipa::path(
    get,
    path = "/backup",
    tag = "backup",
    operation_id = "get_backup",
    responses(
        (status = 200, description = "The backup document (it holds the CA and report-signing keys: keep it secret).", content_type = "application/json", body = Object),
        (status = 400, description = "A query parameter was given; the backup takes none.", body = ErrorBody),
    ),
)]
async fn backup(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response, ApiError> {
    if let Some(query) = uri.query() {
        return Err(ApiError::bad_request(format!(
            "GET /backup takes no query parameters, got '{}'",
            query.chars().take(64).collect::<String>()
        )));
    }
    let document = cp.backups().take(cp.config()).await.map_err(|e| match e {
        BackupError::Storage(e) => ApiError::storage(e),
        other => ApiError::internal(other.to_string()),
    })?;
    let counts = document.counts();
    let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&document))
        .await
        .map_err(|e| ApiError::internal(format!("building the backup failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot encode the backup: {e}")))?;
    tracing::info!(
        event = "backup.taken",
        caller = %caller,
        revision = counts.revision,
        licenses = counts.licenses,
        dataplanes = counts.dataplanes,
        bytes = body.len(),
        "Served a backup of the whole control plane."
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"licsync-backup.json\""),
            ),
        ],
        body,
    )
        .into_response())
}
