//! `storage copy` from a real embedded control plane into a real PostgreSQL database (over
//! verified TLS): refused
//! while the control plane runs; after it stops, every record arrives as it was (ids,
//! timestamps, revisions, the revision counter), a node started on the copy serves the same
//! licenses and the old data plane reconnects with its old certificate; a second copy into the
//! now non-empty database is refused and writes nothing; bad key files are named.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use licsync_cp::storage_copy::{CopyError, CopyOptions, CopySummary, copy};
use licsync_cp::store::{
    AuditStore, DataPlaneStore, LicenseRows, LicenseStore, PostgresStore, PrincipalStore,
    SledStore, TokenStore, UsageRow, UsageStore,
};
use licsync_cp::usage::UsageMonth;
use licsync_testkit::postgres::{fresh_database, storage_key_file};
use licsync_testkit::{ControlPlane, ControlPlaneBuilder, GUARD, Issuer};
use time::OffsetDateTime;
use tokio::time::Instant;

/// Everything a store holds that a copy must carry, as comparable values.
#[derive(Debug, PartialEq)]
struct Contents {
    licenses: LicenseRows,
    tokens: Vec<String>,
    dataplanes: Vec<String>,
    api_tokens: Vec<String>,
    users: Vec<String>,
    usage: Vec<UsageRow>,
    audit: Vec<String>,
}

/// Each record's `Debug` text, sorted: equal lists, equal records.
fn debug<T: std::fmt::Debug>(items: Vec<T>) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    items.sort();
    items
}

async fn contents<S>(store: &S) -> Contents
where
    S: LicenseStore + TokenStore + DataPlaneStore + PrincipalStore + UsageStore + AuditStore,
{
    let mut licenses = store.licenses().await.unwrap();
    licenses.licenses.sort_by_key(|l| l.id);
    Contents {
        licenses,
        tokens: debug(store.registration_tokens().await.unwrap()),
        dataplanes: debug(store.dataplanes().await.unwrap()),
        api_tokens: debug(store.api_tokens().await.unwrap()),
        users: debug(store.users().await.unwrap()),
        usage: store.usage().await.unwrap(),
        audit: debug(store.audit_since(i64::MIN, usize::MAX).await.unwrap()),
    }
}

fn options(from: &Path, url: &str) -> CopyOptions {
    CopyOptions {
        from: from.to_owned(),
        to: url.to_owned(),
        encryption_key_file: storage_key_file(url),
        password_file: None,
        ca_file: None,
    }
}

