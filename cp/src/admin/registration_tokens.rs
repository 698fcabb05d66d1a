//! `/registration-tokens`: the short-lived secrets an operator hands to a new data plane
//! (`licsync-dp registration create --token ...`), after Flex Gateway's registration tokens.
//!
//! A token is shown once, in the creation answer, together with what the data plane needs to
//! trust the cluster (CA fingerprint, cluster URL). Only its SHA-256 is stored; listings never
//! contain the secret or its digest, and logs name tokens by id only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use licsync_common::duration::HumanDuration;
use licsync_common::{log_text, unix_now};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::body::JsonObject;
use super::error::{ApiError, Violations};
use super::params::{EntityId, Page};
use crate::model::RegistrationToken;
use crate::secrets;
use crate::state::ControlPlane;

/// Lifetime of a token when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);
/// Shortest and longest lifetime a token may be given.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most data planes one token may register.
pub const MAX_USES: u32 = 10_000;
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/registration-tokens", get(list).post(create))
        .route("/registration-tokens/{id}", delete(revoke))
}

/// What `POST /registration-tokens` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenRequest {
    name: String,
    ttl: Duration,
    max_uses: u32,
}

impl TokenRequest {
    fn from_body(JsonObject(fields): JsonObject) -> Result<Self, ApiError> {
        let mut violations = Violations::default();
        let mut request = Self {
            name: String::new(),
            ttl: DEFAULT_TTL,
            max_uses: 1,
        };
        for (field, value) in fields {
            if value.is_null() {
                continue;
            }
            match field.as_str() {
                "name" => match value {
                    Value::String(name) if name.chars().count() > MAX_NAME_CHARS => violations.add(
                        field,
                        format!("must be at most {MAX_NAME_CHARS} characters long"),
                    ),
                    Value::String(name) => match log_text::check_name("name", &name) {
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
                    None => {
                        violations.add(field, format!("expected an integer from 1 to {MAX_USES}"))
                    }
                },
                _ => violations.add(field, "unknown field"),
            }
        }
        violations.check()?;
        Ok(request)
    }
}

/// A duration string (`"4h"`) or whole seconds, within [`MIN_TTL`]..=[`MAX_TTL`].
fn ttl(value: &Value) -> Result<Duration, String> {
    let bounds = format!(
        "must be from {} to {}, e.g. \"4h\"",
        HumanDuration(MIN_TTL),
        HumanDuration(MAX_TTL)
    );
    let ttl = match value {
        Value::String(text) => text.parse::<HumanDuration>().map_err(|e| e.to_string())?.0,
        Value::Number(n) => Duration::from_secs(n.as_u64().ok_or_else(|| bounds.clone())?),
        _ => return Err(format!("expected a duration string: {bounds}")),
    };
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(bounds)
    }
}

/// An integer (or, from a form body, a decimal string) within 1..=[`MAX_USES`].
fn max_uses(value: &Value) -> Option<u32> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok().filter(|n| (1..=MAX_USES).contains(n))
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
    let request = TokenRequest::from_body(body)?;
    let secret = secrets::generate("lsr_").map_err(|e| ApiError::internal(e.to_string()))?;
    let now = unix_now();
    let ttl_secs = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
    let record = RegistrationToken {
        id: Uuid::new_v4(),
        name: request.name,
        token_hash: secrets::hash(&secret),
        created_at: now,
        expires_at: now.saturating_add(ttl_secs),
        max_uses: request.max_uses,
        uses: 0,
    };
    cp.store
        .insert_registration_token(&record)
        .await
        .map_err(ApiError::storage)?;
    tracing::info!(
        event = "registration_token.created",
        registration_token.id = %record.id,
        registration_token.name = %record.name,
        expires_at = record.expires_at,
        max_uses = record.max_uses,
        "Registration token created."
    );
    let created = Created {
        id: record.id,
        name: record.name,
        token: secret,
        created_at: record.created_at,
        expires_at: record.expires_at,
        max_uses: record.max_uses,
        ca_cert_sha256: cp.ca_fingerprint.clone(),
        cluster_url: cp.cluster_url.clone(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<Listed>>, ApiError> {
    let mut tokens = cp
        .store
        .registration_tokens()
        .await
        .map_err(ApiError::storage)?;
    tokens.sort_by_key(|t| (t.created_at, t.id));
    let now = unix_now();
    let data = tokens
        .into_iter()
        .map(|t| Listed {
            expired: now >= t.expires_at,
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
    let existed = cp
        .store
        .delete_registration_token(id)
        .await
        .map_err(ApiError::storage)?;
    if existed {
        tracing::info!(
            event = "registration_token.revoked",
            registration_token.id = %id,
            "Registration token revoked."
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Result<TokenRequest, ApiError> {
        TokenRequest::from_body(JsonObject(value.as_object().cloned().unwrap_or_default()))
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
