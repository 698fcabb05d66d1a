//! `/registration-tokens`: the short-lived secrets an operator hands to a new data plane
//! (`licsync-dp registration create --token ...`), after Flex Gateway's registration tokens.
//!
//! The handlers translate HTTP to [`crate::registration_tokens::RegistrationTokens`], which
//! owns the rules. A token is shown once, in the creation answer, together with what the data
//! plane needs to trust the cluster (CA fingerprint, cluster URL). Listings never contain the
//! secret or its digest.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use licsync_common::duration::HumanDuration;
use licsync_common::unix_now;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::body::{JsonObject, whole_number};
use super::error::{ApiError, Violations};
use super::openapi::{Described, ErrorBody};
use super::params::{EntityId, Page};
use crate::registration_tokens::{
    CreateError, MAX_USES, NewToken, check_max_uses, check_name, check_ttl, is_expired, ttl_bounds,
};
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list, create))
        .with(routes!(revoke))
}

/// What `POST /registration-tokens` may send; every field has a default.
#[derive(ToSchema)]
#[schema(as = NewRegistrationToken, example = json!({"name": "edge-1", "ttl": "4h", "max_uses": 1}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the body `token_request` reads field by field; never built.
struct CreateBody {
    /// A name for the operator (at most 128 characters, no control characters).
    #[schema(
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    /// How long it may be used: a duration (`"4h"`, `"30d"`; 1 s to 30 d) or whole seconds;
    /// default 4 h.
    #[schema(schema_with = ttl_schema)]
    ttl: Option<Value>,
    /// How many data planes may register with it (1 to 10000); default 1.
    #[schema(minimum = 1, maximum = 10000)]
    max_uses: Option<u32>,
}

/// `ttl`: a duration string or whole seconds.
pub(super) fn ttl_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples([Value::from("4h")]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A duration (`90s`, `4h`, `30d`) or whole seconds; null is the default.",
        ))
        .build()
        .into()
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
        Value::Number(n) => Duration::from_secs(whole_number(n).ok_or_else(ttl_bounds)?),
        _ => return Err(format!("expected a duration string: {}", ttl_bounds())),
    };
    check_ttl(ttl)
}

/// An integer (or, from a form body, a decimal string) within the bounds [`check_max_uses`]
/// keeps.
fn max_uses(value: &Value) -> Option<u32> {
    let n = match value {
        Value::Number(n) => whole_number(n)?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    check_max_uses(n)
}

/// The creation answer: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RegistrationTokenCreated)]
struct Created {
    id: Uuid,
    name: String,
    /// The secret (`lsr_...`), for `licsync-dp registration create --token`; shown only here.
    token: String,
    created_at: i64,
    expires_at: i64,
    max_uses: u32,
    /// SHA-256 of the cluster CA certificate (hex), for `--ca-cert-hash sha256:...`.
    ca_cert_sha256: String,
    /// Where data planes connect.
    cluster_url: String,
}

/// A listed token: everything but the secret and its digest.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RegistrationToken)]
struct Listed {
    id: Uuid,
    name: String,
    created_at: i64,
    expires_at: i64,
    max_uses: u32,
    uses: u32,
    expired: bool,
}

/// Creates a registration token for new data planes.
#[utoipa::path(
    post,
    path = "/registration-tokens",
    tag = "registration-tokens",
    operation_id = "create_registration_token",
    request_body(content = Option<CreateBody>, description = "Name, lifetime and uses; all optional, and so is the body."),
    responses(
        (status = 201, description = "Created; the secret is shown this once.", body = Created),
        (status = 400, description = "A field unknown, of the wrong type or out of bounds.", body = ErrorBody),
    ),
)]
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

/// Lists the registration tokens, never their secrets.
#[utoipa::path(
    get,
    path = "/registration-tokens",
    tag = "registration-tokens",
    operation_id = "list_registration_tokens",
    responses((status = 200, description = "Every token (`next` is null).", body = Page<Listed>)),
)]
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

/// Revokes a registration token (also answered `204` for an unknown id).
#[utoipa::path(
    delete,
    path = "/registration-tokens/{id}",
    tag = "registration-tokens",
    operation_id = "revoke_registration_token",
    params(("id" = Uuid, Path, description = "The token's id (a hyphenated UUID).")),
    responses(
        (status = 204, description = "Revoked, or there was none."),
        (status = 400, description = "The id is not a UUID.", body = ErrorBody),
    ),
)]
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
        let r = request(json!({"ttl": 60.0, "max_uses": 2.0})).unwrap();
        assert_eq!((r.ttl, r.max_uses), (Duration::from_secs(60), 2));
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
