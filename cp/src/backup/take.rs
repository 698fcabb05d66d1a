//! Taking a backup: a store's snapshot plus the PKI, as a [`Document`].
//!
//! An embedded node keeps its CA and report key in `<data_dir>/pki`; nodes on PostgreSQL keep
//! them sealed in the database, read in the same transaction as the records and opened here
//! with the storage key, so the backup restores anywhere without that key (and is as secret as
//! the keys it holds).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::document::{Document, Pki, StorageVersion};
use crate::cluster::secrets::{CA_SECRET, REPORT_KEY_SECRET, SealedCa};
use crate::config::{CpConfig, StorageBackend};
use crate::store::storage_key::StorageKey;
use crate::store::{Store, StoreError, StoreSnapshot};
use crate::usage::report_key::REPORT_KEY_FILE;

/// Where the PKI a backup carries is read from.
pub enum PkiSource<'a> {
    /// `ca.crt`, `ca.key` and `report.key` in this directory (`<data_dir>/pki`).
    Files(&'a Path),
    /// The snapshot's sealed secrets, opened with this key.
    Sealed(&'a StorageKey),
}

/// Why a backup could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the store: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot read {path}: {reason}")]
    Pki { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot open the stored {name}: {reason}")]
    Sealed { name: &'static str, reason: String },
    #[error("{0}")]
    Config(#[from] crate::config::Invalid),
}

/// The document for `snapshot`, with the PKI from `pki`.
pub fn document(
    snapshot: StoreSnapshot,
    pki: PkiSource<'_>,
    storage: StorageVersion,
) -> Result<Document, BackupError> {
    let pki = match pki {
        PkiSource::Files(dir) => pki_files(dir)?,
        PkiSource::Sealed(key) => pki_sealed(&snapshot.sealed_secrets, key)?,
    };
    Ok(Document::new(snapshot, pki, storage))
}

/// Backups of the running control plane (`GET /backup`).
pub struct Backups {
    store: Arc<dyn Store>,
    /// One backup at a time: a document is held whole in memory while it is sent.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Backups {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// A backup of everything, now, consistent as [`crate::store::SnapshotStore::snapshot`]
    /// makes it. A second caller waits for the first.
    pub async fn take(&self, config: &CpConfig) -> Result<Document, BackupError> {
        let _turn = self.one_at_a_time.lock().await;
        let snapshot = self.store.snapshot().await?;
        let backend = self.store.info().backend.to_owned();
        let pki_dir = config.data_dir.join("pki");
        match config.storage.backend {
            StorageBackend::Postgres => {
                let key = config.storage.storage_key()?;
                document(
                    snapshot,
                    PkiSource::Sealed(&key),
                    StorageVersion {
                        backend,
                        schema_version: crate::store::postgres::schema::LATEST.unsigned_abs(),
                    },
                )
            }
            StorageBackend::Sled | StorageBackend::Memory => document(
                snapshot,
                PkiSource::Files(&pki_dir),
                StorageVersion {
                    backend,
                    schema_version: crate::store::SledStore::CURRENT_SCHEMA,
                },
            ),
        }
    }
}

/// The PKI in `dir`, or `None` when no CA was created there yet.
fn pki_files(dir: &Path) -> Result<Option<Pki>, BackupError> {
    if !dir.join("ca.key").exists() {
        return Ok(None);
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| BackupError::Pki {
            path,
            reason: e.to_string(),
        })
    };
    Ok(Some(Pki {
        ca_cert_pem: read("ca.crt")?,
        ca_key_pem: read("ca.key")?,
        report_key_pem: read(REPORT_KEY_FILE)?,
    }))
}

/// The PKI among `sealed` (by name), opened with `key`; `None` when the store holds no CA yet.
fn pki_sealed(sealed: &[(String, Vec<u8>)], key: &StorageKey) -> Result<Option<Pki>, BackupError> {
    let open = |name: &'static str| -> Result<Option<Vec<u8>>, BackupError> {
        sealed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| {
                key.open(name, value).map_err(|e| BackupError::Sealed {
                    name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let (Some(ca), Some(report)) = (open(CA_SECRET)?, open(REPORT_KEY_SECRET)?) else {
        return Ok(None);
    };
    let broken = |name, reason: String| BackupError::Sealed { name, reason };
    let ca: SealedCa = serde_json::from_slice(&ca).map_err(|e| broken(CA_SECRET, e.to_string()))?;
    Ok(Some(Pki {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        report_key_pem: String::from_utf8(report)
            .map_err(|e| broken(REPORT_KEY_SECRET, e.to_string()))?,
    }))
}
