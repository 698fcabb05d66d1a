//! An in-memory [`Store`] for tests and benchmarks: the same semantics as sled, no durability,
//! and a switch that makes license batches fail ([`MemoryStore::inject_license_fault`]) so
//! tests can see what callers get when storage fails.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    AuditRecord, AuditStore, DataPlaneStore, LicenseChange, LicenseRows, LicenseStore,
    PrincipalStore, SnapshotStore, StorageInfo, StoreError, StoreMeta, StoreResult, StoreSnapshot,
    TokenStore, UsageKey, UsageMonth, UsageRow, UsageStore, UsageSubmission, merge_usage,
    token_refusal,
};
use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};

#[derive(Default)]
struct Inner {
    revision: Revision,
    licenses: BTreeMap<Uuid, StoredLicense>,
    tokens: BTreeMap<Uuid, RegistrationToken>,
    dataplanes: BTreeMap<Uuid, DataPlaneRecord>,
    api_tokens: BTreeMap<Uuid, ApiToken>,
    users: BTreeMap<String, User>,
    apps: BTreeMap<String, ConnectedApp>,
    usage: BTreeMap<UsageKey, u64>,
    audit: BTreeMap<(i64, Uuid), AuditRecord>,
    license_fault: LicenseFault,
    /// Refuse batches decided at another revision than the stored one (see
    /// [`MemoryStore::shared`]).
    shared: bool,
}

/// How [`Store::apply_license_batch`] fails, when a test asks it to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LicenseFault {
    /// Batches are applied.
    #[default]
    None,
    /// Nothing is applied and the batch fails, as when a transaction is refused.
    Refuse,
    /// The batch is applied and then fails, as when a transaction committed and its flush
    /// failed: what a caller can never rule out after an error.
    AfterApply,
}

/// Volatile storage; everything is lost when it is dropped.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store several license services may write at once, as the nodes of a cluster write to
    /// PostgreSQL: a batch decided at another revision than the stored one is refused with
    /// [`StoreError::Conflict`], writing nothing.
    pub fn shared() -> Self {
        let store = Self::default();
        store
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .shared = true;
        store
    }

    /// Makes every later license batch fail as `fault` says (`LicenseFault::None` heals it).
    pub fn inject_license_fault(&self, fault: LicenseFault) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.license_fault = fault;
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> StoreResult<T> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        Ok(f(&mut inner))
    }
}

fn injected() -> StoreError {
    StoreError::Backend("injected license write failure (MemoryStore::inject_license_fault)".into())
}

/// Inserts `value` under `key` unless the key is taken; whether it was inserted.
fn insert_new<T: Clone>(map: &mut BTreeMap<String, T>, key: &str, value: &T) -> bool {
    if map.contains_key(key) {
        return false;
    }
    map.insert(key.to_owned(), value.clone());
    true
}

#[async_trait]
impl StoreMeta for MemoryStore {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            backend: "memory",
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// One node: no registry.
impl super::NodeStore for MemoryStore {}

#[async_trait]
impl LicenseStore for MemoryStore {
    async fn licenses(&self) -> StoreResult<LicenseRows> {
        self.with(|i| LicenseRows {
            revision: i.revision,
            licenses: i.licenses.values().cloned().collect(),
        })
    }

    async fn put_license(&self, license: &StoredLicense) -> StoreResult<()> {
        self.with(|i| {
            i.revision = license.revision;
            i.licenses.insert(license.id, license.clone());
        })
    }

    async fn delete_license(&self, id: Uuid, revision: Revision) -> StoreResult<bool> {
        self.with(|i| {
            let existed = i.licenses.remove(&id).is_some();
            if existed {
                i.revision = revision;
            }
            existed
        })
    }

    async fn apply_license_batch(&self, changes: &[LicenseChange]) -> StoreResult<()> {
        self.with(|i| {
            if i.license_fault == LicenseFault::Refuse {
                return Err(injected());
            }
            let base = changes.first().map(|c| c.revision().saturating_sub(1));
            if let Some(base) = base
                && i.shared
                && base != i.revision
            {
                return Err(StoreError::Conflict {
                    expected: base,
                    found: i.revision,
                });
            }
            for change in changes {
                match change {
                    LicenseChange::Put(license) => {
                        i.licenses.insert(license.id, license.clone());
                    }
                    LicenseChange::Delete { id, .. } => {
                        i.licenses.remove(id);
                    }
                }
            }
            if let Some(last) = changes.last() {
                i.revision = last.revision();
            }
            match i.license_fault {
                LicenseFault::AfterApply => Err(injected()),
                _ => Ok(()),
            }
        })?
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert_registration_token(&self, token: &RegistrationToken) -> StoreResult<()> {
        self.with(|i| {
            i.tokens.insert(token.id, token.clone());
        })
    }

    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        self.with(|i| i.tokens.values().cloned().collect())
    }

    async fn delete_registration_token(&self, id: Uuid) -> StoreResult<bool> {
        self.with(|i| i.tokens.remove(&id).is_some())
    }

