//! `/registration-tokens`: the short-lived secrets an operator hands to a new data plane
//! (`licsync-dp registration create --token ...`), after Flex Gateway's registration tokens.
//!
//! The handlers translate HTTP to [`crate::registration_tokens::RegistrationTokens`], which
//! owns the rules. A token is shown once, in the creation answer, together with what the data
//! plane needs to trust the cluster (CA fingerprint, cluster URL). Listings never contain the
//! secret or its digest.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use licsync_common::duration::HumanDuration;
use licsync_common::unix_now;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::body::JsonObject;
use super::error::{ApiError, Violations};
use super::params::{EntityId, Page};
use crate::registration_tokens::{
    CreateError, MAX_USES, NewToken, check_max_uses, check_name, check_ttl, is_expired, ttl_bounds,
};
use crate::state::ControlPlane;

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/registration-tokens", get(list).post(create))
        .route("/registration-tokens/{id}", delete(revoke))
}

/// What `POST /registration-tokens` asks for, validated.
fn token_request(JsonObject(fields): JsonObject) -> Result<NewToken, ApiError> {
    let mut violations = Violations::default();
    let mut request = NewToken::default();
    for (field, value) in fields {
        if value.is_null() {
            continue;
        }
        match field.as_str() {
            "name" => match value {
                Value::String(name) => match check_name(&name) {
                    Ok(()) => request.name = name,
                    Err(reason) => violations.add(field, reason),
                },
                _ => violations.add(field, "expected a string"),
            },
            "ttl" => match ttl(&value) {
                Ok(ttl) => request.ttl = ttl,
                Err(reason) => violations.add(field, reason),
            },
            "max_uses" => match max_uses(&value) {
                Some(n) => request.max_uses = n,
                None => violations.add(field, format!("expected an integer from 1 to {MAX_USES}")),
            },
            _ => violations.add(field, "unknown field"),
        }
    }
    violations.check()?;
    Ok(request)
}

/// A duration string (`"4h"`) or whole seconds, within the bounds [`check_ttl`] keeps.
fn ttl(value: &Value) -> Result<Duration, String> {
    let ttl = match value {
        Value::String(text) => text.parse::<HumanDuration>().map_err(|e| e.to_string())?.0,
        Value::Number(n) => Duration::from_secs(n.as_u64().ok_or_else(ttl_bounds)?),
        _ => return Err(format!("expected a duration string: {}", ttl_bounds())),
    };
    check_ttl(ttl)
}

/// An integer (or, from a form body, a decimal string) within the bounds [`check_max_uses`]
/// keeps.
fn max_uses(value: &Value) -> Option<u32> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    check_max_uses(n)
}

/// The creation answer: the only time the secret is shown.
#[derive(Debug, Serialize)]
struct Created {
    id: Uuid,
    name: String,
    token: String,
    created_at: i64,
    expires_at: i64,
    max_uses: u32,
    ca_cert_sha256: String,
    cluster_url: String,
}

/// A listed token: everything but the secret and its digest.
#[derive(Debug, Serialize)]
struct Listed {
    id: Uuid,
    name: String,
    created_at: i64,
    expires_at: i64,
    max_uses: u32,
    uses: u32,
    expired: bool,
}

async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request = token_request(body)?;
    let issued = cp
        .registration_tokens()
        .create(request, unix_now())
        .await
        .map_err(|error| match error {
            CreateError::Invalid { field, reason } => ApiError::violation(field, reason),
            CreateError::Random(e) => ApiError::internal(e.to_string()),
            CreateError::Storage(e) => ApiError::storage(e),
        })?;
    let record = issued.record;
    let created = Created {
        id: record.id,
        name: record.name,
        token: issued.secret,
        created_at: record.created_at,
        expires_at: record.expires_at,
        max_uses: record.max_uses,
        ca_cert_sha256: cp.ca_fingerprint().to_owned(),
        cluster_url: cp.cluster_url().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<Listed>>, ApiError> {
    let tokens = cp
        .registration_tokens()
        .list()
        .await
        .map_err(ApiError::storage)?;
    let now = unix_now();
    let data = tokens
        .into_iter()
        .map(|t| Listed {
            expired: is_expired(&t, now),
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            expires_at: t.expires_at,
            max_uses: t.max_uses,
            uses: t.uses,
        })
        .collect();
    Ok(Json(Page::all(data)))
}

async fn revoke(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<StatusCode, ApiError> {
    let id = id.or_invalid()?;
    cp.registration_tokens()
        .revoke(id)
        .await
        .map_err(ApiError::storage)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::registration_tokens::{DEFAULT_TTL, MAX_TTL};

    fn request(value: Value) -> Result<NewToken, ApiError> {
        token_request(JsonObject(value.as_object().cloned().unwrap_or_default()))
    }

    #[test]
    fn defaults_are_four_hours_and_one_use() {
        let r = request(json!({})).unwrap();
        assert_eq!((r.ttl, r.max_uses, r.name.as_str()), (DEFAULT_TTL, 1, ""));
        let r = request(json!({"name": "edge", "ttl": "30d", "max_uses": 10000})).unwrap();
        assert_eq!((r.ttl, r.max_uses), (MAX_TTL, MAX_USES));
        let r = request(json!({"ttl": 60, "max_uses": "3"})).unwrap();
        assert_eq!((r.ttl, r.max_uses), (Duration::from_secs(60), 3));
    }

    #[test]
    fn out_of_bounds_values_say_what_is_allowed() {
        for (body, field) in [
            (json!({"ttl": "31d"}), "ttl"),
            (json!({"ttl": "500ms"}), "ttl"),
            (json!({"ttl": "soon"}), "ttl"),
            (json!({"ttl": true}), "ttl"),
            (json!({"max_uses": 0}), "max_uses"),
            (json!({"max_uses": 10001}), "max_uses"),
            (json!({"max_uses": 1.5}), "max_uses"),
            (json!({"name": "x".repeat(129)}), "name"),
            (json!({"name": 7}), "name"),
            (json!({"name": "edge\nINFO forged"}), "control characters"),
            (json!({"name": "edge\u{1b}[2J"}), "control characters"),
            (json!({"colour": "red"}), "colour"),
        ] {
            let err = request(body.clone()).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            let text = format!("{err:?}");
            assert!(text.contains(field), "{body}: {text}");
        }
    }
}
