//! When the agent tells its operator about the client certificate's expiry.
//!
//! [`notice_due`] is the whole schedule, as a pure function of the time, the expiry and the
//! last notice logged, so it is tested with made-up clocks:
//!
//! | time left | notice | repeated |
//! |---|---|---|
//! | more than 30 days | none | |
//! | 30 days or less | `cert.expiring`, WARN | daily |
//! | 7 days or less | `cert.expiring`, ERROR | daily |
//! | expired | `cert.expired`, ERROR, with the renew command | every minute |
//!
//! A notice of a new kind (WARN becoming ERROR, expiring becoming expired) is logged at once.
//! A new certificate (rotation or reload) starts the schedule afresh.

use std::path::Path;
use std::time::Duration;

use licsync_common::time_fmt;
use time::OffsetDateTime;

/// How often `cert.expiring` repeats.
pub const EXPIRING_EVERY: time::Duration = time::Duration::days(1);
/// How often `cert.expired` repeats.
pub const EXPIRED_EVERY: time::Duration = time::Duration::minutes(1);
/// Timers never fire early but the wall clock may lag them a little: a repeat this close to
/// its period counts as due, so "every minute" does not become "every other minute".
const SLACK: time::Duration = time::Duration::milliseconds(100);

/// What to tell the operator about the certificate's expiry: the shared stage rule
/// ([`licsync_common::expiry::CertStage`]), 30 days WARN, 7 days ERROR, then expired.
pub use licsync_common::expiry::CertStage as Notice;

/// The notice for a certificate expiring at `expires_at` as seen at `now`, regardless of what
/// was logged before.
pub fn notice_at(now: OffsetDateTime, expires_at: OffsetDateTime) -> Option<Notice> {
    Notice::at(expires_at - now)
}

/// How often a notice of this kind repeats.
fn period(notice: Notice) -> time::Duration {
    match notice {
        Notice::Expiring | Notice::ExpiringSoon => EXPIRING_EVERY,
        Notice::Expired => EXPIRED_EVERY,
    }
}

/// The notice to log at `now` for a certificate expiring at `expires_at`, given the last
/// notice logged for it and when; `None` when nothing is due.
pub fn notice_due(
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    last: Option<(Notice, OffsetDateTime)>,
) -> Option<Notice> {
    let notice = notice_at(now, expires_at)?;
    match last {
        Some((previous, at)) if previous == notice && now - at + SLACK < period(notice) => None,
        _ => Some(notice),
    }
}

/// How long until the schedule should be looked at again: at the latest in a minute, and
/// exactly at expiry, so `cert.expired` is logged the moment it becomes true.
pub fn next_check(now: OffsetDateTime, expires_at: OffsetDateTime) -> Duration {
    let minute = Duration::from_secs(60);
    let left = expires_at - now;
    if left > time::Duration::ZERO {
        Duration::try_from(left).map_or(minute, |left| left.min(minute))
    } else {
        minute
    }
}

/// The schedule's memory: the last notice logged for the current certificate.
#[derive(Debug, Default)]
pub struct ExpiryLog {
    last: Option<(Notice, OffsetDateTime)>,
}

impl ExpiryLog {
    /// Forgets what was logged: a new certificate starts afresh.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Logs what is due at `now`; returns it.
    pub fn tick(
        &mut self,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        registration_file: Option<&Path>,
        rotation: Option<OffsetDateTime>,
    ) -> Option<Notice> {
        let notice = notice_due(now, expires_at, self.last)?;
        self.last = Some((notice, now));
        log(notice, now, expires_at, registration_file, rotation);
        Some(notice)
    }
}

/// The exact command that renews this data plane's registration by hand.
pub fn renew_command(registration_file: Option<&Path>) -> String {
    let file = registration_file.map_or_else(
        || "<registration file>".to_owned(),
        |path| path.display().to_string(),
    );
    format!(
        "licsync-dp registration renew (--username U --password P | --client-id I --client-secret S) --output-directory DIR {file}"
    )
}

