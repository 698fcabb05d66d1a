//! Admin API authentication: a bearer token checked by
//! [`crate::principals::Principals::knows_api_token`].
//!
//! The token may come as `Authorization: Bearer <token>` or, as Kong Enterprise clients send
//! it, `Kong-Admin-Token: <token>`. Tokens are checked against storage on every request, so
//! deleting a token's record revokes it at once. A token is never logged; an unknown one is
//! logged as `auth.failed` (WARN) with the client's address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::status;
use crate::state::ControlPlane;

/// Kong Enterprise's admin token header.
pub const KONG_ADMIN_TOKEN: &str = "kong-admin-token";

const HOW_TO_AUTHENTICATE: &str = "send \"Authorization: Bearer <token>\" or \"Kong-Admin-Token: <token>\"; \
     the first token is in <data_dir>/admin-token";

/// Middleware: lets the request through only with a known API token, or when it is for a
/// health probe. It wraps the whole router, so it runs before routing can answer 404 or 405.
pub async fn require_token(
    State(cp): State<Arc<ControlPlane>>,
    request: Request,
    next: Next,
) -> Response {
    if status::is_health_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(presented) = presented_token(request.headers()) else {
        tracing::info!(event = "auth.token_missing", source = %source(&request), method = %request.method(), path = %request.uri().path(), "Admin API request without a token refused.");
        return unauthorized(format!(
            "No API token found in request: {HOW_TO_AUTHENTICATE}"
        ));
    };
    let known = match cp.principals().knows_api_token(presented).await {
        Ok(known) => known,
        Err(error) => return ApiError::storage(error).into_response(),
    };
    if !known {
        tracing::warn!(event = "auth.failed", source = %source(&request), principal = "api-token", reason = "unknown or revoked API token", method = %request.method(), path = %request.uri().path(), "Admin API request with an unknown token refused.");
        return unauthorized(format!(
            "Invalid API token: it is unknown or was revoked; {HOW_TO_AUTHENTICATE}"
        ));
    }
    next.run(request).await
}

/// The client's address as the listener saw it (`-` when served without connection info, as
/// in router tests).
fn source(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |info| info.0.to_string())
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
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
