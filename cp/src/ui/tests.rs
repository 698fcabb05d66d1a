//! The status page through the Admin API's router: sign-in with a token and with a password,
//! the session's every refusal (no cookie, forged, revoked token, cross-site form), the
//! security headers, the live fragment; and every template with sample fleets (empty, one
//! data plane, 10,000), checked for the HTML contract in the module doc and for escaping.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use licsync_common::license::TrustedKeys;
use tower::ServiceExt;

use super::model::Snapshot;
use super::pages;
use super::sample;
use super::session::SessionKey;
use super::table::TableQuery;
use crate::admin::router;
use crate::config::CpConfig;
use crate::licenses::Licenses;
use crate::model::Role;
use crate::principals::{NewApiToken, NewUser};
use crate::state::ControlPlane;
use crate::store::{MemoryStore, PrincipalStore};

async fn control_plane(store: Arc<MemoryStore>) -> Arc<ControlPlane> {
    let licenses = Licenses::load(store.clone(), TrustedKeys::parse::<&str>(&[]).unwrap())
        .await
        .unwrap();
    Arc::new(
        ControlPlane::new(
            CpConfig::default(),
            store,
            Arc::new(licenses),
            String::new(),
            "ab12".into(),
        )
        .with_session_key(SessionKey::ephemeral().unwrap()),
    )
}

async fn viewer_token(cp: &ControlPlane) -> (uuid::Uuid, String) {
    let (token, secret) = cp
        .principals()
        .create_api_token(
            NewApiToken {
                name: "looker".into(),
                role: Role::Viewer,
                ttl: None,
            },
            licsync_common::unix_now(),
        )
        .await
        .unwrap();
    (token.id, secret)
}

async fn send(cp: &Arc<ControlPlane>, request: Request<Body>) -> (Response<Body>, String) {
    let response = router(cp.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path).header("host", "cp:8001");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.body(Body::empty()).unwrap()
}

