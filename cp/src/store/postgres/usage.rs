//! Usage counters: one row per (data plane, epoch, month) holding the highest count reported.
//!
//! A batch is one statement: every counter it names is inserted or raised with `GREATEST`,
//! and the statement returns the value each now holds. Two nodes merging reports for the same
//! counter at once both keep the maximum (the row lock orders them), so a report counts exactly
//! once whichever node receives it. Counters are written in key order so two overlapping
//! batches cannot deadlock.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use uuid::Uuid;

use super::{PostgresStore, db, signed, unsigned};
use crate::store::{
    StoreError, StoreResult, UsageKey, UsageMonth, UsageRow, UsageStore, UsageSubmission,
};

#[async_trait]
impl UsageStore for PostgresStore {
    async fn record_usage(
        &self,
        submissions: Vec<UsageSubmission>,
    ) -> StoreResult<Vec<Vec<(UsageMonth, u64)>>> {
        // The highest count submitted per counter, in key order.
        let mut highest: BTreeMap<UsageKey, u64> = BTreeMap::new();
        for s in &submissions {
            for &(month, count) in &s.counts {
                let entry = highest.entry((s.dataplane, s.epoch, month)).or_default();
                *entry = (*entry).max(count);
            }
        }
        let mut dataplanes = Vec::with_capacity(highest.len());
        let mut epochs = Vec::with_capacity(highest.len());
        let mut months = Vec::with_capacity(highest.len());
        let mut counts = Vec::with_capacity(highest.len());
        for (&(dataplane, epoch, month), &count) in &highest {
            dataplanes.push(dataplane);
            epochs.push(epoch);
            months.push(month.to_string());
            counts.push(signed(count, "usage count")?);
        }
        let mut stored: HashMap<UsageKey, u64> = HashMap::with_capacity(highest.len());
        if !highest.is_empty() {
            let client = self.client().await?;
            let rows = client
                .query(
                    "INSERT INTO usage_counters AS c (dataplane, epoch, month, count)
                     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[])
                     ON CONFLICT (dataplane, epoch, month)
                     DO UPDATE SET count = GREATEST(c.count, EXCLUDED.count)
                     RETURNING dataplane, epoch, month, count",
                    &[&dataplanes, &epochs, &months, &counts],
                )
                .await
                .map_err(db)?;
            for row in &rows {
                let usage = usage_row(row)?;
                stored.insert((usage.dataplane, usage.epoch, usage.month), usage.count);
            }
        }
        Ok(submissions
            .iter()
            .map(|s| {
                s.counts
                    .iter()
                    .map(|&(month, count)| {
                        let key = (s.dataplane, s.epoch, month);
                        (month, stored.get(&key).copied().unwrap_or(count))
                    })
                    .collect()
            })
            .collect())
    }

    async fn usage(&self) -> StoreResult<Vec<UsageRow>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT dataplane, epoch, month, count FROM usage_counters
                 ORDER BY dataplane, epoch, month",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(usage_row)
            .collect()
    }

    async fn usage_by_month(&self) -> StoreResult<Vec<(UsageMonth, u64)>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT month, LEAST(SUM(count), 9223372036854775807)::bigint AS total
                 FROM usage_counters GROUP BY month ORDER BY month",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                let month: String = row.get("month");
                let total: i64 = row.get("total");
                let month = month
                    .parse::<UsageMonth>()
                    .map_err(|e| StoreError::Corrupt {
                        key: format!("usage_counters/*/{month}"),
                        reason: e.to_string(),
                    })?;
                Ok((month, total.unsigned_abs()))
            })
            .collect()
    }
}

pub(super) fn usage_row(row: &tokio_postgres::Row) -> StoreResult<UsageRow> {
    let dataplane: Uuid = row.get("dataplane");
    let month: String = row.get("month");
    let month = month
        .parse::<UsageMonth>()
        .map_err(|e| StoreError::Corrupt {
            key: format!("usage_counters/{dataplane}/{month}"),
            reason: e.to_string(),
        })?;
    Ok(UsageRow {
        dataplane,
        epoch: row.get("epoch"),
        month,
        count: unsigned(row.get("count"), "usage_counters.count")?,
    })
}
