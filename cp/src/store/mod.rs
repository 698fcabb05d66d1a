//! Storage behind one trait, so the embedded sled backend, the in-memory backend used by tests
//! and later a PostgreSQL backend are interchangeable.
//!
//! The contract every backend keeps: when a write method returns `Ok`, the write is durable
//! (the Admin API answers only after that), and `put_license` / `delete_license` /
//! `apply_license_batch` record the new revision atomically with the change, and
//! `apply_license_batch` and `record_usage` apply a whole batch (of license writes, of usage
//! reports) atomically (all or none) with one flush. Uniqueness of license signatures is decided by the
//! license service, which serialises license writes; backends only persist.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use async_trait::async_trait;
use uuid::Uuid;

use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};
use crate::usage::{UsageMonth, UsageRow, UsageSubmission};

#[cfg(test)]
mod conformance;
pub mod memory;
pub mod sled_store;

pub use memory::{LicenseFault, MemoryStore};
pub use sled_store::SledStore;

/// A storage failure: the operation did not happen (or its durability is unknown).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What `/status` reports about storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StorageInfo {
    pub backend: &'static str,
    pub version: &'static str,
}

/// Every license and the revision they are current at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseRows {
    pub revision: Revision,
    pub licenses: Vec<StoredLicense>,
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn info(&self) -> StorageInfo;

    /// All licenses and the current revision, read consistently.
    async fn licenses(&self) -> StoreResult<LicenseRows>;
    /// Inserts or replaces `license` (by id) and sets the revision to `license.revision`.
    async fn put_license(&self, license: &StoredLicense) -> StoreResult<()>;
    /// Removes license `id` and sets the revision to `revision`; `false` when it did not exist
    /// (the revision is then left unchanged).
    async fn delete_license(&self, id: Uuid, revision: Revision) -> StoreResult<bool>;
    /// Applies `changes` in order, atomically (all or none) with one flush, and sets the
    /// revision to the last change's: group commit for the license service, which numbers the
    /// changes of a batch consecutively. An empty batch writes nothing.
    async fn apply_license_batch(&self, changes: &[LicenseChange]) -> StoreResult<()>;

    async fn insert_registration_token(&self, token: &RegistrationToken) -> StoreResult<()>;
    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>>;
    async fn delete_registration_token(&self, id: Uuid) -> StoreResult<bool>;
    /// Atomically checks the token with this hash (known, unexpired, uses left) and counts one
    /// use. Two concurrent registrations can never both take a token's last use.
    async fn consume_registration_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<RegistrationToken, TokenRefusal>>;

    async fn put_dataplane(&self, dataplane: &DataPlaneRecord) -> StoreResult<()>;
    async fn dataplane(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>>;
    async fn dataplanes(&self) -> StoreResult<Vec<DataPlaneRecord>>;
    /// Removes data plane `id`'s record (the purge of long-silent data planes); `false` when
    /// it did not exist.
    async fn delete_dataplane(&self, id: Uuid) -> StoreResult<bool>;

    async fn put_api_token(&self, token: &ApiToken) -> StoreResult<()>;
    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>>;
    async fn delete_api_token(&self, id: Uuid) -> StoreResult<bool>;

    /// Stores `user` unless a user with its username exists: `false` then, nothing written.
    async fn insert_user(&self, user: &User) -> StoreResult<bool>;
    async fn user(&self, username: &str) -> StoreResult<Option<User>>;
    async fn users(&self) -> StoreResult<Vec<User>>;
    async fn delete_user(&self, username: &str) -> StoreResult<bool>;

    /// Stores `app` unless an app with its client id exists: `false` then, nothing written.
    async fn insert_connected_app(&self, app: &ConnectedApp) -> StoreResult<bool>;
    async fn connected_app(&self, client_id: &str) -> StoreResult<Option<ConnectedApp>>;
    async fn connected_apps(&self) -> StoreResult<Vec<ConnectedApp>>;
    async fn delete_connected_app(&self, client_id: &str) -> StoreResult<bool>;

    /// Raises every (data plane, epoch, month) counter named in `submissions` to the count
    /// submitted when that is higher, in one atomic write made durable before returning (group
    /// commit: the usage ledger batches reports that arrive together). Returns, per submission
    /// and in its order, the count now stored for each of its months.
    async fn record_usage(
        &self,
        submissions: Vec<UsageSubmission>,
    ) -> StoreResult<Vec<Vec<(UsageMonth, u64)>>>;
    /// Every usage counter.
    async fn usage(&self) -> StoreResult<Vec<UsageRow>>;

    /// Makes every write so far durable (used on shutdown).
    async fn flush(&self) -> StoreResult<()>;
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
