//! The client certificate's life while the agent runs, beside the sync stream: rotation before
//! expiry ([`rotation`]), a registration file replaced on disk ([`reload`]) and the operator's
//! expiry notices ([`expiry`]).
//!
//! [`Lifecycle`] owns the agent's current [`Identity`] and publishes it through a
//! `tokio::sync::watch`; the sync loop ([`super::SyncClient`]) builds its connection from it
//! and, when it changes, ends its stream and reconnects with the new one. The license is
//! neither lost nor rewritten by that: the new stream's `Hello` says what the agent holds, and
//! the control plane sends nothing it already has.
//!
//! Order that keeps every crash harmless: a rotated certificate is saved to the registration
//! file (atomically, mode 0600) before it is used, and the control plane accepts the previous
//! certificate until the new one is first used. A file that cannot be saved is not used.
//!
//! Rotations go to the node the sync client uses at the time ([`super::servers`]): every node
//! of one cluster shares its CA, so the certificate and the CA pin work at each.
//!
//! Without a registration file (the fleet benchmark's in-memory clients) nothing is rotated
//! or reloaded: a certificate that could not be saved would be lost at the next start. Only
//! the expiry notices run.

pub mod expiry;
pub mod reload;
pub mod rotation;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::license::TrustedKeys;
use licsync_common::pki::{CertInfo, PkiError};
use licsync_common::time_fmt;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::servers::Target;
use super::{Backoff, SyncSettings, SyncStatus};
use crate::cluster::{self, ClientIdentity, ClusterUrl, ConnectOptions, TlsSetupError};
use crate::registration::RegistrationFile;
use expiry::ExpiryLog;
use reload::{Check, WatchedFile};

/// First delay before a failed rotation is tried again; doubles up to [`ROTATION_RETRY_MAX`].
const ROTATION_RETRY_INITIAL: Duration = Duration::from_secs(2);
/// Longest delay between rotation attempts (but see [`rotation::UNSUPPORTED_RETRY`]).
const ROTATION_RETRY_MAX: Duration = Duration::from_secs(300);

/// Who the agent is to the control plane right now: everything a connection is built from.
#[derive(Clone)]
pub struct Identity {
    pub dataplane_id: String,
    pub cluster_url: ClusterUrl,
    pub ca_certificate_pem: String,
    pub client: ClientIdentity,
    pub cert: CertInfo,
    /// When the certificate's lifetime is taken to start, for scheduling its rotation.
    pub lifetime_start: OffsetDateTime,
    /// The registration file's license keys, when they are the ones to verify with (no keys
    /// configured); `None` keeps the keys the client started with.
    pub trusted_keys: Option<TrustedKeys>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("dataplane_id", &self.dataplane_id)
            .field("cluster_url", &self.cluster_url)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity a client starts with.
    pub fn from_settings(settings: &SyncSettings) -> Result<Self, PkiError> {
        let cert = CertInfo::from_pem(&settings.identity.certificate_pem)?;
        Ok(Self {
            dataplane_id: settings.dataplane_id.clone(),
            cluster_url: settings.cluster_url.clone(),
            ca_certificate_pem: settings.ca_certificate_pem.clone(),
            client: settings.identity.clone(),
            lifetime_start: cert.not_before,
            cert,
            trusted_keys: None,
        })
    }

    /// The identity a registration file describes.
    pub fn from_file(file: &RegistrationFile, keys_from_file: bool) -> Result<Self, String> {
        let cert = file.certificate_info().map_err(|e| e.to_string())?;
        Ok(Self {
            dataplane_id: file.dataplane_id.clone(),
            cluster_url: file.cluster_url().map_err(|e| e.to_string())?,
            ca_certificate_pem: file.ca_certificate.clone(),
            client: file.identity(),
            lifetime_start: file.lifetime_start(&cert),
            cert,
            trusted_keys: keys_from_file.then(|| file.trusted_keys()),
        })
    }

