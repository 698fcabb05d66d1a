//! The `LicenseSync` client: one long-lived, reconnecting mTLS stream to the control plane.
//!
//! [`SyncClient::load`] reads the saved state and brings the license file in line before any
//! connection, so an agent restarted while the control plane is down serves its last license at
//! once. [`SyncClient::run`] then connects, says `Hello` with what it holds, applies each
//! `Update` ([`apply`]), heartbeats, and on any failure reconnects with [`backoff`] until
//! shutdown, moving between the nodes of the cluster (`sync.servers`, or the addresses of one
//! name) as [`servers`] and the reconnect loop describe. It publishes [`SyncStatus`] and the held state through `tokio::sync::watch`.
//! Beside it, the certificate's [`lifecycle`] (rotation, hot reload of the registration file,
//! expiry notices) publishes the identity to connect with; a new one ends the stream and the
//! client reconnects with it at once.
//!
//! Nothing here is tied to the agent process: the fleet benchmark runs thousands of clients in
//! one process with [`crate::state::MemoryStateStore`] and no license file, and tests point a
//! client at any URL.

pub mod apply;
pub mod backoff;
pub mod lifecycle;
mod output_retry;
mod reconnect;
pub mod servers;
mod session;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use licsync_common::license::TrustedKeys;
use licsync_common::pki::PkiError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::cluster::{BadClusterUrl, ClientIdentity, ClusterUrl, ConnectOptions, TlsSetupError};
use crate::config::SyncConfig;
use crate::output::LicenseFile;
use crate::registration::RegistrationFile;
use crate::state::{ActiveRule, DpState, StateError, StateStore};

pub use apply::Applier;
pub use backoff::Backoff;
pub use lifecycle::{Identity, RegistrationWatch};
pub use servers::Target;
pub use status::SyncStatus;

use lifecycle::Lifecycle;

/// Everything a sync client needs to know, independent of where it came from.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub dataplane_id: String,
    pub cluster_url: ClusterUrl,
    pub ca_certificate_pem: String,
    pub identity: ClientIdentity,
    pub trusted_keys: TrustedKeys,
    /// Also accept the keys the control plane sends with each update (opt-in, and only when no
    /// keys are configured on the agent): `license.follow_control_plane_keys`.
    pub follow_control_plane_keys: bool,
    /// Which held license the gateway is given (`license.prefer_in_force`).
    pub active_rule: ActiveRule,
    /// Sent in `Hello`.
    pub hostname: String,
    /// Sent in `Hello`.
    pub version: String,
    pub heartbeat_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub connect: ConnectOptions,
}

impl SyncSettings {
    /// Settings from a registration file and the `[sync]` table. `trusted_keys` empty means
    /// the keys in the registration file. Following the control plane's keys starts off.
    pub fn new(
        registration: &RegistrationFile,
        sync: &SyncConfig,
        trusted_keys: TrustedKeys,
    ) -> Result<Self, BadClusterUrl> {
        let trusted_keys = if trusted_keys.is_empty() {
            registration.trusted_keys()
        } else {
            trusted_keys
        };
        Ok(Self {
            dataplane_id: registration.dataplane_id.clone(),
            cluster_url: registration.cluster_url()?,
            ca_certificate_pem: registration.ca_certificate.clone(),
            identity: registration.identity(),
            trusted_keys,
            follow_control_plane_keys: false,
            active_rule: ActiveRule::default(),
            hostname: crate::hostname(),
            version: licsync_common::VERSION.to_owned(),
            heartbeat_interval: sync.heartbeat_interval.0,
            backoff_initial: sync.backoff_initial.0,
            backoff_max: sync.backoff_max.0,
            connect: ConnectOptions {
                connect_timeout: sync.connect_timeout.0,
                keepalive_interval: Some(sync.keepalive_interval.0),
                keepalive_timeout: sync.keepalive_timeout.0,
            },
        })
    }
}

/// A sync client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SyncSetupError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("the client certificate cannot be read: {0}; register this data plane again")]
    Certificate(#[from] PkiError),
}

/// Replaces the license keys the agent verifies with. The keys travel with the identity, so a
/// change ends the stream and the agent reconnects: its `Hello` then lists what it holds, and
/// the control plane sends again the licenses it refused under the old keys.
pub struct ConfiguredKeys(watch::Sender<Arc<Identity>>);

