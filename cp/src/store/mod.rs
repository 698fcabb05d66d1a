//! Storage behind one set of traits, so the embedded sled backend, the in-memory backend used by tests
//! and later a PostgreSQL backend are interchangeable.
//!
//! The contract every backend keeps: when a write method returns `Ok`, the write is durable
//! (the Admin API answers only after that), and `put_license` / `delete_license` /
//! `apply_license_batch` record the new revision atomically with the change, and
//! `apply_license_batch` and `record_usage` apply a whole batch (of license writes, of usage
//! reports) atomically (all or none) with one flush. Uniqueness of license signatures is decided by the
//! license service, which serialises license writes on one node; a backend several nodes share
//! (PostgreSQL) refuses a batch decided against an older revision than it holds
//! ([`StoreError::Conflict`]), so writes on two nodes never share a revision.

#[cfg(test)]
mod conformance;
pub mod memory;
pub mod postgres;
pub mod records;
mod sled_schema;
pub mod sled_store;
pub mod storage_key;
mod traits;

use crate::model::Revision;
pub use memory::{LicenseFault, MemoryStore};
pub use postgres::PostgresStore;
pub use records::{
    AuditRecord, LicenseChange, LicenseChanges, LicenseRows, MergedUsage, NodeRecord,
    StoreSnapshot, UsageKey, UsageMonth, UsageRow, UsageSubmission, merge_usage, token_refusal,
};
pub use sled_store::SledStore;
pub use traits::{
    AuditStore, DataPlaneStore, LicenseStore, NodeStore, PrincipalStore, SecretStore,
    SnapshotStore, StoreMeta, TokenStore, UsageStore,
};

/// A storage failure: the operation did not happen (or its durability is unknown).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    /// The storage server cannot be reached (a shared database is down or unreachable): the
    /// operation did not happen, or did not answer; retrying later may succeed. The Admin API
    /// answers it `503`, and `/health/ready` reports not ready while it lasts.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// A batch of license writes was decided against revision `expected`, but another node
    /// committed first and storage is at `found`: nothing was written. The license service
    /// re-reads storage and decides the writes again.
    #[error(
        "license writes were decided at revision {expected} but storage is at revision {found} \
         (another control-plane node wrote first); nothing was written"
    )]
    Conflict { expected: Revision, found: Revision },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What `/status` reports about storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StorageInfo {
    /// `sled`, `postgres` or `memory`.
    pub backend: &'static str,
    /// The backend's version.
    pub version: &'static str,
}

/// The whole storage contract: every aggregate's trait. Implemented for every type that
/// implements them all, so `Arc<dyn Store>` is what services hold; a caller imports the
/// aggregate traits whose methods it calls.
pub trait Store:
    StoreMeta
    + LicenseStore
    + TokenStore
    + DataPlaneStore
    + PrincipalStore
    + UsageStore
    + AuditStore
    + NodeStore
    + SnapshotStore
    + 'static
{
}

impl<T> Store for T where
    T: StoreMeta
        + LicenseStore
        + TokenStore
        + DataPlaneStore
        + PrincipalStore
        + UsageStore
        + AuditStore
        + NodeStore
        + SnapshotStore
        + ?Sized
        + 'static
{
}
