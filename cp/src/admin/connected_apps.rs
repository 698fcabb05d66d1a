//! `/connected-apps`: programs (CI jobs, automation) that authenticate with a client id and
//! secret, after Anypoint's connected apps, limited to the scopes they were granted.
//!
//! The handlers translate HTTP to [`crate::principals::Principals`], which owns the rules (name,
//! scopes) and generates the client id and the secret. The secret is shown once, in the
//! creation answer; only its SHA-256 is stored, and listings and logs name an app by client id
//! and name only.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::body::JsonObject;
use super::error::{ApiError, Violations};
use super::openapi::{Described, ErrorBody};
use super::params::Page;
use crate::model::{ConnectedApp, Scope};
use crate::principals::{AppError, check_app_name, check_scopes, is_client_id, known_scopes};
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list, create))
        .with(routes!(show, remove))
}

/// What `POST /connected-apps` sends.
#[derive(ToSchema)]
#[schema(as = NewConnectedApp, example = json!({"name": "ci-renewals", "scopes": ["manage:servers"]}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the body `AppRequest::from_body` reads; never built.
struct CreateBody {
    /// 1 to 128 characters, no control characters, not only spaces (surrounding spaces are
    /// trimmed).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    /// 1 to 16 scopes (a form body may send them as one string, separated by commas).
    #[schema(min_items = 1, max_items = 16)]
    scopes: Vec<Scope>,
}

/// What `POST /connected-apps` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppRequest {
    name: String,
    scopes: Vec<Scope>,
}

impl AppRequest {
    fn from_body(JsonObject(fields): JsonObject) -> Result<Self, ApiError> {
        let mut violations = Violations::default();
        let (mut name, mut scopes) = (None, None);
        let present = |field: &str| fields.get(field).is_some_and(|v| !v.is_null());
        let (name_sent, scopes_sent) = (present("name"), present("scopes"));
        for (field, value) in fields {
            if value.is_null() {
                continue;
            }
            match field.as_str() {
                "name" => match value {
                    Value::String(text) => match check_app_name(&text) {
                        Ok(trimmed) => name = Some(trimmed),
                        Err(reason) => violations.add(field, reason),
                    },
                    _ => violations.add(field, "expected a string"),
                },
                "scopes" => match parse_scopes(&value) {
                    Ok(parsed) => scopes = Some(parsed),
                    Err(reason) => violations.add(field, reason),
                },
                _ => violations.add(field, "unknown field"),
            }
        }
        if !name_sent {
            violations.add("name", "required field missing; e.g. \"ci-renewals\"");
        }
        if !scopes_sent {
            violations.add(
                "scopes",
                format!("required field missing; {}", known_scopes()),
            );
        }
        violations.check()?;
        match (name, scopes) {
            (Some(name), Some(scopes)) => Ok(Self { name, scopes }),
            _ => Err(ApiError::internal(
                "app request validated without its fields",
            )),
        }
    }
}

/// The scope names of a JSON list, or of one form string listing several separated by
/// commas or spaces, checked by [`check_scopes`].
fn parse_scopes(value: &Value) -> Result<Vec<Scope>, String> {
    let names: Vec<&str> = match value {
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or("expected a list of strings"))
            .collect::<Result<_, _>>()?,
        Value::String(text) => text.split([',', ' ']).filter(|s| !s.is_empty()).collect(),
        _ => return Err("expected a list of strings, e.g. [\"manage:servers\"]".into()),
    };
    check_scopes(names.into_iter())
}

/// The creation answer: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
#[schema(as = ConnectedAppCreated)]
struct Created {
    client_id: String,
    /// The secret (`lsc_...`); shown only here.
    client_secret: String,
    name: String,
    scopes: Vec<Scope>,
    created_at: i64,
}

/// An app as listings show it: never the secret or its digest.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConnectedApp)]
struct AppView {
    client_id: String,
    name: String,
    scopes: Vec<Scope>,
    created_at: i64,
}

impl From<ConnectedApp> for AppView {
    fn from(app: ConnectedApp) -> Self {
        Self {
            client_id: app.client_id,
            name: app.name,
            scopes: app.scopes,
            created_at: app.created_at,
        }
    }
}

