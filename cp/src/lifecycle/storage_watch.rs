//! The storage watch: asks storage every [`INTERVAL`] whether it answers
//! ([`crate::store::StoreMeta::check`]) and keeps the answer in
//! [`crate::state::StorageHealth`], so `/health/ready` turns `503` while a shared database is
//! unreachable (a load balancer then sends operators' writes to a node that can make them) and
//! back to `200` when it returns. Streams are not touched: data planes keep the licenses they
//! have and the node keeps serving its last published set.
//!
//! Only the transitions are logged (`storage.unavailable`, `storage.available`), once each,
//! so an outage of an hour is two lines, not a line every few seconds.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::ControlPlane;
use crate::store::Store;

/// How often storage is asked. Short enough that readiness follows an outage within a few
/// seconds; a trivial query that often costs a database nothing.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Checks once and records the answer; returns whether storage answered.
pub async fn check_once(cp: &ControlPlane, store: &dyn Store) -> bool {
    match store.check().await {
        Ok(()) => {
            if cp.storage_health().set_available() {
                tracing::info!(
                    event = "storage.available",
                    storage = cp.storage_info().backend,
                    "Storage answers again; writes are accepted."
                );
            }
            true
        }
        Err(error) => {
            if cp.storage_health().set_unavailable(error.to_string()) {
                tracing::error!(
                    event = "storage.unavailable",
                    storage = cp.storage_info().backend,
                    %error,
                    "Storage does not answer: writes fail with 503 and /health/ready reports not ready; data-plane streams stay up."
                );
            }
            false
        }
    }
}

/// Runs [`check_once`] every [`INTERVAL`] until `shutdown`.
pub async fn run(cp: Arc<ControlPlane>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        check_once(&cp, store.as_ref()).await;
    }
}
