//! What the PostgreSQL backend does for several nodes writing licenses: a batch decided at an
//! older revision is refused whole.

use uuid::Uuid;

use super::PostgresStore;
use crate::model::StoredLicense;
use crate::store::{LicenseChange, LicenseStore, StoreError};
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
