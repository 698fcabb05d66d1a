//! `licsync-dp registration create`: exchanges a one-time registration token for a client
//! certificate and writes `DIR/registration.yaml`.
//!
//! Everything that can fail locally is checked before the token is spent: the output file must
//! not exist, the directory must be creatable and the CA must be known. The private key is made
//! here and never leaves this machine; only its CSR is sent. The answer is checked before the
//! file is written: its certificate must name the data plane id it comes with and certify
//! that key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::fsutil;
use licsync_common::pki::{self, CertInfo};
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_common::proto::{RegisterRequest, RegisterResponse};
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
    if let Some(name) = &name {
        licsync_common::log_text::check_name("name", name).map_err(RegistrationError::BadName)?;
    }
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
        .map_err(|e| RegistrationError::Unreachable {
            what: "register",
            diagnosis: cluster::diagnose(&e, &url),
        })?;
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

    let cert =
        check_answer(&answer, &private_key).map_err(|reason| RegistrationError::BadAnswer {
            url: url.to_string(),
            reason,
        })?;
    if !answer.ca_certificate_pem.is_empty()
        && pki::certificates_from_pem(&answer.ca_certificate_pem)
            != pki::certificates_from_pem(&ca_pem)
    {
        tracing::warn!(
            event = "registration.ca_mismatch",
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
        renewed_at: None,
    };
    refuse_existing(&path)?;
    file.save(&path)?;
    tracing::info!(
        event = "registration.created",
        dataplane.id = %file.dataplane_id,
        path = %path.display(),
        cert_expires_at = %licsync_common::time_fmt::rfc3339(cert.not_after),
        "Registered with the control plane."
    );
    Ok(path)
}

/// Checks that `answer` can be kept: its certificate names the data plane id it comes with
/// and certifies `private_key`, the key this registration generated. On refusal, the reason
/// in operator words; nothing has been written yet.
fn check_answer(answer: &RegisterResponse, private_key: &str) -> Result<CertInfo, String> {
    check_issued(
        answer,
        private_key,
        "nothing was written; register again with a new token and report this to the control plane's operator",
    )
}

/// Checks that an answer's certificate names the data plane id it comes with and certifies
/// `private_key`; `what_now` ends every refusal, saying what to do.
pub(super) fn check_issued(
    answer: &RegisterResponse,
    private_key: &str,
    what_now: &str,
) -> Result<CertInfo, String> {
    if answer.dataplane_id.trim().is_empty() {
        return Err(format!("no dataplane_id; {what_now}"));
    }
    let cert = CertInfo::from_pem(&answer.certificate_pem)
        .map_err(|e| format!("certificate_pem: {e}; {what_now}"))?;
    match cert.dataplane_id.as_deref() {
        Some(id) if id == answer.dataplane_id => {}
        Some(id) => {
            return Err(format!(
                "the certificate is for data plane {id}, the answer names data plane {}; {what_now}",
                answer.dataplane_id
            ));
        }
        None => {
            return Err(format!(
                "the certificate carries no data-plane id (URI SAN {}<id>), the answer names data plane {}; {what_now}",
                pki::DATAPLANE_URI_PREFIX,
                answer.dataplane_id
            ));
        }
    }
    match pki::certificate_matches_key(&answer.certificate_pem, private_key) {
        Ok(true) => Ok(cert),
        Ok(false) => Err(format!(
            "the certificate is not for the private key generated for this registration; {what_now}"
        )),
        Err(e) => Err(format!(
            "the certificate cannot be checked against the private key generated for this registration: {e}; {what_now}"
        )),
    }
}

pub(super) fn refuse_existing(path: &Path) -> Result<(), RegistrationError> {
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
    super::call_failed(status, url, super::Call::Register, |code| match code {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::NotFound
        | Code::ResourceExhausted => {
            "; create a new token with POST /registration-tokens on the control plane's Admin API"
                .into()
        }
        _ => String::new(),
    })
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
    async fn a_name_with_control_characters_is_refused_before_the_token_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(dir.path());
        options.name = Some("edge\nINFO forged".into());
        let err = create(options).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "--name must not contain control characters (found U+000A); use letters, digits, spaces and punctuation"
        );
        assert!(!dir.path().join(FILE_NAME).exists());
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

    const DP_ID: &str = "0b6a2d6c-4b0e-4c43-9c56-7c8a3f3f0a11";

    /// A CA, and an answer whose certificate it signed for `csr` under `id`.
    fn answer_for(csr: &[u8], id: &str) -> (pki::CertificateAuthority, RegisterResponse) {
        let (ca, _) =
            pki::CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let issued = ca
            .sign_dataplane(csr, id, Duration::from_secs(3600))
            .unwrap();
        let answer = RegisterResponse {
            dataplane_id: DP_ID.into(),
            certificate_pem: issued.cert_pem,
            ..RegisterResponse::default()
        };
        (ca, answer)
    }

    #[test]
    fn an_answer_for_this_key_and_id_is_kept() {
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let (_, answer) = answer_for(&csr, DP_ID);
        let cert = check_answer(&answer, &key).unwrap();
        assert_eq!(cert.dataplane_id.as_deref(), Some(DP_ID));
    }

    #[test]
    fn a_certificate_for_another_data_plane_is_refused() {
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let (_, answer) = answer_for(&csr, "5d1b9e8f-0000-4000-8000-000000000001");
        let err = check_answer(&answer, &key).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "the certificate is for data plane 5d1b9e8f-0000-4000-8000-000000000001, the answer names data plane {DP_ID}"
            )),
            "{err}"
        );
        assert!(err.contains("nothing was written"), "{err}");
    }

    #[test]
    fn a_certificate_without_a_data_plane_id_is_refused() {
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let (ca, mut answer) = answer_for(&csr, DP_ID);
        answer.certificate_pem = ca
            .issue_server(&["localhost".into()], Duration::from_secs(60))
            .unwrap()
            .cert_pem;
        let err = check_answer(&answer, &key).unwrap_err();
        assert!(
            err.starts_with(
                "the certificate carries no data-plane id (URI SAN urn:licsync:dataplane:<id>)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let (key, _) = pki::new_key_and_csr("edge-1").unwrap();
        let (_, someone_elses_csr) = pki::new_key_and_csr("edge-1").unwrap();
        let (_, answer) = answer_for(&someone_elses_csr, DP_ID);
        let err = check_answer(&answer, &key).unwrap_err();
        assert!(
            err.starts_with(
                "the certificate is not for the private key generated for this registration"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_answer_without_an_id_or_certificate_is_refused() {
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let (_, answer) = answer_for(&csr, DP_ID);
        let no_id = RegisterResponse {
            dataplane_id: " ".into(),
            ..answer.clone()
        };
        assert!(
            check_answer(&no_id, &key)
                .unwrap_err()
                .starts_with("no dataplane_id")
        );
        let no_cert = RegisterResponse {
            certificate_pem: String::new(),
            ..answer
        };
        let err = check_answer(&no_cert, &key).unwrap_err();
        assert!(
            err.starts_with("certificate_pem: no PEM certificate"),
            "{err}"
        );
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
