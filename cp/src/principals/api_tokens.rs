//! Admin API tokens: the bearer tokens every Admin API request but the health probes needs,
//! each with a [`Role`] and, if asked, an expiry.
//!
//! Tokens are read from storage on every check (there are a handful), so deleting a token's
//! record revokes it at once, at every node sharing the storage. Only digests are compared, in
//! constant time; a token is never logged. The last unexpired admin token cannot be revoked:
//! the Admin API would be locked for good (the bootstrap token is created only on an empty
//! store).

use std::time::Duration;

use uuid::Uuid;

use super::Principals;
use crate::model::{ApiToken, Role};
use crate::secrets::{self, RandomFailed};
use crate::store::{StoreError, StoreResult};

/// Longest name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest lifetime a token may be given: about ten years (beyond that, leave `ttl` out and
/// revoke it when done).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Who presented a valid token: what audit records and refusals name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCaller {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(TokenCaller),
    /// Never issued, or revoked.
    Unknown,
    /// Issued, and expired at `expired_at`.
    Expired {
        name: String,
        expired_at: i64,
    },
}

/// A token to create, validated by [`Principals::create_api_token`].
#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    /// `None`: valid until revoked.
    pub ttl: Option<Duration>,
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(
        "admin token {id} is the last unexpired admin token: revoking it would lock the Admin API; create another admin token (POST /admin-tokens with \"role\": \"admin\") first"
    )]
    LastAdmin { id: Uuid },
    #[error(transparent)]
    Random(#[from] RandomFailed),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Whether `name` may name a token: 1 to [`MAX_NAME_CHARS`] characters, none of them a
/// control character (it is listed, logged and named in refusals), no surrounding spaces.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.trim() != name {
        return Err(format!(
            "expected 1 to {MAX_NAME_CHARS} characters without leading or trailing spaces"
        ));
    }
    licsync_common::log_text::check_name("name", name)
}

/// Whether `ttl` is a lifetime a token may be given.
pub fn check_token_ttl(ttl: Duration) -> Result<(), String> {
    if ttl < Duration::from_secs(60) || ttl > MAX_TTL {
        return Err(format!(
            "expected a duration from 1m to {}d (leave ttl out for a token valid until revoked)",
            MAX_TTL.as_secs() / 86_400
        ));
    }
    Ok(())
}

impl Principals {
    /// What `presented` is as of `now`: a valid token with its caller, an expired one, or
    /// none (unknown or revoked).
    pub async fn check_api_token(&self, presented: &str, now: i64) -> StoreResult<TokenCheck> {
        let tokens = self.store.api_tokens().await?;
        let digest = secrets::hash(presented);
        // Compare against every record so the time taken does not depend on which one matches.
        let found = tokens.iter().fold(None, |found, token| {
            if secrets::digests_equal(&digest, &token.token_hash) {
                Some(token)
            } else {
                found
            }
        });
        Ok(match found {
            None => TokenCheck::Unknown,
            Some(token) if token.is_expired(now) => TokenCheck::Expired {
                name: token.name.clone(),
                expired_at: token.expires_at.unwrap_or(now),
            },
            Some(token) => TokenCheck::Valid(TokenCaller {
                id: token.id,
                name: token.name.clone(),
                role: token.role,
            }),
        })
    }

    /// Creates a token as of `now`: its record (stored as a digest) and its secret, which is
    /// shown once and never again.
    pub async fn create_api_token(
        &self,
        new: NewApiToken,
        now: i64,
    ) -> Result<(ApiToken, String), ApiTokenError> {
        check_token_name(&new.name).map_err(|reason| ApiTokenError::Invalid {
            field: "name",
            reason,
        })?;
        let expires_at = match new.ttl {
            Some(ttl) => {
                check_token_ttl(ttl).map_err(|reason| ApiTokenError::Invalid {
                    field: "ttl",
                    reason,
                })?;
                let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                Some(now.saturating_add(seconds))
            }
            None => None,
        };
        let secret = secrets::generate("lsa_")?;
        let token = ApiToken {
            id: Uuid::new_v4(),
            name: new.name,
            token_hash: secrets::hash(&secret),
            created_at: now,
            role: new.role,
            expires_at,
        };
        self.store.put_api_token(&token).await?;
        Ok((token, secret))
    }

