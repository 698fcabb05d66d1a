//! Where the cluster's secrets live, and loading them at start.
//!
//! A node on an embedded store (sled, memory) keeps its CA and report key in `<data_dir>/pki`,
//! created at its first start ([`SecretHome::Files`]). Nodes sharing a PostgreSQL database must
//! all load the *same* CA (a data plane's certificate from one node is then valid at every
//! node) and the same report key, so these live in the database, sealed under the storage key
//! ([`SecretHome::Database`]): the first node to find a secret missing creates it and stores it
//! if still absent, and every node reads back what was stored. Only the CA certificate and the
//! report's public key are written to `<data_dir>/pki` there (both public, for operators); the
//! private keys never touch a node's disk. Each node still issues its own server certificate.
//!
//! The status page's session key ([`crate::ui::session`]) is kept the same way: sealed in the
//! database, so a session started at one node is valid at every node behind a load balancer;
//! or `<data_dir>/pki/ui-session.key` (0600) on an embedded store.
//!
//! A secret's name is also its sealing label, so a sealed value stored under one name can never
//! be opened as another.

use std::path::Path;
use std::sync::Arc;

use licsync_common::fsutil;
use licsync_common::pki::CertificateAuthority;
use serde::{Deserialize, Serialize};

use super::ca::{self, CaError};
use crate::config::PkiConfig;
use crate::store::storage_key::{StorageKey, StorageKeyError};
use crate::store::{SecretStore, StoreError};
use crate::ui::session::SessionKey;
use crate::usage::ReportKey;
use crate::usage::report_key::ReportKeyError;

/// The name (and sealing label) of the CA certificate and key.
pub const CA_SECRET: &str = "cluster_ca";
/// The name (and sealing label) of the report-signing key (PKCS#8 PEM).
pub const REPORT_KEY_SECRET: &str = "report_key";

/// The name (and sealing label) of the status page's session key (32 random bytes).
pub const UI_SESSION_SECRET: &str = "ui_session_key";
/// The session key's file in `<data_dir>/pki` on an embedded store.
pub const UI_SESSION_KEY_FILE: &str = "ui-session.key";

/// Where a node finds the cluster's secrets.
pub enum SecretHome {
    /// `<data_dir>/pki`: one node alone on an embedded store.
    Files,
    /// A database every node shares, the secrets sealed under `key`.
    Database {
        store: Arc<dyn SecretStore>,
        key: Box<StorageKey>,
    },
}

/// Why the secrets could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    ReportKey(#[from] ReportKeyError),
    #[error("cannot read the cluster secrets: {0}")]
    Storage(#[from] StoreError),
    /// A wrong storage key lands here, naming `storage.encryption_key_file`.
    #[error("{0}; this node cannot join the cluster")]
    Sealing(#[from] StorageKeyError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the stored {name} is unusable: {reason}; restore the database from backup (every data plane would otherwise have to register again)"
    )]
    Broken { name: &'static str, reason: String },
}

/// The CA and report key every node of a cluster uses.
pub struct ClusterSecrets {
    pub ca: CertificateAuthority,
    pub report_key: ReportKey,
    pub session_key: SessionKey,
}

