//! A real headless Chromium driven through WebDriver, for testing the status page as a person
//! would use it: type a token, click, read what the page shows, look at it on a laptop and on
//! a phone, check it with the tools an accessibility auditor uses.
//!
//! # Layout
//! - [`driver`]: finding Chromium and chromedriver, and the chromedriver process (one per
//!   [`Browser`], killed with its Chromium when the browser is dropped).
//! - [`devtools`]: what WebDriver lacks, through chromedriver's DevTools endpoints: the page's
//!   network requests with their response headers, full-page screenshots.
//! - [`accessibility`]: axe-core in the page, and Chromium's accessibility tree.
//!
//! Each [`Browser`] has a fresh profile in a temp dir and a fixed window ([`LAPTOP`] or
//! [`PHONE`], the latter with a phone's viewport and touch), so tests share no cookies or
//! cache. Screenshots go to `target/ui-screenshots/<test>/<page>-<viewport>.png` (or under
//! `LICSYNC_UI_SCREENSHOTS`) for a reviewer to look at. Waits poll the page until a
//! condition holds and fail after [`crate::GUARD`] with what was awaited, the page's address
//! and text, and a screenshot: no fixed sleeps.
//!
//! Chromium is told to resolve no host but loopback (`--host-resolver-rules`), so a
//! page, or the browser's own background services, cannot reach any other host from a test.

pub mod accessibility;
pub mod devtools;
pub mod driver;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;

pub use accessibility::Violation;
pub use devtools::Request;
use driver::Driver;
/// A cookie as the browser holds it ([`Browser::cookies`]).
pub use fantoccini::cookies::Cookie;

use crate::GUARD;

/// A window size, and whether the page is shown as on a phone (mobile viewport, touch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    /// Used in screenshot names.
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    pub mobile: bool,
}

/// A laptop's screen (1366 × 768 is the most common laptop resolution), a little taller so a
/// screenshot shows more.
pub const LAPTOP: Viewport = Viewport {
    name: "laptop",
    width: 1366,
    height: 900,
    mobile: false,
};

/// A phone held upright (an iPhone 12–15's CSS viewport), with touch and the mobile viewport
/// rules: a page without `<meta name="viewport">` is laid out 980 px wide and shrunk, as on a
/// real phone.
pub const PHONE: Viewport = Viewport {
    name: "phone",
    width: 390,
    height: 844,
    mobile: true,
};

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// How to start a [`Browser`].
pub struct BrowserBuilder {
    test: String,
    viewport: Viewport,
    javascript: bool,
    insecure_certs: bool,
}

impl BrowserBuilder {
    /// A laptop-sized window with JavaScript, screenshots under the folder named `test`.
    pub fn new(test: &str) -> Self {
        Self {
            test: test.to_owned(),
            viewport: LAPTOP,
            javascript: true,
            insecure_certs: false,
        }
    }

    pub fn viewport(mut self, viewport: Viewport) -> Self {
        self.viewport = viewport;
        self
    }

    /// Turns JavaScript off in the page, as a user may have: the page's own scripts do not
    /// run (the harness's checks still can, through WebDriver).
    pub fn without_javascript(mut self) -> Self {
        self.javascript = false;
        self
    }

    /// Accepts any HTTPS certificate (WebDriver's `acceptInsecureCerts`), for a server whose
    /// certificate comes from a test CA the browser does not know.
    pub fn accept_insecure_certs(mut self) -> Self {
        self.insecure_certs = true;
        self
    }

    /// Starts chromedriver and a Chromium session.
    pub async fn start(self) -> Browser {
        let home = tempfile::tempdir().expect("a temp dir for the browser profile");
        let driver = Driver::start(home.path()).await;
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", home.path().join("profile").display()),
            format!(
                "--window-size={},{}",
                self.viewport.width, self.viewport.height
            ),
            // Nothing but loopback: not the start page of Debian's default search engine, not
            // the browser's update or telemetry services.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE [::1]"
                .to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-breakpad".to_owned(),
            "--no-pings".to_owned(),
            // Containers often have a small /dev/shm; Chromium then crashes tabs.
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--lang=en-US".to_owned(),
        ];
        if nix::unistd::geteuid().is_root() {
            // Chromium's sandbox refuses to run as root (CI and these machines run as root).
            args.push("--no-sandbox".to_owned());
        }
        let mut options = json!({ "binary": driver::chromium(), "args": args });
        if !self.javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        if self.viewport.mobile {
            options["mobileEmulation"] = json!({ "deviceMetrics": {
                "width": self.viewport.width, "height": self.viewport.height,
                "pixelRatio": 2.0, "mobile": true, "touch": true,
            }});
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "performance": "ALL" },
            "acceptInsecureCerts": self.insecure_certs,
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        let screenshots = screenshots_root().join(&self.test);
        std::fs::create_dir_all(&screenshots)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", screenshots.display()));
        let browser = Browser {
            client,
            viewport: self.viewport,
            screenshots,
            failures: AtomicUsize::new(0),
            _driver: driver,
            _home: home,
        };
        // What the browser did before the test's first page (its start page) is not the test's.
        browser.requests().await;
        browser
    }
}

