//! The Admin HTTP API (axum): Kong-compatible `/licenses`, registration tokens, the fleet,
//! status and health probes.
//!
//! # Layout
//! - [`router`] and [`serve`] (here): the routes, the token check in front of everything
//!   (unknown routes and wrong methods included) but the health probes, JSON fallbacks for
//!   unknown routes and methods, graceful shutdown. Connections are served by the shared
//!   loop of `licsync_common::http_server` with the `[admin]` limits ([`http_limits`]):
//!   connection cap, header, idle and body timeouts, JSON answers to protocol errors, 413 on
//!   a declared `Content-Length` over [`MAX_BODY_BYTES`].
//! - The status page ([`crate::ui`]) is routed here too, under `/ui`, with its own session
//!   check instead of the token check.
//! - `auth`: the authentication middleware (a bearer token or a user's HTTP Basic password),
//!   and `access`: which role each call needs, checked by it. The first token is created at
//!   start by [`bootstrap_admin_token`] (in [`crate::principals`], re-exported here).
//! - `body`, `params`, `form`: request extraction whose every rejection is JSON (bounded
//!   bodies, JSON or form fields, `{id}` and paging parameters).
//! - `error`: the JSON error answers, in Kong's shapes.
//! - `metrics`: counting each request by method, matched route template and status.
//! - `licenses`, `registration_tokens`, `admin_tokens`, `audit`, `users`, `connected_apps`, `fleet`, `report`
//!   (`/license/report`), `status`: one file per resource.
//!
//! Handlers hold no state of their own and never touch storage: they translate HTTP to the
//! domain services [`ControlPlane`] hands out (`principals()`, `registration_tokens()`, ...),
//! so the API can be started on any listener (tests use `127.0.0.1:0`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use licsync_common::http_server::{self, HttpLimits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::state::ControlPlane;

mod access;
mod admin_tokens;
mod audit;
mod auth;
mod body;
mod connected_apps;
mod error;
mod fleet;
pub(crate) mod form;
mod licenses;
mod metrics;
mod params;
mod registration_tokens;
mod report;
mod status;
pub mod tls;
mod users;

pub use crate::principals::bootstrap::{
    ADMIN_TOKEN_FILE, BOOTSTRAP_TOKEN_NAME, BootstrapError, bootstrap_admin_token,
};
pub use auth::KONG_ADMIN_TOKEN;
pub use body::MAX_BODY_BYTES;
pub(crate) use status::health_routes;

/// Every Admin API route over `cp`.
///
/// The token check wraps the routed service as a whole, so a request without a valid token
/// gets the same 401 whatever its path or method (no `Allow` header telling which routes
/// exist); only then do unknown routes answer 404 and wrong methods 405. The health probes
/// are the one exemption (see [`auth::require_token`]). Outside the token check, every
/// request is counted by the route template that answered it (`metrics`).
pub fn router(cp: Arc<ControlPlane>) -> Router {
    let routes = Router::new()
        .merge(licenses::routes())
        .merge(registration_tokens::routes())
        .merge(admin_tokens::routes())
        .merge(audit::routes())
        .merge(users::routes())
        .merge(connected_apps::routes())
        .merge(fleet::routes())
        .merge(report::routes())
        .merge(status::routes())
        .merge(status::health_routes())
        .merge(crate::ui::routes(cp.clone()))
        // Applies to the routes present now, so it comes after every route is added.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(middleware::from_fn(metrics::mark_route))
        .with_state(cp.clone());
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(
            cp.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(cp, metrics::count))
}

/// The Admin API's connection limits: `[admin]`'s timeouts and cap, and the body limit of
/// the JSON extractor with its message, so a declared length over it gets the same 413.
pub fn http_limits(config: &AdminConfig) -> HttpLimits {
    HttpLimits {
        header_read_timeout: config.header_read_timeout.0,
        idle_timeout: config.idle_timeout.0,
        body_read_timeout: config.body_read_timeout.0,
        max_connections: config.max_connections,
        ..HttpLimits::new(MAX_BODY_BYTES as u64, body::too_large_message())
    }
}

/// Serves the Admin API on `listener` (over HTTPS with `tls`, from [`tls::load`]) until
/// `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    cp: Arc<ControlPlane>,
    tls: Option<http_server::ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = HttpLimits {
        tls,
        ..http_limits(&cp.config().admin)
    };
    let stop = CancellationToken::new();
    let serving = http_server::serve(listener, router(cp), limits, stop.clone());
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        () = shutdown => stop.cancel(),
    }
    serving.await
}

#[cfg(test)]
mod tests;
