//! Tests that both backends keep the same promises for principals and renewals: a taken
//! username or client id is refused atomically, lookups are exact, a renewal moves the serial
//! and refuses an unknown or revoked data plane without changing anything; and that sled keeps
//! principals across a reopen.

use uuid::Uuid;

use super::{MemoryStore, SledStore, Store};
use crate::model::{ConnectedApp, DataPlaneRecord, RenewRefusal, Role, Scope, User};

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

async fn exercise_renewal(store: &dyn Store) {
    let id = Uuid::new_v4();
    assert_eq!(
        store.renew_dataplane_cert(id, "bb", 20).await.unwrap(),
        Err(RenewRefusal::Unknown { id })
    );
    let record = DataPlaneRecord {
        id,
        name: "edge".into(),
        hostname: "edge-1".into(),
        ip: "192.0.2.1".into(),
        version: "0.1.0".into(),
        registered_at: 1,
        cert_serial: "aa".into(),
        previous_cert_serial: None,
        cert_expires_at: 10,
        last_seen: None,
        license_id: None,
        license_updated_at: None,
        revoked: false,
    };
    store.put_dataplane(&record).await.unwrap();
    let renewed = store
        .renew_dataplane_cert(id, "bb", 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            renewed.cert_serial.as_str(),
            renewed.previous_cert_serial.as_deref(),
            renewed.cert_expires_at
        ),
        ("bb", Some("aa"), 20)
    );
    assert_eq!(store.dataplane(id).await.unwrap(), Some(renewed.clone()));
    store
        .put_dataplane(&DataPlaneRecord {
            revoked: true,
            ..renewed.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.renew_dataplane_cert(id, "cc", 30).await.unwrap(),
        Err(RenewRefusal::Revoked { id })
    );
    assert_eq!(
        store.dataplane(id).await.unwrap().unwrap().cert_serial,
        "bb",
        "a refused renewal changes nothing"
    );
}

#[tokio::test]
async fn sled_and_memory_backends_agree_on_principals_and_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(&dir.path().join("db")).unwrap();
    let memory = MemoryStore::new();
    for store in [&sled as &dyn Store, &memory] {
        exercise_principals(store).await;
        exercise_renewal(store).await;
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
