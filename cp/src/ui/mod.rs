//! The status page (SPEC §11): the license fleet at a glance, served by the control plane on
//! the admin listener under `/ui`, at every node of an HA control plane.
//!
//! Server-rendered HTML (maud templates, [`pages`]), charts drawn as SVG on the server
//! ([`charts`]), one stylesheet and one small script compiled into the binary ([`assets`]);
//! the page loads nothing from another host and works without JavaScript except the live
//! refresh. It is read-only: nothing on it changes the control plane, so any role may look.
//!
//! # Layout
//! - here: the routes, the session check in front of every page, the security headers on
//!   every answer, and the page handlers (read a [`model::Snapshot`], render, answer).
//! - [`session`]: the signed, expiring session cookie (valid at every node sharing the key).
//! - [`auth`]: sign-in, sign-out, the per-request principal check, the CSRF check.
//! - [`model`]: what the pages show, read through the Admin API's own domain calls and judged
//!   by pure functions; [`table`]: the data-plane table's sorting and filtering.
//! - [`pages`], [`charts`], [`assets`]: templates, SVG, CSS and JS.
//! - [`sample`]: sample fleets for the template tests and the `ui` benchmark.
//!
//! # The HTML contract (what browser tests and scripts may rely on)
//! Kept in step with `ui-contract.md` of the browser tests.
//! - `GET /ui/login`: `form#login-form` (`data-testid="login-form"`) posting to `/ui/login`
//!   with `input[name=token]` (`#token`), or `input[name=username]` (`#username`) and
//!   `input[name=password]` (`#password`); submit `button#sign-in`. A refused sign-in answers
//!   401 (403 cross-site, 429 throttled, 400 empty) with the form again and
//!   `p#login-error[role=alert]` (`data-testid="login-error"`). Success: 303 to `/ui` with the
//!   cookie `licsync_session` (`HttpOnly; SameSite=Strict; Path=/ui`, `Secure` over TLS),
//!   valid 8 hours.
//! - Without a valid session every page answers 303 to `/ui/login` and shows nothing.
//! - Every signed-in page: exactly one `<h1>`; `nav[aria-label=Main]` with the current page
//!   `aria-current="page"`; `#signed-in-as` (`data-testid="signed-in-as"`: `token 'NAME'` or
//!   `user 'NAME'`); `button#sign-out` (`data-testid="sign-out"`) in a form posting to
//!   `/ui/logout` (303 to `/ui/login`, cookie cleared); `main#main`; the refreshed content
//!   in `div#live` (`data-testid="live-region"`). `body[data-refresh-seconds]` is the refresh
//!   period (5); after each refresh `body[data-refreshed-at]` holds the time (ms).
//! - `/ui` (h1 "Overview"): `section#license-panel` (`data-testid="license-panel"`) with
//!   `[data-testid=license-customer]`, `[data-testid=license-key]` (masked: `0014…OEAU`),
//!   `[data-testid=license-expiry]` (`data-days-left`), `[data-testid=entitlement]`, or
//!   `[data-testid=no-license]`; `[data-testid=warnings]` with `li[data-warning=KIND]` or
//!   `[data-testid=no-warnings]`; `[data-testid=health-counts]` and
//!   `[data-testid=sync-counts]` with `td[data-count]`. Badges carry `data-urgency`
//!   (`ok|warning|error|expired`), `data-health` or `data-sync`.
//! - `/ui/data-planes` (h1 "Data planes"): filter form `[data-testid=dataplane-filters]`
//!   (`q`, `health`, `sync`, `current`, `sort`, `order`: the same as query parameters; a
//!   bad one is 400 with `#page-error`); `#dataplane-count` (`data-shown`, `data-total`);
//!   `table#dataplanes` (`data-testid="dataplanes-table"`) whose rows are
//!   `tr[data-testid=dataplane-row][data-dataplane-id=UUID]`, the name cell linking to
//!   `/ui/data-planes/UUID`; or `[data-testid=no-dataplanes]`.
//! - `/ui/data-planes/{id}` (h1 the data plane's name): `[data-testid=dataplane-facts]`,
//!   `[data-testid=dataplane-connected]` (`yes`/`no`), `[data-testid=dataplane-license]`
//!   (`data-current`), `[data-testid=sync-events]` with `tr[data-event=NAME]`; an unknown id
//!   is 404 with `[data-testid=not-found]`.
//! - `/ui/licenses` (h1 "Licenses"): `svg[data-testid=license-timeline]`,
//!   `table[data-testid=licenses-table]` rows `tr[data-testid=license-row][data-license-id]
//!   [data-active=yes|no]`, or `[data-testid=no-licenses]`.
//! - `/ui/usage[?dataplane=UUID]` (h1 "Usage"): `svg[data-testid=usage-chart]` (one
//!   `rect[data-label=YYYY-MM][data-value=N]` per month), `table[data-testid=usage-totals]`,
//!   `[data-testid=usage-total]` (`data-total`), `[data-testid=usage-per-dataplane]`, and
//!   with `dataplane`, `[data-testid=dataplane-usage]`.
//! - Headers on every `/ui` answer: `Content-Security-Policy: default-src 'none'; script-src
//!   'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self';
//!   frame-ancestors 'none'; base-uri 'none'`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: same-origin`, `X-Frame-Options: DENY`; `Cache-Control: no-store` on
//!   everything but the assets.

