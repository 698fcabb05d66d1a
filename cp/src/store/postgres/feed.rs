//! The change feed several nodes follow: every license commit records its deletions as
//! tombstones and sends `NOTIFY licsync_changes, 'license:<revision>'`, every revocation
//! `'revoked:<id>'`, both delivered by PostgreSQL when (and only if) the transaction commits.
//! A node LISTENs on a connection of its own, outside the pool ([`PostgresStore::listen`]),
//! and reads what changed since the revision it holds ([`changes_since`]). Notifications only
//! say "look now": a node that misses some (its connection dropped) loses nothing, since it
//! reads by revision and polls as well.

use deadpool_postgres::Transaction;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use uuid::Uuid;

use super::{PostgresStore, db, signed, with_causes};
use crate::model::Revision;
use crate::store::{LicenseChanges, LicenseRows, StoreError, StoreResult};

/// The channel every licsync node listens on.
pub const CHANNEL: &str = "licsync_changes";

/// Notifications waiting to be read before the connection's reader waits for the node.
const BACKLOG: usize = 256;

/// What a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Licenses were committed up to `revision`.
    Licenses { revision: Revision },
    /// Data plane `id` was revoked.
    Revoked(Uuid),
    /// The notification connection ended, for this reason; nothing more comes on it.
    Closed(String),
}

impl Notice {
    /// Parses a payload this module sent; `None` for anything else (a newer node's kind).
    fn parse(payload: &str) -> Option<Self> {
        let (kind, value) = payload.split_once(':')?;
        match kind {
            "license" => value
                .parse()
                .ok()
                .map(|revision| Self::Licenses { revision }),
            "revoked" => Uuid::parse_str(value).ok().map(Self::Revoked),
            _ => None,
        }
    }
}

/// Sends the license notification for `revision` in `tx` (delivered at its commit).
pub(super) async fn notify_licenses(tx: &Transaction<'_>, revision: Revision) -> StoreResult<()> {
    let payload = format!("license:{revision}");
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(db)?;
    Ok(())
}

/// Sends the revocation notification for data plane `id` in `tx`.
pub(super) async fn notify_revoked(tx: &Transaction<'_>, id: Uuid) -> StoreResult<()> {
    let payload = format!("revoked:{id}");
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(db)?;
    Ok(())
}

