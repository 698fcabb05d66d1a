//! The registration file and the `licsync-dp registration` commands, after Flex Gateway's
//! `flexctl registration`.
//!
//! `registration.yaml` is everything the agent needs to reach and be trusted by the control
//! plane: its id and name, the cluster URL, the cluster CA, its client certificate and private
//! key, and the license-signing keys known at registration. It holds a private key, so it is
//! written with mode 0600 and replaced atomically.
//!
//! - [`create`]: exchanges a registration token for a certificate (`registration create`).
//! - [`renew`]: exchanges user or connected-app credentials for a fresh certificate for the
//!   same data plane (`registration renew`), also when the old one has expired.
//! - [`ca_pin`]: fetches the cluster CA over TLS and checks it against `--ca-cert-hash`.
//!
//! The running agent replaces the file itself when it rotates its certificate, and picks up a
//! file replaced by someone else (see [`crate::sync::lifecycle`]).

pub mod ca_pin;
pub mod create;
pub mod renew;

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
pub use renew::{Credential, RenewOptions};

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
    /// RFC 3339: when `registration create` wrote the file.
    pub registered_at: String,
    /// RFC 3339: when the certificate was last renewed (by hand or by rotation), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<String>,
}

impl std::fmt::Debug for RegistrationFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationFile")
            .field("dataplane_id", &self.dataplane_id)
            .field("dataplane_name", &self.dataplane_name)
            .field("cluster_url", &self.cluster_url)
            .field("registered_at", &self.registered_at)
            .field("renewed_at", &self.renewed_at)
            .finish_non_exhaustive()
    }
}

/// Why a registration command or file failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("registration file {} already exists; choose another --output-directory or remove it", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error(
        "{} already exists, and renewing never overwrites a registration file; choose another --output-directory (for example a new empty one), or move that file away first",
        .path.display()
    )]
    RenewTargetExists { path: PathBuf },
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
    /// The name is shown in the fleet list and in logs; the control plane would refuse it.
    #[error("--{0}")]
    BadName(String),
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
    /// `what` is `register` or `renew`.
    #[error("cannot connect to {what}: {diagnosis}")]
    Unreachable {
        what: &'static str,
        diagnosis: Diagnosis,
    },
    /// `what` is `registration` or `renewal`.
    #[error("the control plane at {url} refused the {what}: {message}{hint}")]
    Refused {
        what: &'static str,
        url: String,
        message: String,
        hint: String,
    },
    #[error("the control plane at {url} sent an unusable registration answer: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("cannot create a key and certificate request: {0}")]
    Pki(#[from] pki::PkiError),
}

impl RegistrationFile {
    /// Largest registration file accepted: a few certificates and keys fit in a few KiB.
    pub const MAX_BYTES: u64 = 1024 * 1024;

