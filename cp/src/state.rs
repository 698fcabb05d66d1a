//! The running control plane's shared context, handed to the Admin API and the cluster services.
//!
//! Its fields are private: an adapter reaches the domain services it needs through accessors
//! ([`ControlPlane::principals`], [`ControlPlane::registration_tokens`], [`ControlPlane::licenses`],
//! ...), never storage itself. Only [`ControlPlane::new`] sees the [`Store`]; it hands it to the
//! services that own the rules over it, so a second storage backend changes one layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::audit::Audit;
use crate::config::CpConfig;
use crate::dataplanes::DataPlaneView;
use crate::dataplanes::DataPlanes;
use crate::entitlement::Entitlement;
use crate::ha::nodes::Nodes;
use crate::licenses::Licenses;
use crate::metrics::CpMetrics;
use crate::principals::Principals;
use crate::registration_tokens::RegistrationTokens;
use crate::store::{StorageInfo, Store, StoreResult};
use crate::ui::session::SessionKey;
use crate::usage::{ReportKey, UsageLedger};
use uuid::Uuid;

/// Everything a request handler or a data-plane stream needs.
pub struct ControlPlane {
    config: CpConfig,
    /// What `/status` and the start log say about storage (the store itself stays inside the
    /// services).
    storage: StorageInfo,
    licenses: Arc<Licenses>,
    dataplanes: Arc<DataPlanes>,
    principals: Principals,
    registration_tokens: RegistrationTokens,
    cluster: ClusterIdentity,
    started_at: i64,
    usage: UsageLedger,
    audit: Audit,
    entitlement: Entitlement,
    report_key: Option<Arc<ReportKey>>,
    nodes: Nodes,
    metrics: CpMetrics,
    ready: AtomicBool,
    storage_health: StorageHealth,
    session_key: Option<SessionKey>,
}

/// Whether storage answered the last check ([`crate::lifecycle::storage_watch`]), and why not.
#[derive(Default)]
pub struct StorageHealth {
    /// `Some(reason)` while storage does not answer.
    unavailable: std::sync::Mutex<Option<String>>,
}

impl StorageHealth {
    /// Records that storage answers; `true` when it did not before.
    pub fn set_available(&self) -> bool {
        self.lock().take().is_some()
    }

    /// Records that storage does not answer, and why; `true` when it did before.
    pub fn set_unavailable(&self, reason: String) -> bool {
        self.lock().replace(reason).is_none()
    }

