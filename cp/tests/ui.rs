//! The status page against a real control plane on real listeners (SPEC §11): sign in with a
//! viewer token over HTTP, see a license written through the Admin API appear in the live
//! fragment, keep the session across a restart (the session key is a 0600 file in the data
//! directory), and lose it the moment the token is revoked. Browser-driven tests are in
//! `licsync-tests`.

use std::os::unix::fs::PermissionsExt;

use licsync_testkit::ControlPlane;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; the `name=value` cookie to send back.
async fn sign_in(cp: &ControlPlane, token: &str) -> String {
    let origin = cp.admin_url();
    let response = client()
        .post(format!("{}/ui/login", cp.admin_url()))
        .header("origin", origin.trim_end_matches('/'))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: not Secure");
    cookie.split(';').next().unwrap().to_owned()
}

/// `GET path` with `cookie`: status and body (only the live region).
async fn live(cp: &ControlPlane, path: &str, cookie: &str) -> (StatusCode, String) {
    let response = client()
        .get(format!("{}{path}", cp.admin_url()))
        .header("cookie", cookie)
        .header("x-licsync-fragment", "live")
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_signs_in_sees_a_new_license_and_keeps_the_session_across_a_restart() {
    let cp = ControlPlane::start().await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/admin-tokens",
            Some(json!({"name": "status-page", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let token_id = body["id"].as_str().unwrap().to_owned();

    let cookie = sign_in(&cp, &token).await;
    let (status, page) = live(&cp, "/ui", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"data-testid="no-license""#), "{page}");

    cp.create_license(&cp.issuer.license("Status Page Inc"))
        .await;
    let (_, page) = live(&cp, "/ui", &cookie).await;
    assert!(page.contains("Status Page Inc"), "{page}");
    let (_, page) = live(&cp, "/ui/licenses", &cookie).await;
    assert!(page.contains(r#"data-testid="license-row""#), "{page}");

    // The key that signs sessions is kept, private, and outlives the process.
    let key_file = cp.pki_dir().join("ui-session.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cp = cp.restart().await;
    let (status, _) = live(&cp, "/ui/data-planes", &cookie).await;
    assert_eq!(status, StatusCode::OK, "a session survives a restart");

    // Revoking the token ends the session at once.
    let (status, _) = cp
        .call(Method::DELETE, &format!("/admin-tokens/{token_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = live(&cp, "/ui", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(body.is_empty());
    cp.shutdown().await;
}

/// Behind a load balancer a browser may reach any node: a session started at one node of a
/// PostgreSQL cluster is valid at the other (the session key is a shared, sealed secret), a
/// control plane of another cluster refuses it, and revoking the token at one node ends the
/// session at both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_at_one_node_is_valid_at_every_node_of_the_cluster() {
    let url = licsync_testkit::postgres::fresh_database().await;
    let first = ControlPlane::builder().postgres(&url).start().await;
    let second = ControlPlane::builder()
        .postgres(&url)
        .trusting(&first.issuer)
        .admin_token(first.admin_token())
        .start()
        .await;
    let stranger = ControlPlane::start().await;
    let (status, body) = first
        .call(
            Method::POST,
            "/admin-tokens",
            Some(json!({"name": "status-page", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let token_id = body["id"].as_str().unwrap().to_owned();

    let cookie = sign_in(&first, &token).await;
    for node in [&first, &second] {
        let (status, page) = live(node, "/ui", &cookie).await;
        assert_eq!(status, StatusCode::OK, "{page}");
    }
    let (status, _) = live(&stranger, "/ui", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another cluster's key");

    let (status, _) = second
        .call(Method::DELETE, &format!("/admin-tokens/{token_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for node in [&first, &second] {
        let (status, _) = live(node, "/ui", &cookie).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    stranger.shutdown().await;
    second.shutdown().await;
    first.shutdown().await;
}
