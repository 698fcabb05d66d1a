//! What the status page shows, read once per request through the same domain calls the
//! Admin API makes (`ControlPlane::fleet` as `GET /clustering/data-planes`, the license
//! snapshot as `GET /licenses`, [`crate::usage::report::totals`] as `GET /license/report`),
//! then judged by pure functions the templates and their tests share.
//!
//! The expiry colours follow the log's rules: a license by [`licsync_common::expiry`]'s
//! 90/30/0-day stages (as `license.expiring` / `license.expired` are logged), a certificate by
//! [`CertStage`] (30 days / 7 days / expired, as the certificate reminders are logged).

use std::collections::HashMap;

use licsync_common::expiry::{CertStage, ExpiryStage, expiry_notice};
use licsync_common::license::License;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::dataplanes::{DataPlaneView, Health, SyncStatus};
use crate::ha::nodes::ControlPlaneView;
use crate::licenses::LicenseSet;
use crate::state::ControlPlane;
use crate::store::StoreResult;

/// Everything the pages show of the fleet and its licenses, as of `now`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Unix seconds.
    pub now: i64,
    pub dataplanes: Vec<DataPlaneView>,
    /// The control-plane nodes (this one alone without a shared database).
    pub nodes: Vec<ControlPlaneView>,
    pub licenses: Vec<LicenseInfo>,
    /// Why storage does not answer, when it does not.
    pub storage_problem: Option<String>,
    /// The node that rendered the page.
    pub this_node: Uuid,
}

/// One stored license, parsed for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseInfo {
    pub id: Uuid,
    pub customer: String,
    pub license_key: String,
    pub product: Option<String>,
    pub created: Date,
    pub expires: Date,
    /// The `dataplanes` it entitles.
    pub entitled: Option<u64>,
    pub updated_at: i64,
    /// The license data planes are given (newest `updated_at`).
    pub active: bool,
}

/// How urgent an expiry is, as the page colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    Ok,
    Warning,
    Error,
    Expired,
}

impl Urgency {
    /// The CSS class (and `data-urgency` value) of this urgency.
    pub fn class(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Expired => "expired",
        }
    }

    /// Of a license expiring on `expires`, on `today` (UTC): Kong's 90/30/0-day stages.
    pub fn of_license(expires: Date, today: Date) -> Self {
        match expiry_notice(expires, today).map(|n| n.stage) {
            None => Self::Ok,
            Some(ExpiryStage::Approaching) => Self::Warning,
            Some(ExpiryStage::Imminent) => Self::Error,
            Some(ExpiryStage::Expired) => Self::Expired,
        }
    }

    /// Of a certificate expiring at `expires_at`, at `now` (unix seconds).
    pub fn of_certificate(expires_at: i64, now: i64) -> Self {
        match CertStage::at(time::Duration::seconds(expires_at.saturating_sub(now))) {
            None => Self::Ok,
            Some(CertStage::Expiring) => Self::Warning,
            Some(CertStage::ExpiringSoon) => Self::Error,
            Some(CertStage::Expired) => Self::Expired,
        }
    }
}

/// Days from `today` to `expires` (0 on the expiration date, negative once expired).
pub fn days_left(expires: Date, today: Date) -> i64 {
    (expires - today).whole_days()
}

/// A license key as the page shows it: enough to tell keys apart, not enough to copy one.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "•".repeat(chars.len().max(4));
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

impl LicenseInfo {
    /// Every license of `set`, newest expiry last; a document that no longer parses (a corrupt
    /// record) is left out, as the active-license rule leaves it out.
    pub fn of_set(set: &LicenseSet) -> Vec<Self> {
        let active = set.active().map(|l| l.id);
        let mut infos: Vec<Self> = set
            .licenses
            .values()
            .filter_map(|stored| {
                let license = License::parse(&stored.document).ok()?;
                Some(Self::new(
                    stored.id,
                    &license,
                    stored.updated_at,
                    Some(stored.id) == active,
                ))
            })
            .collect();
        infos.sort_by_key(|l| (l.expires, l.id));
        infos
    }

    /// The display form of `license`.
    pub fn new(id: Uuid, license: &License, updated_at: i64, active: bool) -> Self {
        Self {
            id,
            customer: license.customer().to_owned(),
            license_key: license.license_key().to_owned(),
            product: license.payload().get("product_subscription").cloned(),
            created: license.creation_date(),
            expires: license.expiration_date(),
            entitled: license.dataplanes(),
            updated_at,
            active,
        }
    }
}

