//! `licsync-cp` configuration: one struct per component, composed into [`CpConfig`].
//!
//! Every table is `#[serde(default, deny_unknown_fields)]`: no file at all gives a working
//! control plane (embedded sled under `./licsync-data`), and a typo stops start-up with the file,
//! key and reason. `deploy/config/licsync-cp.toml` documents every key and is loaded by a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpConfig {
    /// Where the database, the CA and the bootstrap admin token live.
    pub data_dir: PathBuf,
    pub admin: AdminConfig,
    pub cluster: ClusterConfig,
    pub pki: PkiConfig,
    pub licenses: LicensesConfig,
    pub storage: StorageConfig,
    pub audit: AuditConfig,
    pub status: StatusConfig,
    pub log: LogConfig,
}

/// `[audit]`: how long the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Records older than this are removed (checked hourly).
    pub retention: HumanDuration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: HumanDuration(Duration::from_secs(90 * 86_400)),
        }
    }
}

impl Default for CpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./licsync-data"),
            admin: AdminConfig::default(),
            cluster: ClusterConfig::default(),
            pki: PkiConfig::default(),
            licenses: LicensesConfig::default(),
            storage: StorageConfig::default(),
            audit: AuditConfig::default(),
            status: StatusConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin HTTP API address. Keep it on loopback or behind a proxy that terminates TLS.
    pub listen: SocketAddr,
    /// How long a request head may take from its first byte (else 408).
    pub header_read_timeout: HumanDuration,
    /// How long a connection may sit between requests (or before its first) before it is closed.
    pub idle_timeout: HumanDuration,
    /// How long a request body may take after its head (else 408).
    pub body_read_timeout: HumanDuration,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// PEM certificate chain (leaf first) to serve the Admin API over HTTPS; with
    /// `tls_key_file`. Unset: plain HTTP (keep it on loopback then).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        use licsync_common::http_server as http;
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            header_read_timeout: HumanDuration(http::DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(http::DEFAULT_IDLE_TIMEOUT),
            body_read_timeout: HumanDuration(http::DEFAULT_BODY_READ_TIMEOUT),
            max_connections: http::DEFAULT_MAX_CONNECTIONS,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// The unauthenticated listener a monitoring system scrapes (`GET /metrics`) and an
/// orchestrator probes (`/health/*`), so neither needs the admin token. It serves with the
/// `[admin]` limits (connections, header, idle and body timeouts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Status HTTP address. What it serves (fleet size, license ids and expiry dates) is
    /// operational, not secret, but keep it where only your monitoring reaches it.
    pub listen: SocketAddr,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8100)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster gRPC + mTLS address data planes connect to.
    pub listen: SocketAddr,
    /// The URL data planes are told to use; defaults to `https://<first server name>:<port>`.
    pub advertised_url: Option<String>,
    /// DNS names and IP addresses in the cluster server certificate.
    pub server_names: Vec<String>,
    /// A data plane silent this long is sent an HTTP/2 keepalive ping.
    pub keepalive_interval: HumanDuration,
    /// How long that ping may stay unanswered before the connection is dropped; an answer
    /// already received but not yet read by a busy node counts as an answer.
    pub keepalive_timeout: HumanDuration,
    /// How long an update may stay unanswered (no Ack or Nack) before the stream is ended with
    /// `DEADLINE_EXCEEDED`; the data plane reconnects and its Hello resynchronises it.
    pub ack_timeout: HumanDuration,
    /// A data plane not connected and not heard from for longer than this (or, never
    /// connected, registered longer ago) is removed from the registry (Kong's
    /// `cluster_data_plane_purge_delay`).
    pub dataplane_purge_delay: HumanDuration,
    /// How long a new connection may take to complete its TLS handshake (from accept), and
    /// then again to start its first gRPC call; a slow or silent client is cut off after it.
    pub handshake_timeout: HumanDuration,
    /// A connection with no gRPC call or stream in progress for this long is closed. A
    /// connected data plane always holds its `Sync` stream, so only leftovers and abuse idle.
    pub idle_timeout: HumanDuration,
    /// Most connections open at once from one source address (an IPv6 source is its /64);
    /// more are closed at once. Data planes behind one NAT share an address: raise it above
    /// the largest such group. 0 turns the limit off.
    pub max_connections_per_ip: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8005)),
            advertised_url: None,
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            keepalive_interval: HumanDuration(Duration::from_secs(20)),
            keepalive_timeout: HumanDuration(Duration::from_secs(20)),
            ack_timeout: HumanDuration(Duration::from_secs(60)),
            dataplane_purge_delay: HumanDuration(Duration::from_secs(14 * 86_400)),
            handshake_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            max_connections_per_ip: 1000,
        }
    }
}