    async fn consume_registration_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<RegistrationToken, TokenRefusal>> {
        self.with(|i| {
            let Some(token) = i.tokens.values_mut().find(|t| t.token_hash == token_hash) else {
                return Err(TokenRefusal::Unknown);
            };
            if let Some(refusal) = token_refusal(token, now) {
                return Err(refusal);
            }
            token.uses += 1;
            Ok(token.clone())
        })
    }
}

#[async_trait]
impl DataPlaneStore for MemoryStore {
    async fn put_dataplane(&self, dataplane: &DataPlaneRecord) -> StoreResult<()> {
        self.with(|i| {
            i.dataplanes.insert(dataplane.id, dataplane.clone());
        })
    }

    async fn dataplane(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        self.with(|i| i.dataplanes.get(&id).cloned())
    }

    async fn dataplanes(&self) -> StoreResult<Vec<DataPlaneRecord>> {
        self.with(|i| i.dataplanes.values().cloned().collect())
    }

    async fn delete_dataplane(&self, id: Uuid) -> StoreResult<bool> {
        self.with(|i| i.dataplanes.remove(&id).is_some())
    }
}

#[async_trait]
impl PrincipalStore for MemoryStore {
    async fn put_api_token(&self, token: &ApiToken) -> StoreResult<()> {
        self.with(|i| {
            i.api_tokens.insert(token.id, token.clone());
        })
    }

    async fn insert_first_api_token(&self, token: &ApiToken) -> StoreResult<bool> {
        self.with(|i| {
            let first = i.api_tokens.is_empty();
            if first {
                i.api_tokens.insert(token.id, token.clone());
            }
            first
        })
    }

    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.with(|i| i.api_tokens.values().cloned().collect())
    }

    async fn delete_api_token(&self, id: Uuid) -> StoreResult<bool> {
        self.with(|i| i.api_tokens.remove(&id).is_some())
    }

    async fn insert_user(&self, user: &User) -> StoreResult<bool> {
        self.with(|i| insert_new(&mut i.users, &user.username, user))
    }

    async fn user(&self, username: &str) -> StoreResult<Option<User>> {
        self.with(|i| i.users.get(username).cloned())
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.with(|i| i.users.values().cloned().collect())
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        self.with(|i| i.users.remove(username).is_some())
    }

    async fn insert_connected_app(&self, app: &ConnectedApp) -> StoreResult<bool> {
        self.with(|i| insert_new(&mut i.apps, &app.client_id, app))
    }

    async fn connected_app(&self, client_id: &str) -> StoreResult<Option<ConnectedApp>> {
        self.with(|i| i.apps.get(client_id).cloned())
    }

    async fn connected_apps(&self) -> StoreResult<Vec<ConnectedApp>> {
        self.with(|i| i.apps.values().cloned().collect())
    }

    async fn delete_connected_app(&self, client_id: &str) -> StoreResult<bool> {
        self.with(|i| i.apps.remove(client_id).is_some())
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn record_usage(
        &self,
        submissions: Vec<UsageSubmission>,
    ) -> StoreResult<Vec<Vec<(UsageMonth, u64)>>> {
        self.with(|i| {
            let merged = merge_usage(&submissions, |key| Ok(i.usage.get(key).copied()))?;
            i.usage.extend(merged.changed);
            Ok(merged.recorded)
        })?
    }

    async fn usage(&self) -> StoreResult<Vec<UsageRow>> {
        self.with(|i| usage_rows(i))
    }
}

fn usage_rows(inner: &Inner) -> Vec<UsageRow> {
    inner
        .usage
        .iter()
        .map(|(&(dataplane, epoch, month), &count)| UsageRow {
            dataplane,
            epoch,
            month,
            count,
        })
        .collect()
}

/// Everything is copied under the one lock every write takes.
#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        self.with(|i| StoreSnapshot {
            licenses: LicenseRows {
                revision: i.revision,
                licenses: i.licenses.values().cloned().collect(),
            },
            registration_tokens: i.tokens.values().cloned().collect(),
            dataplanes: i.dataplanes.values().cloned().collect(),
            api_tokens: i.api_tokens.values().cloned().collect(),
            users: i.users.values().cloned().collect(),
            connected_apps: i.apps.values().cloned().collect(),
            usage: usage_rows(i),
            audit: i.audit.values().cloned().collect(),
            sealed_secrets: Vec::new(),
        })
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
        self.with(|i| {
            for record in records {
                i.audit.insert((record.at_ms, record.id), record.clone());
            }
        })
    }

    async fn audit_since(&self, since_ms: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.with(|i| {
            i.audit
                .range((since_ms, Uuid::nil())..)
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect()
        })
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        self.with(|i| {
            let kept = i.audit.split_off(&(before_ms, Uuid::nil()));
            let removed = i.audit.len() as u64;
            i.audit = kept;
            removed
        })
    }
}
