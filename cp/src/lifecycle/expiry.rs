//! Certificate expiry reminders at the control plane: from 30 days before a certificate
//! expires, `cert.expiring` once a day (WARN; ERROR from 7 days), so an operator hears of an
//! expiry weeks before a data plane is cut off. A data-plane certificate already expired gets
//! `cert.expired` (ERROR) once a day until the data plane renews or is purged.
//!
//! Which certificates: every unrevoked data plane's; the cluster server certificate, but only
//! once its automatic rotation is overdue (it is replaced a third of its lifetime before expiry,
//! so a reminder before that would be noise); and the cluster CA, which cannot be rotated
//! without registering every data plane again.
//!
//! [`notice`] is the pure schedule; [`Reminders`] remembers, per certificate, when it last
//! reminded, so the hourly walk logs each certificate at most once a day.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::expiry::{CERT_ERROR_FROM, CERT_WARN_FROM, CertStage};
use licsync_common::unix_now;
use tokio_util::sync::CancellationToken;

use crate::cluster::server_cert::ServerIdentity;
use crate::state::ControlPlane;

const DAY: i64 = 86_400;
/// Reminders start this many seconds before expiry, as WARN (the shared rule,
/// [`licsync_common::expiry::CertStage`]).
pub const WARN_FROM: i64 = CERT_WARN_FROM.whole_seconds();
/// From this many seconds before expiry they are ERROR.
pub const ERROR_FROM: i64 = CERT_ERROR_FROM.whole_seconds();
/// At most one reminder per certificate in this many seconds.
pub const REMIND_EVERY: i64 = DAY;
/// How often the registry is walked.
const WALK_EVERY: Duration = Duration::from_secs(3600);

/// What to say about a certificate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Expires within [`WARN_FROM`]; `error` within [`ERROR_FROM`].
    Expiring { error: bool, days_left: i64 },
    /// Already expired.
    Expired,
}

/// The reminder due at `now` for a certificate valid until `not_after`, last reminded at
/// `last` (all unix seconds), or `None`.
pub fn notice(not_after: i64, last: Option<i64>, now: i64) -> Option<Notice> {
    if last.is_some_and(|last| now.saturating_sub(last) < REMIND_EVERY) {
        return None;
    }
    let left = not_after.saturating_sub(now);
    Some(match CertStage::at(time::Duration::seconds(left))? {
        CertStage::Expired => Notice::Expired,
        stage => Notice::Expiring {
            error: stage == CertStage::ExpiringSoon,
            days_left: left / DAY,
        },
    })
}

/// When each certificate was last reminded of, keyed by what identifies it.
#[derive(Debug, Default)]
pub struct Reminders {
    last: HashMap<String, i64>,
    /// Keys checked in the current walk; the others are forgotten when it ends.
    seen: HashMap<String, i64>,
}

impl Reminders {
    /// The reminder due for certificate `key` at `now`, recorded as given when there is one.
    pub fn check(&mut self, key: &str, not_after: i64, now: i64) -> Option<Notice> {
        let last = self.last.get(key).copied();
        let due = notice(not_after, last, now);
        let remembered = if due.is_some() { Some(now) } else { last };
        if let Some(at) = remembered {
            self.seen.insert(key.to_owned(), at);
        }
        due
    }

    /// Ends a walk: certificates not checked in it (rotated, purged, revoked) are forgotten,
    /// so memory stays bounded by the fleet.
    pub fn end_walk(&mut self) {
        self.last = std::mem::take(&mut self.seen);
    }
}

/// The CP's own certificates the walk looks at besides the registry.
pub struct OwnCertificates {
    /// The cluster server certificate in use (rotated while running).
    pub server: Arc<ServerIdentity>,
    /// The cluster CA's expiry (unix seconds).
    pub ca_not_after: i64,
}

/// One walk over every certificate, as of `now`.
pub async fn walk(cp: &ControlPlane, own: &OwnCertificates, reminders: &mut Reminders, now: i64) {
    match cp.dataplanes().unrevoked_records().await {
        Ok(records) => {
            for record in &records {
                let key = format!("dataplane:{}:{}", record.id, record.cert_serial);
                if let Some(notice) = reminders.check(&key, record.cert_expires_at, now) {
                    log_dataplane(notice, record, now);
                }
            }
        }
        Err(error) => {
            tracing::warn!(event = "cert.expiry_check_failed", %error, "Could not read the registry to check certificate expiry.");
        }
    }
    let server = own.server.in_use();
    if now >= server.rotate_at.unix_timestamp() {
        let key = format!("server:{}", server.serial);
        let not_after = server.not_after.unix_timestamp();
        if let Some(notice) = reminders.check(&key, not_after, now) {
            log_own(
                notice,
                "server",
                &server.serial,
                not_after,
                "the cluster server certificate was not rotated in time; check the cert.rotation_failed log lines and that the pki directory is writable, then restart the control plane",
            );
        }
    }
    if let Some(notice) = reminders.check("ca", own.ca_not_after, now) {
        log_own(
            notice,
            "ca",
            "",
            own.ca_not_after,
            "data planes cannot connect once the cluster CA expires; plan a new CA (move the pki directory away and restart), after which every data plane must register again",
        );
    }
    reminders.end_walk();
}

