//! The running control plane's shared context, handed to the Admin API and the cluster services.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::CpConfig;
use crate::dataplanes::DataPlanes;
use crate::entitlement::Entitlement;
use crate::licenses::Licenses;
use crate::principals::Principals;
use crate::store::Store;
use crate::usage::{ReportKey, UsageLedger};

/// Everything a request handler or a data-plane stream needs.
pub struct ControlPlane {
    pub config: CpConfig,
    pub store: Arc<dyn Store>,
    pub licenses: Arc<Licenses>,
    pub dataplanes: Arc<DataPlanes>,
    /// Users and connected apps: login checks with their throttling state.
    pub principals: Arc<Principals>,
    /// SHA-256 (hex) of the cluster CA certificate, for `--ca-cert-hash sha256:...`.
    pub ca_fingerprint: String,
    /// The cluster CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The URL data planes are told to use.
    pub cluster_url: String,
    /// When this process started (unix seconds): silence before it is not held against a data
    /// plane by the purge.
    pub started_at: i64,
    /// Usage counters reported by data planes (group-committed).
    pub usage: UsageLedger,
    /// The active license's `dataplanes` against the registered fleet.
    pub entitlement: Entitlement,
    /// Signs usage reports; `None` until [`ControlPlane::with_report_key`] (then
    /// `/license/report` answers 503).
    pub report_key: Option<Arc<ReportKey>>,
    ready: AtomicBool,
}

impl ControlPlane {
    pub fn new(
        config: CpConfig,
        store: Arc<dyn Store>,
        licenses: Arc<Licenses>,
        ca_cert_pem: String,
        ca_fingerprint: String,
    ) -> Self {
        let cluster_url = config.cluster.cluster_url();
        Self {
            dataplanes: Arc::new(DataPlanes::new(store.clone())),
            principals: Arc::new(Principals::new(store.clone())),
            usage: UsageLedger::new(store.clone()),
            entitlement: Entitlement::new(config.licenses.enforce_dataplane_limit),
            report_key: None,
            config,
            store,
            licenses,
            ca_fingerprint,
            ca_cert_pem,
            cluster_url,
            started_at: licsync_common::unix_now(),
            ready: AtomicBool::new(false),
        }
    }

    /// Sets the key that signs usage reports (`server::run` loads it from `<data_dir>/pki`).
    pub fn with_report_key(mut self, key: Arc<ReportKey>) -> Self {
        self.report_key = Some(key);
        self
    }

    /// `/health/ready` answers 200 once storage is open and both listeners accept.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
