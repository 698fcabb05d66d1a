//! Three `licsync-cp` processes on one real PostgreSQL serve one fleet of real `licsync-dp`
//! agents, spread over them: a license written at any node reaches every agent; a data plane
//! revoked at one node is cut off at the node holding its stream; an agent whose node is
//! killed with SIGKILL fails over to another (`sync.servers`) and ends with the same license
//! as the rest; and while the database is stopped, writes answer 503 and every agent keeps
//! serving its license, then the fleet catches up once the database returns.
//!
//! It stops the test binary's PostgreSQL server, so it is alone in this file.

use std::path::Path;
use std::time::Duration;

use licsync_testkit::postgres::{fresh_database, start_server, stop_server};
use licsync_testkit::{Issuer, eventually};
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::{binary, run};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// The TOML that makes a node of the cluster on `url`, sealing its secrets with `key`.
fn node_config(url: &str, key: &Path) -> String {
    format!(
        r#"
[storage]
backend = "postgres"
encryption_key_file = "{key}"
[storage.postgres]
url = "{url}"
poll_interval = "1s"
"#,
        key = key.display(),
    )
}

/// The `sync.servers` override: `first`, then the others in order.
fn servers(nodes: &[&Cp], first: usize) -> String {
    let urls: Vec<&str> = (0..nodes.len())
        .map(|i| nodes[(first + i) % nodes.len()].cluster_url.as_str())
        .collect();
    format!(
        "[sync]\nservers = {}\n",
        serde_json::to_string(&urls).unwrap()
    )
}

/// The row of `GET /clustering/data-planes` at `node` for the data plane named `name`.
async fn dataplane(node: &Cp, name: &str) -> Option<Value> {
    let (status, body) = node
        .call(Method::GET, "/clustering/data-planes", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()?
        .iter()
        .find(|row| row["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_serve_one_fleet_through_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let url = fresh_database().await;
    let key = tmp.path().join("storage.key");
    let (code, out, err) = run(
        &binary("licsync-cp"),
        &["storage", "keygen", "--output", key.to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let config = node_config(&url, &key);

    // The first node initialises the database; the others join it and share its CA and its
    // admin token.
    let first = Cp::start(&tmp.path().join("cp1"), &[&issuer.public], &config).await;
    assert!(!first.token.is_empty(), "the first node wrote admin-token");
    let mut nodes = vec![first];
    for n in 2..=3 {
        let mut node = Cp::start(
            &tmp.path().join(format!("cp{n}")),
            &[&issuer.public],
            &config,
        )
        .await;
        assert!(
            node.token.is_empty(),
            "only the first node writes admin-token"
        );
        node.token = nodes[0].token.clone();
        assert_eq!(
            node.ca_fingerprint, nodes[0].ca_fingerprint,
            "one cluster CA"
        );
        nodes.push(node);
    }
    let listed = eventually("every node lists the three nodes", || async {
        let (status, body) = nodes[1]
            .call(Method::GET, "/clustering/control-planes", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["data"].as_array().cloned().unwrap_or_default();
        (rows.len() == 3).then_some(rows)
    })
    .await;
    for node in &nodes {
        assert!(
            listed
                .iter()
                .any(|row| row["advertised_url"] == node.cluster_url.as_str()),
            "{} in {listed:?}",
            node.cluster_url
        );
    }

    // One agent registered at each node, each told about every node, its own first.
    let mut agents = Vec::new();
    {
        let refs: Vec<&Cp> = nodes.iter().collect();
        for (i, node) in nodes.iter().enumerate() {
            let dir = tmp.path().join(format!("dp{}", i + 1));
            Dp::register_ok(node, &dir, &format!("edge-{}", i + 1)).await;
            agents.push(Dp::start(&dir, &servers(&refs, i)).await);
        }
    }
    for agent in &agents {
        agent
            .process
            .logs
            .wait_for_event("dataplane.connected", T, |_| true)
            .await;
    }

    // A write at the second node reaches agents connected to every node, and any node shows
    // which node holds each agent's stream.
    let first_license = issuer.license("Written at node 2");
    nodes[1].create_license(&first_license).await;
    for agent in &agents {
        agent.wait_for_license(Some(&first_license), T).await;
    }
    let holders: Vec<String> = {
        let mut holders = Vec::new();
        for i in 0..agents.len() {
            let name = format!("edge-{}", i + 1);
            let holder = eventually("the node holding the stream is shown", || async {
                let row = dataplane(&nodes[2], &name).await?;
                row["control_plane"].as_str().map(str::to_owned)
            })
            .await;
            holders.push(holder);
        }
        holders
    };
    assert_eq!(
        holders
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "each agent is held by its own node: {holders:?}"
    );

    // Revoked at node 1, the third agent (held by node 3) is cut off there.
    let third = dataplane(&nodes[0], "edge-3").await.expect("edge-3 listed");
    let third_id = third["id"].as_str().unwrap();
    let (status, body) = nodes[0]
        .call(
            Method::DELETE,
            &format!("/clustering/data-planes/{third_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    agents[2]
        .process
        .logs
        .wait_for_event("sync.revoked", T, |_| true)
        .await;

    // Node 1 dies without a chance to say goodbye: its agent moves to another node and gets
    // what is written there next.
    let mark = agents[0].process.logs.mark();
    nodes[0].kill();
    agents[0]
        .process
        .logs
        .wait_for_event_since(mark, "dataplane.connected", T, |_| true)
        .await;
    let second_license = issuer.license("Written at node 3 after node 1 died");
    nodes[2].create_license(&second_license).await;
    for agent in &agents[..2] {
        agent.wait_for_license(Some(&second_license), T).await;
    }

    // The database goes away: writes answer 503, nothing changes at the agents.
    stop_server();
    let (status, body) = nodes[1]
        .call(
            Method::POST,
            "/licenses",
            Some(json!({ "payload": issuer.license("Refused while the database is down") })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("storage unavailable"),
        "{body}"
    );
    for agent in &agents[..2] {
        assert_eq!(agent.license().as_deref(), Some(second_license.as_str()));
    }

    // It returns: the next write reaches both live agents.
    start_server();
    let third_license = issuer.license("Written at node 3 after the database returned");
    eventually("node 3 accepts writes again", || async {
        let (status, _) = nodes[2]
            .call(
                Method::POST,
                "/licenses",
                Some(json!({ "payload": third_license })),
            )
            .await;
        (status == StatusCode::CREATED).then_some(())
    })
    .await;
    for agent in &agents[..2] {
        agent.wait_for_license(Some(&third_license), T).await;
    }
}