/// Records that license `id` was deleted at `revision` in `tx`.
pub(super) async fn tombstone(
    tx: &Transaction<'_>,
    id: Uuid,
    revision: Revision,
) -> StoreResult<()> {
    let revision = signed(revision, "license revision")?;
    tx.execute(
        "INSERT INTO license_tombstones (id, revision) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE
         SET revision = EXCLUDED.revision, deleted_at = EXCLUDED.deleted_at",
        &[&id, &revision],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// What changed after `since`, from one snapshot. A deleted id stored again later shows up in
/// both lists; applying deletions first, then upserts, gives the stored set. A reader further
/// behind than the pruned tombstones ([`PostgresStore::prune_tombstones`]) gets the whole set instead, marked
/// complete, since a deletion it never saw may no longer be recorded.
pub(super) async fn changes_since(
    store: &PostgresStore,
    since: Revision,
) -> StoreResult<LicenseChanges> {
    let since_value = signed(since, "license revision")?;
    let mut client = store.client().await?;
    let (tx, revision) = super::licenses::snapshot(&mut client).await?;
    let pruned_through: i64 = tx
        .query_opt(
            "SELECT value FROM cp_meta WHERE key = $1",
            &[&PRUNED_THROUGH],
        )
        .await
        .map_err(db)?
        .map_or(0, |row| row.get(0));
    if since_value < pruned_through {
        let licenses = super::licenses::all(&tx).await?;
        tx.commit().await.map_err(db)?;
        return Ok(LicenseChanges::complete(LicenseRows { revision, licenses }));
    }
    let upserted = tx
        .query(
            "SELECT id, document, signature, created_at, updated_at, revision
             FROM licenses WHERE revision > $1 ORDER BY revision",
            &[&since_value],
        )
        .await
        .map_err(db)?
        .iter()
        .map(super::licenses::license)
        .collect::<StoreResult<_>>()?;
    let deleted = tx
        .query(
            "SELECT id FROM license_tombstones WHERE revision > $1",
            &[&since_value],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    tx.commit().await.map_err(db)?;
    Ok(LicenseChanges {
        revision,
        upserted,
        deleted,
        complete: false,
    })
}

/// The `cp_meta` row holding the newest revision whose tombstone may have been pruned.
const PRUNED_THROUGH: &str = "tombstones_pruned_through";

impl PostgresStore {
    /// Deletes the tombstones recorded before `before` (unix seconds) and moves the horizon past
    /// them, in one transaction, so a reader's snapshot sees either both or neither. Returns how
    /// many were deleted. Any node may run it, at any time: two at once only delete less each.
    pub async fn prune_tombstones(&self, before: i64) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .query_one(
                "WITH pruned AS (
                     DELETE FROM license_tombstones WHERE deleted_at < $1 RETURNING revision
                 ), horizon AS (
                     UPDATE cp_meta SET value = GREATEST(value, (SELECT MAX(revision) FROM pruned))
                     WHERE key = $2 AND EXISTS (SELECT 1 FROM pruned)
                 )
                 SELECT COUNT(*) FROM pruned",
                &[&before, &PRUNED_THROUGH],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let pruned: i64 = row.get(0);
        Ok(pruned.unsigned_abs())
    }
}

/// A `LISTEN` on a connection of its own; dropping it closes the connection.
pub struct Notifications {
    notices: mpsc::Receiver<Notice>,
    /// Kept open: the server ends the session when the client goes.
    _client: Client,
}

impl Notifications {
    /// The next notice; [`Notice::Closed`] (or `None`) once the connection is gone.
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }

    /// A notice already received, without waiting (to coalesce a burst).
    pub fn try_next(&mut self) -> Option<Notice> {
        self.notices.try_recv().ok()
    }
}

impl PostgresStore {
    /// Opens a dedicated connection (not pooled: a pooled one would be recycled, and other
    /// queries on it would not see notifications while busy) and listens on [`CHANNEL`].
    pub async fn listen(&self) -> StoreResult<Notifications> {
        let (tx, notices) = mpsc::channel(BACKLOG);
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(db)?;
                tokio::spawn(forward(connection, tx));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(db)?;
                tokio::spawn(forward(connection, tx));
                client
            }
        };
        // The last statement on this session: `pg_stat_activity.query` shows it.
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| StoreError::Backend(format!("cannot LISTEN: {}", with_causes(&e))))?;
        Ok(Notifications {
            notices,
            _client: client,
        })
    }
}

/// Drives the notification connection, passing on what it receives, until it ends (then
/// says why) or the listener is dropped.
async fn forward<S, T>(mut connection: Connection<S, T>, tx: mpsc::Sender<Notice>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let reason = loop {
        match messages.next().await {
            Some(Ok(AsyncMessage::Notification(note))) => {
                if let Some(notice) = Notice::parse(note.payload())
                    && tx.send(notice).await.is_err()
                {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => break with_causes(&error),
            None => break "the server closed the connection".to_owned(),
        }
    };
    let _ = tx.send(Notice::Closed(reason)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_strictly() {
        assert_eq!(
            Notice::parse("license:42"),
            Some(Notice::Licenses { revision: 42 })
        );
        let id = Uuid::new_v4();
        assert_eq!(
            Notice::parse(&format!("revoked:{id}")),
            Some(Notice::Revoked(id))
        );
        for other in [
            "license:-1",
            "license:",
            "revoked:nope",
            "future:1",
            "license",
        ] {
            assert_eq!(Notice::parse(other), None, "{other}");
        }
    }
}
