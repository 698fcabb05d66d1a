//! The status page (SPEC §11) used as a person would: a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, through `licsync_testkit::browser`) against a real
//! `licsync-cp` process with a real `licsync-dp` agent connected over mutual TLS.
//!
//! An operator signs in with a token (a wrong one is refused), sees a license written through
//! the Admin API and an agent that connects appear without reloading, opens the agent's page
//! and signs out; a viewer sees everything and can change nothing; the pages work with
//! JavaScript turned off; every page passes axe-core's accessibility rules on a laptop and on
//! a phone, sends a Content-Security-Policy and loads nothing from another host; over HTTPS
//! the session cookie is `Secure`. A last test shows the checks themselves catch a broken page.
//!
//! Screenshots of every page go to `target/ui-screenshots/<test>/` for a reviewer to look at.
//! The page refreshes itself every 5 s: waits allow for that, bounded by the kit's guard.

use std::time::Duration;

use licsync_common::pki::CertificateAuthority;
use licsync_testkit::browser::{Browser, Cookie, LAPTOP, PHONE, Viewport};
use licsync_testkit::{ControlPlane, Issuer, eventually_within};
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long an agent may take to connect and report (a cold debug build on a busy machine).
const T: Duration = Duration::from_secs(30);

/// The customer of the license every fleet holds.
const CUSTOMER: &str = "Globex Corporation";

/// The data plane every fleet has.
const DATAPLANE: &str = "edge-berlin-1";

/// Requests the data plane counts and reports before the pages are looked at.
const REQUESTS: u64 = 1234;

/// A control plane holding one license, with one connected agent whose counted requests the
/// control plane has received.
struct Fleet {
    cp: Cp,
    /// Kept running while the browser looks.
    _dp: Dp,
    dataplane_id: String,
    license_id: String,
    _tmp: TempDir,
}

impl Fleet {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let issuer = Issuer::new();
        let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
        let license = cp.create_license(&issuer.license(CUSTOMER)).await;
        let dp = start_agent(&cp, &tmp).await;
        let dataplane_id = connected_dataplane(&cp).await;
        let counted = reqwest::Client::new()
            .post(format!("{}/usage", dp.local_url))
            .body(json!({ "request_count": REQUESTS }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(counted.status(), StatusCode::ACCEPTED);
        eventually_within("the usage report to reach the control plane", T, || async {
            let (_, report) = cp.call(Method::GET, "/license/report", None).await;
            (report["total_requests"] == REQUESTS).then_some(())
        })
        .await;
        Self {
            cp,
            _dp: dp,
            dataplane_id,
            license_id: license["id"].as_str().unwrap().to_owned(),
            _tmp: tmp,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cp.admin_url)
    }

    /// Every signed-in page.
    fn pages(&self) -> Vec<Page> {
        let page = |name, path: String, ready: String, text: &str| Page {
            name,
            path,
            ready,
            text: text.to_owned(),
        };
        vec![
            page(
                "overview",
                "/ui".to_owned(),
                "[data-testid=license-customer]".to_owned(),
                CUSTOMER,
            ),
            page(
                "data-planes",
                "/ui/data-planes".to_owned(),
                "tr[data-testid=dataplane-row]".to_owned(),
                DATAPLANE,
            ),
            page(
                "data-plane",
                format!("/ui/data-planes/{}", self.dataplane_id),
                "[data-testid=sync-events]".to_owned(),
                DATAPLANE,
            ),
            page(
                "licenses",
                "/ui/licenses".to_owned(),
                "svg[data-testid=license-timeline]".to_owned(),
                CUSTOMER,
            ),
            // The month's total, counted by the agent and reported to the control plane.
            page(
                "usage",
                "/ui/usage".to_owned(),
                format!("[data-testid=usage-total][data-total='{REQUESTS}']"),
                "Usage",
            ),
        ]
    }

    /// Opens `page` and waits until it shows what it must.
    async fn open(&self, browser: &Browser, page: &Page) {
        browser.goto(&self.url(&page.path)).await;
        browser.element(&page.ready).await;
        browser.wait_for_text(&page.text).await;
    }
}

/// A signed-in page of the status page.
struct Page {
    /// For screenshots.
    name: &'static str,
    path: String,
    /// An element that shows the page has loaded with the fleet's data.
    ready: String,
    /// Text it must show.
    text: String,
}

/// Registers an agent named [`DATAPLANE`] and starts it, reporting usage every second.
async fn start_agent(cp: &Cp, tmp: &TempDir) -> Dp {
    let dir = tmp.path().join("dp");
    Dp::register_ok(cp, &dir, DATAPLANE).await;
    Dp::start(
        &dir,
        "[usage]\nflush_interval = \"1s\"\nreport_interval = \"1s\"\n",
    )
    .await
}

/// The id of the one data plane, once the control plane says it is connected.
async fn connected_dataplane(cp: &Cp) -> String {
    eventually_within("the agent to connect", T, || async {
        let (_, body) = cp.call(Method::GET, "/clustering/data-planes", None).await;
        body["data"]
            .as_array()?
            .iter()
            .find(|dp| dp["connected"] == true)
            .and_then(|dp| dp["id"].as_str())
            .map(str::to_owned)
    })
    .await
}

/// Signs in on the sign-in form with `token`, as a person would, and waits for the overview.
async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui/login")).await;
    browser.fill("#token", token).await;
    browser.click("#sign-in").await;
    browser.wait_for_path("/ui").await;
}

