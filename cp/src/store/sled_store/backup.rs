//! The embedded store's side of backups: every record at one point in time, and writing a
//! backup's records into a new, empty database (`licsync-cp restore`).
//!
//! Every write goes through [`SledStore::write`], one at a time; a snapshot holds that same
//! writer lock while it reads, so no write of any kind (a license batch, a registration, a
//! usage report) falls between two of its reads. The reads are in-memory scans, so writers
//! wait for milliseconds per thousand records.

use async_trait::async_trait;

use super::{
    REVISION_KEY, SledStore, Trees, audit_key, backend, decode_usage_row, encode, scan,
    stored_revision,
};
use crate::store::{LicenseRows, SnapshotStore, StoreError, StoreResult, StoreSnapshot};

#[async_trait]
impl SnapshotStore for SledStore {
    async fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        let _no_writes = self.writer.lock().await;
        let t = &self.trees;
        let revision = stored_revision(t)?;
        let usage = t
            .usage
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(backend)?;
                decode_usage_row(&key, &value)
            })
            .collect::<StoreResult<_>>()?;
        Ok(StoreSnapshot {
            licenses: LicenseRows {
                revision,
                licenses: scan(&t.licenses)?,
            },
            registration_tokens: scan(&t.tokens)?,
            dataplanes: scan(&t.dataplanes)?,
            api_tokens: scan(&t.api_tokens)?,
            users: scan(&t.users)?,
            connected_apps: scan(&t.connected_apps)?,
            usage,
            audit: scan(&t.audit)?,
            sealed_secrets: Vec::new(),
        })
    }
}

impl SledStore {
    /// Writes every record of `snapshot` into this database, which must hold none, with one
    /// flush: ids, timestamps, revisions and use counts as they are, and the revision counter
    /// set to the snapshot's, so data planes holding revision N find nothing new and nothing
    /// lost. Sealed secrets are not written: an embedded node keeps its secrets in files.
    pub async fn restore_into_empty(&self, snapshot: StoreSnapshot) -> StoreResult<()> {
        self.write(move |t| {
            if let Some(name) = first_nonempty(t) {
                return Err(StoreError::Backend(format!(
                    "the embedded database already holds {name}; restore into a new data_dir"
                )));
            }
            let s = &snapshot;
            for l in &s.licenses.licenses {
                t.licenses
                    .insert(l.id.as_bytes(), encode(l)?)
                    .map_err(backend)?;
            }
            t.meta
                .insert(REVISION_KEY, s.licenses.revision.to_be_bytes().as_slice())
                .map_err(backend)?;
            for token in &s.registration_tokens {
                t.tokens
                    .insert(token.id.as_bytes(), encode(token)?)
                    .map_err(backend)?;
                t.token_hashes
                    .insert(token.token_hash.as_bytes(), token.id.as_bytes().as_slice())
                    .map_err(backend)?;
            }
            for d in &s.dataplanes {
                t.dataplanes
                    .insert(d.id.as_bytes(), encode(d)?)
                    .map_err(backend)?;
            }
            for token in &s.api_tokens {
                t.api_tokens
                    .insert(token.id.as_bytes(), encode(token)?)
                    .map_err(backend)?;
            }
            for u in &s.users {
                t.users
                    .insert(u.username.as_bytes(), encode(u)?)
                    .map_err(backend)?;
            }
            for a in &s.connected_apps {
                t.connected_apps
                    .insert(a.client_id.as_bytes(), encode(a)?)
                    .map_err(backend)?;
            }
            for u in &s.usage {
                let key = super::usage_key(&(u.dataplane, u.epoch, u.month));
                t.usage
                    .insert(key.as_slice(), u.count.to_be_bytes().as_slice())
                    .map_err(backend)?;
            }
            for r in &s.audit {
                t.audit
                    .insert(audit_key(r.at_ms, r.id).as_slice(), encode(r)?)
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }
}

/// The first tree that holds records, by name.
fn first_nonempty(t: &Trees) -> Option<&'static str> {
    [
        ("licenses", &t.licenses),
        ("registration tokens", &t.tokens),
        ("data planes", &t.dataplanes),
        ("API tokens", &t.api_tokens),
        ("users", &t.users),
        ("connected apps", &t.connected_apps),
        ("usage counters", &t.usage),
        ("audit records", &t.audit),
    ]
    .into_iter()
    .find(|(_, tree)| !tree.is_empty())
    .map(|(name, _)| name)
}
