//! Admin API authentication and authorisation: who is calling
//! ([`crate::principals::Principals::check_api_token`] for a bearer token,
//! [`crate::principals::Principals::authenticate`] for a user's HTTP Basic password), and
//! whether their [`Role`] covers what the call needs ([`super::access`]).
//!
//! The token may come as `Authorization: Bearer <token>` or, as Kong Enterprise clients send
//! it, `Kong-Admin-Token: <token>`; a user sends `Authorization: Basic`. Tokens are checked
//! against storage on every request, so revoking one takes effect at once. A secret is never
//! logged; a refused caller is logged as `auth.failed` (WARN) with the client's address, and a
//! caller without the role as `auth.forbidden`. The [`Caller`] is left in the request's
//! extensions for the handlers (and the audit trail) to name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use licsync_common::unix_now;
use uuid::Uuid;

use super::error::ApiError;
use super::{access, status};
use crate::model::Role;
use crate::principals::{Credential, Principal, Refusal, TokenCheck};
use crate::state::ControlPlane;

/// Kong Enterprise's admin token header.
pub const KONG_ADMIN_TOKEN: &str = "kong-admin-token";

const HOW_TO_AUTHENTICATE: &str = "send \"Authorization: Bearer <token>\" or \"Kong-Admin-Token: <token>\" \
     (the first token is in <data_dir>/admin-token), or a user's \"Authorization: Basic\"";

/// Who made an authenticated Admin API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Token { id: Uuid, name: String, role: Role },
    User { username: String, role: Role },
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::Token { role, .. } | Caller::User { role, .. } => *role,
        }
    }
}

/// How refusals and logs name a caller: `token 'ci' (id ...)`, `user 'alice'`.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Token { id, name, .. } => write!(f, "token '{name}' (id {id})"),
            Caller::User { username, .. } => write!(f, "user '{username}'"),
        }
    }
}

/// What the request presents.
enum Presented<'a> {
    Token(&'a str),
    Basic { username: String, password: String },
}

/// Middleware: lets the request through only from a known caller whose role covers the call,
/// or when it is for a health probe. It wraps the whole router, so it runs before routing can
/// answer 404 or 405.
pub async fn require_token(
    State(cp): State<Arc<ControlPlane>>,
    mut request: Request,
    next: Next,
) -> Response {
    // The status page checks its own session cookie (and shows nothing without one).
    if status::is_health_probe(request.uri().path()) || crate::ui::is_ui_path(request.uri().path())
    {
        return next.run(request).await;
    }
    let call = Call {
        source: source(&request),
        ip: client_ip(&request),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let caller = match identify(&cp, request.headers(), &call).await {
        Ok(caller) => caller,
        Err(refusal) => {
            if call.changes_state() {
                audit(&cp, "-", &call, refusal.status(), "denied");
            }
            return refusal;
        }
    };
    let needed = access::required_role(&call.method, &call.path);
    if !caller.role().covers(needed) {
        audit(
            &cp,
            &caller.to_string(),
            &call,
            StatusCode::FORBIDDEN,
            "denied",
        );
        tracing::warn!(event = "auth.forbidden", source = %call.source, caller = %caller, role = %caller.role(), needed = %needed, method = %call.method, path = %call.path, "Admin API call refused: the caller's role does not cover it.");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{caller} has the {} role; {} {} needs the {needed} role (roles: admin > operator > viewer)",
                caller.role(),
                request.method(),
                request.uri().path()
            ),
        )
        .into_response();
    }
    let actor = call.changes_state().then(|| caller.to_string());
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    if let Some(actor) = actor {
        audit(&cp, &actor, &call, response.status(), "failed");
    }
    response
}

/// Records `call` by `actor` in the audit trail: `ok` for a success, else `how (status)`.
fn audit(cp: &ControlPlane, actor: &str, call: &Call, status: StatusCode, how: &str) {
    let result = if status.is_success() {
        "ok".to_owned()
    } else {
        format!("{how} ({})", status.as_u16())
    };
    cp.audit().record(crate::audit::Entry {
        actor: actor.to_owned(),
        source: call.source.clone(),
        action: format!("{} {}", call.method, route_of(&call.path)),
        resource: call.path.clone(),
        result,
    });
}

