//! The fleet as the control plane sees it: registered data planes (persisted) joined with their
//! live connection state (in memory, rebuilt as they reconnect).
//!
//! Connection state changes on every heartbeat, so it is kept out of the durable store; what
//! must survive a restart (identity, certificate serial, last reported license) is written
//! through to it.
//!
//! Several paths rewrite a data plane's record (a stream opening or closing, a certificate
//! rotation, a revocation, the purge); each read-modify-write goes through [`DataPlanes::update`]
//! under a per-data-plane lock, so a stream closing can never write back a certificate serial
//! that a rotation just replaced, nor un-revoke a data plane.
//!
//! - [`answer`]: what a data plane's `Nack` says (`last_rejection`, `sync_error`).
//! - [`health`]: `HEALTHY` / `DEGRADED` / `UNHEALTHY` / `UNINITIALIZED` from last contact.
//! - [`compat`]: Kong's version rule (`version_incompatible`).
//! - [`purge`]: when a long-silent data plane is removed.
//! - [`events`]: the last sync events of each data plane, in memory, for the status page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{DataPlaneRecord, Revision};
use crate::store::{Store, StoreResult};

pub mod answer;
pub mod compat;
pub mod events;
pub mod health;
pub mod purge;

pub use answer::Rejection;
pub use events::{SyncEvent, SyncEventKind};
pub use health::Health;

/// Record locks, striped by id: enough that unrelated data planes rarely wait on each other,
/// few enough to allocate once.
const RECORD_LOCKS: usize = 64;

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
    /// Could not apply the last update at all (its state or license file cannot be written);
    /// `sync_error` says why. It stays connected and the update is sent again with backoff.
    ApplyFailed,
    /// Runs a version this control plane does not sync (see [`compat`]); it stays connected
    /// but is sent no update.
    VersionIncompatible,
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
    /// Why the last update could not be applied (with [`SyncStatus::ApplyFailed`]).
    sync_error: Option<String>,
    /// The last `Nack` that refused licenses.
    last_rejection: Option<Rejection>,
    /// The newest stream (its number and what ends it); a newer one cancels it.
    current_stream: Option<(u64, CancellationToken)>,
    /// Numbers the streams of this data plane.
    streams_opened: u64,
    /// Cancelled when the data plane is revoked: ends every stream it has, and any stream that
    /// authenticated just before the revocation and opens just after it.
    revoked: CancellationToken,
    /// Its recent sync events on this node.
    events: events::EventRing,
}

/// An open stream's registration with [`DataPlanes`].
pub struct StreamSlot {
    number: u64,
    /// Cancelled when a newer stream opens for the same data plane.
    pub replaced: CancellationToken,
    /// Cancelled when the data plane is revoked.
    pub revoked: CancellationToken,
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
    /// Why the last update could not be applied (`sync_status = "apply_failed"`), else null.
    pub sync_error: Option<String>,
    /// The last answer that refused licenses, each with its reason (it stays after later
    /// updates are acknowledged; `at` says when), else null.
    pub last_rejection: Option<Rejection>,
    /// Control-plane revision the data plane last acknowledged.
    pub revision: Revision,
    pub license_id: Option<Uuid>,
    pub license_updated_at: Option<i64>,
    pub cert_expires_at: i64,
    /// From last contact, as of the request.
    pub health: Health,
    /// The id of the control-plane node holding its stream (this one or another on the same
    /// database), null when it has none.
    pub control_plane: Option<Uuid>,
}

/// Registered data planes and their live state.
pub struct DataPlanes {
    store: Arc<dyn Store>,
    live: Mutex<HashMap<Uuid, Live>>,
    records: Vec<tokio::sync::Mutex<()>>,
}

impl DataPlanes {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            live: Mutex::new(HashMap::new()),
            records: (0..RECORD_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock that serialises writes to data plane `id`'s record.
    async fn lock_record(&self, id: Uuid) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = (id.as_u128() % RECORD_LOCKS as u128) as usize;
        self.records[stripe].lock().await
    }

