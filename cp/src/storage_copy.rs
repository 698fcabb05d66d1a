//! `licsync-cp storage copy --from <sled data_dir> --to <postgres url> --encryption-key-file F`:
//! moves a whole embedded control plane into an empty PostgreSQL database, so its data planes
//! keep their certificates and reconnect to the new nodes without registering again.
//!
//! Everything is read first (the sled database, which must not be in use, and the CA and report
//! key from `<data_dir>/pki`), then written in one transaction
//! ([`crate::store::postgres::import`]): a copy that fails leaves the target as it was. The CA
//! and report key are sealed under the storage key exactly as a node sealing them itself would
//! ([`crate::cluster::secrets`]), so the nodes started on the copy load them.

use std::path::{Path, PathBuf};

use licsync_common::pki::CertificateAuthority;

use crate::cluster::secrets::{
    CA_SECRET, REPORT_KEY_SECRET, SealedCa, UI_SESSION_KEY_FILE, UI_SESSION_SECRET,
};
use crate::config::PostgresConfig;
use crate::store::postgres::ConnectOptions;
use crate::store::postgres::import::{Import, ImportError};
use crate::store::storage_key::StorageKey;
use crate::store::{PostgresStore, SledStore, SnapshotStore, StoreError, StoreSnapshot};
use crate::ui::session::SessionKey;
use crate::usage::ReportKey;
use crate::usage::report_key::REPORT_KEY_FILE;

/// What to copy where.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The `data_dir` of the control plane to copy (holding `cp.sled` and `pki/`).
    pub from: PathBuf,
    /// `postgres://USER@HOST:PORT/DB` of an empty database.
    pub to: String,
    /// The storage key the new nodes will use (`storage.encryption_key_file`).
    pub encryption_key_file: PathBuf,
    /// The database password, unless in the URL or `LICSYNC_CP_POSTGRES_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// The PEM CA of the database server's certificate: TLS, as `storage.postgres.ca_file`.
    pub ca_file: Option<PathBuf>,
}

/// What a copy carried: the same counts a backup prints, with the PKI always present.
pub type CopySummary = crate::backup::Counts;

/// Why a copy did not happen; the target is then unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{0} holds no cp.sled: --from must be the data_dir of a control plane with embedded storage (storage.backend = \"sled\")"
    )]
    NotADataDir(PathBuf),
    #[error(
        "cannot open {path}: {reason}. If a licsync-cp is running on this data_dir, stop it first: the copy must see everything it wrote"
    )]
    InUse { path: PathBuf, reason: String },
    #[error(
        "cannot read {path}: {reason}; the copy needs the cluster CA and the report key of the source"
    )]
    Pki { path: PathBuf, reason: String },
    #[error("--{flag}: {reason}")]
    Option { flag: &'static str, reason: String },
    #[error("cannot read the source: {0}")]
    Source(StoreError),
    #[error("cannot write the target: {0}")]
    Target(StoreError),
    #[error(
        "{0}; nothing was copied. Copy into a new, empty database (CREATE DATABASE ...), or drop this one and create it again if it holds nothing you need"
    )]
    NotEmpty(ImportError),
}