    /// Reads and checks `path`. A file others can read is used, with a warning.
    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let text = Self::read_text(path)?;
        if let Err(e) = fsutil::check_private(path) {
            tracing::warn!(event = "registration.insecure_permissions", path = %path.display(), reason = %e, "The registration file holds a private key but others can read it.");
        }
        Self::parse(&text, path)
    }

    /// Reads `path` as text, refusing files over [`Self::MAX_BYTES`].
    pub fn read_text(path: &Path) -> Result<String, RegistrationError> {
        use std::io::Read;
        let read_err = |source: std::io::Error| {
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
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(Self::MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > Self::MAX_BYTES {
            return Err(RegistrationError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "it is larger than {} bytes, far more than a registration holds",
                    Self::MAX_BYTES
                ),
            });
        }
        Ok(text)
    }

    /// Parses and checks the text of a registration file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegistrationError> {
        let file: Self = serde_yaml_ng::from_str(text).map_err(|e| RegistrationError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        file.check().map_err(|reason| RegistrationError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(file)
    }

    /// Writes the file atomically with mode 0600 and returns the text written, so the agent
    /// can tell its own writes from a replacement.
    pub fn save(&self, path: &Path) -> Result<String, RegistrationError> {
        let write_err = |source| RegistrationError::Write {
            path: path.to_owned(),
            source,
        };
        let text =
            serde_yaml_ng::to_string(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        fsutil::write_atomic(path, text.as_bytes(), fsutil::SECRET_MODE).map_err(write_err)?;
        Ok(text)
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
        match pki::certificate_matches_key(&self.certificate, &self.private_key) {
            Ok(true) => {}
            Ok(false) => {
                return Err(
                    "certificate is not for private_key (were the two copied from different files?)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("private_key: {e}")),
        }
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

    /// What `registration inspect` prints: never the private key. Times are in Go's
    /// `time.Time` format, as Flex Gateway's `registration inspect` prints them;
    /// `ca_cert_sha256` is the bare hex fingerprint, as `POST /registration-tokens` answers it.
    pub fn inspect(&self, now: OffsetDateTime) -> Result<serde_json::Value, pki::PkiError> {
        let cert = self.certificate_info()?;
        let ca = pki::first_certificate(&self.ca_certificate, "ca_certificate")?;
        Ok(serde_json::json!({
            "dataplane_id": self.dataplane_id,
            "dataplane_name": self.dataplane_name,
            "cluster_url": self.cluster_url,
            "issued_at": time_fmt::go_utc(cert.not_before),
            "expiration_date": time_fmt::go_utc(cert.not_after),
            "expired": cert.not_after <= now,
            "serial": cert.serial,
            "ca_cert_sha256": pki::sha256_hex(&ca),
            "registered_at": self.registered_at,
            "renewed_at": self.renewed_at,
            "trusted_license_keys": self.trusted_license_keys,
        }))
    }

    /// When this certificate's lifetime is taken to start, for scheduling its rotation: the
    /// later of its `not_before` and the time this file says it was registered or renewed.
    /// The control plane backdates `not_before` to allow for clock skew, which would otherwise
    /// push the rotation of a short-lived certificate past its expiry.
    pub fn lifetime_start(&self, cert: &CertInfo) -> OffsetDateTime {
        let written = self.renewed_at.as_deref().unwrap_or(&self.registered_at);
        match OffsetDateTime::parse(written, &Rfc3339) {
            Ok(at) if at > cert.not_before && at < cert.not_after => at,
            _ => cert.not_before,
        }
    }
}

/// Which `Registration` call failed, for the words of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Register,
    Renew,
}

/// A gRPC failure of a `Registration` call in operator words: a transport failure is
/// diagnosed like any connection failure; a refusal carries the control plane's reason, then
/// `hint(code)` (which starts with `; `) or a general one.
pub(crate) fn call_failed(
    status: &tonic::Status,
    url: &ClusterUrl,
    call: Call,
    hint: impl Fn(tonic::Code) -> String,
) -> RegistrationError {
    use std::error::Error;
    use tonic::Code;
    let (verb, noun) = match call {
        Call::Register => ("register", "registration"),
        Call::Renew => ("renew", "renewal"),
    };
    if matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && status.source().is_some()
    {
        return RegistrationError::Unreachable {
            what: verb,
            diagnosis: crate::cluster::diagnose(status, url),
        };
    }
    let mut hint = hint(status.code());
    if hint.is_empty() {
        hint = match status.code() {
            Code::Unimplemented => {
                "; is the server the control plane's cluster listener (port 8005), and is the control plane recent enough?".into()
            }
            Code::DeadlineExceeded | Code::Unavailable => {
                "; try again, or check that the control plane is up".into()
            }
            _ => String::new(),
        };
    }
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    RegistrationError::Refused {
        what: noun,
        url: url.to_string(),
        message,
        hint,
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
            renewed_at: None,
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
    fn inspect_prints_exactly_these_fields_in_go_time_and_no_key() {
        let file = sample(Duration::from_secs(3600));
        let cert = file.certificate_info().unwrap();
        let ca = pki::first_certificate(&file.ca_certificate, "ca").unwrap();
        let json = file.inspect(OffsetDateTime::now_utc()).unwrap();
        let expected = serde_json::json!({
            "dataplane_id": "3f0c2a9e-8d4b-4f6a-9c1e-2b7d5a8e0f13",
            "dataplane_name": "edge-1",
            "cluster_url": "https://cp.example.com:8005",
            "issued_at": time_fmt::go_utc(cert.not_before),
            "expiration_date": time_fmt::go_utc(cert.not_after),
            "expired": false,
            "serial": cert.serial,
            "ca_cert_sha256": pki::sha256_hex(&ca),
            "registered_at": file.registered_at,
            "renewed_at": null,
            "trusted_license_keys": ["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
        });
        assert_eq!(json, expected);
        // `2025-09-25 19:27:32 +0000 UTC`, character by character.
        for field in ["issued_at", "expiration_date"] {
            let text = json[field].as_str().unwrap();
            let shape: String = text
                .chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect();
            assert_eq!(shape, "9999-99-99 99:99:99 +9999 UTC", "{field}: {text}");
            assert!(text.ends_with(" +0000 UTC"), "{field}: {text}");
        }
        assert!(!json.to_string().contains("PRIVATE KEY"));

        let later = cert.not_after + time::Duration::seconds(1);
        assert_eq!(file.inspect(later).unwrap()["expired"], true);
        assert_eq!(file.inspect(cert.not_after).unwrap()["expired"], true);
    }

    #[test]
    fn rotation_counts_the_lifetime_from_issuance_not_from_the_backdated_not_before() {
        let mut file = sample(Duration::from_secs(3600));
        let cert = file.certificate_info().unwrap();
        // The CA backdates not_before by five minutes for clock skew.
        assert!(cert.not_after - cert.not_before > time::Duration::seconds(3600));
        let registered = OffsetDateTime::parse(&file.registered_at, &Rfc3339).unwrap();
        assert_eq!(file.lifetime_start(&cert), registered);
        let renewed = registered + time::Duration::seconds(60);
        file.renewed_at = Some(renewed.format(&Rfc3339).unwrap());
        assert_eq!(file.lifetime_start(&cert), renewed);
        for nonsense in ["yesterday", "1999-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
            file.renewed_at = Some(nonsense.into());
            assert_eq!(file.lifetime_start(&cert), cert.not_before, "{nonsense}");
        }
    }

    #[test]
    fn a_certificate_and_key_that_do_not_belong_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut file = sample(Duration::from_secs(3600));
        file.private_key = pki::new_key_and_csr("other").unwrap().0;
        file.save(&path).unwrap();
        let err = RegistrationFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("certificate is not for private_key"), "{err}");
    }

    #[test]
    fn an_oversized_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![b'#'; 2 * 1024 * 1024]).unwrap();
        let err = RegistrationFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("larger than 1048576 bytes"), "{err}");
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
