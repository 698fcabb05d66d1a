//! The control plane's watch over its active license: at start, every [`CHECK_EVERY`] and
//! whenever the licenses change, log what the expiry schedule calls for ([`crate::expiry`]) and
//! whether the fleet exceeds the license ([`crate::entitlement`]).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::entitlement::ActiveLicense;
use crate::expiry::{self, ExpiryLog};
use crate::state::ControlPlane;

/// How often the license is looked at without a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Runs until `shutdown`; the first check happens at once.
pub async fn watch(cp: Arc<ControlPlane>, shutdown: CancellationToken) {
    let mut expiry = ExpiryLog::default();
    let mut licenses = cp.licenses().subscribe();
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            changed = licenses.changed() => {
                if changed.is_err() {
                    return;
                }
                licenses.borrow_and_update();
            }
        }
        let active = ActiveLicense::of(&cp.licenses().current());
        if let Some(notice) = expiry.due(active.as_ref(), OffsetDateTime::now_utc())
            && let Some(active) = &active
        {
            expiry::log(notice, active);
        }
        cp.entitlement().check().await;
    }
}
