//! Registration tokens: the short-lived secrets an operator hands to a new data plane
//! (`licsync-dp registration create --token ...`), after Flex Gateway's registration tokens.
//!
//! This service owns their rules: a name without control characters, a lifetime within
//! [`MIN_TTL`]..=[`MAX_TTL`], 1 to [`MAX_USES`] uses. A token's secret is returned once, from
//! [`RegistrationTokens::create`]; only its SHA-256 is stored, and logs name tokens by id.
//! [`RegistrationTokens::consume`] checks a presented token and counts one use atomically in
//! storage, so two data planes racing for a token's last use cannot both win; its refusal says
//! why (unknown or revoked, expired, used up) and what to do.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::log_text;
use uuid::Uuid;

use crate::model::{RegistrationToken, TokenRefusal};
use crate::secrets::{self, RandomFailed};
use crate::store::{Store, StoreError, StoreResult};

/// Lifetime of a token when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(4 * 3600);
/// Shortest and longest lifetime a token may be given.
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most data planes one token may register.
pub const MAX_USES: u32 = 10_000;
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Prefix of token secrets, so a leaked one is recognisable.
const SECRET_PREFIX: &str = "lsr_";

/// Why `name` is refused, or `Ok`: at most [`MAX_NAME_CHARS`] characters, no control
/// characters (it is listed and logged). It may be empty.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters long"));
    }
    log_text::check_name("name", name)
}

/// What a lifetime must be, for messages.
pub fn ttl_bounds() -> String {
    format!(
        "must be from {} to {}, e.g. \"4h\"",
        HumanDuration(MIN_TTL),
        HumanDuration(MAX_TTL)
    )
}

/// `ttl` when within [`MIN_TTL`]..=[`MAX_TTL`], else [`ttl_bounds`].
pub fn check_ttl(ttl: Duration) -> Result<Duration, String> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl)
    } else {
        Err(ttl_bounds())
    }
}

/// `max_uses` when within 1..=[`MAX_USES`].
pub fn check_max_uses(max_uses: u64) -> Option<u32> {
    u32::try_from(max_uses)
        .ok()
        .filter(|n| (1..=MAX_USES).contains(n))
}

/// Whether `token` has expired at `now` (unix seconds).
pub fn is_expired(token: &RegistrationToken, now: i64) -> bool {
    now >= token.expires_at
}

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// May be empty.
    pub name: String,
    pub ttl: Duration,
    pub max_uses: u32,
}

impl Default for NewToken {
    /// Unnamed, [`DEFAULT_TTL`], one use.
    fn default() -> Self {
        Self {
            name: String::new(),
            ttl: DEFAULT_TTL,
            max_uses: 1,
        }
    }
}

/// A created token and its secret: the only time the secret is known.
#[derive(Debug)]
pub struct IssuedToken {
    pub record: RegistrationToken,
    pub secret: String,
}