impl ConfiguredKeys {
    /// Verifies with `keys` from the next connection on; `false` when they are the keys
    /// already configured (nothing is reconnected then).
    pub fn replace(&self, keys: TrustedKeys) -> bool {
        self.0.send_if_modified(|identity| {
            if identity.trusted_keys.as_ref() == Some(&keys) {
                return false;
            }
            let mut next = (**identity).clone();
            next.trusted_keys = Some(keys);
            *identity = Arc::new(next);
            true
        })
    }
}

/// A reconnecting `LicenseSync` client.
pub struct SyncClient {
    settings: SyncSettings,
    identity: watch::Receiver<Arc<Identity>>,
    /// Moved into the lifecycle task by [`SyncClient::run`].
    identity_tx: Option<watch::Sender<Arc<Identity>>>,
    registration: Option<RegistrationWatch>,
    applier: Applier,
    status: watch::Receiver<SyncStatus>,
    licenses: watch::Receiver<Arc<DpState>>,
    /// The connection of the current stream (`None` while disconnected), for the other calls
    /// that travel on it (usage reports).
    channel: watch::Sender<Option<Channel>>,
    /// `sync.servers`; empty: the registration file's URL.
    servers: watch::Sender<Arc<[ClusterUrl]>>,
    /// The server being used or tried (`None` before the first attempt), for rotations.
    server: watch::Sender<Option<Target>>,
    lookup: servers::Lookup,
    loaded: bool,
}

/// Replaces `sync.servers` while running (SIGHUP). A stream to a server still listed is kept;
/// otherwise the client reconnects to the new list at once.
pub struct ConfiguredServers(watch::Sender<Arc<[ClusterUrl]>>);

impl ConfiguredServers {
    /// Uses `servers` from now on (empty: the registration file's URL); `false` when they are
    /// the servers already in use.
    pub fn replace(&self, servers: Vec<ClusterUrl>) -> bool {
        self.0.send_if_modified(|current| {
            if **current == *servers {
                return false;
            }
            *current = servers.into();
            true
        })
    }
}

impl SyncClient {
    /// Prepares a client; nothing is read or connected yet, and the published status says the
    /// state is not loaded. Without [`SyncClient::watch_registration`] the certificate is
    /// neither rotated nor reloaded (there is no file to keep a new one in).
    pub fn new(
        settings: SyncSettings,
        store: Arc<dyn StateStore>,
        output: Option<LicenseFile>,
    ) -> Result<Self, SyncSetupError> {
        let identity = Identity::from_settings(&settings)?;
        // Fails now rather than at every reconnect when the TLS material is unusable.
        identity.endpoint(settings.connect)?;
        let (status_tx, status) = watch::channel(SyncStatus {
            dataplane_id: identity.dataplane_id.clone(),
            cluster_url: identity.cluster_url.to_string(),
            cert_expires_at: Some(identity.cert.not_after.unix_timestamp()),
            ..SyncStatus::default()
        });
        let (identity_tx, identity_rx) = watch::channel(Arc::new(identity));
        let (state_tx, licenses) = watch::channel(Arc::new(DpState::default()));
        let applier = Applier {
            store,
            output,
            keys: settings.trusted_keys.clone(),
            follow_control_plane_keys: settings.follow_control_plane_keys,
            rule: settings.active_rule,
            state: state_tx,
            status: status_tx,
        };
        Ok(Self {
            settings,
            identity: identity_rx,
            identity_tx: Some(identity_tx),
            registration: None,
            applier,
            status,
            licenses,
            channel: watch::Sender::new(None),
            servers: watch::Sender::new(Arc::from(Vec::new())),
            server: watch::Sender::new(None),
            lookup: servers::system_lookup(),
            loaded: false,
        })
    }

    /// Connects to `servers` (`sync.servers`: the nodes of one cluster, tried in order with
    /// failover) instead of the registration file's URL; empty keeps that URL.
    #[must_use]
    pub fn with_servers(self, servers: Vec<ClusterUrl>) -> Self {
        self.servers.send_replace(servers.into());
        self
    }

