//! The status page's session cookie: an HMAC-signed, expiring statement of who signed in,
//! valid at every control-plane node that holds the same [`SessionKey`].
//!
//! No session is stored anywhere: the cookie itself says who (an Admin API token's id or a
//! username), a *binding* to that principal's current secret (a digest of the token's stored
//! hash or of the user's password hash), and when it was issued and expires, all under an
//! HMAC-SHA256 with the session key. A node behind a load balancer can therefore check a
//! cookie issued by any other node, and nothing needs replicating. The key is a cluster secret
//! ([`crate::cluster::secrets`]): sealed in the shared database with PostgreSQL, a 0600 file
//! (`<data_dir>/pki/ui-session.key`) on an embedded store.
//!
//! A valid signature is not enough: every request also looks the principal up again
//! ([`super::auth`]), so revoking a token, deleting a user or changing what the binding covers
//! ends the session at once. Pure and clock-free (time is passed in), so every rule is tested
//! here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::secrets::RandomFailed;

/// The cookie's name.
pub const COOKIE: &str = "licsync_session";
/// How long a session lasts after sign-in, in seconds (a working day). It is not extended by
/// use: an operator signs in again the next day.
pub const SESSION_TTL: i64 = 8 * 3600;
/// Longest cookie value accepted; a longer one is refused before any decoding.
pub const MAX_COOKIE_LEN: usize = 512;
/// Length of the session key, in bytes.
pub const KEY_LEN: usize = 32;
/// The format version written first in every cookie, so a later format can refuse this one.
const VERSION: &str = "v1";

