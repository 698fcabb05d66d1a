//! Tests that both backends keep the same promises for principals: a taken username or client
//! id is refused atomically and lookups are exact; and that sled keeps principals across a
//! reopen. (Renewals update the record through `DataPlanes::update`, tested there.) And for
//! license batches: applied in order, the revision is the last change's, sled keeps them across
//! a reopen.

use uuid::Uuid;

use super::{LicenseChange, MemoryStore, SledStore, Store};
use crate::model::{ConnectedApp, Revision, Role, Scope, StoredLicense, User};

async fn exercise_principals(store: &dyn Store) {
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

#[tokio::test]
async fn sled_and_memory_backends_agree_on_principals() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("db")).unwrap();
    let memory = MemoryStore::new();
    for store in [&sled as &dyn Store, &memory] {
        exercise_principals(store).await;
    }
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
        let store = SledStore::open(&path).unwrap();
        store.insert_user(&user).await.unwrap();
        store.insert_connected_app(&app).await.unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.users().await.unwrap(), vec![user]);
    assert_eq!(store.connected_apps().await.unwrap(), vec![app]);
}

fn license(revision: Revision) -> StoredLicense {
    StoredLicense {
        id: Uuid::new_v4(),
        document: format!("{{\"n\":{revision}}}"),
        signature: format!("{revision:0128x}"),
        created_at: 1,
        updated_at: 2,
        revision,
    }
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
async fn sled_and_memory_backends_agree_on_license_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let written = exercise_license_batches(&SledStore::open(&path).unwrap()).await;
    exercise_license_batches(&MemoryStore::new()).await;
    let rows = SledStore::open(&path).unwrap().licenses().await.unwrap();
    assert_eq!(rows.revision, 7, "sled keeps a batch across a reopen");
    let mut reopened = rows.licenses;
    reopened.sort_by_key(|l| l.id);
    assert_eq!(reopened, written);
}
