//! Tests that both backends keep the same promises for principals: a taken username or client
//! id is refused atomically and lookups are exact; and that sled keeps principals across a
//! reopen. (Renewals update the record through `DataPlanes::update`, tested there.)

use super::{MemoryStore, SledStore, Store};
use crate::model::{ConnectedApp, Role, Scope, User};

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