    /// A connection to the control plane as this identity.
    pub fn endpoint(&self, connect: ConnectOptions) -> Result<Endpoint, TlsSetupError> {
        cluster::endpoint(
            &self.cluster_url,
            &self.ca_certificate_pem,
            Some(&self.client),
            connect,
        )
    }

    /// A connection as this identity to `target`, one node of the cluster: the certificate
    /// and the CA pin are the same for every node (they share one cluster CA).
    pub fn endpoint_to(
        &self,
        target: &Target,
        connect: ConnectOptions,
    ) -> Result<Endpoint, TlsSetupError> {
        cluster::endpoint_at(
            &target.url,
            target.addr,
            &self.ca_certificate_pem,
            Some(&self.client),
            connect,
        )
    }

    /// Whether `other` would connect and verify exactly as this one does. Keys are compared
    /// only when both name theirs: a client starts with the keys it was given, which came
    /// from the same file.
    fn same_as(&self, other: &Self) -> bool {
        let same_keys = match (&self.trusted_keys, &other.trusted_keys) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        };
        self.dataplane_id == other.dataplane_id
            && self.cluster_url == other.cluster_url
            && self.ca_certificate_pem == other.ca_certificate_pem
            && self.client.certificate_pem == other.client.certificate_pem
            && self.client.private_key_pem == other.client.private_key_pem
            && same_keys
    }
}

/// Where the agent's registration lives, so it can rotate into it and reload from it.
#[derive(Debug, Clone)]
pub struct RegistrationWatch {
    pub path: PathBuf,
    /// How often the file is checked for a replacement (`sync.registration_check_interval`).
    pub check_interval: Duration,
    /// Rotate the certificate automatically (`sync.rotate_certificate`).
    pub rotate: bool,
    /// No license keys are configured: verify with the registration file's, and with a
    /// reloaded file's.
    pub keys_from_file: bool,
}

/// Why the identity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Rotated,
    Reloaded,
}

/// The task that owns the identity. See the module documentation.
pub(super) struct Lifecycle {
    pub identity: watch::Sender<Arc<Identity>>,
    pub status: watch::Sender<SyncStatus>,
    pub watch: Option<RegistrationWatch>,
    pub connect: ConnectOptions,
    /// The server the sync client uses now (`None` before its first attempt): rotations go
    /// there.
    pub server: watch::Receiver<Option<Target>>,
}

/// What the lifecycle task keeps between wake-ups.
struct State {
    file: Option<WatchedFile>,
    /// The registration file in use, which a rotation rewrites; `None` when there is no file
    /// or it could not be read at start.
    current: Option<RegistrationFile>,
    expiry: ExpiryLog,
    next_expiry_check: Instant,
    rotation_at: Option<OffsetDateTime>,
    rotation_backoff: Backoff,
}