/// [`copy`], retried while the control plane just stopped still holds the sled lock (its
/// flusher lets go a moment after the last handle is dropped).
async fn copy_after_stop(options: &CopyOptions) -> Result<CopySummary, CopyError> {
    let deadline = Instant::now() + GUARD;
    loop {
        match copy(options).await {
            Err(CopyError::InUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            outcome => return outcome,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_control_plane_moves_to_postgres_and_its_data_planes_follow() {
    let issuer = Issuer::new();
    // A data_dir of the test's own: the kit's would go with the stopped control plane.
    let dir = tempfile::tempdir().unwrap();
    let embedded = ControlPlaneBuilder::in_dir(&dir.path().join("data"))
        .trusting(&issuer)
        .start()
        .await;
    let kept = embedded.create_license(&issuer.license("Kept Corp")).await;
    let gone = embedded.create_license(&issuer.license("Gone Corp")).await;
    // The counter ends above the highest license's revision.
    embedded.delete_license(&gone).await;
    let dp = embedded.register_dataplane(licsync_common::VERSION).await;
    let epoch = uuid::Uuid::new_v4().to_string();
    let month = UsageMonth::of(OffsetDateTime::now_utc()).unwrap();
    embedded
        .report_usage(&dp, &epoch, &[(month.to_string(), 7)])
        .await
        .unwrap();
    embedded
        .create_admin_user("alice", "correct horse battery staple")
        .await;
    embedded.registration_token(3).await;
    let revision = embedded.revision().await;
    let fingerprint = embedded.ca_fingerprint();
    let admin_token = embedded.admin_token().to_owned();
    let data_dir = embedded.data_dir().to_owned();

    let url = fresh_database().await;
    // Over verified TLS to the database, as `--ca-file` asks.
    let ca_file = dir.path().join("postgres-ca.crt");
    std::fs::write(&ca_file, licsync_testkit::postgres::ca_pem()).unwrap();
    let options = CopyOptions {
        ca_file: Some(ca_file),
        ..options(&data_dir, &url)
    };
    let refused = copy(&options).await.unwrap_err().to_string();
    assert!(refused.contains("stop it first"), "{refused}");
    embedded.shutdown().await;

    let summary = copy_after_stop(&options).await.unwrap();
    assert_eq!(
        (summary.licenses, summary.revision, summary.dataplanes),
        (1, revision, 1),
        "{summary}"
    );
    assert_eq!((summary.users, summary.usage_counters), (1, 1), "{summary}");
    // The license writes, the deletion and the user at least, each audited.
    assert!(summary.audit_records >= 4, "{summary}");
    let source = contents(&SledStore::open(&data_dir.join("cp.sled")).unwrap()).await;
    let target = PostgresStore::open(&url, None, 1).await.unwrap();
    assert_eq!(contents(&target).await, source);

    // A node on the copy: same CA, same licenses and revision, the old admin token works (no
    // new one is made) and the old data plane syncs with its old certificate.
    let node = ControlPlane::builder()
        .postgres(&url)
        .trusting(&issuer)
        .admin_token(&admin_token)
        .start()
        .await;
    assert!(!node.data_dir().join("admin-token").exists());
    assert_eq!(node.ca_fingerprint(), fingerprint);
    assert_eq!(node.revision().await, revision);
    let mut stream = node.sync(&dp, licsync_common::VERSION).await.unwrap();
    let update = stream.update().await;
    assert_eq!(update.revision, revision);
    let ids: Vec<&str> = update.upserted.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, [kept.as_str()]);
    stream.ack(&update).await;

    // Copying again into the database, now in use, is refused and changes nothing.
    let before = contents(&target).await;
    let refused = copy(&options).await.unwrap_err().to_string();
    assert!(
        refused.contains("already holds licsync data") && refused.contains("nothing was copied"),
        "{refused}"
    );
    assert_eq!(contents(&target).await, before);
    node.shutdown().await;
}

#[tokio::test]
async fn bad_sources_and_key_files_are_refused_naming_them() {
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let error = |options: CopyOptions| async move { copy(&options).await.unwrap_err().to_string() };

    let message = error(options(dir.path(), &url)).await;
    assert!(message.contains("holds no cp.sled"), "{message}");

    let exposed = dir.path().join("exposed.key");
    std::fs::copy(storage_key_file(&url), &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = error(CopyOptions {
        encryption_key_file: exposed,
        ..options(dir.path(), &url)
    })
    .await;
    assert!(
        message.contains("--encryption-key-file") && message.contains("chmod 600"),
        "{message}"
    );
    let message = error(CopyOptions {
        encryption_key_file: dir.path().join("missing.key"),
        ..options(dir.path(), &url)
    })
    .await;
    assert!(message.contains("--encryption-key-file"), "{message}");
    let message = error(CopyOptions {
        ca_file: Some(dir.path().join("missing-ca.crt")),
        ..options(dir.path(), &url)
    })
    .await;
    assert!(
        message.contains("--ca-file") && message.contains("missing-ca.crt"),
        "{message}"
    );

    // A sled database without the pki directory beside it: the CA is missing.
    std::fs::create_dir(dir.path().join("cp.sled")).unwrap();
    let message = error(options(dir.path(), &url)).await;
    assert!(
        message.contains("ca.crt") && message.contains("cluster CA"),
        "{message}"
    );
    let status = PostgresStore::connect(&licsync_cp::store::postgres::ConnectOptions {
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
    assert_eq!(
        status.current, 0,
        "a refused copy does not touch the database"
    );
}