/// Creates a connected app; its secret is shown once.
#[utoipa::path(
    post,
    path = "/connected-apps",
    tag = "connected-apps",
    operation_id = "create_connected_app",
    request_body(content = CreateBody, description = "Name and scopes."),
    responses(
        (status = 201, description = "Created; the secret is shown this once.", body = Created),
        (status = 400, description = "A field missing, unknown or invalid (an unknown scope is named).", body = ErrorBody),
    ),
)]
async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request = AppRequest::from_body(body)?;
    let created = cp
        .principals()
        .create_app(&request.name, request.scopes)
        .await
        .map_err(|error| match error {
            AppError::Invalid { field, reason } => ApiError::violation(field, reason),
            AppError::Random(e) => ApiError::internal(e.to_string()),
            AppError::ClientIdTaken => ApiError::internal(error.to_string()),
            AppError::Storage(e) => ApiError::storage(e),
        })?;
    let app = created.app;
    let created = Created {
        client_id: app.client_id,
        client_secret: created.client_secret,
        name: app.name,
        scopes: app.scopes,
        created_at: app.created_at,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Lists the connected apps, never their secrets.
#[utoipa::path(
    get,
    path = "/connected-apps",
    tag = "connected-apps",
    operation_id = "list_connected_apps",
    responses((status = 200, description = "Every app (`next` is null).", body = Page<AppView>)),
)]
async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<AppView>>, ApiError> {
    let apps = cp.principals().apps().await.map_err(ApiError::storage)?;
    Ok(Json(Page::all(
        apps.into_iter().map(AppView::from).collect(),
    )))
}

/// The `{client_id}` segment of the shape this control plane hands out, or 404.
fn client_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(id)) if is_client_id(&id) => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

/// One connected app.
#[utoipa::path(
    get,
    path = "/connected-apps/{client_id}",
    tag = "connected-apps",
    operation_id = "get_connected_app",
    params(("client_id" = String, Path, description = "The app's client id.")),
    responses(
        (status = 200, description = "The app.", body = AppView),
        (status = 404, description = "No such app.", body = ErrorBody),
    ),
)]
async fn show(
    State(cp): State<Arc<ControlPlane>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AppView>, ApiError> {
    let id = client_id(path)?;
    let app = cp.principals().app(&id).await.map_err(ApiError::storage)?;
    app.map(|a| Json(AppView::from(a)))
        .ok_or_else(ApiError::not_found)
}

/// Deletes a connected app.
#[utoipa::path(
    delete,
    path = "/connected-apps/{client_id}",
    tag = "connected-apps",
    operation_id = "delete_connected_app",
    params(("client_id" = String, Path, description = "The app's client id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such app.", body = ErrorBody),
    ),
)]
async fn remove(
    State(cp): State<Arc<ControlPlane>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = client_id(path)?;
    if !cp
        .principals()
        .delete_app(&id)
        .await
        .map_err(ApiError::storage)?
    {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> Result<AppRequest, ApiError> {
        AppRequest::from_body(JsonObject(value.as_object().cloned().unwrap_or_default()))
    }

    #[test]
    fn scopes_are_deduplicated_and_sorted_from_lists_or_form_strings() {
        let r = request(json!({"name": " ci ", "scopes": ["view:organization", "manage:servers", "manage:servers"]}))
            .unwrap();
        assert_eq!(r.name, "ci");
        assert_eq!(
            r.scopes,
            vec![Scope::ManageServers, Scope::ViewOrganization]
        );
        let r = request(json!({"name": "ci", "scopes": "read:servers, manage:servers"})).unwrap();
        assert_eq!(r.scopes, vec![Scope::ReadServers, Scope::ManageServers]);
    }

    #[test]
    fn bad_requests_name_what_to_fix() {
        for (body, says) in [
            (
                json!({"name": "ci", "scopes": ["manage:all"]}),
                "unknown scope 'manage:all'; known scopes: read:servers, manage:servers, view:organization",
            ),
            (json!({"name": "ci", "scopes": []}), "at least one scope"),
            (json!({"name": "ci", "scopes": [1]}), "list of strings"),
            (
                json!({"name": "ci", "scopes": vec!["read:servers"; 17]}),
                "at most 16",
            ),
            (
                json!({"name": "", "scopes": ["read:servers"]}),
                "name: must not be empty",
            ),
            (
                json!({"name": "x".repeat(129), "scopes": ["read:servers"]}),
                "at most 128",
            ),
            (
                json!({"name": "ci\r\nWARN forged", "scopes": ["read:servers"]}),
                "name must not contain control characters (found U+000D)",
            ),
            (
                json!({"scopes": ["read:servers"]}),
                "name: required field missing",
            ),
            (json!({"name": "ci"}), "scopes: required field missing"),
            (
                json!({"name": "ci", "scopes": ["read:servers"], "secret": "x"}),
                "secret: unknown field",
            ),
        ] {
            let err = request(body.clone()).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            let text = format!("{err:?}");
            assert!(text.contains(says), "{body}: {text}");
        }
    }
}
