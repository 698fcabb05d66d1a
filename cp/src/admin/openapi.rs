//! The Admin API's OpenAPI 3.1 description, generated from the handlers, served at
//! `GET /openapi.json` without a token (SPEC §10).
//!
//! Every handler carries a `#[utoipa::path]` attribute: its method, path, parameters, request
//! body and the answers it can give. Routes are added only through [`Described`], which takes
//! nothing but the `routes!` of such handlers, so a route cannot be served without being
//! described, nor described without being served. Describing a new route is one step: annotate
//! its handler and add it with [`Described::with`] in its module's `routes()`.
//!
//! What every call shares is added here once, from the same rules the server applies, rather
//! than repeated on each handler ([`finish`]): the security schemes and which calls need none
//! ([`super::access::needs_no_token`]), the role each call needs
//! ([`super::access::required_role`], as `x-required-role` and in the description), and the
//! answers of the layers in front of the handlers (`401`, `403`, `429`, `500`, `503`; `400` and
//! `413` for a body). The document is built and serialised once, when the router is built.

use std::sync::Arc;

use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    Components, ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Tag,
};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::access;
use crate::model::Role;
use crate::state::ControlPlane;

/// Where the description is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The security schemes, by the names operations refer to them with.
const BEARER: &str = "bearer";
const KONG_ADMIN_TOKEN: &str = "kong_admin_token";
const BASIC: &str = "basic";

/// Admin API routes together with their description. The only way in is
/// [`Described::with`], which takes the output of `utoipa_axum::routes!`: handlers whose
/// `#[utoipa::path]` says the method and path they are served at.
pub(crate) struct Described(OpenApiRouter<Arc<ControlPlane>>);

impl Described {
    pub fn new() -> Self {
        Self(OpenApiRouter::default())
    }

    /// Serves and describes the handlers of one `routes!(...)` (one path, one method each).
    pub fn with(self, routes: UtoipaMethodRouter<Arc<ControlPlane>>) -> Self {
        Self(self.0.routes(routes))
    }

    /// Both sets of routes and their descriptions.
    pub fn merge(self, other: Described) -> Self {
        Self(self.0.merge(other.0))
    }

    /// The routes alone (also served elsewhere, as the health probes are on the status
    /// listener).
    pub fn into_router(self) -> Router<Arc<ControlPlane>> {
        self.0.split_for_parts().0
    }

    /// The routes and their description, finished with [`finish`].
    pub fn into_parts(self) -> (Router<Arc<ControlPlane>>, OpenApi) {
        let (router, api) = self.0.split_for_parts();
        (router, finish(api))
    }
}

/// The error body of every failure: `message` says what to fix; Kong's richer errors add
/// `name`, `code` and `fields`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // Describes `super::error::ApiError`'s body; never built.
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    message: String,
    /// Kong's error name (`schema violation`, `unique constraint violation`, `not found`,
    /// `invalid offset`).
    name: Option<String>,
    /// Kong's error code (2, 5, 6, 8).
    code: Option<u32>,
    /// Each field at fault, with its reason (or the conflicting value).
    #[schema(value_type = Option<Object>)]
    fields: Option<serde_json::Value>,
}

/// The serialised description, shared by every `GET /openapi.json`.
#[derive(Clone)]
struct Document(Arc<[u8]>);

/// Adds the `GET /openapi.json` route serving `api` (built once, here) to `router`.
pub(super) fn serve_description(
    router: Router<Arc<ControlPlane>>,
    api: &OpenApi,
) -> Router<Arc<ControlPlane>> {
    // Serialising a tree of strings and maps cannot fail; if it ever did, the route answers
    // 500 saying so rather than the server refusing to start.
    let bytes = serde_json::to_vec(api).unwrap_or_default();
    router.layer(Extension(Document(bytes.into())))
}

/// This description (OpenAPI 3.1, JSON).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "get_openapi",
    responses((status = 200, description = "This document.", content_type = "application/json", body = Object)),
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    if document.0.is_empty() {
        return super::error::ApiError::internal("the OpenAPI description could not be serialised")
            .into_response();
    }
    ([(CONTENT_TYPE, "application/json")], document.0.to_vec()).into_response()
}

/// The routes serving the description itself.
pub(super) fn routes() -> Described {
    Described::new().with(utoipa_axum::routes!(openapi_json))
}

/// Completes the description collected from the handlers with what every call shares.
fn finish(mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title("licsync Admin API")
        .version(licsync_common::VERSION)
        .description(Some(DESCRIPTION))
        .build();
    api.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                let mut tag = Tag::new(*name);
                tag.description = Some((*description).to_owned());
                tag
            })
            .collect(),
    );
    let components = api.components.get_or_insert_with(Components::new);
    components.schemas.insert(
        "Error".into(),
        <ErrorBody as utoipa::PartialSchema>::schema(),
    );
    add_security_schemes(components);
    add_shared_responses(components);
    api.security = Some(vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::new(KONG_ADMIN_TOKEN, Vec::<String>::new()),
        SecurityRequirement::new(BASIC, Vec::<String>::new()),
    ]);
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, operation) in operations_mut(item) {
            describe_access(path, &method, operation);
        }
    }
    api
}

