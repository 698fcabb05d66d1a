//! `/admin-tokens`: the Admin API's own bearer tokens, each with a role (`admin`, `operator`,
//! `viewer`) and an optional lifetime, after Vault's and RHACS's API tokens. Only admins reach
//! these routes ([`super::access`]).
//!
//! The handlers translate HTTP to [`crate::principals::Principals`], which owns the rules. A
//! token's secret is shown once, in the creation answer; listings never carry it or its
//! digest. Revocation takes effect on the next request, at every node sharing the storage.

use std::sync::Arc;

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
use crate::model::{ApiToken, Role};
use crate::principals::{ApiTokenError, NewApiToken};
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list, create))
        .with(routes!(revoke))
}

/// What `POST /admin-tokens` sends.
#[derive(ToSchema)]
#[schema(as = NewAdminToken, example = json!({"name": "ci", "role": "operator", "ttl": "90d"}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the body `token_request` reads field by field; never built.
struct CreateBody {
    /// A name for the operator: 1 to 64 characters, no control characters, no surrounding
    /// spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069]([^\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069])?$"
    )]
    name: String,
    role: Role,
    /// How long it is valid (`"90d"`, or whole seconds); left out, until revoked.
    #[schema(schema_with = super::registration_tokens::ttl_schema)]
    ttl: Option<Value>,
}

/// What `POST /admin-tokens` asks for, its fields checked (the name and lifetime rules are
/// the service's).
fn token_request(JsonObject(fields): JsonObject) -> Result<NewApiToken, ApiError> {
    let mut violations = Violations::default();
    let (mut name, mut role, mut ttl) = (None, None, None);
    let missing: Vec<&str> = ["name", "role"]
        .into_iter()
        .filter(|f| fields.get(*f).is_none_or(Value::is_null))
        .collect();
    for (field, value) in fields {
        if value.is_null() {
            continue;
        }
        match field.as_str() {
            "name" => match value {
                Value::String(text) => name = Some(text),
                _ => violations.add(field, "expected a string"),
            },
            "role" => match value.as_str().and_then(Role::parse) {
                Some(r) => role = Some(r),
                None => violations.add(field, Role::one_of()),
            },
            "ttl" => match value {
                Value::String(text) => match text.parse::<HumanDuration>() {
                    Ok(d) => ttl = Some(d.0),
                    Err(e) => violations.add(field, e.to_string()),
                },
                Value::Number(n) => match whole_number(&n) {
                    Some(s) => ttl = Some(std::time::Duration::from_secs(s)),
                    None => violations.add(field, "expected a duration like \"30d\""),
                },
                _ => violations.add(field, "expected a duration like \"30d\""),
            },
            _ => violations.add(field, "unknown field"),
        }
    }
    for field in missing {
        let hint = match field {
            "name" => "e.g. \"ci-pipeline\"".to_owned(),
            _ => Role::one_of(),
        };
        violations.add(field, format!("required field missing; {hint}"));
    }
    violations.check()?;
    match (name, role) {
        (Some(name), Some(role)) => Ok(NewApiToken { name, role, ttl }),
        _ => Err(ApiError::internal(
            "token request validated without its fields",
        )),
    }
}

/// A token as the API lists it: never the secret or its digest.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminToken)]
struct Listed {
    id: Uuid,
    name: String,
    role: Role,
    created_at: i64,
    /// `null`: valid until revoked.
    expires_at: Option<i64>,
    expired: bool,
}

impl Listed {
    fn of(token: &ApiToken, now: i64) -> Self {
        Self {
            id: token.id,
            name: token.name.clone(),
            role: token.role,
            created_at: token.created_at,
            expires_at: token.expires_at,
            expired: token.is_expired(now),
        }
    }
}

/// The creation answer: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminTokenCreated)]
struct Created {
    id: Uuid,
    name: String,
    role: Role,
    /// The secret, for `Authorization: Bearer`; shown only here.
    token: String,
    created_at: i64,
    expires_at: Option<i64>,
}

