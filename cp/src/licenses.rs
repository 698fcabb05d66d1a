//! The license service: the one writer of licenses, and the source every data-plane stream
//! watches.
//!
//! A write is validated (structure, signature against `licenses.trusted_keys`, Kong's uniqueness
//! rule), made durable in the store with a new revision, and only then published as a new
//! immutable [`LicenseSet`] through a `tokio::sync::watch`. Streams therefore never send a change
//! that a crash could take back, and a burst of writes coalesces naturally: a stream that is busy
//! simply sees the newest set when it looks next.

use std::collections::BTreeMap;
use std::sync::Arc;

use licsync_common::license::{License, LicenseError, TrustedKeys};
use licsync_common::unix_now;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::model::{Revision, StoredLicense};
use crate::store::{LicenseRows, Store, StoreError};

/// An immutable snapshot of every license at one revision. Cheap to clone and share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseSet {
    pub revision: Revision,
    pub licenses: BTreeMap<Uuid, Arc<StoredLicense>>,
}

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
    store: Arc<dyn Store>,
    trusted: TrustedKeys,
    write_lock: Mutex<()>,
    current: watch::Sender<Arc<LicenseSet>>,
}

impl Licenses {
    /// Loads the current set from storage.
    pub async fn load(store: Arc<dyn Store>, trusted: TrustedKeys) -> Result<Self, StoreError> {
        let set = LicenseSet::from(store.licenses().await?);
        let (current, _) = watch::channel(Arc::new(set));
        Ok(Self {
            store,
            trusted,
            write_lock: Mutex::new(()),
            current,
        })
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<LicenseSet> {
        self.current.borrow().clone()
    }

    /// A receiver that is marked changed after every published write.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LicenseSet>> {
        self.current.subscribe()
    }

    pub fn trusted_keys(&self) -> &TrustedKeys {
        &self.trusted
    }

    /// `POST /licenses`: stores a new license under a fresh id.
    pub async fn create(&self, document: String) -> Result<Arc<StoredLicense>, WriteError> {
        let license = self.verified(&document, None)?;
        let _guard = self.write_lock.lock().await;
        let set = self.current();
        let signature = license.signature_hex();
        check_unique(&set, &signature, None, &document)?;
        let now = unix_now();
        let stored = StoredLicense {
            id: Uuid::new_v4(),
            document,
            signature,
            created_at: now,
            updated_at: now,
            revision: set.revision + 1,
        };
        self.commit_put(&set, stored).await
    }

    /// `PUT /licenses/{id}`: creates with that id or replaces it, keeping `created_at`.
    pub async fn put(
        &self,
        id: Uuid,
        document: String,
    ) -> Result<(Arc<StoredLicense>, PutOutcome), WriteError> {
        let license = self.verified(&document, Some(id))?;
        let _guard = self.write_lock.lock().await;
        let set = self.current();
        let signature = license.signature_hex();
        check_unique(&set, &signature, Some(id), &document)?;
        let now = unix_now();
        let existing = set.licenses.get(&id);
        let outcome = if existing.is_some() {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        };
        let stored = StoredLicense {
            id,
            document,
            signature,
            created_at: existing.map_or(now, |l| l.created_at),
            updated_at: now,
            revision: set.revision + 1,
        };
        Ok((self.commit_put(&set, stored).await?, outcome))
    }

    /// `PATCH /licenses/{id}`: replaces the document of an existing license.
    pub async fn patch(
        &self,
        id: Uuid,
        document: String,
    ) -> Result<Arc<StoredLicense>, WriteError> {
        let license = self.verified(&document, Some(id))?;
        let _guard = self.write_lock.lock().await;
        let set = self.current();
        let existing = set.licenses.get(&id).ok_or(WriteError::NotFound(id))?;
        let signature = license.signature_hex();
        check_unique(&set, &signature, Some(id), &document)?;
        let stored = StoredLicense {
            id,
            document,
            signature,
            created_at: existing.created_at,
            updated_at: unix_now(),
            revision: set.revision + 1,
        };
        self.commit_put(&set, stored).await
    }

    /// `DELETE /licenses/{id}`: `false` when there was nothing to delete.
    pub async fn delete(&self, id: Uuid) -> Result<bool, WriteError> {
        let _guard = self.write_lock.lock().await;
        let set = self.current();
        if !set.licenses.contains_key(&id) {
            return Ok(false);
        }
        let revision = set.revision + 1;
        if let Err(error) = self.store.delete_license(id, revision).await {
            self.resync_after_failure().await;
            return Err(error.into());
        }
        let mut next = (*set).clone();
        next.revision = revision;
        next.licenses.remove(&id);
        self.current.send_replace(Arc::new(next));
        tracing::info!(event = "license.deleted", license.id = %id, revision, "License deleted.");
        Ok(true)
    }

    async fn commit_put(
        &self,
        set: &LicenseSet,
        stored: StoredLicense,
    ) -> Result<Arc<StoredLicense>, WriteError> {
        if let Err(error) = self.store.put_license(&stored).await {
            self.resync_after_failure().await;
            return Err(error.into());
        }
        let created = !set.licenses.contains_key(&stored.id);
        let stored = Arc::new(stored);
        let mut next = set.clone();
        next.revision = stored.revision;
        next.licenses.insert(stored.id, stored.clone());
        self.current.send_replace(Arc::new(next));
        if created {
            tracing::info!(event = "license.created", license.id = %stored.id, revision = stored.revision, "License created.");
        } else {
            tracing::info!(event = "license.updated", license.id = %stored.id, revision = stored.revision, "License updated.");
        }
        Ok(stored)
    }
}

impl Licenses {
    /// Parses and verifies a submitted document. A refusal is logged (`license.rejected`,
    /// WARN): the client sees the reason, but the operator of the control plane must too,
    /// since an untrusted signing key is usually a configuration mistake on this side.
    fn verified(&self, document: &str, id: Option<Uuid>) -> Result<License, WriteError> {
        License::parse_verified(document, &self.trusted).map_err(|error| {
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

    /// A failed write may still have reached storage (a transaction committed, its flush
    /// failed). Republishing what storage holds keeps revisions unique and the uniqueness check
    /// honest; if storage cannot even be read, the next write fails again and says so.
    async fn resync_after_failure(&self) {
        match self.store.licenses().await {
            Ok(rows) => {
                let set = LicenseSet::from(rows);
                if set != *self.current() {
                    tracing::warn!(
                        event = "license.storage_uncertain",
                        revision = set.revision,
                        "A failed write reached storage; publishing what storage holds."
                    );
                    self.current.send_replace(Arc::new(set));
                }
            }
            Err(error) => {
                tracing::error!(event = "license.storage_read_failed", %error, "Cannot read licenses back after a failed write.");
            }
        }
    }
}

fn check_unique(
    set: &LicenseSet,
    signature: &str,
    own_id: Option<Uuid>,
    document: &str,
) -> Result<(), WriteError> {
    match set
        .licenses
        .values()
        .find(|l| l.signature == signature && Some(l.id) != own_id)
    {
        Some(existing) => Err(WriteError::Duplicate {
            payload: document.to_owned(),
            existing: existing.id,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
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
}
