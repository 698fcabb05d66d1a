//! Storage behind one trait, so the embedded sled backend, the in-memory backend used by tests
//! and later a PostgreSQL backend are interchangeable.
//!
//! The contract every backend keeps: when a write method returns `Ok`, the write is durable
//! (the Admin API answers only after that), and `put_license` / `delete_license` record the new
//! revision atomically with the change. Uniqueness of license signatures is decided by the
//! license service, which serialises license writes; backends only persist.

use async_trait::async_trait;
use uuid::Uuid;

use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};

#[cfg(test)]
mod conformance;
pub mod memory;
pub mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// A storage failure: the operation did not happen (or its durability is unknown).
#[derive(Debug, thiserror::Error)]
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

    /// Makes every write so far durable (used on shutdown).
    async fn flush(&self) -> StoreResult<()>;
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