fn token_error(error: ApiTokenError) -> ApiError {
    match error {
        ApiTokenError::Invalid { field, reason } => ApiError::violation(field, reason),
        ApiTokenError::LastAdmin { .. } => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        ApiTokenError::Random(e) => ApiError::internal(e.to_string()),
        ApiTokenError::Storage(e) => ApiError::storage(e),
    }
}

/// Creates an Admin API token with a role.
#[utoipa::path(
    post,
    path = "/admin-tokens",
    tag = "admin-tokens",
    operation_id = "create_admin_token",
    request_body(content = CreateBody, description = "Name, role and optional lifetime."),
    responses(
        (status = 201, description = "Created; the secret is shown this once.", body = Created),
        (status = 400, description = "A field missing, unknown or invalid.", body = ErrorBody),
    ),
)]
async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request = token_request(body)?;
    let (token, secret) = cp
        .principals()
        .create_api_token(request, unix_now())
        .await
        .map_err(token_error)?;
    tracing::info!(
        event = "admin_token.created",
        admin_token.id = %token.id,
        admin_token.name = %token.name,
        role = %token.role,
        expires_at = token.expires_at,
        "Admin API token created."
    );
    let created = Created {
        id: token.id,
        name: token.name,
        role: token.role,
        token: secret,
        created_at: token.created_at,
        expires_at: token.expires_at,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Lists the Admin API tokens, never their secrets.
#[utoipa::path(
    get,
    path = "/admin-tokens",
    tag = "admin-tokens",
    operation_id = "list_admin_tokens",
    responses((status = 200, description = "Every token (`next` is null).", body = Page<Listed>)),
)]
async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<Listed>>, ApiError> {
    let now = unix_now();
    let tokens = cp
        .principals()
        .api_tokens()
        .await
        .map_err(ApiError::storage)?;
    Ok(Json(Page::all(
        tokens.iter().map(|t| Listed::of(t, now)).collect(),
    )))
}

/// Revokes an Admin API token; it is refused from its next request on, at every node.
#[utoipa::path(
    delete,
    path = "/admin-tokens/{id}",
    tag = "admin-tokens",
    operation_id = "revoke_admin_token",
    params(("id" = Uuid, Path, description = "The token's id (a hyphenated UUID).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "No token has this id.", body = ErrorBody),
        (status = 409, description = "It is the last unexpired admin token.", body = ErrorBody),
    ),
)]
async fn revoke(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<StatusCode, ApiError> {
    let id = id.or_not_found()?;
    if !cp
        .principals()
        .revoke_api_token(id, unix_now())
        .await
        .map_err(token_error)?
    {
        return Err(ApiError::not_found());
    }
    tracing::info!(event = "admin_token.revoked", admin_token.id = %id, "Admin API token revoked.");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Result<NewApiToken, ApiError> {
        token_request(JsonObject(value.as_object().cloned().unwrap_or_default()))
    }

    #[test]
    fn requests_need_a_name_and_a_known_role_and_take_a_duration() {
        let ok = request(json!({"name": "ci", "role": "operator", "ttl": "30d"})).unwrap();
        assert_eq!((ok.name.as_str(), ok.role), ("ci", Role::Operator));
        assert_eq!(ok.ttl, Some(std::time::Duration::from_secs(30 * 86_400)));
        let forever = request(json!({"name": "ci", "role": "viewer"})).unwrap();
        assert_eq!(forever.ttl, None);
        for (body, needle) in [
            (json!({"role": "admin"}), "name: required"),
            (json!({"name": "ci"}), "role: required"),
            (
                json!({"name": "ci", "role": "root"}),
                "expected one of: admin, operator, viewer",
            ),
            (
                json!({"name": 7, "role": "admin"}),
                "name: expected a string",
            ),
            (json!({"name": "ci", "role": "admin", "ttl": "soon"}), "ttl"),
            (
                json!({"name": "ci", "role": "admin", "extra": 1}),
                "extra: unknown field",
            ),
        ] {
            let error = request(body.clone()).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(
                error.message().contains(needle),
                "{body}: {}",
                error.message()
            );
        }
    }
}