    /// Why storage does not answer, or `None` when it does.
    pub fn unavailable(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A poisoned lock still holds a whole `Option`.
        self.unavailable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a data plane is told to trust and where to connect.
struct ClusterIdentity {
    ca_fingerprint: String,
    ca_cert_pem: String,
    url: String,
}

impl ControlPlane {
    pub fn new(
        config: CpConfig,
        store: Arc<dyn Store>,
        licenses: Arc<Licenses>,
        ca_cert_pem: String,
        ca_fingerprint: String,
    ) -> Self {
        let dataplanes = Arc::new(DataPlanes::new(store.clone()));
        let started_at = licsync_common::unix_now();
        let nodes = Nodes::new(
            store.clone(),
            dataplanes.clone(),
            config.cluster.cluster_url(),
            started_at,
            config.storage.postgres.poll_interval.0,
        );
        Self {
            cluster: ClusterIdentity {
                ca_fingerprint,
                ca_cert_pem,
                url: config.cluster.cluster_url(),
            },
            storage: store.info(),
            principals: Principals::new(store.clone()),
            registration_tokens: RegistrationTokens::new(store.clone()),
            audit: Audit::new(store.clone()),
            usage: UsageLedger::new(store),
            entitlement: Entitlement::new(
                config.licenses.enforce_dataplane_limit,
                dataplanes.clone(),
                licenses.clone(),
            ),
            dataplanes,
            report_key: None,
            config,
            licenses,
            started_at,
            nodes,
            metrics: CpMetrics::default(),
            ready: AtomicBool::new(false),
            storage_health: StorageHealth::default(),
            session_key: None,
        }
    }

    /// Sets the key status-page sessions are signed with (a cluster secret, the same at every
    /// node: [`crate::cluster::secrets`]).
    pub fn with_session_key(mut self, key: SessionKey) -> Self {
        self.session_key = Some(key);
        self
    }

    /// The key status-page sessions are signed with; `None` until
    /// [`ControlPlane::with_session_key`] (then nobody can sign in to the status page).
    pub fn session_key(&self) -> Option<&SessionKey> {
        self.session_key.as_ref()
    }

    /// Every registered data plane, with the node holding its stream (the whole cluster's,
    /// from the nodes registry) and its health as of `now`: what `GET /clustering/data-planes`
    /// and the status page list.
    pub async fn fleet(&self, now: i64) -> StoreResult<Vec<DataPlaneView>> {
        let holders = self.nodes.stream_holders(now).await?;
        self.dataplanes.list_held(now, &holders).await
    }

    /// One registered data plane as [`ControlPlane::fleet`] shows it.
    pub async fn fleet_member(&self, id: Uuid, now: i64) -> StoreResult<Option<DataPlaneView>> {
        let holders = self.nodes.stream_holders(now).await?;
        self.dataplanes.get(id, now, &holders).await
    }

    /// Sets the key that signs usage reports (`server::run` loads it from `<data_dir>/pki`).
    pub fn with_report_key(mut self, key: Arc<ReportKey>) -> Self {
        self.report_key = Some(key);
        self
    }

    /// Gives this node its stable id (`<data_dir>/node-id`; a random one otherwise).
    pub fn with_node_id(mut self, id: uuid::Uuid) -> Self {
        self.nodes.set_id(id);
        self
    }

    /// This node and the other nodes sharing its database.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    pub fn config(&self) -> &CpConfig {
        &self.config
    }

    /// The storage backend's name and version (for `/status` and logs).
    pub fn storage_info(&self) -> &StorageInfo {
        &self.storage
    }

    /// The single license writer and the snapshot every stream watches.
    pub fn licenses(&self) -> &Arc<Licenses> {
        &self.licenses
    }

    /// The fleet: registered data planes joined with their live state.
    pub fn dataplanes(&self) -> &Arc<DataPlanes> {
        &self.dataplanes
    }

    /// Users, connected apps and API tokens: their records and the login checks with their
    /// throttling state.
    pub fn principals(&self) -> &Principals {
        &self.principals
    }

    /// The tokens new data planes register with.
    pub fn registration_tokens(&self) -> &RegistrationTokens {
        &self.registration_tokens
    }

    /// SHA-256 (hex) of the cluster CA certificate, for `--ca-cert-hash sha256:...`.
    pub fn ca_fingerprint(&self) -> &str {
        &self.cluster.ca_fingerprint
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.cluster.ca_cert_pem
    }

    /// The URL data planes are told to use.
    pub fn cluster_url(&self) -> &str {
        &self.cluster.url
    }

    /// When this process started (unix seconds): silence before it is not held against a data
    /// plane by the purge.
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Usage counters reported by data planes (group-committed).
    pub fn usage(&self) -> &UsageLedger {
        &self.usage
    }

    /// The audit trail of changes and who made them.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The active license's `dataplanes` against the registered fleet.
    pub fn entitlement(&self) -> &Entitlement {
        &self.entitlement
    }

    /// Signs usage reports; `None` until [`ControlPlane::with_report_key`] (then
    /// `/license/report` answers 503).
    pub fn report_key(&self) -> Option<&ReportKey> {
        self.report_key.as_deref()
    }

    /// The counters and histograms of what happens (sync answers, Admin API requests); the
    /// rest of `GET /metrics` is read from the services above at scrape time.
    pub fn metrics(&self) -> &CpMetrics {
        &self.metrics
    }

    /// Whether storage answers (checked every few seconds).
    pub fn storage_health(&self) -> &StorageHealth {
        &self.storage_health
    }

    /// `/health/ready` answers 200 once storage is open and every listener accepts, and while
    /// storage answers.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.storage_health.unavailable().is_none()
    }
}
