//! The cluster's public-key infrastructure: a small CA that issues the control plane's server
//! certificate and every data plane's client certificate.
//!
//! A data plane's identity lives in its certificate as the URI SAN
//! `urn:licsync:dataplane:<uuid>` ([`dataplane_uri`]), so the control plane never trusts an id
//! sent in a message. CSRs are used only for their public key and proof of possession: every
//! other field of an issued certificate is chosen here, so a data plane cannot ask for a CA
//! certificate or someone else's name.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::hex;

/// Prefix of the URI SAN that carries a data plane's id.
pub const DATAPLANE_URI_PREFIX: &str = "urn:licsync:dataplane:";

/// How far back `not_before` is set, so a peer whose clock is slightly behind accepts a fresh
/// certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not generate or sign a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate signing request is invalid: {0}")]
    BadCsr(String),
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    #[error("no PEM private key found in {0}")]
    NoPrivateKey(String),
    #[error("private key cannot be parsed: {0}")]
    BadPrivateKey(String),
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate lifetime {0:?} is too long")]
    TtlTooLong(Duration),
}

/// A certificate this CA issued, with its private key when it was generated here.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// PKCS#8 PEM; `None` when the key stayed with the requester (CSR signing).
    pub key_pem: Option<String>,
    pub not_after: OffsetDateTime,
}

/// The cluster CA: ECDSA P-256, signs server and data-plane certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA valid for `ttl`.
    pub fn generate(common_name: &str, ttl: Duration) -> Result<(Self, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = false;
        set_validity(&mut params, ttl)?;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Self::from_pem(&cert.pem(), &key_pem)?;
        Ok((ca, key_pem))
    }

    /// Loads a CA from its certificate and PKCS#8 key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = first_certificate(cert_pem, "the CA certificate")?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate's DER, hex: what `--ca-cert-hash sha256:HEX` pins.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    /// Issues the cluster listener's server certificate for DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], ttl: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = name("licsync control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let not_after = set_validity(&mut params, ttl)?;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            not_after,
        })
    }

    /// Signs a data plane's CSR (see [`check_csr`]). Only the CSR's public key is used; the
    /// subject and the URI SAN come from `dataplane_id`.
    pub fn sign_dataplane(
        &self,
        csr_der: &[u8],
        dataplane_id: &str,
        ttl: Duration,
    ) -> Result<Issued, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(dataplane_id);
        params.subject_alt_names = vec![SanType::URI(
            dataplane_uri(dataplane_id)
                .try_into()
                .map_err(|e: rcgen::Error| PkiError::BadCsr(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let not_after = set_validity(&mut params, ttl)?;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: None,
            not_after,
        })
    }
}

/// Parses a CSR and verifies its self-signature (proof that the requester holds the key),
/// without issuing anything: cheap enough to run before a caller is authenticated.
pub fn check_csr(csr_der: &[u8]) -> Result<(), PkiError> {
    CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
        .map(|_| ())
        .map_err(|e| PkiError::BadCsr(e.to_string()))
}

/// A fresh P-256 key and a CSR for it, made by a data plane: the key never leaves it.
pub fn new_key_and_csr(common_name: &str) -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The URI SAN for a data plane id.
pub fn dataplane_uri(id: &str) -> String {
    format!("{DATAPLANE_URI_PREFIX}{id}")
}

/// What the applications need to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Lowercase hex of the serial number.
    pub serial: String,
    /// From the `urn:licsync:dataplane:` URI SAN, when present.
    pub dataplane_id: Option<String>,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let validity = cert.validity();
        let dataplane_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => {
                        uri.strip_prefix(DATAPLANE_URI_PREFIX).map(str::to_owned)
                    }
                    _ => None,
                })
            });
        Ok(Self {
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            serial: hex(cert.raw_serial()),
            dataplane_id,
            fingerprint: sha256_hex(der),
        })
    }

    /// Inspects the first certificate of a PEM bundle.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        Self::from_der(&first_certificate(pem, "the PEM text")?)
    }
}

