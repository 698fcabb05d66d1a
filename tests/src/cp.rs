//! A `licsync-cp` process under test, with an Admin API client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::process::{Process, binary, launch_with_env};

/// How long a control plane may take to start (a cold debug build on a loaded 2-core machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running control plane on loopback ports it chose itself.
pub struct Cp {
    /// Working directory; the data directory is `dir/data`, the config `dir/licsync-cp.toml`.
    pub dir: PathBuf,
    pub process: Process,
    pub admin_url: String,
    /// The status listener (`GET /metrics`, `/health/*`).
    pub status_url: String,
    pub cluster_url: String,
    pub ca_fingerprint: String,
    pub token: String,
    config: toml::Table,
    http: reqwest::Client,
    /// The executable and extra environment, reused by [`Cp::restart`].
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl Cp {
    /// Starts a control plane trusting `trusted_keys`; `overrides` is TOML merged over the
    /// test defaults (for example `[pki]\ndataplane_cert_ttl = "3s"`).
    pub async fn start(dir: &Path, trusted_keys: &[&str], overrides: &str) -> Self {
        Self::start_with(dir, trusted_keys, overrides, &binary("licsync-cp"), &[]).await
    }

    /// [`Cp::start`] with another `licsync-cp` executable (the fleet benchmark runs the release
    /// build) and extra environment variables for it (e.g. `LICSYNC_LOG`).
    pub async fn start_with(
        dir: &Path,
        trusted_keys: &[&str],
        overrides: &str,
        executable: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        std::fs::create_dir_all(dir).expect("create cp dir");
        let base = format!(
            r#"
data_dir = "{data}"
[admin]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
server_names = ["127.0.0.1", "localhost"]
[status]
listen = "127.0.0.1:0"
[licenses]
trusted_keys = {keys}
[log]
format = "json"
level = "info"
"#,
            data = dir.join("data").display(),
            keys = serde_json::to_string(trusted_keys).expect("keys"),
        );
        let mut config: toml::Table = base.parse().expect("base config");
        let overrides: toml::Table = overrides.parse().expect("override TOML");
        merge(&mut config, overrides);
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::launch(dir, config, executable.to_owned(), env).await
    }

    async fn launch(
        dir: &Path,
        config: toml::Table,
        executable: PathBuf,
        env: Vec<(String, String)>,
    ) -> Self {
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (process, started) = launch_with_env(
            &executable,
            &["serve"],
            dir,
            "licsync-cp.toml",
            &config,
            "cp.started",
            &env_refs,
        )
        .await;
        let field = |name: &str| started.field(name).unwrap_or_default().to_owned();
        // A node that joined a cluster on PostgreSQL finds the admin token the first node
        // created in the database, not in its own data_dir: the test sets [`Cp::token`].
        let token = std::fs::read_to_string(dir.join("data/admin-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        Self {
            dir: dir.to_owned(),
            admin_url: format!("http://{}", field("admin.addr")),
            status_url: format!("http://{}", field("status.addr")),
            cluster_url: field("cluster_url"),
            ca_fingerprint: field("ca_cert_sha256"),
            token,
            process,
            config,
            http: reqwest::Client::new(),
            binary: executable,
            env,
        }
    }

    /// The addresses actually bound, so a restart reuses them (registered data planes keep
    /// their cluster URL).
    fn pinned_config(&self) -> toml::Table {
        let mut config = self.config.clone();
        let admin = self.admin_url.trim_start_matches("http://").to_owned();
        let cluster = self.cluster_url.trim_start_matches("https://").to_owned();
        let status = self.status_url.trim_start_matches("http://").to_owned();
        let pin = format!(
            "[admin]\nlisten = \"{admin}\"\n[cluster]\nlisten = \"{cluster}\"\n[status]\nlisten = \"{status}\"\n"
        );
        merge(&mut config, pin.parse().expect("pin TOML"));
        config
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.process.stop(Signal::SIGKILL, Duration::from_secs(10));
    }

    /// Starts the control plane again on the same data and ports.
    pub async fn restart(&mut self) {
        self.restart_with("").await;
    }

    /// Restarts with `overrides` (TOML) merged over the current configuration.
    pub async fn restart_with(&mut self, overrides: &str) {
        if self.process.is_running() {
            self.kill();
        }
        let mut config = self.pinned_config();
        merge(&mut config, overrides.parse().expect("override TOML"));
        let next = Self::launch(&self.dir, config, self.binary.clone(), self.env.clone()).await;
        *self = next;
    }

    /// Calls the Admin API with the admin token; returns the status and the JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.admin_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        licsync_testkit::send(request).await
    }

    /// `POST /licenses`, asserting 201; returns the entity.
    pub async fn create_license(&self, document: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/licenses",
                Some(serde_json::json!({ "payload": document })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A fresh registration token secret (`max_uses` uses, `ttl` like "4h").
    pub async fn registration_token(&self, max_uses: u32, ttl: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/registration-tokens",
                Some(serde_json::json!({ "name": "test", "ttl": ttl, "max_uses": max_uses })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"]
            .as_str()
            .expect("token in response")
            .to_owned()
    }
}

/// Deep-merges `overrides` into `base` (tables merge, other values replace).
pub fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
