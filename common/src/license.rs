//! Kong's license document: parsing, field validation, canonical bytes and Ed25519 signatures.
//!
//! The document is what a gateway reads from `KONG_LICENSE_PATH`:
//! `{"license":{"payload":{...},"signature":"<128 hex>","version":"1"}}`. The signature covers the
//! payload's *canonical bytes*: the payload as a `BTreeMap<String, String>` serialised compactly by
//! serde_json, which is byte-for-byte Python's
//! `json.dumps(p, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, so vendors can sign
//! with whatever tooling they have.
//!
//! Validation is split in two so both sides can report precisely: [`License::parse`] checks the
//! structure and fields, [`License::verify`] checks the signature against a [`TrustedKeys`] set
//! (several keys may be trusted during a key rotation).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::Value;
use time::Date;
use time::macros::format_description;

use crate::hex;

/// Largest license document accepted anywhere; real ones are well under 4 KiB.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Payload keys every license must carry.
pub const REQUIRED_FIELDS: [&str; 4] = [
    "customer",
    "license_key",
    "license_creation_date",
    "license_expiration_date",
];

/// Why a license document was refused. `Display` gives the reason Kong puts after
/// `Unable to validate license: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("could not decode license json")]
    Json,
    /// A key appears twice in one object: two parsers could read two different licenses from
    /// the one document, and only one of them is what was signed.
    #[error("duplicate key '{}'", crate::log_text::escape(.0))]
    DuplicateKey(String),
    #[error("license document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("missing field '{0}'")]
    MissingField(String),
    #[error("field '{0}' must be a string")]
    NotAString(String),
    #[error("field '{field}' must be a date like 2026-12-31, got '{value}'")]
    BadDate { field: &'static str, value: String },
    #[error("license_creation_date {creation} is after license_expiration_date {expiration}")]
    DatesOutOfOrder { creation: Date, expiration: Date },
    #[error("field 'dataplanes' must be a non-negative decimal integer, got '{0}'")]
    BadDataplanes(String),
    #[error("field 'signature' must be 128 hex digits")]
    BadSignatureEncoding,
    #[error("unsupported license version '{0}' (expected \"1\")")]
    UnsupportedVersion(String),
    /// The signature is well-formed but no trusted key verifies it: tampered, or signed with a
    /// key this side does not trust. Kong's words first, then how many keys were tried.
    #[error(
        "validation failed: the signature does not verify with {}",
        match .trusted { 1 => "the 1 trusted key".to_owned(), n => format!("any of the {n} trusted keys") }
    )]
    ValidationFailed { trusted: usize },
    #[error("validation failed: no trusted license signing key is configured")]
    NoTrustedKeys,
}

/// A structurally valid license document. Constructing one does not check the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    payload: BTreeMap<String, String>,
    signature: [u8; 64],
    creation: Date,
    expiration: Date,
    dataplanes: Option<u64>,
}