/// Sets a mark on the page's `window`, gone if the page is reloaded.
async fn mark(browser: &Browser) {
    browser
        .execute("window.__licsyncNotReloaded = true; return null;", vec![])
        .await;
}

/// Whether the mark set by [`mark`] is still there: the page was not reloaded.
async fn still_marked(browser: &Browser) -> bool {
    browser
        .execute("return window.__licsyncNotReloaded === true;", vec![])
        .await
        == Value::Bool(true)
}

/// The text of the first element matching `css`, once there is one (read in one script, so a
/// refresh replacing the element meanwhile does not matter).
async fn text_of(browser: &Browser, css: &str) -> String {
    browser
        .wait_for(&format!("an element {css:?}"), || async {
            let text = browser
                .execute(
                    "const e = document.querySelector(arguments[0]); return e && e.innerText;",
                    vec![json!(css)],
                )
                .await;
            text.as_str().map(str::to_owned)
        })
        .await
}

/// The browser's session cookie, if it has one.
async fn session_cookie(browser: &Browser) -> Option<Cookie<'static>> {
    browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c.name() == "licsync_session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_sees_a_license_and_an_agent_arrive_without_reloading() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let base = cp.admin_url.clone();
    let browser = Browser::start("operator").await;

    // Without a session every page sends to the sign-in form and shows nothing of the fleet.
    for path in ["/ui", "/ui/data-planes", "/ui/licenses", "/ui/usage"] {
        browser.goto(&format!("{base}{path}")).await;
        browser.wait_for_path("/ui/login").await;
        assert!(
            browser
                .elements("#live, [data-testid=license-panel], table")
                .await
                .is_empty(),
            "{path} showed the fleet without a session"
        );
    }

    // A wrong token is refused with a message saying so, and gives no session.
    browser.fill("#token", "not-a-token").await;
    browser.click("#sign-in").await;
    let refusal = text_of(&browser, "#login-error").await;
    assert!(!refusal.trim().is_empty(), "the refusal says nothing");
    assert_eq!(browser.path().await, "/ui/login");
    assert!(session_cookie(&browser).await.is_none());
    browser.screenshot("login-refused").await;

    // The admin token signs in; the session cookie is out of scripts' and other sites' reach.
    sign_in(&browser, &base, &cp.token).await;
    let cookie = session_cookie(&browser).await.expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict"),
        "{cookie:?}"
    );
    assert_ne!(
        cookie.secure(),
        Some(true),
        "Secure over plain HTTP: {cookie:?}"
    );
    browser.element("[data-testid=no-license]").await;

    // A license written through the Admin API appears on the open page, without a reload.
    mark(&browser).await;
    cp.create_license(&issuer.license(CUSTOMER)).await;
    browser
        .wait_for("the license to appear on the overview", || async {
            (text_of(&browser, "#live").await.contains(CUSTOMER)).then_some(())
        })
        .await;
    assert_eq!(
        text_of(&browser, "[data-testid=license-customer]").await,
        CUSTOMER
    );
    assert!(still_marked(&browser).await, "the overview was reloaded");
    browser.screenshot("overview-with-license").await;

    // An agent that connects appears in the open data-plane table, without a reload.
    browser.goto(&format!("{base}/ui/data-planes")).await;
    browser.element("[data-testid=no-dataplanes]").await;
    mark(&browser).await;
    let _dp = start_agent(&cp, &tmp).await;
    let id = connected_dataplane(&cp).await;
    browser.wait_for_text(DATAPLANE).await;
    browser
        .element(&format!(
            "tr[data-testid=dataplane-row][data-dataplane-id='{id}']"
        ))
        .await;
    assert!(
        still_marked(&browser).await,
        "the data-plane table was reloaded"
    );

    // Its name leads to its own page: connected, holding the license, with its sync events.
    browser.click("tr[data-testid=dataplane-row] a").await;
    browser
        .wait_for_path(&format!("/ui/data-planes/{id}"))
        .await;
    assert!(text_of(&browser, "h1").await.contains(DATAPLANE));
    browser
        .wait_for("the agent's page to say it is connected", || async {
            (text_of(&browser, "[data-testid=dataplane-connected]")
                .await
                .trim()
                == "yes")
                .then_some(())
        })
        .await;
    browser
        .wait_for("the agent's sync events", || async {
            (!browser.elements("tr[data-event]").await.is_empty()).then_some(())
        })
        .await;
    browser.screenshot("data-plane").await;

    // Signing out ends the session: the pages send to the sign-in form again.
    browser.click("#sign-out").await;
    browser.wait_for_path("/ui/login").await;
    browser.goto(&format!("{base}/ui")).await;
    browser.wait_for_path("/ui/login").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_accessible_and_loads_nothing_from_elsewhere_on_a_laptop_and_a_phone() {
    let fleet = Fleet::start().await;
    for viewport in [LAPTOP, PHONE] {
        check_every_page(&fleet, viewport).await;
    }
}

