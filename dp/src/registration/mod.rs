//! The registration file and the `licsync-dp registration` commands, after Flex Gateway's
//! `flexctl registration`.
//!
//! `registration.yaml` is everything the agent needs to reach and be trusted by the control
//! plane: its id and name, the cluster URL, the cluster CA, its client certificate and private
//! key, and the license-signing keys known at registration. It holds a private key, so it is
//! written with mode 0600 and replaced atomically.
//!
//! - [`create`]: exchanges a registration token for a certificate (`registration create`).
//! - [`ca_pin`]: fetches the cluster CA over TLS and checks it against `--ca-cert-hash`.

pub mod ca_pin;
pub mod create;

use std::path::{Path, PathBuf};

use licsync_common::fsutil;
use licsync_common::license::TrustedKeys;
use licsync_common::pki::{self, CertInfo};
use licsync_common::time_fmt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cluster::{BadClusterUrl, ClientIdentity, ClusterUrl, Diagnosis, TlsSetupError};

pub use create::{CaSource, CreateOptions};

/// The file name `registration create` writes in its output directory.
pub const FILE_NAME: &str = "registration.yaml";

/// The contents of `registration.yaml`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationFile {
    pub dataplane_id: String,
    pub dataplane_name: String,
    /// `https://HOST:PORT` of the control plane's cluster listener.
    pub cluster_url: String,
    /// The cluster CA certificate, PEM.
    pub ca_certificate: String,
    /// This data plane's client certificate, PEM.
    pub certificate: String,
    /// This data plane's private key, PKCS#8 PEM.
    pub private_key: String,
    /// Standard base64 Ed25519 license-signing keys the control plane trusted at registration.
    #[serde(default)]
    pub trusted_license_keys: Vec<String>,
    /// RFC 3339.
    pub registered_at: String,
}

impl std::fmt::Debug for RegistrationFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationFile")
            .field("dataplane_id", &self.dataplane_id)
            .field("dataplane_name", &self.dataplane_name)
            .field("cluster_url", &self.cluster_url)
            .field("registered_at", &self.registered_at)
            .finish_non_exhaustive()
    }
}

