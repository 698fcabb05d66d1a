//! The promises every backend keeps, run against each of them: licenses and the revision move
//! together, a token's uses are counted atomically, a taken username or client id is refused
//! atomically and lookups are exact, and usage counters keep the maximum ever reported; against memory, sled and PostgreSQL. Plus
//! that sled keeps principals across a reopen, and that a batch of license writes is applied in
//! order, all at once, with the revision of its last change. (Renewals update the record through
//! `DataPlanes::update`, tested there.)

use uuid::Uuid;

use super::{
    AuditRecord, LicenseChange, LicenseStore, MemoryStore, PostgresStore, PrincipalStore,
    SledStore, Store, UsageMonth, UsageRow, UsageSubmission,
};
use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, Revision, Role, Scope,
    StoredLicense, TokenRefusal, User,
};

/// Every conformance check, in turn, against one empty store.
pub(crate) async fn exercise(store: &dyn Store) {
    exercise_records(store).await;
    exercise_principals(store).await;
    exercise_usage(store).await;
    exercise_audit(store).await;
}

fn license(revision: Revision) -> StoredLicense {
    StoredLicense {
        id: Uuid::new_v4(),
        document: "{}".into(),
        signature: format!("{revision:0128x}"),
        created_at: 1,
        updated_at: 2,
        revision,
    }
}

fn token(max_uses: u32, expires_at: i64) -> RegistrationToken {
    RegistrationToken {
        id: Uuid::new_v4(),
        name: "edge".into(),
        token_hash: Uuid::new_v4().to_string(),
        created_at: 0,
        expires_at,
        max_uses,
        uses: 0,
    }
}

/// Licenses and their revision, registration tokens and data planes.
async fn exercise_records(store: &dyn Store) {
    let a = license(1);
    let b = license(2);
    store.put_license(&a).await.unwrap();
    store.put_license(&b).await.unwrap();
    assert!(store.delete_license(a.id, 3).await.unwrap());
    assert!(!store.delete_license(a.id, 4).await.unwrap());
    let rows = store.licenses().await.unwrap();
    assert_eq!(
        rows.revision, 3,
        "a delete of an unknown id leaves the revision"
    );
    assert_eq!(rows.licenses, vec![b]);

    let t = token(1, 100);
    store.insert_registration_token(&t).await.unwrap();
    assert_eq!(
        store
            .consume_registration_token(&t.token_hash, 10)
            .await
            .unwrap()
            .unwrap()
            .uses,
        1
    );
    assert_eq!(
        store
            .consume_registration_token(&t.token_hash, 10)
            .await
            .unwrap(),
        Err(TokenRefusal::UsedUp {
            uses: 1,
            max_uses: 1
        })
    );
    let late = token(5, 100);
    store.insert_registration_token(&late).await.unwrap();
    assert_eq!(
        store
            .consume_registration_token(&late.token_hash, 100)
            .await
            .unwrap(),
        Err(TokenRefusal::Expired { expired_at: 100 })
    );
    assert!(store.delete_registration_token(late.id).await.unwrap());
    assert_eq!(
        store
            .consume_registration_token(&late.token_hash, 1)
            .await
            .unwrap(),
        Err(TokenRefusal::Unknown)
    );
    assert_eq!(store.registration_tokens().await.unwrap().len(), 1);

    let dataplane = DataPlaneRecord {
        id: Uuid::new_v4(),
        name: "edge-1".into(),
        hostname: "edge-1".into(),
        ip: "127.0.0.1".into(),
        version: "0.1.0".into(),
        registered_at: 1,
        cert_serial: "01".into(),
        previous_cert_serial: None,
        retired_cert_serials: Vec::new(),
        cert_expires_at: 100,
        last_seen: None,
        license_id: None,
        license_updated_at: None,
        revoked: false,
    };
    store.put_dataplane(&dataplane).await.unwrap();
    assert_eq!(store.dataplanes().await.unwrap(), vec![dataplane.clone()]);
    assert!(store.delete_dataplane(dataplane.id).await.unwrap());
    assert!(!store.delete_dataplane(dataplane.id).await.unwrap());
    assert_eq!(store.dataplane(dataplane.id).await.unwrap(), None);
    assert!(store.dataplanes().await.unwrap().is_empty());
}