    fn live(&self) -> MutexGuard<'_, HashMap<Uuid, Live>> {
        // The map holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every registered, unrevoked data plane, ordered by id, with its health as of `now`
    /// (streams as this node sees them; see [`DataPlanes::list_held`]).
    pub async fn list(&self, now: i64) -> StoreResult<Vec<DataPlaneView>> {
        self.list_held(now, &HashMap::new()).await
    }

    /// [`DataPlanes::list`], where `holders` says which control-plane node holds each
    /// connected data plane's stream (the whole cluster's, from the nodes registry): such a
    /// data plane is connected, whichever node it is connected to.
    pub async fn list_held(
        &self,
        now: i64,
        holders: &HashMap<Uuid, Uuid>,
    ) -> StoreResult<Vec<DataPlaneView>> {
        let mut records = self.store.dataplanes().await?;
        records.retain(|r| !r.revoked);
        records.sort_by_key(|r| r.id);
        let live = self.live();
        Ok(records
            .into_iter()
            .map(|r| {
                let state = live.get(&r.id).cloned();
                let holder = holders.get(&r.id).copied();
                view(r, state, holder, now)
            })
            .collect())
    }

    /// Every registered, unrevoked data plane's stored record, unordered (for counting the
    /// fleet and walking its certificates).
    pub async fn unrevoked_records(&self) -> StoreResult<Vec<DataPlaneRecord>> {
        let mut records = self.store.dataplanes().await?;
        records.retain(|r| !r.revoked);
        Ok(records)
    }

    /// One registered, unrevoked data plane, with its health as of `now` (`holders` as for
    /// [`DataPlanes::list_held`]).
    pub async fn get(
        &self,
        id: Uuid,
        now: i64,
        holders: &HashMap<Uuid, Uuid>,
    ) -> StoreResult<Option<DataPlaneView>> {
        let record = self.store.dataplane(id).await?.filter(|r| !r.revoked);
        Ok(record.map(|r| {
            let state = self.live().get(&id).cloned();
            view(r, state, holders.get(&id).copied(), now)
        }))
    }