/// Why a registration command or file failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("registration file {} already exists; choose another --output-directory or remove it", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error(
        "registration file {} not found; register this data plane with `licsync-dp registration create --token T --server https://HOST:8005 --ca-cert-hash sha256:HEX`, or set registration_file in the configuration",
        .path.display()
    )]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registration file {} is invalid: {reason}; register again or restore the file", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--ca-cert {}: {reason}", .path.display())]
    BadCaFile { path: PathBuf, reason: String },
    #[error(
        "--ca-cert-hash '{0}' is not sha256:<64 hex digits>; copy ca_cert_sha256 from the answer to POST /registration-tokens"
    )]
    BadHash(String),
    #[error(
        "the control plane's CA certificate has fingerprint sha256:{actual}, not the expected sha256:{expected}; check --ca-cert-hash and that --server is your control plane"
    )]
    FingerprintMismatch { actual: String, expected: String },
    #[error("cannot fetch the control plane's CA certificate: {0}")]
    Probe(Diagnosis),
    #[error(transparent)]
    Url(#[from] BadClusterUrl),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot connect to register: {0}")]
    Unreachable(Diagnosis),
    #[error("the control plane at {url} refused the registration: {message}{hint}")]
    Refused {
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error("the control plane at {url} sent an unusable registration answer: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("cannot create a key and certificate request: {0}")]
    Pki(#[from] pki::PkiError),
}

impl RegistrationFile {
    /// Reads and checks `path`. A file others can read is used, with a warning.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RegistrationError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                RegistrationError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        if let Err(e) = fsutil::check_private(path) {
            tracing::warn!(path = %path.display(), reason = %e, "The registration file holds a private key but others can read it.");
        }
        let file: Self =
            serde_yaml_ng::from_str(&text).map_err(|e| RegistrationError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        file.check().map_err(|reason| RegistrationError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(file)
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), RegistrationError> {
        let write_err = |source| RegistrationError::Write {
            path: path.to_owned(),
            source,
        };
        let text =
            serde_yaml_ng::to_string(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        fsutil::write_atomic(path, text.as_bytes(), fsutil::SECRET_MODE).map_err(write_err)
    }

    fn check(&self) -> Result<(), String> {
        if self.dataplane_id.trim().is_empty() {
            return Err("dataplane_id is empty".into());
        }
        self.cluster_url()
            .map_err(|e| format!("cluster_url: {e}"))?;
        if pki::certificates_from_pem(&self.ca_certificate).is_empty() {
            return Err("ca_certificate holds no PEM certificate".into());
        }
        self.certificate_info()
            .map_err(|e| format!("certificate: {e}"))?;
        pki::private_key_from_pem(&self.private_key, "private_key")
            .map_err(|e| format!("private_key: {e}"))?;
        TrustedKeys::parse(&self.trusted_license_keys)
            .map_err(|e| format!("trusted_license_keys: {e}"))?;
        Ok(())
    }

    pub fn cluster_url(&self) -> Result<ClusterUrl, BadClusterUrl> {
        ClusterUrl::parse(&self.cluster_url)
    }

    pub fn certificate_info(&self) -> Result<CertInfo, pki::PkiError> {
        CertInfo::from_pem(&self.certificate)
    }

    pub fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            certificate_pem: self.certificate.clone(),
            private_key_pem: self.private_key.clone(),
        }
    }

    pub fn trusted_keys(&self) -> TrustedKeys {
        TrustedKeys::parse(&self.trusted_license_keys).unwrap_or_default()
    }

    /// What `registration inspect` prints: never the private key.
    pub fn inspect(&self) -> Result<serde_json::Value, pki::PkiError> {
        let cert = self.certificate_info()?;
        let ca_fingerprint = pki::first_certificate(&self.ca_certificate, "ca_certificate")
            .map(|der| format!("sha256:{}", pki::sha256_hex(&der)))
            .ok();
        Ok(serde_json::json!({
            "dataplane_id": self.dataplane_id,
            "dataplane_name": self.dataplane_name,
            "cluster_url": self.cluster_url,
            "registered_at": self.registered_at,
            "expiration_date": time_fmt::go_utc(cert.not_after),
            "expired": cert.not_after <= OffsetDateTime::now_utc(),
            "certificate_serial": cert.serial,
            "ca_certificate_sha256": ca_fingerprint,
            "trusted_license_keys": self.trusted_license_keys,
        }))
    }
}

/// Now, RFC 3339, for `registered_at`.
pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use licsync_common::pki::CertificateAuthority;

    use super::*;

    /// A registration as the control plane would issue it, from a fresh CA.
    pub(crate) fn sample(cert_ttl: Duration) -> RegistrationFile {
        let (ca, _) = CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let (key_pem, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let id = "3f0c2a9e-8d4b-4f6a-9c1e-2b7d5a8e0f13";
        let issued = ca.sign_dataplane(&csr, id, cert_ttl).unwrap();
        RegistrationFile {
            dataplane_id: id.into(),
            dataplane_name: "edge-1".into(),
            cluster_url: "https://cp.example.com:8005".into(),
            ca_certificate: ca.cert_pem().to_owned(),
            certificate: issued.cert_pem,
            private_key: key_pem,
            trusted_license_keys: vec!["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into()],
            registered_at: now_rfc3339(),
        }
    }

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let file = sample(Duration::from_secs(3600));
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(RegistrationFile::load(&path).unwrap(), file);
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "dataplane_id:",
            "dataplane_name:",
            "cluster_url:",
            "ca_certificate:",
            "certificate:",
            "private_key:",
            "trusted_license_keys:",
            "registered_at:",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
        assert!(
            !format!("{file:?}").contains("PRIVATE KEY"),
            "Debug never shows the key"
        );
    }

    #[test]
    fn inspect_prints_go_style_expiry_and_no_key() {
        let file = sample(Duration::from_secs(3600));
        let json = file.inspect().unwrap();
        let expiration = json["expiration_date"].as_str().unwrap();
        assert!(expiration.ends_with(" +0000 UTC"), "{expiration}");
        assert_eq!(expiration.len(), "2025-09-25 19:27:32 +0000 UTC".len());
        assert_eq!(json["dataplane_id"], file.dataplane_id);
        assert_eq!(json["expired"], false);
        assert!(!json.to_string().contains("PRIVATE KEY"));
    }

    #[test]
    fn missing_or_broken_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let err = RegistrationFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("registration create"), "{err}");

        let mut file = sample(Duration::from_secs(3600));
        file.certificate = "not a certificate".into();
        file.save(&path).unwrap();
        let err = RegistrationFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(FILE_NAME) && err.contains("certificate"),
            "{err}"
        );
    }
}
