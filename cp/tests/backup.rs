//! `GET /backup` and the automatic backup before a storage upgrade, in-process against real
//! listeners, a real sled directory and a real PostgreSQL server (SPEC §10):
//! only admins get a backup (viewers and operators `403`), the answer is never cached and the
//! call is in the audit trail; a node started on a PostgreSQL database an older release left
//! (schema 3) writes a backup into `<data_dir>/backups/` (0700, 0600) before it migrates, and
//! that backup restores into a data_dir holding the same licenses and the same CA.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use licsync_cp::backup::{Document, restore};
use licsync_cp::cluster::secrets::{ClusterSecrets, SecretHome};
use licsync_cp::config::PkiConfig;
use licsync_cp::model::StoredLicense;
use licsync_cp::store::postgres::ConnectOptions;
use licsync_cp::store::storage_key::StorageKey;
use licsync_cp::store::{LicenseStore, PostgresStore, SledStore};
use licsync_testkit::postgres::{fresh_database, storage_key_file};
use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A new Admin API token with `role`; its secret.
async fn token(cp: &ControlPlane, role: &str) -> String {
    let (status, body) = cp
        .call(
            Method::POST,
            "/admin-tokens",
            Some(json!({ "name": format!("{role}-token"), "role": role, "ttl": "1h" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_get_a_backup_it_is_never_cached_and_it_is_audited() {
    let cp = ControlPlane::start().await;
    let license = cp.issuer.license("Backup Inc");
    let (status, _) = cp
        .call(
            Method::POST,
            "/licenses",
            Some(json!({ "payload": license })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    for role in ["viewer", "operator"] {
        let secret = token(&cp, role).await;
        let (status, body) = send(cp.anonymous(Method::GET, "/backup").bearer_auth(&secret)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("needs the admin role"), "{message}");
    }
    let (status, _) = send(cp.anonymous(Method::GET, "/backup")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = cp.call(Method::GET, "/backup?full=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let response = cp.request(Method::GET, "/backup").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let bytes = response.bytes().await.unwrap();
    let document = Document::parse(&bytes).unwrap();
    assert_eq!(document.licenses.len(), 1);
    assert_eq!(document.licenses[0].document, license);
    assert_eq!(document.storage.backend, "sled");
    let pki = document.pki.as_ref().expect("the PKI is in the backup");
    assert_eq!(pki.ca_cert_pem, cp.ca_pem());
    assert_eq!(
        pki.ca_key_pem,
        std::fs::read_to_string(cp.pki_dir().join("ca.key")).unwrap()
    );
    assert_eq!(document.api_tokens.len(), 3, "bootstrap, viewer, operator");

    let (status, body) = cp.call(Method::GET, "/audit?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let backups: Vec<(String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "GET /backup")
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let results: Vec<&str> = backups.iter().map(|(_, r)| r.as_str()).collect();
    assert!(results.contains(&"ok"), "{backups:?}");
    assert_eq!(
        results.iter().filter(|r| **r == "denied (403)").count(),
        2,
        "{backups:?}"
    );
    assert!(
        backups
            .iter()
            .any(|(actor, result)| result == "ok" && actor.starts_with("token '")),
        "{backups:?}"
    );
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_an_older_postgres_schema_backs_it_up_before_migrating() {
    // The database a release at schema 3 left: its CA and report key sealed in it, licenses
    // at their revisions.
    let url = fresh_database().await;
    let old = PostgresStore::connect(&ConnectOptions {
        url: &url,
        password: None,
        pool_size: 2,
        ca_pem: None,
    })
    .await
    .unwrap();
    assert_eq!(old.migrate_to(3).await.unwrap(), vec![1, 2, 3]);
    let key = StorageKey::load(&storage_key_file(&url)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secrets = ClusterSecrets::load_or_create(
        &SecretHome::Database {
            store: Arc::new(
                PostgresStore::connect(&ConnectOptions {
                    url: &url,
                    password: None,
                    // insert_secret_if_absent reads back on a second connection.
                    pool_size: 2,
                    ca_pem: None,
                })
                .await
                .unwrap(),
            ),
            key: Box::new(key),
        },
        &scratch.path().join("pki"),
        &PkiConfig::default(),
    )
    .await
    .unwrap();
    let issuer = licsync_testkit::Issuer::new();
    let mut written = Vec::new();
    for (revision, customer) in [(1, "Old Schema A"), (2, "Old Schema B")] {
        let document = issuer.license(customer);
        let license = StoredLicense {
            id: uuid::Uuid::new_v4(),
            signature: format!("{revision:064x}"),
            document,
            created_at: 1_700_000_000 + revision as i64,
            updated_at: 1_700_000_000 + revision as i64,
            revision,
        };
        old.put_license(&license).await.unwrap();
        written.push(license);
    }
    written.sort_by_key(|l| l.id);
    drop(old);

    let cp = ControlPlane::builder()
        .trusting(&issuer)
        .postgres(&url)
        .start()
        .await;
    assert_eq!(cp.ca_pem(), secrets.ca.cert_pem(), "the stored CA is used");
    let backups = cp.data_dir().join("backups");
    assert_eq!(mode(&backups), 0o700);
    let files: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("licsync-backup-") && name.contains("-postgres-schema-3-to-"),
        "{name}"
    );
    assert_eq!(mode(file), 0o600);
    let status = PostgresStore::connect(&ConnectOptions {
        url: &url,
        password: None,
        pool_size: 1,
        ca_pem: None,
    })
    .await
    .unwrap()
    .schema_status()
    .await
    .unwrap();
    assert_eq!(status.current, status.known, "migrated after the backup");
    assert!(
        name.ends_with(&format!("-to-{}.json", status.known)),
        "{name}"
    );

    // The backup restores into a data_dir holding the same licenses and the same CA.
    let restored = scratch.path().join("restored");
    let counts = restore::restore(file, &restored).await.unwrap();
    assert_eq!((counts.licenses, counts.revision, counts.pki), (2, 2, true));
    assert_eq!(
        std::fs::read_to_string(restored.join("pki/ca.crt")).unwrap(),
        secrets.ca.cert_pem()
    );
    assert_eq!(mode(&restored.join("pki/ca.key")), 0o600);
    let store = SledStore::open(&restored.join("cp.sled")).unwrap();
    let mut rows = store.licenses().await.unwrap();
    rows.licenses.sort_by_key(|l| l.id);
    assert_eq!(rows.revision, 2);
    assert_eq!(rows.licenses, written);
    drop(store);

    // A node of the upgraded cluster serves a backup with the PKI opened from its sealed form.
    let (status, body) = cp.call(Method::GET, "/backup", None).await;
    assert_eq!(status, StatusCode::OK);
    let document: Document = serde_json::from_value(body).unwrap();
    assert_eq!(document.storage.backend, "postgres");
    assert_eq!(document.licenses.len(), 2);
    assert_eq!(
        document.pki.as_ref().unwrap().ca_cert_pem,
        secrets.ca.cert_pem()
    );
    cp.shutdown().await;
}