fn post_form(path: &str, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header("host", "cp:8001")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Signs in with `form` and returns the `name=value` cookie to send back.
async fn sign_in(cp: &Arc<ControlPlane>, form: &str) -> String {
    let (response, body) = send(cp, post_form("/ui/login", Some("http://cp:8001"), form)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{body}");
    assert_eq!(header(&response, "location"), "/ui");
    let set = header(&response, "set-cookie").to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(part), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn without_a_session_every_page_redirects_to_the_sign_in_page_and_shows_nothing() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    for path in [
        "/ui",
        "/ui/data-planes",
        "/ui/data-planes/00000000-0000-0000-0000-000000000001",
        "/ui/licenses",
        "/ui/usage",
    ] {
        for cookie in [None, Some("licsync_session=forged.value")] {
            let (response, body) = send(&cp, get(path, cookie)).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(header(&response, "location"), "/ui/login");
            assert!(body.is_empty(), "{path}: {body}");
            assert!(header(&response, "content-security-policy").starts_with("default-src 'none'"));
        }
    }
    let (response, body) = send(&cp, get("/ui/login", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        body.contains(r#"name="token""#)
            && body.contains(r#"name="username""#)
            && body.contains(r#"name="password""#)
    );
    assert_eq!(body.matches("<h1").count(), 1);
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "cache-control"), "no-store");
    assert!(header(&response, "content-security-policy").contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn a_token_signs_in_and_its_revocation_ends_the_session_at_once() {
    let store = Arc::new(MemoryStore::new());
    let cp = control_plane(store.clone()).await;
    let (id, secret) = viewer_token(&cp).await;

    let (response, body) = send(
        &cp,
        post_form("/ui/login", Some("http://cp:8001"), "token=lsa_wrong"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        body.contains(r#"data-testid="login-error""#) && body.contains("Unknown or revoked"),
        "{body}"
    );
    assert!(header(&response, "set-cookie").is_empty());

    let cookie = sign_in(&cp, &format!("token={}", encode(&secret))).await;
    for path in ["/ui", "/ui/data-planes", "/ui/licenses", "/ui/usage"] {
        let (response, body) = send(&cp, get(path, Some(&cookie))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {body}");
        assert!(
            body.contains("token &#39;looker&#39; (viewer)")
                || body.contains("token 'looker' (viewer)"),
            "{body}"
        );
        assert_eq!(body.matches("<h1").count(), 1, "{path}");
        assert!(body.contains(r#"data-testid="sign-out""#));
        assert_eq!(header(&response, "cache-control"), "no-store");
    }
    // Already signed in: the sign-in page sends to the overview.
    let (response, _) = send(&cp, get("/ui/login", Some(&cookie))).await;
    assert_eq!(header(&response, "location"), "/ui");

    // The refresh script's request gets only the live region.
    let mut request = get("/ui", Some(&cookie));
    request
        .headers_mut()
        .insert("x-licsync-fragment", "live".parse().unwrap());
    let (response, body) = send(&cp, request).await;
    assert_eq!(header(&response, "x-licsync-fragment"), "live");
    assert!(
        body.contains(r#"data-testid="license-panel""#) && !body.contains("<html"),
        "{body}"
    );

    store.delete_api_token(id).await.unwrap();
    let (response, _) = send(&cp, get("/ui", Some(&cookie))).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "revoked: the session is over"
    );
}

#[tokio::test]
async fn a_user_signs_in_with_a_password_and_signs_out() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    cp.principals()
        .create_user(NewUser {
            username: "alice".into(),
            password: "correct horse battery".into(),
            role: Role::Viewer,
        })
        .await
        .unwrap();
    let (response, body) = send(
        &cp,
        post_form(
            "/ui/login",
            Some("http://cp:8001"),
            "username=alice&password=wrong+horse+battery",
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong username or password."));

    let cookie = sign_in(&cp, "username=alice&password=correct+horse+battery").await;
    let (response, body) = send(&cp, get("/ui", Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        body.contains("user &#39;alice&#39;") || body.contains("user 'alice'"),
        "{body}"
    );

    let (response, _) = send(&cp, post_form("/ui/logout", Some("http://cp:8001"), "")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/ui/login");
    assert!(header(&response, "set-cookie").contains("Max-Age=0"));
}

#[tokio::test]
async fn forms_from_another_site_and_empty_forms_are_refused() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    let (_, secret) = viewer_token(&cp).await;
    let form = format!("token={}", encode(&secret));
    for origin in [Some("http://evil.example"), None] {
        let (response, body) = send(&cp, post_form("/ui/login", origin, &form)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(header(&response, "set-cookie").is_empty());
        assert!(body.contains("Sign-in refused"), "{body}");
    }
    let (response, _) = send(
        &cp,
        post_form("/ui/logout", Some("http://evil.example"), ""),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (response, body) = send(
        &cp,
        post_form("/ui/login", Some("http://cp:8001"), "token=&username="),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body.contains("Enter an Admin API token, or a username and password."));
}

#[tokio::test]
async fn repeated_wrong_tokens_from_one_address_are_throttled() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    let mut last = StatusCode::OK;
    for _ in 0..=crate::principals::throttle::Policy::SOURCE.max_failures {
        let (response, _) = send(
            &cp,
            post_form("/ui/login", Some("http://cp:8001"), "token=lsa_guess"),
        )
        .await;
        last = response.status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn bad_query_parameters_are_a_400_saying_why() {
    let cp = control_plane(Arc::new(MemoryStore::new())).await;
    let (_, secret) = viewer_token(&cp).await;
    let cookie = sign_in(&cp, &format!("token={}", encode(&secret))).await;
    for (path, says) in [
        ("/ui/data-planes?health=green", "health must be one of"),
        ("/ui/usage?dataplane=x", "dataplane must be a data plane"),
    ] {
        let (response, body) = send(&cp, get(path, Some(&cookie))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(
            body.contains(r#"data-testid="page-error""#) && body.contains(says),
            "{body}"
        );
    }
    let (response, body) = send(&cp, get("/ui/data-planes/not-an-id", Some(&cookie))).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(body.contains(r#"data-testid="not-found""#));
}

/// Every page of `snapshot` rendered as the handlers render it.
fn render_all(snapshot: &Snapshot) -> Vec<(&'static str, String)> {
    let (totals, since) = sample::usage(snapshot);
    let usage = pages::usage::UsageView {
        selected: snapshot.dataplanes.first().map(|d| d.id),
        totals,
        since,
    };
    let mut rendered = vec![
        (
            "overview",
            pages::overview::overview(snapshot).into_string(),
        ),
        (
            "data-planes",
            super::dataplanes_page(snapshot, &TableQuery::default(), "token 't' (viewer)"),
        ),
        (
            "licenses",
            pages::licenses::licenses(snapshot).into_string(),
        ),
        ("usage", pages::usage::usage(&usage).into_string()),
    ];
    if let Some(dp) = snapshot.dataplanes.first() {
        rendered.push((
            "data-plane",
            pages::dataplane::dataplane(snapshot, dp, &[]).into_string(),
        ));
    }
    rendered
}

#[test]
fn an_empty_fleet_says_so_on_every_page() {
    let mut snapshot = sample::snapshot(0);
    snapshot.licenses.clear();
    let pages = render_all(&snapshot);
    let page = |name| &pages.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(page("overview").contains(r#"data-testid="no-license""#));
    assert!(page("overview").contains(r#"data-warning="no-license""#));
    assert!(page("data-planes").contains(r#"data-testid="no-dataplanes""#));
    assert_eq!(page("data-planes").matches("<h1").count(), 1);
    assert!(page("licenses").contains(r#"data-testid="no-licenses""#));
    assert!(
        page("usage").contains("No usage reported yet.")
            || page("usage").contains(r#"data-testid="usage-chart""#)
    );
}

#[test]
fn one_data_plane_shows_everywhere_with_its_license() {
    let snapshot = sample::snapshot(1);
    let dp = &snapshot.dataplanes[0];
    for (name, html) in render_all(&snapshot) {
        match name {
            "overview" => {
                assert!(
                    html.contains("Example Company, Inc") && html.contains("0014…OEAU"),
                    "{html}"
                );
                assert!(
                    !html.contains("00141000017ODj3AAG_a1V41000004wT0OEAU"),
                    "the key is masked"
                );
                assert!(html.contains(r#"data-days-left="29""#), "{html}");
                assert!(
                    html.contains(r#"data-urgency="error""#),
                    "29 days left is the 30-day colour"
                );
            }
            "data-planes" => {
                assert_eq!(html.matches(r#"data-testid="dataplane-row""#).count(), 1);
                assert!(html.contains(&format!(r#"data-dataplane-id="{}""#, dp.id)));
                assert!(html.contains(r#"data-current="yes""#));
            }
            "licenses" => {
                assert_eq!(html.matches(r#"data-testid="license-row""#).count(), 2);
                assert!(
                    html.contains(r#"data-testid="license-timeline""#)
                        && html.contains(r#"data-active="yes""#)
                );
                assert!(html.contains(&dp.name), "holders are named");
            }
            "usage" => {
                assert_eq!(
                    html.matches("<rect").count(),
                    24,
                    "12 months, all and the one data plane"
                );
                assert!(html.contains(r#"data-testid="dataplane-usage""#));
            }
            "data-plane" => {
                assert!(
                    html.contains(r#"data-testid="sync-events""#)
                        && html.contains(r#"data-testid="no-events""#)
                );
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn ten_thousand_data_planes_render_every_row_and_filter() {
    let snapshot = sample::snapshot(10_000);
    let html = super::dataplanes_page(&snapshot, &TableQuery::default(), "token 't' (viewer)");
    assert_eq!(
        html.matches(r#"data-testid="dataplane-row""#).count(),
        10_000
    );
    let query = TableQuery::parse(&crate::admin::form::decode(
        "health=UNHEALTHY&sort=cert&order=desc",
    ))
    .unwrap();
    let filtered = super::dataplanes_page(&snapshot, &query, "token 't' (viewer)");
    let rows = filtered.matches(r#"data-testid="dataplane-row""#).count();
    assert_eq!(
        rows,
        snapshot
            .dataplanes
            .iter()
            .filter(|d| d.health == crate::dataplanes::Health::Unhealthy)
            .count()
    );
    assert!(rows > 0 && rows < 10_000);
    for (name, html) in render_all(&snapshot) {
        assert!(!html.is_empty(), "{name}");
    }
    let overview = pages::overview::overview(&snapshot).into_string();
    assert!(
        overview.contains(r#"data-warning="certificates-expired""#),
        "{overview}"
    );
    assert!(overview.contains(r#"data-warning="sync-rejected""#));
}

#[test]
fn outside_text_is_escaped_everywhere() {
    let mut snapshot = sample::snapshot(1);
    snapshot.dataplanes[0].name = "<script>alert(1)</script>".into();
    snapshot.dataplanes[0].hostname = "\"><img src=x>".into();
    snapshot.licenses[1].customer = "<b>Evil & Co</b>".into();
    for (name, html) in render_all(&snapshot) {
        assert!(!html.contains("<script>alert"), "{name}");
        assert!(!html.contains("<img"), "{name}");
        assert!(!html.contains("<b>Evil"), "{name}");
    }
    let overview = pages::overview::overview(&snapshot).into_string();
    assert!(overview.contains("&lt;b&gt;Evil &amp; Co&lt;/b&gt;"));
}
