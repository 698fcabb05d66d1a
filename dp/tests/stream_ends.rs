//! The whole agent against the real control plane over real mTLS, when the control plane ends
//! its stream: it reads why (revoked, replaced, an unanswered update, shutdown), logs it with
//! an event, and acts on it; and the heartbeats it sends are answered.

mod support;

use std::path::Path;
use std::time::Duration;

use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{DataPlaneMessage, Hello};
use licsync_common::stream_end::EndReason;
use licsync_dp::cluster::ConnectOptions;
use licsync_dp::registration::RegistrationFile;
use licsync_dp::sync::Identity;
use serde_json::Value;
use support::agent::{self, Agent};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Event, Events, Issuer, eventually};
use tokio_stream::wrappers::ReceiverStream;

/// A control plane (changed by `tweak`) and one registered data plane's file in `dir/dp`.
async fn cluster(
    dir: &Path,
    tweak: impl FnOnce(ControlPlaneBuilder) -> ControlPlaneBuilder,
) -> (ControlPlane, RegistrationFile) {
    let issuer = Issuer::new();
    let cp = tweak(ControlPlaneBuilder::in_dir(&dir.join("cp")).trusting(&issuer))
        .start()
        .await;
    let registration = cp.register(&dir.join("dp")).await;
    (cp, registration)
}

/// The agent's `GET /status` once `ready` holds.
async fn status_when(agent: &Agent, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let (_, status) = agent.api.get("/status").await;
        ready(&status).then_some(status)
    })
    .await
}

/// The first event `name` the agent logged with `cause` (the in-process control plane logs
/// `dataplane.disconnected` too, with the data plane's id and its own short reason).
async fn event_with_cause(events: &Events, name: &str, cause: &str) -> Event {
    eventually(&format!("{name} with cause {cause}"), || async {
        events.named(name).into_iter().find(|e| {
            e.field("cause") == Some(cause)
                && e.field("reason")
                    .is_some_and(|r| r.starts_with("the control plane at "))
        })
    })
    .await
}