    /// Data plane `id`'s recent sync events on this node, newest first (see [`events`]).
    pub fn events(&self, id: Uuid) -> Vec<SyncEvent> {
        self.live()
            .get(&id)
            .map(|l| l.events.newest_first())
            .unwrap_or_default()
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
        entry.events.push(now, SyncEventKind::Connected);
        let slot = StreamSlot {
            number: entry.streams_opened,
            replaced: CancellationToken::new(),
            revoked: entry.revoked.clone(),
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
            entry.events.push(now, SyncEventKind::Disconnected);
            entry.license
        };
        self.update(id, |record| {
            record.last_seen = Some(now);
            if let Some((license_id, updated_at)) = license {
                record.license_id = Some(license_id);
                record.license_updated_at = Some(updated_at);
            }
        })
        .await?;
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
            entry.sync_error = None;
            entry.license = license;
            entry.last_seen = Some(now);
            entry.events.push(
                now,
                SyncEventKind::Acked {
                    revision,
                    license: license.map(|(id, _)| id),
                },
            );
        }
    }

    /// The data plane refused licenses of the update it answered (recorded after
    /// [`DataPlanes::synced`], which sets the status).
    pub fn rejected(&self, id: Uuid, rejection: Rejection) {
        if let Some(entry) = self.live().get_mut(&id) {
            entry.events.push(
                rejection.at,
                SyncEventKind::Rejected {
                    revision: rejection.revision,
                    count: rejection.rejected_total,
                    reason: rejection.reason.clone(),
                },
            );
            entry.last_rejection = Some(rejection);
        }
    }

    /// The data plane could not apply an update at all, for `reason`; what it holds is
    /// unchanged, and the update is sent again later.
    pub fn apply_failed(&self, id: Uuid, reason: String, now: i64) {
        if let Some(entry) = self.live().get_mut(&id) {
            entry.sync_status = SyncStatus::ApplyFailed;
            entry.events.push(
                now,
                SyncEventKind::ApplyFailed {
                    reason: reason.clone(),
                },
            );
            entry.sync_error = Some(reason);
            entry.last_seen = Some(now);
        }
    }

    /// Stores a new data plane's record (registration). Changes to an existing record go
    /// through [`DataPlanes::update`].
    pub async fn record(&self, record: &DataPlaneRecord) -> StoreResult<()> {
        let _lock = self.lock_record(record.id).await;
        self.store.put_dataplane(record).await
    }

    pub async fn find(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        self.store.dataplane(id).await
    }

    /// Reads data plane `id`'s record, lets `change` edit it and writes it back when it
    /// changed, all under the record's lock. `None` when the data plane is not registered;
    /// otherwise the record as it now stands and what `change` returned.
    pub async fn update<T>(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut DataPlaneRecord) -> T,
    ) -> StoreResult<Option<(DataPlaneRecord, T)>> {
        let _lock = self.lock_record(id).await;
        let Some(before) = self.store.dataplane(id).await? else {
            return Ok(None);
        };
        let mut record = before.clone();
        let out = change(&mut record);
        if record != before {
            self.store.put_dataplane(&record).await?;
        }
        Ok(Some((record, out)))
    }

    /// Revokes data plane `id` durably, then ends its open stream (and any that opens after
    /// authenticating just before this). `None` when it is unknown or already revoked.
    pub async fn revoke(&self, id: Uuid) -> StoreResult<Option<DataPlaneRecord>> {
        let outcome = self
            .update(id, |record| !std::mem::replace(&mut record.revoked, true))
            .await?;
        let Some((record, true)) = outcome else {
            return Ok(None);
        };
        self.live().entry(id).or_default().revoked.cancel();
        Ok(Some(record))
    }

    /// Another node revoked data plane `id` (or may have: a notification said so): when its
    /// stored record says revoked, ends any stream it has here, as [`DataPlanes::revoke`] does
    /// on the node that revoked it. `true` when it is revoked.
    pub async fn revoked_elsewhere(&self, id: Uuid) -> StoreResult<bool> {
        let revoked = self
            .store
            .dataplane(id)
            .await?
            .is_some_and(|record| record.revoked);
        if revoked {
            self.end_revoked(id);
        }
        Ok(revoked)
    }

    /// Ends the streams of every data plane connected here whose stored record says revoked
    /// (a revocation on another node whose notification this node missed); the ids ended.
    pub async fn enforce_revocations(&self) -> StoreResult<Vec<Uuid>> {
        let revoked = self.store.revoked_dataplanes().await?;
        let mut ended = Vec::new();
        let live = self.live();
        for id in revoked {
            if let Some(entry) = live.get(&id)
                && entry.connected
                && !entry.revoked.is_cancelled()
            {
                entry.revoked.cancel();
                ended.push(id);
            }
        }
        Ok(ended)
    }

    fn end_revoked(&self, id: Uuid) {
        let mut live = self.live();
        let entry = live.entry(id).or_default();
        if !entry.revoked.is_cancelled() {
            entry.revoked.cancel();
            tracing::info!(
                event = "dataplane.revoked_elsewhere",
                dataplane.id = %id,
                connected = entry.connected,
                "A data plane was revoked on another control-plane node; its stream here is ended."
            );
        }
    }

    /// The data planes whose stream this node holds.
    pub fn connected_ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self
            .live()
            .iter()
            .filter(|(_, l)| l.connected)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether data plane `id` has a stream open.
    pub fn is_connected(&self, id: Uuid) -> bool {
        self.live().get(&id).is_some_and(|l| l.connected)
    }

    /// Removes every data plane that is not connected and was last heard from (or, never
    /// connected, registered) more than `delay` seconds before `now`, counting only time since
    /// `running_since`; returns what it removed. The decision is [`purge::purge_due`], taken
    /// under the record's lock just before the removal.
    pub async fn purge(
        &self,
        running_since: i64,
        now: i64,
        delay: i64,
    ) -> StoreResult<Vec<DataPlaneRecord>> {
        let mut purged = Vec::new();
        for candidate in self.store.dataplanes().await? {
            let _lock = self.lock_record(candidate.id).await;
            let Some(record) = self.store.dataplane(candidate.id).await? else {
                continue;
            };
            let (connected, live_seen) = self
                .live()
                .get(&record.id)
                .map_or((false, None), |l| (l.connected, l.last_seen));
            let last_contact = live_seen.max(record.last_seen);
            let due = purge::purge_due(
                last_contact,
                record.registered_at,
                connected,
                running_since,
                now,
                delay,
            );
            if !due {
                continue;
            }
            if self.store.delete_dataplane(record.id).await? {
                let mut live = self.live();
                if live.get(&record.id).is_some_and(|l| !l.connected) {
                    live.remove(&record.id);
                }
                purged.push(record);
            }
        }
        Ok(purged)
    }
}

