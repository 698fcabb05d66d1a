//! `GET /audit?since=<unix s>&limit=N`: the stored audit trail, oldest first (admin only,
//! [`super::access`]). `since` defaults to 0 and `limit` to 100 (at most 1,000); a client pages
//! on by asking again from the last record's `at`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::{Described, ErrorBody};
use crate::state::ControlPlane;
use crate::store::AuditRecord;

/// Records returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Most records one request returns.
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Described {
    Described::new().with(routes!(list))
}

/// The records, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditRecords)]
struct Listed {
    data: Vec<View>,
}

/// A record as the API shows it: its time in unix seconds (with milliseconds) too.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
struct View {
    #[serde(flatten)]
    record: AuditRecord,
    at: f64,
}

/// The audit trail from `since`, oldest first, at most `limit` records; page on by asking
/// again from the last record's `at`.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(
        ("since" = Option<i64>, Query, description = "Unix seconds (default 0)."),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many records (default 100)."),
    ),
    responses(
        (status = 200, description = "The records.", body = Listed),
        (status = 400, description = "`since` not an integer, `limit` out of 1..1000, or another parameter.", body = ErrorBody),
    ),
)]
async fn list(
    State(cp): State<Arc<ControlPlane>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Listed>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut since_s: i64 = 0;
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in &params {
        match name.as_str() {
            "since" => {
                since_s = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "since: expected unix seconds (an integer), got '{value}'"
                    ))
                })?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit: expected an integer from 1 to {MAX_LIMIT}, got '{value}'"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; use since (unix seconds) and limit"
                )));
            }
        }
    }
    let records = cp
        .audit()
        .since(since_s.saturating_mul(1000), limit)
        .await
        .map_err(ApiError::storage)?;
    Ok(Json(Listed {
        data: records
            .into_iter()
            .map(|record| View {
                at: record.at_ms as f64 / 1000.0,
                record,
            })
            .collect(),
    }))
}
