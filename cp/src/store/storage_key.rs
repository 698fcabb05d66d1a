//! The storage key: the key-encryption key under which a shared database holds the cluster's
//! secrets (CA key, report-signing key, bootstrap token), so that a database dump or a replica
//! alone never yields them, while every control-plane node that reads the same key file can.
//!
//! The file holds 32 random bytes, as standard base64 on one line (what `licsync-cp storage
//! keygen` writes, and what fits a Kubernetes Secret) or raw; it must be private (mode 0600).
//! A secret is sealed with ChaCha20-Poly1305 under a fresh random 96-bit nonce, bound to a
//! label naming what it is (the associated data), so a sealed CA key cannot be passed off as
//! another secret; tampering, a wrong key or a wrong label all fail to open.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use licsync_common::fsutil;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes in a storage key.
pub const KEY_LEN: usize = 32;

/// The longest key file read (base64 with surrounding whitespace fits easily).
const MAX_FILE_LEN: u64 = 1024;

/// The first byte of every sealed value: the layout below, so a later one can be told apart.
const FORMAT: u8 = 1;

/// Why a storage key could not be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum StorageKeyError {
    /// The I/O error is part of the message, not a separate cause, so it is printed once.
    #[error("{path}: {reason}")]
    Io {
        path: String,
        reason: std::io::Error,
    },
    #[error(
        "{path} is not a storage key: expected 32 bytes, raw or as base64 on one line (create one with `licsync-cp storage keygen --output FILE`)"
    )]
    Malformed { path: String },
    #[error("the system random source failed")]
    Random,
    /// The sealed value was altered, or sealed under another key or label.
    #[error(
        "cannot open the stored {label}: it was sealed with another storage key (check storage.encryption_key_file) or altered"
    )]
    Unsealing { label: String },
}

/// A storage key; never printed.
pub struct StorageKey(LessSafeKey);

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey(<redacted>)")
    }
}

impl StorageKey {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key is the only length ChaCha20-Poly1305 needs; it cannot be refused.
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key");
        Self(LessSafeKey::new(key))
    }

    /// Writes a new random key to `path` (base64, mode 0600); refuses to replace a file, since
    /// a replaced key makes every secret sealed under the old one unreadable.
    pub fn generate_file(path: &Path) -> Result<(), StorageKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StorageKeyError::Random)?;
        let text = format!("{}\n", STANDARD.encode(bytes));
        fsutil::write_new_secret(path, text.as_bytes()).map_err(|source| StorageKeyError::Io {
            path: path.display().to_string(),
            reason: if source.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::new(
                    source.kind(),
                    "already exists; a storage key is never overwritten (the secrets sealed under it would be lost): choose another --output",
                )
            } else {
                source
            },
        })
    }

    /// Reads the key at `path`, which must be private to its owner.
    pub fn load(path: &Path) -> Result<Self, StorageKeyError> {
        let io = |reason| StorageKeyError::Io {
            path: path.display().to_string(),
            reason,
        };
        fsutil::check_private(path).map_err(io)?;
        let malformed = || StorageKeyError::Malformed {
            path: path.display().to_string(),
        };
        // A key is 32 bytes raw or 45 as base64 with its newline: anything much longer is not
        // one, and is not read whole.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, MAX_FILE_LEN + 1),
            &mut bytes,
        )
        .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(malformed());
        }
        let raw: [u8; KEY_LEN] = match <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            Ok(raw) => raw,
            Err(_) => {
                let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
                let decoded = STANDARD.decode(text.trim()).map_err(|_| malformed())?;
                <[u8; KEY_LEN]>::try_from(decoded.as_slice()).map_err(|_| malformed())?
            }
        };
        Ok(Self::from_bytes(&raw))
    }

    /// Seals `secret` as `label` (e.g. `"cluster CA key"`).
    pub fn seal(&self, label: &str, secret: &[u8]) -> Result<Vec<u8>, StorageKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StorageKeyError::Random)?;
        let mut body = secret.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut body,
            )
            .map_err(|_| StorageKeyError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens what [`StorageKey::seal`] sealed as `label`.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, StorageKeyError> {
        let refused = || StorageKeyError::Unsealing {
            label: label.to_owned(),
        };
        let (&format, rest) = sealed.split_first().ok_or_else(refused)?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(label.as_bytes()), &mut body)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn new_key(dir: &Path) -> StorageKey {
        let path = dir.join("storage.key");
        StorageKey::generate_file(&path).unwrap();
        StorageKey::load(&path).unwrap()
    }

    #[test]
    fn a_generated_key_is_private_base64_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.key");
        StorageKey::generate_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), KEY_LEN);
        let again = StorageKey::generate_file(&path).unwrap_err().to_string();
        assert!(again.contains("never overwritten"), "{again}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_label_and_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let key = new_key(dir.path());
        let sealed = key
            .seal("cluster CA key", b"-----BEGIN PRIVATE KEY-----")
            .unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"BEGIN"),
            "sealed, not encoded"
        );
        assert_eq!(
            key.open("cluster CA key", &sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // A fresh nonce each time: the same secret never seals to the same bytes.
        assert_ne!(
            key.seal("cluster CA key", b"x").unwrap(),
            key.seal("cluster CA key", b"x").unwrap()
        );

        assert!(key.open("report key", &sealed).is_err(), "another label");
        let other = tempfile::tempdir().unwrap();
        assert!(
            new_key(other.path())
                .open("cluster CA key", &sealed)
                .is_err(),
            "another key"
        );
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert!(
                key.open("cluster CA key", &altered).is_err(),
                "byte {i} altered"
            );
        }
        assert!(
            key.open("cluster CA key", &sealed[..10]).is_err(),
            "truncated"
        );
        assert!(key.open("cluster CA key", &[]).is_err(), "empty");
    }

    #[test]
    fn raw_keys_are_read_and_bad_or_exposed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        fsutil::write_new_secret(&raw, &[7u8; KEY_LEN]).unwrap();
        let key = StorageKey::load(&raw).unwrap();
        let sealed = key.seal("l", b"s").unwrap();
        assert_eq!(
            StorageKey::from_bytes(&[7u8; KEY_LEN])
                .open("l", &sealed)
                .unwrap(),
            b"s"
        );

        let short = dir.path().join("short.key");
        fsutil::write_new_secret(&short, STANDARD.encode([1u8; 16]).as_bytes()).unwrap();
        let err = StorageKey::load(&short).unwrap_err().to_string();
        assert!(err.contains("storage keygen"), "{err}");

        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = StorageKey::load(&raw).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(format!("{key:?}"), "StorageKey(<redacted>)");
    }
}