/// What the first page of the description says.
const DESCRIPTION: &str = "The control plane's Admin API (Kong-compatible `/licenses`). \
Every call but `/health/*` and `/openapi.json` needs a credential: an Admin API token as \
`Authorization: Bearer <token>` or `Kong-Admin-Token: <token>` (the first one is in \
`<data_dir>/admin-token`), or a user's HTTP Basic password. Each call needs a role \
(`x-required-role`): `viewer` reads, `operator` changes licenses, registration tokens and data \
planes, `admin` does everything, including tokens, users, connected apps and the audit trail. \
Every failure is JSON: `{\"message\": \"...\"}`. Request bodies are JSON objects (a form body, \
`application/x-www-form-urlencoded`, is read as string fields too) of at most 1 MiB. Before any \
route, the connection layer may answer any request `400` (malformed head), `408` (slow head or \
body), `431` (head too large), `505` (not HTTP/1.1) or `503` (too many connections), with the \
same error body.";

/// The tags, in the order a reader meets them.
const TAGS: [(&str, &str); 11] = [
    (
        "licenses",
        "Signed license documents, Kong's `/licenses` entity.",
    ),
    (
        "registration-tokens",
        "One-time secrets a new data plane registers with.",
    ),
    (
        "data-planes",
        "The fleet of data planes and the control-plane nodes.",
    ),
    ("report", "The signed usage report."),
    (
        "admin-tokens",
        "The Admin API's own bearer tokens (admin only).",
    ),
    ("users", "People who log in with HTTP Basic (admin only)."),
    (
        "connected-apps",
        "Programs with a client id and secret (admin only).",
    ),
    ("audit", "The audit trail (admin only)."),
    ("status", "The control plane's version, storage and counts."),
    ("health", "Probes for orchestrators, without a token."),
    ("meta", "This description."),
];

fn add_security_schemes(components: &mut Components) {
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.description = Some("An Admin API token (`POST /admin-tokens`).".into());
    components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
    components.add_security_scheme(
        KONG_ADMIN_TOKEN,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Kong-Admin-Token",
            "An Admin API token, as Kong Enterprise clients send it.",
        ))),
    );
    let mut basic = Http::new(HttpAuthScheme::Basic);
    basic.description = Some("A user's name and password (`POST /users`).".into());
    components.add_security_scheme(BASIC, SecurityScheme::Http(basic));
}

/// The answers of the layers in front of the handlers, by name.
const UNAUTHORIZED: &str = "Unauthorized";
const FORBIDDEN: &str = "Forbidden";
const TOO_MANY_REQUESTS: &str = "TooManyRequests";
const INTERNAL_ERROR: &str = "InternalError";
const UNAVAILABLE: &str = "Unavailable";
const BAD_BODY: &str = "BadBody";
const TOO_LARGE: &str = "PayloadTooLarge";

fn add_shared_responses(components: &mut Components) {
    for (name, description) in [
        (
            UNAUTHORIZED,
            "No credential, or an unknown, revoked or expired token, or a wrong password.",
        ),
        (
            FORBIDDEN,
            "The caller's role does not cover this call; the message names the role needed.",
        ),
        (
            TOO_MANY_REQUESTS,
            "Too many failed HTTP Basic logins for this user or address; see `Retry-After`.",
        ),
        (INTERNAL_ERROR, "Storage failed (not the request)."),
        (
            UNAVAILABLE,
            "Storage cannot be reached (`storage unavailable: ...`); retry later or at another node.",
        ),
        (
            BAD_BODY,
            "The body is not a JSON object (or a form), or a field is missing, unknown or invalid.",
        ),
        (TOO_LARGE, "The body is larger than 1 MiB."),
    ] {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build();
        components.responses.insert(name.into(), RefOr::T(response));
    }
}

/// Security, role and the shared answers of one operation.
fn describe_access(path: &str, method: &Method, operation: &mut Operation) {
    let mut add = |status: &str, name: &str| {
        operation
            .responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if operation.request_body.is_some() {
        add("400", BAD_BODY);
        add("413", TOO_LARGE);
    }
    if access::needs_no_token(path) {
        operation.security = Some(Vec::new());
        return;
    }
    let role = access::required_role(method, path);
    add("401", UNAUTHORIZED);
    if role != Role::Viewer {
        add("403", FORBIDDEN);
    }
    add("429", TOO_MANY_REQUESTS);
    add("500", INTERNAL_ERROR);
    add("503", UNAVAILABLE);
    let needs = format!("Needs the `{role}` role.");
    operation.description = Some(match operation.description.take() {
        Some(text) if !text.is_empty() => format!("{text}\n\n{needs}"),
        _ => needs,
    });
    let extensions = ExtensionsBuilder::new()
        .add("x-required-role", role.as_str())
        .build();
    match &mut operation.extensions {
        Some(existing) => existing.merge(extensions),
        None => operation.extensions = Some(extensions),
    }
}

/// Every operation of `item` with its method.
fn operations_mut(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
    .collect()
}

/// Every operation of `api` as `(method, path)`, for tests that walk them.
#[cfg(test)]
pub(super) fn operations(api: &OpenApi) -> Vec<(Method, String)> {
    let mut api = api.clone();
    let mut all = Vec::new();
    for (path, item) in api.paths.paths.iter_mut() {
        for (method, _) in operations_mut(item) {
            all.push((method, path.clone()));
        }
    }
    all
}
