//! Kong's license-expiry log schedule, and the urgency of a certificate's expiry
//! ([`CertStage`]), as pure functions of the expiration date and today's
//! date, so the control plane and every data plane log the same thing on the same day and the
//! boundaries are tested without waiting for a calendar.
//!
//! Kong Gateway logs a warning every day from 90 days before its license expires, an error every
//! day from 30 days before, and a critical error every day after it has expired (and keeps
//! serving). A license is in force through the whole of its expiration date, UTC, so the
//! expiration date itself is "expires today" (an error), and the day after is the first
//! "expired" day.

use time::Date;

/// Days before expiry from which a warning is logged daily.
pub const WARN_FROM_DAYS: i64 = 90;
/// Days before expiry from which an error is logged daily.
pub const ERROR_FROM_DAYS: i64 = 30;

/// How loudly to speak about an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExpiryStage {
    /// 90 to 31 days left: WARN.
    Approaching,
    /// 30 to 0 days left (0: the expiration date itself): ERROR.
    Imminent,
    /// Past the expiration date: ERROR with `severity = "critical"`.
    Expired,
}

impl ExpiryStage {
    /// The `severity` field logged with the notice.
    pub fn severity(self) -> &'static str {
        match self {
            Self::Approaching => "warning",
            Self::Imminent => "error",
            Self::Expired => "critical",
        }
    }
}

/// What to log about a license on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryNotice {
    pub stage: ExpiryStage,
    /// Whole days from `today` to the expiration date: 0 on the expiration date, negative once
    /// expired (-1 the day after).
    pub days_left: i64,
}

/// The notice due on `today` (UTC) for a license expiring on `expiration`, or `None` while
/// more than [`WARN_FROM_DAYS`] days are left.
pub fn expiry_notice(expiration: Date, today: Date) -> Option<ExpiryNotice> {
    let days_left = (expiration - today).whole_days();
    let stage = if days_left < 0 {
        ExpiryStage::Expired
    } else if days_left <= ERROR_FROM_DAYS {
        ExpiryStage::Imminent
    } else if days_left <= WARN_FROM_DAYS {
        ExpiryStage::Approaching
    } else {
        return None;
    };
    Some(ExpiryNotice { stage, days_left })
}

/// When a license expiring on `expiration` stops being in force, as unix seconds: the start
/// (UTC) of the day after, since it is in force through its whole expiration date. What the
/// expiry-timestamp metrics show, so an alert on `< time() + 7 * 86400` means seven full days.
pub fn license_end(expiration: Date) -> i64 {
    let end = expiration.next_day().unwrap_or(expiration);
    end.with_time(time::Time::MIDNIGHT)
        .assume_utc()
        .unix_timestamp()
}

/// Certificates (a data plane's client certificate, the cluster CA and server certificate) are
/// spoken of from this long before they expire, at WARN...
pub const CERT_WARN_FROM: time::Duration = time::Duration::days(30);
/// ...and from this long before, at ERROR.
pub const CERT_ERROR_FROM: time::Duration = time::Duration::days(7);

/// How urgent a certificate's expiry is: the one rule the control plane's reminders and the
/// agent's own notices share. How often each repeats is theirs to choose (the agent, which is
/// cut off by an expired certificate, says so every minute; the control plane, which may hold
/// thousands, once a day per certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertStage {
    /// [`CERT_WARN_FROM`] or less left: WARN.
    Expiring,
    /// [`CERT_ERROR_FROM`] or less left: ERROR.
    ExpiringSoon,
    /// Expired: ERROR.
    Expired,
}

impl CertStage {
    /// The stage of a certificate with `left` until it expires; `None` while more than
    /// [`CERT_WARN_FROM`] is left. Expiry itself (`left` = 0) is expired.
    pub fn at(left: time::Duration) -> Option<Self> {
        if left <= time::Duration::ZERO {
            Some(Self::Expired)
        } else if left <= CERT_ERROR_FROM {
            Some(Self::ExpiringSoon)
        } else if left <= CERT_WARN_FROM {
            Some(Self::Expiring)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_stages_at_their_boundaries() {
        let at = |seconds: i64| CertStage::at(time::Duration::seconds(seconds));
        let day = 86_400;
        assert_eq!(at(30 * day + 1), None);
        assert_eq!(at(30 * day), Some(CertStage::Expiring));
        assert_eq!(at(7 * day + 1), Some(CertStage::Expiring));
        assert_eq!(at(7 * day), Some(CertStage::ExpiringSoon));
        assert_eq!(at(1), Some(CertStage::ExpiringSoon));
        assert_eq!(at(0), Some(CertStage::Expired));
        assert_eq!(at(-day), Some(CertStage::Expired));
    }
    use time::macros::date;

    #[test]
    fn a_license_ends_at_the_end_of_its_expiration_date() {
        // 2030-02-01T00:00:00Z.
        assert_eq!(license_end(date!(2030 - 01 - 31)), 1_896_134_400);
    }

    fn stage_on(today: Date) -> Option<ExpiryStage> {
        expiry_notice(date!(2026 - 12 - 31), today).map(|n| n.stage)
    }

    #[test]
    fn stages_change_exactly_at_90_30_and_after_the_expiration_date() {
        // 2026-12-31 minus 90 days is 2026-10-02; minus 30 days is 2026-12-01.
        assert_eq!(stage_on(date!(2026 - 10 - 01)), None);
        assert_eq!(
            stage_on(date!(2026 - 10 - 02)),
            Some(ExpiryStage::Approaching)
        );
        assert_eq!(
            stage_on(date!(2026 - 11 - 30)),
            Some(ExpiryStage::Approaching)
        );
        assert_eq!(stage_on(date!(2026 - 12 - 01)), Some(ExpiryStage::Imminent));
        assert_eq!(stage_on(date!(2026 - 12 - 31)), Some(ExpiryStage::Imminent));
        assert_eq!(stage_on(date!(2027 - 01 - 01)), Some(ExpiryStage::Expired));
        assert_eq!(stage_on(date!(2030 - 06 - 01)), Some(ExpiryStage::Expired));
        assert_eq!(stage_on(date!(2020 - 01 - 01)), None);
    }

    #[test]
    fn days_left_counts_to_the_expiration_date() {
        let expiration = date!(2026 - 12 - 31);
        let on = |today| expiry_notice(expiration, today).unwrap().days_left;
        assert_eq!(on(date!(2026 - 10 - 02)), 90);
        assert_eq!(on(date!(2026 - 12 - 31)), 0);
        assert_eq!(on(date!(2027 - 01 - 01)), -1);
        assert_eq!(ExpiryStage::Expired.severity(), "critical");
    }
}