impl ClusterConfig {
    /// The URL handed to data planes at registration.
    pub fn cluster_url(&self) -> String {
        self.advertised_url.clone().unwrap_or_else(|| {
            let host = self
                .server_names
                .first()
                .map(String::as_str)
                .unwrap_or("localhost");
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            format!("https://{host}:{}", self.listen.port())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkiConfig {
    /// Lifetime of each data-plane client certificate.
    pub dataplane_cert_ttl: HumanDuration,
    /// Lifetime of the cluster server certificate; it is replaced, while running, once two
    /// thirds of it have passed.
    pub server_cert_ttl: HumanDuration,
    /// Lifetime of the cluster CA created at first start.
    pub ca_ttl: HumanDuration,
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            dataplane_cert_ttl: HumanDuration(Duration::from_secs(90 * 86_400)),
            server_cert_ttl: HumanDuration(Duration::from_secs(365 * 86_400)),
            ca_ttl: HumanDuration(Duration::from_secs(10 * 365 * 86_400)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicensesConfig {
    /// Standard base64 Ed25519 public keys; a license signed by any of them is accepted.
    #[serde(deserialize_with = "licsync_common::config::trusted_keys")]
    pub trusted_keys: Vec<String>,
    /// Refuse a registration that would make the registered data planes exceed the active
    /// license's `dataplanes`; off, exceeding it is only warned about and reported.
    pub enforce_dataplane_limit: bool,
    /// A directory of signed license documents (`*.json`, e.g. a mounted ConfigMap) imported,
    /// updated and removed like Admin API writes ([`crate::license_dir`]). Unset: none.
    pub watch_dir: Option<PathBuf>,
    /// How often `watch_dir` is scanned.
    pub watch_interval: HumanDuration,
}

impl Default for LicensesConfig {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            enforce_dataplane_limit: false,
            watch_dir: None,
            watch_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Used when `backend = "postgres"`.
    pub postgres: PostgresConfig,
    /// Used when `backend = "sled"`.
    pub sled: SledConfig,
    /// The storage key (32 random bytes, raw or base64, mode 0600; `licsync-cp storage keygen`
    /// writes one) under which a shared database holds the cluster's secrets. Required with
    /// `backend = "postgres"`, where every node must read the same key; unused otherwise (the
    /// secrets of an embedded store stay in `<data_dir>/pki`).
    pub encryption_key_file: Option<PathBuf>,
}

/// The embedded database's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SledConfig {
    /// Bytes sled may keep in its page cache. Unset: sled's own default (1 GiB), which a
    /// container with a smaller memory limit cannot afford (sled caps it only under cgroup v1),
    /// so the Helm chart sets it below the pod's memory limit.
    pub cache_capacity: Option<u64>,
}

/// The smallest `storage.sled.cache_capacity` accepted: below it sled rereads every page from
/// disk, and a value this small is far more likely a unit mistake (KiB or MiB for bytes).
pub const MIN_SLED_CACHE_CAPACITY: u64 = 1 << 20;

/// The config key of the storage key file, named in every error about it.
pub const ENCRYPTION_KEY_FILE_KEY: &str = "storage.encryption_key_file";

/// The PostgreSQL database several control-plane nodes share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://USER@HOST:PORT/DB`; required with `backend = "postgres"`.
    pub url: Option<String>,
    /// A file holding the password (trailing newline ignored), when neither the URL nor
    /// `LICSYNC_CP_POSTGRES_PASSWORD` gives one.
    pub password_file: Option<PathBuf>,
    /// Connections this node keeps open to the database at most.
    pub pool_size: usize,
    /// The CA certificate(s) (PEM) that signed the server's certificate: set, connections use
    /// TLS and verify the server; unset, plain TCP (and a URL with `sslmode=require` is refused).
    pub ca_file: Option<PathBuf>,
    /// How often a node reads what other nodes changed even without a notification (so a
    /// dropped `LISTEN` connection loses nothing), checks its streams against revocations and
    /// heartbeats its row in the nodes registry. A node not seen for three intervals is shown
    /// as gone.
    pub poll_interval: HumanDuration,
}

/// `storage.postgres.poll_interval` by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            pool_size: crate::store::postgres::DEFAULT_POOL_SIZE,
            ca_file: None,
            poll_interval: HumanDuration(DEFAULT_POLL_INTERVAL),
        }
    }
}

/// The environment variable the PostgreSQL password may come from (kept out of files and
/// command lines).
pub const POSTGRES_PASSWORD_ENV: &str = "LICSYNC_CP_POSTGRES_PASSWORD";

/// The most connections one node may ask for: PostgreSQL's default `max_connections` is 100.
pub const MAX_POOL_SIZE: usize = 1000;

impl PostgresConfig {
    /// The password to connect with: from `LICSYNC_CP_POSTGRES_PASSWORD` when set and not
    /// empty, else from `password_file`, else none (the URL's, or none at all).
    pub fn password(&self) -> Result<Option<String>, Invalid> {
        if let Ok(password) = std::env::var(POSTGRES_PASSWORD_ENV)
            && !password.is_empty()
        {
            return Ok(Some(password));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let invalid = |reason: String| Invalid {
            key: "storage.postgres.password_file",
            reason,
        };
        let text = read_text(path, 4096).map_err(invalid)?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            return Err(invalid(format!("{} is empty", path.display())));
        }
        Ok(Some(password.to_owned()))
    }

