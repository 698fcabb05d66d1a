//! Several control-plane nodes on one PostgreSQL database, in-process, over real mutual TLS:
//! they share the cluster CA, the report key and the admin tokens, each has a server
//! certificate of its own, a data plane registered at one node syncs at another, a node with
//! another storage key refuses to start, and nodes starting together on an empty database end
//! with one CA and one bootstrap token.

use licsync_cp::server::{Listeners, run};
use licsync_testkit::postgres::fresh_database;
use licsync_testkit::{ControlPlane, send};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

/// Whether `node`'s cluster listener proves, over TLS verified against the cluster CA, that
/// it is `name`.
async fn serves_as(node: &ControlPlane, name: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    let ca = licsync_common::pki::first_certificate(&node.ca_pem(), "ca").unwrap();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.config().cluster.listen)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(name, tcp).await.is_ok()
}

/// How many API tokens the database at `url` holds.
async fn api_tokens(url: &str) -> usize {
    use licsync_cp::store::PrincipalStore;
    let store = licsync_cp::store::PostgresStore::open(url, None, 1)
        .await
        .unwrap();
    store.api_tokens().await.unwrap().len()
}

/// The report's public key as `node` serves it, asked with `token`.
async fn report_key(node: &ControlPlane, token: &str) -> String {
    let (status, body) = send(
        node.anonymous(Method::GET, "/license/report/key")
            .bearer_auth(token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["public_key"].as_str().unwrap().to_owned()
}

/// Whether `token` is accepted by `node`'s Admin API.
async fn accepts(node: &ControlPlane, token: &str) -> bool {
    let (status, _) = send(node.anonymous(Method::GET, "/status").bearer_auth(token)).await;
    status == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_ca_report_key_tokens_and_data_planes() {
    let url = fresh_database().await;
    let first = ControlPlane::builder().postgres(&url).start().await;
    let license = first
        .create_license(&first.issuer.license("Shared Corp"))
        .await;
    let dp = first.register_dataplane(licsync_common::VERSION).await;
    let second = ControlPlane::builder()
        .postgres(&url)
        .trusting(&first.issuer)
        .admin_token(first.admin_token())
        .config(|c| c.cluster.server_names.push("node-2.test".into()))
        .start()
        .await;

    assert_eq!(first.ca_fingerprint(), second.ca_fingerprint());
    assert_eq!(first.ca_pem(), second.ca_pem());
    let token = first.admin_token();
    let public = report_key(&first, token).await;
    assert_eq!(report_key(&second, token).await, public);
    for node in [&first, &second] {
        let file = std::fs::read_to_string(node.pki_dir().join("report.pub")).unwrap();
        assert_eq!(file, public, "report.pub is the shared key's");
    }
    assert_ne!(
        first.server_serial().await,
        second.server_serial().await,
        "each node has its own server certificate"
    );
    assert!(serves_as(&second, "node-2.test").await, "for its own names");
    assert!(!serves_as(&first, "node-2.test").await);
    assert!(serves_as(&first, "localhost").await);
    for node in [&first, &second] {
        assert!(
            !node.pki_dir().join("ca.key").exists() && !node.pki_dir().join("report.key").exists(),
            "private keys stay in the database"
        );
    }
    // Only the node that bootstrapped wrote the token; it works at both.
    assert!(first.data_dir().join("admin-token").exists());
    assert!(!second.data_dir().join("admin-token").exists());
    assert!(accepts(&second, first.admin_token()).await);
    assert!(!accepts(&second, "lsa_not-a-token").await);
    assert_eq!(api_tokens(&url).await, 1);

    // The data plane registered at the first node syncs at the second with its certificate.
    let mut stream = second.sync(&dp, licsync_common::VERSION).await.unwrap();
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1);
    assert_eq!(update.upserted[0].id, license);
    stream.ack(&update).await;
    assert_eq!(second.dataplane(&dp.id).await["id"], dp.id.as_str());

    // A restart keeps the same CA (it is loaded, not created again).
    let fingerprint = first.ca_fingerprint();
    let first = first.restart().await;
    assert_eq!(first.ca_fingerprint(), fingerprint);
    second.shutdown().await;
    first.shutdown().await;
}

/// `serve` with `config`, expected to fail at start; its error.
async fn refused_start(config: licsync_cp::config::CpConfig) -> String {
    let listeners = Listeners::bind(&config).await.unwrap();
    let outcome = tokio::time::timeout(
        licsync_testkit::GUARD,
        run(config, listeners, CancellationToken::new()),
    )
    .await
    .expect("a refused start ends at once");
    outcome
        .expect_err("started with another storage key")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_storage_key_refuses_to_start_naming_the_key() {
    let url = fresh_database().await;
    let first = ControlPlane::builder().postgres(&url).start().await;
    let dir = tempfile::tempdir().unwrap();
    let other_key = dir.path().join("other.key");
    licsync_cp::store::storage_key::StorageKey::generate_file(&other_key).unwrap();
    let mut config = first.config().clone();
    config.data_dir = dir.path().join("data");
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.cluster.listen = ([127, 0, 0, 1], 0).into();
    config.status.listen = ([127, 0, 0, 1], 0).into();
    config.storage.encryption_key_file = Some(other_key);
    let message = refused_start(config).await;
    assert!(
        message.contains("storage.encryption_key_file") && message.contains("cluster_ca"),
        "{message}"
    );
    assert!(
        !dir.path().join("data").join("admin-token").exists(),
        "nothing bootstrapped"
    );
    // The first node is untouched.
    let (status, _) = first.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK);
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_an_empty_database_end_with_one_ca_and_one_token() {
    let url = fresh_database().await;
    // A node that writes no token file gets this one, which no node accepts.
    let unknown = "lsa_unknown";
    let start = |_| {
        ControlPlane::builder()
            .postgres(&url)
            .admin_token(unknown)
            .start()
    };
    let (a, b, c) = tokio::join!(start(0), start(1), start(2));
    let nodes = [a, b, c];
    let written: Vec<String> = nodes
        .iter()
        .filter_map(|node| std::fs::read_to_string(node.data_dir().join("admin-token")).ok())
        .collect();
    assert_eq!(written.len(), 1, "exactly one node bootstrapped");
    let token = written[0].trim();
    for node in &nodes {
        assert_eq!(node.ca_fingerprint(), nodes[0].ca_fingerprint());
        assert_eq!(
            report_key(node, token).await,
            report_key(&nodes[0], token).await
        );
        assert!(accepts(node, token).await);
        assert!(!accepts(node, unknown).await);
    }
    assert_eq!(api_tokens(&url).await, 1);
    for node in nodes {
        node.shutdown().await;
    }
}
