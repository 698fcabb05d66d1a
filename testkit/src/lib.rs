//! The one test kit every licsync test shares (dev-only, never published).
//!
//! # Layout
//! - [`control_plane`]: the real control plane (`licsync_cp::server::run`) in-process on
//!   `127.0.0.1:0`, with real TLS and sled in a temp dir; [`admin_api`]: the Admin API calls
//!   tests drive it with.
//! - [`dataplane`]: a bare data-plane gRPC client over real mutual TLS (`Register`, `Sync`,
//!   `RotateCertificate`), for tests that drive the wire protocol by hand.
//! - [`events`]: the structured log events (`event = "..."`) captured from `tracing` in-process,
//!   or parsed from a process's JSON log lines, and waited for.
//! - [`fixtures`]: license-signing keys and the documents they sign.
//! - [`browser`] (feature `browser`): a real headless Chromium through chromedriver, with
//!   screenshots, the page's network requests and accessibility checks (axe-core), for the
//!   status page's tests.
//! - [`postgres`]: a throwaway PostgreSQL server per test binary, a fresh database per test.
//! - [`eventually`] and [`wait_for`]: polling that fails the test after [`GUARD`].
//!
//! The kit only uses the control plane's public entry points (its configuration,
//! `server::run`, the Admin API over HTTP and gRPC), never its internals, so tests exercise
//! what an operator or a data plane would.
#![forbid(unsafe_code)]

pub mod admin_api;
#[cfg(feature = "browser")]
pub mod browser;
pub mod control_plane;
pub mod dataplane;
pub mod events;
pub mod fixtures;
pub mod postgres;
pub mod relay;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use admin_api::{RegistrationToken, send};
pub use control_plane::{ControlPlane, ControlPlaneBuilder};
pub use events::{Capture, Event, Events};
pub use fixtures::Issuer;
pub use relay::Relay;

/// How long anything may take before the test gives up: a guard against hanging on failure,
/// never a bound the code must meet (a cold debug build on a loaded 2-core machine is slow).
pub const GUARD: Duration = Duration::from_secs(30);

/// How often [`eventually_within`] checks again.
const POLL: Duration = Duration::from_millis(20);

/// Calls `check` every 20 ms until it returns `Some`; fails the test after [`GUARD`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, GUARD, check).await
}

/// Calls `check` every 20 ms until it returns `Some`; fails the test after `timeout`.
pub async fn eventually_within<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(what, timeout, check, String::new).await
}

/// [`eventually_within`], whose failure message ends with `context()` (a log, say), so a
/// failing test shows why.
pub async fn eventually_explained<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the watched value satisfies `ready`; fails the test after [`GUARD`].
pub async fn wait_for<T: Clone>(
    what: &str,
    rx: &mut watch::Receiver<T>,
    ready: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(GUARD, rx.wait_for(ready)).await {
        Ok(Ok(value)) => value.clone(),
        Ok(Err(_)) => panic!("the sender went away while waiting for {what}"),
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}
