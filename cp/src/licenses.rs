//! The license service: the one writer of licenses, and the source every data-plane stream
//! watches.
//!
//! A write is validated (structure, signature against `licenses.trusted_keys`, Kong's uniqueness
//! rule), made durable in the store with a new revision, and only then published as a new
//! immutable [`LicenseSet`] through a `tokio::sync::watch`. Streams therefore never send a change
//! that a crash could take back, and a burst of writes coalesces naturally: a stream that is busy
//! simply sees the newest set when it looks next. Signatures are verified on the caller's task;
//! the rest happens in the group commit of [`commit`], which stores concurrent writes with one
//! flush.

mod commit;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use licsync_common::license::{License, LicenseError, TrustedKeys};
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::{Revision, StoredLicense};
use crate::store::{LicenseRows, Store, StoreError};
use commit::{Applied, Command, Committer, Published};

/// An immutable snapshot of every license at one revision. Cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct LicenseSet {
    pub revision: Revision,
    pub licenses: BTreeMap<Uuid, Arc<StoredLicense>>,
    /// When this process committed the write that made this revision; `None` for a set read
    /// from storage. Streams measure `licsync_cp_sync_propagation_seconds` from it.
    pub committed_at: Option<Instant>,
}

/// Two sets are equal when they hold the same licenses at the same revision, whenever either
/// was committed (a set republished from storage equals the one it replaces).
impl PartialEq for LicenseSet {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision && self.licenses == other.licenses
    }
}

impl Eq for LicenseSet {}

impl LicenseSet {
    /// The license a data plane holding all of these would serve (the shared rule,
    /// [`licsync_common::active`]).
    pub fn active(&self) -> Option<&Arc<StoredLicense>> {
        licsync_common::active::newest(self.licenses.values(), |l| l.rank())
    }
}

impl From<LicenseRows> for LicenseSet {
    fn from(rows: LicenseRows) -> Self {
        Self {
            revision: rows.revision,
            licenses: rows
                .licenses
                .into_iter()
                .map(|l| (l.id, Arc::new(l)))
                .collect(),
            committed_at: None,
        }
    }
}

/// Why a license write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Kong's text, then the reason; with no trusted key at all, where to add one.
    #[error("Unable to validate license: {0}{hint}", hint = config_hint(.0))]
    Invalid(#[from] LicenseError),
    /// Kong's unique constraint on the payload: this license is already stored under another id.
    #[error("UNIQUE violation detected on '{{payload=\"{payload}\"}}'")]
    Duplicate { payload: String, existing: Uuid },
    #[error("could not find the entity with primary key '{{id=\"{0}\"}}'")]
    NotFound(Uuid),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Where to fix a refusal that is this control plane's configuration, not the license.
fn config_hint(error: &LicenseError) -> &'static str {
    match error {
        LicenseError::NoTrustedKeys => {
            "; add the signer's public key (license-signing.pub) to licenses.trusted_keys in the control plane's configuration"
        }
        _ => "",
    }
}

/// How a `PUT` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// Owns license writes and publishes each durable change.
pub struct Licenses {
    /// Replaced as a whole on a configuration reload (SIGHUP); a write verifies against the
    /// keys in force when it is checked.
    trusted: std::sync::RwLock<Arc<TrustedKeys>>,
    committer: Committer,
}

impl Licenses {
    /// Loads the current set from storage.
    pub async fn load(store: Arc<dyn Store>, trusted: TrustedKeys) -> Result<Self, StoreError> {
        let set = LicenseSet::from(store.licenses().await?);
        let (current, _) = watch::channel(Arc::new(set));
        Ok(Self {
            trusted: std::sync::RwLock::new(Arc::new(trusted)),
            committer: Committer::new(Arc::new(Published { store, current })),
        })
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<LicenseSet> {
        self.committer.published().current.borrow().clone()
    }

    /// A receiver that is marked changed after every published write.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LicenseSet>> {
        self.committer.published().current.subscribe()
    }

