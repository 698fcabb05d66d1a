//! `/users`: the people who may call the Admin API with HTTP Basic and renew data-plane
//! certificates by hand (`licsync-dp registration renew --username ...`), with a role each.
//!
//! The handlers translate HTTP to [`crate::principals::Principals`], which owns the rules
//! (username shape, password length, one user per name, Argon2id hashing). Passwords are never
//! returned or logged; answers carry the username, role and creation time only.

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
use crate::model::{Role, User};
use crate::principals::{MIN_PASSWORD_CHARS, NewUser, UserError, check_password, check_username};
use crate::state::ControlPlane;

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list, create))
        .with(routes!(show, remove))
}

/// What `POST /users` sends.
#[derive(ToSchema)]
#[schema(as = NewUser, example = json!({"username": "alice", "password": "at least twelve characters", "role": "admin"}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the body `user_request` reads field by field; never built.
struct CreateBody {
    /// 1 to 64 of `A-Z a-z 0-9 . _ - @`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    username: String,
    /// At least 12 characters; stored as an Argon2id hash, never returned.
    #[schema(min_length = 12)]
    password: String,
    role: Role,
}

/// What `POST /users` asks for, its fields checked with the rules of [`crate::principals`].
fn user_request(JsonObject(fields): JsonObject) -> Result<NewUser, ApiError> {
    let mut violations = Violations::default();
    let (mut username, mut password, mut role) = (None, None, None);
    let missing: Vec<&str> = ["username", "password", "role"]
        .into_iter()
        .filter(|f| fields.get(*f).is_none_or(Value::is_null))
        .collect();
    for (field, value) in fields {
        if value.is_null() {
            continue;
        }
        match field.as_str() {
            "username" => match value {
                Value::String(name) => match check_username(&name) {
                    Ok(()) => username = Some(name),
                    Err(reason) => violations.add(field, reason),
                },
                _ => violations.add(field, "expected a string"),
            },
            // The reason never quotes the password.
            "password" => match value {
                Value::String(text) => match check_password(&text) {
                    Ok(()) => password = Some(text),
                    Err(reason) => violations.add(field, reason),
                },
                _ => violations.add(field, "expected a string"),
            },
            "role" => match value.as_str().and_then(Role::parse) {
                Some(r) => role = Some(r),
                None => violations.add(field, Role::one_of()),
            },
            _ => violations.add(field, "unknown field"),
        }
    }
    for field in missing {
        let hint = match field {
            "username" => "e.g. \"alice\"".to_owned(),
            "password" => format!("at least {MIN_PASSWORD_CHARS} characters"),
            _ => Role::one_of(),
        };
        violations.add(field, format!("required field missing; {hint}"));
    }
    violations.check()?;
    match (username, password, role) {
        (Some(username), Some(password), Some(role)) => Ok(NewUser {
            username,
            password,
            role,
        }),
        _ => Err(ApiError::internal(
            "user request validated without its fields",
        )),
    }
}

/// A user as the API shows it: never the password or its hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
struct UserView {
    username: String,
    role: Role,
    created_at: i64,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            username: user.username,
            role: user.role,
            created_at: user.created_at,
        }
    }
}

/// Creates a user who may log in with HTTP Basic under a role.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    operation_id = "create_user",
    request_body(content = CreateBody, description = "Username, password and role."),
    responses(
        (status = 201, description = "Created.", body = UserView),
        (status = 400, description = "A field missing, unknown or invalid (the password is never quoted).", body = ErrorBody),
        (status = 409, description = "The username is taken.", body = ErrorBody),
    ),
)]
async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let new = user_request(body)?;
    let user = cp
        .principals()
        .create_user(new)
        .await
        .map_err(|error| match error {
            UserError::Duplicate { username } => ApiError::unique_violation("username", &username),
            UserError::Invalid { field, reason } => ApiError::violation(field, reason),
            UserError::Hash(e) => ApiError::internal(e.to_string()),
            UserError::Storage(e) => ApiError::storage(e),
        })?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))).into_response())
}

/// Lists the users.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    operation_id = "list_users",
    responses((status = 200, description = "Every user (`next` is null).", body = Page<UserView>)),
)]
async fn list(State(cp): State<Arc<ControlPlane>>) -> Result<Json<Page<UserView>>, ApiError> {
    let users = cp.principals().users().await.map_err(ApiError::storage)?;
    Ok(Json(Page::all(
        users.into_iter().map(UserView::from).collect(),
    )))
}

/// The `{name}` segment of a known-good shape, or 404 (no user can have another shape).
fn username(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(name)) if check_username(&name).is_ok() => Ok(name),
        _ => Err(ApiError::not_found()),
    }
}

/// One user.
#[utoipa::path(
    get,
    path = "/users/{name}",
    tag = "users",
    operation_id = "get_user",
    params(("name" = String, Path, description = "The username.")),
    responses(
        (status = 200, description = "The user.", body = UserView),
        (status = 404, description = "No such user.", body = ErrorBody),
    ),
)]
async fn show(
    State(cp): State<Arc<ControlPlane>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserView>, ApiError> {
    let name = username(path)?;
    let user = cp
        .principals()
        .user(&name)
        .await
        .map_err(ApiError::storage)?;
    user.map(|u| Json(UserView::from(u)))
        .ok_or_else(ApiError::not_found)
}

/// Deletes a user.
#[utoipa::path(
    delete,
    path = "/users/{name}",
    tag = "users",
    operation_id = "delete_user",
    params(("name" = String, Path, description = "The username.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such user.", body = ErrorBody),
    ),
)]
async fn remove(
    State(cp): State<Arc<ControlPlane>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = username(path)?;
    if !cp
        .principals()
        .delete_user(&name)
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

    fn request(value: Value) -> Result<NewUser, ApiError> {
        user_request(JsonObject(value.as_object().cloned().unwrap_or_default()))
    }

    #[test]
    fn a_complete_request_is_accepted() {
        let r = request(
            json!({"username": "alice", "password": "correct horse battery", "role": "admin"}),
        )
        .unwrap();
        assert_eq!((r.username.as_str(), r.role), ("alice", Role::Admin));
        assert_eq!(r.password, "correct horse battery");
    }

    #[test]
    fn every_problem_is_named_and_the_password_is_never_echoed() {
        let err =
            request(json!({"username": "al ice", "password": "hunter2", "role": "root", "x": 1}))
                .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let text = format!("{err:?}");
        for says in [
            "username",
            "password",
            "at least 12 characters",
            "role",
            "admin, operator, viewer",
            "x: unknown field",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        let err = request(json!({})).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("3 schema violations"), "{text}");
        assert!(text.contains("required field missing"), "{text}");
    }
}