/// The CA as sealed in the database.
#[derive(Serialize, Deserialize)]
pub struct SealedCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClusterSecrets {
    /// Loads the secrets from `home`, creating the missing ones; `pki_dir` receives the files
    /// (all of them with [`SecretHome::Files`], the public ones otherwise).
    pub async fn load_or_create(
        home: &SecretHome,
        pki_dir: &Path,
        config: &PkiConfig,
    ) -> Result<Self, SecretsError> {
        let (store, key) = match home {
            SecretHome::Files => {
                let ca = ca::load_or_create_ca(pki_dir, config)?;
                return Ok(Self {
                    ca,
                    report_key: ReportKey::load_or_create(pki_dir)?,
                    session_key: session_key_file(pki_dir)?,
                });
            }
            SecretHome::Database { store, key } => (store.as_ref(), key),
        };
        let (ca_json, created) = shared(store, key, CA_SECRET, || {
            let (ca, key_pem) = ca::generate_ca(config)?;
            let sealed = SealedCa {
                cert_pem: ca.cert_pem().to_owned(),
                key_pem,
            };
            serde_json::to_vec(&sealed).map_err(|e| broken(CA_SECRET, e))
        })
        .await?;
        let sealed: SealedCa =
            serde_json::from_slice(&ca_json).map_err(|e| broken(CA_SECRET, e))?;
        let ca = CertificateAuthority::from_pem(&sealed.cert_pem, &sealed.key_pem)
            .map_err(|e| broken(CA_SECRET, e))?;
        if created {
            tracing::info!(event = "pki.ca_created", fingerprint = %ca.fingerprint(), "Created the cluster CA in the shared database.");
        }
        ca::write_ca_cert(pki_dir, &ca)?;

        let (pem, created) = shared(store, key, REPORT_KEY_SECRET, || {
            let (_, pem) = ReportKey::generate().map_err(|e| broken(REPORT_KEY_SECRET, e))?;
            Ok(pem.into_bytes())
        })
        .await?;
        let pem = String::from_utf8(pem).map_err(|e| broken(REPORT_KEY_SECRET, e))?;
        let report_key = ReportKey::from_pem(&pem).map_err(|e| broken(REPORT_KEY_SECRET, e))?;
        if created {
            tracing::info!(event = "report_key.created", public_key = %report_key.public_key_base64(), "Created the key that signs usage reports in the shared database.");
        }
        report_key.write_public(pki_dir)?;

        let (bytes, _) = shared(store, key, UI_SESSION_SECRET, || {
            let bytes = SessionKey::generate_bytes().map_err(|e| broken(UI_SESSION_SECRET, e))?;
            Ok(bytes.to_vec())
        })
        .await?;
        let session_key =
            SessionKey::from_bytes(&bytes).map_err(|e| broken(UI_SESSION_SECRET, e))?;
        Ok(Self {
            ca,
            report_key,
            session_key,
        })
    }
}

/// The session key in `<pki_dir>/ui-session.key`, created (0600) the first time. A file that
/// others may read is refused, as for the other keys there.
fn session_key_file(pki_dir: &Path) -> Result<SessionKey, SecretsError> {
    let path = pki_dir.join(UI_SESSION_KEY_FILE);
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SecretsError::Io {
            action,
            path,
            source,
        }
    };
    let bytes = if path.exists() {
        fsutil::check_private(&path).map_err(io("use", &path))?;
        std::fs::read(&path).map_err(io("read", &path))?
    } else {
        let bytes = SessionKey::generate_bytes().map_err(|e| broken(UI_SESSION_SECRET, e))?;
        fsutil::write_new_secret(&path, &bytes).map_err(io("write", &path))?;
        bytes.to_vec()
    };
    SessionKey::from_bytes(&bytes).map_err(|e| SecretsError::Broken {
        name: UI_SESSION_SECRET,
        reason: format!(
            "{e} in {}; delete the file to create a new one (everyone signs in again)",
            path.display()
        ),
    })
}

/// The secret `name` opened, created with `create` when the database has none (and no other
/// node stores one first); `true` when this node's was the one stored.
async fn shared(
    store: &dyn SecretStore,
    key: &StorageKey,
    name: &'static str,
    create: impl FnOnce() -> Result<Vec<u8>, SecretsError>,
) -> Result<(Vec<u8>, bool), SecretsError> {
    if let Some(sealed) = store.secret(name).await? {
        return Ok((key.open(name, &sealed)?, false));
    }
    let mine = key.seal(name, &create()?)?;
    let stored = store.insert_secret_if_absent(name, &mine).await?;
    Ok((key.open(name, &stored)?, stored == mine))
}

fn broken(name: &'static str, reason: impl std::fmt::Display) -> SecretsError {
    SecretsError::Broken {
        name,
        reason: reason.to_string(),
    }
}