    /// Resolves server names with `lookup` instead of the system resolver (tests: a name with
    /// several addresses).
    #[must_use]
    pub fn with_lookup(mut self, lookup: servers::Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// A handle that replaces `sync.servers` while running (SIGHUP).
    pub fn configured_servers(&self) -> ConfiguredServers {
        ConfiguredServers(self.servers.clone())
    }

    /// The server in use or being tried; `None` before the first attempt.
    pub fn server(&self) -> watch::Receiver<Option<Target>> {
        self.server.subscribe()
    }

    /// Keeps the certificate in `watch.path`: rotates it there before it expires (when
    /// `watch.rotate`), and switches to a valid replacement put there by someone else.
    #[must_use]
    pub fn watch_registration(mut self, watch: RegistrationWatch) -> Self {
        self.registration = Some(watch);
        self
    }

    /// Loads the saved state, publishes it and brings the license file in line with it, before
    /// any connection. A license file that cannot be written is logged (and `/health/ready`
    /// says so) but is not fatal: every update tries again.
    pub async fn load(&mut self) -> Result<(), StateError> {
        let state = Arc::new(self.applier.store.load().await?);
        self.applier.state.send_replace(state.clone());
        self.applier.status.send_modify(|status| {
            status.revision = state.revision;
            status.last_sync = state.synced_at;
            status.state_loaded = true;
        });
        if self.settings.trusted_keys.is_empty() {
            tracing::warn!(
                event = "license.no_trusted_keys",
                "No trusted license-signing key is configured or in the registration file: every license will be rejected. Set license.trusted_keys (or license.follow_control_plane_keys = true)."
            );
        }
        // Logged there (`license.write_failed`); retried with backoff once running.
        let _ = self.applier.bring_output_in_line(&state).await;
        self.loaded = true;
        Ok(())
    }

    /// Connection state, revision and certificate expiry, updated as they change.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// The held licenses, updated after each update is persisted.
    pub fn licenses(&self) -> watch::Receiver<Arc<DpState>> {
        self.licenses.clone()
    }

    /// The identity connections are made with, updated by rotation and reload.
    pub fn identity(&self) -> watch::Receiver<Arc<Identity>> {
        self.identity.clone()
    }

    /// A handle that replaces the configured license keys while running (SIGHUP); `None` once
    /// [`SyncClient::run`] started.
    pub fn configured_keys(&self) -> Option<ConfiguredKeys> {
        self.identity_tx.clone().map(ConfiguredKeys)
    }

    /// The connection the current stream runs on, `None` while disconnected: other calls to
    /// the control plane (usage reports) use it, so they follow the client's identity and TLS
    /// set-up and never open a connection of their own.
    pub fn cluster_channel(&self) -> watch::Receiver<Option<Channel>> {
        self.channel.subscribe()
    }

    /// Keeps the stream up until `shutdown` is cancelled. Never gives up: a control plane that
    /// is down, or that refuses us, is retried with backoff (and logged each time, except that
    /// with an expired certificate only the control plane's first refusal is logged: the
    /// expiry schedule reports it once a minute instead).
    /// Meanwhile the certificate's [`lifecycle`] runs beside it.
    ///
    /// Loads the state first when [`SyncClient::load`] was not called, and fails only when the
    /// state cannot be loaded.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StateError> {
        let span = tracing::info_span!(
            "sync",
            dataplane.id = %self.settings.dataplane_id,
        );
        async move {
            if !self.loaded {
                self.load().await?;
            }
            let lifecycle = self.identity_tx.take().map(|identity| Lifecycle {
                identity,
                status: self.applier.status.clone(),
                watch: self.registration.clone(),
                connect: self.settings.connect,
                server: self.server.subscribe(),
            });
            let lifecycle = async {
                if let Some(lifecycle) = lifecycle {
                    lifecycle.run(shutdown.clone()).await;
                }
            };
            let applier = self.applier.clone();
            let output_retry = output_retry::run(
                applier.clone(),
                Backoff::new(self.settings.backoff_initial, self.settings.backoff_max),
                shutdown.clone(),
            );
            let day_change = output_retry::at_day_change(applier.clone(), shutdown.clone());
            tokio::join!(
                lifecycle,
                output_retry,
                day_change,
                self.keep_in_sync(shutdown.clone())
            );
            // No reload command outlives the agent.
            if let Some(output) = &applier.output {
                output.stop_reloads().await;
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}
