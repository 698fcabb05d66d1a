//! `GET /license/report` (the signed usage report, [`crate::usage::report`]) and
//! `GET /license/report/key` (the public key that verifies it).
//!
//! The report's only query parameter is `by=dataplane`; anything else is a 400 saying so,
//! rather than a report that silently ignores what the caller asked for.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::error::ApiError;
use super::form;
use super::openapi::{Described, ErrorBody};
use crate::state::ControlPlane;
use crate::usage::report::{self, ReportOptions, Sealed};

pub(super) fn routes() -> Described {
    Described::new().with(routes!(report)).with(routes!(key))
}

/// The key that verifies usage reports.
#[derive(Debug, Serialize, ToSchema)]
struct ReportKey {
    /// Always `ed25519`.
    algorithm: &'static str,
    /// The Ed25519 public key, standard base64 of 32 bytes.
    public_key: String,
}

/// The usage report of the last 12 months, signed with the control plane's report key.
#[utoipa::path(
    get,
    path = "/license/report",
    tag = "report",
    operation_id = "get_usage_report",
    params(("by" = Option<String>, Query, pattern = "^dataplane$", description = "`dataplane` adds the per-data-plane breakdown; nothing else is accepted.")),
    responses(
        (status = 200, description = "The signed report.", body = Sealed),
        (status = 400, description = "`by` other than `dataplane`, or another query parameter.", body = ErrorBody),
        (status = 503, description = "No report key is loaded, or storage cannot be reached.", body = ErrorBody),
    ),
)]
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

/// The public key that verifies usage reports (`licsync-cp report verify --key`).
#[utoipa::path(
    get,
    path = "/license/report/key",
    tag = "report",
    operation_id = "get_usage_report_key",
    responses(
        (status = 200, description = "The report key.", body = ReportKey),
        (status = 503, description = "No report key is loaded, or storage cannot be reached.", body = ErrorBody),
    ),
)]
async fn key(State(cp): State<Arc<ControlPlane>>) -> Result<Json<ReportKey>, ApiError> {
    let key = cp.report_key().ok_or_else(no_key)?;
    Ok(Json(ReportKey {
        algorithm: "ed25519",
        public_key: key.public_key_base64().to_owned(),
    }))
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
