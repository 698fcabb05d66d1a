//! Signed usage reports: the canonical bytes of a report, its checksum and Ed25519 signature,
//! and the one verification both the control plane (when it seals a report) and an offline
//! verifier (`licsync-cp report verify`, or a vendor's own tool) run.
//!
//! # Canonical form
//! A report is a JSON object. Its *canonical bytes* are that object without its top-level
//! `checksum` and `signature` members, serialised with
//! - the members of every object sorted by the UTF-8 bytes of their names,
//! - no whitespace anywhere,
//! - strings escaped as serde_json escapes them (only `"`, `\` and control characters; other
//!   characters as themselves in UTF-8),
//! - numbers as serde_json prints them (integers in decimal, no exponent, no `+`).
//!
//! For a report that holds integers, strings, booleans, nulls, arrays and objects (every
//! licsync report), Python's `json.dumps(r, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` gives the same bytes.
//!
//! `checksum` is the SHA-256 of the canonical bytes, lowercase hex; `signature` is the Ed25519
//! signature (RFC 8032) over the canonical bytes themselves (not over the checksum text), 128
//! lowercase hex digits. Both cover the same bytes, so a verifier can tell an edited report
//! (the checksum no longer matches) from a report signed by another key or whose checksum was
//! recomputed after an edit (the checksum matches, the signature does not).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::hex;
use crate::license::SigningKey;
use crate::pki::sha256_hex;

/// The member holding the checksum.
pub const CHECKSUM: &str = "checksum";
/// The member holding the signature.
pub const SIGNATURE: &str = "signature";
/// Largest report a verifier reads: a per-data-plane report of 10,000 data planes is ~7 MiB.
pub const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;

/// Why a report did not verify. `Display` says what does not match, in words an operator can
/// pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("malformed report: {0}")]
    Malformed(String),
    #[error(
        "checksum mismatch: the report says {stated} but its content hashes to {computed}; the report was changed after it was signed"
    )]
    ChecksumMismatch { stated: String, computed: String },
    #[error(
        "signature invalid: the checksum matches the content, but the signature was not made over it by this key; the report was signed by another control plane, or edited and its checksum recomputed"
    )]
    SignatureInvalid,
    #[error(
        "report key '{0}' is not an Ed25519 public key: expected standard base64 of 32 bytes, as GET /license/report/key returns"
    )]
    BadKey(String),
}

/// What a successful verification establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The checksum, which now provably matches the content.
    pub checksum: String,
    /// The report as parsed.
    pub report: Map<String, Value>,
}

/// Appends the canonical serialisation of `value` to `out` (see the module documentation).
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (name, member)) in members.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                // Writing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, name);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a string, number, boolean or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The bytes a report's checksum and signature cover: `report` without `checksum` and
/// `signature`, in canonical form.
pub fn canonical_bytes(report: &Map<String, Value>) -> Vec<u8> {
    let mut body = report.clone();
    body.remove(CHECKSUM);
    body.remove(SIGNATURE);
    let mut out = Vec::with_capacity(1024);
    write_canonical(&Value::Object(body), &mut out);
    out
}

/// Adds (or replaces) `checksum` and `signature` so that [`verify`] accepts the report with
/// `key`'s public half.
pub fn seal(mut report: Map<String, Value>, key: &SigningKey) -> Map<String, Value> {
    let bytes = canonical_bytes(&report);
    report.insert(CHECKSUM.into(), Value::String(sha256_hex(&bytes)));
    report.insert(SIGNATURE.into(), Value::String(hex(&key.sign(&bytes))));
    report
}

/// Checks a report as saved (the exact text of `GET /license/report`, or any re-serialisation
/// of it) against the report key `public_key` (standard base64): the checksum must match the
/// canonical bytes and the signature must verify over them.
pub fn verify(text: &[u8], public_key: &str) -> Result<Verified, ReportError> {
    let key = parse_public_key(public_key)?;
    if text.len() > MAX_REPORT_BYTES {
        return Err(ReportError::Malformed(format!(
            "{} bytes is larger than the {MAX_REPORT_BYTES}-byte limit",
            text.len()
        )));
    }
    // Signed data: one reading only, a repeated member is refused rather than resolved.
    let value = crate::strict_json::from_slice(text).map_err(|e| match e {
        crate::strict_json::StrictJsonError::DuplicateKey(_) => {
            ReportError::Malformed(e.to_string())
        }
        crate::strict_json::StrictJsonError::Syntax(e) => {
            ReportError::Malformed(format!("not JSON ({e})"))
        }
    })?;
    let Value::Object(report) = value else {
        return Err(ReportError::Malformed("not a JSON object".into()));
    };
    let stated = hex_member(&report, CHECKSUM, 32)?;
    let signature = hex_member(&report, SIGNATURE, 64)?;
    let bytes = canonical_bytes(&report);
    let computed = sha256_hex(&bytes);
    if computed != stated.to_ascii_lowercase() {
        return Err(ReportError::ChecksumMismatch {
            stated: stated.to_owned(),
            computed,
        });
    }
    let signature = crate::unhex(signature)
        .ok_or_else(|| ReportError::Malformed("signature is not hex".into()))?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&bytes, &signature)
        .map_err(|_| ReportError::SignatureInvalid)?;
    Ok(Verified {
        checksum: computed,
        report,
    })
}

