//! Who may use the Admin API: API tokens, users and connected apps, each a JSON record under
//! its key. A taken username or client id is refused by the primary key
//! (`ON CONFLICT DO NOTHING`), atomically across nodes.

use async_trait::async_trait;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::fleet::record;
use super::{PostgresStore, db};
use crate::model::{ApiToken, ConnectedApp, User};
use crate::store::{PrincipalStore, StoreResult};

impl PostgresStore {
    /// Runs a statement; how many rows it changed.
    async fn change(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.client().await?;
        client.execute(sql, params).await.map_err(db)
    }

    /// Every `record` a query returns, decoded.
    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Vec<T>> {
        let client = self.client().await?;
        client
            .query(sql, params)
            .await
            .map_err(db)?
            .iter()
            .map(|row| record(row, table))
            .collect()
    }
}

#[async_trait]
impl PrincipalStore for PostgresStore {
    async fn put_api_token(&self, token: &ApiToken) -> StoreResult<()> {
        self.change(
            "INSERT INTO api_tokens (id, record) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&token.id, &Json(token)],
        )
        .await
        .map(drop)
    }

    /// The table is locked against writers (readers go on) for the check and the insert, so
    /// of two nodes bootstrapping at once the second waits, then finds the first one's token.
    async fn insert_first_api_token(&self, token: &ApiToken) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute("LOCK TABLE api_tokens IN EXCLUSIVE MODE")
            .await
            .map_err(db)?;
        let taken: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM api_tokens)", &[])
            .await
            .map_err(db)?
            .get(0);
        if !taken {
            tx.execute(
                "INSERT INTO api_tokens (id, record) VALUES ($1, $2)",
                &[&token.id, &Json(token)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(!taken)
    }

    async fn api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.records(
            "api_tokens",
            "SELECT record FROM api_tokens ORDER BY id",
            &[],
        )
        .await
    }

    async fn delete_api_token(&self, id: Uuid) -> StoreResult<bool> {
        Ok(self
            .change("DELETE FROM api_tokens WHERE id = $1", &[&id])
            .await?
            == 1)
    }

    async fn insert_user(&self, user: &User) -> StoreResult<bool> {
        Ok(self
            .change(
                "INSERT INTO users (username, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user.username, &Json(user)],
            )
            .await?
            == 1)
    }

    async fn user(&self, username: &str) -> StoreResult<Option<User>> {
        let mut found: Vec<User> = self
            .records(
                "users",
                "SELECT record FROM users WHERE username = $1",
                &[&username],
            )
            .await?;
        Ok(found.pop())
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.records("users", "SELECT record FROM users ORDER BY username", &[])
            .await
    }

    async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        Ok(self
            .change("DELETE FROM users WHERE username = $1", &[&username])
            .await?
            == 1)
    }

    async fn insert_connected_app(&self, app: &ConnectedApp) -> StoreResult<bool> {
        Ok(self
            .change(
                "INSERT INTO connected_apps (client_id, record) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&app.client_id, &Json(app)],
            )
            .await?
            == 1)
    }

    async fn connected_app(&self, client_id: &str) -> StoreResult<Option<ConnectedApp>> {
        let mut found: Vec<ConnectedApp> = self
            .records(
                "connected_apps",
                "SELECT record FROM connected_apps WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
        Ok(found.pop())
    }

    async fn connected_apps(&self) -> StoreResult<Vec<ConnectedApp>> {
        self.records(
            "connected_apps",
            "SELECT record FROM connected_apps ORDER BY client_id",
            &[],
        )
        .await
    }

    async fn delete_connected_app(&self, client_id: &str) -> StoreResult<bool> {
        Ok(self
            .change(
                "DELETE FROM connected_apps WHERE client_id = $1",
                &[&client_id],
            )
            .await?
            == 1)
    }
}