    /// The contents of `ca_file`, when set.
    pub fn ca_pem(&self) -> Result<Option<String>, Invalid> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        read_text(path, 1 << 20)
            .map(Some)
            .map_err(|reason| Invalid {
                key: "storage.postgres.ca_file",
                reason,
            })
    }
}

/// The UTF-8 text of `path`, at most `limit` bytes, or why not.
fn read_text(path: &std::path::Path, limit: u64) -> Result<String, String> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| {
            std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut text)
        })
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("{} is over {limit} bytes", path.display()));
    }
    String::from_utf8(text).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Embedded sled database under `<data_dir>/cp.sled`.
    #[default]
    Sled,
    /// Volatile; for tests and benchmarks only.
    Memory,
    /// A PostgreSQL database (`storage.postgres`), which several nodes can share.
    Postgres,
}

/// A configuration that parsed but cannot work.
#[derive(Debug, thiserror::Error)]
#[error("key '{key}': {reason}")]
pub struct Invalid {
    pub key: &'static str,
    pub reason: String,
}

impl CpConfig {
    /// Checks what serde cannot: relations between keys and value ranges.
    pub fn validate(&self) -> Result<(), Invalid> {
        licsync_common::license::TrustedKeys::parse(&self.licenses.trusted_keys).map_err(|e| {
            Invalid {
                key: "licenses.trusted_keys",
                reason: e.to_string(),
            }
        })?;
        if self.cluster.server_names.is_empty() {
            return Err(Invalid {
                key: "cluster.server_names",
                reason: "list at least one DNS name or IP address data planes use to reach the cluster listener".into(),
            });
        }
        for (key, value) in [
            ("pki.dataplane_cert_ttl", self.pki.dataplane_cert_ttl.0),
            ("pki.server_cert_ttl", self.pki.server_cert_ttl.0),
            ("cluster.ack_timeout", self.cluster.ack_timeout.0),
            (
                "cluster.keepalive_interval",
                self.cluster.keepalive_interval.0,
            ),
            (
                "cluster.keepalive_timeout",
                self.cluster.keepalive_timeout.0,
            ),
            ("audit.retention", self.audit.retention.0),
            (
                "cluster.dataplane_purge_delay",
                self.cluster.dataplane_purge_delay.0,
            ),
        ] {
            if value < Duration::from_secs(1) {
                return Err(Invalid {
                    key,
                    reason: "must be at least 1s".into(),
                });
            }
        }
        for (key, value) in [
            (
                "cluster.handshake_timeout",
                self.cluster.handshake_timeout.0,
            ),
            ("cluster.idle_timeout", self.cluster.idle_timeout.0),
            ("licenses.watch_interval", self.licenses.watch_interval.0),
        ] {
            if value < Duration::from_millis(100) {
                return Err(Invalid {
                    key,
                    reason: "must be at least 100ms".into(),
                });
            }
        }
        self.storage.validate()?;
        match (&self.admin.tls_cert_file, &self.admin.tls_key_file) {
            (Some(_), None) => {
                return Err(Invalid {
                    key: "admin.tls_key_file",
                    reason:
                        "required with admin.tls_cert_file (the certificate's private key, PEM)"
                            .into(),
                });
            }
            (None, Some(_)) => {
                return Err(Invalid {
                    key: "admin.tls_cert_file",
                    reason: "required with admin.tls_key_file (the certificate chain, PEM)".into(),
                });
            }
            _ => {}
        }
        if let Some(url) = &self.cluster.advertised_url
            && !url.starts_with("https://")
        {
            return Err(Invalid {
                key: "cluster.advertised_url",
                reason: format!("'{url}' must start with https://"),
            });
        }
        Ok(())
    }
}