/// Signs in at `viewport` size; for the sign-in form and every page: screenshot, accessibility
/// check, readable without scrolling sideways; then the network traffic of them all.
async fn check_every_page(fleet: &Fleet, viewport: Viewport) {
    let browser = Browser::builder("every-page")
        .viewport(viewport)
        .start()
        .await;
    let mut minor = Vec::new();
    browser.goto(&fleet.url("/ui/login")).await;
    browser.element("#token").await;
    browser.screenshot("login").await;
    minor.extend(browser.assert_accessible("the sign-in page").await);
    fits_the_width(&browser, "the sign-in page").await;

    sign_in(&browser, &fleet.cp.admin_url, &fleet.cp.token).await;
    for page in fleet.pages() {
        fleet.open(&browser, &page).await;
        browser.screenshot(page.name).await;
        minor.extend(browser.assert_accessible(page.name).await);
        fits_the_width(&browser, page.name).await;
    }
    for violation in &minor {
        eprintln!("{} (not failing): {violation}", viewport.name);
    }

    // Every request went to the control plane; every page came with a CSP.
    let origin = reqwest::Url::parse(&fleet.cp.admin_url)
        .unwrap()
        .origin()
        .ascii_serialization();
    let requests = browser.requests().await;
    assert!(!requests.is_empty(), "no request was logged");
    let elsewhere: Vec<_> = requests
        .iter()
        .filter(|r| r.is_network() && r.origin() != origin)
        .map(|r| format!("{} {} ({})", r.method, r.url, r.resource_type))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests to other hosts than {origin}:\n{}",
        elsewhere.join("\n")
    );
    for document in requests.iter().filter(|r| r.resource_type == "Document") {
        let csp = document
            .headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{} came without a Content-Security-Policy", document.url));
        assert!(csp.contains("default-src"), "{}: {csp}", document.url);
    }
    browser.close().await;
}

