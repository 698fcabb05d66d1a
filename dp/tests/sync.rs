//! The sync client and the whole agent against a control plane over real mTLS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::license::TrustedKeys;
use licsync_common::pki::CertificateAuthority;
use licsync_common::proto::{Update, data_plane_message};
use licsync_dp::config::{DpConfig, SyncConfig};
use licsync_dp::output::LicenseFile;
use licsync_dp::registration::RegistrationFile;
use licsync_dp::state::MemoryStateStore;
use licsync_dp::sync::{SyncClient, SyncSettings};
use support::{FakeControlPlane, eventually, read, wire};
use tokio_util::sync::CancellationToken;

fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff_initial: HumanDuration(Duration::from_millis(20)),
        backoff_max: HumanDuration(Duration::from_millis(100)),
        ..SyncConfig::default()
    }
}

fn start_client(
    registration: &RegistrationFile,
    store: Arc<MemoryStateStore>,
    output: Option<LicenseFile>,
) -> (SyncClient, CancellationToken) {
    let settings = SyncSettings::new(registration, &fast_sync(), TrustedKeys::default()).unwrap();
    (
        SyncClient::new(settings, store, output).unwrap(),
        CancellationToken::new(),
    )
}

#[tokio::test]
async fn applies_good_licenses_nacks_bad_ones_and_resumes_from_what_it_holds() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let license_path = dir.path().join("license.json");
    let registration = cp.registration(Duration::from_secs(3600));
    let store = Arc::new(MemoryStateStore::default());
    let output = LicenseFile::new(&license_path, &[], Duration::from_secs(5));
    let (client, stop) = start_client(&registration, store.clone(), Some(output));
    let status = client.status();
    let task = tokio::spawn(client.run(stop.clone()));

    let mut session = cp.next_session().await;
    assert_eq!(
        session.dataplane_id, registration.dataplane_id,
        "identity comes from the certificate"
    );
    let hello = session.hello().await;
    assert!(hello.held.is_empty());
    assert_eq!(hello.revision, 0);
    assert_eq!(hello.version, licsync_common::VERSION);

    let good = cp.license("Good Corp");
    let (stranger, _) = licsync_common::license::SigningKey::generate().unwrap();
    let foreign = support::signed(&stranger, "Foreign Corp");
    session
        .send(Update {
            nonce: "u1".into(),
            revision: 5,
            upserted: vec![wire("a", &good, 100, 4), wire("b", &foreign, 200, 5)],
            removed: vec![],
        })
        .await;
    let Some(data_plane_message::Message::Nack(nack)) = session.recv().await.message else {
        panic!("a license signed by an untrusted key must be NACKed");
    };
    assert_eq!(nack.nonce, "u1");
    assert_eq!(nack.rejected.len(), 1);
    assert_eq!(
        (nack.rejected[0].id.as_str(), nack.rejected[0].revision),
        ("b", 5)
    );
    assert_eq!(nack.rejected[0].reason, "validation failed");
    assert_eq!(read(&license_path).as_deref(), Some(good.as_str()));
    let snapshot = status.borrow().clone();
    assert!(snapshot.connected && snapshot.ready());
    assert_eq!(snapshot.revision, 5);

    // The control plane goes away; the client comes back and says what it holds.
    session.fail(tonic::Status::unavailable("restarting")).await;
    let mut session = cp.next_session().await;
    let hello = session.hello().await;
    let held: Vec<_> = hello
        .held
        .iter()
        .map(|h| (h.id.as_str(), h.revision))
        .collect();
    assert_eq!(held, [("a", 4)]);
    assert_eq!(hello.revision, 5);

    session
        .send(Update {
            nonce: "u2".into(),
            revision: 6,
            upserted: vec![],
            removed: vec!["a".into()],
        })
        .await;
    let reply = session.recv().await;
    assert!(
        matches!(&reply.message, Some(data_plane_message::Message::Ack(ack)) if ack.nonce == "u2"),
        "{reply:?}"
    );
    assert!(
        !license_path.exists(),
        "no license held: the file is removed"
    );
    assert!(store.snapshot().licenses.is_empty());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the client stops promptly on shutdown")
        .unwrap()
        .unwrap();
    assert!(!status.borrow().connected);
    cp.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_operator_words() {
    let cp = FakeControlPlane::start().await;
    let (other_ca, _) =
        CertificateAuthority::generate("other CA", Duration::from_secs(3600)).unwrap();
    let registration = support::registration_with(
        &cp.ca,
        &other_ca,
        &cp.url(),
        &cp.signing_key.public_key_base64(),
        Duration::from_secs(3600),
    );
    let (client, stop) = start_client(&registration, Arc::default(), None);
    let status = client.status();
    let task = tokio::spawn(client.run(stop.clone()));
    let error = eventually("the refusal", || status.borrow().last_error.clone()).await;
    assert!(
        error.contains("refused this data plane's certificate"),
        "{error}"
    );
    assert!(error.contains("not issued by the cluster CA"), "{error}");
    assert!(!status.borrow().connected);
    stop.cancel();
    task.await.unwrap().unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_in_operator_words() {
    let cp = FakeControlPlane::start().await;
    // Valid until the current second; certificate validity has one-second resolution.
    let registration = cp.registration(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (client, stop) = start_client(&registration, Arc::default(), None);
    let status = client.status();
    let task = tokio::spawn(client.run(stop.clone()));
    let error = eventually("the refusal", || status.borrow().last_error.clone()).await;
    assert!(
        error.contains("expired") && error.contains("registration renew"),
        "{error}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn an_unreachable_control_plane_is_retried_and_named() {
    let cp = FakeControlPlane::start().await;
    let mut registration = cp.registration(Duration::from_secs(3600));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    registration.cluster_url = format!("https://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let (client, stop) = start_client(&registration, Arc::default(), None);
    let status = client.status();
    let task = tokio::spawn(client.run(stop.clone()));
    let error = eventually("a connection failure", || {
        status.borrow().last_error.clone()
    })
    .await;
    assert!(
        error.contains(&registration.cluster_url) && error.contains("refused"),
        "{error}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn the_agent_serves_what_it_synced_on_its_local_api_and_stops_on_shutdown() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let registration_file = dir.path().join("registration.yaml");
    cp.registration(Duration::from_secs(3600))
        .save(&registration_file)
        .unwrap();
    let config = DpConfig {
        data_dir: dir.path().join("data"),
        registration_file,
        sync: fast_sync(),
        ..DpConfig::default()
    };
    let license_path = config.output_path();
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", local.local_addr().unwrap());
    let stop = CancellationToken::new();
    let agent = tokio::spawn(licsync_dp::agent::run(
        config,
        local,
        stop.clone().cancelled_owned(),
    ));

    let mut session = cp.next_session().await;
    session.hello().await;
    let document = cp.license("Agent Corp");
    session
        .send(Update {
            nonce: "n".into(),
            revision: 9,
            upserted: vec![wire("lic-1", &document, 300, 9)],
            removed: vec![],
        })
        .await;
    session.recv().await;
    assert_eq!(read(&license_path).as_deref(), Some(document.as_str()));

    let http = reqwest::Client::new();
    let license: serde_json::Value = http
        .get(format!("{base}/license"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(license["id"], "lic-1");
    assert_eq!(license["revision"], 9);
    assert_eq!(
        license["license"]["license"]["payload"]["customer"],
        "Agent Corp"
    );
    let status: serde_json::Value = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connected"], true);
    assert_eq!(status["revision"], 9);
    assert_eq!(status["cluster_url"], cp.url());
    let ready = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .expect("the agent stops promptly")
        .unwrap()
        .unwrap();
    session.closed().await;
    cp.stop().await;
}
