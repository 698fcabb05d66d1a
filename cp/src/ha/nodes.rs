//! The control-plane nodes of one cluster: each node's stable id, its heartbeat row in the
//! nodes registry (with the data planes whose stream it holds) and what the Admin API shows of
//! them. With a store only one node uses (sled, memory) the registry is this node alone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::fsutil::{self, PUBLIC_MODE};
use serde::Serialize;
use uuid::Uuid;

use crate::dataplanes::DataPlanes;
use crate::store::{NodeRecord, Store, StoreResult};

/// Name of the file holding a node's id inside `data_dir`.
pub const NODE_ID_FILE: &str = "node-id";

/// Heartbeats a node may miss before it is shown as gone.
pub const MISSED_HEARTBEATS: u32 = 3;

/// The node id file is unreadable or holds something else than an id.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("cannot read the node id from {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold a node id (a UUID): {reason}; remove it to give this node a new id"
    )]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot write the node id to {path}: {source}; check that the data_dir is writable")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// This node's id: read from `<data_dir>/node-id`, created there on the first start, so a
/// restarted node keeps its row in the registry.
pub fn load_or_create_node_id(data_dir: &Path) -> Result<Uuid, NodeIdError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            // A UUID with a newline: anything longer is not ours.
            let text = std::str::from_utf8(&bytes[..bytes.len().min(64)])
                .map_err(|e| NodeIdError::Invalid {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .trim();
            Uuid::parse_str(text).map_err(|e| NodeIdError::Invalid {
                path,
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            fsutil::write_atomic(&path, format!("{id}\n").as_bytes(), PUBLIC_MODE)
                .map_err(|source| NodeIdError::Write { path, source })?;
            Ok(id)
        }
        Err(source) => Err(NodeIdError::Read { path, source }),
    }
}

/// One row of `GET /clustering/control-planes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ControlPlaneNode)]
pub struct ControlPlaneView {
    pub id: Uuid,
    pub advertised_url: String,
    pub version: String,
    pub started_at: i64,
    pub last_seen: i64,
    pub dataplanes_connected: usize,
    /// Heard from within the last [`MISSED_HEARTBEATS`] poll intervals (always, for the node
    /// answering); a node that stopped or lost the database is kept, marked `false`.
    pub alive: bool,
}

/// This node and the registry of all nodes.
pub struct Nodes {
    store: Arc<dyn Store>,
    dataplanes: Arc<DataPlanes>,
    id: Uuid,
    advertised_url: String,
    started_at: i64,
    poll_interval: Duration,
}

impl Nodes {
    pub fn new(
        store: Arc<dyn Store>,
        dataplanes: Arc<DataPlanes>,
        advertised_url: String,
        started_at: i64,
        poll_interval: Duration,
    ) -> Self {
        Self {
            store,
            dataplanes,
            id: Uuid::new_v4(),
            advertised_url,
            started_at,
            poll_interval,
        }
    }

    /// Uses `id` ([`load_or_create_node_id`]) instead of the random one it starts with.
    pub fn set_id(&mut self, id: Uuid) {
        self.id = id;
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// This node's row as of `now`.
    fn local(&self, now: i64) -> NodeRecord {
        NodeRecord {
            id: self.id,
            advertised_url: self.advertised_url.clone(),
            version: licsync_common::VERSION.to_owned(),
            started_at: self.started_at,
            last_seen: now,
            dataplanes: self.dataplanes.connected_ids(),
        }
    }

    /// Writes this node's row (the heartbeat, every poll interval).
    pub async fn heartbeat(&self, now: i64) -> StoreResult<()> {
        self.store.heartbeat_node(&self.local(now)).await
    }

    /// Removes this node's row: it is stopping, and the streams it held are ending, so the
    /// other nodes stop showing them as held here at once rather than after three intervals.
    pub async fn leave(&self) -> StoreResult<()> {
        self.store.remove_node(self.id).await
    }

    /// Whether a row last written at `last_seen` is of a live node at `now`.
    fn alive(&self, last_seen: i64, now: i64) -> bool {
        let window = self.poll_interval.as_secs_f64() * f64::from(MISSED_HEARTBEATS);
        // At least a second of slack: heartbeats are stamped in whole seconds.
        (now - last_seen) as f64 <= window.max(1.0) + 1.0
    }

    /// Every registered node, this one as of `now`, ordered by id.
    pub async fn list(&self, now: i64) -> StoreResult<Vec<ControlPlaneView>> {
        let rows = self.rows(now).await?;
        Ok(rows
            .into_iter()
            .map(|row| ControlPlaneView {
                alive: row.id == self.id || self.alive(row.last_seen, now),
                id: row.id,
                advertised_url: row.advertised_url,
                version: row.version,
                started_at: row.started_at,
                last_seen: row.last_seen,
                dataplanes_connected: row.dataplanes.len(),
            })
            .collect())
    }

    /// Which live node holds each connected data plane's stream (this node's own streams as
    /// they are now).
    pub async fn stream_holders(&self, now: i64) -> StoreResult<HashMap<Uuid, Uuid>> {
        let mut holders = HashMap::new();
        for row in self.rows(now).await? {
            if row.id == self.id || self.alive(row.last_seen, now) {
                for dataplane in row.dataplanes {
                    holders.insert(dataplane, row.id);
                }
            }
        }
        Ok(holders)
    }

    /// The registry's rows with this node's replaced by its current state.
    async fn rows(&self, now: i64) -> StoreResult<Vec<NodeRecord>> {
        let mut rows = self.store.nodes().await?;
        rows.retain(|row| row.id != self.id);
        rows.push(self.local(now));
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn the_node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_node_id(dir.path()).unwrap();
        assert_eq!(load_or_create_node_id(dir.path()).unwrap(), id);
        std::fs::write(dir.path().join(NODE_ID_FILE), "not-an-id\n").unwrap();
        let err = load_or_create_node_id(dir.path()).unwrap_err().to_string();
        assert!(err.contains("node-id does not hold a node id"), "{err}");
    }

    #[tokio::test]
    async fn a_node_alone_lists_itself_with_the_streams_it_holds() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let dataplanes = Arc::new(DataPlanes::new(store.clone()));
        let mut nodes = Nodes::new(
            store,
            dataplanes.clone(),
            "https://cp:8005".into(),
            100,
            Duration::from_secs(5),
        );
        let id = Uuid::new_v4();
        nodes.set_id(id);
        let dp = Uuid::new_v4();
        let _slot = dataplanes.stream_opened(dp, 200);
        nodes.heartbeat(200).await.unwrap();
        let listed = nodes.list(10_000).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (
                listed[0].id,
                listed[0].dataplanes_connected,
                listed[0].alive
            ),
            (id, 1, true)
        );
        let holders = nodes.stream_holders(10_000).await.unwrap();
        assert_eq!(holders.get(&dp), Some(&id));
    }

    #[test]
    fn a_node_is_gone_after_three_missed_heartbeats() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let dataplanes = Arc::new(DataPlanes::new(store.clone()));
        let nodes = Nodes::new(store, dataplanes, String::new(), 0, Duration::from_secs(5));
        assert!(nodes.alive(1_000, 1_016));
        assert!(!nodes.alive(1_000, 1_017));
    }
}
