//! What the sync client publishes through a `tokio::sync::watch` for the local API (and for the
//! fleet benchmark, which watches thousands of them).

use serde::Serialize;

/// The agent's view of its link to the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// The data plane this agent currently is (it changes when a registration file for
    /// another data plane is put in place).
    pub dataplane_id: String,
    /// The cluster URL currently used.
    pub cluster_url: String,
    /// A `Sync` stream is open.
    pub connected: bool,
    /// Unix seconds of the last update applied (kept across restarts).
    pub last_sync: Option<i64>,
    /// Control-plane revision of the last update applied.
    pub revision: u64,
    /// Unix seconds when the client certificate expires.
    pub cert_expires_at: Option<i64>,
    /// The state has been loaded (from disk at start-up).
    pub state_loaded: bool,
    /// The license file matches the active license (`/health/ready`).
    pub license_file_in_line: bool,
    /// Why the last connection attempt or stream failed, in operator words.
    pub last_error: Option<String>,
    /// The control plane revoked this data plane (or no longer knows it): retries are
    /// [`super::backoff::REFUSED_RETRY`] apart until a new registration file is in place, and
    /// `last_error` says how to register again.
    pub revoked: bool,
    /// Unix seconds of the last heartbeat the control plane answered on the current stream.
    pub last_heartbeat: Option<i64>,
    /// Licenses received since start that were already held at the same revision with the same
    /// document: traffic the control plane could have saved. Stays 0 (`GET /status`).
    pub licenses_resent: u64,
}

impl SyncStatus {
    /// Ready to serve: state loaded and the license file in line with it.
    pub fn ready(&self) -> bool {
        self.state_loaded && self.license_file_in_line
    }
}