/// Copies the control plane in `options.from` into the database `options.to`.
pub async fn copy(options: &CopyOptions) -> Result<CopySummary, CopyError> {
    let key = StorageKey::load(&options.encryption_key_file).map_err(|e| CopyError::Option {
        flag: "encryption-key-file",
        reason: e.to_string(),
    })?;
    let target = PostgresConfig {
        url: Some(options.to.clone()),
        password_file: options.password_file.clone(),
        ca_file: options.ca_file.clone(),
        ..PostgresConfig::default()
    };
    let password = target.password().map_err(|e| CopyError::Option {
        flag: "password-file",
        reason: e.reason,
    })?;
    let ca_pem = target.ca_pem().map_err(|e| CopyError::Option {
        flag: "ca-file",
        reason: e.reason,
    })?;
    let sled_path = options.from.join("cp.sled");
    if !sled_path.is_dir() {
        return Err(CopyError::NotADataDir(options.from.clone()));
    }
    let secrets = sealed_secrets(&options.from.join("pki"), &key)?;
    let source = SledStore::open(&sled_path).map_err(|e| CopyError::InUse {
        path: sled_path.clone(),
        reason: e.to_string(),
    })?;
    let StoreSnapshot {
        licenses,
        registration_tokens,
        dataplanes,
        api_tokens,
        users,
        connected_apps,
        usage,
        audit,
        ..
    } = source.snapshot().await.map_err(CopyError::Source)?;
    drop(source);

    let store = PostgresStore::connect(&ConnectOptions {
        url: &options.to,
        password: password.as_deref(),
        pool_size: 1,
        ca_pem: ca_pem.as_deref(),
    })
    .await
    .map_err(CopyError::Target)?;
    store.migrate().await.map_err(CopyError::Target)?;
    let secrets: Vec<(&str, Vec<u8>)> = secrets.into_iter().collect();
    store
        .import_into_empty(&Import {
            licenses: &licenses,
            registration_tokens: &registration_tokens,
            dataplanes: &dataplanes,
            api_tokens: &api_tokens,
            users: &users,
            connected_apps: &connected_apps,
            usage: &usage,
            audit: &audit,
            secrets: &secrets,
        })
        .await
        .map_err(|e| match e {
            ImportError::Store(e) => CopyError::Target(e),
            not_empty => CopyError::NotEmpty(not_empty),
        })?;
    Ok(CopySummary {
        licenses: licenses.licenses.len(),
        revision: licenses.revision,
        dataplanes: dataplanes.len(),
        registration_tokens: registration_tokens.len(),
        api_tokens: api_tokens.len(),
        users: users.len(),
        connected_apps: connected_apps.len(),
        usage_counters: usage.len(),
        audit_records: audit.len(),
        pki: true,
    })
}

/// The CA and report key in `pki`, checked and sealed under `key`.
fn sealed_secrets(pki: &Path, key: &StorageKey) -> Result<Vec<(&'static str, Vec<u8>)>, CopyError> {
    let read = |name: &str| {
        let path = pki.join(name);
        std::fs::read_to_string(&path).map_err(|e| CopyError::Pki {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    let broken = |name: &str, reason: String| CopyError::Pki {
        path: pki.join(name),
        reason,
    };
    let ca = SealedCa {
        cert_pem: read("ca.crt")?,
        key_pem: read("ca.key")?,
    };
    CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem)
        .map_err(|e| broken("ca.key", e.to_string()))?;
    let report_pem = read(REPORT_KEY_FILE)?;
    ReportKey::from_pem(&report_pem).map_err(|e| broken(REPORT_KEY_FILE, e.to_string()))?;
    let ca_json = serde_json::to_vec(&ca).map_err(|e| broken("ca.crt", e.to_string()))?;
    let seal = |name: &str, secret: &[u8]| {
        key.seal(name, secret).map_err(|e| CopyError::Option {
            flag: "encryption-key-file",
            reason: e.to_string(),
        })
    };
    let mut sealed = vec![
        (CA_SECRET, seal(CA_SECRET, &ca_json)?),
        (
            REPORT_KEY_SECRET,
            seal(REPORT_KEY_SECRET, report_pem.as_bytes())?,
        ),
    ];
    // The status page's session key, when the control plane made one: sessions signed in
    // before the move stay valid at the new nodes.
    let session_path = pki.join(UI_SESSION_KEY_FILE);
    if session_path.exists() {
        let bytes = std::fs::read(&session_path).map_err(|e| CopyError::Pki {
            path: session_path.clone(),
            reason: e.to_string(),
        })?;
        SessionKey::from_bytes(&bytes).map_err(|e| broken(UI_SESSION_KEY_FILE, e.to_string()))?;
        sealed.push((UI_SESSION_SECRET, seal(UI_SESSION_SECRET, &bytes)?));
    }
    Ok(sealed)
}
