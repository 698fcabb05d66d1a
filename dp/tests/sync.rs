//! The sync client and the whole agent against the real control plane over real mTLS.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::license::TrustedKeys;
use licsync_dp::config::{DpConfig, SyncConfig};
use licsync_dp::output::LicenseFile;
use licsync_dp::registration::RegistrationFile;
use licsync_dp::state::{MemoryStateStore, StateError};
use licsync_dp::sync::{SyncClient, SyncSettings, SyncStatus};
use serde_json::Value;
use support::{
    ControlPlane, ControlPlaneBuilder, Enroll, Events, GUARD, Issuer, eventually, read, wait_for,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff_initial: HumanDuration(Duration::from_millis(20)),
        backoff_max: HumanDuration(Duration::from_millis(100)),
        ..SyncConfig::default()
    }
}

/// A running sync client.
struct Client {
    status: watch::Receiver<SyncStatus>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), StateError>>,
}

impl Client {
    /// `trusted_keys` empty: the keys in the registration file.
    fn start(
        registration: &RegistrationFile,
        trusted_keys: &[&str],
        store: Arc<MemoryStateStore>,
        output: Option<LicenseFile>,
    ) -> Self {
        let keys = TrustedKeys::parse(trusted_keys).unwrap();
        let settings = SyncSettings::new(registration, &fast_sync(), keys).unwrap();
        let client = SyncClient::new(settings, store, output).unwrap();
        let status = client.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(client.run(stop.clone()));
        Self { status, stop, task }
    }

    /// Signals shutdown and waits for the client to end.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("the client stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(!self.status.borrow().connected);
    }
}

/// The data plane as the control plane lists it, once `ready` holds.
async fn dataplane_when(
    cp: &ControlPlane,
    id: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, || async {
        let row = cp.dataplane(id).await;
        ready(&row).then_some(row)
    })
    .await
}