impl License {
    /// Parses and validates a license document (everything but the signature).
    pub fn parse(document: &str) -> Result<Self, LicenseError> {
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(LicenseError::TooLarge);
        }
        let root = crate::strict_json::from_str(document).map_err(|error| match error {
            crate::strict_json::StrictJsonError::DuplicateKey(key) => {
                LicenseError::DuplicateKey(key)
            }
            crate::strict_json::StrictJsonError::Syntax(_) => LicenseError::Json,
        })?;
        let license = root
            .get("license")
            .and_then(Value::as_object)
            .ok_or(LicenseError::Json)?;
        let version = string_field(license, "version")?;
        if version != "1" {
            return Err(LicenseError::UnsupportedVersion(version.to_owned()));
        }
        let signature = decode_signature(string_field(license, "signature")?)?;
        let raw_payload = license
            .get("payload")
            .ok_or_else(|| LicenseError::MissingField("payload".into()))?
            .as_object()
            .ok_or(LicenseError::Json)?;
        let mut payload = BTreeMap::new();
        for (key, value) in raw_payload {
            let value = value
                .as_str()
                .ok_or_else(|| LicenseError::NotAString(key.clone()))?;
            payload.insert(key.clone(), value.to_owned());
        }
        for field in REQUIRED_FIELDS {
            if !payload.contains_key(field) {
                return Err(LicenseError::MissingField(field.into()));
            }
        }
        let creation = parse_date(&payload, "license_creation_date")?;
        let expiration = parse_date(&payload, "license_expiration_date")?;
        if creation > expiration {
            return Err(LicenseError::DatesOutOfOrder {
                creation,
                expiration,
            });
        }
        let dataplanes = match payload.get("dataplanes") {
            None => None,
            Some(raw) => {
                Some(parse_decimal(raw).ok_or_else(|| LicenseError::BadDataplanes(raw.clone()))?)
            }
        };
        Ok(Self {
            payload,
            signature,
            creation,
            expiration,
            dataplanes,
        })
    }

    /// Parses the document and checks its signature: what the control plane requires before
    /// storing a license and the data plane before applying one.
    pub fn parse_verified(document: &str, keys: &TrustedKeys) -> Result<Self, LicenseError> {
        let license = Self::parse(document)?;
        license.verify(keys)?;
        Ok(license)
    }

    /// Succeeds when any trusted key verifies the signature over the canonical payload.
    pub fn verify(&self, keys: &TrustedKeys) -> Result<(), LicenseError> {
        if keys.is_empty() {
            return Err(LicenseError::NoTrustedKeys);
        }
        let message = canonical_payload(&self.payload);
        if keys.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&message, &self.signature)
                .is_ok()
        }) {
            Ok(())
        } else {
            Err(LicenseError::ValidationFailed {
                trusted: keys.keys.len(),
            })
        }
    }

    pub fn payload(&self) -> &BTreeMap<String, String> {
        &self.payload
    }

    pub fn customer(&self) -> &str {
        &self.payload["customer"]
    }

    pub fn license_key(&self) -> &str {
        &self.payload["license_key"]
    }

    pub fn creation_date(&self) -> Date {
        self.creation
    }

    pub fn expiration_date(&self) -> Date {
        self.expiration
    }

    /// The number of data planes the license entitles, when it says.
    pub fn dataplanes(&self) -> Option<u64> {
        self.dataplanes
    }

    /// The signature as lowercase hex: the identity the control plane's uniqueness rule uses.
    pub fn signature_hex(&self) -> String {
        hex(&self.signature)
    }

    /// A license is in force through the whole of its expiration date, UTC.
    pub fn in_force_on(&self, day: Date) -> bool {
        day <= self.expiration
    }
}

/// The bytes a license signature covers.
pub fn canonical_payload(payload: &BTreeMap<String, String>) -> Vec<u8> {
    // Serialising a map of strings cannot fail.
    serde_json::to_vec(payload).unwrap_or_default()
}

/// Signs `payload` and returns the complete license document (compact JSON).
pub fn sign_document(payload: &BTreeMap<String, String>, key: &SigningKey) -> String {
    let signature = key.pair.sign(&canonical_payload(payload));
    let document = serde_json::json!({
        "license": {
            "payload": payload,
            "signature": hex(signature.as_ref()),
            "version": "1",
        }
    });
    document.to_string()
}

/// The set of Ed25519 public keys whose signatures make a license valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<[u8; 32]>,
}

/// A trusted key that is not standard base64 of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "trusted license key '{0}' is not an Ed25519 public key: expected standard base64 of 32 bytes, as in license-signing.pub"
)]
pub struct BadTrustedKey(pub String);

impl TrustedKeys {
    /// Parses base64 keys as written in configuration and registration files.
    pub fn parse<S: AsRef<str>>(encoded: &[S]) -> Result<Self, BadTrustedKey> {
        let mut keys = Vec::with_capacity(encoded.len());
        for text in encoded {
            let text = text.as_ref().trim();
            let bytes = BASE64
                .decode(text)
                .map_err(|_| BadTrustedKey(text.to_owned()))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| BadTrustedKey(text.to_owned()))?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys in their configuration form, for handing to data planes at registration.
    pub fn to_base64(&self) -> Vec<String> {
        self.keys.iter().map(|k| BASE64.encode(k)).collect()
    }
}

/// An Ed25519 license-signing key, kept by whoever issues licenses (never by a data plane).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

/// A signing-key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(
        "no PKCS#8 \"PRIVATE KEY\" block found; expected a file written by `licsync-cp license keygen`"
    )]
    NoPem,
    #[error("the PKCS#8 key is not an Ed25519 key: {0}")]
    NotEd25519(String),
    #[error("could not generate a key: the system random source failed")]
    Random,
}

