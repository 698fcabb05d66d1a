//! Counting Admin API requests (`licsync_cp_admin_requests_total`,
//! `licsync_cp_admin_request_duration_seconds`) by the route template they matched.
//!
//! The token check runs before routing (see [`super::router`]), so the counting layer sits
//! outside it, where no route is known yet: an inner layer on the routes copies the matched
//! template into the response's extensions, and the outer one reads it back. A request that
//! never reached a route (no route matched, or refused for its token) is counted as
//! [`UNMATCHED_ROUTE`]: the raw path is never a label, so a scanner cannot grow the series.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::UNMATCHED_ROUTE;
use crate::state::ControlPlane;

/// The template of the route that answered, carried from the inner layer to the outer one.
#[derive(Debug, Clone)]
struct AnsweredBy(MatchedPath);

/// Outer middleware: counts every request with its method, route and status, and times it.
pub(super) async fn count(
    State(cp): State<Arc<ControlPlane>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<AnsweredBy>()
        .map_or(UNMATCHED_ROUTE, |answered| answered.0.as_str());
    cp.metrics().admin_request(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The route template that answered `response`, if a route did (not a fallback).
#[cfg(test)]
pub(super) fn answered_by(response: &Response) -> Option<String> {
    response
        .extensions()
        .get::<AnsweredBy>()
        .map(|answered| answered.0.as_str().to_owned())
}

/// Inner middleware, on the routes: marks the response with the template that matched.
pub(super) async fn mark_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(AnsweredBy(matched));
    }
    response
}
