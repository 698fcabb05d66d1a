//! `sync.servers`: the agent against two real control-plane nodes of one cluster (the second
//! started on a copy of the first one's data: same CA, same data planes, same licenses) over
//! real mTLS. It skips a node that is down, moves to the other when its node shuts down,
//! resends nothing it holds, follows a reload of the list, and tries each address of a name.

mod support;

use std::path::Path;
use std::sync::Arc;

use licsync_common::license::TrustedKeys;
use licsync_dp::cluster::ClusterUrl;
use licsync_dp::config::DpConfig;
use licsync_dp::registration::RegistrationFile;
use licsync_dp::state::MemoryStateStore;
use licsync_dp::sync::servers::Lookup;
use licsync_dp::sync::{SyncClient, SyncSettings, SyncStatus};
use serde_json::Value;
use support::agent::{self, Agent};
use support::{
    ControlPlane, ControlPlaneBuilder, Enroll, Events, GUARD, Issuer, eventually, read, wait_for,
};
use tokio_util::sync::CancellationToken;

/// A loopback URL nothing listens on (a port bound, then released).
async fn down_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("https://127.0.0.1:{port}")
}

/// Copies a stopped control plane's data directory (sled store, cluster CA, admin token).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Two nodes of one cluster, and what the first held when it was copied.
struct Nodes {
    cp1: ControlPlane,
    cp2: ControlPlane,
    registration: RegistrationFile,
    /// A license's id and document.
    license: String,
    document: String,
}

/// Two nodes sharing one CA and one data set, each built with `tweak`: the first is started,
/// given a data plane (registered into `dir/dp`) and a license, stopped and copied; both are
/// then started (on new ports).
async fn two_nodes(
    dir: &Path,
    issuer: &Issuer,
    tweak: impl Fn(ControlPlaneBuilder) -> ControlPlaneBuilder,
) -> Nodes {
    let (a, b) = (dir.join("cp1"), dir.join("cp2"));
    let node = |dir: &Path| tweak(ControlPlaneBuilder::in_dir(dir).trusting(issuer));
    let first = node(&a).start().await;
    let registration = first.register(&dir.join("dp")).await;
    let document = issuer.license("Failover Corp");
    let license = first.create_license(&document).await;
    first.shutdown().await;
    copy_dir(&a, &b);
    Nodes {
        cp1: node(&a).start().await,
        cp2: node(&b).start().await,
        registration,
        license,
        document,
    }
}

/// The agent's `GET /status` once `ready` holds.
async fn status_when(agent: &Agent, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async {
        let (_, status) = agent.api.get("/status").await;
        ready(&status).then_some(status)
    })
    .await
}

fn connected_to(status: &Value, url: &str) -> bool {
    status["connected"] == true && status["cluster_url"] == url
}

