//! The cluster CA on disk under `<data_dir>/pki/`.
//!
//! Created at first start (ECDSA P-256) and reused afterwards: every data plane pins it, so it
//! must never change behind their backs. The server certificate is cheap and data planes trust
//! the CA rather than the leaf, so it is issued afresh at every start for the configured
//! `cluster.server_names` (a changed name list takes effect at a restart) and again, while
//! running, before it expires ([`super::server_cert`]). Each issue replaces `server.crt` and
//! `server.key` atomically. Private keys are mode 0600 in a 0700 directory.

use std::io;
use std::path::{Path, PathBuf};

use licsync_common::fsutil::{self, PUBLIC_MODE, SECRET_MODE};
use licsync_common::pki::{self, CertInfo, CertificateAuthority, PkiError};
use time::OffsetDateTime;

use crate::config::PkiConfig;

/// Why the CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is unusable: {source}; restore it from backup, or move the pki directory away to create a new CA (every data plane must then register again)"
    )]
    Broken { path: PathBuf, source: PkiError },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] PkiError),
    /// The CA key is readable by others; its message names the file and the fix.
    #[error("{0}")]
    Insecure(io::Error),
}

/// The CA and the server identity of the cluster listener.
pub struct ClusterPki {
    pub ca: CertificateAuthority,
    pub server: ServerCert,
}

/// A server certificate for the cluster listener, as written to `server.crt` / `server.key`.
pub struct ServerCert {
    /// The server certificate followed by the CA certificate, so a data plane that pins only
    /// the CA fingerprint (`--ca-cert-hash`) can find and check the CA in the handshake.
    pub chain_pem: String,
    pub key_pem: String,
    /// Serial (hex) of the server certificate.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

impl ServerCert {
    /// Issues a server certificate for `names` valid for `ttl` and writes it to `dir`
    /// (`server.crt`, and `server.key` mode 0600), each file replaced atomically.
    pub fn issue(
        ca: &CertificateAuthority,
        dir: &Path,
        names: &[String],
        ttl: std::time::Duration,
    ) -> Result<Self, CaError> {
        let issued = ca.issue_server(names, ttl)?;
        let key_pem = issued.key_pem.clone().unwrap_or_default();
        let chain_pem = format!("{}{}", issued.cert_pem, ca.cert_pem());
        let info = CertInfo::from_pem(&issued.cert_pem)?;
        write(&dir.join("server.key"), key_pem.as_bytes(), SECRET_MODE)?;
        write(&dir.join("server.crt"), chain_pem.as_bytes(), PUBLIC_MODE)?;
        Ok(Self {
            chain_pem,
            key_pem,
            serial: info.serial,
            not_after: issued.not_after,
        })
    }

    /// The certificate chain and key for rustls.
    pub fn identity(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        PkiError,
    > {
        let chain = pki::certificates_from_pem(&self.chain_pem);
        let key = pki::private_key_from_pem(&self.key_pem, "the server key")?;
        Ok((chain, key))
    }
}

impl ClusterPki {
    /// Loads the CA from `dir` (creating it the first time) and issues the server certificate.
    pub fn load_or_create(
        dir: &Path,
        names: &[String],
        config: &PkiConfig,
    ) -> Result<Self, CaError> {
        let ca = load_or_create_ca(dir, config)?;
        Self::with_ca(ca, dir, names, config)
    }

    /// Issues this node's server certificate from `ca` (however the CA was obtained: from
    /// `dir` or from a shared database) into `dir`.
    pub fn with_ca(
        ca: CertificateAuthority,
        dir: &Path,
        names: &[String],
        config: &PkiConfig,
    ) -> Result<Self, CaError> {
        ensure_dir(dir)?;
        let server = ServerCert::issue(&ca, dir, names, config.server_cert_ttl.0)?;
        Ok(Self { ca, server })
    }
}

/// A new cluster CA and its private key (PEM).
pub fn generate_ca(config: &PkiConfig) -> Result<(CertificateAuthority, String), CaError> {
    // A unique subject per cluster: a certificate from another licsync cluster then fails as
    // "unknown issuer" (and is reported as such) instead of as a bad signature.
    let name = format!(
        "licsync cluster CA {}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    Ok(CertificateAuthority::generate(&name, config.ca_ttl.0)?)
}

/// The CA in `dir` (`ca.crt`, `ca.key`), created there the first time.
pub fn load_or_create_ca(dir: &Path, config: &PkiConfig) -> Result<CertificateAuthority, CaError> {
    ensure_dir(dir)?;
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    if key_path.exists() {
        let key_pem = read(&key_path)?;
        let cert_pem = read(&cert_path)?;
        fsutil::check_private(&key_path).map_err(CaError::Insecure)?;
        return CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|source| {
            CaError::Broken {
                path: cert_path.clone(),
                source,
            }
        });
    }
    let (ca, key_pem) = generate_ca(config)?;
    // The certificate first: a crash in between leaves no key without its certificate.
    write(&cert_path, ca.cert_pem().as_bytes(), PUBLIC_MODE)?;
    write(&key_path, key_pem.as_bytes(), SECRET_MODE)?;
    tracing::info!(event = "pki.ca_created", path = %cert_path.display(), fingerprint = %ca.fingerprint(), "Created the cluster CA.");
    Ok(ca)
}

/// Writes the CA certificate (public) to `<dir>/ca.crt`, where operators copy it from, when
/// it differs from what is there.
pub fn write_ca_cert(dir: &Path, ca: &CertificateAuthority) -> Result<(), CaError> {
    ensure_dir(dir)?;
    let path = dir.join("ca.crt");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(ca.cert_pem()) {
        write(&path, ca.cert_pem().as_bytes(), PUBLIC_MODE)?;
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    fsutil::ensure_private_dir(dir).map_err(|source| CaError::Io {
        action: "create directory",
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    fsutil::write_atomic(path, bytes, mode).map_err(|source| CaError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned()];
        let first = ClusterPki::load_or_create(dir.path(), &names, &PkiConfig::default()).unwrap();
        let second = ClusterPki::load_or_create(dir.path(), &names, &PkiConfig::default()).unwrap();
        assert_eq!(first.ca.fingerprint(), second.ca.fingerprint());
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let chain = second.server.identity().unwrap().0;
        assert_eq!(chain.len(), 2);
        assert_eq!(pki::sha256_hex(&chain[1]), second.ca.fingerprint());
        assert_ne!(
            first.server.serial, second.server.serial,
            "reissued at start"
        );
        let key_mode = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let on_disk = std::fs::read_to_string(dir.path().join("server.crt")).unwrap();
        assert_eq!(
            CertInfo::from_pem(&on_disk).unwrap().serial,
            second.server.serial
        );
    }
}
