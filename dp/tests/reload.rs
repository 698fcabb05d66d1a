//! The running agent and its registration file, against the real control plane over real
//! mTLS: a file replaced on disk is used without a restart (and a broken one is not), and an
//! expired certificate leaves the license in place and is reported once a minute, not at
//! every reconnect attempt.

mod support;

use std::time::Duration;

use support::agent::{self, Agent, file_identity};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Events, Issuer, eventually, read};

/// Waits until the control plane lists data plane `id` with `connected == want`.
async fn connected(cp: &ControlPlane, id: &str, want: bool) {
    eventually(&format!("data plane {id} connected == {want}"), || async {
        (cp.dataplane(id).await["connected"] == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_registration_file_copied_into_place_is_used_without_a_restart_and_the_license_is_kept() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    // Two registrations: the agent starts as A; B's file is then copied over A's, as an
    // operator copies a renewed (or new) registration into place.
    let a = cp.register(&dir.path().join("a")).await;
    let b = cp.register(&dir.path().join("b")).await;
    let path = dir.path().join("agent/registration.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(dir.path().join("a/registration.yaml"), &path).unwrap();
    let document = issuer.license("Reload Corp");
    cp.create_license(&document).await;

    let agent = Agent::start(agent::config(&dir.path().join("agent"), &path)).await;
    eventually("the license file", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    connected(&cp, &a.dataplane_id, true).await;
    let written = file_identity(&agent.license_path);
    let mark = events.mark();

    // Copied in place the way `cp` does it: truncated, then written.
    std::fs::write(
        &path,
        std::fs::read(dir.path().join("b/registration.yaml")).unwrap(),
    )
    .unwrap();
    connected(&cp, &b.dataplane_id, true).await;
    connected(&cp, &a.dataplane_id, false).await;
    let reloaded = events.since(mark, "registration.reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(
        reloaded[0].field("dataplane.id"),
        Some(b.dataplane_id.as_str())
    );
    assert_eq!(
        reloaded[0].field("previous_dataplane_id"),
        Some(a.dataplane_id.as_str())
    );
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["dataplane_id"], b.dataplane_id.as_str(), "{status}");
    // Nothing was sent again (the new stream's Hello said what is held) and the license file
    // was not rewritten.
    assert!(events.since(mark, "license.received").is_empty());
    assert_eq!(file_identity(&agent.license_path), written);
    assert_eq!(
        read(&agent.license_path).as_deref(),
        Some(document.as_str())
    );

    // A broken file is reported once and not used: B stays connected.
    let mark = events.mark();
    std::fs::write(&path, b"dataplane_id: [this is not a registration").unwrap();
    eventually("the broken file to be reported", || async {
        (!events.since(mark, "registration.invalid").is_empty()).then_some(())
    })
    .await;
    // Ten more checks of the same broken content.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events.since(mark, "registration.invalid").len(), 1);
    assert!(events.since(mark, "registration.reloaded").is_empty());
    assert_eq!(cp.dataplane(&b.dataplane_id).await["connected"], true);
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["connected"], true, "{status}");

    // Put right again: used at once.
    std::fs::write(
        &path,
        std::fs::read(dir.path().join("a/registration.yaml")).unwrap(),
    )
    .unwrap();
    connected(&cp, &a.dataplane_id, true).await;
    connected(&cp, &b.dataplane_id, false).await;
    assert_eq!(events.since(mark, "registration.reloaded").len(), 1);
    assert_eq!(file_identity(&agent.license_path), written);

    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_keeps_the_license_and_is_reported_once_a_minute_not_per_attempt() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .dataplane_cert_ttl(Duration::from_secs(5))
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let path = dir.path().join("dp/registration.yaml");
    let document = issuer.license("Expiry Corp");
    cp.create_license(&document).await;
    let mut config = agent::config(&dir.path().join("dp"), &path);
    config.sync.rotate_certificate = false;
    let agent = Agent::start(config).await;
    eventually("the license file", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    let written = file_identity(&agent.license_path);

    // Five seconds to live: an ERROR from the start (seven days or less left).
    let expiring = events.named("cert.expiring");
    assert_eq!(expiring.len(), 1, "{expiring:?}");
    let expires_at = registration.certificate_info().unwrap().not_after;
    assert_eq!(
        expiring[0].field("cert_expires_at"),
        Some(licsync_common::time_fmt::rfc3339(expires_at).as_str())
    );

    // The control plane logs a cert.expired of its own when it ends the stream.
    let agents_notices = || {
        events
            .named("cert.expired")
            .into_iter()
            .filter(|e| e.field("renew_command").is_some())
            .collect::<Vec<_>>()
    };
    let expired = eventually("cert.expired", || async {
        agents_notices().into_iter().next()
    })
    .await;
    let command = expired.field("renew_command").unwrap();
    assert_eq!(
        command,
        format!(
            "licsync-dp registration renew (--username U --password P | --client-id I --client-secret S) --output-directory DIR {}",
            path.display()
        )
    );
    let message = expired.field("message").unwrap();
    assert!(
        message.contains(&licsync_common::time_fmt::go_utc(expires_at))
            && message.contains(command),
        "{message}"
    );
    let after_expiry = events.mark();
    connected(&cp, &registration.dataplane_id, false).await;

    // Reconnect attempts go on every 200 ms at most, refused: the control plane's reason is
    // logged once, and the next cert.expired is a minute away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agents_notices().len(), 1);
    let refused = events.named("sync.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let failed = events.since(after_expiry, "sync.connect_failed");
    assert!(failed.is_empty(), "{failed:?}");
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["connected"], false, "{status}");
    assert!(status["last_error"].is_string(), "{status}");

    // The last license stays in force.
    assert_eq!(file_identity(&agent.license_path), written);
    let (code, license) = agent.api.get("/license").await;
    assert_eq!(code, 200, "{license}");
    assert_eq!(agent.api.get("/health/ready").await.0, 200);

    agent.stop().await;
    cp.shutdown().await;
}