/// A Chromium window under test. Drop it to end it; [`Browser::close`] ends the session
/// politely first.
pub struct Browser {
    client: Client,
    viewport: Viewport,
    screenshots: PathBuf,
    /// Numbers the screenshots taken when a wait fails.
    failures: AtomicUsize,
    /// Dropped after the client: kills chromedriver and Chromium.
    _driver: Driver,
    _home: TempDir,
}

impl Browser {
    /// A laptop-sized browser with JavaScript; see [`BrowserBuilder`] for others.
    pub async fn start(test: &str) -> Self {
        BrowserBuilder::new(test).start().await
    }

    pub fn builder(test: &str) -> BrowserBuilder {
        BrowserBuilder::new(test)
    }

    pub fn viewport(&self) -> Viewport {
        self.viewport
    }

    /// The WebDriver client, for what this harness does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the browser could not open {url}: {e}"));
    }

    /// The address the browser shows.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_else(|e| panic!("cannot read the browser's address: {e}"))
    }

    /// The text a person sees on the page (`document.body.innerText`).
    pub async fn text(&self) -> String {
        match self
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await
        {
            Value::String(text) => text,
            other => panic!("the page's text is not a string: {other}"),
        }
    }

    /// Runs `script` in the page (WebDriver's `execute`, which works with the page's
    /// JavaScript turned off too) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("the script failed in the page: {e}\n{script}"))
    }

    /// Waits until `check` returns `Some`, looking again every 100 ms; after [`GUARD`] fails
    /// the test with `what`, the page's address and text, and a screenshot.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {GUARD:?} waiting for {what}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the page shows `text`.
    pub async fn wait_for_text(&self, text: &str) {
        self.wait_for(&format!("the page to show {text:?}"), || async {
            self.text().await.contains(text).then_some(())
        })
        .await;
    }

    /// Waits until the address's path is `path` (query and fragment ignored).
    pub async fn wait_for_path(&self, path: &str) {
        self.wait_for(&format!("the browser to be at {path}"), || async {
            (self.path().await == path).then_some(())
        })
        .await;
    }

    /// The path of the address the browser shows.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|url| url.path().to_owned())
            .unwrap_or_else(|e| panic!("cannot read the browser's address: {e}"))
    }

    /// Waits for the element `css` to be on the page.
    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(GUARD)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => {
                self.fail(&format!("no element {css:?} on the page ({e})"))
                    .await
            }
        }
    }

    /// Every element matching `css` now (none is not an error).
    pub async fn elements(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("cannot look for {css:?}: {e}"))
    }

    /// Types `text` into the field `css`, as a person would (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.element(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("cannot clear {css:?}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css:?}: {e}"));
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.element(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    /// The browser's cookies for the current page, `HttpOnly` ones included.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .unwrap_or_else(|e| panic!("cannot read the browser's cookies: {e}"))
    }

    /// The network requests the page made since the last call (or since the browser started).
    pub async fn requests(&self) -> Vec<Request> {
        devtools::requests(&self.client).await
    }

    /// Saves the whole page (not only the window) as `<page>-<viewport>.png` in the test's
    /// screenshot folder; returns its path.
    pub async fn screenshot(&self, page: &str) -> PathBuf {
        let shot = devtools::cdp(
            &self.client,
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )
        .await;
        let png = shot["data"]
            .as_str()
            .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
            .unwrap_or_else(|| panic!("the browser sent no PNG for {page}"));
        let path = self
            .screenshots
            .join(format!("{page}-{}.png", self.viewport.name));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Checks the current page with axe-core and Chromium's accessibility tree; fails the test
    /// with every serious or critical violation (and any missing heading or label), printed
    /// readably. Returns the minor and moderate violations, which do not fail it.
    pub async fn assert_accessible(&self, page: &str) -> Vec<Violation> {
        let violations = accessibility::axe(&self.client).await;
        let tree = accessibility::tree_problems(&self.client).await;
        let (failing, other): (Vec<_>, Vec<_>) = violations.into_iter().partition(|v| v.fails());
        if !failing.is_empty() || !tree.is_empty() {
            let mut report = format!(
                "{page} ({}, {}) fails the accessibility check:\n",
                self.url().await,
                self.viewport.name
            );
            for violation in &failing {
                report.push_str(&violation.to_string());
            }
            for problem in &tree {
                report.push_str(&format!("[accessibility tree] {problem}\n"));
            }
            self.fail(&report).await;
        }
        other
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        let Self {
            client, _driver, ..
        } = self;
        let _ = client.close().await;
        drop(_driver);
    }

    /// Fails the test with `message`, the page's address and text, and a screenshot.
    async fn fail(&self, message: &str) -> ! {
        let n = self.failures.fetch_add(1, Ordering::Relaxed);
        let address = self.url().await;
        let text = self.text().await;
        let shot = self.screenshot(&format!("failure-{n}")).await;
        panic!(
            "{message}\nat {address}; screenshot {}\npage text:\n{}",
            shot.display(),
            truncate(&text, 4000)
        );
    }
}

/// The folder the screenshots of every test go under: `LICSYNC_UI_SCREENSHOTS`, else
/// `ui-screenshots` in the Cargo target directory holding the test executable.
pub fn screenshots_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LICSYNC_UI_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test executable>
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|target| target.join("ui-screenshots"))
        .unwrap_or_else(|| std::env::temp_dir().join("licsync-ui-screenshots"))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}
