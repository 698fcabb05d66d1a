//! Licenses and the revision counter, changed together in one transaction.

use async_trait::async_trait;
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;
use uuid::Uuid;

use super::feed::{self, notify_licenses, tombstone};
use super::{PostgresStore, db, signed, unsigned};
use crate::model::{Revision, StoredLicense};
use crate::store::{
    LicenseChange, LicenseChanges, LicenseRows, LicenseStore, StoreError, StoreResult,
};

/// The `cp_meta` key holding the revision.
const REVISION: &str = "revision";

const UPSERT: &str =
    "INSERT INTO licenses (id, document, signature, created_at, updated_at, revision)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document,
         signature = EXCLUDED.signature, created_at = EXCLUDED.created_at,
         updated_at = EXCLUDED.updated_at, revision = EXCLUDED.revision";

const SET_REVISION: &str = "INSERT INTO cp_meta (key, value) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

pub(super) fn license(row: &Row) -> StoreResult<StoredLicense> {
    Ok(StoredLicense {
        id: row.get("id"),
        document: row.get("document"),
        signature: row.get("signature"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        revision: unsigned(row.get("revision"), "licenses.revision")?,
    })
}

/// A read-only repeatable-read transaction (one snapshot for the revision and the rows read
/// after it) and the revision stored in it.
pub(super) async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> StoreResult<(deadpool_postgres::Transaction<'_>, Revision)> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    let revision = match tx
        .query_opt("SELECT value FROM cp_meta WHERE key = $1", &[&REVISION])
        .await
        .map_err(db)?
    {
        Some(row) => unsigned(row.get(0), "cp_meta.revision")?,
        None => 0,
    };
    Ok((tx, revision))
}

/// Every stored license, ordered by id, as `tx` sees them.
pub(super) async fn all(
    tx: &deadpool_postgres::Transaction<'_>,
) -> StoreResult<Vec<StoredLicense>> {
    tx.query(
        "SELECT id, document, signature, created_at, updated_at, revision
         FROM licenses ORDER BY id",
        &[],
    )
    .await
    .map_err(db)?
    .iter()
    .map(license)
    .collect()
}

#[async_trait]
impl LicenseStore for PostgresStore {
    async fn licenses(&self) -> StoreResult<LicenseRows> {
        let mut client = self.client().await?;
        // One snapshot for the revision and the rows.
        let (tx, revision) = snapshot(&mut client).await?;
        let licenses = all(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(LicenseRows { revision, licenses })
    }

    async fn put_license(&self, license: &StoredLicense) -> StoreResult<()> {
        let revision = signed(license.revision, "license revision")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            UPSERT,
            &[
                &license.id,
                &license.document,
                &license.signature,
                &license.created_at,
                &license.updated_at,
                &revision,
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(SET_REVISION, &[&REVISION, &revision])
            .await
            .map_err(db)?;
        notify_licenses(&tx, license.revision).await?;
        tx.commit().await.map_err(db)
    }

    async fn delete_license(&self, id: Uuid, deleted_at: Revision) -> StoreResult<bool> {
        let revision = signed(deleted_at, "license revision")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let existed = tx
            .execute("DELETE FROM licenses WHERE id = $1", &[&id])
            .await
            .map_err(db)?
            == 1;
        if existed {
            tx.execute(SET_REVISION, &[&REVISION, &revision])
                .await
                .map_err(db)?;
            tombstone(&tx, id, deleted_at).await?;
            notify_licenses(&tx, deleted_at).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(existed)
    }

    /// One transaction for the whole batch: a `201` for each of its writes is sent only after
    /// this commit, and a failed commit leaves none of them.
    ///
    /// Several nodes write here, each numbering its batches from the set it holds. The
    /// revision row is locked first (`FOR UPDATE`): a second node's batch waits for the first
    /// to commit, then finds the revision moved and is refused with
    /// [`StoreError::Conflict`] before writing anything, so two nodes' writes never share a
    /// revision and each node's uniqueness check was made against everything committed.
    async fn apply_license_batch(&self, changes: &[LicenseChange]) -> StoreResult<()> {
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return Ok(());
        };
        let base = first.revision().saturating_sub(1);
        let revision = signed(last.revision(), "license revision")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let stored: Revision = match tx
            .query_opt(
                "SELECT value FROM cp_meta WHERE key = $1 FOR UPDATE",
                &[&REVISION],
            )
            .await
            .map_err(db)?
        {
            Some(row) => unsigned(row.get(0), "cp_meta.revision")?,
            None => 0,
        };
        if stored != base {
            tx.rollback().await.map_err(db)?;
            return Err(StoreError::Conflict {
                expected: base,
                found: stored,
            });
        }
        let upsert = tx.prepare(UPSERT).await.map_err(db)?;
        let delete = tx
            .prepare("DELETE FROM licenses WHERE id = $1")
            .await
            .map_err(db)?;
        // Pipelined: every statement is sent before the first answer is awaited (one round
        // trip for the batch instead of one per license). The server runs them in the order
        // sent, which is the batch's order, since the futures are polled first in that order.
        let mut revisions = Vec::with_capacity(changes.len());
        for change in changes {
            revisions.push(signed(change.revision(), "license revision")?);
        }
        let mut statements: Vec<futures::future::BoxFuture<'_, StoreResult<()>>> =
            Vec::with_capacity(changes.len() * 2);
        for (change, row_revision) in changes.iter().zip(&revisions) {
            match change {
                LicenseChange::Put(license) => {
                    let (tx, upsert) = (&tx, &upsert);
                    statements.push(Box::pin(async move {
                        tx.execute(
                            upsert,
                            &[
                                &license.id,
                                &license.document,
                                &license.signature,
                                &license.created_at,
                                &license.updated_at,
                                row_revision,
                            ],
                        )
                        .await
                        .map(drop)
                        .map_err(db)
                    }));
                }
                LicenseChange::Delete { id, revision } => {
                    let (tx, delete) = (&tx, &delete);
                    statements.push(Box::pin(async move {
                        tx.execute(delete, &[id]).await.map(drop).map_err(db)
                    }));
                    statements.push(Box::pin(tombstone(tx, *id, *revision)));
                }
            }
        }
        futures::future::try_join_all(statements).await?;
        tx.execute(SET_REVISION, &[&REVISION, &revision])
            .await
            .map_err(db)?;
        notify_licenses(&tx, last.revision()).await?;
        tx.commit().await.map_err(db)
    }

    /// From the license rows and tombstones written after `revision` (both indexed by it).
    async fn license_changes_since(&self, revision: Revision) -> StoreResult<LicenseChanges> {
        feed::changes_since(self, revision).await
    }
}
