//! Every record of the database at one point in time (`GET /backup`, and the automatic backup a
//! node takes before it migrates an older schema): one read-only repeatable-read transaction,
//! so all the reads see the same committed state whatever other nodes write meanwhile, and
//! nothing is locked against them.
//!
//! The reads follow the schema version the database is at: a database at version 1 has no
//! cluster secrets yet and one below version 4 no audit trail, and the backup taken before
//! migrating it must still be readable.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::fleet::{TOKEN_COLUMNS, record, token};
use super::licenses::{license, snapshot};
use super::usage::usage_row;
use super::{PostgresStore, db};
use crate::store::{LicenseRows, SnapshotStore, StoreResult, StoreSnapshot};

/// The first schema version holding `cluster_secrets`.
const SECRETS_SINCE: i32 = 2;
/// The first schema version holding `audit_records`.
const AUDIT_SINCE: i32 = 4;

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn snapshot(&self) -> StoreResult<StoreSnapshot> {
        self.snapshot_at(super::schema::LATEST).await
    }
}

impl PostgresStore {
    /// [`SnapshotStore::snapshot`] of a database whose schema is at `version` (not migrated
    /// yet): the tables a later migration adds are read as empty.
    pub async fn snapshot_at(&self, version: i32) -> StoreResult<StoreSnapshot> {
        let mut client = self.client().await?;
        let (tx, revision) = snapshot(&mut client).await?;
        let rows = |sql: &'static str| {
            let tx = &tx;
            async move { tx.query(sql, &[]).await.map_err(db) }
        };
        let licenses = rows(
            "SELECT id, document, signature, created_at, updated_at, revision
             FROM licenses ORDER BY id",
        )
        .await?
        .iter()
        .map(license)
        .collect::<StoreResult<_>>()?;
        let registration_tokens = tx
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM registration_tokens ORDER BY id"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(token)
            .collect::<StoreResult<_>>()?;
        let dataplanes = records(
            "dataplanes",
            rows("SELECT record FROM dataplanes ORDER BY id").await?,
        )?;
        let api_tokens = records(
            "api_tokens",
            rows("SELECT record FROM api_tokens ORDER BY id").await?,
        )?;
        let users = records(
            "users",
            rows("SELECT record FROM users ORDER BY username").await?,
        )?;
        let connected_apps = records(
            "connected_apps",
            rows("SELECT record FROM connected_apps ORDER BY client_id").await?,
        )?;
        let usage = rows(
            "SELECT dataplane, epoch, month, count FROM usage_counters
             ORDER BY dataplane, epoch, month",
        )
        .await?
        .iter()
        .map(usage_row)
        .collect::<StoreResult<_>>()?;
        let audit = if version >= AUDIT_SINCE {
            records(
                "audit_records",
                rows("SELECT record FROM audit_records ORDER BY at_ms, id").await?,
            )?
        } else {
            Vec::new()
        };
        let sealed_secrets = if version >= SECRETS_SINCE {
            rows("SELECT name, sealed FROM cluster_secrets ORDER BY name")
                .await?
                .iter()
                .map(|row| (row.get("name"), row.get("sealed")))
                .collect()
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(db)?;
        Ok(StoreSnapshot {
            licenses: LicenseRows { revision, licenses },
            registration_tokens,
            dataplanes,
            api_tokens,
            users,
            connected_apps,
            usage,
            audit,
            sealed_secrets,
        })
    }
}

/// Every `record` column of `found`, decoded.
fn records<T: serde::de::DeserializeOwned>(table: &str, found: Vec<Row>) -> StoreResult<Vec<T>> {
    found.iter().map(|row| record(row, table)).collect()
}
