//! `/licenses`: Kong's license entity, with Kong's status codes and message texts, so the
//! scripts and tools that manage licenses on a Kong control plane work unchanged.
//!
//! The handlers only translate HTTP to [`crate::licenses::Licenses`], the single writer that
//! validates, persists and publishes; every answer comes after the write is durable.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::body::JsonObject;
use super::error::{ApiError, Violations};
use super::params::{EntityId, Page, Paging};
use crate::licenses::WriteError;
use crate::model::StoredLicense;
use crate::state::ControlPlane;

const COLLECTION: &str = "/licenses";

pub(super) fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route(COLLECTION, get(list).post(create))
        .route(
            "/licenses/{id}",
            get(fetch).put(put).patch(patch).delete(delete),
        )
}

/// Kong's license entity.
#[derive(Debug, Serialize)]
struct Entity<'a> {
    id: Uuid,
    /// The document exactly as stored.
    payload: &'a str,
    created_at: i64,
    updated_at: i64,
}

impl<'a> From<&'a StoredLicense> for Entity<'a> {
    fn from(license: &'a StoredLicense) -> Self {
        Self {
            id: license.id,
            payload: &license.document,
            created_at: license.created_at,
            updated_at: license.updated_at,
        }
    }
}

/// Which request a body belongs to: what `id` in it means differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Post,
    /// `PUT` / `PATCH`: the path names the entity, an `id` in the body (a fetched entity sent
    /// back) is ignored.
    ById,
}

/// The license document in a request body, or `None` when the body has no `payload`.
fn document_in(body: JsonObject, write: Write) -> Result<Option<String>, ApiError> {
    let JsonObject(mut fields) = body;
    let payload = fields.remove("payload");
    let mut violations = Violations::default();
    for name in fields.keys() {
        match name.as_str() {
            "created_at" | "updated_at" => {}
            "id" if write == Write::ById => {}
            "id" => violations.add(
                "id",
                "cannot be chosen on POST; use PUT /licenses/{id} to create a license with a given id",
            ),
            _ => violations.add(name.clone(), "unknown field"),
        }
    }
    let document = match payload {
        None => None,
        // Kong's PATCH with `"payload": null` tries to clear a required field.
        Some(Value::Null) => {
            violations.add("payload", "required field missing");
            None
        }
        Some(Value::String(document)) => Some(document),
        Some(object @ Value::Object(_)) => {
            Some(serde_json::to_string(&object).map_err(|error| {
                ApiError::internal(format!("cannot serialise payload: {error}"))
            })?)
        }
        Some(_) => {
            violations.add(
                "payload",
                "expected a string (the license document) or a JSON object",
            );
            None
        }
    };
    violations.check()?;
    Ok(document)
}

fn require(document: Option<String>) -> Result<String, ApiError> {
    document.ok_or_else(|| {
        let mut violations = Violations::default();
        violations.add("payload", "required field missing");
        violations.into_error()
    })
}

/// The entity answer, serialised while the license is borrowed.
fn entity_response(status: StatusCode, license: &StoredLicense) -> Response {
    (status, Json(Entity::from(license))).into_response()
}

async fn list(State(cp): State<Arc<ControlPlane>>, paging: Paging) -> Response {
    let set = cp.licenses().current();
    let mut rest = match paging.start {
        Some(start) => set.licenses.range(start..),
        None => set.licenses.range(..),
    };
    let data: Vec<Entity<'_>> = rest
        .by_ref()
        .take(paging.size)
        .map(|(_, license)| Entity::from(license.as_ref()))
        .collect();
    let next = rest.next().map(|(id, _)| paging.next_link(COLLECTION, *id));
    Json(Page { data, next }).into_response()
}

async fn fetch(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<Response, ApiError> {
    let id = id.or_not_found()?;
    let set = cp.licenses().current();
    let license = set.licenses.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(entity_response(StatusCode::OK, license))
}

async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let document = require(document_in(body, Write::Post)?)?;
    let stored = cp.licenses().create(document).await?;
    Ok(entity_response(StatusCode::CREATED, &stored))
}

async fn put(
    State(cp): State<Arc<ControlPlane>>,
    id: EntityId,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let id = id.or_invalid()?;
    let document = require(document_in(body, Write::ById)?)?;
    let (stored, _outcome) = cp.licenses().put(id, document).await?;
    Ok(entity_response(StatusCode::OK, &stored))
}

async fn patch(
    State(cp): State<Arc<ControlPlane>>,
    id: EntityId,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let id = id.or_invalid()?;
    let stored = match document_in(body, Write::ById)? {
        Some(document) => cp.licenses().patch(id, document).await?,
        // Kong's PATCH changes only the fields sent: with none, the entity comes back as is.
        None => cp
            .licenses()
            .current()
            .licenses
            .get(&id)
            .cloned()
            .ok_or(WriteError::NotFound(id))?,
    };
    Ok(entity_response(StatusCode::OK, &stored))
}

async fn delete(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<StatusCode, ApiError> {
    let id = id.or_invalid()?;
    cp.licenses().delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn body(value: Value) -> JsonObject {
        match value {
            Value::Object(fields) => JsonObject(fields),
            _ => JsonObject(Map::new()),
        }
    }

    #[test]
    fn payload_may_be_a_string_or_an_object() {
        let doc = document_in(body(json!({"payload": "{\"license\":{}}"})), Write::Post).unwrap();
        assert_eq!(doc.as_deref(), Some("{\"license\":{}}"));
        let doc = document_in(
            body(json!({"payload": {"license": {"version": "1"}}})),
            Write::Post,
        )
        .unwrap();
        assert_eq!(doc.as_deref(), Some(r#"{"license":{"version":"1"}}"#));
        assert_eq!(document_in(body(json!({})), Write::ById).unwrap(), None);
        assert!(document_in(body(json!({"payload": null})), Write::ById).is_err());
    }

    #[test]
    fn unknown_and_mistyped_fields_are_schema_violations() {
        for value in [
            json!({"payload": 1}),
            json!({"payload": "x", "colour": "red"}),
            json!({"payload": "x", "id": "abc"}),
        ] {
            let err = document_in(body(value.clone()), Write::Post).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{value}");
        }
        let echoed = json!({"id": "abc", "payload": "x", "created_at": 1, "updated_at": 2});
        assert!(document_in(body(echoed), Write::ById).is_ok());
    }
}
