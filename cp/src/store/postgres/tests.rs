//! What only the shared PostgreSQL backend must show: several nodes (here, several pools on
//! one database) racing for a token's last use, merging the same usage counters, and starting
//! together against an empty database; and the refusal of a schema newer than the binary.

use std::sync::Arc;

use uuid::Uuid;

use super::test_server::fresh_database;
use super::{PostgresStore, schema};
use crate::model::{RegistrationToken, TokenRefusal};
use crate::store::{TokenStore, UsageMonth, UsageStore, UsageSubmission};

/// Two nodes on one database.
async fn two_nodes() -> (Arc<PostgresStore>, Arc<PostgresStore>, String) {
    let url = fresh_database().await;
    let a = PostgresStore::open(&url, None, 4).await.unwrap();
    let b = PostgresStore::open(&url, None, 4).await.unwrap();
    (Arc::new(a), Arc::new(b), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_last_use_is_taken_by_exactly_one_of_two_concurrent_callers() {
    let (a, b) = {
        let (a, b, _) = two_nodes().await;
        (a, b)
    };
    for round in 0..20 {
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
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |store: Arc<PostgresStore>| {
            let (hash, barrier) = (token.token_hash.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.consume_registration_token(&hash, 1).await.unwrap()
            })
        };
        let (first, second) = (race(a.clone()), race(b.clone()));
        let outcomes = [first.await.unwrap(), second.await.unwrap()];
        let winners = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {outcomes:?}");
        let used_up = Err(TokenRefusal::UsedUp {
            uses: 1,
            max_uses: 1,
        });
        assert!(outcomes.contains(&used_up), "round {round}: {outcomes:?}");
    }
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
