//! The storage contract, one trait per aggregate, so a backend (and a reader of it) sees each
//! kind of record on its own: licenses, registration tokens, data planes, principals and usage,
//! plus what concerns the whole store ([`StoreMeta`]). [`super::Store`] is all of them at once.
//! [`SecretStore`] stands apart: only a store several nodes share (PostgreSQL) holds the
//! cluster's secrets; an embedded store's node keeps them in files.

use async_trait::async_trait;
use uuid::Uuid;

use super::records::{
    AuditRecord, LicenseChange, LicenseChanges, LicenseRows, NodeRecord, StoreSnapshot, UsageMonth,
    UsageRow, UsageSubmission,
};
use super::{StorageInfo, StoreResult};
use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};

/// What concerns the whole store rather than one kind of record.
#[async_trait]
pub trait StoreMeta: Send + Sync {
    fn info(&self) -> StorageInfo;
    /// Whether storage answers now (`/health/ready` and the storage watch ask it every few
    /// seconds). Embedded stores always do; a database server is asked a trivial query.
    async fn check(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Makes every write so far durable (used on shutdown).
    async fn flush(&self) -> StoreResult<()>;
}

/// Every record at one point in time, for backups.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Every record, read so that no write (of any kind, on any node) falls between two of
    /// the reads: a backup restores to a state the store really was in. Embedded stores hold
    /// their writer for the duration; PostgreSQL reads in one repeatable-read transaction.
    async fn snapshot(&self) -> StoreResult<StoreSnapshot>;
}

/// Licenses and the revision counter that orders their changes.
#[async_trait]
pub trait LicenseStore: Send + Sync {
    /// All licenses and the current revision, read consistently.
    async fn licenses(&self) -> StoreResult<LicenseRows>;
    /// Inserts or replaces `license` (by id) and sets the revision to `license.revision`.
    async fn put_license(&self, license: &StoredLicense) -> StoreResult<()>;
    /// Removes license `id` and sets the revision to `revision`; `false` when it did not exist
    /// (the revision is then left unchanged).
    async fn delete_license(&self, id: Uuid, revision: Revision) -> StoreResult<bool>;
    /// Applies `changes` in order, atomically (all or none) and durably at once, and sets the
    /// revision to the last change's: group commit for the license service, which numbers the
    /// changes of a batch consecutively. An empty batch writes nothing. A backend several
    /// nodes write to refuses the batch with [`super::StoreError::Conflict`], writing nothing,
    /// when the stored revision is not the one the batch was decided at (the first change's
    /// revision minus one).
    async fn apply_license_batch(&self, changes: &[LicenseChange]) -> StoreResult<()>;
    /// What changed after `revision`, read consistently: how a node learns of other nodes'
    /// writes. A backend only this node writes has nothing to report that the node did not
    /// write itself, and answers with the whole set.
    async fn license_changes_since(&self, revision: Revision) -> StoreResult<LicenseChanges> {
        let _ = revision;
        Ok(LicenseChanges::complete(self.licenses().await?))
    }
}

/// Registration tokens, looked up by the hash of their secret when presented.
#[async_trait]
pub trait TokenStore: Send + Sync {
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
}

/// Registered data planes.
#[async_trait]
pub trait DataPlaneStore: Send + Sync {
    async fn put_dataplane(&self, dataplane: &DataPlaneRecord) -> StoreResult<()>;
    async fn dataplane(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>>;
    async fn dataplanes(&self) -> StoreResult<Vec<DataPlaneRecord>>;
    /// Removes data plane `id`'s record (the purge of long-silent data planes); `false` when
    /// it did not exist.
    async fn delete_dataplane(&self, id: Uuid) -> StoreResult<bool>;
    /// The ids of revoked data planes (checked against the streams a node holds, in case it
    /// missed another node's revocation).
    async fn revoked_dataplanes(&self) -> StoreResult<Vec<Uuid>> {
        let records = self.dataplanes().await?;
        Ok(records
            .into_iter()
            .filter(|r| r.revoked)
            .map(|r| r.id)
            .collect())
    }
}

/// Who may use the Admin API: API tokens, users and connected apps.
#[async_trait]
pub trait PrincipalStore: Send + Sync {
    async fn put_api_token(&self, token: &ApiToken) -> StoreResult<()>;
    /// Stores `token` only when no API token exists at all, atomically, also against other
    /// nodes sharing the store: `false` then, nothing written. This is how exactly one
    /// bootstrap admin token comes to exist when several nodes start on one empty database.
    async fn insert_first_api_token(&self, token: &ApiToken) -> StoreResult<bool>;
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
}

/// Usage counters: the highest count per (data plane, epoch, month).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Raises every (data plane, epoch, month) counter named in `submissions` to the count
    /// submitted when that is higher, in one atomic write made durable before returning (group
    /// commit: the usage ledger batches reports that arrive together). Returns, per submission
    /// and in its order, the count now stored for each of its months.
    async fn record_usage(
        &self,
        submissions: Vec<UsageSubmission>,
    ) -> StoreResult<Vec<Vec<(UsageMonth, u64)>>>;
    /// Every usage counter, ordered by data plane, epoch and month.
    async fn usage(&self) -> StoreResult<Vec<UsageRow>>;
    /// The sum of every counter per month, oldest month first (saturating): what a metrics
    /// scrape needs, which a database can answer without sending every counter.
    async fn usage_by_month(&self) -> StoreResult<Vec<(UsageMonth, u64)>> {
        let mut months = std::collections::BTreeMap::<UsageMonth, u64>::new();
        for row in self.usage().await? {
            let total = months.entry(row.month).or_default();
            *total = total.saturating_add(row.count);
        }
        Ok(months.into_iter().collect())
    }
}

/// The audit trail: append-only records, read in time order, pruned by age.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `records` in one durable write.
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()>;
    /// Up to `limit` records at or after `since_ms` (unix ms), oldest first.
    async fn audit_since(&self, since_ms: i64, limit: usize) -> StoreResult<Vec<AuditRecord>>;
    /// Removes the records before `before_ms`; how many went.
    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64>;
}

/// The cluster's sealed secrets (CA, report key), by name, in a store several nodes share.
/// Values are opaque bytes: sealing and opening them is the caller's business
/// ([`super::storage_key`]), so the store never sees a secret in the clear.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The sealed secret `name`, if stored.
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores `sealed` as `name` unless a secret of that name exists, and returns the value
    /// stored afterwards: `sealed` itself, or what another node stored first. Two nodes
    /// creating a secret at once so end up with the same one.
    async fn insert_secret_if_absent(&self, name: &str, sealed: &[u8]) -> StoreResult<Vec<u8>>;
}

/// The control-plane nodes sharing this store. A store only one node uses keeps no registry
/// (the node lists itself).
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Inserts or replaces `node`'s row (its heartbeat).
    async fn heartbeat_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let _ = node;
        Ok(())
    }
    /// Every node's row, ordered by id.
    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        Ok(Vec::new())
    }
    /// Removes node `id`'s row (it is stopping).
    async fn remove_node(&self, id: Uuid) -> StoreResult<()> {
        let _ = id;
        Ok(())
    }
}