/// The licenses the agent received after `mark` (`license.received`), by id.
fn received(events: &Events, mark: usize) -> Vec<String> {
    events
        .since(mark, "license.received")
        .into_iter()
        .filter_map(|e| e.field("license.id").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_server_that_is_down_is_skipped_for_the_next_one() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let document = issuer.license("Skip Corp");
    cp.create_license(&document).await;
    let down = down_url().await;

    let mut config = agent::config(dir.path(), &dir.path().join("dp/registration.yaml"));
    config.sync.servers = vec![down.clone(), cp.url()];
    let agent = Agent::start(config).await;
    eventually("the license from the second server", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    status_when(&agent, "connected to the second server", |s| {
        connected_to(s, &cp.url())
    })
    .await;

    let failed = events.named("sync.server_failed");
    let first = failed.first().expect("the down server is reported");
    assert_eq!(first.field("server"), Some(down.as_str()));
    assert_eq!(first.field("next"), Some(cp.url().as_str()));
    assert!(
        first
            .field("error")
            .is_some_and(|e| e.contains("connection refused")),
        "{first:?}"
    );
    // The agent's own connection event names the server (the control plane's has a version).
    let connected = events
        .named("dataplane.connected")
        .into_iter()
        .find(|e| e.field("version").is_none())
        .expect("the agent logged its connection");
    assert_eq!(connected.field("server"), Some(cp.url().as_str()));
    let metrics = reqwest::get(format!("{}/metrics", agent.api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "licsync_dp_sync_server_info{{url=\"{}\"}} 1",
            cp.url()
        )),
        "{metrics}"
    );
    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn when_its_node_shuts_down_the_agent_moves_to_the_other_and_resends_nothing() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let Nodes {
        cp1,
        cp2,
        license,
        document,
        ..
    } = two_nodes(dir.path(), &issuer, |builder| builder).await;
    let revision = cp2.revision().await;
    assert_eq!(
        cp1.revision().await,
        revision,
        "the nodes hold the same data"
    );

    // The registration file names the first node's old address: sync.servers overrides it.
    let mut config = agent::config(dir.path(), &dir.path().join("dp/registration.yaml"));
    config.sync.servers = vec![cp1.url(), cp2.url()];
    let agent = Agent::start(config).await;
    let status = status_when(&agent, "synced from the first node", |s| {
        connected_to(s, &cp1.url()) && s["revision"] == revision
    })
    .await;
    assert_eq!(
        read(&agent.license_path).as_deref(),
        Some(document.as_str())
    );
    assert_eq!(status["licenses_resent"], 0, "{status}");
    assert_eq!(received(&events, 0), [license]);

    let mark = events.mark();
    cp1.shutdown().await;
    let status = status_when(&agent, "connected to the second node", |s| {
        connected_to(s, &cp2.url())
    })
    .await;
    // Its Hello said what it holds, so the second node had nothing to send.
    let hello = events
        .wait_for_event_since(mark, "dataplane.connected", GUARD, |e| {
            e.field("version").is_some()
        })
        .await;
    assert_eq!(hello.field("held"), Some("1"), "{hello:?}");
    assert_eq!(
        hello.field("revision"),
        Some(revision.to_string().as_str()),
        "{hello:?}"
    );
    assert_eq!(status["revision"], revision, "{status}");

    // A license written at the second node arrives, and only it.
    let next = cp2
        .create_license(&issuer.license("After Failover Corp"))
        .await;
    let new_revision = cp2.revision().await;
    let status = status_when(&agent, "the license written at the second node", |s| {
        s["revision"] == new_revision
    })
    .await;
    assert_eq!(status["licenses_resent"], 0, "{status}");
    assert_eq!(
        received(&events, mark),
        [next],
        "nothing held was sent again"
    );
    assert!(
        events.since(mark, "sync.server_failed").len() <= 1,
        "the node that shut down is tried at most once per round"
    );
    agent.stop().await;
    cp2.shutdown().await;
}

#[tokio::test]
async fn a_reloaded_server_list_moves_the_stream_only_when_its_server_is_dropped() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let Nodes {
        cp1, cp2, document, ..
    } = two_nodes(dir.path(), &issuer, |builder| builder).await;
    let mut config = agent::config(dir.path(), &dir.path().join("dp/registration.yaml"));
    config.sync.servers = vec![cp1.url()];
    let (reloads, reloads_rx) = tokio::sync::mpsc::channel::<DpConfig>(4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api =
        support::usage_agent::LocalApi::new(format!("http://{}", listener.local_addr().unwrap()));
    let stop = CancellationToken::new();
    let task = tokio::spawn(licsync_dp::agent::run_reloadable(
        config.clone(),
        listener,
        stop.clone().cancelled_owned(),
        reloads_rx,
    ));
    api.wait_until_up().await;
    let status_is = |url: String| {
        let api = &api;
        async move {
            eventually(&format!("connected to {url}"), || async {
                let (_, status) = api.get("/status").await;
                connected_to(&status, &url).then_some(status)
            })
            .await
        }
    };
    status_is(cp1.url()).await;
    eventually("the license file", || async {
        (read(&config.output_path()).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;

    // Still listed (second now): the stream stays.
    let mark = events.mark();
    let mut next = config.clone();
    next.sync.servers = vec![cp2.url(), cp1.url()];
    reloads.send(next.clone()).await.unwrap();
    events
        .wait_for_event_since(mark, "config.reloaded", GUARD, |e| {
            e.field("servers_changed") == Some("true")
        })
        .await;
    assert!(events.since(mark, "config.restart_needed").is_empty());

    // Dropped: the agent moves to the node still listed, without a restart.
    next.sync.servers = vec![cp2.url()];
    reloads.send(next).await.unwrap();
    let status = status_is(cp2.url()).await;
    assert_eq!(status["licenses_resent"], 0, "{status}");
    let left = events
        .wait_for_event_since(mark, "dataplane.disconnected", GUARD, |e| {
            e.field("reason") == Some("no longer in sync.servers")
        })
        .await;
    assert_eq!(left.field("server"), Some(cp1.url().as_str()));
    // One reconnection in all: the first reload kept the stream on the first node.
    let reconnections: Vec<_> = events
        .since(mark, "dataplane.connected")
        .into_iter()
        .filter(|e| e.field("version").is_none())
        .collect();
    assert_eq!(reconnections.len(), 1, "{reconnections:?}");
    assert_eq!(reconnections[0].field("server"), Some(cp2.url().as_str()));

    stop.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
    cp1.shutdown().await;
    cp2.shutdown().await;
}

#[tokio::test]
async fn each_address_of_a_name_is_tried_with_the_certificate_checked_against_the_name() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let license = cp
        .create_license(&issuer.license("Many Addresses Corp"))
        .await;
    let port = cp.config().cluster.listen.port();
    let down = down_url().await;
    let down_port = down.rsplit(':').next().unwrap().to_owned();
    // "localhost" has two addresses here: the first refuses connections, the second is the
    // node. Connections go to the addresses; the node's certificate is checked against
    // "localhost", one of its cluster.server_names.
    let answers = [
        format!("127.0.0.1:{down_port}").parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    ];
    // "cp.test" has the same two addresses, but the node's certificate does not name it.
    let lookup: Lookup = Arc::new(move |authority: String| {
        let answers = answers.to_vec();
        Box::pin(async move {
            if authority.starts_with("localhost:") || authority.starts_with("cp.test:") {
                Ok(answers)
            } else {
                Err(std::io::Error::other(format!("unknown host {authority}")))
            }
        })
    });
    let start = |url: &str| {
        let store = Arc::new(MemoryStateStore::default());
        let sync = agent::config(dir.path(), dir.path()).sync;
        let settings = SyncSettings::new(&registration, &sync, TrustedKeys::default()).unwrap();
        let client = SyncClient::new(settings, store.clone(), None)
            .unwrap()
            .with_servers(vec![ClusterUrl::parse(url).unwrap()])
            .with_lookup(lookup.clone());
        let status = client.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(client.run(stop.clone()));
        (store, status, stop, task)
    };

    let (_, mut status, stop, task) = start(&format!("https://cp.test:{port}"));
    let refused = wait_for("the name to be refused", &mut status, |s: &SyncStatus| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not valid for 'cp.test'"))
    })
    .await;
    assert!(!refused.connected, "{refused:?}");
    stop.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("the client stops")
        .unwrap()
        .unwrap();

    let url = format!("https://localhost:{port}");
    let (store, mut status, stop, task) = start(&url);
    wait_for("connected", &mut status, |s: &SyncStatus| {
        s.connected && s.revision > 0
    })
    .await;
    assert_eq!(
        store
            .snapshot()
            .licenses
            .into_iter()
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        [license]
    );
    let failed: Vec<_> = events
        .named("sync.server_failed")
        .into_iter()
        .filter(|e| e.field("server").is_some_and(|s| s.starts_with(&url)))
        .collect();
    let first = failed.first().expect("the first address is reported");
    assert_eq!(
        first.field("server"),
        Some(format!("{url} (127.0.0.1:{down_port})").as_str())
    );
    assert_eq!(
        first.field("next"),
        Some(format!("{url} (127.0.0.1:{port})").as_str())
    );
    stop.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("the client stops")
        .unwrap()
        .unwrap();
    cp.shutdown().await;
}

#[tokio::test]
async fn the_certificate_is_rotated_at_the_node_in_use() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    // Certificates live 8 s: rotated 5.3 s to 6 s after issuance.
    let Nodes {
        cp1,
        cp2,
        registration,
        document,
        ..
    } = two_nodes(dir.path(), &issuer, |builder| {
        builder.dataplane_cert_ttl(std::time::Duration::from_secs(8))
    })
    .await;
    cp1.shutdown().await;
    // The registration file names the first node's first address, where nothing listens any
    // more: only sync.servers leads to the second node, so a rotation can only succeed there.
    let path = dir.path().join("dp/registration.yaml");
    let mut config = agent::config(&dir.path().join("agent"), &path);
    config.sync.servers = vec![cp2.url()];
    let agent = Agent::start(config).await;
    eventually("the license file", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    let rotated = events
        .wait_for_event("cert.rotated", GUARD, |e| {
            e.field("previous_serial").is_some()
        })
        .await;
    assert_eq!(
        rotated.field("dataplane.id"),
        Some(registration.dataplane_id.as_str())
    );
    assert!(events.named("cert.rotation_failed").is_empty());
    let on_disk = RegistrationFile::load(&path).unwrap();
    assert_eq!(
        Some(on_disk.certificate_info().unwrap().serial.as_str()),
        rotated.field("serial")
    );
    status_when(&agent, "reconnected with the new certificate", |s| {
        connected_to(s, &cp2.url())
    })
    .await;
    agent.stop().await;
    cp2.shutdown().await;
}

#[tokio::test]
async fn with_every_server_down_each_round_tries_them_all_in_order_then_waits() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start().await;
    let registration = cp.register(&dir.path().join("dp")).await;
    cp.shutdown().await;
    let down = [down_url().await, down_url().await, down_url().await];
    let sync = agent::config(dir.path(), dir.path()).sync;
    let settings = SyncSettings::new(&registration, &sync, TrustedKeys::default()).unwrap();
    let servers = down.iter().map(|u| ClusterUrl::parse(u).unwrap()).collect();
    let client = SyncClient::new(settings, Arc::new(MemoryStateStore::default()), None)
        .unwrap()
        .with_servers(servers);
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(stop.clone()));

    // Three rounds, as the log tells them: within a round each failure names the next server
    // (tried at once); the round's last failure is `sync.connect_failed`, then the delay.
    let attempts = eventually("three rounds", || async {
        let attempts: Vec<(String, String)> = events
            .lines()
            .iter()
            .filter(|l| l["event"] == "sync.server_failed" || l["event"] == "sync.connect_failed")
            .map(|l| {
                let field = |name: &str| l[name].as_str().unwrap_or_default().to_owned();
                (field("server"), field("next"))
            })
            .collect();
        (attempts.len() >= 9).then_some(attempts)
    })
    .await;
    let [a, b, c] = &down;
    let round = [
        (a.clone(), b.clone()),
        (b.clone(), c.clone()),
        (c.clone(), String::new()),
    ];
    assert_eq!(
        attempts[..9],
        [round.clone(), round.clone(), round].concat()
    );
    stop.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("the client stops")
        .unwrap()
        .unwrap();
}
