//! The browser binaries and the chromedriver process: found on the machine (Debian's
//! `chromium` and `chromium-driver` packages, or the paths in `LICSYNC_CHROMIUM` and
//! `LICSYNC_CHROMEDRIVER`), started on a free loopback port, and killed with everything it
//! started when the handle is dropped.
//!
//! chromedriver runs in a process group of its own and Chromium's processes stay in it, so one
//! `killpg` ends them all even when a test panics before it could end its WebDriver session.
//! A missing binary fails the test with what to install: the browser tests never skip.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::GUARD;

/// Where Debian's `chromium` package puts the browser itself. `/usr/bin/chromium` is a shell
/// wrapper that adds Debian's flags and API keys; the tests choose their own flags.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// What to install when a binary is missing.
const INSTALL_HINT: &str = "install Debian's packages (apt-get install chromium chromium-driver \
     fonts-liberation; .ci/run does when they are missing) or point LICSYNC_CHROMIUM and \
     LICSYNC_CHROMEDRIVER at a Chromium and its matching chromedriver";

/// The Chromium executable to drive: `LICSYNC_CHROMIUM`, else Debian's, else the first of
/// `chromium`, `chromium-browser`, `google-chrome` on `PATH`. Panics with what to install.
pub fn chromium() -> PathBuf {
    if let Some(path) = from_env("LICSYNC_CHROMIUM") {
        return path;
    }
    if Path::new(DEBIAN_CHROMIUM).is_file() {
        return PathBuf::from(DEBIAN_CHROMIUM);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| on_path(name))
        .unwrap_or_else(|| panic!("no Chromium found: {INSTALL_HINT}"))
}

/// The chromedriver executable: `LICSYNC_CHROMEDRIVER`, else `chromedriver` on `PATH`.
fn chromedriver() -> PathBuf {
    from_env("LICSYNC_CHROMEDRIVER")
        .or_else(|| on_path("chromedriver"))
        .unwrap_or_else(|| panic!("no chromedriver found: {INSTALL_HINT}"))
}

/// A path named by the environment variable `name`; panics when it names no file, so a typo
/// is not silently replaced by another browser.
fn from_env(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(name)?);
    assert!(
        path.is_file(),
        "{name}={} names no file; unset it or point it at the executable",
        path.display()
    );
    Some(path)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A running chromedriver, listening on `127.0.0.1:port`.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it says it is ready.
    /// `home` becomes the `XDG_CONFIG_HOME` and `XDG_CACHE_HOME` of it and
    /// of the Chromium it starts, so nothing is left in the user's own profile folders.
    pub async fn start(home: &Path) -> Self {
        let binary = chromedriver();
        // Another process may take the port between this probe and chromedriver's bind: then
        // chromedriver exits at once, and another port is tried.
        let deadline = Instant::now() + GUARD;
        loop {
            let port = free_port();
            let mut command = Command::new(&binary);
            command
                .arg(format!("--port={port}"))
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_CACHE_HOME", home.join("cache"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut driver = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            match driver.wait_ready(deadline).await {
                Ok(()) => return driver,
                Err(reason) if Instant::now() > deadline => panic!(
                    "chromedriver ({}) did not become ready within {GUARD:?}: {reason}; \
                     run it by hand (chromedriver --port=9515) to see why",
                    binary.display(),
                ),
                Err(_) => drop(driver),
            }
        }
    }

    /// Polls `GET /status` until `value.ready` is true; an early exit is an error.
    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let http = reqwest::Client::new();
        let status = format!("{}/status", self.url);
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("it exited with {exit}"));
            }
            if let Ok(response) = http.get(&status).send().await
                && let Ok(body) = response.json::<serde_json::Value>().await
                && body["value"]["ready"] == true
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{status} never said ready"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Driver {
    /// Kills chromedriver and every Chromium process in its group, then reaps chromedriver.
    fn drop(&mut self) {
        if let Ok(id) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}