/// `path` with every id segment (a UUID) written `{id}`: the route, so records of one kind
/// of call share an action.
fn route_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() == 36 && Uuid::try_parse(segment).is_ok() {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// What the log lines about a call name (taken from the request before any `await`: the
/// request itself is not `Sync`).
struct Call {
    source: String,
    ip: IpAddr,
    method: Method,
    path: String,
}

impl Call {
    /// Whether the call may change something (and so is audited whatever its outcome).
    fn changes_state(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }
}

/// The caller `headers` authenticate as, or the answer refusing it.
async fn identify(cp: &ControlPlane, headers: &HeaderMap, call: &Call) -> Result<Caller, Response> {
    let now = unix_now();
    let presented = match presented(headers) {
        Ok(Some(presented)) => presented,
        Ok(None) => {
            tracing::info!(event = "auth.token_missing", source = %call.source, method = %call.method, path = %call.path, "Admin API request without a token refused.");
            return Err(unauthorized(format!(
                "No API token found in request: {HOW_TO_AUTHENTICATE}"
            )));
        }
        Err(reason) => return Err(unauthorized(format!("{reason}; {HOW_TO_AUTHENTICATE}"))),
    };
    match presented {
        Presented::Token(token) => match cp.principals().check_api_token(token, now).await {
            Ok(TokenCheck::Valid(caller)) => Ok(Caller::Token {
                id: caller.id,
                name: caller.name,
                role: caller.role,
            }),
            Ok(TokenCheck::Unknown) => {
                tracing::warn!(event = "auth.failed", source = %call.source, principal = "api-token", reason = "unknown or revoked API token", method = %call.method, path = %call.path, "Admin API request with an unknown token refused.");
                Err(unauthorized(format!(
                    "Invalid API token: it is unknown or was revoked; {HOW_TO_AUTHENTICATE}"
                )))
            }
            Ok(TokenCheck::Expired { name, expired_at }) => {
                tracing::warn!(event = "auth.failed", source = %call.source, principal = "api-token", admin_token.name = %name, reason = "expired API token", method = %call.method, path = %call.path, "Admin API request with an expired token refused.");
                Err(unauthorized(format!(
                    "API token '{name}' expired at {expired_at} (unix time); ask an admin for a new one (POST /admin-tokens)"
                )))
            }
            Err(error) => Err(ApiError::storage(error).into_response()),
        },
        Presented::Basic { username, password } => {
            let credential = Credential::User { username, password };
            match cp
                .principals()
                .authenticate(&credential, call.ip, now)
                .await
            {
                Ok(Principal::User { username, role }) => Ok(Caller::User { username, role }),
                // A user credential authenticates a user, never an app.
                Ok(Principal::App { .. }) => Err(unauthorized(HOW_TO_AUTHENTICATE.into())),
                Err(Refusal::Throttled(throttled)) => {
                    let mut response =
                        ApiError::new(StatusCode::TOO_MANY_REQUESTS, throttled.to_string())
                            .into_response();
                    if let Ok(value) = HeaderValue::from_str(&throttled.retry_after.to_string()) {
                        response.headers_mut().insert(RETRY_AFTER, value);
                    }
                    Err(response)
                }
                Err(Refusal::Unavailable(reason)) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check credentials now: {reason}; try again"),
                )
                .into_response()),
                Err(_) => Err(unauthorized(format!(
                    "Invalid username or password (HTTP Basic); users are created with POST /users; or {HOW_TO_AUTHENTICATE}"
                ))),
            }
        }
    }
}

fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The client's address as the listener saw it (`-` when served without connection info, as
/// in router tests).
fn source(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |info| info.0.to_string())
}

/// The credential `headers` carry: a bearer token (`Authorization: Bearer`, else
/// `Kong-Admin-Token`) or a user's HTTP Basic username and password; `Ok(None)` when there is
/// none, `Err` with what is wrong when a Basic credential cannot be read.
fn presented(headers: &HeaderMap) -> Result<Option<Presented<'_>>, String> {
    if let Some(token) = presented_token(headers) {
        return Ok(Some(Presented::Token(token)));
    }
    let Some(encoded) = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, rest) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        })
    else {
        return Ok(None);
    };
    let malformed = || {
        "Malformed \"Authorization: Basic\" header: expected base64 of username:password".to_owned()
    };
    let decoded = STANDARD.decode(encoded).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (username, password) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Some(Presented::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

/// The token from `Authorization: Bearer` or else `Kong-Admin-Token`, if any.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get(KONG_ADMIN_TOKEN)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        })
        .filter(|token| !token.is_empty())
}

fn unauthorized(message: String) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer, Basic realm=\"licsync\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn finds_the_token_in_either_header() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("kong-admin-token", "xyz")])),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&headers(&[
                ("authorization", "Basic Zm9v"),
                ("kong-admin-token", "xyz")
            ])),
            Some("xyz")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic Zm9v")])),
            None
        );
        assert_eq!(
            presented_token(&headers(&[("kong-admin-token", " ")])),
            None
        );
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }
}
