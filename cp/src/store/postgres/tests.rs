//! What only the shared PostgreSQL backend must show: several nodes (here, several pools on
//! one database) racing for a token's last use, merging the same usage counters, and starting
//! together against an empty database (migrations, the first admin token, the cluster
//! secrets); and the refusal of a schema newer than the binary.

use std::sync::Arc;

use uuid::Uuid;

use super::{ConnectOptions, PostgresStore, schema};
use crate::model::{ApiToken, RegistrationToken, TokenRefusal};
use crate::store::{
    PrincipalStore, SecretStore, TokenStore, UsageMonth, UsageStore, UsageSubmission,
};
use licsync_testkit::postgres::fresh_database;

/// Plain TCP to `url`, one connection.
fn plain(url: &str) -> ConnectOptions<'_> {
    ConnectOptions {
        url,
        password: None,
        pool_size: 1,
        ca_pem: None,
    }
}

/// Whether the pooled connection `store` hands out is encrypted.
async fn encrypted(store: &PostgresStore) -> bool {
    let client = store.client().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn with_a_ca_file_connections_use_verified_tls() {
    let url = fresh_database().await;
    assert!(!encrypted(&PostgresStore::connect(&plain(&url)).await.unwrap()).await);
    let ca = licsync_testkit::postgres::ca_pem();
    let tls = ConnectOptions {
        ca_pem: Some(&ca),
        ..plain(&url)
    };
    let store = PostgresStore::open_with(&tls).await.unwrap();
    assert!(
        encrypted(&store).await,
        "a CA was given, yet the connection is plain"
    );
    crate::store::conformance::exercise(&store).await;

    // A certificate from another CA is refused, naming why.
    let day = std::time::Duration::from_secs(86_400);
    let (other, _) = licsync_common::pki::CertificateAuthority::generate("other", day).unwrap();
    let wrong = ConnectOptions {
        ca_pem: Some(other.cert_pem()),
        ..plain(&url)
    };
    let Err(refused) = PostgresStore::connect(&wrong).await else {
        panic!("a server certificate from an unknown CA was accepted");
    };
    assert!(refused.to_string().contains("certificate"), "{refused}");

    // A URL asking for TLS without a CA to verify the server is refused before connecting.
    let require = format!("{url}?sslmode=require");
    let Err(refused) = PostgresStore::connect(&plain(&require)).await else {
        panic!("sslmode=require without a CA was accepted");
    };
    assert!(
        refused.to_string().contains("storage.postgres.ca_file"),
        "{refused}"
    );
}

/// Two nodes on one database.
async fn two_nodes() -> (Arc<PostgresStore>, Arc<PostgresStore>, String) {
    let url = fresh_database().await;
    let a = PostgresStore::open(&url, None, 4).await.unwrap();
    let b = PostgresStore::open(&url, None, 4).await.unwrap();
    (Arc::new(a), Arc::new(b), url)
}

/// How many backends of this database wait for a lock.
async fn lock_waiters(store: &PostgresStore) -> i64 {
    let client = store.client().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Two nodes present a token with one use left at the same moment. To make "the same moment"
/// certain rather than likely, the test holds the token's row lock until both callers are
/// blocked on it, then lets them go: a store that read the count before locking would let
/// both through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_last_use_is_taken_by_exactly_one_of_two_concurrent_callers() {
    let (a, b, _) = two_nodes().await;
    for round in 0..5 {
        let token = RegistrationToken {
            id: Uuid::new_v4(),
            name: format!("race-{round}"),
            token_hash: Uuid::new_v4().to_string(),
            created_at: 0,
            expires_at: i64::MAX,
            max_uses: 1,
            uses: 0,
        };
        a.insert_registration_token(&token).await.unwrap();
        let mut holder = a.client().await.unwrap();
        let hold = holder.transaction().await.unwrap();
        hold.execute(
            "UPDATE registration_tokens SET name = name WHERE id = $1",
            &[&token.id],
        )
        .await
        .unwrap();
        let race = |store: Arc<PostgresStore>| {
            let hash = token.token_hash.clone();
            tokio::spawn(async move { store.consume_registration_token(&hash, 1).await.unwrap() })
        };
        let (first, second) = (race(a.clone()), race(b.clone()));
        // Bounded: both callers block on the held row within moments.
        let mut waiting = 0;
        for _ in 0..400 {
            waiting = lock_waiters(&a).await;
            if waiting >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(
            waiting, 2,
            "round {round}: both callers should wait on the token"
        );
        hold.commit().await.unwrap();
        let outcomes = [first.await.unwrap(), second.await.unwrap()];
        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        let used_up = Err(TokenRefusal::UsedUp {
            uses: 1,
            max_uses: 1,
        });
        assert!(outcomes.contains(&used_up), "round {round}: {outcomes:?}");
        let stored = b.registration_tokens().await.unwrap();
        let stored = stored.iter().find(|t| t.id == token.id).unwrap();
        assert_eq!(stored.uses, 1, "round {round}");
    }
}

/// Waits (bounded) until `n` backends of this database wait for a lock.
async fn until_waiting(store: &PostgresStore, n: i64) {
    let mut waiting = 0;
    for _ in 0..400 {
        waiting = lock_waiters(store).await;
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{waiting} caller(s) wait on the lock, expected {n}");
}

/// Two nodes bootstrap at the same moment (both held at the table lock until both are
/// there): exactly one first token is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_bootstrapping_together_exactly_one_stores_the_first_token() {
    let (a, b, _) = two_nodes().await;
    let mut holder = a.client().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE api_tokens IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let race = |store: Arc<PostgresStore>, name: &str| {
        let token = ApiToken {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            token_hash: name.to_owned(),
            created_at: 0,
            role: crate::model::Role::Admin,
            expires_at: None,
        };
        tokio::spawn(async move { store.insert_first_api_token(&token).await.unwrap() })
    };
    let (first, second) = (race(a.clone(), "a"), race(b.clone(), "b"));
    until_waiting(&a, 2).await;
    hold.commit().await.unwrap();
    let won = [first.await.unwrap(), second.await.unwrap()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert_eq!(b.api_tokens().await.unwrap().len(), 1);
}

/// Two nodes create the same secret at the same moment (both held behind a third writer's
/// uncommitted row, which is then rolled back): both end with one and the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_storing_a_secret_together_both_read_the_one_stored() {
    let (a, b, _) = two_nodes().await;
    assert_eq!(a.secret("cluster_ca").await.unwrap(), None);
    let mut holder = a.client().await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "INSERT INTO cluster_secrets (name, sealed) VALUES ('cluster_ca', 'x')",
        &[],
    )
    .await
    .unwrap();
    let race = |store: Arc<PostgresStore>, value: &'static [u8]| {
        tokio::spawn(async move {
            store
                .insert_secret_if_absent("cluster_ca", value)
                .await
                .unwrap()
        })
    };
    let (first, second) = (race(a.clone(), b"from a"), race(b.clone(), b"from b"));
    until_waiting(&a, 2).await;
    hold.rollback().await.unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first, second);
    assert!(first == b"from a" || first == b"from b", "{first:?}");
    assert_eq!(b.secret("cluster_ca").await.unwrap(), Some(first.clone()));
    // Later calls never replace it.
    assert_eq!(
        a.insert_secret_if_absent("cluster_ca", b"later")
            .await
            .unwrap(),
        first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_usage_reports_on_two_nodes_keep_the_maximum() {
    let (a, b, _) = two_nodes().await;
    let (dp, epoch) = (Uuid::new_v4(), Uuid::new_v4());
    let month: UsageMonth = "2026-12".parse().unwrap();
    let mut tasks = Vec::new();
    for count in 1..=40u64 {
        let store = if count % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let submission = UsageSubmission {
                dataplane: dp,
                epoch,
                counts: vec![(month, count)],
            };
            store.record_usage(vec![submission]).await.unwrap()
        }));
    }
    for task in tasks {
        let recorded = task.await.unwrap();
        assert!(recorded[0][0].1 >= 1);
    }
    let rows = a.usage().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].count, 40, "the highest report wins, nothing adds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let url = fresh_database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, None, 2).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    let client = stores[0].client().await.unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=schema::LATEST).collect::<Vec<_>>());
    let status = stores[0].schema_status().await.unwrap();
    assert_eq!((status.current, status.pending()), (schema::LATEST, 0));
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_with_both_versions() {
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None, 1).await.unwrap();
    let newer = schema::LATEST + 1;
    store
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, 'from the future')",
            &[&newer],
        )
        .await
        .unwrap();
    drop(store);
    let Err(refused) = PostgresStore::open(&url, None, 1).await else {
        panic!("a newer schema was accepted");
    };
    let message = refused.to_string();
    assert!(message.contains(&format!("version {newer}")), "{message}");
    assert!(
        message.contains(&format!("version {})", schema::LATEST)),
        "{message}"
    );
    assert!(message.contains("restore"), "{message}");
}

