//! License expiry in the control plane's log, on Kong's schedule
//! ([`licsync_common::expiry`]): WARN once a day from 90 days before the active license's
//! `license_expiration_date`, ERROR once a day from 30 days before, and ERROR with
//! `severity = "critical"` once a day after it expired. An expired license keeps being served;
//! the log is how an operator learns to renew it.
//!
//! [`ExpiryLog`] decides what is due at a given instant (so tests inject the clock); the
//! control plane's license watch calls it at start, hourly and whenever the licenses change.

use licsync_common::expiry::{ExpiryNotice, ExpiryStage, expiry_notice};
use time::{Date, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::entitlement::ActiveLicense;

/// Remembers what was last logged, so each notice appears once per UTC day (and at once when
/// the active license or the stage changes).
#[derive(Debug, Default)]
pub struct ExpiryLog {
    last: Option<(Uuid, ExpiryStage, Date)>,
}

impl ExpiryLog {
    /// The notice to log at `now` for `active`, if one is due and was not logged today.
    pub fn due(
        &mut self,
        active: Option<&ActiveLicense>,
        now: OffsetDateTime,
    ) -> Option<ExpiryNotice> {
        let active = active?;
        let today = now.to_offset(UtcOffset::UTC).date();
        let notice = expiry_notice(active.license.expiration_date(), today)?;
        let key = (active.id, notice.stage, today);
        if self.last == Some(key) {
            return None;
        }
        self.last = Some(key);
        Some(notice)
    }
}

/// Logs `notice` about `active` at the level its stage calls for.
pub fn log(notice: ExpiryNotice, active: &ActiveLicense) {
    let expiration = active.license.expiration_date().to_string();
    let key = active.license.license_key();
    let id = active.id;
    let severity = notice.stage.severity();
    let days = notice.days_left;
    match notice.stage {
        ExpiryStage::Approaching => tracing::warn!(
            event = "license.expiring",
            license.id = %id,
            license_key = %key,
            license_expiration_date = %expiration,
            days_left = days,
            severity,
            "The license expires in {days} days, on {expiration}; install a renewed license with POST /licenses before then."
        ),
        ExpiryStage::Imminent => tracing::error!(
            event = "license.expiring",
            license.id = %id,
            license_key = %key,
            license_expiration_date = %expiration,
            days_left = days,
            severity,
            "The license expires in {days} days (0: at the end of today, UTC), on {expiration}; install a renewed license with POST /licenses now."
        ),
        ExpiryStage::Expired => tracing::error!(
            event = "license.expired",
            license.id = %id,
            license_key = %key,
            license_expiration_date = %expiration,
            days_ago = -days,
            severity,
            "The license expired on {expiration}; it is still served to data planes. Install a renewed license with POST /licenses."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licsync_common::license::{License, SigningKey, sign_document};
    use time::macros::datetime;

    fn active(expiration: &str) -> ActiveLicense {
        let (key, _) = SigningKey::generate().unwrap();
        let payload = [
            ("customer", "C"),
            ("license_key", "KEY"),
            ("license_creation_date", "2020-01-01"),
            ("license_expiration_date", expiration),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        ActiveLicense {
            id: Uuid::new_v4(),
            license: License::parse(&sign_document(&payload, &key)).unwrap(),
        }
    }

    #[test]
    fn once_a_day_per_stage_and_license() {
        let license = active("2026-12-31");
        let mut log = ExpiryLog::default();
        let stage = |log: &mut ExpiryLog, now| log.due(Some(&license), now).map(|n| n.stage);
        // More than 90 days left: nothing.
        assert_eq!(stage(&mut log, datetime!(2026-10-01 23:59 UTC)), None);
        // Day 90, first check: a warning; the hourly checks after it that day: nothing.
        assert_eq!(
            stage(&mut log, datetime!(2026-10-02 00:00 UTC)),
            Some(ExpiryStage::Approaching)
        );
        assert_eq!(stage(&mut log, datetime!(2026-10-02 01:00 UTC)), None);
        assert_eq!(stage(&mut log, datetime!(2026-10-02 23:59 UTC)), None);
        // Days are UTC days: 01:30 at +02:00 on the 3rd is still the 2nd in UTC.
        assert_eq!(stage(&mut log, datetime!(2026-10-03 01:30 +02:00)), None);
        // The next UTC day, again once.
        assert_eq!(
            stage(&mut log, datetime!(2026-10-03 00:00 UTC)),
            Some(ExpiryStage::Approaching)
        );
        assert_eq!(stage(&mut log, datetime!(2026-10-03 12:00 UTC)), None);
        // Day 30: an error; expiration day: still an error; the day after: critical.
        assert_eq!(
            stage(&mut log, datetime!(2026-12-01 00:00 UTC)),
            Some(ExpiryStage::Imminent)
        );
        assert_eq!(
            stage(&mut log, datetime!(2026-12-31 23:00 UTC)),
            Some(ExpiryStage::Imminent)
        );
        assert_eq!(
            stage(&mut log, datetime!(2027-01-01 00:00 UTC)),
            Some(ExpiryStage::Expired)
        );
        assert_eq!(stage(&mut log, datetime!(2027-01-01 05:00 UTC)), None);
        assert_eq!(
            stage(&mut log, datetime!(2027-01-02 00:00 UTC)),
            Some(ExpiryStage::Expired)
        );
        // No license, nothing to say.
        assert_eq!(log.due(None, datetime!(2027-01-03 00:00 UTC)), None);
    }

    #[test]
    fn a_new_active_license_is_logged_at_once() {
        let old = active("2026-12-31");
        let new = active("2026-12-20");
        let mut log = ExpiryLog::default();
        let now = datetime!(2026-12-10 08:00 UTC);
        assert!(log.due(Some(&old), now).is_some());
        assert!(log.due(Some(&old), now).is_none());
        let notice = log.due(Some(&new), now).unwrap();
        assert_eq!(notice.days_left, 10);
    }
}
