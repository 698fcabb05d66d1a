//! The cluster's sealed secrets (`cluster_secrets`): the first node to store one wins
//! (`ON CONFLICT DO NOTHING`), and every node, the losers included, reads back what was stored,
//! so nodes starting together on an empty database agree on one CA and one report key.

use async_trait::async_trait;
use licsync_common::unix_now;

use super::{PostgresStore, db};
use crate::store::{SecretStore, StoreError, StoreResult};

#[async_trait]
impl SecretStore for PostgresStore {
    async fn secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT sealed FROM cluster_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .map(|row| row.get(0)))
    }

    async fn insert_secret_if_absent(&self, name: &str, sealed: &[u8]) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        // Under READ COMMITTED the insert of a node that loses waits for the winner's commit,
        // so the read after it (a new statement, a new snapshot) sees the winner's row.
        client
            .execute(
                "INSERT INTO cluster_secrets (name, sealed, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &sealed, &unix_now()],
            )
            .await
            .map_err(db)?;
        // Read on the same connection: asking the pool for a second one while holding this
        // one would wait forever with `storage.postgres.pool_size = 1`.
        let stored: Option<Vec<u8>> = client
            .query_opt(
                "SELECT sealed FROM cluster_secrets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .map(|row| row.get(0));
        stored.ok_or_else(|| StoreError::Corrupt {
            key: format!("cluster_secrets.{name}"),
            reason: "missing right after it was stored".into(),
        })
    }
}