pub mod assets;
pub mod auth;
pub mod charts;
pub mod model;
pub mod pages;
pub mod sample;
pub mod session;
pub mod table;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use licsync_common::unix_now;
use maud::{Markup, html};
use time::OffsetDateTime;

use crate::admin::form;
use crate::state::ControlPlane;
use crate::usage::report::{self, ReportOptions};
use auth::Viewer;
use model::Snapshot;
use pages::layout::{self, Frame};
use table::TableQuery;

/// The Content-Security-Policy of every answer: nothing from another host, no inline script
/// or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The request header the refresh script sends to get only the live region.
pub const FRAGMENT_HEADER: &str = "x-licsync-fragment";

/// Whether `path` is the status page's (served without the Admin API's token check: it has
/// its own session).
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The status page's routes over `cp`.
pub fn routes(cp: Arc<ControlPlane>) -> Router<Arc<ControlPlane>> {
    let pages = Router::new()
        .route("/ui", get(overview))
        .route("/ui/data-planes", get(dataplanes))
        .route("/ui/data-planes/{id}", get(dataplane))
        .route("/ui/licenses", get(licenses))
        .route("/ui/usage", get(usage))
        .route_layer(middleware::from_fn_with_state(cp.clone(), require_session));
    Router::new()
        .merge(pages)
        .route("/ui/login", get(auth::login_page).post(auth::sign_in))
        .route("/ui/logout", post(auth::sign_out))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
        .layer(middleware::from_fn(security_headers))
}

/// Adds the security headers to every answer (and `no-store` to all but the assets).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Lets a page through only with a valid session (its [`Viewer`] in the request's
/// extensions); otherwise 303 to `/ui/login`.
async fn require_session(
    State(cp): State<Arc<ControlPlane>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth::viewer(&cp, request.headers(), unix_now()).await {
        Ok(Some(viewer)) => {
            request.extensions_mut().insert(viewer);
            next.run(request).await
        }
        Ok(None) => auth::see_other("/ui/login"),
        Err(error) => unavailable(&error.to_string()),
    }
}

/// A page that could not be read (storage does not answer).
fn unavailable(reason: &str) -> Response {
    tracing::error!(event = "ui.request_failed", error = %reason, "Status page could not be read.");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            layout::bare(
                "Status unavailable",
                html! { p #page-error.alert.expired role="alert" data-testid="page-error" { "Cannot read the control plane's state now: " (reason) ". This page does not refresh; reload it to try again." } },
            )
            .into_string(),
        ),
    )
        .into_response()
}

/// The footer: version, node and when the page was rendered.
fn footer(cp: &ControlPlane, now: i64) -> String {
    format!(
        "licsync-cp {} · node {} · {}",
        licsync_common::VERSION,
        &cp.nodes().id().to_string()[..8],
        model::timestamp(now)
    )
}

/// What a handler renders: the frame's title and navigation entry, the controls that stay
/// put across refreshes and the live region.
struct Page {
    status: StatusCode,
    title: String,
    nav: &'static str,
    controls: Markup,
    live: Markup,
}

impl Page {
    /// A `200` page without controls.
    fn new(title: impl Into<String>, nav: &'static str, live: Markup) -> Self {
        Self {
            status: StatusCode::OK,
            title: title.into(),
            nav,
            controls: html! {},
            live,
        }
    }

    /// The answer: only the live region when the refresh script asks ([`FRAGMENT_HEADER`]),
    /// else the whole page framed for `viewer`.
    fn respond(self, cp: &ControlPlane, viewer: &Viewer, headers: &HeaderMap) -> Response {
        if headers
            .get(FRAGMENT_HEADER)
            .is_some_and(|v| v.as_bytes() == b"live")
        {
            let live = Html(self.live.into_string());
            return (self.status, [(FRAGMENT_HEADER, "live")], live).into_response();
        }
        let who = format!("{} ({})", viewer.name, viewer.role);
        let footer = footer(cp, unix_now());
        let frame = Frame {
            title: &self.title,
            nav: self.nav,
            who: &who,
            footer: &footer,
        };
        let html = layout::page(&frame, self.controls, self.live).into_string();
        (self.status, Html(html)).into_response()
    }
}

