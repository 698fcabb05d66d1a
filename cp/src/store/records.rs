//! The records storage keeps besides [`crate::model`]'s entities, and the rules every backend
//! applies to them, so a backend never reaches into the services that use it (usage metering,
//! registration) for a type or a rule.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

pub use licsync_common::usage_month::UsageMonth;
use uuid::Uuid;

use super::StoreResult;
use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};

/// Every license and the revision they are current at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseRows {
    pub revision: Revision,
    pub licenses: Vec<StoredLicense>,
}

/// What changed in the license set after a revision a node holds: what it must apply to be
/// current, deletions included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseChanges {
    /// The stored revision these changes bring a reader to.
    pub revision: Revision,
    /// Licenses written after the revision asked about (their newest version).
    pub upserted: Vec<StoredLicense>,
    /// Ids deleted after it (and not stored again since, unless also in `upserted`).
    pub deleted: Vec<Uuid>,
    /// `upserted` is the whole set: anything else is gone (a backend without tombstones
    /// answers this way).
    pub complete: bool,
}

impl LicenseChanges {
    /// The whole set, as a backend without a change feed answers.
    pub fn complete(rows: LicenseRows) -> Self {
        Self {
            revision: rows.revision,
            upserted: rows.licenses,
            deleted: Vec::new(),
            complete: true,
        }
    }
}

/// One control-plane node's row in the nodes registry, as it last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: Uuid,
    /// The cluster URL it tells data planes to use.
    pub advertised_url: String,
    pub version: String,
    pub started_at: i64,
    /// Its last heartbeat (its own clock, unix seconds).
    pub last_seen: i64,
    /// The data planes whose stream it held then.
    pub dataplanes: Vec<Uuid>,
}

/// One data plane's cumulative counts for one epoch, checked: at most
/// [`crate::usage::submission::MAX_BUCKETS`] months, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSubmission {
    pub dataplane: Uuid,
    pub epoch: Uuid,
    pub counts: Vec<(UsageMonth, u64)>,
}

/// One stored counter: the highest count `dataplane` reported for `month` in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    pub dataplane: Uuid,
    pub epoch: Uuid,
    pub month: UsageMonth,
    pub count: u64,
}

/// A usage counter's identity: (data plane, epoch, month).
pub type UsageKey = (Uuid, Uuid, UsageMonth);

/// What a batch of usage submissions does to storage.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergedUsage {
    /// Counters whose value rises, with their new value.
    pub changed: Vec<(UsageKey, u64)>,
    /// Per submission, in order: the value each of its counters has after the batch.
    pub recorded: Vec<Vec<(UsageMonth, u64)>>,
}

/// The max rule every backend applies to a batch: each counter becomes the maximum of what
/// `stored` holds and every count submitted for it, so duplicates, retries and reordering (also
/// within one batch) never add.
pub fn merge_usage(
    submissions: &[UsageSubmission],
    mut stored: impl FnMut(&UsageKey) -> StoreResult<Option<u64>>,
) -> StoreResult<MergedUsage> {
    // Per counter: (stored before, value after).
    let mut counters: HashMap<UsageKey, (Option<u64>, u64)> = HashMap::new();
    for submission in submissions {
        for &(month, count) in &submission.counts {
            let key = (submission.dataplane, submission.epoch, month);
            let entry = match counters.entry(key) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let before = stored(&key)?;
                    entry.insert((before, before.unwrap_or(0)))
                }
            };
            entry.1 = entry.1.max(count);
        }
    }
    let recorded = submissions
        .iter()
        .map(|s| {
            s.counts
                .iter()
                .map(|&(month, count)| {
                    let value = counters
                        .get(&(s.dataplane, s.epoch, month))
                        .map_or(count, |c| c.1);
                    (month, value)
                })
                .collect()
        })
        .collect();
    let changed = counters
        .into_iter()
        .filter(|(_, (before, after))| *before != Some(*after))
        .map(|(key, (_, after))| (key, after))
        .collect();
    Ok(MergedUsage { changed, recorded })
}

/// The refusal for a token record at `now`, or `None` when it may be used once more.
pub fn token_refusal(token: &RegistrationToken, now: i64) -> Option<TokenRefusal> {
    if now >= token.expires_at {
        Some(TokenRefusal::Expired {
            expired_at: token.expires_at,
        })
    } else if token.uses >= token.max_uses {
        Some(TokenRefusal::UsedUp {
            uses: token.uses,
            max_uses: token.max_uses,
        })
    } else {
        None
    }
}

/// One license write of a batch, carrying the revision it brings the set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseChange {
    /// Inserts or replaces the license (by id); its revision is `license.revision`.
    Put(StoredLicense),
    /// Removes the license, if stored.
    Delete { id: Uuid, revision: Revision },
}

impl LicenseChange {
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(license) => license.revision,
            Self::Delete { revision, .. } => *revision,
        }
    }
}

/// One audit record: who did what to which resource, from where, and how it ended. Kept for
/// `audit.retention` and served by `GET /audit`; never holds a secret (callers put ids and
/// names in it, never tokens or passwords).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: Uuid,
    /// When it happened, unix milliseconds (records are ordered by it, then by id).
    pub at_ms: i64,
    /// `token 'ci' (id ...)`, `user 'alice'`, `dataplane <id>`, or `-` when nobody was
    /// identified.
    pub actor: String,
    /// The caller's address.
    pub source: String,
    /// What was done: `POST /licenses`, `dataplane.register`, ...
    pub action: String,
    /// What it was done to: a path or an id.
    pub resource: String,
    /// `ok`, or why not (`denied (403)`, `failed (409)`, ...).
    pub result: String,
}

/// Every record of a store at one point in time (`GET /backup`, the automatic backup before a
/// schema upgrade, and what `licsync-cp restore` writes back): no write of any kind falls
/// between the reads of two of its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub licenses: LicenseRows,
    pub registration_tokens: Vec<RegistrationToken>,
    pub dataplanes: Vec<DataPlaneRecord>,
    pub api_tokens: Vec<ApiToken>,
    pub users: Vec<User>,
    pub connected_apps: Vec<ConnectedApp>,
    pub usage: Vec<UsageRow>,
    pub audit: Vec<AuditRecord>,
    /// The cluster's secrets as a shared store keeps them (sealed under the storage key), by
    /// name; empty for an embedded store, whose node keeps them in files.
    pub sealed_secrets: Vec<(String, Vec<u8>)>,
}
