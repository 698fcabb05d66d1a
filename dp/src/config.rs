//! `licsync-dp` configuration: one struct per component, composed into [`DpConfig`].
//!
//! Every table is `#[serde(default, deny_unknown_fields)]`: no file at all gives a working
//! agent (state under `./licsync-dp-data`, registration in `./registration.yaml`), and a typo or
//! a value that cannot work stops start-up with the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::config::ConfigError;
use licsync_common::duration::HumanDuration;
use licsync_common::license::TrustedKeys;
use licsync_common::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

use crate::usage::statsd::pattern::MetricFilter;

/// The name looked for in the working directory when neither `--config` nor
/// `LICSYNC_DP_CONFIG` is given.
pub const DEFAULT_FILE_NAME: &str = "licsync-dp.toml";

/// The whole `licsync-dp.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpConfig {
    /// Where the agent keeps its state (`dp-state.json`) and, by default, the license file.
    pub data_dir: PathBuf,
    /// The file `licsync-dp registration create` wrote.
    pub registration_file: PathBuf,
    pub license: LicenseConfig,
    pub local: LocalConfig,
    pub sync: SyncConfig,
    pub usage: UsageConfig,
    pub log: LogConfig,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            // Not the control plane's `./licsync-data`: both started in one directory must not
            // share (and mix) a data directory.
            data_dir: PathBuf::from("./licsync-dp-data"),
            registration_file: PathBuf::from("./registration.yaml"),
            license: LicenseConfig::default(),
            local: LocalConfig::default(),
            sync: SyncConfig::default(),
            usage: UsageConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `[license]`: where the active license goes and what to run after it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicenseConfig {
    /// The file the gateway reads (`KONG_LICENSE_PATH`); default `<data_dir>/license.json`.
    pub output_path: Option<PathBuf>,
    /// Program and arguments run after the license file changed; empty runs nothing.
    /// Never run through a shell.
    pub reload_command: Vec<String>,
    /// How long the reload command may run before it is killed.
    pub reload_timeout: HumanDuration,
    /// Standard base64 Ed25519 keys; empty means the keys in the registration file.
    #[serde(deserialize_with = "licsync_common::config::trusted_keys")]
    pub trusted_keys: Vec<String>,
    /// When `trusted_keys` is empty, also accept the keys the control plane sends with every
    /// update, so a signing-key rotation needs no change here. Off by default: the agent's own
    /// check then stays independent of the control plane.
    pub follow_control_plane_keys: bool,
    /// When the newest license (Kong's rule) has expired while an older held one is still in
    /// force, serve the newest one in force instead. Off by default: Kong's rule is kept, and
    /// the case is logged as `license.expired_selected` either way.
    pub prefer_in_force: bool,
}

impl Default for LicenseConfig {
    fn default() -> Self {
        Self {
            output_path: None,
            reload_command: Vec::new(),
            reload_timeout: HumanDuration(Duration::from_secs(30)),
            trusted_keys: Vec::new(),
            follow_control_plane_keys: false,
            prefer_in_force: false,
        }
    }
}