/// Fails when the page is wider than the window: a phone user would have to scroll sideways
/// to read it (a wide table may scroll inside its own box).
async fn fits_the_width(browser: &Browser, page: &str) {
    let sizes = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await;
    let (content, window) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert!(
        content <= window,
        "{page} is {content} px wide in a {window} px {} window: it scrolls sideways",
        browser.viewport().name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_everything_and_can_change_nothing() {
    let fleet = Fleet::start().await;
    let (status, created) = fleet
        .cp
        .call(
            Method::POST,
            "/admin-tokens",
            Some(json!({ "name": "auditor", "role": "viewer", "ttl": "1h" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let viewer_token = created["token"].as_str().unwrap();
    let browser = Browser::start("viewer").await;
    // Enter in the token field signs in, as in any form.
    browser.goto(&fleet.url("/ui/login")).await;
    browser
        .fill("#token", &format!("{viewer_token}\u{e007}"))
        .await;
    browser.wait_for_path("/ui").await;
    assert!(
        text_of(&browser, "#signed-in-as").await.contains("auditor"),
        "the page does not say who is signed in"
    );

    // Everything is shown, and nothing on any page could change the control plane: the only
    // form that posts is the sign-out.
    for page in fleet.pages() {
        fleet.open(&browser, &page).await;
        let posting = browser
            .execute(
                r#"return Array.from(document.forms)
                     .filter((f) => f.method.toLowerCase() !== "get")
                     .map((f) => new URL(f.action, location.href).pathname);"#,
                vec![],
            )
            .await;
        assert_eq!(
            posting,
            json!(["/ui/logout"]),
            "forms posting on {}",
            page.name
        );
    }

    // Requests that would change something, sent with the viewer's session, are refused:
    // the pages take no writes, and the session is no key to the Admin API.
    let cookie = session_cookie(&browser).await.expect("a session cookie");
    let cookie = format!("{}={}", cookie.name(), cookie.value());
    let http = reqwest::Client::new();
    let mut writes: Vec<(Method, String)> = Vec::new();
    for page in fleet.pages() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            writes.push((method, page.path.clone()));
        }
    }
    let license = format!("/licenses/{}", fleet.license_id);
    let dataplane = format!("/clustering/data-planes/{}", fleet.dataplane_id);
    writes.push((Method::DELETE, license.clone()));
    writes.push((Method::POST, "/registration-tokens".to_owned()));
    writes.push((Method::POST, "/admin-tokens".to_owned()));
    writes.push((Method::DELETE, dataplane));
    for (method, path) in writes {
        let response = http
            .request(method.clone(), fleet.url(&path))
            .header("cookie", &cookie)
            .header("origin", &fleet.cp.admin_url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_client_error(),
            "{method} {path} with a viewer's session answered {status}"
        );
    }
    // The same from inside the page, as a script there could try.
    let answered = browser
        .client()
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch(arguments[0], { method: "DELETE", credentials: "same-origin" })
                 .then((r) => done(r.status), (e) => done(String(e)));"#,
            vec![json!(license)],
        )
        .await
        .unwrap();
    assert_eq!(
        answered,
        json!(401),
        "DELETE {license} from the page, with the session"
    );

    // Another site cannot sign the viewer out (nor anyone in).
    for path in ["/ui/logout", "/ui/login"] {
        let response = http
            .post(fleet.url(path))
            .header("cookie", &cookie)
            .header("origin", "http://attacker.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", fleet.cp.token))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "cross-site POST {path}"
        );
    }
    let (status, _) = fleet.cp.call(Method::GET, &license, None).await;
    assert_eq!(status, StatusCode::OK, "the license is still there");
    browser.goto(&fleet.url("/ui")).await;
    assert_eq!(browser.path().await, "/ui", "the viewer is still signed in");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_with_javascript_turned_off() {
    let fleet = Fleet::start().await;
    let browser = Browser::builder("without-javascript")
        .without_javascript()
        .start()
        .await;
    // Signing in is a plain form post.
    sign_in(&browser, &fleet.cp.admin_url, &fleet.cp.token).await;
    for page in fleet.pages() {
        fleet.open(&browser, &page).await;
        browser.screenshot(page.name).await;
    }
    assert!(
        browser.elements("body[data-refreshed-at]").await.is_empty(),
        "the page's script ran although JavaScript is off"
    );

    // Filtering the data-plane table is a plain form too.
    browser.goto(&fleet.url("/ui/data-planes")).await;
    browser
        .fill(
            "[data-testid=dataplane-filters] input[name=q]",
            "no-such-gateway",
        )
        .await;
    browser
        .click("[data-testid=dataplane-filters] [type=submit]")
        .await;
    browser.element("#dataplane-count[data-shown='0']").await;
    assert!(browser.url().await.contains("q=no-such-gateway"));
    assert!(
        browser
            .elements("tr[data-testid=dataplane-row]")
            .await
            .is_empty()
    );
    browser
        .fill("[data-testid=dataplane-filters] input[name=q]", "berlin")
        .await;
    browser
        .click("[data-testid=dataplane-filters] [type=submit]")
        .await;
    browser.element("tr[data-testid=dataplane-row]").await;

    // Signing out too.
    browser.click("#sign-out").await;
    browser.wait_for_path("/ui/login").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let (ca, _) = CertificateAuthority::generate("licsync admin test CA", day).unwrap();
    let issued = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()], day)
        .unwrap();
    let (cert, key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem.unwrap()).unwrap();
    let cp = ControlPlane::builder()
        .admin_tls(&cert, &key, ca.cert_pem())
        .start()
        .await;
    assert!(cp.admin_url().starts_with("https://"));
    // The test CA is not in Chromium's trust store; the certificate is what is under test
    // elsewhere (cp/tests/admin_tls.rs).
    let browser = Browser::builder("https")
        .accept_insecure_certs()
        .start()
        .await;
    sign_in(&browser, &cp.admin_url(), cp.admin_token()).await;
    let cookie = session_cookie(&browser).await.expect("a session cookie");
    assert_eq!(cookie.secure(), Some(true), "{cookie:?}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    browser.close().await;
    cp.shutdown().await;
}

/// A page built to fail every check, served from loopback: the checks above can fail.
const BROKEN_PAGE: &str = r#"<!doctype html>
<html><head><title>broken</title></head><body>
<p>no heading, no language</p>
<input type="text">
<img src="/missing.png">
<p style="color:#bbb;background:#fff">grey on white</p>
<img alt="from elsewhere" src="http://cdn.example.com/logo.png">
</body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_an_inaccessible_page_and_a_request_to_another_host() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BROKEN_PAGE}",
                BROKEN_PAGE.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    let browser = Browser::start("broken-page").await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_for_text("grey on white").await;

    let violations = licsync_testkit::browser::accessibility::axe(browser.client()).await;
    let failing: Vec<&str> = violations
        .iter()
        .filter(|v| v.fails())
        .map(|v| v.rule.as_str())
        .collect();
    for rule in ["html-has-lang", "image-alt", "label", "color-contrast"] {
        assert!(
            failing.contains(&rule),
            "{rule} not caught: {violations:#?}"
        );
    }
    let tree = licsync_testkit::browser::accessibility::tree_problems(browser.client()).await;
    assert!(tree.iter().any(|p| p.contains("no heading")), "{tree:?}");
    assert!(tree.iter().any(|p| p.contains("textbox")), "{tree:?}");

    let requests = browser.requests().await;
    let elsewhere = requests
        .iter()
        .find(|r| r.url.starts_with("http://cdn.example.com/"))
        .unwrap_or_else(|| panic!("the request to another host was not seen: {requests:#?}"));
    // Chromium resolves no other host in these tests: the request never left the machine.
    assert_eq!(
        elsewhere.error.as_deref(),
        Some("net::ERR_NAME_NOT_RESOLVED"),
        "{elsewhere:?}"
    );
    let page = requests
        .iter()
        .find(|r| r.resource_type == "Document")
        .expect("the page itself");
    assert_eq!(page.status, Some(200));
    assert_eq!(
        page.headers.get("content-type").map(String::as_str),
        Some("text/html")
    );
    browser.close().await;
    server.abort();
}
