//! Password hashing for users: Argon2id (RFC 9106) with the `argon2` crate's defaults
//! (19 MiB, 2 passes, 1 lane: OWASP's recommended minimum), stored as a PHC string that
//! carries its own salt and parameters, so stronger parameters later do not break old hashes.
//!
//! Hashing and verifying take tens of milliseconds of CPU on purpose; callers run them on the
//! blocking pool and bound how many run at once (see [`super::Principals`]).

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// A password could not be hashed (the system random source failed, or the password is
/// longer than Argon2 accepts).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(pub(super) String);

/// What checking a password against a stored hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Matches,
    Wrong,
    /// The stored hash is not a PHC string Argon2 can use: the record is corrupt.
    StoredHashUnusable,
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) to store for `password`.
pub fn hash(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Checks `password` against a stored PHC string, with the parameters recorded in it.
pub fn verify(password: &str, stored: &str) -> Verdict {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verdict::StoredHashUnusable;
    };
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Verdict::Matches,
        Err(argon2::password_hash::Error::PasswordInvalid) => Verdict::Wrong,
        Err(_) => Verdict::StoredHashUnusable,
    }
}

/// A hash of a random password, with today's parameters, made once per process.
static DUMMY: LazyLock<Option<String>> = LazyLock::new(|| {
    let secret = crate::secrets::generate("dummy_").ok()?;
    hash(&secret).ok()
});

/// Spends the time a [`verify`] would, for a user that does not exist: the answer for an
/// unknown username then takes as long as the one for a wrong password, so timing does not
/// tell which usernames exist.
pub fn verify_dummy(password: &str) {
    if let Some(dummy) = DUMMY.as_deref() {
        let _ = verify(password, dummy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_argon2id_phc_strings_that_verify() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("correct horse"));
        assert_eq!(verify("correct horse battery", &a), Verdict::Matches);
        assert_eq!(verify("correct horse battery", &b), Verdict::Matches);
        assert_eq!(verify("correct horse batterY", &a), Verdict::Wrong);
        assert_eq!(verify("", &a), Verdict::Wrong);
    }

    #[test]
    fn a_corrupt_stored_hash_is_reported_not_matched() {
        assert_eq!(verify("x", "not a phc string"), Verdict::StoredHashUnusable);
        assert_eq!(verify("x", ""), Verdict::StoredHashUnusable);
        assert_eq!(
            verify("x", "$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"),
            Verdict::StoredHashUnusable
        );
    }

    #[test]
    fn the_dummy_hash_exists_and_matches_nothing_guessable() {
        let dummy = DUMMY.as_deref().expect("a dummy hash is made");
        assert!(dummy.starts_with("$argon2id$"));
        assert_eq!(verify("", dummy), Verdict::Wrong);
        verify_dummy("anything");
    }
}
