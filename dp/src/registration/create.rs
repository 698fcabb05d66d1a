//! `licsync-dp registration create`: exchanges a one-time registration token for a client
//! certificate and writes `DIR/registration.yaml`.
//!
//! Everything that can fail locally is checked before the token is spent: the output file must
//! not exist, the directory must be creatable and the CA must be known. The private key is made
//! here and never leaves this machine; only its CSR is sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::fsutil;
use licsync_common::pki::{self, CertInfo};
use licsync_common::proto::RegisterRequest;
use licsync_common::proto::registration_client::RegistrationClient;
use tonic::Code;

use super::{FILE_NAME, RegistrationError, RegistrationFile, ca_pin, now_rfc3339};
use crate::cluster::{self, ClusterUrl, ConnectOptions};

/// Where the cluster CA certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A PEM file the operator copied from the control plane.
    File(PathBuf),
    /// `sha256:HEX`: fetch it from the control plane and check its fingerprint.
    Hash(String),
}

/// The inputs of `registration create`.
#[derive(Clone)]
pub struct CreateOptions {
    pub token: String,
    pub server: String,
    pub ca: CaSource,
    /// Defaults to the host name.
    pub name: Option<String>,
    pub output_directory: PathBuf,
    /// Limit on connecting and on each call.
    pub timeout: Duration,
}

impl std::fmt::Debug for CreateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateOptions")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("name", &self.name)
            .field("output_directory", &self.output_directory)
            .finish_non_exhaustive()
    }
}

/// Registers this data plane and writes the registration file; returns its path.
pub async fn create(options: CreateOptions) -> Result<PathBuf, RegistrationError> {
    let CreateOptions {
        token,
        server,
        ca,
        name,
        output_directory,
        timeout,
    } = options;
    let path = output_directory.join(FILE_NAME);
    refuse_existing(&path)?;
    let url = ClusterUrl::parse(&server)?;
    fsutil::ensure_private_dir(&output_directory).map_err(|source| RegistrationError::Write {
        path: output_directory.clone(),
        source,
    })?;
    let ca_pem = match ca {
        CaSource::File(file) => read_ca_file(&file)?,
        CaSource::Hash(text) => {
            let expected = ca_pin::parse_hash(&text)?;
            ca_pin::fetch_pinned_ca(&url, &expected, timeout).await?
        }
    };

    let hostname = crate::hostname();
    let name = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| hostname.clone());
    let (private_key, csr_der) = pki::new_key_and_csr(&name)?;

    let options = ConnectOptions {
        connect_timeout: timeout,
        ..ConnectOptions::default()
    };
    let channel = cluster::endpoint(&url, &ca_pem, None, options)?
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| RegistrationError::Unreachable(cluster::diagnose(&e, &url)))?;
    let answer = RegistrationClient::new(channel)
        .register(RegisterRequest {
            token,
            csr_der,
            name: name.clone(),
            hostname,
            version: licsync_common::VERSION.to_owned(),
        })
        .await
        .map_err(|status| refused(&status, &url))?
        .into_inner();

    let bad_answer = |reason: String| RegistrationError::BadAnswer {
        url: url.to_string(),
        reason,
    };
    if answer.dataplane_id.trim().is_empty() {
        return Err(bad_answer("no dataplane_id".into()));
    }
    let cert = CertInfo::from_pem(&answer.certificate_pem)
        .map_err(|e| bad_answer(format!("certificate_pem: {e}")))?;
    if cert
        .dataplane_id
        .as_deref()
        .is_some_and(|id| id != answer.dataplane_id)
    {
        return Err(bad_answer(format!(
            "the certificate names data plane {:?}, the answer {}",
            cert.dataplane_id, answer.dataplane_id
        )));
    }
    if !answer.ca_certificate_pem.is_empty()
        && pki::certificates_from_pem(&answer.ca_certificate_pem)
            != pki::certificates_from_pem(&ca_pem)
    {
        tracing::warn!(
            "The control plane answered with a CA certificate other than the one it was reached with; keeping the one that was verified."
        );
    }
    let file = RegistrationFile {
        dataplane_id: answer.dataplane_id,
        dataplane_name: if answer.dataplane_name.is_empty() {
            name
        } else {
            answer.dataplane_name
        },
        // The URL the operator used is known to work from here; the advertised one may not be.
        cluster_url: url.to_string(),
        ca_certificate: ca_pem,
        certificate: answer.certificate_pem,
        private_key,
        trusted_license_keys: answer.trusted_license_keys,
        registered_at: now_rfc3339(),
    };
    refuse_existing(&path)?;
    file.save(&path)?;
    tracing::info!(
        event = "dataplane.registered",
        dataplane.id = %file.dataplane_id,
        path = %path.display(),
        cert_expires_at = %licsync_common::time_fmt::rfc3339(cert.not_after),
        "Registered with the control plane."
    );
    Ok(path)
}

fn refuse_existing(path: &Path) -> Result<(), RegistrationError> {
    if path.exists() {
        return Err(RegistrationError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn read_ca_file(path: &Path) -> Result<String, RegistrationError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistrationError::BadCaFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if pki::certificates_from_pem(&text).is_empty() {
        return Err(RegistrationError::BadCaFile {
            path: path.to_owned(),
            reason: "no PEM certificate found; pass the control plane's CA certificate".into(),
        });
    }
    Ok(text)
}

/// A gRPC failure of `Register` in operator words. The control plane puts the reason (token
/// expired, used up, unknown) in the status message.
fn refused(status: &tonic::Status, url: &ClusterUrl) -> RegistrationError {
    use std::error::Error;
    if matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && status.source().is_some()
    {
        return RegistrationError::Unreachable(cluster::diagnose(status, url));
    }
    let hint = match status.code() {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::ResourceExhausted => {
            "; create a new token with POST /registration-tokens on the control plane's Admin API"
        }
        Code::Unimplemented => "; is --server the control plane's cluster listener (port 8005)?",
        Code::DeadlineExceeded | Code::Unavailable => {
            "; try again, or check that the control plane is up"
        }
        _ => "",
    };
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    RegistrationError::Refused {
        url: url.to_string(),
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> CreateOptions {
        CreateOptions {
            token: "secret".into(),
            // Nothing listens there: the refusal must come before any connection.
            server: "https://127.0.0.1:1".into(),
            ca: CaSource::Hash(format!("sha256:{}", "0".repeat(64))),
            name: None,
            output_directory: dir.to_owned(),
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn refuses_when_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"keep me").unwrap();
        let err = create(options(dir.path())).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "registration file {} already exists; choose another --output-directory or remove it",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn a_bad_ca_file_or_hash_is_refused_before_the_token_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, b"hello").unwrap();
        let mut opts = options(&dir.path().join("out"));
        opts.ca = CaSource::File(ca);
        let err = create(opts).await.unwrap_err().to_string();
        assert!(
            err.contains("ca.crt") && err.contains("no PEM certificate"),
            "{err}"
        );

        let mut opts = options(&dir.path().join("out"));
        opts.ca = CaSource::Hash("abc".into());
        let err = create(opts).await.unwrap_err().to_string();
        assert!(err.contains("--ca-cert-hash 'abc'"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = create(options(dir.path())).await.unwrap_err().to_string();
        assert!(
            err.contains("https://127.0.0.1:1") && err.contains("refused"),
            "{err}"
        );
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
