//! Automatic certificate rotation against the real control plane over real mTLS: short-lived
//! certificates are rotated again and again while the agent stays in sync, the license is
//! neither resent nor rewritten, and the registration file on disk always holds the newest.
//!
//! Needs the control plane's `LicenseSync.RotateCertificate` (branch `cplife`): before it
//! lands the control plane answers UNIMPLEMENTED and the agent only warns.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use licsync_dp::registration::RegistrationFile;
use support::agent::{self, Agent, file_identity};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Event, Events, Issuer, eventually, read};

/// Certificates live this long: rotated between 5.3 s and 6 s after issuance.
const TTL: Duration = Duration::from_secs(8);

/// The agent's own `cert.rotated` events (the control plane logs one too, without
/// `previous_serial`).
fn rotations(events: &Events, mark: usize) -> Vec<Event> {
    events
        .since(mark, "cert.rotated")
        .into_iter()
        .filter(|e| e.field("previous_serial").is_some())
        .collect()
}

async fn connected(cp: &ControlPlane, id: &str) -> serde_json::Value {
    eventually("the data plane to be connected", || async {
        let row = cp.dataplane(id).await;
        (row["connected"] == true).then_some(row)
    })
    .await
}

#[tokio::test]
async fn the_agent_rotates_across_several_lifetimes_staying_in_sync_without_rewriting_the_license()
{
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .dataplane_cert_ttl(TTL)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let first = registration.certificate_info().unwrap();
    let path = dir.path().join("dp/registration.yaml");
    let document = issuer.license("Rotation Corp");
    cp.create_license(&document).await;

    let agent = Agent::start(agent::config(&dir.path().join("dp"), &path)).await;
    eventually("the license file", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    let written = file_identity(&agent.license_path);
    let mark = events.mark();

    // Three rotations: the agent outlives its first certificate by more than two lifetimes.
    let rotated = eventually("three rotations", || async {
        let rotated = rotations(&events, 0);
        (rotated.len() >= 3).then_some(rotated)
    })
    .await;
    let mut previous = first.serial.clone();
    for event in &rotated {
        assert_eq!(
            event.field("previous_serial"),
            Some(previous.as_str()),
            "{rotated:?}"
        );
        assert_eq!(
            event.field("dataplane.id"),
            Some(registration.dataplane_id.as_str())
        );
        previous = event.field("serial").unwrap().to_owned();
    }
    assert!(first.not_after < time::OffsetDateTime::now_utc());
    // Not at once: the first rotation waited for two thirds of the first lifetime (certificate
    // times have whole seconds, and the lifetime is counted from the registration's second).
    let expires = |e: &Event| {
        time::OffsetDateTime::parse(
            e.field("cert_expires_at").unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let waited = expires(&rotated[0]) - first.not_after;
    assert!(
        waited >= TTL * 2 / 3 - Duration::from_secs(2),
        "the first rotation came {waited} after registration"
    );

    // The file on disk holds a certificate at least as new as the third, for the same data
    // plane, private, with a key that matches it (load checks that).
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let on_disk = RegistrationFile::load(&path).unwrap();
    assert_eq!(on_disk.dataplane_id, registration.dataplane_id);
    let serial = on_disk.certificate_info().unwrap().serial;
    let all: Vec<String> = rotations(&events, 0)
        .iter()
        .filter_map(|e| e.field("serial").map(str::to_owned))
        .collect();
    assert!(all.contains(&serial), "{serial} not among {all:?}");
    assert!(on_disk.renewed_at.is_some());

    // The agent's own writes are not taken for a replaced file, and nothing was resent or
    // rewritten.
    assert!(events.named("registration.reloaded").is_empty());
    assert!(events.since(mark, "license.received").is_empty());
    assert_eq!(file_identity(&agent.license_path), written);
    connected(&cp, &registration.dataplane_id).await;
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["dataplane_id"], registration.dataplane_id.as_str());
    agent.stop().await;

    // A restart reads the rotated file and is accepted.
    let restarted = events.mark();
    let agent = Agent::start(agent::config(&dir.path().join("dp"), &path)).await;
    eventually("the restarted agent to connect", || async {
        // The agent's own event; the control plane's carries the Hello's version.
        events
            .since(restarted, "dataplane.connected")
            .into_iter()
            .find(|e| e.field("version").is_none())
    })
    .await;
    assert!(events.since(restarted, "license.received").is_empty());
    agent.stop().await;
    cp.shutdown().await;
}
