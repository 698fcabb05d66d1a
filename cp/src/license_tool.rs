//! `licsync-cp license keygen | sign | verify`: what a license issuer runs offline.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use licsync_common::fsutil;
use licsync_common::license::{
    License, MAX_DOCUMENT_BYTES, SigningKey, TrustedKeys, sign_document,
};
use licsync_common::log_text::escape;

use crate::cli::LicenseCommand;

/// Runs one license subcommand; `Ok(false)` means "verify" found the license invalid.
pub fn run(command: LicenseCommand) -> anyhow::Result<bool> {
    match command {
        LicenseCommand::Keygen { output_dir } => keygen(&output_dir).map(|()| true),
        LicenseCommand::Sign { key, payload } => sign(&key, &payload).map(|()| true),
        LicenseCommand::Verify { file, trusted_keys } => verify(&file, &trusted_keys),
    }
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    fsutil::ensure_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("license-signing.key");
    let pub_path = dir.join("license-signing.pub");
    for path in [&key_path, &pub_path] {
        if path.exists() {
            bail!(
                "{} already exists; choose another --output-dir or move the old key away (licenses signed with it stay valid only while its public key is trusted)",
                path.display()
            );
        }
    }
    let (key, pem) = SigningKey::generate()?;
    fsutil::write_new_secret(&key_path, pem.as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    fsutil::write_atomic(
        &pub_path,
        format!("{}\n", key.public_key_base64()).as_bytes(),
        fsutil::PUBLIC_MODE,
    )
    .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!("wrote {} (keep it secret)", key_path.display());
    println!("wrote {}", pub_path.display());
    println!("public key: {}", key.public_key_base64());
    Ok(())
}

fn sign(key_path: &Path, payload_path: &Path) -> anyhow::Result<()> {
    let pem = read_bounded(key_path)?;
    let key =
        SigningKey::from_pem(&pem).with_context(|| format!("cannot use {}", key_path.display()))?;
    let text = read_bounded(payload_path)?;
    let shape = || {
        format!(
            "{} must hold a JSON object whose values are all strings, e.g. {{\"customer\": \"Example\", \"license_key\": \"K\", \"license_creation_date\": \"2026-01-01\", \"license_expiration_date\": \"2027-01-01\"}}",
            payload_path.display()
        )
    };
    // A repeated key would be signed with one of its values silently dropped.
    let value = licsync_common::strict_json::from_str(&text).with_context(shape)?;
    let payload: BTreeMap<String, String> = serde_json::from_value(value).with_context(shape)?;
    let document = sign_document(&payload, &key);
    License::parse(&document).with_context(|| {
        format!(
            "payload in {} is not a valid license",
            payload_path.display()
        )
    })?;
    println!("{document}");
    Ok(())
}

fn verify(file: &Path, trusted: &[String]) -> anyhow::Result<bool> {
    let keys = TrustedKeys::parse(trusted)?;
    let document = read_bounded(file)?;
    match License::parse_verified(document.trim_end(), &keys) {
        Ok(license) => {
            let today = time::OffsetDateTime::now_utc().date();
            let state = if license.in_force_on(today) {
                "in force"
            } else {
                "EXPIRED"
            };
            println!(
                "{}: valid license for {} (key {}), expires {} ({state})",
                file.display(),
                escape(license.customer()),
                escape(license.license_key()),
                license.expiration_date()
            );
            Ok(true)
        }
        Err(reason) => {
            println!("{}: invalid license: {reason}", file.display());
            Ok(false)
        }
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_DOCUMENT_BYTES as u64 {
        bail!(
            "{} is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
            path.display(),
            meta.len()
        );
    }
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_refuses_a_document_that_repeats_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let payload: BTreeMap<String, String> = [
            ("customer", "Small Co"),
            ("license_key", "K"),
            ("license_creation_date", "2026-01-01"),
            ("license_expiration_date", "2027-01-01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let genuine = sign_document(&payload, &key);
        let forged = genuine.replacen(
            "\"payload\":{",
            "\"payload\":{\"customer\":\"Mega Corp\",",
            1,
        );
        let trusted = vec![key.public_key_base64()];
        let file = dir.path().join("license.json");
        fs::write(&file, &genuine).unwrap();
        assert!(verify(&file, &trusted).unwrap());
        fs::write(&file, &forged).unwrap();
        assert!(
            !verify(&file, &trusted).unwrap(),
            "a repeated key is invalid"
        );
    }

    #[test]
    fn sign_refuses_a_payload_that_repeats_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pem) = SigningKey::generate().unwrap();
        let key = dir.path().join("k.pem");
        fs::write(&key, pem).unwrap();
        let payload = dir.path().join("payload.json");
        fs::write(&payload, r#"{"customer":"A","customer":"B"}"#).unwrap();
        let err = format!("{:#}", sign(&key, &payload).unwrap_err());
        assert!(err.contains("duplicate key 'customer'"), "{err}");
    }
}