/// The fleet and licenses as of now, or the answer saying they cannot be read.
async fn read(cp: &ControlPlane) -> Result<Snapshot, Response> {
    Snapshot::read(cp, unix_now())
        .await
        .map_err(|error| unavailable(&error.to_string()))
}

/// The whole data-plane page for `snapshot` as `query` asks, signed in as `who`: what the
/// `ui` benchmark times for a large fleet.
pub fn dataplanes_page(snapshot: &Snapshot, query: &TableQuery, who: &str) -> String {
    let frame = Frame {
        title: "Data planes",
        nav: "/ui/data-planes",
        who,
        footer: "licsync-cp",
    };
    layout::page(
        &frame,
        pages::dataplanes::controls(query),
        pages::dataplanes::table(snapshot, query),
    )
    .into_string()
}

/// A query the page cannot honour: 400 with what is wrong.
fn bad_query(message: &str) -> Markup {
    html! { p #page-error.alert.expired role="alert" data-testid="page-error" { (message) } }
}

async fn overview(
    State(cp): State<Arc<ControlPlane>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    match read(&cp).await {
        Ok(snapshot) => Page::new("Overview", "/ui", pages::overview::overview(&snapshot))
            .respond(&cp, &viewer, &headers),
        Err(response) => response,
    }
}

async fn dataplanes(
    State(cp): State<Arc<ControlPlane>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let (status, query, error) = match TableQuery::parse(&form::decode(uri.query().unwrap_or(""))) {
        Ok(query) => (StatusCode::OK, query, None),
        Err(message) => (
            StatusCode::BAD_REQUEST,
            TableQuery::default(),
            Some(message),
        ),
    };
    let snapshot = match read(&cp).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    Page {
        status,
        controls: html! {
            @if let Some(message) = &error { (bad_query(message)) }
            (pages::dataplanes::controls(&query))
        },
        ..Page::new(
            "Data planes",
            "/ui/data-planes",
            pages::dataplanes::table(&snapshot, &query),
        )
    }
    .respond(&cp, &viewer, &headers)
}

async fn dataplane(
    State(cp): State<Arc<ControlPlane>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let snapshot = match read(&cp).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let found = uuid::Uuid::try_parse(&id)
        .ok()
        .and_then(|id| snapshot.dataplanes.iter().find(|d| d.id == id));
    let page = match found {
        Some(dp) => {
            let events = cp.dataplanes().events(dp.id);
            let live = pages::dataplane::dataplane(&snapshot, dp, &events);
            Page::new(format!("Data plane {}", dp.name), "/ui/data-planes", live)
        }
        None => Page {
            status: StatusCode::NOT_FOUND,
            ..Page::new(
                "Unknown data plane",
                "/ui/data-planes",
                pages::dataplane::unknown(&id),
            )
        },
    };
    page.respond(&cp, &viewer, &headers)
}

async fn licenses(
    State(cp): State<Arc<ControlPlane>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    match read(&cp).await {
        Ok(snapshot) => Page::new(
            "Licenses",
            "/ui/licenses",
            pages::licenses::licenses(&snapshot),
        )
        .respond(&cp, &viewer, &headers),
        Err(response) => response,
    }
}

async fn usage(
    State(cp): State<Arc<ControlPlane>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut selected = None;
    let mut error = None;
    for (name, value) in form::decode(uri.query().unwrap_or("")) {
        match (name.as_str(), uuid::Uuid::try_parse(value.trim())) {
            ("dataplane", _) if value.trim().is_empty() => {}
            ("dataplane", Ok(id)) => selected = Some(id),
            ("dataplane", Err(_)) => {
                error = Some("dataplane must be a data plane's id (a UUID)".to_owned())
            }
            (other, _) => {
                error = Some(format!(
                    "unknown query parameter '{}'; the usage page takes only dataplane",
                    other.chars().take(64).collect::<String>()
                ))
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    let since = report::first_month(now);
    let counts = async {
        let rows = cp.usage().rows().await?;
        let dataplanes = cp.fleet(now.unix_timestamp()).await?;
        report::totals(
            &rows,
            &dataplanes,
            ReportOptions { by_dataplane: true },
            since,
        )
    };
    let totals = match counts.await {
        Ok(totals) => totals,
        Err(error) => return unavailable(&error.to_string()),
    };
    let view = pages::usage::UsageView {
        totals,
        since,
        selected,
    };
    Page {
        status: if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        controls: html! { @if let Some(message) = &error { (bad_query(message)) } },
        ..Page::new("Usage", "/ui/usage", pages::usage::usage(&view))
    }
    .respond(&cp, &viewer, &headers)
}

#[cfg(test)]
mod tests;
