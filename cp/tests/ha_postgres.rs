//! Two control-plane nodes on one real PostgreSQL database, each a whole control plane with
//! real TLS: what one node writes reaches data-plane streams on the other, writes on both
//! never share a revision, a revocation on one ends the stream on the other, a single-use
//! token registers one data plane, usage merges, a lost `LISTEN` connection loses nothing,
//! and each node lists both nodes and who holds which stream.
//!
//! The second node starts with the first node's cluster CA and admin token in its data_dir
//! (as every node will once cluster secrets live in the database), so a data plane may connect
//! to either node.

use std::time::Duration;

use licsync_common::pki;
use licsync_common::proto::RegisterRequest;
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_testkit::dataplane::DataPlane;
use licsync_testkit::postgres::fresh_database;
use licsync_testkit::{ControlPlane, Events, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Two nodes on one fresh database, polling every `poll`.
struct Cluster {
    url: String,
    a: ControlPlane,
    b: ControlPlane,
    _b_dir: TempDir,
}

async fn cluster(poll: Duration) -> Cluster {
    let url = fresh_database().await;
    let a = ControlPlane::builder()
        .postgres(&url)
        .config(|c| c.storage.postgres.poll_interval.0 = poll)
        .start()
        .await;
    let b_dir = tempfile::tempdir().unwrap();
    let data = b_dir.path().join("data");
    // The CA and the report key come from the database; the admin token is the first node's.
    let b = ControlPlane::builder()
        .postgres(&url)
        .admin_token(a.admin_token())
        .config(|c| {
            c.data_dir = data.clone();
            c.storage.postgres.poll_interval.0 = poll;
            c.licenses.trusted_keys = vec![a.issuer.public.clone()];
        })
        .start()
        .await;
    Cluster {
        url,
        a,
        b,
        _b_dir: b_dir,
    }
}

fn node_id(cp: &ControlPlane) -> String {
    std::fs::read_to_string(cp.data_dir().join("node-id"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn post_license(cp: &ControlPlane, document: &str) -> (StatusCode, Value) {
    cp.call(
        Method::POST,
        "/licenses",
        Some(json!({ "payload": document })),
    )
    .await
}

#[tokio::test]
async fn writes_and_deletes_on_one_node_reach_streams_on_the_other() {
    // Past the start-up catch-up, with the next poll a minute away: notifications deliver.
    let (events, _capture) = Events::capture();
    let c = cluster(Duration::from_secs(60)).await;
    listening(&events).await;
    let dp = c.b.register_dataplane(licsync_common::VERSION).await;
    let mut stream = c.b.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    assert!(first.upserted.is_empty());
    stream.ack(&first).await;

    let id = c.a.create_license(&c.a.issuer.license("Across")).await;
    let update = stream.update().await;
    assert_eq!(
        update.upserted.iter().map(|l| &l.id).collect::<Vec<_>>(),
        vec![&id]
    );
    let revision = c.a.revision().await;
    assert_eq!(update.revision, revision, "one revision on both nodes");
    assert_eq!(c.b.revision().await, revision);
    stream.ack(&update).await;

    c.a.delete_license(&id).await;
    let update = stream.update().await;
    assert_eq!(update.removed, vec![id]);
    assert!(update.upserted.is_empty());
    assert_eq!(update.revision, revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_two_nodes_get_distinct_revisions_and_a_duplicate_is_stored_once() {
    let c = cluster(Duration::from_secs(60)).await;
    let mut tasks = Vec::new();
    for n in 0..12 {
        for (node, cp) in [("a", &c.a), ("b", &c.b)] {
            let document = c.a.issuer.license(&format!("{node}{n}"));
            let request = cp
                .request(Method::POST, "/licenses")
                .json(&json!({ "payload": document }));
            tasks.push(tokio::spawn(licsync_testkit::send(request)));
        }
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Every write has its own revision: the set's revision counts them all (two writes
    // sharing one would leave it lower), on both nodes once each has heard of the other's.
    eventually("both nodes at revision 24", || async {
        (c.a.revision().await == 24 && c.b.revision().await == 24).then_some(())
    })
    .await;

    for round in 0..5 {
        let document = c.a.issuer.license(&format!("Same {round}"));
        let (on_a, on_b) =
            tokio::join!(post_license(&c.a, &document), post_license(&c.b, &document));
        let mut statuses = [on_a.0, on_b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: {on_a:?} {on_b:?}"
        );
    }
    let (_, list) = c.b.call(Method::GET, "/licenses?size=1000", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 29);
}

#[tokio::test]
async fn revoking_on_one_node_ends_the_stream_on_the_other() {
    // A poll far away, and both followers past their start-up checks: only the notification
    // can end the stream within the guard time.
    let (events, _capture) = Events::capture();
    let c = cluster(Duration::from_secs(3600)).await;
    listening(&events).await;
    let dp = c.b.register_dataplane(licsync_common::VERSION).await;
    let mut stream = c.b.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;
    let (status, body) =
        c.a.call(
            Method::DELETE,
            &format!("/clustering/data-planes/{}", dp.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let ended = stream.ended().await;
    assert!(
        ended.is_some_and(|s| s.message().contains("revoked")),
        "the stream ended without saying why"
    );
    assert!(c.b.sync(&dp, licsync_common::VERSION).await.is_err());
}

/// Registers with `token` at `cp`; whether it was accepted.
async fn register(cp: &ControlPlane, token: &str) -> bool {
    let (_, csr_der) = pki::new_key_and_csr("edge").unwrap();
    RegistrationClient::new(cp.connect(None).await)
        .register(RegisterRequest {
            token: token.into(),
            csr_der,
            name: "racer".into(),
            hostname: "racer.example".into(),
            version: licsync_common::VERSION.into(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_presented_to_both_nodes_registers_one_dataplane() {
    let c = cluster(Duration::from_secs(60)).await;
    for _ in 0..3 {
        let token = c.a.registration_token(1).await;
        let (on_a, on_b) =
            tokio::join!(register(&c.a, &token.secret), register(&c.b, &token.secret));
        assert!(on_a ^ on_b, "exactly one registration: a {on_a}, b {on_b}");
    }
    assert_eq!(c.a.dataplanes().await.len(), 3);
    assert_eq!(c.b.dataplanes().await.len(), 3);
}

#[tokio::test]
async fn usage_reported_through_both_nodes_keeps_the_highest_count() {
    let c = cluster(Duration::from_secs(60)).await;
    let dp: DataPlane = c.a.register_dataplane(licsync_common::VERSION).await;
    let epoch = uuid::Uuid::new_v4().to_string();
    let month = "2026-11".to_owned();
    let recorded = |receipt: licsync_common::proto::UsageReceipt| {
        receipt
            .recorded
            .iter()
            .map(|u| (u.bucket.clone(), u.request_count))
            .collect::<Vec<_>>()
    };
    let at_a =
        c.a.report_usage(&dp, &epoch, &[(month.clone(), 10)])
            .await
            .unwrap();
    assert_eq!(recorded(at_a), vec![(month.clone(), 10)]);
    let at_b =
        c.b.report_usage(&dp, &epoch, &[(month.clone(), 7)])
            .await
            .unwrap();
    assert_eq!(
        recorded(at_b),
        vec![(month.clone(), 10)],
        "a lower count never lowers"
    );
    let (high, low) = ([(month.clone(), 15)], [(month.clone(), 12)]);
    let (a, b) = tokio::join!(
        c.a.report_usage(&dp, &epoch, &high),
        c.b.report_usage(&dp, &epoch, &low),
    );
    assert!(a.is_ok() && b.is_ok());
    let after =
        c.b.report_usage(&dp, &epoch, &[(month.clone(), 0)])
            .await
            .unwrap();
    assert_eq!(recorded(after), vec![(month, 15)]);
}

/// Waits until both nodes' followers listen (and have made their start-up checks).
async fn listening(events: &Events) {
    eventually("both nodes to listen", || async {
        (events.named("cluster_feed.connected").len() >= 2).then_some(())
    })
    .await;
}

/// Ends every `LISTEN` session on `url`'s database; how many.
async fn kill_listeners(url: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .len() as u64;
    drop(client);
    let _ = driver.await;
    killed
}

#[tokio::test]
async fn a_killed_listen_connection_loses_no_change() {
    let (events, _capture) = Events::capture();
    let c = cluster(Duration::from_secs(1)).await;
    let dp = c.b.register_dataplane(licsync_common::VERSION).await;
    let mut stream = c.b.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;
    listening(&events).await;

    let mark = events.mark();
    assert!(kill_listeners(&c.url).await >= 2);
    let id =
        c.a.create_license(&c.a.issuer.license("Through the outage"))
            .await;
    let update = stream.update().await;
    assert_eq!(update.upserted[0].id, id);
    eventually("the follower to notice and reconnect", || async {
        (!events.since(mark, "cluster_feed.lost").is_empty()
            && !events.since(mark, "cluster_feed.connected").is_empty())
        .then_some(())
    })
    .await;
    stream.ack(&update).await;
    // And notifications flow again on the new connection.
    let second = c.a.create_license(&c.a.issuer.license("After")).await;
    assert_eq!(stream.update().await.upserted[0].id, second);
}

#[tokio::test]
async fn each_node_lists_both_nodes_and_who_holds_each_stream() {
    let c = cluster(Duration::from_millis(200)).await;
    let (a_id, b_id) = (node_id(&c.a), node_id(&c.b));
    let dp = c.b.register_dataplane(licsync_common::VERSION).await;
    let mut stream = c.b.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;

    let listed = eventually(
        "node a to list both nodes, b holding one stream",
        || async {
            let (status, body) =
                c.a.call(Method::GET, "/clustering/control-planes", None)
                    .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let nodes = body["data"].as_array().unwrap().clone();
            let b = nodes.iter().find(|n| n["id"] == b_id.as_str())?;
            (nodes.len() == 2 && b["dataplanes_connected"] == 1).then_some(nodes)
        },
    )
    .await;
    for node in &listed {
        assert_eq!(node["version"], licsync_common::VERSION);
        assert_eq!(node["alive"], true);
        assert!(node["last_seen"].as_i64().unwrap() > 0);
        assert!(
            node["advertised_url"]
                .as_str()
                .unwrap()
                .starts_with("https://127.0.0.1:")
        );
    }
    let a_row = listed.iter().find(|n| n["id"] == a_id.as_str()).unwrap();
    assert_eq!(a_row["dataplanes_connected"], 0);
    assert_eq!(a_row["advertised_url"], c.a.config().cluster.cluster_url());

    for cp in [&c.a, &c.b] {
        let row = cp.dataplane(&dp.id).await;
        assert_eq!(row["control_plane"], b_id.as_str(), "{row}");
        assert_eq!(row["connected"], true, "{row}");
    }
    drop(stream);
    eventually("the stream to be released", || async {
        let row = c.a.dataplane(&dp.id).await;
        (row["control_plane"].is_null() && row["connected"] == false).then_some(())
    })
    .await;

    // A node that stops leaves the registry.
    let Cluster { a, b, _b_dir, .. } = c;
    b.shutdown().await;
    let (_, body) = a
        .call(Method::GET, "/clustering/control-planes", None)
        .await;
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(a_id)]);
}

#[tokio::test]
async fn a_node_alone_lists_itself() {
    let cp = ControlPlane::start().await;
    let (status, body) = cp
        .call(Method::GET, "/clustering/control-planes", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = body["data"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["id"], node_id(&cp).as_str());
    assert_eq!(nodes[0]["dataplanes_connected"], 0);
    let (status, _) = cp
        .anonymous(Method::GET, "/clustering/control-planes")
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
