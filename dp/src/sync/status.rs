//! What the sync client publishes through a `tokio::sync::watch` for the local API (and for the
//! fleet benchmark, which watches thousands of them).

use std::collections::BTreeMap;

use serde::Serialize;

/// At most this many refused licenses are remembered for `GET /status`; a control plane holds
/// a handful of licenses, so this only bounds a misbehaving one.
pub const MAX_REJECTED_SHOWN: usize = 100;

/// A license the control plane sent that this agent refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The control-plane revision of the refused version.
    pub revision: u64,
    /// The verification error, e.g. `validation failed: the signature does not verify with the
    /// 1 trusted key`.
    pub reason: String,
}

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
    /// Why the last update could not be applied (sent back in a retry `Nack`); `None` once
    /// one is.
    pub apply_error: Option<String>,
    /// Why the license file is not in line with the held state; `None` when it is.
    pub license_file_error: Option<String>,
    /// The control plane revoked this data plane (or no longer knows it): retries are
    /// [`super::backoff::REFUSED_RETRY`] apart until a new registration file is in place, and
    /// `last_error` says how to register again.
    pub revoked: bool,
    /// Unix seconds of the last heartbeat the control plane answered on the current stream.
    pub last_heartbeat: Option<i64>,
    /// Licenses received since start that were already held at the same revision with the same
    /// document: traffic the control plane could have saved. Stays 0 (`GET /status`).
    pub licenses_resent: u64,
    /// Licenses the control plane currently offers that this agent refused (by license id),
    /// so that an agent serving nothing says why instead of "no license has been received".
    pub rejected_licenses: BTreeMap<String, Rejection>,
}

impl SyncStatus {
    /// Ready to serve: state loaded and the license file in line with it.
    pub fn ready(&self) -> bool {
        self.state_loaded && self.license_file_in_line
    }

    /// One sentence on the refused licenses, or `None` when there are none.
    pub fn rejection_summary(&self) -> Option<String> {
        let (first_id, first) = self.rejected_licenses.iter().next()?;
        let count = self.rejected_licenses.len();
        let noun = if count == 1 { "license" } else { "licenses" };
        let mut text = format!(
            "{count} {noun} received from the control plane rejected: {first_id} (revision {}): {}",
            first.revision, first.reason
        );
        if count > 1 {
            text.push_str(&format!("; and {} more (see rejected_licenses)", count - 1));
        }
        Some(text)
    }
}
