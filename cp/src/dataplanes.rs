//! The fleet as the control plane sees it: registered data planes (persisted) joined with their
//! live connection state (in memory, rebuilt as they reconnect).
//!
//! Connection state changes on every heartbeat, so it is kept out of the durable store; what
//! must survive a restart (identity, certificate serial, last reported license) is written
//! through to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{DataPlaneRecord, Revision};
use crate::store::{Store, StoreResult};

/// Kong's `sync_status` for a data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Never completed a sync on this control plane since it started.
    #[default]
    Unknown,
    /// Acknowledged the newest update it was sent.
    Normal,
    /// Refused at least one license it was sent (signature it cannot verify).
    LicenseRejected,
}

#[derive(Debug, Clone, Default)]
struct Live {
    connected: bool,
    /// Streams currently open for this data plane (a reconnect may briefly overlap).
    streams: u32,
    last_seen: Option<i64>,
    sync_status: SyncStatus,
    revision: Revision,
    /// The license the data plane serves (id, `updated_at`), as of its last acknowledgement.
    license: Option<(Uuid, i64)>,
    /// The newest stream (its number and what ends it); a newer one cancels it.
    current_stream: Option<(u64, CancellationToken)>,
    /// Numbers the streams of this data plane.
    streams_opened: u64,
}

/// An open stream's registration with [`DataPlanes`].
pub struct StreamSlot {
    number: u64,
    /// Cancelled when a newer stream opens for the same data plane.
    pub replaced: CancellationToken,
}

/// One row of `GET /clustering/data-planes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataPlaneView {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub ip: String,
    pub version: String,
    pub registered_at: i64,
    pub last_seen: Option<i64>,
    pub connected: bool,
    pub sync_status: SyncStatus,
    /// Control-plane revision the data plane last acknowledged.
    pub revision: Revision,
    pub license_id: Option<Uuid>,
    pub license_updated_at: Option<i64>,
    pub cert_expires_at: i64,
}

/// Registered data planes and their live state.
pub struct DataPlanes {
    store: Arc<dyn Store>,
    live: Mutex<HashMap<Uuid, Live>>,
}

impl DataPlanes {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<Uuid, Live>> {
        // The map holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every registered, unrevoked data plane, ordered by id.
    pub async fn list(&self) -> StoreResult<Vec<DataPlaneView>> {
        let mut records = self.store.dataplanes().await?;
        records.retain(|r| !r.revoked);
        records.sort_by_key(|r| r.id);
        let live = self.live();
        Ok(records
            .into_iter()
            .map(|r| {
                let state = live.get(&r.id).cloned();
                view(r, state)
            })
            .collect())
    }

    /// One registered, unrevoked data plane.
    pub async fn get(&self, id: Uuid) -> StoreResult<Option<DataPlaneView>> {
        let record = self.store.dataplane(id).await?.filter(|r| !r.revoked);
        Ok(record.map(|r| {
            let state = self.live().get(&id).cloned();
            view(r, state)
        }))
    }

    /// How many data planes have an open stream.
    pub fn connected_count(&self) -> usize {
        self.live().values().filter(|l| l.connected).count()
    }

    /// A stream opened: the data plane is connected and was just seen. The slot's token is
    /// cancelled when a newer stream opens for the same data plane (a restarted agent whose old
    /// connection is not dead yet, or a registration file copied to a second host): one data
    /// plane, one stream. The flag says an older stream was replaced.
    pub fn stream_opened(&self, id: Uuid, now: i64) -> (StreamSlot, bool) {
        let mut live = self.live();
        let entry = live.entry(id).or_default();
        entry.streams += 1;
        entry.connected = true;
        entry.last_seen = Some(now);
        entry.streams_opened += 1;
        let slot = StreamSlot {
            number: entry.streams_opened,
            replaced: CancellationToken::new(),
        };
        let replaced = entry
            .current_stream
            .replace((slot.number, slot.replaced.clone()))
            .map(|(_, older)| older.cancel())
            .is_some();
        (slot, replaced)
    }

    /// A stream ended; the data plane stays connected while another stream is open. What it
    /// reported is written through, so the listing survives a control-plane restart.
    pub async fn stream_closed(&self, id: Uuid, slot: &StreamSlot, now: i64) -> StoreResult<()> {
        let license = {
            let mut live = self.live();
            let Some(entry) = live.get_mut(&id) else {
                return Ok(());
            };
            if entry
                .current_stream
                .as_ref()
                .is_some_and(|(n, _)| *n == slot.number)
            {
                entry.current_stream = None;
            }
            entry.streams = entry.streams.saturating_sub(1);
            entry.connected = entry.streams > 0;
            entry.last_seen = Some(now);
            entry.license
        };
        if let Some(mut record) = self.store.dataplane(id).await? {
            record.last_seen = Some(now);
            if let Some((license_id, updated_at)) = license {
                record.license_id = Some(license_id);
                record.license_updated_at = Some(updated_at);
            }
            self.store.put_dataplane(&record).await?;
        }
        Ok(())
    }

    /// Any message from the data plane (heartbeat, ack) refreshes `last_seen`.
    pub fn seen(&self, id: Uuid, now: i64) {
        if let Some(entry) = self.live().get_mut(&id) {
            entry.last_seen = Some(now);
        }
    }

    /// The data plane answered an update; `license` is what it now serves.
    pub fn synced(
        &self,
        id: Uuid,
        revision: Revision,
        status: SyncStatus,
        license: Option<(Uuid, i64)>,
        now: i64,
    ) {
        if let Some(entry) = self.live().get_mut(&id) {
            entry.revision = revision;
            entry.sync_status = status;
            entry.license = license;
            entry.last_seen = Some(now);
        }
    }

    /// Persists what a data plane reported at connect or after a sync (version, hostname,
    /// address, active license), so the listing is right after a control-plane restart.
    pub async fn record(&self, record: &DataPlaneRecord) -> StoreResult<()> {
        self.store.put_dataplane(record).await
    }

    pub async fn find(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        self.store.dataplane(id).await
    }
}

fn view(record: DataPlaneRecord, live: Option<Live>) -> DataPlaneView {
    let live = live.unwrap_or_default();
    // Before its first sync on this process, the last license written through is the best known.
    let license = if live.sync_status == SyncStatus::Unknown {
        record.license_id.zip(record.license_updated_at)
    } else {
        live.license
    };
    DataPlaneView {
        id: record.id,
        name: record.name,
        hostname: record.hostname,
        ip: record.ip,
        version: record.version,
        registered_at: record.registered_at,
        last_seen: live.last_seen.or(record.last_seen),
        connected: live.connected,
        sync_status: live.sync_status,
        revision: live.revision,
        license_id: license.map(|l| l.0),
        license_updated_at: license.map(|l| l.1),
        cert_expires_at: record.cert_expires_at,
    }
}