/// Whether the first certificate of `cert_pem` is for the key pair in `key_pem` (PKCS#8 PEM):
/// its SubjectPublicKeyInfo carries that key pair's public key. A data plane checks this before
/// it keeps a certificate the control plane issued for its CSR.
pub fn certificate_matches_key(cert_pem: &str, key_pem: &str) -> Result<bool, PkiError> {
    let der = first_certificate(cert_pem, "the certificate PEM")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadPrivateKey(e.to_string()))?;
    let certified = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    Ok(certified.as_ref() == key.public_key_raw())
}

/// Every certificate in a PEM bundle, in order.
pub fn certificates_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// The first certificate of a PEM bundle; `what` names the source in the error.
pub fn first_certificate(pem: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
    certificates_from_pem(pem)
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::NoCertificate(what.to_owned()))
}

/// The first private key of a PEM text; `what` names the source in the error.
pub fn private_key_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| PkiError::NoPrivateKey(what.to_owned()))
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// PEM-encodes DER with the given label, 64 columns per line.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "licsync");
    dn
}

fn set_validity(params: &mut CertificateParams, ttl: Duration) -> Result<OffsetDateTime, PkiError> {
    let now = OffsetDateTime::now_utc();
    let ttl_time = time::Duration::try_from(ttl).map_err(|_| PkiError::TtlTooLong(ttl))?;
    let not_after = now
        .checked_add(ttl_time)
        .ok_or(PkiError::TtlTooLong(ttl))?
        .replace_nanosecond(0)
        .unwrap_or(now);
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    Ok(not_after)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source; a zero serial is still unique
    // enough for the chain check and the failure will surface in key generation anyway.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataplane_certificate_carries_id_and_ignores_csr_subject() {
        let (ca, _) = CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let (_key, csr) = new_key_and_csr("i-want-to-be-admin").unwrap();
        let issued = ca
            .sign_dataplane(
                &csr,
                "0b6a2d6c-4b0e-4c43-9c56-7c8a3f3f0a11",
                Duration::from_secs(60),
            )
            .unwrap();
        let info = CertInfo::from_pem(&issued.cert_pem).unwrap();
        assert_eq!(
            info.dataplane_id.as_deref(),
            Some("0b6a2d6c-4b0e-4c43-9c56-7c8a3f3f0a11")
        );
        assert_eq!(info.not_after, issued.not_after);
        assert!(issued.key_pem.is_none());
    }

    #[test]
    fn ca_survives_a_pem_round_trip() {
        let (ca, key_pem) =
            CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        let server = loaded
            .issue_server(
                &["localhost".into(), "127.0.0.1".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(server.key_pem.is_some());
        assert!(
            CertInfo::from_pem(&server.cert_pem)
                .unwrap()
                .dataplane_id
                .is_none()
        );
    }

    #[test]
    fn a_certificate_matches_only_the_key_of_its_csr() {
        let (ca, ca_key) =
            CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        let (key, csr) = new_key_and_csr("edge-1").unwrap();
        let (other_key, _) = new_key_and_csr("edge-2").unwrap();
        let issued = ca
            .sign_dataplane(
                &csr,
                "0b6a2d6c-4b0e-4c43-9c56-7c8a3f3f0a11",
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(certificate_matches_key(&issued.cert_pem, &key).unwrap());
        assert!(!certificate_matches_key(&issued.cert_pem, &other_key).unwrap());
        assert!(!certificate_matches_key(&issued.cert_pem, &ca_key).unwrap());
        assert!(certificate_matches_key(ca.cert_pem(), &ca_key).unwrap());
        assert!(matches!(
            certificate_matches_key("no certificate here", &key),
            Err(PkiError::NoCertificate(_))
        ));
        assert!(matches!(
            certificate_matches_key(&issued.cert_pem, "no key here"),
            Err(PkiError::BadPrivateKey(_))
        ));
    }

    #[test]
    fn garbage_csr_is_refused() {
        let (ca, _) = CertificateAuthority::generate("test CA", Duration::from_secs(3600)).unwrap();
        assert!(matches!(
            ca.sign_dataplane(b"not a csr", "x", Duration::from_secs(60)),
            Err(PkiError::BadCsr(_))
        ));
    }
}
