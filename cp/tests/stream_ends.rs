//! How the control plane ends a `Sync` stream, over real mutual TLS: revocation, a newer
//! stream, an unanswered update and shutdown each end it with their own gRPC status, message
//! and `licsync-end-reason` trailer (never `OK`); heartbeats are answered; a certificate is
//! refused as superseded only when the data plane really held it before; a data plane that
//! falls silent is dropped by the keepalive, one that answers pings is kept.

use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::stream_end::EndReason;
use licsync_testkit::dataplane::SyncStream;
use licsync_testkit::{ControlPlane, Events, Relay, eventually};
use reqwest::Method;
use tonic::{Code, Status};

fn assert_ended(status: Option<Status>, code: Code, reason: EndReason, starts: &str) -> Status {
    let status = status.expect("the stream ends with a status, not OK");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(EndReason::of(&status), Some(reason), "{status:?}");
    assert!(status.message().starts_with(starts), "{status:?}");
    status
}

/// The `cause` of the control plane's `dataplane.disconnected` line for `id`.
async fn disconnect_cause(events: &Events, id: &str) -> Option<String> {
    let line = eventually("the stream's disconnect line", || async {
        events
            .named("dataplane.disconnected")
            .into_iter()
            .find(|e| e.field("dataplane.id") == Some(id))
    })
    .await;
    line.field("cause").map(str::to_owned)
}

#[tokio::test]
async fn revocation_ends_the_stream_with_permission_denied_and_says_so_on_reconnect() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    stream.update().await;

    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/clustering/data-planes/{}", dp.id),
            None,
        )
        .await;
    assert!(status.is_success());
    let ended = assert_ended(
        stream.ended().await,
        Code::PermissionDenied,
        EndReason::Revoked,
        "revoked",
    );
    assert!(ended.message().contains("registration create"), "{ended:?}");
    assert_eq!(
        disconnect_cause(&events, &dp.id).await.as_deref(),
        Some("revoked")
    );

    let refused = cp.sync(&dp, licsync_common::VERSION).await.err().unwrap();
    assert_ended(
        Some(refused),
        Code::PermissionDenied,
        EndReason::Revoked,
        "revoked",
    );
}

#[tokio::test]
async fn a_newer_stream_ends_the_older_one_with_aborted() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut older = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    older.update().await;

    let mut newer = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let ended = assert_ended(
        older.ended().await,
        Code::Aborted,
        EndReason::Replaced,
        "replaced by a newer stream",
    );
    assert!(
        ended.message().contains("same registration file"),
        "{ended:?}"
    );
    assert_eq!(
        disconnect_cause(&events, &dp.id).await.as_deref(),
        Some("replaced")
    );
    // The newer one is served.
    newer.update().await;
}

#[tokio::test]
async fn an_unanswered_update_ends_the_stream_with_deadline_exceeded_after_the_configured_time() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|config| {
            config.cluster.ack_timeout = HumanDuration(Duration::from_secs(1));
        })
        .start()
        .await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let update = stream.update().await;
    // Never answered.
    let ended = assert_ended(
        stream.ended().await,
        Code::DeadlineExceeded,
        EndReason::AckTimeout,
        &format!("no answer to update {} in 1 s", update.nonce),
    );
    drop(ended);
    let logged = eventually("the sync.ack_timeout line", || async {
        events.named("sync.ack_timeout").into_iter().next()
    })
    .await;
    assert_eq!(logged.level, tracing::Level::WARN);
    assert_eq!(logged.field("nonce"), Some(update.nonce.as_str()));
    assert_eq!(logged.field("dataplane.id"), Some(dp.id.as_str()));
    assert_eq!(
        disconnect_cause(&events, &dp.id).await.as_deref(),
        Some("ack_timeout")
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let update = stream.update().await;
    stream.ack(&update).await;

    let ((), ended) = tokio::join!(cp.shutdown(), stream.ended());
    assert_ended(
        ended,
        Code::Unavailable,
        EndReason::Shutdown,
        "control plane shutting down",
    );
}

