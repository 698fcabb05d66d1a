//! Data-plane entitlement: the active license's `dataplanes` field against the data planes
//! registered here.
//!
//! Exceeding it is reported, not enforced, by default (as Kong does): a WARN in the log at
//! start, after a registration and hourly (at most one per [`WARN_EVERY`]), and
//! `entitlement_exceeded: true` in the usage report. With `licenses.enforce_dataplane_limit =
//! true`, a registration that would exceed it is refused with `FAILED_PRECONDITION`; such
//! registrations are then serialised, so two racing for the last place cannot both win.
//!
//! Counting registered data planes reads every record, so the count is cached as an upper
//! bound: counted exactly from storage when first needed and when the bound says the limit is
//! reached, and raised by one after each registration here. Nothing else adds data planes, so
//! the bound never undercounts a registration made through this process.
//!
//! It is given the fleet and the licenses it compares, not the whole control plane, so it
//! depends on the domain only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use licsync_common::license::License;
use uuid::Uuid;

use crate::dataplanes::DataPlanes;
use crate::licenses::{LicenseSet, Licenses};
use crate::store::{StoreError, StoreResult};

/// Least time between two entitlement warnings.
pub const WARN_EVERY: Duration = Duration::from_secs(10 * 60);

/// The license data planes are given: newest `updated_at`, ties to the one written last.
#[derive(Debug, Clone)]
pub struct ActiveLicense {
    pub id: Uuid,
    pub license: License,
}

impl ActiveLicense {
    /// The active license of `set`, parsed; `None` when there is none (UNLICENSED).
    pub fn of(set: &LicenseSet) -> Option<Self> {
        let stored = set.active()?;
        match License::parse(&stored.document) {
            Ok(license) => Some(Self {
                id: stored.id,
                license,
            }),
            Err(error) => {
                // Stored licenses were validated on the way in; this is a corrupt record.
                tracing::error!(event = "license.unparsable", license.id = %stored.id, %error, "The active license does not parse.");
                None
            }
        }
    }
}

/// Registered data planes against what the active license entitles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSize {
    pub registered: usize,
    /// The active license's `dataplanes`; `None` without a license or without the field.
    pub entitled: Option<u64>,
}

impl FleetSize {
    pub fn exceeded(&self) -> bool {
        self.entitled
            .is_some_and(|entitled| self.registered as u64 > entitled)
    }
}

/// Why a registration was refused or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "the control plane's license entitles {entitled} data planes and {registered} are registered; licenses.enforce_dataplane_limit is on, so no more may register. Install a license with a larger `dataplanes` value, or set licenses.enforce_dataplane_limit = false on the control plane"
    )]
    LimitReached { entitled: u64, registered: usize },
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Held from a registration's admission until its record is stored.
pub struct Admission<'a> {
    _serialised: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// Entitlement checks and warnings; one per control plane.
pub struct Entitlement {
    enforce: bool,
    dataplanes: Arc<DataPlanes>,
    licenses: Arc<Licenses>,
    admission: tokio::sync::Mutex<()>,
    /// Upper bound on registered, unrevoked data planes; `None` until counted.
    registered: Mutex<Option<usize>>,
    last_warning: Mutex<Option<Instant>>,
}

impl Entitlement {
    /// `enforce`: `licenses.enforce_dataplane_limit`; the fleet to count and the licenses
    /// whose active one says how many data planes are entitled.
    pub fn new(enforce: bool, dataplanes: Arc<DataPlanes>, licenses: Arc<Licenses>) -> Self {
        Self {
            enforce,
            dataplanes,
            licenses,
            admission: tokio::sync::Mutex::new(()),
            registered: Mutex::new(None),
            last_warning: Mutex::new(None),
        }
    }

    /// The exact size of the fleet against the active license, from storage.
    pub async fn fleet_size(&self) -> StoreResult<FleetSize> {
        let registered = self.recount().await?;
        Ok(FleetSize {
            registered,
            entitled: self.entitled(),
        })
    }