    /// Every token (digests included: callers show only what they must).
    pub async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        let mut tokens = self.store.api_tokens().await?;
        tokens.sort_by_key(|t| (t.created_at, t.id));
        Ok(tokens)
    }

    /// Revokes token `id` as of `now`: `false` when there is no such token. Refuses to
    /// revoke the last unexpired admin token.
    pub async fn revoke_api_token(&self, id: Uuid, now: i64) -> Result<bool, ApiTokenError> {
        let _one_at_a_time = self.token_revocations.lock().await;
        let tokens = self.store.api_tokens().await?;
        let Some(token) = tokens.iter().find(|t| t.id == id) else {
            return Ok(false);
        };
        let usable_admin = |t: &ApiToken| t.role == Role::Admin && !t.is_expired(now);
        if usable_admin(token) && !tokens.iter().any(|t| t.id != id && usable_admin(t)) {
            return Err(ApiTokenError::LastAdmin { id });
        }
        Ok(self.store.delete_api_token(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{MemoryStore, PrincipalStore};

    fn principals() -> (Arc<MemoryStore>, Principals) {
        let store = Arc::new(MemoryStore::new());
        let principals = Principals::new(store.clone());
        (store, principals)
    }

    fn new(name: &str, role: Role, ttl: Option<u64>) -> NewApiToken {
        NewApiToken {
            name: name.into(),
            role,
            ttl: ttl.map(Duration::from_secs),
        }
    }

    #[tokio::test]
    async fn a_token_is_valid_with_its_role_until_it_expires_or_is_revoked() {
        let (store, principals) = principals();
        let (token, secret) = principals
            .create_api_token(new("ci", Role::Viewer, Some(3600)), 1_000)
            .await
            .unwrap();
        assert!(secret.starts_with("lsa_"));
        assert_ne!(token.token_hash, secret, "only the digest is stored");
        assert_eq!(token.expires_at, Some(4_600));
        let caller = TokenCaller {
            id: token.id,
            name: "ci".into(),
            role: Role::Viewer,
        };
        assert_eq!(
            principals.check_api_token(&secret, 4_599).await.unwrap(),
            TokenCheck::Valid(caller)
        );
        assert_eq!(
            principals.check_api_token(&secret, 4_600).await.unwrap(),
            TokenCheck::Expired {
                name: "ci".into(),
                expired_at: 4_600
            }
        );
        assert_eq!(
            principals
                .check_api_token("lsa_wrong", 1_000)
                .await
                .unwrap(),
            TokenCheck::Unknown
        );
        assert_eq!(
            principals.check_api_token("", 1_000).await.unwrap(),
            TokenCheck::Unknown
        );
        store.delete_api_token(token.id).await.unwrap();
        assert_eq!(
            principals.check_api_token(&secret, 1_000).await.unwrap(),
            TokenCheck::Unknown
        );
    }

    #[tokio::test]
    async fn the_last_unexpired_admin_token_cannot_be_revoked() {
        let (_, principals) = principals();
        let (first, _) = principals
            .create_api_token(new("first", Role::Admin, None), 0)
            .await
            .unwrap();
        let (viewer, _) = principals
            .create_api_token(new("viewer", Role::Viewer, None), 0)
            .await
            .unwrap();
        let (expiring, _) = principals
            .create_api_token(new("short", Role::Admin, Some(60)), 0)
            .await
            .unwrap();
        // Another admin token exists until it expires at 60.
        assert!(matches!(
            principals.revoke_api_token(first.id, 60).await,
            Err(ApiTokenError::LastAdmin { .. })
        ));
        assert!(principals.revoke_api_token(viewer.id, 60).await.unwrap());
        assert!(principals.revoke_api_token(first.id, 59).await.unwrap());
        assert!(!principals.revoke_api_token(first.id, 59).await.unwrap());
        // An expired admin token can always go.
        assert!(principals.revoke_api_token(expiring.id, 60).await.unwrap());
        assert!(principals.api_tokens().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn names_and_lifetimes_are_checked() {
        let (_, principals) = principals();
        for (request, field) in [
            (new("", Role::Admin, None), "name"),
            (new(" padded", Role::Admin, None), "name"),
            (new("bell\u{7}", Role::Admin, None), "name"),
            (
                new(&"n".repeat(MAX_NAME_CHARS + 1), Role::Admin, None),
                "name",
            ),
            (new("short", Role::Admin, Some(59)), "ttl"),
            (new("long", Role::Admin, Some(MAX_TTL.as_secs() + 1)), "ttl"),
        ] {
            match principals.create_api_token(request, 0).await {
                Err(ApiTokenError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an invalid {field}, got {other:?}"),
            }
        }
        assert!(principals.api_tokens().await.unwrap().is_empty());
    }
}