async fn exercise_principals(store: &dyn Store) {
    // The first API token is stored only into an empty table (the bootstrap token's rule).
    let first = ApiToken {
        id: Uuid::new_v4(),
        name: "bootstrap-admin".into(),
        token_hash: "first".into(),
        created_at: 1,
        role: Role::Admin,
        expires_at: None,
    };
    let second = ApiToken {
        id: Uuid::new_v4(),
        token_hash: "second".into(),
        ..first.clone()
    };
    assert!(store.insert_first_api_token(&first).await.unwrap());
    assert!(
        !store.insert_first_api_token(&second).await.unwrap(),
        "a second first token is refused"
    );
    assert_eq!(store.api_tokens().await.unwrap(), vec![first.clone()]);
    assert!(store.delete_api_token(first.id).await.unwrap());
    assert!(store.api_tokens().await.unwrap().is_empty());

    let alice = User {
        username: "alice".into(),
        password_hash: "$argon2id$v=19$...".into(),
        role: Role::Admin,
        created_at: 1,
    };
    assert!(store.insert_user(&alice).await.unwrap());
    let again = User {
        role: Role::Viewer,
        ..alice.clone()
    };
    assert!(
        !store.insert_user(&again).await.unwrap(),
        "a taken username is refused"
    );
    assert_eq!(store.user("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user("Alice").await.unwrap(), None);
    assert_eq!(store.users().await.unwrap(), vec![alice]);
    assert!(store.delete_user("alice").await.unwrap());
    assert!(!store.delete_user("alice").await.unwrap());
    assert!(store.users().await.unwrap().is_empty());

    let app = ConnectedApp {
        client_id: "0123456789abcdef0123456789abcdef".into(),
        name: "ci".into(),
        secret_hash: "digest".into(),
        scopes: vec![Scope::ManageServers],
        created_at: 2,
    };
    assert!(store.insert_connected_app(&app).await.unwrap());
    assert!(!store.insert_connected_app(&app).await.unwrap());
    assert_eq!(
        store.connected_app(&app.client_id).await.unwrap(),
        Some(app.clone())
    );
    assert_eq!(store.connected_apps().await.unwrap(), vec![app.clone()]);
    assert!(store.delete_connected_app(&app.client_id).await.unwrap());
    assert_eq!(store.connected_app(&app.client_id).await.unwrap(), None);
}

/// Counters keep the maximum: within a batch, across batches, and never lower.
async fn exercise_usage(store: &dyn Store) {
    let (dp, epoch) = (Uuid::new_v4(), Uuid::new_v4());
    let (nov, dec): (UsageMonth, UsageMonth) =
        ("2026-11".parse().unwrap(), "2026-12".parse().unwrap());
    let submit = |epoch: Uuid, counts: Vec<(UsageMonth, u64)>| UsageSubmission {
        dataplane: dp,
        epoch,
        counts,
    };
    let recorded = store
        .record_usage(vec![
            submit(epoch, vec![(dec, 7), (nov, 5)]),
            submit(epoch, vec![(nov, 9)]),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, vec![vec![(dec, 7), (nov, 9)], vec![(nov, 9)]]);
    let lower = store
        .record_usage(vec![submit(epoch, vec![(nov, 3), (dec, 8)])])
        .await
        .unwrap();
    assert_eq!(lower, vec![vec![(nov, 9), (dec, 8)]]);
    assert_eq!(
        store.record_usage(Vec::new()).await.unwrap(),
        Vec::<Vec<(UsageMonth, u64)>>::new()
    );
    let row = |month, count| UsageRow {
        dataplane: dp,
        epoch,
        month,
        count,
    };
    assert_eq!(store.usage().await.unwrap(), vec![row(nov, 9), row(dec, 8)]);

    // Another data plane's counters add up per month.
    let other = UsageSubmission {
        dataplane: Uuid::new_v4(),
        epoch,
        counts: vec![(nov, 1), ("2026-10".parse().unwrap(), 4)],
    };
    store.record_usage(vec![other]).await.unwrap();
    assert_eq!(
        store.usage_by_month().await.unwrap(),
        vec![("2026-10".parse().unwrap(), 4), (nov, 10), (dec, 8)]
    );
}

/// Audit records come back in time order (then id), from a time on, at most `limit`; pruning
/// removes exactly those before a time. Times before 1970 sort too.
async fn exercise_audit(store: &dyn Store) {
    let record = |at_ms: i64, n: u128| AuditRecord {
        id: Uuid::from_u128(n),
        at_ms,
        actor: format!("token 'ci' (id {n})"),
        source: "127.0.0.1:5000".into(),
        action: "POST /licenses".into(),
        resource: "/licenses".into(),
        result: "ok".into(),
    };
    let (a, b, c, d) = (record(-5, 1), record(10, 3), record(10, 2), record(20, 4));
    store.append_audit(&[d.clone(), b.clone()]).await.unwrap();
    store.append_audit(&[a.clone(), c.clone()]).await.unwrap();
    store.append_audit(&[]).await.unwrap();
    let all = store.audit_since(i64::MIN, 100).await.unwrap();
    assert_eq!(all, vec![a.clone(), c.clone(), b.clone(), d.clone()]);
    assert_eq!(
        store.audit_since(10, 2).await.unwrap(),
        vec![c.clone(), b.clone()]
    );
    assert_eq!(store.audit_since(21, 10).await.unwrap(), vec![]);
    assert_eq!(store.prune_audit(10).await.unwrap(), 1);
    assert_eq!(
        store.audit_since(i64::MIN, 100).await.unwrap(),
        vec![c, b, d]
    );
}

#[tokio::test]
async fn memory_backend_conforms() {
    exercise(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sled_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&SledStore::open(&dir.path().join("db")).unwrap()).await;
}

#[tokio::test]
async fn postgres_backend_conforms() {
    let url = licsync_testkit::postgres::fresh_database().await;
    exercise(&PostgresStore::open(&url, None, 4).await.unwrap()).await;
}

#[tokio::test]
async fn sled_keeps_users_and_apps_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let user = User {
        username: "alice".into(),
        password_hash: "$argon2id$v=19$...".into(),
        role: Role::Viewer,
        created_at: 1,
    };
    let app = ConnectedApp {
        client_id: "0123456789abcdef0123456789abcdef".into(),
        name: "ci".into(),
        secret_hash: "digest".into(),
        scopes: vec![Scope::ReadServers, Scope::ManageServers],
        created_at: 2,
    };
    {
        let store = SledStore::reopen(&path);
        store.insert_user(&user).await.unwrap();
        store.insert_connected_app(&app).await.unwrap();
    }
    let store = SledStore::reopen(&path);
    assert_eq!(store.users().await.unwrap(), vec![user]);
    assert_eq!(store.connected_apps().await.unwrap(), vec![app]);
}

/// One batch that creates, replaces and deletes, in that order, including a license it created
/// itself; then an empty batch, which changes nothing.
async fn exercise_license_batches(store: &dyn Store) -> Vec<StoredLicense> {
    let kept = license(1);
    let dropped = license(2);
    store.put_license(&kept).await.unwrap();
    store.put_license(&dropped).await.unwrap();
    let created = license(3);
    let replaced = StoredLicense {
        document: "{\"renewed\":true}".into(),
        updated_at: 5,
        revision: 4,
        ..kept.clone()
    };
    let transient = license(5);
    store
        .apply_license_batch(&[
            LicenseChange::Put(created.clone()),
            LicenseChange::Put(replaced.clone()),
            LicenseChange::Put(transient.clone()),
            LicenseChange::Delete {
                id: dropped.id,
                revision: 6,
            },
            LicenseChange::Delete {
                id: transient.id,
                revision: 7,
            },
        ])
        .await
        .unwrap();
    store.apply_license_batch(&[]).await.unwrap();
    let rows = store.licenses().await.unwrap();
    assert_eq!(rows.revision, 7, "the revision of the batch's last change");
    let mut expected = vec![created, replaced];
    expected.sort_by_key(|l| l.id);
    let mut stored = rows.licenses;
    stored.sort_by_key(|l| l.id);
    assert_eq!(stored, expected);
    stored
}

#[tokio::test]
async fn every_backend_applies_license_batches_alike() {
    exercise_license_batches(&MemoryStore::new()).await;
    let url = licsync_testkit::postgres::fresh_database().await;
    exercise_license_batches(&PostgresStore::open(&url, None, 4).await.unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let written = exercise_license_batches(&SledStore::reopen(&path)).await;
    let rows = SledStore::reopen(&path).licenses().await.unwrap();
    assert_eq!(rows.revision, 7, "sled keeps a batch across a reopen");
    let mut reopened = rows.licenses;
    reopened.sort_by_key(|l| l.id);
    assert_eq!(reopened, written);
}