impl SigningKey {
    /// Generates a key and returns it with its PKCS#8 PEM encoding.
    pub fn generate() -> Result<(Self, String), SigningKeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Random)?;
        let pem = crate::pki::pem_encode("PRIVATE KEY", pkcs8.as_ref());
        let key = Self::from_pkcs8_der(pkcs8.as_ref())?;
        Ok((key, pem))
    }

    /// Loads a PKCS#8 PEM key (ring's or OpenSSL's `genpkey -algorithm ed25519`).
    pub fn from_pem(pem: &str) -> Result<Self, SigningKeyError> {
        use rustls_pki_types::PrivatePkcs8KeyDer;
        use rustls_pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| SigningKeyError::NoPem)?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigningKeyError> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| Self { pair })
            .map_err(|e| SigningKeyError::NotEd25519(e.to_string()))
    }

    /// The Ed25519 signature of `message` (used for licenses and for signed usage reports).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// The public key as standard base64, the form `licenses.trusted_keys` takes.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.pair.public_key().as_ref())
    }
}

fn string_field<'a>(
    object: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, LicenseError> {
    object
        .get(field)
        .ok_or_else(|| LicenseError::MissingField(field.into()))?
        .as_str()
        .ok_or_else(|| LicenseError::NotAString(field.into()))
}

fn parse_date(
    payload: &BTreeMap<String, String>,
    field: &'static str,
) -> Result<Date, LicenseError> {
    let value = &payload[field];
    Date::parse(value, format_description!("[year]-[month]-[day]")).map_err(|_| {
        LicenseError::BadDate {
            field,
            value: value.clone(),
        }
    })
}