/// The key sessions are signed with: the same at every node of one control plane.
#[derive(Clone)]
pub struct SessionKey(hmac::Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Why session key bytes were not accepted.
#[derive(Debug, thiserror::Error)]
#[error("the status page's session key must be {KEY_LEN} bytes, found {0}")]
pub struct BadKeyLength(pub usize);

impl SessionKey {
    /// The key made of `bytes` (exactly [`KEY_LEN`] of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadKeyLength> {
        if bytes.len() != KEY_LEN {
            return Err(BadKeyLength(bytes.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// New random key bytes, to be kept (a file or the shared database) and loaded with
    /// [`SessionKey::from_bytes`].
    pub fn generate_bytes() -> Result<[u8; KEY_LEN], RandomFailed> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RandomFailed)?;
        Ok(bytes)
    }

    /// A key for this process alone (sessions end when it restarts): for a control plane built
    /// without one, as unit tests do.
    pub fn ephemeral() -> Result<Self, RandomFailed> {
        let bytes = Self::generate_bytes()?;
        Self::from_bytes(&bytes).map_err(|_| RandomFailed)
    }
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An Admin API token, by its id.
    Token(Uuid),
    /// A user, by name.
    User(String),
}

/// What a valid cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: Subject,
    /// [`binding`] of the principal's secret when the session was issued.
    pub binding: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why a cookie is not a session (the page answers each the same way: sign in again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the session cookie is malformed")]
    Malformed,
    #[error("the session cookie's signature does not verify (another control plane's, or altered)")]
    BadSignature,
    #[error("the session has expired")]
    Expired,
}

/// The digest a session keeps of a principal's stored secret (`token_hash`, `password_hash`):
/// when that secret changes, sessions issued before no longer match. A digest of a digest,
/// shortened, and only ever inside a signed cookie.
pub fn binding(stored_secret: &str) -> String {
    let digest = licsync_common::pki::sha256_hex(format!("ui-session:{stored_secret}").as_bytes());
    digest[..16].to_owned()
}

impl Session {
    /// A session for `subject` bound to `binding`, issued at `now` for [`SESSION_TTL`].
    pub fn new(subject: Subject, binding: String, now: i64) -> Self {
        Self {
            subject,
            binding,
            issued_at: now,
            expires_at: now.saturating_add(SESSION_TTL),
        }
    }

    /// The cookie value: the fields, base64url, then `.` and their HMAC, base64url.
    pub fn seal(&self, key: &SessionKey) -> String {
        let (kind, subject) = match &self.subject {
            Subject::Token(id) => ("t", id.to_string()),
            Subject::User(name) => ("u", name.clone()),
        };
        let fields = format!(
            "{VERSION}\n{kind}\n{subject}\n{}\n{}\n{}",
            self.binding, self.issued_at, self.expires_at
        );
        let tag = hmac::sign(&key.0, fields.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(fields.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The session `value` states, if its signature verifies with `key` and it has not expired
    /// at `now`.
    pub fn open(value: &str, key: &SessionKey, now: i64) -> Result<Self, Invalid> {
        if value.len() > MAX_COOKIE_LEN {
            return Err(Invalid::Malformed);
        }
        let (fields, tag) = value.split_once('.').ok_or(Invalid::Malformed)?;
        let fields = URL_SAFE_NO_PAD
            .decode(fields)
            .map_err(|_| Invalid::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Invalid::Malformed)?;
        hmac::verify(&key.0, &fields, &tag).map_err(|_| Invalid::BadSignature)?;
        let text = std::str::from_utf8(&fields).map_err(|_| Invalid::Malformed)?;
        let parts: Vec<&str> = text.split('\n').collect();
        let [version, kind, subject, binding, issued_at, expires_at] = parts[..] else {
            return Err(Invalid::Malformed);
        };
        if version != VERSION {
            return Err(Invalid::Malformed);
        }
        let subject = match kind {
            "t" => Subject::Token(Uuid::try_parse(subject).map_err(|_| Invalid::Malformed)?),
            "u" => Subject::User(subject.to_owned()),
            _ => return Err(Invalid::Malformed),
        };
        let issued_at: i64 = issued_at.parse().map_err(|_| Invalid::Malformed)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| Invalid::Malformed)?;
        if now >= expires_at {
            return Err(Invalid::Expired);
        }
        Ok(Self {
            subject,
            binding: binding.to_owned(),
            issued_at,
            expires_at,
        })
    }
}

/// The `Set-Cookie` value that starts a session: `HttpOnly` (no script reads it),
/// `SameSite=Strict` (no other site's page sends it), `Path=/ui` (the Admin API never sees
/// it), `Secure` when the admin listener speaks TLS.
pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/ui; Max-Age={SESSION_TTL}; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

/// The session cookie's value among `Cookie` header values, if any (the first one named
/// [`COOKIE`]).
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::from_bytes(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn a_sealed_session_opens_with_the_same_key_until_it_expires() {
        let id = Uuid::new_v4();
        for subject in [Subject::Token(id), Subject::User("alice@example".into())] {
            let session = Session::new(subject, binding("hash"), 1_000);
            let value = session.seal(&key(1));
            assert!(value.len() < MAX_COOKIE_LEN, "{value}");
            assert_eq!(Session::open(&value, &key(1), 1_000), Ok(session.clone()));
            assert_eq!(
                Session::open(&value, &key(1), 1_000 + SESSION_TTL - 1),
                Ok(session)
            );
            assert_eq!(
                Session::open(&value, &key(1), 1_000 + SESSION_TTL),
                Err(Invalid::Expired)
            );
        }
    }

    #[test]
    fn another_key_or_any_change_is_refused() {
        let value = Session::new(Subject::User("alice".into()), binding("h"), 0).seal(&key(1));
        assert_eq!(
            Session::open(&value, &key(2), 0),
            Err(Invalid::BadSignature)
        );
        // Claim to be someone else, keeping the tag.
        let (_, tag) = value.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(format!("v1\nu\nroot\n{}\n0\n99999999999", binding("h")))
        );
        assert_eq!(
            Session::open(&forged, &key(1), 0),
            Err(Invalid::BadSignature)
        );
        for bad in ["", ".", "abc", "a.b.c", &"x".repeat(MAX_COOKIE_LEN + 1)] {
            assert!(Session::open(bad, &key(1), 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_correctly_signed_but_malformed_statement_is_refused() {
        let k = key(3);
        let signed = |fields: &str| {
            let tag = hmac::sign(&k.0, fields.as_bytes());
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(fields),
                URL_SAFE_NO_PAD.encode(tag.as_ref())
            )
        };
        for fields in [
            "v2\nu\nalice\nb\n0\n100",
            "v1\nx\nalice\nb\n0\n100",
            "v1\nt\nnot-a-uuid\nb\n0\n100",
            "v1\nu\nalice\nb\n0",
            "v1\nu\nalice\nb\nzero\n100",
        ] {
            assert_eq!(
                Session::open(&signed(fields), &k, 0),
                Err(Invalid::Malformed),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn bindings_follow_the_secret() {
        assert_eq!(binding("a"), binding("a"));
        assert_ne!(binding("a"), binding("b"));
        assert_eq!(binding("a").len(), 16);
    }

    #[test]
    fn cookies_carry_every_attribute_and_are_found_among_others() {
        let set = set_cookie("abc", true);
        for part in [
            "licsync_session=abc",
            "Path=/ui",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        let headers = ["theme=dark; licsync_session=v.t ", "licsync_session=other"];
        assert_eq!(cookie_value(headers.into_iter()), Some("v.t"));
        assert_eq!(cookie_value(["a=b"].into_iter()), None);
        assert_eq!(SessionKey::from_bytes(&[0; 5]).unwrap_err().0, 5);
    }
}
