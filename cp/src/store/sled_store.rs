//! The embedded default backend: sled, one tree per record kind, values as JSON.
//!
//! Multi-record changes (a license and the revision; a token's use count and its hash index)
//! run in sled transactions, and every write method flushes before returning, which is what lets
//! the Admin API promise that a `201` survives a `SIGKILL` right after it.
//!
//! Usage counters live in the `usage` tree under a 39-byte key, data-plane id (16 bytes),
//! epoch (16 bytes), month (`YYYY-MM`), so one data plane's counters are one key range in
//! chronological order; the value is the count as 8 big-endian bytes.

use std::path::Path;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use uuid::Uuid;

use super::{
    AuditRecord, AuditStore, DataPlaneStore, LicenseChange, LicenseRows, LicenseStore,
    PrincipalStore, StorageInfo, StoreError, StoreMeta, StoreResult, TokenStore, UsageKey,
    UsageMonth, UsageRow, UsageStore, UsageSubmission, merge_usage, token_refusal,
};
use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, StoredLicense,
    TokenRefusal, User,
};

mod backup;

const REVISION_KEY: &[u8] = b"revision";

/// The database handle and its trees; cheap to clone (sled handles are reference-counted).
#[derive(Clone)]
struct Trees {
    db: sled::Db,
    meta: sled::Tree,
    licenses: sled::Tree,
    tokens: sled::Tree,
    token_hashes: sled::Tree,
    dataplanes: sled::Tree,
    api_tokens: sled::Tree,
    /// Keyed by username (UTF-8).
    users: sled::Tree,
    /// Keyed by client id (UTF-8).
    connected_apps: sled::Tree,
    usage: sled::Tree,
    /// Keyed by [`audit_key`]: time order.
    audit: sled::Tree,
}

/// sled-backed storage under `<data_dir>/cp.sled`.
///
/// sled 0.34 deadlocks when `flush_async` calls overlap each other and transactions
/// (spacejam/sled#1308), which froze the whole control plane under concurrent writes. So writes
/// go one at a time through [`SledStore::write`]: the change and a blocking `flush` run together
/// on the blocking pool, never on the async runtime's workers, and never two at once. Reads stay
/// inline: they are in-memory lookups.
pub struct SledStore {
    trees: Trees,
    writer: tokio::sync::Mutex<()>,
    /// The schema version the database was at when opened ([`SledStore::schema_version`]).
    schema_version: u32,
}

