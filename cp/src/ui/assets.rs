//! The status page's stylesheet and its one small script, compiled into the binary and served
//! under `/ui/assets/` without a session (they hold no data). The paths carry the version, so
//! a browser may cache them for a day and an upgrade is picked up at once.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

/// The stylesheet's path.
pub const CSS_PATH: &str = concat!("/ui/assets/ui-", env!("CARGO_PKG_VERSION"), ".css");
/// The live-refresh script's path.
pub const JS_PATH: &str = concat!("/ui/assets/refresh-", env!("CARGO_PKG_VERSION"), ".js");

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/refresh.js");

pub async fn css() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}

pub async fn js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        JS,
    )
}