impl Snapshot {
    /// Reads the fleet, the nodes and the licenses from `cp` as of `now`.
    pub async fn read(cp: &ControlPlane, now: i64) -> StoreResult<Self> {
        let dataplanes = cp.fleet(now).await?;
        let nodes = cp.nodes().list(now).await?;
        Ok(Self {
            now,
            dataplanes,
            nodes,
            licenses: LicenseInfo::of_set(&cp.licenses().current()),
            storage_problem: cp.storage_health().unavailable(),
            this_node: cp.nodes().id(),
        })
    }

    /// Today, UTC.
    pub fn today(&self) -> Date {
        OffsetDateTime::from_unix_timestamp(self.now)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .date()
    }

    /// The active license, if any.
    pub fn active(&self) -> Option<&LicenseInfo> {
        self.licenses.iter().find(|l| l.active)
    }

    /// Whether `dp` serves the active license as it now stands (same id, same `updated_at`).
    pub fn holds_current(&self, dp: &DataPlaneView) -> bool {
        match (self.active(), dp.license_id) {
            (Some(active), Some(held)) => {
                held == active.id && dp.license_updated_at == Some(active.updated_at)
            }
            // Nothing to hold, and nothing held: current.
            (None, None) => true,
            _ => false,
        }
    }

    /// Names of the control-plane nodes by id (their advertised URL).
    pub fn node_names(&self) -> HashMap<Uuid, &str> {
        self.nodes
            .iter()
            .map(|n| (n.id, n.advertised_url.as_str()))
            .collect()
    }

    /// What needs an operator's action, most urgent first.
    pub fn warnings(&self) -> Vec<Warning> {
        let today = self.today();
        let mut warnings = Vec::new();
        if let Some(problem) = &self.storage_problem {
            warnings.push(Warning::new(
                Urgency::Expired,
                "storage",
                format!(
                    "Storage does not answer: {problem}. Nothing can be written until it does."
                ),
            ));
        }
        match self.active() {
            None => warnings.push(Warning::new(
                Urgency::Error,
                "no-license",
                "No license is stored: data planes have none to serve. Add one with POST /licenses.".into(),
            )),
            Some(active) => {
                let days = days_left(active.expires, today);
                let urgency = Urgency::of_license(active.expires, today);
                let text = if days < 0 {
                    format!(
                        "The active license expired on {} ({} days ago); it is still served. Install a renewed license.",
                        active.expires, -days
                    )
                } else {
                    format!(
                        "The active license expires in {days} days, on {}. Install a renewed license before then.",
                        active.expires
                    )
                };
                if urgency != Urgency::Ok {
                    warnings.push(Warning::new(urgency, "license-expiry", text));
                }
                if let Some(entitled) = active.entitled
                    && self.dataplanes.len() as u64 > entitled
                {
                    warnings.push(Warning::new(
                        Urgency::Error,
                        "entitlement-exceeded",
                        format!(
                            "{} data planes are registered; the license entitles {entitled}.",
                            self.dataplanes.len()
                        ),
                    ));
                }
            }
        }
        let mut certs = [0usize; 3];
        let mut rejected = 0;
        let mut failed = 0;
        let mut incompatible = 0;
        let mut stale = 0;
        for dp in &self.dataplanes {
            match Urgency::of_certificate(dp.cert_expires_at, self.now) {
                Urgency::Ok => {}
                Urgency::Warning => certs[0] += 1,
                Urgency::Error => certs[1] += 1,
                Urgency::Expired => certs[2] += 1,
            }
            match dp.sync_status {
                SyncStatus::LicenseRejected => rejected += 1,
                SyncStatus::ApplyFailed => failed += 1,
                SyncStatus::VersionIncompatible => incompatible += 1,
                _ => {}
            }
            if dp.connected && !self.holds_current(dp) {
                stale += 1;
            }
        }
        let plural = |n: usize| if n == 1 { "data plane" } else { "data planes" };
        for (count, urgency, kind, what) in [
            (
                certs[2],
                Urgency::Expired,
                "certificates-expired",
                "with an expired certificate: renew with licsync-dp registration renew",
            ),
            (
                certs[1],
                Urgency::Error,
                "certificates-expiring-soon",
                "whose certificate expires within 7 days",
            ),
            (
                certs[0],
                Urgency::Warning,
                "certificates-expiring",
                "whose certificate expires within 30 days",
            ),
            (
                rejected,
                Urgency::Error,
                "sync-rejected",
                "refused a license they were sent (a signature they cannot verify)",
            ),
            (
                failed,
                Urgency::Error,
                "sync-apply-failed",
                "could not apply their last update",
            ),
            (
                incompatible,
                Urgency::Warning,
                "version-incompatible",
                "run a version this control plane does not sync",
            ),
            (
                stale,
                Urgency::Warning,
                "old-license",
                "connected but not serving the current license",
            ),
        ] {
            if count > 0 {
                warnings.push(Warning::new(
                    urgency,
                    kind,
                    format!("{count} {} {what}.", plural(count)),
                ));
            }
        }
        warnings.sort_by_key(|w| std::cmp::Reverse(w.urgency));
        warnings
    }

