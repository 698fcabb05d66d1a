//! A `licsync-dp` process under test: registration through the real CLI, then `run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_testkit::eventually_explained;

use nix::sys::signal::Signal;

use crate::cp::{Cp, merge};
use crate::process::{Process, binary, launch, run};

/// A running data-plane agent.
pub struct Dp {
    /// Working directory: `registration.yaml`, `licsync-dp.toml` and `data/` live here.
    pub dir: PathBuf,
    pub process: Process,
    pub local_url: String,
    config: toml::Table,
}

impl Dp {
    /// `licsync-dp registration create` against `cp`, pinning its CA by fingerprint; returns
    /// (exit code, stdout, stderr).
    pub fn register(cp: &Cp, dir: &Path, token: &str, name: &str) -> (i32, String, String) {
        std::fs::create_dir_all(dir).expect("create dp dir");
        let hash = format!("sha256:{}", cp.ca_fingerprint);
        run(
            &binary("licsync-dp"),
            &[
                "registration",
                "create",
                "--token",
                token,
                "--server",
                &cp.cluster_url,
                "--ca-cert-hash",
                &hash,
                "--name",
                name,
                "--output-directory",
                dir.to_str().expect("utf-8 path"),
            ],
            dir,
        )
    }

    /// Registers with a fresh token and asserts success.
    pub async fn register_ok(cp: &Cp, dir: &Path, name: &str) {
        let token = cp.registration_token(1, "1h").await;
        let (code, stdout, stderr) = Self::register(cp, dir, &token, name);
        assert_eq!(code, 0, "registration failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("Registration completed"), "{stdout}");
    }

    /// Starts the agent with test defaults (fast backoff and heartbeats) and `overrides`.
    pub async fn start(dir: &Path, overrides: &str) -> Self {
        let base = format!(
            r#"
data_dir = "{data}"
registration_file = "{reg}"
[local]
listen = "127.0.0.1:0"
[sync]
heartbeat_interval = "1s"
backoff_initial = "100ms"
backoff_max = "1s"
[log]
format = "json"
level = "info"
"#,
            data = dir.join("data").display(),
            reg = dir.join("registration.yaml").display(),
        );
        let mut config: toml::Table = base.parse().expect("base config");
        merge(&mut config, overrides.parse().expect("override TOML"));
        Self::launch(dir, config).await
    }

    async fn launch(dir: &Path, config: toml::Table) -> Self {
        let (process, started) = launch(
            &binary("licsync-dp"),
            &["run"],
            dir,
            "licsync-dp.toml",
            &config,
            "dp.started",
        )
        .await;
        let local = started.field("local.addr").unwrap_or_default().to_owned();
        Self {
            dir: dir.to_owned(),
            process,
            local_url: format!("http://{local}"),
            config,
        }
    }

    /// Stops the agent with SIGKILL and starts it again with the same configuration.
    pub async fn restart(&mut self) {
        self.process.stop(Signal::SIGKILL, Duration::from_secs(10));
        let next = Self::launch(&self.dir, self.config.clone()).await;
        *self = next;
    }

    /// The license file the gateway reads.
    pub fn license_path(&self) -> PathBuf {
        self.dir.join("data/license.json")
    }

    /// The license file's content, `None` when it does not exist.
    pub fn license(&self) -> Option<String> {
        std::fs::read_to_string(self.license_path()).ok()
    }

    /// Waits until the license file holds `expected` (`None`: until it is gone).
    pub async fn wait_for_license(&self, expected: Option<&str>, timeout: Duration) {
        eventually_explained(
            &format!("the license file to hold {expected:?}"),
            timeout,
            || async { (self.license().as_deref() == expected).then_some(()) },
            || {
                format!(
                    "license file is {:?}; agent log:\n{}",
                    self.license(),
                    self.process.logs.text()
                )
            },
        )
        .await;
    }
}
