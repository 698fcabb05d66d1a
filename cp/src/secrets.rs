//! Generating, hashing and comparing the control plane's bearer secrets (Admin API tokens and
//! registration tokens). Only SHA-256 digests are stored: the secrets have 256 bits of entropy,
//! so a slow password hash would add nothing but latency on every request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// The system random source failed; nothing was created.
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomFailed;

/// A new secret: `prefix` followed by 32 random bytes, URL-safe base64. The prefix lets secret
/// scanners and operators tell what a leaked string is.
pub fn generate(prefix: &str) -> Result<String, RandomFailed> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomFailed)?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    licsync_common::pki::sha256_hex(secret.as_bytes())
}

/// Compares two digests without leaking where they differ.
pub fn digests_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_hash_stably() {
        let a = generate("lsa_").unwrap();
        let b = generate("lsa_").unwrap();
        assert!(a.starts_with("lsa_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert!(digests_equal(&hash(&a), &hash(&a)));
        assert!(!digests_equal(&hash(&a), &hash(&b)));
    }
}
