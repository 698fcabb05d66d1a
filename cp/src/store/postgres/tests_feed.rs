//! What the PostgreSQL backend does for several nodes writing licenses: a batch decided at an
//! older revision is refused whole; what changed since a revision (tombstones included) is read
//! back; commits and revocations are notified to listeners.

use uuid::Uuid;

use super::PostgresStore;
use crate::model::StoredLicense;
use crate::store::postgres::Notice;
use crate::store::{DataPlaneStore, LicenseChange, LicenseStore, StoreError};
use licsync_testkit::postgres::fresh_database;

fn license(revision: u64, signature: &str) -> StoredLicense {
    StoredLicense {
        id: Uuid::new_v4(),
        document: format!("doc {signature}"),
        signature: signature.into(),
        created_at: 10,
        updated_at: 10,
        revision,
    }
}

#[tokio::test]
async fn a_batch_decided_at_an_older_revision_is_refused_whole() {
    let url = fresh_database().await;
    let a = PostgresStore::open(&url, None, 2).await.unwrap();
    let b = PostgresStore::open(&url, None, 2).await.unwrap();
    let first = license(1, "a");
    a.apply_license_batch(&[LicenseChange::Put(first.clone())])
        .await
        .unwrap();
    // b decided its batch at revision 0, before a's write.
    let stale = [
        LicenseChange::Put(license(1, "b")),
        LicenseChange::Put(license(2, "c")),
    ];
    match b.apply_license_batch(&stale).await {
        Err(StoreError::Conflict {
            expected: 0,
            found: 1,
        }) => {}
        other => panic!("expected a conflict at revision 1, got {other:?}"),
    }
    let rows = b.licenses().await.unwrap();
    assert_eq!((rows.revision, rows.licenses), (1, vec![first]));
    // Decided again at revision 1, it is stored.
    let again = [
        LicenseChange::Put(license(2, "b")),
        LicenseChange::Put(license(3, "c")),
    ];
    b.apply_license_batch(&again).await.unwrap();
    assert_eq!(a.licenses().await.unwrap().revision, 3);
}

#[tokio::test]
async fn changes_since_a_revision_include_deletions_and_are_notified() {
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None, 2).await.unwrap();
    let mut listener = store.listen().await.unwrap();
    let (a, b) = (license(1, "a"), license(2, "b"));
    store
        .apply_license_batch(&[LicenseChange::Put(a.clone()), LicenseChange::Put(b.clone())])
        .await
        .unwrap();
    assert_eq!(
        listener.next().await,
        Some(Notice::Licenses { revision: 2 })
    );
    let deleted = [LicenseChange::Delete {
        id: a.id,
        revision: 3,
    }];
    store.apply_license_batch(&deleted).await.unwrap();
    assert_eq!(
        listener.next().await,
        Some(Notice::Licenses { revision: 3 })
    );

    let since_1 = store.license_changes_since(1).await.unwrap();
    assert_eq!(since_1.revision, 3);
    assert_eq!(since_1.upserted, vec![b.clone()]);
    assert_eq!(since_1.deleted, vec![a.id]);
    assert!(!since_1.complete);
    let since_3 = store.license_changes_since(3).await.unwrap();
    assert!(since_3.upserted.is_empty() && since_3.deleted.is_empty());

    // Stored again under the same id: both the tombstone and the row are newer than 2.
    let back = StoredLicense {
        revision: 4,
        ..a.clone()
    };
    store
        .apply_license_batch(&[LicenseChange::Put(back.clone())])
        .await
        .unwrap();
    let since_2 = store.license_changes_since(2).await.unwrap();
    assert_eq!(
        (since_2.upserted, since_2.deleted),
        (vec![back], vec![a.id])
    );
    assert_eq!(
        listener.next().await,
        Some(Notice::Licenses { revision: 4 })
    );

    // A revocation is notified; other data-plane writes are not.
    let mut record = crate::model::DataPlaneRecord {
        id: Uuid::new_v4(),
        name: "edge".into(),
        hostname: "edge".into(),
        ip: "127.0.0.1".into(),
        version: licsync_common::VERSION.into(),
        registered_at: 1,
        cert_serial: "01".into(),
        previous_cert_serial: None,
        retired_cert_serials: Vec::new(),
        cert_expires_at: 2,
        last_seen: None,
        license_id: None,
        license_updated_at: None,
        revoked: false,
    };
    store.put_dataplane(&record).await.unwrap();
    assert!(store.revoked_dataplanes().await.unwrap().is_empty());
    record.revoked = true;
    store.put_dataplane(&record).await.unwrap();
    assert_eq!(listener.next().await, Some(Notice::Revoked(record.id)));
    assert_eq!(store.revoked_dataplanes().await.unwrap(), vec![record.id]);
}

