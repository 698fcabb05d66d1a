//! Admin API tokens: the bearer tokens every Admin API request but the health probes needs.
//!
//! Tokens are read from storage on every check (there are a handful), so deleting a token's
//! record revokes it at once. Only digests are compared, in constant time; a token is never
//! logged.

use super::Principals;
use crate::secrets;
use crate::store::StoreResult;

impl Principals {
    /// Whether `presented` is a stored, unrevoked API token.
    pub async fn knows_api_token(&self, presented: &str) -> StoreResult<bool> {
        let tokens = self.store.api_tokens().await?;
        let digest = secrets::hash(presented);
        // Compare against every record so the time taken does not depend on which one matches.
        Ok(tokens.iter().fold(false, |found, token| {
            secrets::digests_equal(&digest, &token.token_hash) | found
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::model::ApiToken;
    use crate::store::{MemoryStore, PrincipalStore};

    #[tokio::test]
    async fn only_stored_tokens_are_known_and_a_deleted_one_is_not() {
        let store = Arc::new(MemoryStore::new());
        let principals = Principals::new(store.clone());
        let token = ApiToken {
            id: Uuid::new_v4(),
            name: "ops".into(),
            token_hash: secrets::hash("lsa_right"),
            created_at: 0,
        };
        store.put_api_token(&token).await.unwrap();
        assert!(principals.knows_api_token("lsa_right").await.unwrap());
        assert!(!principals.knows_api_token("lsa_wrong").await.unwrap());
        assert!(!principals.knows_api_token("").await.unwrap());
        store.delete_api_token(token.id).await.unwrap();
        assert!(!principals.knows_api_token("lsa_right").await.unwrap());
    }
}