impl SledStore {
    /// Opens (or creates) the database directory.
    /// [`SledStore::open`] for tests that reopen a database they just dropped: sled's flusher
    /// thread lets go of the file lock a moment after the last handle is dropped, so the first
    /// attempts may find it still held.
    #[cfg(test)]
    pub fn reopen(path: &Path) -> Self {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open(path) {
                Ok(store) => return store,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_cache(path, None)
    }

    /// [`SledStore::open`] with a page cache of `cache_capacity` bytes
    /// (`storage.sled.cache_capacity`; `None`: sled's default).
    pub fn open_with_cache(path: &Path, cache_capacity: Option<u64>) -> StoreResult<Self> {
        let mut config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput);
        if let Some(bytes) = cache_capacity {
            config = config.cache_capacity(bytes);
        }
        let db = config.open().map_err(|e| {
            StoreError::Backend(format!(
                "cannot open sled database {}: {e} (is another licsync-cp using this data_dir?)",
                path.display()
            ))
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let schema_version = super::sled_schema::check(&tree("meta")?, path)?;
        Ok(Self {
            schema_version,
            trees: Trees {
                meta: tree("meta")?,
                licenses: tree("licenses")?,
                tokens: tree("registration_tokens")?,
                token_hashes: tree("registration_token_hashes")?,
                dataplanes: tree("dataplanes")?,
                api_tokens: tree("api_tokens")?,
                users: tree("users")?,
                connected_apps: tree("connected_apps")?,
                usage: tree("usage")?,
                audit: tree("audit")?,
                db,
            },
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The schema version the database was at when opened: [`SledStore::CURRENT_SCHEMA`],
    /// or older until [`SledStore::upgrade_schema`] brings it up to date.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The layout this binary reads and writes.
    pub const CURRENT_SCHEMA: u32 = super::sled_schema::CURRENT;

    /// Brings a database opened at an older schema version up to [`SledStore::CURRENT_SCHEMA`]
    /// (take a backup first: a newer layout cannot be read by the older binary).
    pub async fn upgrade_schema(&mut self) -> StoreResult<()> {
        let from = self.schema_version;
        self.write(move |t| super::sled_schema::upgrade(&t.meta, from))
            .await?;
        self.schema_version = Self::CURRENT_SCHEMA;
        Ok(())
    }

    /// Runs `change` and then flushes, alone and off the async workers; returns once durable.
    async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Trees) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let _one_writer = self.writer.lock().await;
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || {
            let out = change(&trees)?;
            trees.db.flush().map_err(backend)?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }
}

#[async_trait]
impl StoreMeta for SledStore {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            backend: "sled",
            version: "0.34",
        }
    }

    async fn flush(&self) -> StoreResult<()> {
        self.write(|_| Ok(())).await
    }
}

/// One node: no registry.
impl super::NodeStore for SledStore {}

#[async_trait]
impl LicenseStore for SledStore {
    async fn licenses(&self) -> StoreResult<LicenseRows> {
        // License writers are serialised by the license service and this runs at start-up, so
        // the revision and the rows cannot be torn apart by a concurrent write.
        Ok(LicenseRows {
            revision: stored_revision(&self.trees)?,
            licenses: scan(&self.trees.licenses)?,
        })
    }

    async fn put_license(&self, license: &StoredLicense) -> StoreResult<()> {
        let value = encode(license)?;
        let id = license.id;
        let revision = license.revision.to_be_bytes();
        self.write(move |t| {
            (&t.meta, &t.licenses)
                .transaction(|(meta, licenses)| {
                    licenses.insert(id.as_bytes().as_slice(), value.as_slice())?;
                    meta.insert(REVISION_KEY, revision.as_slice())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn delete_license(&self, id: Uuid, revision: Revision) -> StoreResult<bool> {
        let revision = revision.to_be_bytes();
        self.write(move |t| {
            (&t.meta, &t.licenses)
                .transaction(|(meta, licenses)| {
                    let existed = licenses.remove(id.as_bytes().as_slice())?.is_some();
                    if existed {
                        meta.insert(REVISION_KEY, revision.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(existed)
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn apply_license_batch(&self, changes: &[LicenseChange]) -> StoreResult<()> {
        let Some(last) = changes.last() else {
            return Ok(());
        };
        let revision = last.revision().to_be_bytes();
        // Encoded here, on the caller's task, so the closure owns plain bytes: `None` deletes.
        let rows = changes
            .iter()
            .map(|change| match change {
                LicenseChange::Put(license) => Ok((license.id, Some(encode(license)?))),
                LicenseChange::Delete { id, .. } => Ok((*id, None)),
            })
            .collect::<StoreResult<Vec<(Uuid, Option<Vec<u8>>)>>>()?;
        self.write(move |t| {
            (&t.meta, &t.licenses)
                .transaction(|(meta, licenses)| {
                    for (id, value) in &rows {
                        match value {
                            Some(value) => {
                                licenses.insert(id.as_bytes().as_slice(), value.as_slice())?
                            }
                            None => licenses.remove(id.as_bytes().as_slice())?,
                        };
                    }
                    meta.insert(REVISION_KEY, revision.as_slice())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)
        })
        .await
    }
}

#[async_trait]
impl TokenStore for SledStore {
    async fn insert_registration_token(&self, token: &RegistrationToken) -> StoreResult<()> {
        let value = encode(token)?;
        let id = token.id;
        let hash = token.token_hash.clone();
        self.write(move |t| {
            (&t.tokens, &t.token_hashes)
                .transaction(|(tokens, hashes)| {
                    tokens.insert(id.as_bytes().as_slice(), value.as_slice())?;
                    hashes.insert(hash.as_bytes(), id.as_bytes().as_slice())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        scan(&self.trees.tokens)
    }

    async fn delete_registration_token(&self, id: Uuid) -> StoreResult<bool> {
        self.write(move |t| {
            (&t.tokens, &t.token_hashes)
                .transaction(|(tokens, hashes)| {
                    let Some(raw) = tokens.remove(id.as_bytes().as_slice())? else {
                        return Ok(false);
                    };
                    let token: RegistrationToken =
                        decode(id.as_bytes(), &raw).map_err(ConflictableTransactionError::Abort)?;
                    hashes.remove(token.token_hash.as_bytes())?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(true)
                })
                .map_err(tx_error)
        })
        .await
    }

    async fn consume_registration_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<RegistrationToken, TokenRefusal>> {
        let token_hash = token_hash.to_owned();
        self.write(move |t| {
            (&t.tokens, &t.token_hashes)
                .transaction(|(tokens, hashes)| {
                    let Some(id) = hashes.get(token_hash.as_bytes())? else {
                        return Ok(Err(TokenRefusal::Unknown));
                    };
                    let Some(raw) = tokens.get(&id)? else {
                        return Ok(Err(TokenRefusal::Unknown));
                    };
                    let mut token: RegistrationToken =
                        decode(&id, &raw).map_err(ConflictableTransactionError::Abort)?;
                    if let Some(refusal) = token_refusal(&token, now) {
                        return Ok(Err(refusal));
                    }
                    token.uses += 1;
                    let value = encode(&token).map_err(ConflictableTransactionError::Abort)?;
                    tokens.insert(&id, value)?;
                    Ok(Ok(token))
                })
                .map_err(tx_error)
        })
        .await
    }
}

#[async_trait]
impl DataPlaneStore for SledStore {
    async fn put_dataplane(&self, dataplane: &DataPlaneRecord) -> StoreResult<()> {
        let value = encode(dataplane)?;
        let id = dataplane.id;
        self.write(move |t| {
            t.dataplanes.insert(id.as_bytes(), value).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn dataplane(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        self.trees
            .dataplanes
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    async fn dataplanes(&self) -> StoreResult<Vec<DataPlaneRecord>> {
        scan(&self.trees.dataplanes)
    }

    async fn delete_dataplane(&self, id: Uuid) -> StoreResult<bool> {
        self.write(move |t| {
            Ok(t.dataplanes
                .remove(id.as_bytes())
                .map_err(backend)?
                .is_some())
        })
        .await
    }
}

#[async_trait]
impl PrincipalStore for SledStore {
    async fn put_api_token(&self, token: &ApiToken) -> StoreResult<()> {
        let value = encode(token)?;
        let id = token.id;
        self.write(move |t| {
            t.api_tokens.insert(id.as_bytes(), value).map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// Writes run one at a time ([`SledStore::write`]) and one process holds the database, so
    /// checking for emptiness inside the write is atomic.
    async fn insert_first_api_token(&self, token: &ApiToken) -> StoreResult<bool> {
        let value = encode(token)?;
        let id = token.id;
        self.write(move |t| {
            if !t.api_tokens.is_empty() {
                return Ok(false);
            }
            t.api_tokens.insert(id.as_bytes(), value).map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        scan(&self.trees.api_tokens)
    }

    async fn delete_api_token(&self, id: Uuid) -> StoreResult<bool> {
        self.write(move |t| {
            Ok(t.api_tokens
                .remove(id.as_bytes())
                .map_err(backend)?
                .is_some())
        })
        .await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<bool> {
        let value = encode(user)?;
        let key = user.username.clone();
        self.write(move |t| insert_new(&t.users, &key, value)).await
    }

    async fn user(&self, username: &str) -> StoreResult<Option<User>> {
        get_text(&self.trees.users, username)
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        scan(&self.trees.users)
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        let key = username.to_owned();
        self.write(move |t| Ok(t.users.remove(key.as_bytes()).map_err(backend)?.is_some()))
            .await
    }

    async fn insert_connected_app(&self, app: &ConnectedApp) -> StoreResult<bool> {
        let value = encode(app)?;
        let key = app.client_id.clone();
        self.write(move |t| insert_new(&t.connected_apps, &key, value))
            .await
    }

    async fn connected_app(&self, client_id: &str) -> StoreResult<Option<ConnectedApp>> {
        get_text(&self.trees.connected_apps, client_id)
    }

    async fn connected_apps(&self) -> StoreResult<Vec<ConnectedApp>> {
        scan(&self.trees.connected_apps)
    }

    async fn delete_connected_app(&self, client_id: &str) -> StoreResult<bool> {
        let key = client_id.to_owned();
        self.write(move |t| {
            Ok(t.connected_apps
                .remove(key.as_bytes())
                .map_err(backend)?
                .is_some())
        })
        .await
    }
}

#[async_trait]
impl UsageStore for SledStore {
    async fn record_usage(
        &self,
        submissions: Vec<UsageSubmission>,
    ) -> StoreResult<Vec<Vec<(UsageMonth, u64)>>> {
        self.write(move |t| {
            // Reading outside a transaction is safe: `write` runs one change at a time, and
            // this tree has no other writer. One batch (atomic in sled) instead of a
            // transaction: a group of thousands of reports would make a transaction's
            // conflict tracking the bottleneck.
            let merged = merge_usage(&submissions, |key| {
                t.usage
                    .get(usage_key(key))
                    .map_err(backend)?
                    .map(|raw| decode_count(&raw))
                    .transpose()
            })?;
            let mut batch = sled::Batch::default();
            for (key, count) in &merged.changed {
                batch.insert(usage_key(key).as_slice(), count.to_be_bytes().as_slice());
            }
            t.usage.apply_batch(batch).map_err(backend)?;
            Ok(merged.recorded)
        })
        .await
    }

    async fn usage(&self) -> StoreResult<Vec<UsageRow>> {
        self.trees
            .usage
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_usage_row(&key, &value)
            })
            .collect()
    }
}

#[async_trait]
impl AuditStore for SledStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for record in records {
            batch.insert(
                audit_key(record.at_ms, record.id).as_slice(),
                encode(record)?,
            );
        }
        self.write(move |t| t.audit.apply_batch(batch).map_err(backend))
            .await
    }

    async fn audit_since(&self, since_ms: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.trees
            .audit
            .range(audit_key(since_ms, Uuid::nil())..)
            .take(limit)
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        self.write(move |t| {
            let mut batch = sled::Batch::default();
            let mut removed = 0;
            for item in t.audit.range(..audit_key(before_ms, Uuid::nil())) {
                let (key, _) = item.map_err(backend)?;
                batch.remove(key);
                removed += 1;
            }
            t.audit.apply_batch(batch).map_err(backend)?;
            Ok(removed)
        })
        .await
    }
}

/// An audit record's key: its time (sign bit flipped, big-endian, so keys sort as times do),
/// then its id.
fn audit_key(at_ms: i64, id: Uuid) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&((at_ms as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(id.as_bytes());
    key
}

/// Inserts `value` under the text `key` unless the key is taken; whether it was inserted.
fn insert_new(tree: &sled::Tree, key: &str, value: Vec<u8>) -> StoreResult<bool> {
    Ok(tree
        .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(value))
        .map_err(backend)?
        .is_ok())
}

/// The record under the text `key`, if any.
fn get_text<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> StoreResult<Option<T>> {
    tree.get(key.as_bytes())
        .map_err(backend)?
        .map(|raw| {
            serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn usage_key((dataplane, epoch, month): &UsageKey) -> [u8; 39] {
    let mut key = [0u8; 39];
    key[..16].copy_from_slice(dataplane.as_bytes());
    key[16..32].copy_from_slice(epoch.as_bytes());
    key[32..].copy_from_slice(&month.to_bytes());
    key
}

fn decode_usage_row(key: &[u8], value: &[u8]) -> StoreResult<UsageRow> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: format!("usage/{}", String::from_utf8_lossy(key)),
        reason,
    };
    if key.len() != 39 {
        return Err(corrupt(format!(
            "expected a 39-byte key, found {}",
            key.len()
        )));
    }
    let month = std::str::from_utf8(&key[32..])
        .map_err(|e| corrupt(e.to_string()))?
        .parse::<UsageMonth>()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(UsageRow {
        dataplane: Uuid::from_slice(&key[..16]).map_err(|e| corrupt(e.to_string()))?,
        epoch: Uuid::from_slice(&key[16..32]).map_err(|e| corrupt(e.to_string()))?,
        month,
        count: decode_count(value)?,
    })
}

fn decode_count(raw: &[u8]) -> StoreResult<u64> {
    raw.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            key: "usage counter".into(),
            reason: format!("expected 8 bytes, found {}", raw.len()),
        })
}

fn scan<T: DeserializeOwned>(tree: &sled::Tree) -> StoreResult<Vec<T>> {
    tree.iter()
        .map(|item| {
            let (key, value) = item.map_err(backend)?;
            decode(&key, &value)
        })
        .collect()
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: Uuid::from_slice(key)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(key).into_owned()),
        reason: e.to_string(),
    })
}

/// The revision counter as stored (0 before the first license write).
fn stored_revision(t: &Trees) -> StoreResult<Revision> {
    t.meta
        .get(REVISION_KEY)
        .map_err(backend)?
        .map(|v| decode_revision(&v))
        .transpose()
        .map(|r| r.unwrap_or(0))
}

fn decode_revision(raw: &[u8]) -> Result<Revision, StoreError> {
    raw.try_into()
        .map(Revision::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            key: "meta/revision".into(),
            reason: format!("expected 8 bytes, found {}", raw.len()),
        })
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LicenseStore, PrincipalStore, TokenStore, UsageStore};

    fn token(max_uses: u32, expires_at: i64) -> RegistrationToken {
        RegistrationToken {
            id: Uuid::new_v4(),
            name: "edge".into(),
            token_hash: Uuid::new_v4().to_string(),
            created_at: 0,
            expires_at,
            max_uses,
            uses: 0,
        }
    }

    /// sled 0.34 deadlocked when flushes overlapped transactions and reads; many concurrent
    /// writers and readers must all finish (the timeout only guards against a hang).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_and_reads_never_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let mut tasks = Vec::new();
        for n in 0..128u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let t = token(1, 100);
                store.insert_registration_token(&t).await.unwrap();
                store
                    .consume_registration_token(&t.token_hash, 1)
                    .await
                    .unwrap()
                    .unwrap();
                store
                    .put_api_token(&ApiToken {
                        id: Uuid::new_v4(),
                        name: format!("t{n}"),
                        token_hash: n.to_string(),
                        created_at: 0,
                        role: crate::model::Role::Admin,
                        expires_at: None,
                    })
                    .await
                    .unwrap();
                store.api_tokens().await.unwrap();
                store.registration_tokens().await.unwrap();
            }));
        }
        let all = futures::future::join_all(tasks);
        let results = tokio::time::timeout(std::time::Duration::from_secs(120), all)
            .await
            .expect("storage deadlocked under concurrent writes");
        for result in results {
            result.unwrap();
        }
        assert_eq!(store.api_tokens().await.unwrap().len(), 128);
    }

    #[tokio::test]
    async fn sled_keeps_licenses_and_revision_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let a = StoredLicense {
            id: Uuid::new_v4(),
            document: "{}".into(),
            signature: format!("{:0128x}", 7),
            created_at: 1,
            updated_at: 2,
            revision: 7,
        };
        {
            let store = SledStore::reopen(&path);
            store.put_license(&a).await.unwrap();
        }
        let rows = SledStore::reopen(&path).licenses().await.unwrap();
        assert_eq!(rows.revision, 7);
        assert_eq!(rows.licenses, vec![a]);
    }

    #[tokio::test]
    async fn sled_keeps_usage_counters_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (dp, epoch) = (Uuid::new_v4(), Uuid::new_v4());
        let (nov, dec): (UsageMonth, UsageMonth) =
            ("2026-11".parse().unwrap(), "2026-12".parse().unwrap());
        let submit = |counts: Vec<(UsageMonth, u64)>| UsageSubmission {
            dataplane: dp,
            epoch,
            counts,
        };
        {
            let store = SledStore::reopen(&path);
            // Two reports for the same counter in one batch: the higher wins.
            let recorded = store
                .record_usage(vec![
                    submit(vec![(dec, 7), (nov, 5)]),
                    submit(vec![(nov, 9)]),
                ])
                .await
                .unwrap();
            assert_eq!(recorded, vec![vec![(dec, 7), (nov, 9)], vec![(nov, 9)]]);
            let lower = store
                .record_usage(vec![submit(vec![(nov, 3)])])
                .await
                .unwrap();
            assert_eq!(lower, vec![vec![(nov, 9)]]);
        }
        let rows = SledStore::reopen(&path).usage().await.unwrap();
        assert_eq!(
            rows,
            vec![
                UsageRow {
                    dataplane: dp,
                    epoch,
                    month: nov,
                    count: 9
                },
                UsageRow {
                    dataplane: dp,
                    epoch,
                    month: dec,
                    count: 7
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_database_from_a_newer_release_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(SledStore::reopen(&path));
        // A newer licsync-cp stamped it (opened raw, once the previous handle let go).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::open(&path) {
                Ok(db) => break db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get(b"schema_version").unwrap().as_deref(),
            Some(1u32.to_be_bytes().as_slice()),
            "a new database is stamped with the current version"
        );
        meta.insert(b"schema_version", &2u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
        drop((meta, db));
        let refusal = loop {
            match SledStore::open(&path) {
                Err(e) if e.to_string().contains("schema version") => break e.to_string(),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => panic!("expected a refusal, got {:?}", other.err()),
            }
        };
        assert!(
            refusal.contains("schema version 2") && refusal.contains("(version 1)"),
            "{refusal}"
        );
    }
}