    /// Data planes per health word, in a fixed order.
    pub fn health_counts(&self) -> [(Health, usize); 4] {
        let mut counts = [
            (Health::Healthy, 0),
            (Health::Degraded, 0),
            (Health::Unhealthy, 0),
            (Health::Uninitialized, 0),
        ];
        for dp in &self.dataplanes {
            if let Some(slot) = counts.iter_mut().find(|(h, _)| *h == dp.health) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// Data planes per sync status, in a fixed order.
    pub fn sync_counts(&self) -> [(SyncStatus, usize); 5] {
        let mut counts = [
            (SyncStatus::Normal, 0),
            (SyncStatus::Unknown, 0),
            (SyncStatus::LicenseRejected, 0),
            (SyncStatus::ApplyFailed, 0),
            (SyncStatus::VersionIncompatible, 0),
        ];
        for dp in &self.dataplanes {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == dp.sync_status) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// How many data planes hold each license, by license id.
    pub fn holders(&self) -> HashMap<Uuid, Vec<&DataPlaneView>> {
        let mut by_license: HashMap<Uuid, Vec<&DataPlaneView>> = HashMap::new();
        for dp in &self.dataplanes {
            if let Some(id) = dp.license_id {
                by_license.entry(id).or_default().push(dp);
            }
        }
        by_license
    }
}

/// Something that needs action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub urgency: Urgency,
    /// Stable name (`data-warning` on the page).
    pub kind: &'static str,
    pub text: String,
}

impl Warning {
    fn new(urgency: Urgency, kind: &'static str, text: String) -> Self {
        Self {
            urgency,
            kind,
            text,
        }
    }
}

/// The word a page shows for a health.
pub fn health_word(health: Health) -> &'static str {
    match health {
        Health::Healthy => "HEALTHY",
        Health::Degraded => "DEGRADED",
        Health::Unhealthy => "UNHEALTHY",
        Health::Uninitialized => "UNINITIALIZED",
    }
}

/// The word a page shows for a sync status (the API's `sync_status` value).
pub fn sync_word(status: SyncStatus) -> &'static str {
    match status {
        SyncStatus::Unknown => "unknown",
        SyncStatus::Normal => "normal",
        SyncStatus::LicenseRejected => "license_rejected",
        SyncStatus::ApplyFailed => "apply_failed",
        SyncStatus::VersionIncompatible => "version_incompatible",
    }
}

/// `2026-12-02 01:30 UTC` for unix seconds `at` (or `-` when it is out of range).
pub fn timestamp(at: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(at) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "-".into(),
    }
}

/// How long ago `at` was, as of `now`, in the largest whole unit (`45 s ago`, `3 min ago`).
pub fn ago(at: i64, now: i64) -> String {
    let age = now.saturating_sub(at).max(0);
    match age {
        0..60 => format!("{age} s ago"),
        60..3600 => format!("{} min ago", age / 60),
        3600..86_400 => format!("{} h ago", age / 3600),
        _ => format!("{} d ago", age / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn license_urgency_follows_the_log_stages() {
        let expires = date!(2026 - 12 - 31);
        let on = |d| Urgency::of_license(expires, d);
        assert_eq!(on(date!(2026 - 10 - 01)), Urgency::Ok);
        assert_eq!(on(date!(2026 - 10 - 02)), Urgency::Warning);
        assert_eq!(on(date!(2026 - 12 - 01)), Urgency::Error);
        assert_eq!(on(date!(2026 - 12 - 31)), Urgency::Error);
        assert_eq!(on(date!(2027 - 01 - 01)), Urgency::Expired);
        assert_eq!(days_left(expires, date!(2026 - 12 - 30)), 1);
    }

    #[test]
    fn certificate_urgency_follows_the_reminders() {
        let day = 86_400;
        assert_eq!(Urgency::of_certificate(31 * day, 0), Urgency::Ok);
        assert_eq!(Urgency::of_certificate(30 * day, 0), Urgency::Warning);
        assert_eq!(Urgency::of_certificate(7 * day, 0), Urgency::Error);
        assert_eq!(Urgency::of_certificate(0, 0), Urgency::Expired);
    }

    #[test]
    fn keys_are_masked_and_times_read_as_people_say_them() {
        assert_eq!(
            mask_key("00141000017ODj3AAG_a1V41000004wT0OEAU"),
            "0014…OEAU"
        );
        assert_eq!(mask_key("short"), "•••••");
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(ago(100, 145), "45 s ago");
        assert_eq!(ago(0, 7_200), "2 h ago");
        assert_eq!(ago(10, 0), "0 s ago");
    }
}