/// `[local]`: the HTTP API for the gateway and for operators on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    pub listen: SocketAddr,
    /// How long a request head may take from its first byte (else 408).
    pub header_read_timeout: HumanDuration,
    /// How long a connection may sit between requests (or before its first) before it is closed.
    pub idle_timeout: HumanDuration,
    /// How long a request body may take after its head (else 408).
    pub body_read_timeout: HumanDuration,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        use licsync_common::http_server as http;
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8007)),
            header_read_timeout: HumanDuration(http::DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(http::DEFAULT_IDLE_TIMEOUT),
            body_read_timeout: HumanDuration(http::DEFAULT_BODY_READ_TIMEOUT),
            max_connections: http::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[sync]`: the stream to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The control plane's nodes (`https://HOST:PORT`), tried in order with failover; empty
    /// (the default) means the registration file's URL. Checked entry by entry while parsing
    /// ([`crate::sync::servers::parse_servers`]).
    #[serde(deserialize_with = "crate::sync::servers::deserialize")]
    pub servers: Vec<String>,
    /// How often a heartbeat keeps the control plane's `last_seen` fresh.
    pub heartbeat_interval: HumanDuration,
    /// First reconnect delay ceiling; doubles per failed attempt.
    pub backoff_initial: HumanDuration,
    /// Largest reconnect delay ceiling.
    pub backoff_max: HumanDuration,
    /// HTTP/2 keepalive ping interval, which detects a dead control plane.
    pub keepalive_interval: HumanDuration,
    /// How long an unanswered keepalive ping may take before the connection is dropped.
    pub keepalive_timeout: HumanDuration,
    /// How long a TCP connect plus TLS handshake may take.
    pub connect_timeout: HumanDuration,
    /// Renew the client certificate over the mTLS connection once two thirds of its lifetime
    /// have passed, and save it to the registration file. Off only where the agent cannot
    /// write that file for good (a Kubernetes Secret): there, renew by hand.
    pub rotate_certificate: bool,
    /// How often the registration file is checked for a replacement (a manual renewal copied
    /// into place), which the agent then uses without a restart.
    pub registration_check_interval: HumanDuration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            heartbeat_interval: HumanDuration(Duration::from_secs(30)),
            backoff_initial: HumanDuration(Duration::from_secs(1)),
            backoff_max: HumanDuration(Duration::from_secs(60)),
            keepalive_interval: HumanDuration(Duration::from_secs(20)),
            keepalive_timeout: HumanDuration(Duration::from_secs(10)),
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            rotate_certificate: true,
            registration_check_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// `[usage]`: counting the gateway's requests and reporting them to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// How often counted requests are written to `<data_dir>/usage.json`: what a power loss
    /// may cost at most. A clean shutdown writes everything.
    pub flush_interval: HumanDuration,
    /// How often the counts are reported even when nothing changed (they are also reported
    /// soon after each flush that wrote new counts, and on every new connection).
    pub report_interval: HumanDuration,
    /// UDP address of the statsd listener; `None` (the default) runs none.
    pub statsd_listen: Option<SocketAddr>,
    /// Names of the statsd counters that count gateway requests; `*` is one whole
    /// dot-separated segment (see [`crate::usage::statsd::pattern`]).
    pub statsd_patterns: Vec<String>,
    /// Counters matching one of these are not counted even when a pattern matches them.
    pub statsd_exclude: Vec<String>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Self {
            flush_interval: HumanDuration(Duration::from_secs(1)),
            report_interval: HumanDuration(Duration::from_secs(10)),
            statsd_listen: None,
            statsd_patterns: strings(&[
                // Kong's statsd plugin, one counter per request whatever its scope.
                "kong.service.*.request.count",
                "kong.global.unmatched.request.count",
                "kong.node.*.service.*.request.count",
                "kong.node.*.global.unmatched.request.count",
                "kong.request.count",
                // Envoy's statsd sink: requests received, once each.
                "envoy.http.*.downstream_rq_total",
            ]),
            statsd_exclude: strings(&["envoy.http.admin.downstream_rq_total"]),
        }
    }
}

impl SyncConfig {
    /// `servers` as URLs (already checked by [`DpConfig::load`]).
    pub fn server_urls(&self) -> Vec<crate::cluster::ClusterUrl> {
        crate::sync::servers::parse_servers(&self.servers).unwrap_or_default()
    }
}

