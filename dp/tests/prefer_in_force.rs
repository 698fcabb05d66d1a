//! A newer license that has expired while an older one is in force (the case that once
//! switched Kong gateways to an expired license): the whole agent against the real control
//! plane, with Kong's rule and with `license.prefer_in_force`.

mod support;

use support::agent::{self, Agent};
use support::{ControlPlaneBuilder, Enroll, Events, Issuer, eventually, read};

/// Runs an agent (`prefer_in_force` as given) against a control plane holding an in-force
/// license and, written after it, an expired one; returns (file content, in force, expired,
/// the expired license's id, what `GET /license` said).
async fn serve(prefer_in_force: bool) -> (String, String, String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    let in_force = issuer.license("Current Corp");
    let expired = issuer.license_expiring("Lapsed Corp", "2025-06-30");
    cp.create_license(&in_force).await;
    // Written later: the newer updated_at (or, within the same second, revision).
    let expired_id = cp.create_license(&expired).await;
    let mut config = agent::config(
        &dir.path().join("agent"),
        &dir.path().join("dp/registration.yaml"),
    );
    config.license.prefer_in_force = prefer_in_force;
    let agent = Agent::start(config).await;
    let served = eventually("the license file", || async { read(&agent.license_path) }).await;
    let (_, shown) = agent.api.get("/license").await;
    agent.stop().await;
    cp.shutdown().await;
    (served, in_force, expired, expired_id, shown)
}

#[tokio::test]
async fn kongs_rule_serves_the_newer_expired_license_and_warns() {
    let (events, _guard) = Events::capture();
    let (served, _, expired, expired_id, shown) = serve(false).await;
    assert_eq!(served, expired);
    assert_eq!(shown["expired_newest_license_id"], expired_id, "{shown}");
    let warned = eventually("license.expired_selected", || async {
        events.named("license.expired_selected").into_iter().next()
    })
    .await;
    assert_eq!(warned.field("license.id"), Some(expired_id.as_str()));
    assert_eq!(warned.field("prefer_in_force"), Some("false"));
}

#[tokio::test]
async fn prefer_in_force_serves_the_older_license_still_in_force() {
    let (events, _guard) = Events::capture();
    let (served, in_force, _, expired_id, shown) = serve(true).await;
    assert_eq!(served, in_force);
    assert_eq!(shown["expired_newest_license_id"], expired_id, "{shown}");
    let warned = eventually("license.expired_selected", || async {
        events.named("license.expired_selected").into_iter().next()
    })
    .await;
    assert_eq!(warned.field("license.id"), Some(expired_id.as_str()));
    assert_eq!(warned.field("prefer_in_force"), Some("true"));
}
