//! The nodes registry: one row per control-plane node, rewritten by its heartbeat.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PostgresStore, db, signed};
use crate::store::{NodeRecord, NodeStore, StoreResult};

/// Rows not rewritten for this long (seconds) are removed: a node gone for a day is not
/// coming back under that id with anything worth showing.
const FORGET_AFTER: i64 = 86_400;

const COLUMNS: &str =
    "id, advertised_url, version, started_at, last_seen, dataplanes_connected, dataplanes";

fn node(row: &Row) -> NodeRecord {
    NodeRecord {
        id: row.get("id"),
        advertised_url: row.get("advertised_url"),
        version: row.get("version"),
        started_at: row.get("started_at"),
        last_seen: row.get("last_seen"),
        dataplanes: row.get("dataplanes"),
    }
}

#[async_trait]
impl NodeStore for PostgresStore {
    async fn heartbeat_node(&self, node: &NodeRecord) -> StoreResult<()> {
        let connected = signed(node.dataplanes.len(), "dataplanes_connected")?;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO control_planes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET advertised_url = EXCLUDED.advertised_url,
                         version = EXCLUDED.version, started_at = EXCLUDED.started_at,
                         last_seen = EXCLUDED.last_seen,
                         dataplanes_connected = EXCLUDED.dataplanes_connected,
                         dataplanes = EXCLUDED.dataplanes"
                ),
                &[
                    &node.id,
                    &node.advertised_url,
                    &node.version,
                    &node.started_at,
                    &node.last_seen,
                    &connected,
                    &node.dataplanes,
                ],
            )
            .await
            .map_err(db)?;
        client
            .execute(
                "DELETE FROM control_planes WHERE last_seen < $1",
                &[&(node.last_seen - FORGET_AFTER)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM control_planes ORDER BY id"),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(node).collect())
    }

    async fn remove_node(&self, id: uuid::Uuid) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM control_planes WHERE id = $1", &[&id])
            .await
            .map_err(db)?;
        Ok(())
    }
}