#[tokio::test]
async fn heartbeats_are_answered_and_keep_last_seen_fresh() {
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let update = stream.update().await;
    stream.ack(&update).await;
    let first = cp.find_dataplane(&dp.id).await.unwrap()["last_seen"]
        .as_i64()
        .unwrap();

    stream.heartbeat().await;
    let answer = stream.heartbeat_answer().await;
    assert!(answer.sent_at_ms > 0, "{answer:?}");
    // Each heartbeat is answered and moves last_seen on (whole seconds: polled, not timed).
    let stream = tokio::sync::Mutex::new(stream);
    eventually(&format!("last_seen to move on from {first}"), || async {
        let mut stream = stream.lock().await;
        stream.heartbeat().await;
        stream.heartbeat_answer().await;
        let seen = cp.find_dataplane(&dp.id).await.unwrap()["last_seen"].as_i64();
        seen.is_some_and(|s| s > first).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_certificate_never_issued_is_told_apart_from_a_superseded_one() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;

    let unissued = cp.unissued(&dp);
    let refused = cp.sync(&unissued, licsync_common::VERSION).await.err();
    let refused = assert_ended(
        refused,
        Code::PermissionDenied,
        EndReason::CertificateNotIssued,
        "certificate",
    );
    assert!(
        refused
            .message()
            .contains("was not issued by this control plane"),
        "{refused:?}"
    );
    assert!(!refused.message().contains("superseded"), "{refused:?}");
    assert!(
        events.named("dataplane.refused").iter().any(|e| {
            e.field("cause") == Some("certificate_not_issued")
                && e.field("reason")
                    .is_some_and(|r| r.contains("not issued by this control plane"))
        }),
        "{:?}",
        events.named("dataplane.refused")
    );
    // The registered certificate is unaffected.
    cp.sync(&dp, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;

    // A certificate the data plane really held before is superseded.
    let rotated = cp.rotate(&dp).await.unwrap();
    cp.sync(&rotated, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
    let refused = cp.sync(&dp, licsync_common::VERSION).await.err();
    assert_ended(
        refused,
        Code::PermissionDenied,
        EndReason::CertificateSuperseded,
        &format!("certificate {} of data plane", dp.serial()),
    );
    // And so are older ones, a few rotations on.
    let again = cp.rotate(&rotated).await.unwrap();
    cp.sync(&again, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
    for old in [&dp, &rotated] {
        let refused = cp.sync(old, licsync_common::VERSION).await.err().unwrap();
        assert_eq!(
            EndReason::of(&refused),
            Some(EndReason::CertificateSuperseded),
            "{refused:?}"
        );
        assert!(refused.message().contains("superseded"), "{refused:?}");
    }
}

/// A data plane whose host vanished (no FIN, no RST: the relay in between goes silent) is
/// dropped after `cluster.keepalive_interval` + `keepalive_timeout`; one that answers the
/// control plane's pings stays connected through many of them without sending anything else.
#[tokio::test]
async fn a_data_plane_that_falls_silent_is_dropped_after_the_keepalive_and_one_that_answers_stays()
{
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|config| {
            config.cluster.keepalive_interval = HumanDuration(Duration::from_secs(1));
            config.cluster.keepalive_timeout = HumanDuration(Duration::from_secs(1));
        })
        .start()
        .await;
    let relay = Relay::start(cp.config().cluster.listen).await;
    let vanishing = cp
        .register_named("edge-vanishing", licsync_common::VERSION)
        .await;
    let answering = cp
        .register_named("edge-answering", licsync_common::VERSION)
        .await;
    let mut gone = SyncStream::open(
        cp.connect_through(relay.addr(), Some(&vanishing)).await,
        licsync_common::VERSION,
    )
    .await
    .unwrap();
    let mut alive = cp.sync(&answering, licsync_common::VERSION).await.unwrap();
    for stream in [&mut gone, &mut alive] {
        let update = stream.update().await;
        stream.ack(&update).await;
    }

    relay.cut();
    let cut_at = std::time::Instant::now();
    let line = eventually("the vanished data plane's disconnect line", || async {
        events
            .named("dataplane.disconnected")
            .into_iter()
            .find(|e| e.field("dataplane.id") == Some(vanishing.id.as_str()))
    })
    .await;
    // Dropped by the keepalive (1 s of silence, then 1 s for the unanswered ping), not by any
    // of licsync's own ends, and not before the peer had its chance.
    assert_eq!(line.field("cause"), None, "{line:?}");
    assert!(cut_at.elapsed() >= Duration::from_secs(2), "{line:?}");
    let why = events
        .named("dataplane.unresponsive")
        .into_iter()
        .find(|e| e.field("dataplane.id") == Some(vanishing.id.as_str()))
        .expect("the keepalive close is logged with the data plane's id");
    let silent: u64 = why.field("silent_s").unwrap().parse().unwrap();
    assert!(silent >= 2, "{why:?}");
    let listed = cp.find_dataplane(&vanishing.id).await.unwrap();
    assert_eq!(listed["connected"], false, "{listed}");

    // The other stream sat idle through the same seconds (several pings) and is still served.
    assert!(
        events
            .named("dataplane.disconnected")
            .iter()
            .all(|e| e.field("dataplane.id") != Some(answering.id.as_str())),
        "the answering data plane was dropped"
    );
    alive.heartbeat().await;
    alive.heartbeat_answer().await;
    assert_eq!(
        cp.find_dataplane(&answering.id).await.unwrap()["connected"],
        true
    );
}