/// Decodes a report public key (standard base64 of the raw 32-byte Ed25519 key).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ReportError> {
    let text = text.trim();
    BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| ReportError::BadKey(text.to_owned()))
}

/// A top-level string member that must be `bytes` bytes as hex.
fn hex_member<'a>(
    report: &'a Map<String, Value>,
    name: &str,
    bytes: usize,
) -> Result<&'a str, ReportError> {
    let value = report
        .get(name)
        .ok_or_else(|| ReportError::Malformed(format!("it has no \"{name}\" member")))?
        .as_str()
        .ok_or_else(|| ReportError::Malformed(format!("\"{name}\" is not a string")))?;
    if value.len() != bytes * 2 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReportError::Malformed(format!(
            "\"{name}\" must be {} hex digits",
            bytes * 2
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test reports are objects"),
        }
    }

    fn report() -> Map<String, Value> {
        object(json!({
            "version": "0.1.0",
            "counters": [{"bucket": "2026-11", "request_count": 42}, {"bucket": "2026-10", "request_count": 7}],
            "total_requests": 49,
            "license": {"license_key": "UNLICENSED"},
            "system_info": {"hostname": "é \"q\"", "cores": 2},
            "entitlement_exceeded": false,
            "nothing": null,
        }))
    }

    #[test]
    fn canonical_bytes_sort_members_at_every_level_and_drop_the_seal() {
        let mut sealed = report();
        sealed.insert(CHECKSUM.into(), json!("x"));
        sealed.insert(SIGNATURE.into(), json!("y"));
        // json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert_eq!(
            String::from_utf8(canonical_bytes(&sealed)).unwrap(),
            r#"{"counters":[{"bucket":"2026-11","request_count":42},{"bucket":"2026-10","request_count":7}],"entitlement_exceeded":false,"license":{"license_key":"UNLICENSED"},"nothing":null,"system_info":{"cores":2,"hostname":"é \"q\""},"total_requests":49,"version":"0.1.0"}"#
        );
    }

    #[test]
    fn a_sealed_report_verifies_in_any_layout() {
        let (key, _) = SigningKey::generate().unwrap();
        let sealed = seal(report(), &key);
        let compact = serde_json::to_vec(&sealed).unwrap();
        let pretty = serde_json::to_vec_pretty(&sealed).unwrap();
        for text in [compact, pretty] {
            let verified = verify(&text, &key.public_key_base64()).unwrap();
            assert_eq!(verified.checksum, sealed[CHECKSUM]);
        }
    }

    #[test]
    fn a_sealed_report_with_a_repeated_member_is_refused() {
        let (key, _) = SigningKey::generate().unwrap();
        let text = serde_json::to_string(&seal(report(), &key)).unwrap();
        // A reader that keeps the first occurrence would see 1; the seal covers 42.
        let doubled = text.replacen(
            "\"request_count\":42",
            "\"request_count\":1,\"request_count\":42",
            1,
        );
        assert_ne!(doubled, text);
        let error = verify(doubled.as_bytes(), &key.public_key_base64()).unwrap_err();
        assert!(
            error.to_string().contains("duplicate key 'request_count'"),
            "{error}"
        );
    }

    #[test]
    fn an_edited_count_fails_the_checksum() {
        let (key, _) = SigningKey::generate().unwrap();
        let text = serde_json::to_string(&seal(report(), &key)).unwrap();
        let edited = text.replace("\"request_count\":42", "\"request_count\":41");
        assert_ne!(edited, text);
        let error = verify(edited.as_bytes(), &key.public_key_base64()).unwrap_err();
        assert!(
            matches!(error, ReportError::ChecksumMismatch { .. }),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("checksum mismatch"),
            "{error}"
        );
    }

    #[test]
    fn a_recomputed_checksum_or_another_key_fails_the_signature() {
        let (key, _) = SigningKey::generate().unwrap();
        let (other, _) = SigningKey::generate().unwrap();
        let mut edited = seal(report(), &key);
        edited.insert("total_requests".into(), json!(1));
        let checksum = sha256_hex(&canonical_bytes(&edited));
        edited.insert(CHECKSUM.into(), json!(checksum));
        let text = serde_json::to_vec(&edited).unwrap();
        assert_eq!(
            verify(&text, &key.public_key_base64()),
            Err(ReportError::SignatureInvalid)
        );
        let genuine = serde_json::to_vec(&seal(report(), &key)).unwrap();
        assert_eq!(
            verify(&genuine, &other.public_key_base64()),
            Err(ReportError::SignatureInvalid)
        );
    }

    #[test]
    fn malformed_reports_and_keys_say_what_is_wrong() {
        let (key, _) = SigningKey::generate().unwrap();
        let public = key.public_key_base64();
        let says = |text: &str| verify(text.as_bytes(), &public).unwrap_err().to_string();
        assert!(says("{nope").contains("not JSON"));
        assert!(says("[1]").contains("not a JSON object"));
        assert!(says("{}").contains("no \"checksum\" member"));
        let no_signature = format!("{{\"checksum\":\"{}\"}}", "0".repeat(64));
        assert!(says(&no_signature).contains("no \"signature\" member"));
        let short = format!(
            "{{\"checksum\":\"{}\",\"signature\":\"ab\"}}",
            "0".repeat(64)
        );
        assert!(says(&short).contains("128 hex digits"));
        assert!(matches!(
            verify(b"{}", "AAAA"),
            Err(ReportError::BadKey(k)) if k == "AAAA"
        ));
    }
}
