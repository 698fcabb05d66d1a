//! Trust on first use, pinned: fetch the cluster CA certificate from the control plane itself
//! and accept it only when its SHA-256 fingerprint is the one the operator was given
//! (`--ca-cert-hash sha256:HEX`, as printed by `POST /registration-tokens`).
//!
//! A probe TLS handshake records the chain the server presents (the control plane sends
//! `[server certificate, CA certificate]`). The last certificate must have the expected
//! fingerprint, and the server certificate must then verify against it as a trust anchor, host
//! name included, before it is trusted: a man in the middle can replay the CA certificate but
//! cannot present a server certificate that CA signed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use licsync_common::pki;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::RegistrationError;
use crate::cluster::{self, ClusterUrl, Diagnosis, FailureKind};

/// Parses `sha256:HEX` (colons between byte pairs and either case accepted) into lowercase hex.
pub fn parse_hash(text: &str) -> Result<String, RegistrationError> {
    let bad = || RegistrationError::BadHash(text.to_owned());
    let hex = text.trim().strip_prefix("sha256:").ok_or_else(bad)?;
    let hex: String = hex
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(hex)
}

/// Connects to `url`, checks the presented CA against `expected_hex` and returns it as PEM.
pub async fn fetch_pinned_ca(
    url: &ClusterUrl,
    expected_hex: &str,
    timeout: Duration,
) -> Result<String, RegistrationError> {
    let server_name = ServerName::try_from(url.host().to_owned()).map_err(|_| {
        RegistrationError::Url(cluster::BadClusterUrl {
            url: url.to_string(),
            reason: "has a host that is neither a DNS name nor an IP address",
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinningVerifier {
        expected: expected_hex.to_owned(),
        provider: provider.clone(),
        outcome: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| probe_failed(url, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let handshake = async {
        let tcp = TcpStream::connect(url.authority()).await?;
        connector.connect(server_name, tcp).await
    };
    let result = tokio::time::timeout(timeout, handshake).await;
    // The verifier's verdict explains a refused handshake better than the handshake error.
    if let Some(outcome) = verifier.take_outcome() {
        let ca = outcome?;
        if let Ok(Ok(mut stream)) = result {
            use tokio::io::AsyncWriteExt;
            let _ = stream.shutdown().await;
        }
        return Ok(pki::pem_encode("CERTIFICATE", &ca));
    }
    match result {
        Err(_) => Err(probe_failed(
            url,
            format!("no TLS handshake within {timeout:?}; check --server"),
        )),
        Ok(Err(e)) => Err(RegistrationError::Probe(cluster::diagnose(&e, url))),
        Ok(Ok(_)) => Err(probe_failed(
            url,
            "the server presented no certificate".into(),
        )),
    }
}

fn probe_failed(url: &ClusterUrl, message: String) -> RegistrationError {
    RegistrationError::Probe(Diagnosis {
        kind: FailureKind::Other,
        message: format!("{url}: {message}"),
    })
}

/// Records the presented chain's verdict; accepts the handshake only when it is good.
#[derive(Debug)]
struct PinningVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
    outcome: Mutex<Option<Result<CertificateDer<'static>, RegistrationError>>>,
}

impl PinningVerifier {
    fn take_outcome(&self) -> Option<Result<CertificateDer<'static>, RegistrationError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<CertificateDer<'static>, RegistrationError> {
        let ca = intermediates.last().unwrap_or(end_entity);
        let actual = pki::sha256_hex(ca);
        if actual != self.expected {
            return Err(RegistrationError::FingerprintMismatch {
                actual,
                expected: self.expected.clone(),
            });
        }
        let untrusted = |why: String| {
            RegistrationError::Probe(Diagnosis {
                kind: FailureKind::ServerUntrusted,
                message: format!(
                    "the CA certificate matches sha256:{actual}, but the server certificate {why}"
                ),
            })
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| {
            untrusted(format!(
                "cannot be checked: the CA certificate is unusable ({e})"
            ))
        })?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| untrusted(format!("cannot be checked ({e})")))?;
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => untrusted(format!(
                    "is not valid for '{host}': add '{host}' to the control plane's cluster.server_names (and restart it), or use a --server host that is listed there",
                    host = server_name.to_str()
                )),
                e => untrusted(format!("does not verify against it: {e}")),
            })?;
        Ok(ca.clone().into_owned())
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = self.check(end_entity, intermediates, server_name, ocsp_response, now);
        let verdict = match &outcome {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        };
        *self
            .outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_read_leniently_but_must_be_sha256() {
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_hash(&format!("sha256:{hex}")).unwrap(),
            "ab".repeat(32)
        );
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(
            parse_hash(&format!("sha256:{colons}")).unwrap(),
            "ab".repeat(32)
        );
        for bad in [
            hex.as_str(),
            "sha256:abc",
            "sha1:abcd",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            let err = parse_hash(bad).unwrap_err().to_string();
            assert!(err.contains("ca_cert_sha256"), "{bad}: {err}");
        }
    }
}