    /// Call before a registration takes a token's use: refuses when enforcement is on and the
    /// limit is reached. Keep the admission until the new record is stored.
    pub async fn admit(&self) -> Result<Admission<'_>, AdmissionError> {
        if !self.enforce {
            return Ok(Admission { _serialised: None });
        }
        let guard = self.admission.lock().await;
        if let Some(entitled) = self.entitled() {
            let mut registered = self.bound().await?;
            if registered as u64 >= entitled {
                registered = self.recount().await?;
            }
            if registered as u64 >= entitled {
                return Err(AdmissionError::LimitReached {
                    entitled,
                    registered,
                });
            }
        }
        Ok(Admission {
            _serialised: Some(guard),
        })
    }

    /// Call once a registration's record is stored (still holding its admission): counts it and
    /// warns when the fleet now exceeds the license.
    pub async fn registered(&self, _admission: Admission<'_>) {
        if let Some(bound) = self.lock_registered().as_mut() {
            *bound += 1;
        }
        let Some(entitled) = self.entitled() else {
            return;
        };
        match self.bound().await {
            Ok(bound) if bound as u64 > entitled && self.warning_due() => self.check().await,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(event = "entitlement.count_failed", %error, "Could not count registered data planes.");
            }
        }
    }

    /// Counts the fleet exactly and warns (at most once per [`WARN_EVERY`]) when it exceeds the
    /// active license; run at start and periodically.
    pub async fn check(&self) {
        let size = match self.fleet_size().await {
            Ok(size) => size,
            Err(error) => {
                tracing::warn!(event = "entitlement.count_failed", %error, "Could not count registered data planes.");
                return;
            }
        };
        if !size.exceeded() || !self.may_warn() {
            return;
        }
        let active = ActiveLicense::of(&self.licenses.current());
        tracing::warn!(
            event = "entitlement.exceeded",
            registered = size.registered,
            entitled = size.entitled.unwrap_or_default(),
            license.id = %active.as_ref().map(|a| a.id.to_string()).unwrap_or_default(),
            license_key = %active.as_ref().map(|a| a.license.license_key()).unwrap_or_default(),
            enforced = self.enforce,
            "More data planes are registered than the active license entitles; the usage report says so (entitlement_exceeded). Install a license with a larger `dataplanes` value."
        );
    }

    /// Whether a warning may be logged now (without taking the chance).
    fn warning_due(&self) -> bool {
        let last = *self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| at.elapsed() >= WARN_EVERY)
    }

    /// Takes the chance to warn, if it is due.
    fn may_warn(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn lock_registered(&self) -> std::sync::MutexGuard<'_, Option<usize>> {
        self.registered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached upper bound, counting first when there is none.
    async fn bound(&self) -> StoreResult<usize> {
        let cached = *self.lock_registered();
        match cached {
            Some(bound) => Ok(bound),
            None => self.recount().await,
        }
    }

    /// Counts registered, unrevoked data planes in storage and caches the result.
    async fn recount(&self) -> StoreResult<usize> {
        let count = self.dataplanes.unrevoked_records().await?.len();
        *self.lock_registered() = Some(count);
        Ok(count)
    }

    /// The active license's `dataplanes` field.
    fn entitled(&self) -> Option<u64> {
        ActiveLicense::of(&self.licenses.current())?
            .license
            .dataplanes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeded_only_past_a_stated_limit() {
        let size = |registered, entitled| FleetSize {
            registered,
            entitled,
        };
        assert!(!size(3, Some(3)).exceeded());
        assert!(size(4, Some(3)).exceeded());
        assert!(size(1, Some(0)).exceeded());
        assert!(!size(10_000, None).exceeded());
    }

    #[tokio::test]
    async fn warnings_are_rate_limited() {
        let store = Arc::new(crate::store::MemoryStore::new());
        let trusted = licsync_common::license::TrustedKeys::default();
        let licenses = Arc::new(Licenses::load(store.clone(), trusted).await.unwrap());
        let entitlement = Entitlement::new(false, Arc::new(DataPlanes::new(store)), licenses);
        assert!(entitlement.may_warn());
        assert!(!entitlement.may_warn());
        *entitlement.last_warning.lock().unwrap() =
            Instant::now().checked_sub(WARN_EVERY + Duration::from_secs(1));
        assert!(entitlement.may_warn());
    }
}
