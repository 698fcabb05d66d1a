//! The Admin API's error responses.
//!
//! Every failure is JSON with a `message` a client can act on. Where Kong defines a richer shape
//! (schema violations, unique-constraint and not-found errors on entities) the same `name`,
//! `fields` and `code` are added, so scripts written against Kong's Admin API keep working.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::licenses::WriteError;
use crate::store::StoreError;

/// Kong's error codes (`kong/db/errors.lua`), as sent in the `code` field.
const CODE_SCHEMA_VIOLATION: u32 = 2;
const CODE_UNIQUE_VIOLATION: u32 = 5;
const CODE_NOT_FOUND: u32 = 6;
const CODE_INVALID_OFFSET: u32 = 8;

/// An error answer: a status and a JSON object holding at least `message`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Map<String, Value>,
}

impl ApiError {
    /// `{"message": message}` with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("message".into(), Value::String(message.into()));
        Self { status, body }
    }

    /// 400 with a message saying what to fix.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Kong's plain `404 {"message":"Not found"}` for an unknown route or entity.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found")
    }

    /// Kong's 409 for an entity whose unique field is taken:
    /// `UNIQUE violation detected on '{username="alice"}'`.
    pub fn unique_violation(field: &str, value: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            format!("UNIQUE violation detected on '{{{field}=\"{value}\"}}'"),
        )
        .with_kong_name("unique constraint violation", CODE_UNIQUE_VIOLATION)
        .with_fields(one_field(field, json!(value)))
    }

    /// Kong's 400 for one field that breaks a rule: `schema violation (field: reason)`.
    pub fn violation(field: &str, reason: impl Into<String>) -> Self {
        let mut violations = Violations::default();
        violations.add(field, reason);
        violations.into_error()
    }

    /// Kong's 400 for an `id` path segment that is not a UUID.
    pub fn invalid_id() -> Self {
        let mut violations = Violations::default();
        violations.add("id", "expected a valid UUID");
        violations.into_error()
    }

    /// Kong's 400 for a paging offset this server did not hand out.
    pub fn invalid_offset(offset: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!(
                "'{offset}' is not a valid offset: use the offset of the previous page's \"next\" link"
            ),
        )
        .with_kong_name("invalid offset", CODE_INVALID_OFFSET)
    }

    /// A storage failure: logged, and answered with the error text only: `503` while storage
    /// is unreachable (`storage unavailable: ...`; retrying later, or at another node, may
    /// succeed), `500` otherwise.
    pub fn storage(error: StoreError) -> Self {
        tracing::error!(event = "admin.request_failed", %error, "Admin API request failed in storage.");
        let status = match error {
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // A conflict the license service could not settle by deciding again is this
            // server's failure, not the request's.
            StoreError::Backend(_) | StoreError::Corrupt { .. } | StoreError::Conflict { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, error.to_string())
    }

    /// Some other failure of this server (not of the request).
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(event = "admin.request_failed", error = %message, "Admin API request failed.");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn with_kong_name(mut self, name: &str, code: u32) -> Self {
        self.body.insert("name".into(), Value::String(name.into()));
        self.body.insert("code".into(), Value::from(code));
        self
    }

    fn with_fields(mut self, fields: Map<String, Value>) -> Self {
        self.body.insert("fields".into(), Value::Object(fields));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(Value::Object(self.body))).into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        let message = error.to_string();
        match error {
            WriteError::Invalid(_) => Self::bad_request(message.clone())
                .with_kong_name("schema violation", CODE_SCHEMA_VIOLATION)
                .with_fields(one_field("payload", json!(message))),
            WriteError::Duplicate { payload, .. } => Self::new(StatusCode::CONFLICT, message)
                .with_kong_name("unique constraint violation", CODE_UNIQUE_VIOLATION)
                .with_fields(one_field("payload", json!(payload))),
            WriteError::NotFound(id) => Self::new(StatusCode::NOT_FOUND, message)
                .with_kong_name("not found", CODE_NOT_FOUND)
                .with_fields(one_field("id", json!(id))),
            WriteError::Storage(error) => Self::storage(error),
        }
    }
}

fn one_field(name: &str, value: Value) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(name.into(), value);
    fields
}

/// Field errors in a request body, collected so one answer lists every problem, in Kong's
/// `schema violation (field: reason)` shape.
#[derive(Debug, Default)]
pub struct Violations(BTreeMap<String, String>);

impl Violations {
    /// Records that `field` is wrong and why.
    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.insert(field.into(), reason.into());
    }

    /// `Ok` when nothing was recorded.
    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }

    /// Kong's 400: `schema violation (a: x)`, or `2 schema violations (a: x; b: y)`.
    pub fn into_error(self) -> ApiError {
        let listed = self
            .0
            .iter()
            .map(|(field, reason)| format!("{field}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        let message = match self.0.len() {
            1 => format!("schema violation ({listed})"),
            n => format!("{n} schema violations ({listed})"),
        };
        let fields = self
            .0
            .into_iter()
            .map(|(field, reason)| (field, Value::String(reason)))
            .collect();
        ApiError::bad_request(message)
            .with_kong_name("schema violation", CODE_SCHEMA_VIOLATION)
            .with_fields(fields)
    }
}

/// Fallback for paths no route serves.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Fallback for a method a route does not serve (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_read_like_kong() {
        let mut one = Violations::default();
        one.add("payload", "required field missing");
        let err = one.into_error();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            Value::Object(err.body),
            json!({"message": "schema violation (payload: required field missing)",
                   "name": "schema violation", "code": 2,
                   "fields": {"payload": "required field missing"}})
        );
        let mut two = Violations::default();
        two.add("ttl", "x");
        two.add("max_uses", "y");
        assert_eq!(
            two.into_error().body["message"],
            "2 schema violations (max_uses: y; ttl: x)"
        );
        assert!(Violations::default().check().is_ok());
    }
}
