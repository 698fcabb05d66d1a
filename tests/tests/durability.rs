//! What an operator relies on across crashes and restarts: an acknowledged write survives
//! SIGKILL, SIGTERM stops cleanly and quickly, and a bad config stops start-up with a reason.

use std::time::{Duration, Instant};

use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::fixtures::Issuer;
use licsync_tests::process::{binary, run};
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};

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
        cp.process.logs.dump()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!cp.process.logs.events("cp.stopped").is_empty());

    let status = dp.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "dp log:\n{}",
        dp.process.logs.dump()
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
