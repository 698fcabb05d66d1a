//! Filling an empty database with a whole control plane's records in one transaction
//! (`licsync-cp storage copy`): either every record is there after the commit, or none is.
//!
//! The records are written as they are (ids, timestamps, revisions, use counts), and the
//! revision counter is set to the source's, so data planes that hold revision N see nothing
//! new and nothing lost. The target must hold no licsync data: the check and the writes run
//! under an exclusive lock on every table, so a node starting on the database meanwhile waits
//! and then finds the copy.

use tokio_postgres::types::Json;

use super::{PostgresStore, db, signed};
use crate::model::{ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, User};
use crate::store::{AuditRecord, LicenseRows, StoreError, UsageRow};

/// The tables holding licsync data, each checked empty before a copy.
const TABLES: &[&str] = &[
    "cp_meta",
    "licenses",
    "registration_tokens",
    "dataplanes",
    "api_tokens",
    "users",
    "connected_apps",
    "usage_counters",
    "cluster_secrets",
    "license_tombstones",
    "audit_records",
];

/// What a table holds when it holds no licsync data: migration 3 seeds the revision row at 0,
/// so the first writes of two nodes have a row to lock, and migration 5 the tombstone horizon.
fn data_rows(table: &str) -> String {
    match table {
        "cp_meta" => "SELECT count(*) FROM cp_meta \
             WHERE NOT (key IN ('revision', 'tombstones_pruned_through') AND value = 0)"
            .into(),
        _ => format!("SELECT count(*) FROM {table}"),
    }
}

/// Everything a copy writes.
pub struct Import<'a> {
    pub licenses: &'a LicenseRows,
    pub registration_tokens: &'a [RegistrationToken],
    pub dataplanes: &'a [DataPlaneRecord],
    pub api_tokens: &'a [ApiToken],
    pub users: &'a [User],
    pub connected_apps: &'a [ConnectedApp],
    pub usage: &'a [UsageRow],
    /// The audit trail, so moving storage (or rolling back through a restore and a copy)
    /// keeps who did what.
    pub audit: &'a [AuditRecord],
    /// Cluster secrets, already sealed, by name.
    pub secrets: &'a [(&'a str, Vec<u8>)],
}

/// Why an import did not happen (it then wrote nothing).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The tables that hold rows, each with its count.
    #[error("the target database already holds licsync data ({})", describe(.0))]
    NotEmpty(Vec<(&'static str, i64)>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(tables: &[(&'static str, i64)]) -> String {
    tables
        .iter()
        .map(|(table, rows)| format!("{table}: {rows} row(s)"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PostgresStore {
    /// Writes `import` into this database, which must hold no licsync data, in one
    /// transaction. The schema must be current ([`PostgresStore::migrate`]).
    pub async fn import_into_empty(&self, import: &Import<'_>) -> Result<(), ImportError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            TABLES.join(", ")
        ))
        .await
        .map_err(db)?;
        let mut holding = Vec::new();
        for &table in TABLES {
            let rows: i64 = tx
                .query_one(&data_rows(table), &[])
                .await
                .map_err(db)?
                .get(0);
            if rows > 0 {
                holding.push((table, rows));
            }
        }
        if !holding.is_empty() {
            return Err(ImportError::NotEmpty(holding));
        }

        let statement = |sql: &'static str| tx.prepare(sql);
        let license = statement(
            "INSERT INTO licenses (id, document, signature, created_at, updated_at, revision)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(db)?;
        for l in &import.licenses.licenses {
            let revision = signed(l.revision, "license revision")?;
            let row: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &l.id,
                &l.document,
                &l.signature,
                &l.created_at,
                &l.updated_at,
                &revision,
            ];
            tx.execute(&license, &row).await.map_err(db)?;
        }
        let revision = signed(import.licenses.revision, "revision")?;
        tx.execute(
            "INSERT INTO cp_meta (key, value) VALUES ('revision', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&revision],
        )
        .await
        .map_err(db)?;

        let token = statement(
            "INSERT INTO registration_tokens
                 (id, name, token_hash, created_at, expires_at, max_uses, uses)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(db)?;
        for t in import.registration_tokens {
            let (max_uses, uses) = (i64::from(t.max_uses), i64::from(t.uses));
            let row: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &t.id,
                &t.name,
                &t.token_hash,
                &t.created_at,
                &t.expires_at,
                &max_uses,
                &uses,
            ];
            tx.execute(&token, &row).await.map_err(db)?;
        }

        let dataplane = statement("INSERT INTO dataplanes (id, record) VALUES ($1, $2)")
            .await
            .map_err(db)?;
        for d in import.dataplanes {
            tx.execute(&dataplane, &[&d.id, &Json(d)])
                .await
                .map_err(db)?;
        }
        let api_token = statement("INSERT INTO api_tokens (id, record) VALUES ($1, $2)")
            .await
            .map_err(db)?;
        for t in import.api_tokens {
            tx.execute(&api_token, &[&t.id, &Json(t)])
                .await
                .map_err(db)?;
        }
        let user = statement("INSERT INTO users (username, record) VALUES ($1, $2)")
            .await
            .map_err(db)?;
        for u in import.users {
            tx.execute(&user, &[&u.username, &Json(u)])
                .await
                .map_err(db)?;
        }
        let app = statement("INSERT INTO connected_apps (client_id, record) VALUES ($1, $2)")
            .await
            .map_err(db)?;
        for a in import.connected_apps {
            tx.execute(&app, &[&a.client_id, &Json(a)])
                .await
                .map_err(db)?;
        }

        let mut dataplanes = Vec::with_capacity(import.usage.len());
        let mut epochs = Vec::with_capacity(import.usage.len());
        let mut months = Vec::with_capacity(import.usage.len());
        let mut counts = Vec::with_capacity(import.usage.len());
        for u in import.usage {
            dataplanes.push(u.dataplane);
            epochs.push(u.epoch);
            months.push(u.month.to_string());
            counts.push(signed(u.count, "usage count")?);
        }
        tx.execute(
            "INSERT INTO usage_counters (dataplane, epoch, month, count)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[])",
            &[&dataplanes, &epochs, &months, &counts],
        )
        .await
        .map_err(db)?;

        let mut times = Vec::with_capacity(import.audit.len());
        let mut ids = Vec::with_capacity(import.audit.len());
        let mut bodies = Vec::with_capacity(import.audit.len());
        for record in import.audit {
            times.push(record.at_ms);
            ids.push(record.id);
            bodies.push(Json(record));
        }
        tx.execute(
            "INSERT INTO audit_records (at_ms, id, record)
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::jsonb[])",
            &[&times, &ids, &bodies],
        )
        .await
        .map_err(db)?;

        let now = licsync_common::unix_now();
        for (name, sealed) in import.secrets {
            tx.execute(
                "INSERT INTO cluster_secrets (name, sealed, created_at) VALUES ($1, $2, $3)",
                &[name, sealed, &now],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}