#[tokio::test]
async fn a_reader_behind_pruned_tombstones_gets_the_whole_set() {
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None, 2).await.unwrap();
    let (a, b) = (license(1, "a"), license(2, "b"));
    store
        .apply_license_batch(&[LicenseChange::Put(a.clone()), LicenseChange::Put(b.clone())])
        .await
        .unwrap();
    let delete_a = [LicenseChange::Delete {
        id: a.id,
        revision: 3,
    }];
    store.apply_license_batch(&delete_a).await.unwrap();

    // Nothing is old enough yet: the tombstone stays and readers get deltas.
    let now = licsync_common::unix_now();
    assert_eq!(store.prune_tombstones(now - 60).await.unwrap(), 0);
    assert_eq!(
        store.license_changes_since(2).await.unwrap().deleted,
        vec![a.id]
    );

    // Pruned: a reader at revision 2 (before the deletion) can no longer be told of it by
    // tombstone, so it gets the whole set, which lacks `a`.
    assert_eq!(store.prune_tombstones(now + 60).await.unwrap(), 1);
    let behind = store.license_changes_since(2).await.unwrap();
    assert!(behind.complete, "{behind:?}");
    assert_eq!((behind.revision, behind.upserted), (3, vec![b.clone()]));

    // A reader at the horizon or past it still gets exact deltas, later deletions included.
    let at_horizon = store.license_changes_since(3).await.unwrap();
    assert!(!at_horizon.complete && at_horizon.upserted.is_empty());
    let delete_b = [LicenseChange::Delete {
        id: b.id,
        revision: 4,
    }];
    store.apply_license_batch(&delete_b).await.unwrap();
    let after = store.license_changes_since(3).await.unwrap();
    assert_eq!((after.complete, after.deleted), (false, vec![b.id]));
    // Pruning again moves the horizon forward, never back.
    assert_eq!(store.prune_tombstones(now + 60).await.unwrap(), 1);
    assert!(store.license_changes_since(3).await.unwrap().complete);
    assert!(!store.license_changes_since(4).await.unwrap().complete);
}

#[tokio::test]
async fn a_pipelined_batch_applies_its_changes_in_order() {
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None, 2).await.unwrap();
    // Past 30 changes the pipelined statements are joined differently; the order must hold
    // either way. One id is stored, deleted and stored again over and over; the last wins.
    let id = Uuid::new_v4();
    let mut changes = Vec::new();
    for revision in 1..=41u64 {
        changes.push(if revision % 2 == 1 {
            LicenseChange::Put(StoredLicense {
                id,
                ..license(revision, &format!("s{revision}"))
            })
        } else {
            LicenseChange::Delete { id, revision }
        });
    }
    store.apply_license_batch(&changes).await.unwrap();
    let rows = store.licenses().await.unwrap();
    assert_eq!(rows.revision, 41);
    assert_eq!(rows.licenses.len(), 1);
    assert_eq!(rows.licenses[0].signature, "s41");
    // Ending on a deletion leaves nothing, and a tombstone.
    let delete = [LicenseChange::Delete { id, revision: 42 }];
    store.apply_license_batch(&delete).await.unwrap();
    assert!(store.licenses().await.unwrap().licenses.is_empty());
    assert_eq!(
        store.license_changes_since(41).await.unwrap().deleted,
        vec![id]
    );
}