#[tokio::test]
async fn a_revoked_agent_says_how_to_register_again_and_stops_retrying_until_it_is() {
    let (events, _guard) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let (cp, registration) = cluster(dir.path(), |b| b).await;
    let file = dir.path().join("dp/registration.yaml");
    let agent = Agent::start(agent::config(&dir.path().join("agent"), &file)).await;
    status_when(&agent, "the agent to connect", |s| s["connected"] == true).await;

    let id = registration.dataplane_id.clone();
    let (status, _) = cp
        .call(
            reqwest::Method::DELETE,
            &format!("/clustering/data-planes/{id}"),
            None,
        )
        .await;
    assert!(status.is_success());

    let revoked = eventually("sync.revoked", || async {
        events.named("sync.revoked").into_iter().next()
    })
    .await;
    let command = revoked.field("command").unwrap();
    assert!(
        command.starts_with("licsync-dp registration create --token <NEW_TOKEN>"),
        "{revoked:?}"
    );
    assert!(
        command.contains(&format!("--server {}", cp.url())),
        "{command}"
    );
    assert!(command.contains("--ca-cert-hash sha256:"), "{command}");
    assert!(
        revoked
            .field("reason")
            .is_some_and(|r| r.contains("revoked")),
        "{revoked:?}"
    );
    assert_eq!(revoked.field("retry_in_s"), Some("600"));
    let shown = status_when(&agent, "/status to show the revocation", |s| {
        s["revoked"] == true
    })
    .await;
    assert_eq!(shown["connected"], false);
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("licsync-dp registration create")),
        "{shown}"
    );

    // Connection attempts, counted at the control plane over a window: none. (With the
    // test's 20-200 ms backoff, an agent that kept retrying would be refused many times.)
    let refused = || {
        events
            .named("dataplane.refused")
            .iter()
            .filter(|e| e.field("reason").is_some_and(|r| r.contains(&id)))
            .count()
    };
    let before = refused();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(refused(), before, "the revoked agent reconnected");

    // Registering again and putting the new file in place ends the wait at once.
    let renewed = cp.register(&dir.path().join("again")).await;
    std::fs::rename(dir.path().join("again/registration.yaml"), &file).unwrap();
    let back = status_when(&agent, "the re-registered agent to connect", |s| {
        s["connected"] == true && s["dataplane_id"] == renewed.dataplane_id.as_str()
    })
    .await;
    assert_eq!(back["revoked"], false);
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn a_replaced_stream_is_reported_as_a_possible_second_agent_and_the_agent_reconnects() {
    let (events, _guard) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let (cp, registration) = cluster(dir.path(), |b| b).await;
    let file = dir.path().join("dp/registration.yaml");
    let agent = Agent::start(agent::config(&dir.path().join("agent"), &file)).await;
    status_when(&agent, "the agent to connect", |s| s["connected"] == true).await;

    // A second agent with the same registration file opens its stream.
    let identity = Identity::from_file(&registration, false).unwrap();
    let channel = identity
        .endpoint(ConnectOptions::default())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DataPlaneMessage {
        message: Some(DpMessage::Hello(Hello {
            version: licsync_common::VERSION.into(),
            hostname: "the-other-host".into(),
            held: Vec::new(),
            revision: 0,
        })),
    })
    .await
    .unwrap();
    let mut second = LicenseSyncClient::new(channel)
        .sync(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let replaced = event_with_cause(&events, "sync.replaced", "replaced").await;
    assert!(
        replaced.field("reason").is_some_and(|r| {
            r.contains("replaced by a newer stream") && r.contains("same identity")
        }),
        "{replaced:?}"
    );
    // It reconnects as usual, which in turn ends the second stream the same way.
    let ended = loop {
        match second.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the second stream ended with OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        EndReason::of(&ended),
        Some(EndReason::Replaced),
        "{ended:?}"
    );
    assert_eq!(ended.code(), tonic::Code::Aborted);
    status_when(&agent, "the agent to reconnect", |s| s["connected"] == true).await;
    drop(tx);
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_update_is_reported_in_the_control_planes_words() {
    let (events, _guard) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .ack_timeout(Duration::from_secs(1))
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let config = agent::config(
        &dir.path().join("agent"),
        &dir.path().join("dp/registration.yaml"),
    );
    let license_path = config.license.output_path.clone().unwrap();
    let agent = Agent::start(config).await;
    status_when(&agent, "the agent to connect", |s| s["connected"] == true).await;
    // A FIFO where the license file goes: the agent's write of the next license blocks
    // reading it (a hung disk), so the update goes unanswered until the test lets it go.
    let made = std::process::Command::new("mkfifo")
        .arg(&license_path)
        .status()
        .unwrap();
    assert!(made.success());
    cp.create_license(&issuer.license("Slow Corp")).await;

    let gave_up = eventually("the control plane to give up on the update", || async {
        events.named("sync.ack_timeout").into_iter().next()
    })
    .await;
    assert_eq!(
        gave_up.field("dataplane.id"),
        Some(registration.dataplane_id.as_str())
    );
    // Opening the FIFO for writing (and closing it) ends the agent's blocked read.
    tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(license_path))
        .await
        .unwrap()
        .unwrap();

    let told = event_with_cause(&events, "dataplane.disconnected", "ack_timeout").await;
    let reason = told.field("reason").unwrap();
    assert!(
        reason.contains(&format!(
            "no answer to update {} in 1 s",
            gave_up.field("nonce").unwrap()
        )),
        "{told:?}"
    );
    // It reconnects and, holding the license now, is brought up to date without a resend.
    status_when(&agent, "the agent to reconnect", |s| s["connected"] == true).await;
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn a_control_plane_shutdown_is_reported_and_the_agent_comes_back_after_a_restart() {
    let (events, _guard) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let (cp, _) = cluster(dir.path(), |b| b).await;
    let file = dir.path().join("dp/registration.yaml");
    let agent = Agent::start(agent::config(&dir.path().join("agent"), &file)).await;
    status_when(&agent, "the agent to connect", |s| s["connected"] == true).await;

    let cp = cp.restart().await;
    let told = event_with_cause(&events, "dataplane.disconnected", "shutdown").await;
    assert!(
        told.field("reason")
            .is_some_and(|r| r.contains("control plane shutting down")),
        "{told:?}"
    );
    let mark = events.mark();
    status_when(&agent, "the agent to reconnect", |s| s["connected"] == true).await;
    assert!(
        events.since(mark, "sync.revoked").is_empty(),
        "a shutdown is not a refusal"
    );
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn heartbeats_are_answered_at_the_agent_and_keep_last_seen_fresh_at_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, registration) = cluster(dir.path(), |b| b).await;
    let mut config = agent::config(
        &dir.path().join("agent"),
        &dir.path().join("dp/registration.yaml"),
    );
    config.sync.heartbeat_interval =
        licsync_common::duration::HumanDuration(Duration::from_millis(200));
    let agent = Agent::start(config).await;
    status_when(&agent, "the agent to connect", |s| s["connected"] == true).await;
    let id = registration.dataplane_id.as_str();
    let first = cp.dataplane(id).await["last_seen"].as_i64().unwrap();

    let answered = status_when(&agent, "a heartbeat answered by the control plane", |s| {
        s["last_heartbeat"].is_i64()
    })
    .await;
    assert_eq!(answered["connected"], true);
    // last_seen is whole seconds: polled until it moves on, not timed.
    eventually("last_seen to advance", || async {
        let seen = cp.dataplane(id).await["last_seen"].as_i64()?;
        (seen > first).then_some(seen)
    })
    .await;
    agent.stop().await;
    cp.shutdown().await;
}