fn log_dataplane(notice: Notice, record: &crate::model::DataPlaneRecord, now: i64) {
    const ACTION: &str = "A data plane's certificate expires soon; a connected data plane rotates it automatically, otherwise renew it with `licsync-dp registration renew`.";
    let expires_in_s = record.cert_expires_at - now;
    match notice {
        Notice::Expiring {
            error: true,
            days_left,
        } => {
            tracing::error!(event = "cert.expiring", role = "dataplane", dataplane.id = %record.id, dataplane.name = %record.name, serial = %record.cert_serial, cert_expires_at = record.cert_expires_at, days_left, expires_in_s, "{ACTION}")
        }
        Notice::Expiring {
            error: false,
            days_left,
        } => {
            tracing::warn!(event = "cert.expiring", role = "dataplane", dataplane.id = %record.id, dataplane.name = %record.name, serial = %record.cert_serial, cert_expires_at = record.cert_expires_at, days_left, expires_in_s, "{ACTION}")
        }
        Notice::Expired => {
            tracing::error!(event = "cert.expired", role = "dataplane", dataplane.id = %record.id, dataplane.name = %record.name, serial = %record.cert_serial, cert_expires_at = record.cert_expires_at, "A data plane's certificate has expired; it cannot connect until renewed with `licsync-dp registration renew`.")
        }
    }
}

fn log_own(notice: Notice, role: &str, serial: &str, not_after: i64, action: &str) {
    match notice {
        Notice::Expiring {
            error: true,
            days_left,
        } => tracing::error!(
            event = "cert.expiring",
            role,
            serial,
            cert_expires_at = not_after,
            days_left,
            action,
            "A control-plane certificate expires soon."
        ),
        Notice::Expiring {
            error: false,
            days_left,
        } => tracing::warn!(
            event = "cert.expiring",
            role,
            serial,
            cert_expires_at = not_after,
            days_left,
            action,
            "A control-plane certificate expires soon."
        ),
        Notice::Expired => tracing::error!(
            event = "cert.expired",
            role,
            serial,
            cert_expires_at = not_after,
            action,
            "A control-plane certificate has expired."
        ),
    }
}

/// Walks at start and then every hour until `shutdown`.
pub async fn run(cp: Arc<ControlPlane>, own: OwnCertificates, shutdown: CancellationToken) {
    let mut reminders = Reminders::default();
    loop {
        walk(&cp, &own, &mut reminders, unix_now()).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WALK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000 * DAY;

    #[test]
    fn schedule_boundaries() {
        let at = |left: i64| notice(NOW + left, None, NOW);
        assert_eq!(at(WARN_FROM + 1), None);
        assert_eq!(
            at(WARN_FROM),
            Some(Notice::Expiring {
                error: false,
                days_left: 30
            })
        );
        assert_eq!(
            at(ERROR_FROM + 1),
            Some(Notice::Expiring {
                error: false,
                days_left: 7
            })
        );
        assert_eq!(
            at(ERROR_FROM),
            Some(Notice::Expiring {
                error: true,
                days_left: 7
            })
        );
        assert_eq!(
            at(1),
            Some(Notice::Expiring {
                error: true,
                days_left: 0
            })
        );
        assert_eq!(at(0), Some(Notice::Expired));
        assert_eq!(at(-DAY), Some(Notice::Expired));
    }

    #[test]
    fn once_a_day_per_certificate() {
        let not_after = NOW + 10 * DAY;
        assert_eq!(notice(not_after, Some(NOW - REMIND_EVERY + 1), NOW), None);
        assert!(notice(not_after, Some(NOW - REMIND_EVERY), NOW).is_some());

        let mut reminders = Reminders::default();
        assert!(reminders.check("a", not_after, NOW).is_some());
        assert!(reminders.check("b", NOW + 60 * DAY, NOW).is_none());
        reminders.end_walk();
        // An hour later: nothing new; a day later: again.
        assert!(reminders.check("a", not_after, NOW + 3600).is_none());
        reminders.end_walk();
        assert!(reminders.check("a", not_after, NOW + DAY - 1).is_none());
        reminders.end_walk();
        assert!(reminders.check("a", not_after, NOW + DAY).is_some());
        reminders.end_walk();
        // A rotated certificate has a new key and starts afresh; the old key is forgotten.
        assert!(reminders.check("a2", not_after, NOW + DAY + 1).is_some());
        reminders.end_walk();
        assert!(!reminders.last.contains_key("a"));
    }
}