fn parse_decimal(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

fn decode_signature(text: &str) -> Result<[u8; 64], LicenseError> {
    crate::unhex(text)
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        .ok_or(LicenseError::BadSignatureEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> BTreeMap<String, String> {
        [
            ("admin_seats", "1"),
            ("customer", "Example Company, Inc"),
            ("dataplanes", "3"),
            ("license_creation_date", "2017-07-20"),
            ("license_expiration_date", "2017-07-20"),
            ("license_key", "00141000017ODj3AAG_a1V41000004wT0OEAU"),
            ("product_subscription", "Konnect Enterprise"),
            ("support_plan", "None"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn keypair() -> (SigningKey, TrustedKeys) {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        (key, trusted)
    }

    #[test]
    fn canonical_bytes_match_python_sorted_compact_json() {
        let mut p = BTreeMap::new();
        p.insert("b".to_owned(), "é \"q\" \n".to_owned());
        p.insert("a".to_owned(), "x/y".to_owned());
        // json.dumps({"b": "é \"q\" \n", "a": "x/y"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert_eq!(
            String::from_utf8(canonical_payload(&p)).unwrap(),
            r#"{"a":"x/y","b":"é \"q\" \n"}"#
        );
    }

    #[test]
    fn signed_document_verifies_and_exposes_fields() {
        let (key, trusted) = keypair();
        let doc = sign_document(&payload(), &key);
        let license = License::parse_verified(&doc, &trusted).unwrap();
        assert_eq!(license.customer(), "Example Company, Inc");
        assert_eq!(license.dataplanes(), Some(3));
        assert!(license.in_force_on(license.expiration_date()));
        assert!(!license.in_force_on(license.expiration_date().next_day().unwrap()));
    }

    #[test]
    fn uppercase_signature_is_accepted() {
        let (key, trusted) = keypair();
        let doc = sign_document(&payload(), &key);
        let sig = License::parse(&doc).unwrap().signature_hex();
        let upper = doc.replace(&sig, &sig.to_uppercase());
        assert_ne!(upper, doc);
        License::parse_verified(&upper, &trusted).unwrap();
    }

    #[test]
    fn any_trusted_key_verifies_during_rotation() {
        let (old, _) = SigningKey::generate().unwrap();
        let (new, _) = SigningKey::generate().unwrap();
        let both = TrustedKeys::parse(&[old.public_key_base64(), new.public_key_base64()]).unwrap();
        License::parse_verified(&sign_document(&payload(), &old), &both).unwrap();
        License::parse_verified(&sign_document(&payload(), &new), &both).unwrap();
    }

    #[test]
    fn tampered_or_untrusted_documents_fail_validation() {
        let (key, trusted) = keypair();
        let doc = sign_document(&payload(), &key);
        let tampered = doc.replace("Example Company", "Evil Company");
        assert_eq!(
            License::parse_verified(&tampered, &trusted),
            Err(LicenseError::ValidationFailed { trusted: 1 })
        );
        let (_, other) = keypair();
        assert_eq!(
            License::parse_verified(&doc, &other)
                .unwrap_err()
                .to_string(),
            "validation failed: the signature does not verify with the 1 trusted key"
        );
        let (a, _) = SigningKey::generate().unwrap();
        let (b, _) = SigningKey::generate().unwrap();
        let two = TrustedKeys::parse(&[a.public_key_base64(), b.public_key_base64()]).unwrap();
        assert_eq!(
            License::parse_verified(&doc, &two).unwrap_err().to_string(),
            "validation failed: the signature does not verify with any of the 2 trusted keys"
        );
        assert_eq!(
            License::parse_verified(&doc, &TrustedKeys::default()),
            Err(LicenseError::NoTrustedKeys)
        );
    }

    #[test]
    fn every_malformed_field_has_a_precise_reason() {
        let (key, _) = keypair();
        let with = |field: &str, value: Option<&str>| {
            let mut p = payload();
            match value {
                Some(v) => p.insert(field.to_owned(), v.to_owned()),
                None => p.remove(field),
            };
            License::parse(&sign_document(&p, &key))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(with("customer", None), "missing field 'customer'");
        assert_eq!(
            with("license_expiration_date", Some("2017-02-30")),
            "field 'license_expiration_date' must be a date like 2026-12-31, got '2017-02-30'"
        );
        assert_eq!(
            with("license_creation_date", Some("2018-01-01")),
            "license_creation_date 2018-01-01 is after license_expiration_date 2017-07-20"
        );
        assert_eq!(
            with("dataplanes", Some("-1")),
            "field 'dataplanes' must be a non-negative decimal integer, got '-1'"
        );
        assert_eq!(License::parse("{nope").unwrap_err(), LicenseError::Json);
        assert_eq!(License::parse("{}").unwrap_err(), LicenseError::Json);
        let doc = sign_document(&payload(), &key);
        let sig = License::parse(&doc).unwrap().signature_hex();
        assert_eq!(
            License::parse(&doc.replace(&sig, "abc")).unwrap_err(),
            LicenseError::BadSignatureEncoding
        );
        assert_eq!(
            License::parse(&doc.replace("\"version\":\"1\"", "\"version\":\"2\"")).unwrap_err(),
            LicenseError::UnsupportedVersion("2".into())
        );
        let numeric = doc.replace("\"admin_seats\":\"1\"", "\"admin_seats\":1");
        assert_eq!(
            License::parse(&numeric).unwrap_err().to_string(),
            "field 'admin_seats' must be a string"
        );
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused_before_the_signature_is_checked() {
        let (key, trusted) = keypair();
        let doc = sign_document(&payload(), &key);
        // The forgery from the probe: forged fields first, the genuinely signed ones after, so
        // a last-wins parser verifies the signature and a first-wins one reads the forgery.
        let forged = doc.replacen(
            "\"payload\":{",
            "\"payload\":{\"customer\":\"Mega Corp\",\"dataplanes\":\"100000\",\"license_expiration_date\":\"2999-12-31\",",
            1,
        );
        assert_eq!(
            License::parse_verified(&forged, &trusted),
            Err(LicenseError::DuplicateKey("customer".into()))
        );
        assert_eq!(
            LicenseError::DuplicateKey("customer".into()).to_string(),
            "duplicate key 'customer'"
        );
        let twice_signed = doc.replacen(
            "\"version\":\"1\"",
            "\"version\":\"1\",\"version\":\"1\"",
            1,
        );
        assert_eq!(
            License::parse(&twice_signed),
            Err(LicenseError::DuplicateKey("version".into()))
        );
        let wrapped = format!("{{\"license\":{{}},{}", &doc[1..]);
        assert_eq!(
            License::parse(&wrapped),
            Err(LicenseError::DuplicateKey("license".into()))
        );
    }

    #[test]
    fn signing_key_round_trips_through_pem() {
        let (key, pem) = SigningKey::generate().unwrap();
        let loaded = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.public_key_base64(), loaded.public_key_base64());
        assert!(matches!(
            SigningKey::from_pem("junk"),
            Err(SigningKeyError::NoPem)
        ));
    }

    #[test]
    fn bad_trusted_keys_are_named() {
        let err = TrustedKeys::parse(&["AAAA"]).unwrap_err();
        assert!(err.to_string().contains("'AAAA'"));
    }
}