/// One listing row: the stored record joined with live state and the node holding its stream
/// (`holder`); health and the version rule are judged as of `now`. Pure, so every boundary is
/// testable.
fn view(
    record: DataPlaneRecord,
    live: Option<Live>,
    holder: Option<Uuid>,
    now: i64,
) -> DataPlaneView {
    let live = live.unwrap_or_default();
    // Before its first sync on this process, the last license written through is the best known.
    let license = if live.sync_status == SyncStatus::Unknown {
        record.license_id.zip(record.license_updated_at)
    } else {
        live.license
    };
    let last_seen = live.last_seen.or(record.last_seen);
    // The version rule holds from the last version the data plane reported, connected or not.
    let sync_status = if compat::check_current(&record.version).is_err() {
        SyncStatus::VersionIncompatible
    } else {
        live.sync_status
    };
    DataPlaneView {
        id: record.id,
        name: record.name,
        hostname: record.hostname,
        ip: record.ip,
        version: record.version,
        registered_at: record.registered_at,
        last_seen,
        connected: live.connected || holder.is_some(),
        sync_status,
        sync_error: live.sync_error,
        last_rejection: live.last_rejection,
        revision: live.revision,
        license_id: license.map(|l| l.0),
        license_updated_at: license.map(|l| l.1),
        cert_expires_at: record.cert_expires_at,
        health: health::health(last_seen, now),
        control_plane: holder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DataPlaneStore, MemoryStore};

    fn record(version: &str) -> DataPlaneRecord {
        DataPlaneRecord {
            id: Uuid::new_v4(),
            name: "edge-1".into(),
            hostname: "edge-1".into(),
            ip: "127.0.0.1".into(),
            version: version.into(),
            registered_at: 1_000,
            cert_serial: "01".into(),
            previous_cert_serial: None,
            retired_cert_serials: Vec::new(),
            cert_expires_at: 9_000,
            last_seen: Some(2_000),
            license_id: None,
            license_updated_at: None,
            revoked: false,
        }
    }

    #[test]
    fn view_grades_health_from_the_freshest_contact_as_of_now() {
        let r = record(licsync_common::VERSION);
        assert_eq!(view(r.clone(), None, None, 2_060).health, Health::Healthy);
        assert_eq!(view(r.clone(), None, None, 2_061).health, Health::Degraded);
        assert_eq!(view(r.clone(), None, None, 2_180).health, Health::Degraded);
        assert_eq!(view(r.clone(), None, None, 2_181).health, Health::Unhealthy);
        let heartbeat = Live {
            last_seen: Some(2_170),
            connected: true,
            ..Live::default()
        };
        let fresh = view(r.clone(), Some(heartbeat), None, 2_181);
        assert_eq!(
            (fresh.health, fresh.last_seen),
            (Health::Healthy, Some(2_170))
        );
        let never = DataPlaneRecord {
            last_seen: None,
            ..r
        };
        assert_eq!(view(never, None, None, 2_000).health, Health::Uninitialized);
    }

    #[test]
    fn view_applies_the_version_rule_whatever_the_live_status() {
        let normal = Live {
            sync_status: SyncStatus::Normal,
            ..Live::default()
        };
        let ok = view(
            record(licsync_common::VERSION),
            Some(normal.clone()),
            None,
            0,
        );
        assert_eq!(ok.sync_status, SyncStatus::Normal);
        let newer = view(record("99.0.0"), Some(normal), None, 0);
        assert_eq!(newer.sync_status, SyncStatus::VersionIncompatible);
        assert_eq!(
            serde_json::to_value(newer.sync_status).unwrap(),
            "version_incompatible"
        );
    }

    /// Another node revoked a data plane whose stream this node holds: the notification (or,
    /// had it been missed, the poll) ends the stream here.
    #[tokio::test]
    async fn a_revocation_stored_by_another_node_ends_the_stream_here() {
        let store = Arc::new(MemoryStore::new());
        let here = DataPlanes::new(store.clone());
        let (kept, gone) = (
            record(licsync_common::VERSION),
            record(licsync_common::VERSION),
        );
        for r in [&kept, &gone] {
            here.record(r).await.unwrap();
        }
        let (kept_slot, _) = here.stream_opened(kept.id, 2_000);
        let (gone_slot, _) = here.stream_opened(gone.id, 2_000);
        assert!(here.enforce_revocations().await.unwrap().is_empty());
        assert!(!here.revoked_elsewhere(gone.id).await.unwrap());

        // The other node's write, straight to the shared store.
        let elsewhere = DataPlanes::new(store.clone());
        elsewhere.revoke(gone.id).await.unwrap().unwrap();
        assert!(!gone_slot.revoked.is_cancelled(), "not known here yet");
        assert_eq!(here.enforce_revocations().await.unwrap(), vec![gone.id]);
        assert!(gone_slot.revoked.is_cancelled());
        assert!(!kept_slot.revoked.is_cancelled());
        assert!(here.enforce_revocations().await.unwrap().is_empty(), "once");
        assert!(here.revoked_elsewhere(gone.id).await.unwrap());
    }

    #[tokio::test]
    async fn revoking_ends_open_and_late_streams_and_hides_the_data_plane() {
        let store = Arc::new(MemoryStore::new());
        let fleet = DataPlanes::new(store.clone());
        let r = record(licsync_common::VERSION);
        fleet.record(&r).await.unwrap();
        let (open, _) = fleet.stream_opened(r.id, 2_000);
        assert!(!open.revoked.is_cancelled());

        let revoked = fleet.revoke(r.id).await.unwrap().unwrap();
        assert!(revoked.revoked);
        assert!(open.revoked.is_cancelled(), "the open stream is ended");
        let (late, _) = fleet.stream_opened(r.id, 2_001);
        assert!(
            late.revoked.is_cancelled(),
            "a stream opening afterwards too"
        );
        assert!(store.dataplane(r.id).await.unwrap().unwrap().revoked);
        assert!(
            fleet.revoke(r.id).await.unwrap().is_none(),
            "already revoked"
        );
        assert!(fleet.revoke(Uuid::new_v4()).await.unwrap().is_none());
        assert!(fleet.list(2_000).await.unwrap().is_empty());
        assert!(
            fleet
                .get(r.id, 2_000, &HashMap::new())
                .await
                .unwrap()
                .is_none()
        );

        // Closing the stream afterwards records last contact without un-revoking.
        fleet.stream_closed(r.id, &open, 2_002).await.unwrap();
        let stored = store.dataplane(r.id).await.unwrap().unwrap();
        assert!(stored.revoked);
        assert_eq!(stored.last_seen, Some(2_002));
    }

    #[tokio::test]
    async fn purge_spares_connected_and_recent_data_planes() {
        let store = Arc::new(MemoryStore::new());
        let fleet = DataPlanes::new(store.clone());
        let silent = record(licsync_common::VERSION);
        let connected = record(licsync_common::VERSION);
        let recent = DataPlaneRecord {
            last_seen: Some(9_950),
            ..record(licsync_common::VERSION)
        };
        for r in [&silent, &connected, &recent] {
            fleet.record(r).await.unwrap();
        }
        fleet.stream_opened(connected.id, 2_000);
        // Live contact at 2_000 is older than the delay too: connected is what spares it.
        let purged = fleet.purge(0, 10_000, 100).await.unwrap();
        assert_eq!(purged.iter().map(|r| r.id).collect::<Vec<_>>(), [silent.id]);
        assert!(store.dataplane(silent.id).await.unwrap().is_none());
        assert!(store.dataplane(connected.id).await.unwrap().is_some());
        assert!(store.dataplane(recent.id).await.unwrap().is_some());
    }
}