#[tokio::test]
async fn a_bad_url_is_refused_naming_the_key() {
    let Err(refused) = PostgresStore::open("mysql://nope", None, 1).await else {
        panic!("a bad URL was accepted");
    };
    assert!(
        refused.to_string().contains("storage.postgres.url"),
        "{refused}"
    );
}

/// A configuration using the test database at `url`.
fn config(url: String, password_file: Option<std::path::PathBuf>) -> crate::config::CpConfig {
    let mut config = crate::config::CpConfig::default();
    config.storage.backend = crate::config::StorageBackend::Postgres;
    config.storage.postgres.url = Some(url);
    config.storage.postgres.password_file = password_file;
    config.storage.encryption_key_file = Some(licsync_testkit::postgres::storage_key_file(
        config.storage.postgres.url.as_deref().unwrap_or_default(),
    ));
    config
}

#[tokio::test]
async fn the_password_file_gives_the_password_the_url_lacks() {
    let url = licsync_testkit::postgres::without_password(&fresh_database().await);
    let refused = crate::server::open_postgres(&config(url.clone(), None))
        .await
        .err()
        .expect("no password, yet connected");
    assert!(refused.to_string().contains("password"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", licsync_testkit::postgres::PASSWORD)).unwrap();
    let store = crate::server::open_postgres(&config(url, Some(file)))
        .await
        .unwrap();
    assert_eq!(store.schema_status().await.unwrap().current, schema::LATEST);
}

#[test]
fn storage_migrate_shows_then_applies_then_refuses_a_newer_schema() {
    use crate::cli::{MigrateAction, MigrateArgs, StorageCommand};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("licsync-cp.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\nbackend = \"postgres\"\nencryption_key_file = \"{}\"\n\
             [storage.postgres]\nurl = \"{url}\"\n",
            licsync_testkit::postgres::storage_key_file(&url).display()
        ),
    )
    .unwrap();
    let migrate = |action| {
        crate::storage_tool::run(StorageCommand::Migrate(MigrateArgs {
            action,
            config: Some(file.clone()),
        }))
    };
    assert!(migrate(MigrateAction::Status).unwrap());
    let status = |url: &str| {
        runtime.block_on(async {
            let store = PostgresStore::connect(&plain(url)).await.unwrap();
            store.schema_status().await.unwrap()
        })
    };
    assert_eq!(status(&url).current, 0, "status changes nothing");
    assert!(migrate(MigrateAction::Up).unwrap());
    assert_eq!(status(&url).current, schema::LATEST);
    assert!(migrate(MigrateAction::Up).unwrap(), "up again is a no-op");

    runtime.block_on(async {
        let store = PostgresStore::connect(&plain(&url)).await.unwrap();
        let client = store.client().await.unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations (version, description) VALUES ($1, 'newer')",
                &[&(schema::LATEST + 1)],
            )
            .await
            .unwrap();
    });
    assert!(!migrate(MigrateAction::Status).unwrap(), "a newer schema");
    let refused = migrate(MigrateAction::Up).unwrap_err().to_string();
    assert!(refused.contains("restore"), "{refused}");

    std::fs::write(&file, "[storage]\nbackend = \"sled\"\n").unwrap();
    let refused = migrate(MigrateAction::Status).unwrap_err().to_string();
    assert!(
        refused.contains("storage.backend = \"postgres\""),
        "{refused}"
    );
}