/// Inode and modification time: a rewrite (atomic rename) changes both.
fn identity(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// The ids of the licenses the data plane received after `mark`, sorted.
fn received(events: &Events, mark: usize) -> Vec<String> {
    let mut ids: Vec<String> = events
        .since(mark, "license.received")
        .into_iter()
        .filter_map(|e| e.field("license.id").map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// `(held, revision)` from the Hellos the control plane received after `mark` (its
/// `dataplane.connected` events; the data plane's own carry no `version`).
fn hellos(events: &Events, mark: usize) -> Vec<(String, String)> {
    events
        .since(mark, "dataplane.connected")
        .into_iter()
        .filter(|e| e.field("version").is_some())
        .map(|e| {
            let field = |name| e.field(name).unwrap_or_default().to_owned();
            (field("held"), field("revision"))
        })
        .collect()
}

fn held(store: &MemoryStateStore) -> Vec<String> {
    store
        .snapshot()
        .licenses
        .into_iter()
        .map(|l| l.id)
        .collect()
}

#[tokio::test]
async fn applies_good_licenses_nacks_bad_ones_and_resumes_from_what_it_holds() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Issuer::new(), Issuer::new());
    // The control plane accepts licenses from A and B; this data plane pins A only.
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&a)
        .trusting(&b)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let id = registration.dataplane_id.clone();
    let good_doc = a.license("Good Corp");
    let good = cp.create_license(&good_doc).await;
    let foreign = cp.create_license(&b.license("Foreign Corp")).await;
    let revision = cp.revision().await;

    let license_path = dir.path().join("license.json");
    let store = Arc::new(MemoryStateStore::default());
    let output = LicenseFile::new(&license_path, &[], Duration::from_secs(5));
    let mut client = Client::start(&registration, &[&a.public], store.clone(), Some(output));

    // One update carries both: A's license is applied, B's is NACKed, and the control plane
    // (which knows the data plane by its certificate) says so.
    let row = dataplane_when(&cp, &id, "the control plane to record the NACK", |row| {
        row["sync_status"] == "license_rejected"
    })
    .await;
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(row["revision"], revision, "{row}");
    assert_eq!(row["license_id"], good.as_str(), "{row}");
    // What the Hello said.
    assert_eq!(row["version"], licsync_common::VERSION, "{row}");
    assert_eq!(row["hostname"], licsync_dp::hostname(), "{row}");
    // It held nothing, so it was sent everything.
    assert_eq!(hellos(&events, 0), [("0".to_owned(), "0".to_owned())]);
    let mut both = vec![good.clone(), foreign.clone()];
    both.sort();
    assert_eq!(received(&events, 0), both);
    let rejected = events.named("license.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].field("license.id"), Some(foreign.as_str()));
    assert_eq!(
        rejected[0].field("license.revision"),
        Some(revision.to_string().as_str())
    );
    assert_eq!(
        rejected[0].field("reason"),
        Some("validation failed: the signature does not verify with the 1 trusted key")
    );
    assert_eq!(read(&license_path).as_deref(), Some(good_doc.as_str()));
    assert_eq!(held(&store), [good.as_str()]);
    let status = client.status.borrow().clone();
    assert!(status.connected && status.ready(), "{status:?}");
    assert_eq!(status.revision, revision);

    // The control plane restarts; the client reconnects and says what it holds, so only the
    // license it refused is offered again and the license file is left alone.
    let file_before = identity(&license_path);
    let mark = events.mark();
    let cp = cp.restart().await;
    let row = dataplane_when(&cp, &id, "the data plane to resync", |row| {
        row["connected"] == true && row["sync_status"] != "unknown"
    })
    .await;
    assert_eq!(row["sync_status"], "license_rejected", "{row}");
    assert_eq!(row["license_id"], good.as_str(), "{row}");
    assert_eq!(row["revision"], revision, "{row}");
    assert_eq!(
        hellos(&events, mark),
        [("1".to_owned(), revision.to_string())],
        "the Hello lists the license it holds and the revision it reached"
    );
    assert_eq!(
        received(&events, mark),
        [foreign.as_str()],
        "only the refused license is sent again"
    );
    assert_eq!(held(&store), [good.as_str()]);
    assert_eq!(read(&license_path).as_deref(), Some(good_doc.as_str()));
    assert_eq!(
        identity(&license_path),
        file_before,
        "license file rewritten"
    );
    assert!(events.since(mark, "license.applied").is_empty());

    // The last license it holds is deleted: the file goes. The refused license still exists at
    // the control plane, so the data plane is still reported as having rejected one.
    cp.delete_license(&good).await;
    let revision = cp.revision().await;
    dataplane_when(
        &cp,
        &id,
        "the data plane to acknowledge the deletion",
        |row| row["sync_status"] == "license_rejected" && row["revision"] == revision,
    )
    .await;
    assert!(
        !license_path.exists(),
        "no license held: the file is removed"
    );
    assert!(store.snapshot().licenses.is_empty());
    let status = wait_for("the revision", &mut client.status, |s| {
        s.revision == revision
    })
    .await;
    assert!(status.ready(), "{status:?}");

    client.stop().await;
    dataplane_when(&cp, &id, "the control plane to see the stream end", |row| {
        row["connected"] == false
    })
    .await;
    cp.shutdown().await;
}

#[tokio::test]
async fn a_license_file_that_cannot_be_written_keeps_the_stream_shows_apply_failed_and_recovers() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let id = registration.dataplane_id.clone();
    let document = issuer.license("Blocked Corp");
    let license = cp.create_license(&document).await;
    // A regular file where the license file's directory should be: unwritable, even for root.
    let blocker = dir.path().join("kong");
    std::fs::write(&blocker, b"").unwrap();
    let license_path = blocker.join("license.json");
    let store = Arc::new(MemoryStateStore::default());
    let output = LicenseFile::new(&license_path, &[], Duration::from_secs(5));
    let mut client = Client::start(&registration, &[], store.clone(), Some(output));

    let row = dataplane_when(&cp, &id, "the control plane to show apply_failed", |row| {
        row["sync_status"] == "apply_failed"
    })
    .await;
    assert_eq!(row["connected"], true, "{row}");
    let reason = row["sync_error"].as_str().unwrap();
    assert!(
        reason.contains("could not write its license file") && reason.contains("kong/license.json"),
        "{row}"
    );
    // The agent keeps the (good) license, says why the file is missing, and is not ready.
    assert_eq!(held(&store), [license.as_str()]);
    let status = client.status.borrow().clone();
    assert!(status.connected && !status.ready(), "{status:?}");
    assert!(
        status
            .license_file_error
            .as_deref()
            .is_some_and(|e| e.contains("kong/license.json")),
        "{status:?}"
    );

    // The operator fixes the directory: the file appears without a restart, and the control
    // plane's next retry is acknowledged.
    std::fs::remove_file(&blocker).unwrap();
    eventually("the license file", || async {
        (read(&license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    let row = dataplane_when(&cp, &id, "sync_status normal again", |row| {
        row["sync_status"] == "normal"
    })
    .await;
    assert_eq!(row["sync_error"], Value::Null, "{row}");
    assert_eq!(row["license_id"], license.as_str(), "{row}");
    let status = wait_for("ready", &mut client.status, |s| {
        s.ready() && s.apply_error.is_none()
    })
    .await;
    assert_eq!(status.license_file_error, None);
    assert_eq!(status.licenses_resent, 0, "a retry is not waste");

    // One stream all along: no reconnect.
    assert_eq!(hellos(&events, 0).len(), 1);
    assert!(events.named("dataplane.disconnected").is_empty());
    let failed = events.named("license.write_failed");
    assert_eq!(
        failed.len(),
        1,
        "logged once, not at every retry: {failed:?}"
    );
    assert_eq!(events.named("license.write_recovered").len(), 1);

    client.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_operator_words() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let home = ControlPlaneBuilder::in_dir(&dir.path().join("home"))
        .trusting(&issuer)
        .start()
        .await;
    let other = ControlPlaneBuilder::in_dir(&dir.path().join("other"))
        .trusting(&issuer)
        .start()
        .await;
    // Registered with one control plane, pointed at another (whose CA it trusts) with the
    // client certificate the first one issued.
    let mut registration = home.register(&dir.path().join("dp")).await;
    registration.cluster_url = other.url();
    registration.ca_certificate = other.ca_pem();
    let mut client = Client::start(&registration, &[], Arc::default(), None);
    let status = wait_for("the refusal", &mut client.status, |s| {
        s.last_error.is_some()
    })
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("refused this data plane's certificate"),
        "{error}"
    );
    assert!(error.contains("not issued by the cluster CA"), "{error}");
    assert!(error.contains("licsync-dp registration create"), "{error}");
    assert!(!client.status.borrow().connected);
    assert!(other.dataplanes().await.is_empty());
    client.stop().await;
    other.shutdown().await;
    home.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_in_operator_words() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .dataplane_cert_ttl(Duration::from_secs(2))
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    // Certificate validity is wall-clock time with one-second resolution: let it lapse.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = Client::start(&registration, &[], Arc::default(), None);
    let status = wait_for("the refusal", &mut client.status, |s| {
        s.last_error.is_some()
    })
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("expired") && error.contains("registration renew"),
        "{error}"
    );
    let row = cp.dataplane(&registration.dataplane_id).await;
    assert_eq!(row["connected"], false, "{row}");
    client.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_control_plane_is_retried_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .start()
        .await;
    let mut registration = cp.register(&dir.path().join("dp")).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    registration.cluster_url = format!("https://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let mut client = Client::start(&registration, &[], Arc::default(), None);
    let status = wait_for("a connection failure", &mut client.status, |s| {
        s.last_error.is_some()
    })
    .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains(&registration.cluster_url) && error.contains("refused"),
        "{error}"
    );
    client.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn the_agent_serves_what_it_synced_on_its_local_api_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let config = DpConfig {
        data_dir: dir.path().join("dp/data"),
        registration_file: dir.path().join("dp/registration.yaml"),
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

    let document = issuer.license("Agent Corp");
    let id = cp.create_license(&document).await;
    let revision = cp.revision().await;
    let row = dataplane_when(
        &cp,
        &registration.dataplane_id,
        "the agent to sync",
        |row| row["sync_status"] == "normal" && row["revision"] == revision,
    )
    .await;
    assert_eq!(row["license_id"], id.as_str(), "{row}");
    assert_eq!(read(&license_path).as_deref(), Some(document.as_str()));

    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move { request.send().await.unwrap() }
    };
    let license: Value = get("/license").await.json().await.unwrap();
    assert_eq!(license["id"], id.as_str());
    assert_eq!(license["revision"], revision);
    assert_eq!(
        license["license"]["license"]["payload"]["customer"],
        "Agent Corp"
    );
    let status: Value = get("/status").await.json().await.unwrap();
    assert_eq!(status["connected"], true);
    assert_eq!(status["revision"], revision);
    assert_eq!(status["cluster_url"], cp.url());
    assert_eq!(get("/health/ready").await.status(), 200);

    stop.cancel();
    tokio::time::timeout(GUARD, agent)
        .await
        .expect("the agent stops on shutdown")
        .unwrap()
        .unwrap();
    dataplane_when(
        &cp,
        &registration.dataplane_id,
        "the stream to end",
        |row| row["connected"] == false,
    )
    .await;
    cp.shutdown().await;
}