impl DpConfig {
    /// Loads `path` (defaults when `None`) and checks the values that parse but cannot work.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = licsync_common::config::load(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = licsync_common::config::parse(text, path)?;
        config.validate(Some(path))?;
        Ok(config)
    }

    /// `license.output_path`, or `<data_dir>/license.json`.
    pub fn output_path(&self) -> PathBuf {
        self.license
            .output_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("license.json"))
    }

    /// `<data_dir>/dp-state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("dp-state.json")
    }

    /// `<data_dir>/usage.json`.
    pub fn usage_path(&self) -> PathBuf {
        self.data_dir.join("usage.json")
    }

    fn validate(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.map_or_else(|| PathBuf::from("(built-in defaults)"), Path::to_owned),
            key: key.to_owned(),
            reason,
        };
        let positive = [
            ("sync.heartbeat_interval", self.sync.heartbeat_interval),
            ("sync.backoff_initial", self.sync.backoff_initial),
            ("sync.backoff_max", self.sync.backoff_max),
            ("sync.keepalive_interval", self.sync.keepalive_interval),
            ("sync.keepalive_timeout", self.sync.keepalive_timeout),
            ("sync.connect_timeout", self.sync.connect_timeout),
            (
                "sync.registration_check_interval",
                self.sync.registration_check_interval,
            ),
            ("license.reload_timeout", self.license.reload_timeout),
            ("usage.flush_interval", self.usage.flush_interval),
            ("usage.report_interval", self.usage.report_interval),
        ];
        for (key, value) in positive {
            if value.0.is_zero() {
                return Err(invalid(key, "must be longer than 0s, e.g. \"30s\"".into()));
            }
        }
        crate::sync::servers::parse_servers(&self.sync.servers)
            .map_err(|reason| invalid("sync.servers", reason))?;
        if self.sync.backoff_max < self.sync.backoff_initial {
            return Err(invalid(
                "sync.backoff_max",
                format!(
                    "{} is shorter than sync.backoff_initial ({}); make it at least as long",
                    self.sync.backoff_max, self.sync.backoff_initial
                ),
            ));
        }
        if let Some(program) = self.license.reload_command.first()
            && program.trim().is_empty()
        {
            return Err(invalid(
                "license.reload_command",
                "the first element must name a program, e.g. [\"/usr/bin/systemctl\", \"reload\", \"kong\"]"
                    .into(),
            ));
        }
        if self.license.output_path.as_deref() == Some(Path::new("")) {
            return Err(invalid(
                "license.output_path",
                "must be a file path; leave the key out for <data_dir>/license.json".into(),
            ));
        }
        TrustedKeys::parse(&self.license.trusted_keys)
            .map_err(|e| invalid("license.trusted_keys", e.to_string()))?;
        MetricFilter::parse(&self.usage.statsd_patterns, &[])
            .map_err(|e| invalid("usage.statsd_patterns", e.to_string()))?;
        MetricFilter::parse(&[], &self.usage.statsd_exclude)
            .map_err(|e| invalid("usage.statsd_exclude", e.to_string()))?;
        if self.usage.statsd_listen.is_some() && self.usage.statsd_patterns.is_empty() {
            return Err(invalid(
                "usage.statsd_patterns",
                "is empty, so the statsd listener would count nothing; list the request counters, e.g. [\"kong.service.*.request.count\"], or leave usage.statsd_listen out".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            invalid(
                "log.level",
                format!(
                    "'{}' is not a log filter ({e}); use a level such as \"info\" or directives such as \"info,licsync_dp=debug\"",
                    self.log.level
                ),
            )
        })?;
        Ok(())
    }

    /// The trusted keys from `license.trusted_keys` (already validated by [`DpConfig::load`]).
    pub fn trusted_keys(&self) -> TrustedKeys {
        TrustedKeys::parse(&self.license.trusted_keys).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DpConfig, String> {
        DpConfig::parse(text, Path::new("/etc/licsync/licsync-dp.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn no_file_gives_working_defaults() {
        let config = DpConfig::load(None).unwrap();
        assert_eq!(
            config.output_path(),
            PathBuf::from("./licsync-dp-data/license.json")
        );
        assert_eq!(
            config.state_path(),
            PathBuf::from("./licsync-dp-data/dp-state.json")
        );
        assert_eq!(config.local.listen.to_string(), "127.0.0.1:8007");
        assert_eq!(config.sync.heartbeat_interval.0, Duration::from_secs(30));
        assert_eq!(config.sync.backoff_max.0, Duration::from_secs(60));
        assert_eq!(config.license.reload_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn every_key_parses() {
        let config = parse(
            r#"
            data_dir = "/var/lib/licsync"
            registration_file = "/etc/licsync/registration.yaml"
            [license]
            output_path = "/etc/kong/license.json"
            reload_command = ["/usr/bin/kong", "reload"]
            reload_timeout = "1m"
            trusted_keys = ["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
            [local]
            listen = "0.0.0.0:9007"
            [sync]
            servers = ["https://cp1.example.com:8005", "https://10.0.0.2:8005"]
            heartbeat_interval = "10s"
            backoff_initial = "500ms"
            backoff_max = "2m"
            keepalive_interval = "15s"
            keepalive_timeout = "5s"
            connect_timeout = "3s"
            rotate_certificate = false
            registration_check_interval = "1m"

            [usage]
            flush_interval = "250ms"
            report_interval = "1m"
            statsd_listen = "127.0.0.1:8125"
            statsd_patterns = ["kong.service.*.request.count"]
            statsd_exclude = []
            [log]
            level = "debug"
            format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.output_path(),
            PathBuf::from("/etc/kong/license.json")
        );
        assert_eq!(config.license.reload_command, ["/usr/bin/kong", "reload"]);
        assert_eq!(config.sync.backoff_initial.0, Duration::from_millis(500));
        assert_eq!(
            config.sync.server_urls(),
            [
                crate::cluster::ClusterUrl::parse("https://cp1.example.com:8005").unwrap(),
                crate::cluster::ClusterUrl::parse("https://10.0.0.2:8005").unwrap(),
            ]
        );
        assert!(!config.trusted_keys().is_empty());
        assert!(!config.sync.rotate_certificate);
        assert_eq!(
            config.sync.registration_check_interval.0,
            Duration::from_secs(60)
        );
        assert_eq!(config.usage.flush_interval.0, Duration::from_millis(250));
        assert_eq!(
            config.usage.statsd_listen,
            Some("127.0.0.1:8125".parse().unwrap())
        );
        assert_eq!(
            config.usage_path(),
            PathBuf::from("/var/lib/licsync/usage.json")
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let cases = [
            (
                "[sync]\nheartbeat_intervall = \"5s\"\n",
                "heartbeat_intervall",
            ),
            (
                "[sync]\nbackoff_max = \"soon\"\n",
                "invalid duration 'soon'",
            ),
            ("[sync]\nbackoff_initial = \"2m\"\n", "sync.backoff_max"),
            (
                "[sync]\nheartbeat_interval = \"0s\"\n",
                "sync.heartbeat_interval",
            ),
            (
                "[license]\ntrusted_keys = [\"nope\"]\n",
                "line 2, key 'license.trusted_keys'",
            ),
            (
                "[license]\nreload_command = [\"\"]\n",
                "license.reload_command",
            ),
            (
                "[local]\nlisten = \"localhost\"\n",
                "line 2, key 'local.listen'",
            ),
            ("[log]\nlevel = \"info,[\"\n", "log.level"),
            (
                "[sync]\nservers = [\"https://cp1:8005\",\n  \"http://cp2:8005\"]\n",
                "line 3, key 'sync.servers'",
            ),
            (
                "[sync]\nservers = [\"https://cp1:8005\", \"http://cp2:8005\"]\n",
                "'http://cp2:8005' must start with https://",
            ),
            ("[sync]\nservers = [\"https://cp1\"]\n", "has no port"),
            ("[sync]\nservers = [\"\"]\n", "key 'sync.servers'"),
            ("[sync]\nservers = \"https://cp1:8005\"\n", "sync.servers"),
            (
                "[sync]\nservers = [\"https://cp1:8005\", \"https://cp1:8005\"]\n",
                "entry 2: 'https://cp1:8005' is listed twice",
            ),
            (
                "[sync]\nregistration_check_interval = \"0s\"\n",
                "sync.registration_check_interval",
            ),
            ("[usage]\nflush_intervall = \"1s\"\n", "flush_intervall"),
            ("[usage]\nflush_interval = \"0s\"\n", "usage.flush_interval"),
            (
                "[usage]\nreport_interval = \"0s\"\n",
                "usage.report_interval",
            ),
            (
                "[usage]\nstatsd_listen = \"localhost:8125\"\n",
                "key 'usage.statsd_listen'",
            ),
            (
                "[usage]\nstatsd_patterns = [\"kong.**.count\"]\n",
                "usage.statsd_patterns",
            ),
            (
                "[usage]\nstatsd_exclude = [\"a..b\"]\n",
                "usage.statsd_exclude",
            ),
            (
                "[usage]\nstatsd_listen = \"127.0.0.1:8125\"\nstatsd_patterns = []\n",
                "would count nothing",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains("/etc/licsync/licsync-dp.toml"), "{err}");
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
