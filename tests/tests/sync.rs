//! A data plane follows the control plane: newest license wins, updates and deletes propagate
//! without polling, the file disappears when nothing is left, and a restarted agent serves its
//! last license while the control plane is down.

use std::time::Duration;

use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use reqwest::{Method, StatusCode};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_follows_newest_license_through_updates_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge-1").await;
    let dp = Dp::start(&dp_dir, "").await;

    // Nothing yet: no file.
    dp.process
        .logs
        .wait_for_event("dataplane.connected", T, |_| true)
        .await;
    assert_eq!(dp.license(), None);

    let old = issuer.license("Old Customer");
    let old_entity = cp.create_license(&old).await;
    dp.wait_for_license(Some(&old), T).await;

    // A newer write wins (ties on updated_at go to the later write).
    let new = issuer.license("New Customer");
    let new_entity = cp.create_license(&new).await;
    dp.wait_for_license(Some(&new), T).await;

    // Replacing the newest license's document reaches the agent, also when the document is
    // many times the gRPC codec's initial buffer (licsync_common::codec::BUFFER_SIZE).
    let notes = "n".repeat(40 * licsync_common::codec::BUFFER_SIZE);
    let replaced = issuer.license_with("New Customer Renewed", &[("notes", &notes)]);
    let id = new_entity["id"].as_str().unwrap();
    let (status, body) = cp
        .call(
            Method::PATCH,
            &format!("/licenses/{id}"),
            Some(json!({ "payload": replaced })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    dp.wait_for_license(Some(&replaced), T).await;

    // Deleting the newest falls back to the remaining one.
    let (status, _) = cp
        .call(Method::DELETE, &format!("/licenses/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    dp.wait_for_license(Some(&old), T).await;

    // None left: the file is removed.
    let old_id = old_entity["id"].as_str().unwrap();
    cp.call(Method::DELETE, &format!("/licenses/{old_id}"), None)
        .await;
    dp.wait_for_license(None, T).await;
    dp.process
        .logs
        .wait_for_event("license.removed", T, |_| true)
        .await;

    // The control plane lists the agent as connected and in sync.
    let (status, list) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(status, StatusCode::OK);
    let row = &list["data"][0];
    assert_eq!(row["name"], "edge-1");
    assert_eq!(row["connected"], true);
    assert_eq!(row["sync_status"], "normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_dataplane_serves_last_license_while_cp_is_down_and_resyncs_without_resend() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge-1").await;
    let mut dp = Dp::start(&dp_dir, "").await;
    let doc = issuer.license("Acme");
    cp.create_license(&doc).await;
    dp.wait_for_license(Some(&doc), T).await;

    // Control plane gone; the agent restarts and serves from its own disk at once.
    cp.kill();
    std::fs::remove_file(dp.license_path()).unwrap();
    dp.restart().await;
    dp.wait_for_license(Some(&doc), Duration::from_secs(5))
        .await;
    let (status, body) = local_get(&dp, "/license").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["license"]["license"]["payload"]["customer"], "Acme");

    // The control plane returns: the agent reconnects and nothing it holds is sent again.
    cp.restart().await;
    let sent = cp
        .process
        .logs
        .wait_for_event("sync.sent", T, |_| true)
        .await;
    assert_eq!(sent["upserted"], 0, "{sent}");
    assert_eq!(sent["removed"], 0, "{sent}");
    cp.process
        .logs
        .wait_for_event("sync.acked", T, |_| true)
        .await;
    assert_eq!(dp.license().as_deref(), Some(doc.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplanes_following_cp_keys_accept_a_signing_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let old = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&old.public], "").await;
    let dp_dir = tmp.path().join("dp");
    // Registered while only the old key was trusted: the registration file holds just that one.
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(&dp_dir, "[license]\nfollow_control_plane_keys = true\n").await;
    // By default an agent keeps verifying with the keys it registered with.
    let strict_dir = tmp.path().join("strict");
    Dp::register_ok(&cp, &strict_dir, "strict").await;
    let strict = Dp::start(&strict_dir, "").await;

    let new = Issuer::new();
    let keys = serde_json::to_string(&[&old.public, &new.public]).unwrap();
    cp.restart_with(&format!("[licenses]\ntrusted_keys = {keys}\n"))
        .await;
    let doc = new.license("Signed With The New Key");
    cp.create_license(&doc).await;
    dp.wait_for_license(Some(&doc), T).await;
    assert!(
        dp.process.logs.named("license.rejected").is_empty(),
        "{}",
        dp.process.logs.text()
    );
    strict
        .process
        .logs
        .wait_for_event("license.rejected", T, |_| true)
        .await;
    assert_eq!(strict.license(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_pinning_its_own_keys_nacks_licenses_it_does_not_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = Issuer::new();
    let theirs = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&ours.public, &theirs.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "strict").await;
    let dp = Dp::start(
        &dp_dir,
        &format!("[license]\ntrusted_keys = [\"{}\"]\n", ours.public),
    )
    .await;

    let good = ours.license("Trusted");
    cp.create_license(&good).await;
    dp.wait_for_license(Some(&good), T).await;
    // Newer, but signed with a key this agent does not trust: rejected, the old one stays.
    let foreign = cp.create_license(&theirs.license("Foreign")).await;
    let rejected = cp
        .process
        .logs
        .wait_for_event("sync.rejected", T, |_| true)
        .await;
    // With log.format = "json", each refused license is a {"id","revision","reason"} object in
    // a JSON array carried as one string field.
    let listed: serde_json::Value =
        serde_json::from_str(rejected["rejected"].as_str().unwrap()).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{rejected}");
    assert_eq!(listed[0]["id"], foreign["id"], "{rejected}");
    assert_eq!(
        listed[0]["reason"],
        "validation failed: the signature does not verify with the 1 trusted key",
        "{rejected}"
    );
    assert!(listed[0]["revision"].as_u64().unwrap() > 0, "{rejected}");
    assert_eq!(rejected["rejected_count"], 1, "{rejected}");
    assert_eq!(dp.license().as_deref(), Some(good.as_str()));
    let (_, list) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(list["data"][0]["sync_status"], "license_rejected", "{list}");
}

async fn local_get(dp: &Dp, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}{path}", dp.local_url))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
