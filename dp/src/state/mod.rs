//! What the agent holds: the licenses the control plane sent and the revision they bring it to.
//!
//! The state is persisted before the license file is touched and before the control plane is
//! told anything, so a restarted agent serves the last license at once and tells the control
//! plane exactly what it holds (nothing it has is sent again).
//!
//! Storage is behind [`StateStore`]: [`FileStateStore`] for the agent (one JSON file replaced
//! atomically), [`MemoryStateStore`] for tests and the fleet benchmark. The whole state is
//! saved at once: it is a handful of small documents. Usage counters, which change on every
//! request, live in a file of their own and are flushed on a timer ([`crate::usage`]).

mod file;
mod memory;

use std::path::PathBuf;

use licsync_common::active::{self, Choice, Rank};
use licsync_common::license::License;
use serde::{Deserialize, Serialize};
use time::Date;

pub use file::FileStateStore;
pub use memory::MemoryStateStore;

/// Version of the on-disk layout, written in every state file.
pub const STATE_FORMAT: u32 = 1;

/// A license as the control plane sent it, after its signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLicense {
    pub id: String,
    /// The document exactly as the control plane stores it; written byte for byte.
    pub document: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Control-plane revision of the write that produced this version.
    pub revision: u64,
}

/// Which held license the gateway is given: Kong's rule, or with `prefer_in_force` the newest
/// license still in force when the newest one has expired (`license.prefer_in_force`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveRule {
    pub prefer_in_force: bool,
}

impl HeldLicense {
    /// Whether the license is in force on `today` (UTC). A held license verified on arrival;
    /// one that no longer parses (a state file edited by hand) counts as in force, so it
    /// changes nothing in the choice.
    pub fn in_force_on(&self, today: Date) -> bool {
        License::parse(&self.document).map_or(true, |license| license.in_force_on(today))
    }

    /// What the active-license rule compares.
    pub fn rank(&self) -> Rank<&str> {
        Rank {
            updated_at: self.updated_at,
            revision: self.revision,
            id: &self.id,
        }
    }
}

/// Everything the agent keeps between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpState {
    pub format: u32,
    /// The control-plane revision of the last update applied (0: none yet).
    pub revision: u64,
    /// Unix seconds of the last update applied.
    pub synced_at: Option<i64>,
    /// Held licenses, sorted by id.
    pub licenses: Vec<HeldLicense>,
}

impl Default for DpState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            revision: 0,
            synced_at: None,
            licenses: Vec::new(),
        }
    }
}

impl DpState {
    /// Adds or replaces the license with `license.id`.
    pub fn upsert(&mut self, license: HeldLicense) {
        match self
            .licenses
            .binary_search_by(|held| held.id.cmp(&license.id))
        {
            Ok(index) => self.licenses[index] = license,
            Err(index) => self.licenses.insert(index, license),
        }
    }

    /// Removes the license `id`; returns it when it was held.
    pub fn remove(&mut self, id: &str) -> Option<HeldLicense> {
        let index = self
            .licenses
            .binary_search_by(|held| held.id.as_str().cmp(id))
            .ok()?;
        Some(self.licenses.remove(index))
    }

    pub fn get(&self, id: &str) -> Option<&HeldLicense> {
        self.licenses
            .binary_search_by(|held| held.id.as_str().cmp(id))
            .ok()
            .map(|index| &self.licenses[index])
    }

    /// The license the gateway should use: the newest `updated_at`, ties to the one written
    /// last at the control plane (the higher revision), then to the higher id so the choice is
    /// the same on every data plane.
    pub fn active(&self) -> Option<&HeldLicense> {
        active::newest(&self.licenses, HeldLicense::rank)
    }

    /// The license `rule` serves on `today`, and the newest license when it has expired while
    /// another held one is in force ([`licsync_common::active::choose`]).
    pub fn choose(&self, rule: ActiveRule, today: Date) -> Choice<&HeldLicense> {
        active::choose(
            &self.licenses,
            HeldLicense::rank,
            |license| license.in_force_on(today),
            rule.prefer_in_force,
        )
    }
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state file {path} is damaged ({reason}); move it aside and restart: the agent fetches its licenses from the control plane again"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "state file {path} was written by a newer licsync-dp (format {found}, this one reads {STATE_FORMAT}); upgrade licsync-dp"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot save state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// Where [`DpState`] lives between runs.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The saved state, or the empty state when nothing was saved yet.
    async fn load(&self) -> Result<DpState, StateError>;
    /// Replaces the saved state; durable when it returns `Ok`.
    async fn save(&self, state: &DpState) -> Result<(), StateError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn held(id: &str, updated_at: i64, revision: u64) -> HeldLicense {
        HeldLicense {
            id: id.to_owned(),
            document: format!("{{\"license\":\"{id}\"}}"),
            created_at: 1,
            updated_at,
            revision,
        }
    }

    fn signed(id: &str, updated_at: i64, revision: u64, expires: &str) -> HeldLicense {
        use licsync_common::license::{SigningKey, sign_document};
        let (key, _) = SigningKey::generate().unwrap();
        let payload = [
            ("customer", id),
            ("license_key", "K"),
            ("license_creation_date", "2020-01-01"),
            ("license_expiration_date", expires),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        HeldLicense {
            document: sign_document(&payload, &key),
            ..held(id, updated_at, revision)
        }
    }

    #[test]
    fn a_newer_expired_license_is_served_by_kongs_rule_unless_in_force_is_preferred() {
        let today = time::macros::date!(2026 - 12 - 01);
        let mut state = DpState::default();
        state.upsert(signed("old", 100, 1, "2027-12-31"));
        state.upsert(signed("new", 200, 2, "2026-11-30"));
        let kong = state.choose(ActiveRule::default(), today);
        assert_eq!(kong.active.unwrap().id, "new");
        assert_eq!(kong.expired_over_in_force.unwrap().id, "new");
        let prefer = ActiveRule {
            prefer_in_force: true,
        };
        let chosen = state.choose(prefer, today);
        assert_eq!(chosen.active.unwrap().id, "old");
        assert_eq!(chosen.expired_over_in_force.unwrap().id, "new");
        // On its last day the newest license is still in force: nothing to report.
        let last_day = time::macros::date!(2026 - 11 - 30);
        let chosen = state.choose(prefer, last_day);
        assert_eq!(chosen.active.unwrap().id, "new");
        assert!(chosen.expired_over_in_force.is_none());
    }

    #[test]
    fn active_is_newest_then_last_written() {
        let mut state = DpState::default();
        assert!(state.active().is_none());
        state.upsert(held("b", 100, 5));
        state.upsert(held("a", 200, 3));
        assert_eq!(state.active().unwrap().id, "a", "newest updated_at wins");
        state.upsert(held("c", 200, 4));
        assert_eq!(
            state.active().unwrap().id,
            "c",
            "a tie goes to the higher revision"
        );
        state.upsert(held("a", 200, 9));
        assert_eq!(
            state.active().unwrap().id,
            "a",
            "a rewrite at the CP wins the tie"
        );
        state.remove("a");
        assert_eq!(state.active().unwrap().id, "c");
    }

    #[test]
    fn upsert_replaces_and_keeps_ids_sorted() {
        let mut state = DpState::default();
        for id in ["c", "a", "b", "a"] {
            state.upsert(held(id, 1, 1));
        }
        let ids: Vec<_> = state.licenses.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(state.get("b").is_some());
        assert!(state.remove("zz").is_none());
    }
}
