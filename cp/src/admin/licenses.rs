//! `/licenses`: Kong's license entity, with Kong's status codes and message texts, so the
//! scripts and tools that manage licenses on a Kong control plane work unchanged.
//!
//! The handlers only translate HTTP to [`crate::licenses::Licenses`], the single writer that
//! validates, persists and publishes; every answer comes after the write is durable.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::body::JsonObject;
use super::error::{ApiError, Violations};
use super::openapi::{Described, ErrorBody};
use super::params::{EntityId, Page, Paging};
use crate::licenses::WriteError;
use crate::model::StoredLicense;
use crate::state::ControlPlane;

const COLLECTION: &str = "/licenses";

pub(super) fn routes() -> Described {
    Described::new()
        .with(routes!(list, create))
        .with(routes!(fetch, put, patch, delete))
}

/// Kong's license entity.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = License)]
struct Entity<'a> {
    id: Uuid,
    /// The signed license document exactly as stored (a JSON text).
    payload: &'a str,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds.
    updated_at: i64,
}

/// What a license write sends: the signed document (`licsync-cp license sign`), as a JSON
/// string or as the object itself. `id`, `created_at` and `updated_at` of an entity sent back
/// are ignored on `PUT` and `PATCH`; on `PATCH` `payload` may be left out.
#[derive(ToSchema)]
#[schema(as = LicenseWrite, example = json!({"payload": "{\"license\":{\"payload\":{...},\"signature\":\"...\",\"version\":\"1\"}}"}))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Describes the body `document_in` reads field by field; never built.
struct WriteBody {
    /// The signed license document.
    #[schema(schema_with = payload_schema)]
    payload: Value,
    #[schema(nullable = false)]
    id: Option<Uuid>,
    #[schema(nullable = false)]
    created_at: Option<i64>,
    #[schema(nullable = false)]
    updated_at: Option<i64>,
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

/// `payload`: the document as a JSON string, or as the object itself.
fn payload_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .description(Some(
            "The signed license document, as a JSON string or as the object itself.",
        ))
        .build()
        .into()
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

/// Lists the licenses, ordered by id, a page at a time.
#[utoipa::path(
    get,
    path = "/licenses",
    tag = "licenses",
    operation_id = "list_licenses",
    params(
        ("size" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)."),
        ("offset" = Option<String>, Query, description = "Where the page starts: the `offset` of the previous page's `next` link."),
    ),
    responses(
        (status = 200, description = "A page of licenses; `next` links to the following page, or is null.", body = Page<Entity>),
        (status = 400, description = "`size` out of 1..1000, or an offset this server did not hand out.", body = ErrorBody),
    ),
)]
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

/// One license.
#[utoipa::path(
    get,
    path = "/licenses/{id}",
    tag = "licenses",
    operation_id = "get_license",
    params(("id" = Uuid, Path, description = "The license's id (a hyphenated UUID).")),
    responses(
        (status = 200, description = "The license.", body = Entity),
        (status = 404, description = "No license has this id (or the id is not a UUID).", body = ErrorBody),
    ),
)]
async fn fetch(State(cp): State<Arc<ControlPlane>>, id: EntityId) -> Result<Response, ApiError> {
    let id = id.or_not_found()?;
    let set = cp.licenses().current();
    let license = set.licenses.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(entity_response(StatusCode::OK, license))
}

/// Stores a license: validated (signature by a trusted key), durable, then sent to every
/// connected data plane.
#[utoipa::path(
    post,
    path = "/licenses",
    tag = "licenses",
    operation_id = "create_license",
    request_body(content = WriteBody, description = "The signed license document."),
    responses(
        (status = 201, description = "Stored.", body = Entity),
        (status = 400, description = "`Unable to validate license: <reason>`, or a field missing, unknown or of the wrong type.", body = ErrorBody),
        (status = 409, description = "A license with the same signature is stored: `UNIQUE violation detected on '{payload=...}'`.", body = ErrorBody),
    ),
)]
async fn create(
    State(cp): State<Arc<ControlPlane>>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let document = require(document_in(body, Write::Post)?)?;
    let stored = cp.licenses().create(document).await?;
    Ok(entity_response(StatusCode::CREATED, &stored))
}

/// Creates the license with this id, or replaces it (keeping `created_at`).
#[utoipa::path(
    put,
    path = "/licenses/{id}",
    tag = "licenses",
    operation_id = "put_license",
    params(("id" = Uuid, Path, description = "The license's id (a hyphenated UUID).")),
    request_body(content = WriteBody, description = "The signed license document."),
    responses(
        (status = 200, description = "Stored.", body = Entity),
        (status = 400, description = "The id is not a UUID, or the license is invalid, or a field missing, unknown or of the wrong type.", body = ErrorBody),
        (status = 409, description = "Another license has the same signature.", body = ErrorBody),
    ),
)]
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

/// Replaces the document of a stored license; without `payload`, returns it unchanged.
#[utoipa::path(
    patch,
    path = "/licenses/{id}",
    tag = "licenses",
    operation_id = "patch_license",
    params(("id" = Uuid, Path, description = "The license's id (a hyphenated UUID).")),
    request_body(content = WriteBody, description = "The signed license document."),
    responses(
        (status = 200, description = "Stored.", body = Entity),
        (status = 400, description = "The id is not a UUID, or the license is invalid, or a field unknown or of the wrong type.", body = ErrorBody),
        (status = 404, description = "No license has this id: `could not find the entity with primary key '{id=\"...\"}'`.", body = ErrorBody),
        (status = 409, description = "Another license has the same signature.", body = ErrorBody),
    ),
)]
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

/// Deletes a license (also answered `204` for an unknown id), then tells every connected data
/// plane.
#[utoipa::path(
    delete,
    path = "/licenses/{id}",
    tag = "licenses",
    operation_id = "delete_license",
    params(("id" = Uuid, Path, description = "The license's id (a hyphenated UUID).")),
    responses(
        (status = 204, description = "Deleted, or there was none."),
        (status = 400, description = "The id is not a UUID.", body = ErrorBody),
    ),
)]
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
