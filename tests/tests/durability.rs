//! What an operator relies on across crashes and restarts: an acknowledged write survives
//! SIGKILL, SIGTERM stops cleanly and quickly, and a bad config stops start-up with a reason.

use std::time::{Duration, Instant};

use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::{binary, run};
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};

/// Every license acknowledged with 201 is there after SIGKILL and a restart.
///
/// This proves the write reached the operating system before the 201 was sent (a SIGKILL loses
/// the process's buffers but not the kernel's page cache), not that it reached the platter.
/// sled 0.34 makes its log durable with `sync_file_range` on Linux, which flushes neither the
/// file's metadata nor the drive's write cache, so a power loss is not covered by this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_acknowledged_with_201_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let entity = cp
            .create_license(&issuer.license(&format!("Customer {n}")))
            .await;
        ids.push(entity["id"].as_str().unwrap().to_owned());
    }
    // SIGKILL immediately after the last 201: no shutdown path runs.
    cp.kill();
    cp.restart().await;
    for id in &ids {
        let (status, body) = cp.call(Method::GET, &format!("/licenses/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "license {id} lost: {body}");
    }
    let (_, status) = cp.call(Method::GET, "/status", None).await;
    assert_eq!(status["revision"], 5, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_both_processes_with_exit_0_within_10s() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let mut dp = Dp::start(&dp_dir, "").await;
    // An open stream must not hold the control plane up.
    cp.process
        .logs
        .wait_for_event("dataplane.connected", Duration::from_secs(20), |_| true)
        .await;

    let started = Instant::now();
    let status = cp.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "cp log:\n{}",
        cp.process.logs.text()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!cp.process.logs.named("cp.stopped").is_empty());

    let status = dp.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "dp log:\n{}",
        dp.process.logs.text()
    );
}

#[test]
fn bad_config_exits_non_zero_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (binary_name, args, file) in [
        ("licsync-cp", vec!["serve", "--config"], "cp.toml"),
        ("licsync-dp", vec!["run", "--config"], "dp.toml"),
    ] {
        let path = tmp.path().join(file);
        std::fs::write(&path, "[log]\nlevel = \"info\"\nformatt = \"json\"\n").unwrap();
        let mut args = args.clone();
        let path_text = path.to_str().unwrap().to_owned();
        args.push(&path_text);
        let (code, stdout, stderr) = run(&binary(binary_name), &args, tmp.path());
        assert_ne!(code, 0, "{binary_name} accepted a bad config");
        let text = format!("{stdout}{stderr}");
        assert!(
            text.contains(&path_text),
            "{binary_name} did not name the file: {text}"
        );
        assert!(
            text.contains("formatt"),
            "{binary_name} did not name the key: {text}"
        );

        std::fs::write(&path, "[log]\nformat = \"xml\"\n").unwrap();
        let (code, stdout, stderr) = run(&binary(binary_name), &args, tmp.path());
        assert_ne!(code, 0);
        let text = format!("{stdout}{stderr}");
        assert!(
            text.contains("xml") && text.contains(&path_text),
            "{binary_name}: {text}"
        );
    }
}

/// Restoring the control plane's data from a backup can make a revision number mean a different
/// document than the one a data plane holds; the data plane must still get the new document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_gets_the_right_document_after_cp_restore_from_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(&dp_dir, "").await;
    let v1 = issuer.license("Version One");
    let id = cp.create_license(&v1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    dp.wait_for_license(Some(&v1), Duration::from_secs(20))
        .await;

    // Back up the data directory at this revision.
    cp.kill();
    let data = tmp.path().join("cp/data");
    let backup = tmp.path().join("backup");
    copy_dir(&data, &backup);
    cp.restart().await;

    // v2 reaches the agent at revision N+1; then the backup is restored and v3 is written,
    // which is revision N+1 again.
    let v2 = issuer.license("Version Two");
    let path = format!("/licenses/{id}");
    let (status, _) = cp
        .call(
            Method::PATCH,
            &path,
            Some(serde_json::json!({ "payload": v2 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    dp.wait_for_license(Some(&v2), Duration::from_secs(20))
        .await;
    cp.kill();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    cp.restart().await;
    let v3 = issuer.license("Version Three");
    let (status, _) = cp
        .call(
            Method::PATCH,
            &path,
            Some(serde_json::json!({ "payload": v3 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    dp.wait_for_license(Some(&v3), Duration::from_secs(20))
        .await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
