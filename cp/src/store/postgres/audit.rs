//! The audit trail: one row per record, keyed by (time, id) so reads in time order and
//! pruning by age are index range scans.

use async_trait::async_trait;

use super::{PostgresStore, db};
use crate::store::{AuditRecord, AuditStore, StoreError, StoreResult};

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut times = Vec::with_capacity(records.len());
        let mut ids = Vec::with_capacity(records.len());
        let mut bodies = Vec::with_capacity(records.len());
        for record in records {
            times.push(record.at_ms);
            ids.push(record.id);
            bodies.push(
                serde_json::to_value(record)
                    .map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))?,
            );
        }
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO audit_records (at_ms, id, record)
                 SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::jsonb[])
                 ON CONFLICT DO NOTHING",
                &[&times, &ids, &bodies],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn audit_since(&self, since_ms: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT record FROM audit_records WHERE at_ms >= $1
                 ORDER BY at_ms, id LIMIT $2",
                &[&since_ms, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let value: serde_json::Value = row.get(0);
                serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
                    key: "audit_records".into(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before_ms: i64) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM audit_records WHERE at_ms < $1", &[&before_ms])
            .await
            .map_err(db)
    }
}