impl Lifecycle {
    /// Runs until `shutdown` is cancelled.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut state = State {
            file: self
                .watch
                .as_ref()
                .map(|watch| WatchedFile::new(watch.path.clone())),
            current: None,
            expiry: ExpiryLog::default(),
            next_expiry_check: Instant::now(),
            rotation_at: None,
            rotation_backoff: Backoff::new(ROTATION_RETRY_INITIAL, ROTATION_RETRY_MAX),
        };
        self.adopt_file(&mut state);
        state.rotation_at = self.rotation_time(&state);
        let check_every = self
            .watch
            .as_ref()
            .map_or(Duration::from_secs(3600), |watch| watch.check_interval);
        let mut poll = tokio::time::interval_at(Instant::now() + check_every, check_every);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let rotation_in = state.rotation_at.map(until);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(state.next_expiry_check) => self.expiry_check(&mut state),
                () = tokio::time::sleep(rotation_in.unwrap_or_default()), if rotation_in.is_some() => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.rotate(&mut state) => {}
                    }
                }
                _ = poll.tick(), if state.file.is_some() => self.check_file(&mut state).await,
            }
        }
    }

    /// Reads the registration file as it is at start: the rotation's starting point. If it
    /// no longer matches what the client was started with, it is switched to.
    fn adopt_file(&self, state: &mut State) {
        let Some(file) = state.file.as_mut() else {
            return;
        };
        let path = file.path().to_owned();
        let parsed = RegistrationFile::read_text(&path)
            .and_then(|text| RegistrationFile::parse(&text, &path).map(|f| (text, f)));
        match parsed {
            Ok((text, registration)) => {
                file.remember(&text);
                self.adopt(state, registration, Cause::Reloaded);
            }
            Err(error) => tracing::error!(
                event = "registration.invalid",
                path = %path.display(),
                %error,
                "The registration file cannot be read; the certificate will not be rotated until a valid one is put in place."
            ),
        }
    }

    fn expiry_check(&self, state: &mut State) {
        let identity = self.identity.borrow().clone();
        let now = OffsetDateTime::now_utc();
        let path = self.watch.as_ref().map(|watch| watch.path.as_path());
        state
            .expiry
            .tick(now, identity.cert.not_after, path, state.rotation_at);
        state.next_expiry_check = Instant::now() + expiry::next_check(now, identity.cert.not_after);
    }

    /// When the current certificate should be rotated; `None` when rotation is off, there is
    /// no registration file to save into, or the certificate has already expired (the control
    /// plane refuses it, so only a manual renewal helps).
    fn rotation_time(&self, state: &State) -> Option<OffsetDateTime> {
        let watch = self.watch.as_ref()?;
        if !watch.rotate || state.current.is_none() {
            return None;
        }
        let identity = self.identity.borrow().clone();
        if identity.cert.not_after <= OffsetDateTime::now_utc() {
            return None;
        }
        Some(rotation::due_at(
            identity.lifetime_start,
            identity.cert.not_after,
            fastrand::f64(),
        ))
    }

    async fn rotate(&self, state: &mut State) {
        let identity = self.identity.borrow().clone();
        let (Some(current), Some(watch)) = (state.current.clone(), self.watch.as_ref()) else {
            state.rotation_at = None;
            return;
        };
        if identity.cert.not_after <= OffsetDateTime::now_utc() {
            state.rotation_at = None;
            return;
        }
        tracing::info!(
            event = "cert.rotating",
            cert_expires_at = %time_fmt::rfc3339(identity.cert.not_after),
            "Rotating the client certificate."
        );
        let server = self
            .server
            .borrow()
            .clone()
            .unwrap_or_else(|| Target::named(identity.cluster_url.clone()));
        let saved = match rotation::rotate(&identity, &current, &server, self.connect).await {
            Ok(renewed) => renewed
                .save(&watch.path)
                .map(|text| (renewed, text))
                .map_err(|error| error.to_string()),
            Err(error) => {
                let delay = error.retry_after(
                    state
                        .rotation_backoff
                        .next_delay()
                        .max(ROTATION_RETRY_INITIAL),
                );
                self.rotation_failed(state, &error.to_string(), delay);
                return;
            }
        };
        match saved {
            Ok((renewed, text)) => {
                if let Some(file) = state.file.as_mut() {
                    file.remember(&text);
                }
                self.switch(state, renewed, Cause::Rotated);
            }
            Err(error) => {
                // Not used: after a restart the old file would be read, and the control plane
                // refuses the old certificate once the new one has been used.
                let delay = state
                    .rotation_backoff
                    .next_delay()
                    .max(ROTATION_RETRY_INITIAL);
                self.rotation_failed(
                    state,
                    &format!("{error}; the new certificate is not used until it can be saved"),
                    delay,
                );
            }
        }
    }

    fn rotation_failed(&self, state: &mut State, error: &str, delay: Duration) {
        let retry_at = OffsetDateTime::now_utc() + delay;
        state.rotation_at = Some(retry_at);
        tracing::warn!(
            event = "cert.rotation_failed",
            %error,
            retry_at = %time_fmt::rfc3339(retry_at),
            "Cannot rotate the client certificate; the current one stays in use and rotation is retried later."
        );
    }

    async fn check_file(&self, state: &mut State) {
        let Some(file) = state.file.as_mut() else {
            return;
        };
        match file.check(OffsetDateTime::now_utc()).await {
            Check::Unchanged => {}
            Check::Unusable(reason) => tracing::error!(
                event = "registration.invalid",
                path = %file.path().display(),
                %reason,
                "The registration file was replaced with one that cannot be used; keeping the current certificate."
            ),
            Check::Replaced(registration) => self.adopt(state, *registration, Cause::Reloaded),
        }
    }

    /// Takes `registration` as the file in use, switching to it when it connects differently.
    fn adopt(&self, state: &mut State, registration: RegistrationFile, cause: Cause) {
        let keys_from_file = self.watch.as_ref().is_some_and(|w| w.keys_from_file);
        let Ok(identity) = Identity::from_file(&registration, keys_from_file) else {
            // `RegistrationFile::parse` checked all of it.
            return;
        };
        if identity.same_as(&self.identity.borrow()) {
            // Nothing to reconnect for, but the file knows more than the client was started
            // with (when the lifetime started, its keys): keep that, quietly.
            self.identity.send_if_modified(|current| {
                *current = Arc::new(identity);
                false
            });
            state.current = Some(registration);
            state.rotation_at = self.rotation_time(state);
            return;
        }
        self.switch(state, registration, cause);
    }

    /// Publishes the identity of `registration`, which the sync loop reconnects with.
    fn switch(&self, state: &mut State, registration: RegistrationFile, cause: Cause) {
        let keys_from_file = self.watch.as_ref().is_some_and(|w| w.keys_from_file);
        let identity = match Identity::from_file(&registration, keys_from_file) {
            Ok(identity) => identity,
            Err(reason) => {
                tracing::error!(event = "registration.invalid", %reason, "The new registration cannot be used; keeping the current certificate.");
                return;
            }
        };
        let previous = self.identity.send_replace(Arc::new(identity.clone()));
        self.status.send_modify(|status| {
            status.cert_expires_at = Some(identity.cert.not_after.unix_timestamp());
            status.dataplane_id.clone_from(&identity.dataplane_id);
            status.cluster_url = identity.cluster_url.to_string();
        });
        state.current = Some(registration);
        state.expiry.reset();
        state.next_expiry_check = Instant::now();
        state.rotation_backoff.reset();
        state.rotation_at = self.rotation_time(state);
        let cert_expires_at = time_fmt::rfc3339(identity.cert.not_after);
        match cause {
            Cause::Rotated => tracing::info!(
                event = "cert.rotated",
                dataplane.id = %identity.dataplane_id,
                cert_expires_at = %cert_expires_at,
                serial = %identity.cert.serial,
                previous_serial = %previous.cert.serial,
                "Client certificate rotated and saved; reconnecting with it."
            ),
            Cause::Reloaded => tracing::info!(
                event = "registration.reloaded",
                path = %self.watch.as_ref().map(|w| w.path.display().to_string()).unwrap_or_default(),
                dataplane.id = %identity.dataplane_id,
                previous_dataplane_id = %previous.dataplane_id,
                cluster.url = %identity.cluster_url,
                cert_expires_at = %cert_expires_at,
                serial = %identity.cert.serial,
                "The registration file was replaced; reconnecting with it, no restart needed."
            ),
        }
    }
}

/// How long from now until `at` (zero when past).
fn until(at: OffsetDateTime) -> Duration {
    Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
}

/// Resolves when the identity changes; never, once nothing can change it any more.
pub(super) async fn changed(identity: &mut watch::Receiver<Arc<Identity>>) {
    if identity.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
