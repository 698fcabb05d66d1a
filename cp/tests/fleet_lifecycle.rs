//! The fleet's lifecycle at the control plane over real mutual TLS: revocation cuts a live data
//! plane off, a data plane on an incompatible version stays visible but gets no update, health
//! follows last contact, and long-silent data planes are purged.

use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_testkit::{ControlPlane, Events, eventually};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tonic::Code;

#[tokio::test]
async fn revocation_closes_the_live_stream_and_refuses_the_data_plane_from_then_on() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let other = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    stream.update().await;
    assert_eq!(cp.find_dataplane(&dp.id).await.unwrap()["connected"], true);

    let path = format!("/clustering/data-planes/{}", dp.id);
    let (status, body) = cp.call(Method::DELETE, &path, None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    // The open stream ends (the design closes it at once; polled here, not timed).
    stream.ended().await;
    let revoked = events.named("dataplane.revoked");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].field("dataplane.id"), Some(dp.id.as_str()));
    assert_eq!(revoked[0].field("dataplane.name"), Some("edge-1"));
    let closed = eventually("the stream's disconnect line", || async {
        events
            .named("dataplane.disconnected")
            .into_iter()
            .find(|e| e.field("dataplane.id") == Some(dp.id.as_str()))
    })
    .await;
    assert_eq!(closed.field("reason"), Some("data plane revoked"));

    // Gone from the listing, and a second revocation finds nothing.
    assert_eq!(cp.find_dataplane(&dp.id).await, None);
    let (_, listing) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    let ids: Vec<&str> = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.id.as_str()]);
    let (status, _) = cp.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/clustering/data-planes/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Its reconnect and its rotation are refused, and the log says why.
    let refused = cp.sync(&dp, licsync_common::VERSION).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    let refused = cp.rotate(&dp).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let logged = events.named("dataplane.refused");
    assert!(
        logged
            .iter()
            .any(|e| e.field("reason").is_some_and(|r| r.contains("was revoked"))),
        "{logged:?}"
    );
    // The other data plane is untouched.
    cp.sync(&other, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
}

#[tokio::test]
async fn an_incompatible_version_stays_connected_but_is_sent_nothing() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let newer = cp.register_dataplane(licsync_common::VERSION).await;
    let current = cp.register_dataplane(licsync_common::VERSION).await;
    let mut incompatible = cp.sync(&newer, "99.0.0").await.unwrap();
    let mut compatible = cp.sync(&current, licsync_common::VERSION).await.unwrap();
    let first = compatible.update().await;
    compatible.ack(&first).await;
    incompatible.heartbeat().await;

    let listed = eventually("the newer data plane listed as incompatible", || async {
        let dp = cp.find_dataplane(&newer.id).await?;
        (dp["sync_status"] == "version_incompatible").then_some(dp)
    })
    .await;
    assert_eq!(listed["version"], "99.0.0");
    assert_eq!(listed["connected"], true);
    assert_eq!(listed["health"], "HEALTHY");
    let warned = eventually("the version_incompatible warning", || async {
        let warned = events.named("dataplane.version_incompatible");
        (!warned.is_empty()).then_some(warned)
    })
    .await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(warned[0].field("dataplane.version"), Some("99.0.0"));
    assert_eq!(warned[0].field("cp.version"), Some(licsync_common::VERSION));

    // A license reaches the compatible data plane; the incompatible one gets nothing, not
    // even the answer to its Hello, and its stream stays open.
    cp.create_license(&cp.issuer.license("Example")).await;
    let update = compatible.update().await;
    assert_eq!(update.upserted.len(), 1);
    assert!(
        incompatible
            .update_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    incompatible.heartbeat().await;
    let still = cp.find_dataplane(&newer.id).await.unwrap();
    assert_eq!(still["connected"], true);
    assert_eq!(
        events.named("dataplane.version_incompatible").len(),
        1,
        "once per stream"
    );
    let compatible_row = cp.find_dataplane(&current.id).await.unwrap();
    assert_ne!(compatible_row["sync_status"], "version_incompatible");
}

#[tokio::test]
async fn a_registered_data_plane_that_never_connected_is_uninitialized() {
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let row = cp.find_dataplane(&dp.id).await.unwrap();
    assert_eq!(row["health"], "UNINITIALIZED");
    assert_eq!(row["connected"], false);
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    stream.update().await;
    assert_eq!(
        cp.find_dataplane(&dp.id).await.unwrap()["health"],
        "HEALTHY"
    );
}

#[tokio::test]
async fn silent_data_planes_are_purged_and_connected_ones_kept() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|c| {
            c.cluster.dataplane_purge_delay = HumanDuration(Duration::from_secs(1));
        })
        .start()
        .await;
    let silent = cp.register_dataplane(licsync_common::VERSION).await;
    let connected = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&connected, licsync_common::VERSION).await.unwrap();
    stream.update().await;

    eventually("the silent data plane to be purged", || async {
        cp.find_dataplane(&silent.id).await.is_none().then_some(())
    })
    .await;
    let purged = eventually("the dataplane.purged line", || async {
        let purged = events.named("dataplane.purged");
        (!purged.is_empty()).then_some(purged)
    })
    .await;
    assert_eq!(purged.len(), 1, "{purged:?}");
    assert_eq!(purged[0].field("dataplane.id"), Some(silent.id.as_str()));
    assert!(cp.find_dataplane(&connected.id).await.is_some());
    let refused = cp
        .sync(&silent, licsync_common::VERSION)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("not registered"), "{refused:?}");
    stream.heartbeat().await;
}

#[tokio::test]
async fn names_and_hello_fields_with_control_characters_are_refused_without_spending_the_token() {
    use licsync_common::pki;
    use licsync_common::proto::RegisterRequest;
    use licsync_common::proto::registration_client::RegistrationClient;
    use serde_json::json;

    let cp = ControlPlane::start().await;
    let (status, token) = cp
        .call(
            Method::POST,
            "/registration-tokens",
            Some(json!({"name": "edge\nINFO licsync_cp: forged"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{token}");
    assert!(
        token["message"]
            .as_str()
            .unwrap()
            .contains("name must not contain control characters"),
        "{token}"
    );

    let (status, token) = cp
        .call(
            Method::POST,
            "/registration-tokens",
            Some(json!({"name": "ok"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    let (_, csr_der) = pki::new_key_and_csr("edge").unwrap();
    let request = |name: &str, hostname: &str| RegisterRequest {
        token: token.clone(),
        csr_der: csr_der.clone(),
        name: name.into(),
        hostname: hostname.into(),
        version: licsync_common::VERSION.into(),
    };
    let mut client = RegistrationClient::new(cp.connect(None).await);
    for (name, hostname) in [("edge\n2", "h"), ("edge", "h\u{1b}[2J")] {
        let refusal = client.register(request(name, hostname)).await.unwrap_err();
        assert_eq!(refusal.code(), Code::InvalidArgument, "{refusal:?}");
        assert!(
            refusal
                .message()
                .contains("must not contain control characters"),
            "{refusal:?}"
        );
    }
    // The one-use token was not spent by the refusals.
    client
        .register(request("edge", "edge.example"))
        .await
        .unwrap();

    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let refusal = cp.sync(&dp, "3.0.0\r\nforged").await.err().unwrap();
    assert_eq!(refusal.code(), Code::InvalidArgument, "{refusal:?}");
    assert!(
        refusal.message().starts_with("version must not contain"),
        "{refusal:?}"
    );
}