fn log(
    notice: Notice,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    registration_file: Option<&Path>,
    rotation: Option<OffsetDateTime>,
) {
    let expiry = time_fmt::go_utc(expires_at);
    let cert_expires_at = time_fmt::rfc3339(expires_at);
    let command = renew_command(registration_file);
    let file = registration_file.map_or_else(
        || "the registration file".to_owned(),
        |path| path.display().to_string(),
    );
    let then = format!(
        "then replace {file} with DIR/registration.yaml; the agent uses it without a restart"
    );
    match notice {
        Notice::Expired => tracing::error!(
            event = "cert.expired",
            cert_expires_at = %cert_expires_at,
            renew_command = %command,
            "This data plane's client certificate expired at {expiry}: the control plane refuses it, and the last license received stays in use. Renew it with `{command}`, {then}."
        ),
        Notice::ExpiringSoon | Notice::Expiring => {
            let days = (expires_at - now).whole_days();
            let left = if days >= 1 {
                format!("{days} days")
            } else {
                "less than a day".to_owned()
            };
            let plan = match rotation {
                Some(at) if at > now => format!(
                    "automatic rotation is due at {}; if it keeps failing, renew it with `{command}`, {then}",
                    time_fmt::go_utc(at)
                ),
                _ => format!("renew it with `{command}`, {then}"),
            };
            if notice == Notice::ExpiringSoon {
                tracing::error!(
                    event = "cert.expiring",
                    cert_expires_at = %cert_expires_at,
                    renew_command = %command,
                    "This data plane's client certificate expires at {expiry} (in {left}); {plan}."
                );
            } else {
                tracing::warn!(
                    event = "cert.expiring",
                    cert_expires_at = %cert_expires_at,
                    renew_command = %command,
                    "This data plane's client certificate expires at {expiry} (in {left}); {plan}."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000 + seconds).unwrap()
    }

    const MINUTE: i64 = 60;
    const DAY: i64 = 86_400;

    /// Walks a clock from `start` to `end` in `step`s, as the agent's timer would, and returns
    /// when each notice was logged (seconds since `at(0)`).
    fn timeline(expires: i64, start: i64, end: i64, step: i64) -> Vec<(i64, Notice)> {
        let mut last = None;
        let mut logged = Vec::new();
        let mut now = start;
        while now <= end {
            if let Some(notice) = notice_due(at(now), at(expires), last) {
                last = Some((notice, at(now)));
                logged.push((now, notice));
            }
            now += step;
        }
        logged
    }

    #[test]
    fn nothing_is_logged_until_thirty_days_before_expiry() {
        assert_eq!(notice_at(at(0), at(31 * DAY)), None);
        assert_eq!(notice_at(at(0), at(30 * DAY + 1)), None);
        assert_eq!(notice_at(at(0), at(30 * DAY)), Some(Notice::Expiring));
        assert_eq!(notice_at(at(0), at(7 * DAY + 1)), Some(Notice::Expiring));
        assert_eq!(notice_at(at(0), at(7 * DAY)), Some(Notice::ExpiringSoon));
        assert_eq!(notice_at(at(0), at(1)), Some(Notice::ExpiringSoon));
        assert_eq!(notice_at(at(0), at(0)), Some(Notice::Expired));
        assert_eq!(notice_at(at(5), at(0)), Some(Notice::Expired));
    }

    #[test]
    fn warn_daily_from_thirty_days_then_error_daily_from_seven_then_every_minute() {
        // A certificate expiring 40 days from now, watched every minute until 5 minutes after
        // expiry.
        let expires = 40 * DAY;
        let logged = timeline(expires, 0, expires + 5 * MINUTE, MINUTE);
        let expiring: Vec<i64> = logged
            .iter()
            .filter(|(_, n)| *n == Notice::Expiring)
            .map(|(t, _)| *t)
            .collect();
        let soon: Vec<i64> = logged
            .iter()
            .filter(|(_, n)| *n == Notice::ExpiringSoon)
            .map(|(t, _)| *t)
            .collect();
        let expired: Vec<i64> = logged
            .iter()
            .filter(|(_, n)| *n == Notice::Expired)
            .map(|(t, _)| *t)
            .collect();
        // Days 10 to 32 (30 to 8 days left): one WARN a day, the first exactly at 30 days.
        assert_eq!(expiring.len(), 23, "{expiring:?}");
        assert_eq!(expiring[0], 10 * DAY);
        assert!(
            expiring.windows(2).all(|w| w[1] - w[0] == DAY),
            "{expiring:?}"
        );
        // From 7 days left: one ERROR a day, the first at once, none after expiry.
        assert_eq!(soon[0], 33 * DAY);
        assert_eq!(soon.len(), 7, "{soon:?}");
        assert!(soon.windows(2).all(|w| w[1] - w[0] == DAY), "{soon:?}");
        assert!(soon.iter().all(|t| *t < expires));
        // Expired: at once, then every minute.
        assert_eq!(
            expired,
            [
                expires,
                expires + 60,
                expires + 120,
                expires + 180,
                expires + 240,
                expires + 300
            ]
        );
    }

    #[test]
    fn reconnect_attempts_do_not_multiply_the_expired_error() {
        // Checked every second (as a busy reconnect loop would), still once a minute.
        let logged = timeline(0, 0, 10 * MINUTE - 1, 1);
        assert_eq!(logged.len(), 10, "{logged:?}");
        assert!(logged.iter().all(|(_, n)| *n == Notice::Expired));
    }

    #[test]
    fn a_timer_a_hair_late_against_the_wall_clock_still_repeats_every_minute() {
        let last = Some((Notice::Expired, at(100)));
        let hair = time::Duration::milliseconds(50);
        assert_eq!(
            notice_due(at(160) - hair, at(0), last),
            Some(Notice::Expired)
        );
        assert_eq!(notice_due(at(159), at(0), last), None);
    }

    #[test]
    fn the_next_check_is_at_expiry_or_within_a_minute() {
        assert_eq!(next_check(at(0), at(10)), Duration::from_secs(10));
        assert_eq!(next_check(at(0), at(DAY)), Duration::from_secs(60));
        assert_eq!(next_check(at(10), at(0)), Duration::from_secs(60));
    }

    #[test]
    fn a_new_certificate_starts_the_schedule_afresh() {
        let mut log = ExpiryLog::default();
        assert_eq!(log.tick(at(0), at(0), None, None), Some(Notice::Expired));
        assert_eq!(log.tick(at(1), at(0), None, None), None);
        log.reset();
        assert_eq!(
            log.tick(at(2), at(DAY), None, None),
            Some(Notice::ExpiringSoon)
        );
    }

    #[test]
    fn the_renew_command_names_the_registration_file() {
        assert_eq!(
            renew_command(Some(Path::new("/etc/licsync/registration.yaml"))),
            "licsync-dp registration renew (--username U --password P | --client-id I --client-secret S) --output-directory DIR /etc/licsync/registration.yaml"
        );
    }
}
