//! Registration tokens and data planes: what the fleet is built from.
//!
//! A token's use is counted in a transaction holding the token's row lock
//! (`SELECT ... FOR UPDATE`): a second registration with the same token, on this node or
//! another, waits for the first to commit and then sees its use, so a token's last use is taken
//! exactly once.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{PostgresStore, db, unsigned};
use crate::model::{DataPlaneRecord, RegistrationToken, TokenRefusal};
use crate::store::{DataPlaneStore, StoreResult, TokenStore, token_refusal};

pub(super) const TOKEN_COLUMNS: &str =
    "id, name, token_hash, created_at, expires_at, max_uses, uses";

pub(super) fn token(row: &Row) -> StoreResult<RegistrationToken> {
    Ok(RegistrationToken {
        id: row.get("id"),
        name: row.get("name"),
        token_hash: row.get("token_hash"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        max_uses: unsigned(row.get("max_uses"), "registration_tokens.max_uses")?,
        uses: unsigned(row.get("uses"), "registration_tokens.uses")?,
    })
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn insert_registration_token(&self, token: &RegistrationToken) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO registration_tokens ({TOKEN_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
                         token_hash = EXCLUDED.token_hash, created_at = EXCLUDED.created_at,
                         expires_at = EXCLUDED.expires_at, max_uses = EXCLUDED.max_uses,
                         uses = EXCLUDED.uses"
                ),
                &[
                    &token.id,
                    &token.name,
                    &token.token_hash,
                    &token.created_at,
                    &token.expires_at,
                    &i64::from(token.max_uses),
                    &i64::from(token.uses),
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM registration_tokens ORDER BY id"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(token)
            .collect()
    }

    async fn delete_registration_token(&self, id: Uuid) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM registration_tokens WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(deleted == 1)
    }

    async fn consume_registration_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Result<RegistrationToken, TokenRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM registration_tokens
                     WHERE token_hash = $1 FOR UPDATE"
                ),
                &[&token_hash],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let mut token = token(&row)?;
        if let Some(refusal) = token_refusal(&token, now) {
            return Ok(Err(refusal));
        }
        token.uses += 1;
        tx.execute(
            "UPDATE registration_tokens SET uses = $2 WHERE id = $1",
            &[&token.id, &i64::from(token.uses)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Ok(token))
    }
}

#[async_trait]
impl DataPlaneStore for PostgresStore {
    /// A revoked record also notifies every node (at commit), so the one holding the data
    /// plane's stream ends it at once.
    async fn put_dataplane(&self, dataplane: &DataPlaneRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO dataplanes (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&dataplane.id, &Json(dataplane)],
        )
        .await
        .map_err(db)?;
        if dataplane.revoked {
            super::feed::notify_revoked(&tx, dataplane.id).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn revoked_dataplanes(&self) -> StoreResult<Vec<Uuid>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM dataplanes WHERE (record->>'revoked')::boolean",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn dataplane(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT record FROM dataplanes WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        row.map(|row| record(&row, "dataplanes")).transpose()
    }

    async fn dataplanes(&self) -> StoreResult<Vec<DataPlaneRecord>> {
        let client = self.client().await?;
        client
            .query("SELECT record FROM dataplanes ORDER BY id", &[])
            .await
            .map_err(db)?
            .iter()
            .map(|row| record(row, "dataplanes"))
            .collect()
    }

    async fn delete_dataplane(&self, id: Uuid) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute("DELETE FROM dataplanes WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(deleted == 1)
    }
}

/// The JSON `record` column of `row` as a `T`, or which table holds a corrupt one.
pub(super) fn record<T: serde::de::DeserializeOwned>(row: &Row, table: &str) -> StoreResult<T> {
    let value: Json<serde_json::Value> =
        row.try_get("record")
            .map_err(|e| crate::store::StoreError::Corrupt {
                key: table.to_owned(),
                reason: e.to_string(),
            })?;
    serde_json::from_value(value.0).map_err(|e| crate::store::StoreError::Corrupt {
        key: table.to_owned(),
        reason: e.to_string(),
    })
}
