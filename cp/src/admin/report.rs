//! `GET /license/report` (the signed usage report, [`crate::usage::report`]) and
//! `GET /license/report/key` (the public key that verifies it).
//!
//! The report's only query parameter is `by=dataplane`; anything else is a 400 saying so,
//! rather than a report that silently ignores what the caller asked for.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::error::ApiError;
use super::form;
use crate::state::ControlPlane;
use crate::usage::report::{self, ReportOptions};

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/license/report", get(report))
        .route("/license/report/key", get(key))
}

async fn report(
    State(cp): State<Arc<ControlPlane>>,
    uri: Uri,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let options = parse_options(uri.query().unwrap_or(""))?;
    let key = cp.report_key().ok_or_else(no_key)?;
    let report = report::build(&cp, key, options, OffsetDateTime::now_utc())
        .await
        .map_err(ApiError::storage)?;
    Ok(Json(report))
}

async fn key(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Value>, ApiError> {
    let key = cp.report_key().ok_or_else(no_key)?;
    Ok(Json(json!({
        "algorithm": "ed25519",
        "public_key": key.public_key_base64(),
    })))
}

fn no_key() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "this control plane has no report key loaded; usage reports cannot be signed",
    )
}

fn parse_options(query: &str) -> Result<ReportOptions, ApiError> {
    let mut options = ReportOptions::default();
    for (name, value) in form::decode(query) {
        match (name.as_str(), value.as_str()) {
            ("by", "dataplane") => options.by_dataplane = true,
            ("by", other) => {
                return Err(ApiError::bad_request(format!(
                    "by must be 'dataplane', got '{}'",
                    clip(other)
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{}'; /license/report takes only by=dataplane",
                    clip(other)
                )));
            }
        }
    }
    Ok(options)
}

/// At most 64 characters of a caller's text, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_by_dataplane_is_understood() {
        assert_eq!(parse_options("").unwrap(), ReportOptions::default());
        assert!(parse_options("by=dataplane").unwrap().by_dataplane);
        for (query, says) in [
            ("by=workspace", "by must be 'dataplane', got 'workspace'"),
            ("by=", "by must be 'dataplane', got ''"),
            ("size=10", "unknown query parameter 'size'"),
        ] {
            let error = parse_options(query).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{query}");
            let body = format!("{error:?}");
            assert!(body.contains(says), "{query}: {body}");
        }
    }
}