impl StorageConfig {
    /// Reads `encryption_key_file`: its errors name the key, the file and what to do.
    pub fn storage_key(&self) -> Result<crate::store::storage_key::StorageKey, Invalid> {
        let path = self.encryption_key_file.as_deref().ok_or_else(|| Invalid {
            key: ENCRYPTION_KEY_FILE_KEY,
            reason: "required with storage.backend = \"postgres\": create one with \
                     `licsync-cp storage keygen --output FILE` and give every node the same file"
                .into(),
        })?;
        crate::store::storage_key::StorageKey::load(path).map_err(|e| Invalid {
            key: ENCRYPTION_KEY_FILE_KEY,
            reason: e.to_string(),
        })
    }

    fn validate(&self) -> Result<(), Invalid> {
        if let Some(bytes) = self.sled.cache_capacity
            && bytes < MIN_SLED_CACHE_CAPACITY
        {
            return Err(Invalid {
                key: "storage.sled.cache_capacity",
                reason: format!(
                    "{bytes} bytes is below the minimum of {MIN_SLED_CACHE_CAPACITY} (1 MiB); \
                     the value is in bytes, e.g. 268435456 for 256 MiB"
                ),
            });
        }
        let pg = &self.postgres;
        if !(1..=MAX_POOL_SIZE).contains(&pg.pool_size) {
            return Err(Invalid {
                key: "storage.postgres.pool_size",
                reason: format!("{} is not between 1 and {MAX_POOL_SIZE}", pg.pool_size),
            });
        }
        let poll = pg.poll_interval.0;
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&poll) {
            return Err(Invalid {
                key: "storage.postgres.poll_interval",
                reason: format!("{poll:?} is not between 100ms and 1h"),
            });
        }
        if let Some(url) = &pg.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(Invalid {
                key: "storage.postgres.url",
                reason: "must start with postgres:// (postgres://USER@HOST:PORT/DB)".into(),
            });
        }
        if self.backend == StorageBackend::Postgres && pg.url.is_none() {
            return Err(Invalid {
                key: "storage.postgres.url",
                reason: "required with storage.backend = \"postgres\" \
                         (postgres://USER@HOST:PORT/DB)"
                    .into(),
            });
        }
        if self.backend == StorageBackend::Postgres && self.encryption_key_file.is_none() {
            return Err(Invalid {
                key: ENCRYPTION_KEY_FILE_KEY,
                reason: "required with storage.backend = \"postgres\": every node reads the \
                         cluster's secrets from the database with this key (create one with \
                         `licsync-cp storage keygen --output FILE`)"
                    .into(),
            });
        }
        Ok(())
    }
}