/// `serve` with `storage.backend = "postgres"` runs on the database: `/status` names it, and
/// the bootstrap admin token it created is in the database for the next start.
#[tokio::test]
async fn a_control_plane_serves_from_postgres() {
    use crate::store::{PrincipalStore, StoreMeta};
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(url.clone(), None);
    config.data_dir = dir.path().join("data");
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.cluster.listen = ([127, 0, 0, 1], 0).into();
    config.status.listen = ([127, 0, 0, 1], 0).into();
    let listeners = crate::server::Listeners::bind(&config).await.unwrap();
    let admin = listeners.admin.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(crate::server::run(config, listeners, shutdown.clone()));
    let token_file = dir.path().join("data").join(crate::admin::ADMIN_TOKEN_FILE);
    let client = reqwest::Client::new();
    let mut status = None;
    for _ in 0..200 {
        if let Ok(token) = std::fs::read_to_string(&token_file)
            && let Ok(answer) = client
                .get(format!("http://{admin}/status"))
                .header("Kong-Admin-Token", token.trim())
                .send()
                .await
            && answer.status().is_success()
        {
            status = Some(answer.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = status.expect("the control plane never answered /status");
    assert_eq!(status["storage"]["backend"], "postgres", "{status}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let store = PostgresStore::open(&url, None, 1).await.unwrap();
    assert_eq!(store.info().backend, "postgres");
    assert_eq!(store.api_tokens().await.unwrap().len(), 1);
}

#[tokio::test]
async fn storing_a_secret_needs_one_connection_of_the_pool() {
    // `storage.postgres.pool_size = 1` is valid: bootstrapping must not wait for a second
    // connection while holding the first.
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None, 1).await.unwrap();
    let first = store.insert_secret_if_absent("report_key", b"first").await;
    assert_eq!(first.unwrap(), b"first");
    let second = store.insert_secret_if_absent("report_key", b"second").await;
    assert_eq!(second.unwrap(), b"first", "the stored secret wins");
}
