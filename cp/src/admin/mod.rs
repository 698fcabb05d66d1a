//! The Admin HTTP API (axum): Kong-compatible `/licenses`, registration tokens, the fleet,
//! status and health probes.
//!
//! # Layout
//! - [`router`] and [`serve`] (here): the routes, the token check in front of everything
//!   (unknown routes and wrong methods included) but the health probes, JSON fallbacks for
//!   unknown routes and methods, graceful shutdown.
//! - `auth`: the bearer-token middleware; [`bootstrap_admin_token`] creates the first token.
//! - `body`, `params`, `form`: request extraction whose every rejection is JSON (bounded
//!   bodies, JSON or form fields, `{id}` and paging parameters).
//! - `error`: the JSON error answers, in Kong's shapes.
//! - `licenses`, `registration_tokens`, `users`, `connected_apps`, `fleet`, `report`
//!   (`/license/report`), `status`: one file per resource.
//!
//! Handlers hold no state of their own: they translate HTTP to the [`ControlPlane`] services,
//! so the API can be started on any listener (tests use `127.0.0.1:0`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use tokio::net::TcpListener;

use crate::state::ControlPlane;

mod auth;
mod body;
mod bootstrap;
mod connected_apps;
mod error;
mod fleet;
mod form;
mod licenses;
mod params;
mod registration_tokens;
mod report;
mod status;
mod users;

pub use auth::KONG_ADMIN_TOKEN;
pub use body::MAX_BODY_BYTES;
pub use bootstrap::{
    ADMIN_TOKEN_FILE, BOOTSTRAP_TOKEN_NAME, BootstrapError, bootstrap_admin_token,
};

/// Every Admin API route over `cp`.
///
/// The token check wraps the routed service as a whole, so a request without a valid token
/// gets the same 401 whatever its path or method (no `Allow` header telling which routes
/// exist); only then do unknown routes answer 404 and wrong methods 405. The health probes
/// are the one exemption (see [`auth::require_token`]).
pub fn router(cp: Arc<ControlPlane>) -> Router {
    let routes = Router::new()
        .merge(licenses::routes())
        .merge(registration_tokens::routes())
        .merge(users::routes())
        .merge(connected_apps::routes())
        .merge(fleet::routes())
        .merge(report::routes())
        .merge(status::routes())
        .merge(status::health_routes())
        // Applies to the routes present now, so it comes after every route is added.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .with_state(cp.clone());
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(cp, auth::require_token))
}

/// Serves the Admin API on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    cp: Arc<ControlPlane>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address reaches handlers and middleware (refusals are logged with it).
    let service = router(cp).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