/// Why a token was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Random(#[from] RandomFailed),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Why a presented token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The token may not be used: the text says why and what to do.
    #[error(transparent)]
    Refused(#[from] TokenRefusal),
    /// Storage could not check; the caller may retry.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Creates, lists, revokes and consumes registration tokens.
pub struct RegistrationTokens {
    store: Arc<dyn Store>,
}

impl RegistrationTokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a token as of `now` (unix seconds) and logs `registration_token.created`.
    pub async fn create(&self, new: NewToken, now: i64) -> Result<IssuedToken, CreateError> {
        let invalid = |field, reason| CreateError::Invalid { field, reason };
        check_name(&new.name).map_err(|r| invalid("name", r))?;
        check_ttl(new.ttl).map_err(|r| invalid("ttl", r))?;
        check_max_uses(new.max_uses.into()).ok_or_else(|| {
            invalid(
                "max_uses",
                format!("expected an integer from 1 to {MAX_USES}"),
            )
        })?;
        let secret = secrets::generate(SECRET_PREFIX)?;
        let ttl_secs = i64::try_from(new.ttl.as_secs()).unwrap_or(i64::MAX);
        let record = RegistrationToken {
            id: Uuid::new_v4(),
            name: new.name,
            token_hash: secrets::hash(&secret),
            created_at: now,
            expires_at: now.saturating_add(ttl_secs),
            max_uses: new.max_uses,
            uses: 0,
        };
        self.store.insert_registration_token(&record).await?;
        tracing::info!(
            event = "registration_token.created",
            registration_token.id = %record.id,
            registration_token.name = %record.name,
            expires_at = record.expires_at,
            max_uses = record.max_uses,
            "Registration token created."
        );
        Ok(IssuedToken { record, secret })
    }

    /// Every token (expired ones too, until revoked), oldest first.
    pub async fn list(&self) -> StoreResult<Vec<RegistrationToken>> {
        let mut tokens = self.store.registration_tokens().await?;
        tokens.sort_by_key(|t| (t.created_at, t.id));
        Ok(tokens)
    }

    /// Revokes token `id` and logs `registration_token.revoked`; `false` when there was none.
    pub async fn revoke(&self, id: Uuid) -> StoreResult<bool> {
        let existed = self.store.delete_registration_token(id).await?;
        if existed {
            tracing::info!(
                event = "registration_token.revoked",
                registration_token.id = %id,
                "Registration token revoked."
            );
        }
        Ok(existed)
    }

    /// Checks the `presented` secret at `now` (known, unexpired, uses left) and counts one use,
    /// atomically.
    pub async fn consume(
        &self,
        presented: &str,
        now: i64,
    ) -> Result<RegistrationToken, ConsumeError> {
        Ok(self
            .store
            .consume_registration_token(&secrets::hash(presented), now)
            .await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, TokenStore};

    fn service() -> RegistrationTokens {
        RegistrationTokens::new(Arc::new(MemoryStore::new()))
    }

    fn refusal(result: Result<RegistrationToken, ConsumeError>) -> TokenRefusal {
        match result {
            Err(ConsumeError::Refused(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_token_registers_max_uses_data_planes_then_says_it_is_used_up() {
        let tokens = service();
        let new = NewToken {
            max_uses: 2,
            ..NewToken::default()
        };
        let issued = tokens.create(new, 1_000).await.unwrap();
        assert!(issued.secret.starts_with("lsr_"));
        assert_ne!(issued.record.token_hash, issued.secret);
        assert_eq!(issued.record.expires_at, 1_000 + 4 * 3600);
        for uses in 1..=2 {
            let token = tokens.consume(&issued.secret, 1_001).await.unwrap();
            assert_eq!((token.id, token.uses), (issued.record.id, uses));
        }
        let refused = refusal(tokens.consume(&issued.secret, 1_002).await);
        assert_eq!(
            refused,
            TokenRefusal::UsedUp {
                uses: 2,
                max_uses: 2
            }
        );
        assert!(
            refused.to_string().contains("create a new one"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn an_expired_unknown_or_revoked_token_is_refused_with_its_reason() {
        let tokens = service();
        let new = NewToken {
            ttl: Duration::from_secs(60),
            ..NewToken::default()
        };
        let issued = tokens.create(new.clone(), 1_000).await.unwrap();
        assert_eq!(
            refusal(tokens.consume(&issued.secret, 1_060).await),
            TokenRefusal::Expired { expired_at: 1_060 }
        );
        assert_eq!(
            refusal(tokens.consume("lsr_never_issued", 1_000).await),
            TokenRefusal::Unknown
        );
        let revoked = tokens.create(new, 1_000).await.unwrap();
        assert!(tokens.revoke(revoked.record.id).await.unwrap());
        assert!(!tokens.revoke(revoked.record.id).await.unwrap());
        assert_eq!(
            refusal(tokens.consume(&revoked.secret, 1_001).await),
            TokenRefusal::Unknown
        );
        // An expired token stays listed (marked expired) until revoked.
        let listed = tokens.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(is_expired(&listed[0], 1_060) && !is_expired(&listed[0], 1_059));
    }

    #[tokio::test]
    async fn names_lifetimes_and_uses_out_of_bounds_are_refused() {
        let tokens = service();
        for (new, field, says) in [
            (
                NewToken {
                    name: "edge\nINFO forged".into(),
                    ..NewToken::default()
                },
                "name",
                "control characters (found U+000A)",
            ),
            (
                NewToken {
                    name: "x".repeat(129),
                    ..NewToken::default()
                },
                "name",
                "at most 128",
            ),
            (
                NewToken {
                    ttl: MAX_TTL + Duration::from_secs(1),
                    ..NewToken::default()
                },
                "ttl",
                "from 1s to 30d",
            ),
            (
                NewToken {
                    ttl: Duration::ZERO,
                    ..NewToken::default()
                },
                "ttl",
                "from 1s to 30d",
            ),
            (
                NewToken {
                    max_uses: 0,
                    ..NewToken::default()
                },
                "max_uses",
                "from 1 to 10000",
            ),
            (
                NewToken {
                    max_uses: MAX_USES + 1,
                    ..NewToken::default()
                },
                "max_uses",
                "from 1 to 10000",
            ),
        ] {
            let err = tokens.create(new.clone(), 0).await.unwrap_err();
            assert!(
                matches!(&err, CreateError::Invalid { field: f, reason } if *f == field && reason.contains(says)),
                "{new:?}: {err}"
            );
        }
        assert!(tokens.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn tokens_are_listed_oldest_first() {
        let tokens = service();
        let later = tokens.create(NewToken::default(), 20).await.unwrap();
        let earlier = tokens.create(NewToken::default(), 10).await.unwrap();
        let ids: Vec<_> = tokens.list().await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [earlier.record.id, later.record.id]);
    }

    #[tokio::test]
    async fn only_the_secret_s_digest_is_stored() {
        let store = Arc::new(MemoryStore::new());
        let tokens = RegistrationTokens::new(store.clone());
        let issued = tokens.create(NewToken::default(), 10).await.unwrap();
        assert!(
            issued.secret.starts_with(SECRET_PREFIX),
            "{}",
            issued.secret
        );
        let stored = store.registration_tokens().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].token_hash, secrets::hash(&issued.secret));
        assert_ne!(stored[0].token_hash, issued.secret);
    }
}
