//! What a valid username, password, connected-app name and client id are, and how client ids
//! and secrets are made. One place, so the Admin API (which creates principals) and the
//! Registration service (which bounds what a caller may send) agree.

use std::collections::BTreeSet;

use licsync_common::log_text;

use crate::model::Scope;
use crate::secrets;

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password, in bytes (Argon2's input is bounded, and so is every input here).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest connected-app name, in characters.
pub const MAX_APP_NAME_CHARS: usize = 128;
/// A client id is this many lowercase hex digits.
pub const CLIENT_ID_LEN: usize = 32;
/// Longest client secret accepted at login, in bytes (the CP's are 47).
pub const MAX_CLIENT_SECRET_BYTES: usize = 256;
/// Prefix of client secrets, so a leaked one is recognisable.
pub const CLIENT_SECRET_PREFIX: &str = "lsc_";

/// Why a username is refused, or `Ok`: 1 to 64 ASCII letters, digits, `.`, `_`, `-`, `@`,
/// starting with a letter or digit (safe in URLs, shells and logs).
pub fn check_username(name: &str) -> Result<(), String> {
    const RULE: &str =
        "use 1 to 64 ASCII letters, digits, '.', '_', '-' or '@', starting with a letter or digit";
    let len = name.chars().count();
    if len == 0 || len > MAX_USERNAME_CHARS {
        return Err(format!(
            "must be 1 to {MAX_USERNAME_CHARS} characters; {RULE}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!("character {bad:?} is not allowed; {RULE}"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("must start with a letter or digit; {RULE}"));
    }
    Ok(())
}

/// Why a new password is refused, or `Ok`: at least 12 characters, at most 1024 bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters long (got {chars}); a passphrase of several words is easiest to remember"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("must be at most {MAX_PASSWORD_BYTES} bytes long"));
    }
    Ok(())
}

/// Most entries a connected app's `scopes` list may have (there are three scopes; repeats
/// are tolerated).
pub const MAX_SCOPE_ENTRIES: usize = 16;

/// A connected app's name, trimmed, or why it is refused: not blank, at most 128 characters,
/// no control characters (it is listed and logged).
pub fn check_app_name(name: &str) -> Result<String, String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_APP_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_APP_NAME_CHARS} characters long"
        ));
    }
    log_text::check_name("name", name)?;
    Ok(name.trim().to_owned())
}

/// Every known scope, for messages: `known scopes: read:servers, ...`.
pub fn known_scopes() -> String {
    let all: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    format!("known scopes: {}", all.join(", "))
}

/// The scopes `names` grant, sorted and without repeats, or why they are refused: at least
/// one, at most [`MAX_SCOPE_ENTRIES`] entries, each a known scope.
pub fn check_scopes<'a>(
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<Scope>, String> {
    if names.len() == 0 {
        return Err(format!("must list at least one scope; {}", known_scopes()));
    }
    if names.len() > MAX_SCOPE_ENTRIES {
        return Err(format!("must list at most {MAX_SCOPE_ENTRIES} entries"));
    }
    let mut scopes = BTreeSet::new();
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            format!("unknown scope '{shown}'; {}", known_scopes())
        })?;
        scopes.insert(scope);
    }
    Ok(scopes.into_iter().collect())
}

/// Whether `id` has the shape of a client id this control plane hands out.
pub fn is_client_id(id: &str) -> bool {
    id.len() == CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new client id: 128 random bits as lowercase hex. Not a secret.
pub fn new_client_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new client secret (256 random bits, prefixed); shown once, stored as its SHA-256.
pub fn new_client_secret() -> Result<String, secrets::RandomFailed> {
    secrets::generate(CLIENT_SECRET_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_bounded_and_plain() {
        for good in [
            "alice",
            "a",
            "ops.team-1",
            "alice@example.com",
            "A_1",
            &"x".repeat(64),
        ] {
            assert_eq!(check_username(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "1 to 64"),
            (&"x".repeat(65) as &str, "1 to 64"),
            ("al ice", "' '"),
            ("alicé", "'é'"),
            ("../etc", "'/'"),
            ("-alice", "start with a letter or digit"),
            (".alice", "start with a letter or digit"),
        ] {
            let err = check_username(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_need_twelve_characters_and_are_bounded() {
        assert!(check_password("twelve chars").is_ok());
        assert!(
            check_password("ünïcödé-pass").is_ok(),
            "characters, not bytes"
        );
        let err = check_password("short").unwrap_err();
        assert!(
            err.contains("at least 12 characters") && err.contains("got 5"),
            "{err}"
        );
        assert!(
            check_password(&"x".repeat(1025))
                .unwrap_err()
                .contains("1024 bytes")
        );
    }

    #[test]
    fn client_ids_and_secrets_are_random_and_well_formed() {
        let id = new_client_id();
        assert!(is_client_id(&id), "{id}");
        assert_ne!(id, new_client_id());
        assert!(!is_client_id("ABCDEF0123456789abcdef0123456789"));
        assert!(!is_client_id("abc"));
        let secret = new_client_secret().unwrap();
        assert!(secret.starts_with(CLIENT_SECRET_PREFIX) && secret.len() == 47);
    }
}
