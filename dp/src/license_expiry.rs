//! License expiry in the agent's log, on Kong Gateway's schedule, so that whoever watches the
//! gateway host's logs learns in time:
//!
//! | days until `license_expiration_date` (UTC) | log, once a day |
//! |---|---|
//! | 90 to 31 | WARN `license.expiring` |
//! | 30 to 0 (the license is in force through its expiration date) | ERROR `license.expiring` |
//! | after it | ERROR `license.expired`, `severity = "critical"` (Kong logs these at CRIT) |
//!
//! The license looked at is the active one (newest `updated_at`). An expired license keeps
//! being served: whether to refuse traffic is the gateway's decision, not the agent's.
//!
//! [`notice`] is the schedule, a pure function of the expiration date and the time;
//! [`ExpiryWatch`] adds the once-a-day rule; [`run`] checks at start, hourly and whenever the
//! active license changes.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::expiry::{self, ExpiryStage};
use licsync_common::license::License;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::state::{ActiveRule, DpState, HeldLicense};

/// How often the task looks at the calendar.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// What the log should say about a license today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryNotice {
    /// 31 to 90 days left: WARN.
    Expiring { days_left: i64 },
    /// 0 to 30 days left: ERROR.
    ExpiringSoon { days_left: i64 },
    /// Past its expiration date: ERROR, severity critical.
    Expired { days_ago: i64 },
}

/// The schedule: what to say about a license expiring at the end of `expiration` (UTC) at
/// time `now`; `None` while more than [`expiry::WARN_FROM_DAYS`] days are left. The rule is
/// the control plane's ([`expiry::expiry_notice`]), so both log the same thing on the same day.
pub fn notice(expiration: Date, now: OffsetDateTime) -> Option<ExpiryNotice> {
    let today = now.to_offset(UtcOffset::UTC).date();
    let due = expiry::expiry_notice(expiration, today)?;
    let days_left = due.days_left;
    Some(match due.stage {
        ExpiryStage::Approaching => ExpiryNotice::Expiring { days_left },
        ExpiryStage::Imminent => ExpiryNotice::ExpiringSoon { days_left },
        ExpiryStage::Expired => ExpiryNotice::Expired {
            days_ago: -days_left,
        },
    })
}

/// The once-a-day rule: a notice is due when the active license or the UTC day changed since
/// the last one.
#[derive(Debug, Default)]
pub struct ExpiryWatch {
    last: Option<(String, Date)>,
}

impl ExpiryWatch {
    /// The notice to log now for the license `id` expiring at `expiration`, if one is due.
    pub fn check(
        &mut self,
        id: &str,
        expiration: Date,
        now: OffsetDateTime,
    ) -> Option<ExpiryNotice> {
        let notice = notice(expiration, now)?;
        let today = now.to_offset(UtcOffset::UTC).date();
        if self
            .last
            .as_ref()
            .is_some_and(|(last_id, day)| last_id == id && *day == today)
        {
            return None;
        }
        self.last = Some((id.to_owned(), today));
        Some(notice)
    }
}

/// Writes `notice` to the log.
pub fn log(notice: ExpiryNotice, id: &str, expiration: Date) {
    match notice {
        ExpiryNotice::Expiring { days_left } => tracing::warn!(
            event = "license.expiring",
            license.id = %id,
            license_expiration_date = %expiration,
            days_left,
            severity = "warning",
            "The license expires on {expiration} ({days_left} days left); install a renewed license on the control plane."
        ),
        ExpiryNotice::ExpiringSoon { days_left } => tracing::error!(
            event = "license.expiring",
            license.id = %id,
            license_expiration_date = %expiration,
            days_left,
            severity = "error",
            "The license expires on {expiration} ({days_left} days left); install a renewed license on the control plane now."
        ),
        ExpiryNotice::Expired { days_ago } => tracing::error!(
            event = "license.expired",
            license.id = %id,
            license_expiration_date = %expiration,
            days_ago,
            severity = "critical",
            "The license expired on {expiration} ({days_ago} days ago); it is still served, but install a renewed license on the control plane."
        ),
    }
}

/// Checks at start, every hour and whenever the held licenses change, until `shutdown`. The
/// license looked at is the one `rule` serves; when the newest license has expired while an
/// older one is in force, `license.expired_selected` is logged once a day too.
pub async fn run(
    mut licenses: watch::Receiver<Arc<DpState>>,
    rule: ActiveRule,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    let mut watch = ExpiryWatch::default();
    let mut selected = ExpiredSelectedWatch::default();
    let mut hourly = tokio::time::interval(CHECK_EVERY);
    hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hourly.tick() => {}
            changed = licenses.changed() => if changed.is_err() { return },
        }
        let state = licenses.borrow_and_update().clone();
        let now = clock.now();
        let choice = state.choose(rule, now.to_offset(UtcOffset::UTC).date());
        if let (Some(newest), Some(served)) = (choice.expired_over_in_force, choice.active)
            && selected.due(&newest.id, now)
        {
            log_expired_selected(newest, served, rule);
        }
        let Some(active) = choice.active else {
            continue;
        };
        // Held licenses were verified on arrival, so this only fails for a state file edited
        // by hand; the sync client reports that case.
        let Ok(license) = License::parse(&active.document) else {
            tracing::debug!(license.id = %active.id, "The active license cannot be parsed for its expiry date.");
            continue;
        };
        if let Some(notice) = watch.check(&active.id, license.expiration_date(), now) {
            log(notice, &active.id, license.expiration_date());
        }
    }
}

