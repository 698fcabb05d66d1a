//! The report key: an Ed25519 key the control plane creates at its first start to sign usage
//! reports, so a vendor who knows its public half can tell an untouched report from an edited
//! one without reaching the control plane.
//!
//! `<data_dir>/pki/report.key` holds the private key (PKCS#8 PEM, mode 0600, never logged) and
//! `<data_dir>/pki/report.pub` the public key as standard base64 (rewritten at every start from
//! the private key, so it cannot disagree with it). The public key is also served at
//! `GET /license/report/key`. Like the CA, the key must survive upgrades and restores: back up
//! the `pki/` directory.

use std::io;
use std::path::{Path, PathBuf};

use licsync_common::fsutil::{self, PUBLIC_MODE};
use licsync_common::license::{SigningKey, SigningKeyError};

/// File name of the private key inside the PKI directory.
pub const REPORT_KEY_FILE: &str = "report.key";
/// File name of the public key (base64) inside the PKI directory.
pub const REPORT_PUB_FILE: &str = "report.pub";

/// Why the report key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum ReportKeyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is not a usable report key: {source}; restore it from backup, or move it away to create a new one (reports signed before then verify only with the old public key)"
    )]
    Broken {
        path: PathBuf,
        source: SigningKeyError,
    },
    /// The key is readable by others; the message names the file and the fix.
    #[error("{0}")]
    Insecure(io::Error),
}

/// The key that signs usage reports.
pub struct ReportKey {
    key: SigningKey,
    public: String,
}

impl ReportKey {
    /// Loads the key from `dir`, creating it (and `dir`) the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, ReportKeyError> {
        let io_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ReportKeyError::Io {
                action,
                path,
                source,
            }
        };
        fsutil::ensure_private_dir(dir).map_err(io_error("create directory", dir))?;
        let path = dir.join(REPORT_KEY_FILE);
        let key = if path.exists() {
            fsutil::check_private(&path).map_err(ReportKeyError::Insecure)?;
            let pem = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
            SigningKey::from_pem(&pem).map_err(|source| ReportKeyError::Broken {
                path: path.clone(),
                source,
            })?
        } else {
            let (key, pem) = SigningKey::generate().map_err(|source| ReportKeyError::Broken {
                path: path.clone(),
                source,
            })?;
            fsutil::write_new_secret(&path, pem.as_bytes()).map_err(io_error("write", &path))?;
            tracing::info!(event = "report_key.created", path = %path.display(), public_key = %key.public_key_base64(), "Created the key that signs usage reports.");
            key
        };
        let key = Self::from_key(key);
        key.write_public(dir)?;
        Ok(key)
    }

    fn from_key(key: SigningKey) -> Self {
        let public = key.public_key_base64();
        Self { key, public }
    }

    /// A new key and its PKCS#8 PEM (to be kept somewhere: a file, or sealed in a database).
    pub fn generate() -> Result<(Self, String), SigningKeyError> {
        let (key, pem) = SigningKey::generate()?;
        Ok((Self::from_key(key), pem))
    }

    /// The key in `pem` (PKCS#8), as [`ReportKey::generate`] returns it.
    pub fn from_pem(pem: &str) -> Result<Self, SigningKeyError> {
        SigningKey::from_pem(pem).map(Self::from_key)
    }

    /// Writes the public key to `<dir>/report.pub` when it differs from what is there, so the
    /// file cannot disagree with the key in use.
    pub fn write_public(&self, dir: &Path) -> Result<(), ReportKeyError> {
        let pub_path = dir.join(REPORT_PUB_FILE);
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(self.public.as_str()) {
            fsutil::write_atomic(&pub_path, self.public.as_bytes(), PUBLIC_MODE).map_err(
                |source| ReportKeyError::Io {
                    action: "write",
                    path: pub_path.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// A key that lives only in memory (tests).
    pub fn ephemeral() -> Result<Self, SigningKeyError> {
        Self::generate().map(|(key, _)| key)
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key, standard base64 of the raw 32 bytes.
    pub fn public_key_base64(&self) -> &str {
        &self.public
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let first = ReportKey::load_or_create(&pki).unwrap();
        let mode = std::fs::metadata(pki.join(REPORT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(pki.join(REPORT_PUB_FILE)).unwrap(),
            first.public_key_base64()
        );
        let again = ReportKey::load_or_create(&pki).unwrap();
        assert_eq!(again.public_key_base64(), first.public_key_base64());

        std::fs::set_permissions(
            pki.join(REPORT_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let error = ReportKey::load_or_create(&pki).err().unwrap();
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