    /// The keys licenses are verified with now (also sent to data planes that follow them).
    pub fn trusted_keys(&self) -> Arc<TrustedKeys> {
        // A poisoned lock still holds a whole `Arc`: nothing can be half-replaced.
        self.trusted
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Trusts `keys` from now on; `false` when they are the keys already trusted.
    pub fn set_trusted_keys(&self, keys: TrustedKeys) -> bool {
        let mut trusted = self
            .trusted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if trusted.to_base64() == keys.to_base64() {
            return false;
        }
        *trusted = Arc::new(keys);
        true
    }

    /// `POST /licenses`: stores a new license under a fresh id.
    pub async fn create(&self, document: String) -> Result<Arc<StoredLicense>, WriteError> {
        let signature = self.verified(&document, None)?.signature_hex();
        let command = Command::Create {
            document,
            signature,
        };
        Ok(self.store_one(command).await?.0)
    }

    /// `PUT /licenses/{id}`: creates with that id or replaces it, keeping `created_at`.
    pub async fn put(
        &self,
        id: Uuid,
        document: String,
    ) -> Result<(Arc<StoredLicense>, PutOutcome), WriteError> {
        let signature = self.verified(&document, Some(id))?.signature_hex();
        let command = Command::Put {
            id,
            document,
            signature,
        };
        self.store_one(command).await
    }

    /// `PATCH /licenses/{id}`: replaces the document of an existing license.
    pub async fn patch(
        &self,
        id: Uuid,
        document: String,
    ) -> Result<Arc<StoredLicense>, WriteError> {
        let signature = self.verified(&document, Some(id))?.signature_hex();
        let command = Command::Patch {
            id,
            document,
            signature,
        };
        Ok(self.store_one(command).await?.0)
    }

    /// `DELETE /licenses/{id}`: `false` when there was nothing to delete.
    pub async fn delete(&self, id: Uuid) -> Result<bool, WriteError> {
        match self.committer.submit(Command::Delete { id }).await? {
            Applied::Deleted { .. } => Ok(true),
            Applied::Absent => Ok(false),
            Applied::Stored(..) | Applied::CaughtUp { .. } => Err(unexpected()),
        }
    }

    /// Publishes what other control-plane nodes wrote since the published revision, in turn
    /// with this node's writes (the change feed calls it when told of a commit, and on every
    /// poll); the revision now published.
    pub async fn catch_up(&self) -> Result<Revision, WriteError> {
        match self.committer.submit(Command::CatchUp).await? {
            Applied::CaughtUp { revision } => Ok(revision),
            _ => Err(unexpected()),
        }
    }

    async fn store_one(
        &self,
        command: Command,
    ) -> Result<(Arc<StoredLicense>, PutOutcome), WriteError> {
        match self.committer.submit(command).await? {
            Applied::Stored(stored, outcome) => Ok((stored, outcome)),
            Applied::Deleted { .. } | Applied::Absent | Applied::CaughtUp { .. } => {
                Err(unexpected())
            }
        }
    }
}

/// The writer answered a store with a delete: a bug, reported rather than panicked on.
fn unexpected() -> WriteError {
    WriteError::Storage(StoreError::Backend(
        "the license writer answered with the outcome of another kind of write".into(),
    ))
}

impl Licenses {
    /// Parses and verifies a submitted document. A refusal is logged (`license.rejected`,
    /// WARN): the client sees the reason, but the operator of the control plane must too,
    /// since an untrusted signing key is usually a configuration mistake on this side.
    fn verified(&self, document: &str, id: Option<Uuid>) -> Result<License, WriteError> {
        License::parse_verified(document, &self.trusted_keys()).map_err(|error| {
            let error = WriteError::Invalid(error);
            // Debug formatting escapes what the reason quotes from the submitted payload.
            tracing::warn!(
                event = "license.rejected",
                license.id = id.map(tracing::field::display),
                reason = ?error.to_string(),
                "License refused by the Admin API."
            );
            error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LicenseFault, LicenseStore, MemoryStore};
    use licsync_common::license::{SigningKey, sign_document};

    fn doc(key: &SigningKey, customer: &str) -> String {
        let payload = [
            ("customer", customer),
            ("license_key", "KEY"),
            ("license_creation_date", "2026-01-01"),
            ("license_expiration_date", "2030-01-01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        sign_document(&payload, key)
    }

    async fn service() -> (Licenses, SigningKey) {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        (
            Licenses::load(Arc::new(MemoryStore::new()), trusted)
                .await
                .unwrap(),
            key,
        )
    }

    #[tokio::test]
    async fn writes_bump_revision_and_publish() {
        let (licenses, key) = service().await;
        let mut rx = licenses.subscribe();
        let a = licenses.create(doc(&key, "A")).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().revision, 1);
        let (b, outcome) = licenses.put(Uuid::new_v4(), doc(&key, "B")).await.unwrap();
        assert_eq!(outcome, PutOutcome::Created);
        assert_eq!(
            licenses.current().active().unwrap().id,
            b.id,
            "tie goes to the later write"
        );
        assert!(licenses.delete(b.id).await.unwrap());
        assert!(!licenses.delete(b.id).await.unwrap());
        assert_eq!(licenses.current().revision, 3);
        assert_eq!(licenses.current().active().unwrap().id, a.id);
    }

    #[tokio::test]
    async fn duplicates_conflict_but_replacing_yourself_does_not() {
        let (licenses, key) = service().await;
        let a = licenses.create(doc(&key, "A")).await.unwrap();
        let err = licenses.create(doc(&key, "A")).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("UNIQUE violation detected on '{payload="),
            "{err}"
        );
        let (same, outcome) = licenses.put(a.id, doc(&key, "A")).await.unwrap();
        assert_eq!(outcome, PutOutcome::Replaced);
        assert_eq!(same.created_at, a.created_at);
        assert!(matches!(
            licenses.put(Uuid::new_v4(), doc(&key, "A")).await,
            Err(WriteError::Duplicate { existing, .. }) if existing == a.id
        ));
        assert!(matches!(
            licenses.patch(Uuid::new_v4(), doc(&key, "C")).await,
            Err(WriteError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn invalid_documents_never_reach_storage() {
        let (licenses, _) = service().await;
        let (other, _) = SigningKey::generate().unwrap();
        let err = licenses.create(doc(&other, "A")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to validate license: validation failed: the signature does not verify with the 1 trusted key"
        );
        assert_eq!(licenses.current().revision, 0);
    }

    #[tokio::test]
    async fn with_no_trusted_key_the_refusal_names_the_config_key() {
        let licenses = Licenses::load(Arc::new(MemoryStore::new()), TrustedKeys::default())
            .await
            .unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let err = licenses.create(doc(&key, "A")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unable to validate license: validation failed: no trusted license signing key is configured; \
             add the signer's public key (license-signing.pub) to licenses.trusted_keys in the control plane's configuration"
        );
    }

    async fn service_over(store: Arc<MemoryStore>) -> (Arc<Licenses>, SigningKey) {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        let licenses = Licenses::load(store, trusted).await.unwrap();
        (Arc::new(licenses), key)
    }

    /// Starts `n` creates at once, all queued before the writer runs, and returns their
    /// outcomes in order.
    async fn create_concurrently(
        licenses: &Arc<Licenses>,
        documents: Vec<String>,
    ) -> Vec<Result<Arc<StoredLicense>, WriteError>> {
        let tasks: Vec<_> = documents
            .into_iter()
            .map(|document| {
                let licenses = licenses.clone();
                tokio::spawn(async move { licenses.create(document).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_get_unique_consecutive_revisions() {
        let (licenses, key) = service_over(Arc::new(MemoryStore::new())).await;
        let documents = (0..64).map(|n| doc(&key, &format!("C{n}"))).collect();
        let mut revisions: Vec<Revision> = create_concurrently(&licenses, documents)
            .await
            .into_iter()
            .map(|outcome| outcome.unwrap().revision)
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=64).collect::<Vec<_>>());
        let set = licenses.current();
        assert_eq!((set.revision, set.licenses.len()), (64, 64));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_duplicates_store_the_license_once() {
        let (licenses, key) = service_over(Arc::new(MemoryStore::new())).await;
        let document = doc(&key, "Same");
        let outcomes = create_concurrently(&licenses, vec![document; 16]).await;
        let stored: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(stored.len(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| match o {
            Ok(_) => true,
            Err(WriteError::Duplicate { existing, .. }) => *existing == stored[0].id,
            Err(_) => false,
        }));
        assert_eq!(licenses.current().revision, 1);
    }

    /// A batch storage refuses fails every request in it with the storage error, and the
    /// published set shows none of them; once storage heals, writing goes on from the last
    /// durable revision.
    #[tokio::test]
    async fn a_failed_batch_fails_every_write_and_publishes_none() {
        let store = Arc::new(MemoryStore::new());
        let (licenses, key) = service_over(store.clone()).await;
        let first = licenses.create(doc(&key, "Durable")).await.unwrap();
        let mut rx = licenses.subscribe();
        rx.borrow_and_update();
        store.inject_license_fault(LicenseFault::Refuse);
        let mut documents: Vec<_> = (0..8).map(|n| doc(&key, &format!("F{n}"))).collect();
        // A duplicate of a write in the same failed batch must not be told "already stored".
        documents.push(documents[0].clone());
        for outcome in create_concurrently(&licenses, documents).await {
            match outcome {
                Err(WriteError::Storage(error)) => assert!(
                    error.to_string().contains("injected license write failure"),
                    "{error}"
                ),
                other => panic!("expected a storage error, got {other:?}"),
            }
        }
        assert!(
            matches!(licenses.delete(first.id).await, Err(WriteError::Storage(_))),
            "a delete fails too"
        );
        assert!(!rx.has_changed().unwrap(), "nothing was published");
        let set = licenses.current();
        assert_eq!(set.revision, 1);
        assert_eq!(set.licenses.keys().collect::<Vec<_>>(), vec![&first.id]);

        store.inject_license_fault(LicenseFault::None);
        let next = licenses.create(doc(&key, "F0")).await.unwrap();
        assert_eq!(next.revision, 2);
        assert_eq!(store.licenses().await.unwrap().revision, 2);
    }

    /// A batch that reached storage but reported failure (its flush failed): the callers hear
    /// of the failure, and the service republishes what storage holds, so the next revision
    /// is above every stored one and the uniqueness check sees the stored licenses.
    #[tokio::test]
    async fn a_batch_that_reached_storage_is_republished_from_storage() {
        let store = Arc::new(MemoryStore::new());
        let (licenses, key) = service_over(store.clone()).await;
        store.inject_license_fault(LicenseFault::AfterApply);
        let documents = (0..4).map(|n| doc(&key, &format!("U{n}"))).collect();
        for outcome in create_concurrently(&licenses, documents).await {
            assert!(
                matches!(outcome, Err(WriteError::Storage(_))),
                "{outcome:?}"
            );
        }
        store.inject_license_fault(LicenseFault::None);
        let stored = store.licenses().await.unwrap();
        assert_eq!(licenses.current().revision, stored.revision);
        assert_eq!(licenses.current().licenses.len(), 4);
        assert!(matches!(
            licenses.create(doc(&key, "U0")).await,
            Err(WriteError::Duplicate { .. })
        ));
        let next = licenses.create(doc(&key, "After")).await.unwrap();
        assert_eq!(next.revision, stored.revision + 1);
    }

    /// Two nodes' license services over one shared store: a node whose set is behind is
    /// refused by storage, catches up, and decides again, so writes never share a revision and
    /// a license stored by one node is a duplicate at the other.
    #[tokio::test]
    async fn writers_on_two_nodes_never_share_a_revision() {
        let store = Arc::new(MemoryStore::shared());
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = || TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        let a = Licenses::load(store.clone(), trusted()).await.unwrap();
        let b = Licenses::load(store.clone(), trusted()).await.unwrap();
        let on_a = a.create(doc(&key, "A")).await.unwrap();
        assert_eq!(on_a.revision, 1);
        assert_eq!(b.current().revision, 0, "b has not heard of it");
        let rx = b.subscribe();
        let on_b = b.create(doc(&key, "B")).await.unwrap();
        assert_eq!(on_b.revision, 2, "b decided again after a's write");
        assert!(rx.has_changed().unwrap());
        let set = b.current();
        assert_eq!((set.revision, set.licenses.len()), (2, 2));
        assert!(matches!(
            b.create(doc(&key, "A")).await,
            Err(WriteError::Duplicate { existing, .. }) if existing == on_a.id
        ));
        assert!(matches!(
            a.create(doc(&key, "B")).await,
            Err(WriteError::Duplicate { existing, .. }) if existing == on_b.id
        ));
        assert!(a.delete(on_b.id).await.unwrap());
        assert_eq!(store.licenses().await.unwrap().revision, 3);
        assert_eq!(
            a.current().licenses.keys().collect::<Vec<_>>(),
            vec![&on_a.id]
        );
    }
}
