//! The change feed follower: one task per node with the postgres backend.
//!
//! It reacts to three things. A notification on its `LISTEN` connection: licenses committed
//! elsewhere are published through the license service's writer (in turn with this node's
//! writes, so revisions stay ordered), a revocation ends the data plane's stream here. The
//! poll tick (`storage.postgres.poll_interval`): the same catch-up, a check of the streams held
//! here against stored revocations, and this node's heartbeat in the registry; this is what
//! makes a dropped notification connection harmless. And that connection's loss: it is opened
//! again with backoff (meanwhile the poll goes on), and on reconnecting the node catches up
//! at once. Once an hour the poll also prunes license tombstones older than a day, so the feed
//! does not grow with every license ever deleted; a node further behind than that (down for a
//! day) reads the whole set instead and loses nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::state::ControlPlane;
use crate::store::postgres::{Notice, Notifications, PostgresStore};

/// First wait before reopening a lost notification connection; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often a node prunes tombstones, and how old a tombstone must be to go.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const TOMBSTONE_RETENTION_SECS: i64 = 24 * 3600;

/// Follows the other nodes until `shutdown`.
pub async fn run(
    cp: Arc<ControlPlane>,
    store: Arc<PostgresStore>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut notifications: Option<Notifications> = None;
    let mut backoff = MIN_BACKOFF;
    let mut reconnect_at = Instant::now();
    let mut prune_at = Instant::now() + PRUNE_EVERY;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Err(error) = cp.nodes().leave().await {
                    tracing::warn!(event = "cluster_feed.heartbeat_failed", %error, "Could not remove this node from the nodes registry; the others will show it gone after three poll intervals.");
                }
                return;
            }
            _ = poll.tick() => {
                // While storage does not answer (logged once, `storage.unavailable`), a poll
                // could only fail and say so every interval; the first poll after storage
                // answers again catches up.
                if cp.storage_health().unavailable().is_some() {
                    continue;
                }
                catch_up(&cp).await;
                enforce_revocations(&cp).await;
                if let Err(error) = cp.nodes().heartbeat(licsync_common::unix_now()).await {
                    tracing::warn!(event = "cluster_feed.heartbeat_failed", %error, "Could not record this node's heartbeat.");
                }
                if Instant::now() >= prune_at {
                    prune_at = Instant::now() + PRUNE_EVERY;
                    prune(&store).await;
                }
            }
            notice = next(&mut notifications) => {
                match notice {
                    Notice::Closed(reason) => {
                        tracing::warn!(
                            event = "cluster_feed.lost",
                            reason = ?reason,
                            retry_in_ms = backoff.as_millis() as u64,
                            "Lost the change notification connection; polling until it is back."
                        );
                        notifications = None;
                        reconnect_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    first => {
                        let mut licenses = false;
                        let mut notices = vec![first];
                        // A burst of commits needs one catch-up.
                        if let Some(open) = notifications.as_mut() {
                            while let Some(more) = open.try_next() {
                                notices.push(more);
                            }
                        }
                        for notice in notices {
                            match notice {
                                Notice::Licenses { .. } => licenses = true,
                                Notice::Revoked(id) => revoked(&cp, id).await,
                                Notice::Closed(_) => {
                                    // Seen again on the next turn: the receiver stays closed.
                                }
                            }
                        }
                        if licenses {
                            catch_up(&cp).await;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(reconnect_at), if notifications.is_none() => {
                match store.listen().await {
                    Ok(open) => {
                        tracing::info!(event = "cluster_feed.connected", "Listening for changes other control-plane nodes make.");
                        notifications = Some(open);
                        backoff = MIN_BACKOFF;
                        // Whatever was committed while nobody listened.
                        catch_up(&cp).await;
                        enforce_revocations(&cp).await;
                    }
                    Err(error) => {
                        tracing::warn!(
                            event = "cluster_feed.connect_failed",
                            %error,
                            retry_in_ms = backoff.as_millis() as u64,
                            "Cannot open the change notification connection; polling meanwhile."
                        );
                        reconnect_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}

/// The next notice, or never while there is no connection.
async fn next(notifications: &mut Option<Notifications>) -> Notice {
    match notifications {
        Some(open) => open
            .next()
            .await
            .unwrap_or_else(|| Notice::Closed("the connection's reader stopped".into())),
        None => std::future::pending().await,
    }
}

async fn prune(store: &PostgresStore) {
    let before = licsync_common::unix_now().saturating_sub(TOMBSTONE_RETENTION_SECS);
    match store.prune_tombstones(before).await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(
            event = "cluster_feed.pruned",
            pruned,
            "Pruned license tombstones older than a day."
        ),
        Err(error) => tracing::warn!(
            event = "cluster_feed.prune_failed",
            %error,
            "Could not prune old license tombstones; trying again in an hour."
        ),
    }
}

async fn catch_up(cp: &ControlPlane) {
    if let Err(error) = cp.licenses().catch_up().await {
        tracing::warn!(event = "cluster_feed.catch_up_failed", %error, "Could not read what other control-plane nodes changed; trying again at the next poll.");
    }
}

async fn revoked(cp: &ControlPlane, id: uuid::Uuid) {
    if let Err(error) = cp.dataplanes().revoked_elsewhere(id).await {
        tracing::warn!(event = "cluster_feed.catch_up_failed", dataplane.id = %id, %error, "Could not read a data plane revoked on another node; checking again at the next poll.");
    }
}

async fn enforce_revocations(cp: &ControlPlane) {
    match cp.dataplanes().enforce_revocations().await {
        Ok(ended) => {
            for id in ended {
                tracing::info!(
                    event = "dataplane.revoked_elsewhere",
                    dataplane.id = %id,
                    "A data plane connected here was revoked on another control-plane node; its stream is ended."
                );
            }
        }
        Err(error) => {
            tracing::warn!(event = "cluster_feed.catch_up_failed", %error, "Could not check connected data planes against revocations.");
        }
    }
}
