//! `GET /audit?since=<unix s>&limit=N`: the stored audit trail, oldest first (admin only,
//! [`super::access`]). `since` defaults to 0 and `limit` to 100 (at most 1,000); a client pages
//! on by asking again from the last record's `at`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use crate::state::ControlPlane;
use crate::store::AuditRecord;

/// Records returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Most records one request returns.
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Serialize)]
struct Listed {
    data: Vec<View>,
}

/// A record as the API shows it: its time in unix seconds (with milliseconds) too.
#[derive(Debug, Serialize)]
struct View {
    #[serde(flatten)]
    record: AuditRecord,
    at: f64,
}

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