/// Once a day per newest license: the `license.expired_selected` warning.
#[derive(Debug, Default)]
struct ExpiredSelectedWatch {
    last: Option<(String, Date)>,
}

impl ExpiredSelectedWatch {
    fn due(&mut self, id: &str, now: OffsetDateTime) -> bool {
        let today = now.to_offset(UtcOffset::UTC).date();
        if self
            .last
            .as_ref()
            .is_some_and(|(last, day)| last == id && *day == today)
        {
            return false;
        }
        self.last = Some((id.to_owned(), today));
        true
    }
}

/// The warning for a newest license that has expired while an older one is in force: what is
/// served, and what to do.
fn log_expired_selected(newest: &HeldLicense, served: &HeldLicense, rule: ActiveRule) {
    let expiration = License::parse(&newest.document)
        .map(|license| license.expiration_date().to_string())
        .unwrap_or_default();
    if rule.prefer_in_force {
        tracing::warn!(
            event = "license.expired_selected",
            license.id = %newest.id,
            license_expiration_date = %expiration,
            served.license.id = %served.id,
            prefer_in_force = true,
            "The newest license has expired while an older one is in force; serving the older one (license.prefer_in_force). Replace or delete the expired license on the control plane."
        );
    } else {
        tracing::warn!(
            event = "license.expired_selected",
            license.id = %newest.id,
            license_expiration_date = %expiration,
            prefer_in_force = false,
            "The newest license has expired while an older one is in force; serving the expired one (Kong's rule). Replace or delete it on the control plane, or set license.prefer_in_force = true."
        );
    }
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};

    use super::*;

    #[test]
    fn the_schedule_at_every_boundary() {
        let expiration = date!(2026 - 12 - 31);
        for (now, expected) in [
            (datetime!(2026-10-01 23:59:59 UTC), None),
            // 91 days before: nothing; 90: WARN.
            (datetime!(2026-10-01 00:00 UTC), None),
            (
                datetime!(2026-10-02 00:00 UTC),
                Some(ExpiryNotice::Expiring { days_left: 90 }),
            ),
            (
                datetime!(2026-11-30 23:59:59 UTC),
                Some(ExpiryNotice::Expiring { days_left: 31 }),
            ),
            // 30 days before: ERROR.
            (
                datetime!(2026-12-01 00:00 UTC),
                Some(ExpiryNotice::ExpiringSoon { days_left: 30 }),
            ),
            // In force through its last day.
            (
                datetime!(2026-12-31 23:59:59 UTC),
                Some(ExpiryNotice::ExpiringSoon { days_left: 0 }),
            ),
            (
                datetime!(2027-01-01 00:00 UTC),
                Some(ExpiryNotice::Expired { days_ago: 1 }),
            ),
            (
                datetime!(2028-01-01 00:00 UTC),
                Some(ExpiryNotice::Expired { days_ago: 366 }),
            ),
            // The day is the UTC day: 1 January 00:30 in Paris is still 31 December in UTC.
            (
                datetime!(2027-01-01 00:30 +01:00),
                Some(ExpiryNotice::ExpiringSoon { days_left: 0 }),
            ),
        ] {
            assert_eq!(notice(expiration, now), expected, "{now}");
        }
    }

    #[test]
    fn once_a_day_per_license() {
        let mut watch = ExpiryWatch::default();
        let expiration = date!(2026 - 12 - 31);
        let morning = datetime!(2026-12-20 08:00 UTC);
        assert!(watch.check("a", expiration, morning).is_some());
        assert_eq!(
            watch.check("a", expiration, morning + time::Duration::hours(15)),
            None,
            "the same UTC day"
        );
        assert!(
            watch
                .check("b", expiration, morning + time::Duration::hours(15))
                .is_some(),
            "another active license is logged at once"
        );
        assert!(
            watch
                .check("b", expiration, datetime!(2026-12-21 00:00 UTC))
                .is_some()
        );
        assert_eq!(
            watch.check("b", date!(2027 - 12 - 31), datetime!(2026-12-22 00:00 UTC)),
            None,
            "far from expiry: nothing"
        );
    }
}
