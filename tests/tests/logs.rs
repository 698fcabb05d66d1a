//! The logs of a whole run, read the way a log pipeline reads them: real `licsync-cp` and
//! `licsync-dp` processes with `log.format = "json"`, driven through the moments that log
//! warnings and errors (an unknown Admin API token, an unanswered update, two agents with one
//! registration file, a revocation, a control-plane shutdown). Every WARN and ERROR line, and
//! every INFO line of licsync's own code, must carry an `event` an operator can alert on.

use std::path::Path;
use std::time::Duration;

use licsync_testkit::Events;
use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// The id of the data plane registered as `name`.
async fn dataplane_id(cp: &Cp, name: &str) -> String {
    let (status, list) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == name)
        .and_then(|row| row["id"].as_str())
        .unwrap_or_else(|| panic!("no data plane named {name} in {list}"))
        .to_owned()
}

/// Lines that a log pipeline could not key on: not JSON, or WARN/ERROR (or licsync's own INFO)
/// without an `event`.
fn unkeyed(logs: &Events) -> Vec<Value> {
    logs.lines()
        .into_iter()
        .filter(|line| {
            if line.get("raw").is_some() {
                return true;
            }
            let level = line["level"].as_str().unwrap_or_default();
            let ours = line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("licsync"));
            let must = matches!(level, "WARN" | "ERROR") || (level == "INFO" && ours);
            must && line.get("event").and_then(Value::as_str).is_none()
        })
        .collect()
}

fn start_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_warning_error_and_sync_line_of_a_whole_run_has_an_event() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(
        &tmp.path().join("cp"),
        &[&issuer.public],
        "[cluster]\nack_timeout = \"1s\"\n",
    )
    .await;

    // An unknown Admin API token: refused, logged with the client's address.
    let refused = reqwest::Client::new()
        .get(format!("{}/licenses", cp.admin_url))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let failed = cp
        .process
        .logs
        .wait_for_event("auth.failed", T, |_| true)
        .await;
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert!(
        failed["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{failed}"
    );

    // An agent that stops answering (SIGSTOP) for longer than cluster.ack_timeout: its update
    // goes unanswered in time, and both sides say so once it runs again.
    let slow_dir = start_dir(tmp.path(), "slow");
    Dp::register_ok(&cp, &slow_dir, "slow").await;
    let mut slow = Dp::start(&slow_dir, "").await;
    slow.process
        .logs
        .wait_for_event("dataplane.connected", T, |_| true)
        .await;
    nix::sys::signal::kill(slow.process.pid(), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let document = issuer.license("Logs Corp");
    cp.create_license(&document).await;
    cp.process
        .logs
        .wait_for_event("sync.ack_timeout", T, |_| true)
        .await;
    nix::sys::signal::kill(slow.process.pid(), nix::sys::signal::Signal::SIGCONT).unwrap();
    slow.process
        .logs
        .wait_for_event("dataplane.disconnected", T, |l| l["cause"] == "ack_timeout")
        .await;
    slow.wait_for_license(Some(&document), T).await;

    // Two agents with one registration file replace each other's stream.
    let edge_dir = start_dir(tmp.path(), "edge");
    Dp::register_ok(&cp, &edge_dir, "edge").await;
    let mut edge = Dp::start(&edge_dir, "").await;
    edge.process
        .logs
        .wait_for_event("dataplane.connected", T, |_| true)
        .await;
    let twin_dir = start_dir(tmp.path(), "twin");
    std::fs::copy(
        edge_dir.join("registration.yaml"),
        twin_dir.join("registration.yaml"),
    )
    .unwrap();
    // Everything the edge logs from here on: its reconnection, once replaced, is after this.
    let before_twin = edge.process.logs.mark();
    let mut twin = Dp::start(&twin_dir, "").await;
    edge.process
        .logs
        .wait_for_event("sync.replaced", T, |_| true)
        .await;
    assert!(twin.process.stop(Signal::SIGTERM, T).is_some());

    // A revoked agent is told so and says what to do.
    let slow_id = dataplane_id(&cp, "slow").await;
    let (status, _) = cp
        .call(
            Method::DELETE,
            &format!("/clustering/data-planes/{slow_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = slow
        .process
        .logs
        .wait_for_event("sync.revoked", T, |_| true)
        .await;
    assert_eq!(revoked["level"], "ERROR", "{revoked}");

    // The control plane shuts down: the connected agent is told, then cannot reconnect. (The
    // edge's first connection is in its log too: wait for the one after the twin's.)
    edge.process
        .logs
        .wait_for_event_since(before_twin, "dataplane.connected", T, |_| true)
        .await;
    assert!(
        cp.process
            .stop(Signal::SIGTERM, T)
            .is_some_and(|s| s.success())
    );
    edge.process
        .logs
        .wait_for_event("dataplane.disconnected", T, |l| l["cause"] == "shutdown")
        .await;
    edge.process
        .logs
        .wait_for_event("sync.connect_failed", T, |_| true)
        .await;
    for dp in [&mut slow, &mut edge] {
        assert!(dp.process.stop(Signal::SIGTERM, T).is_some());
    }

    for (who, logs) in [
        ("licsync-cp", &cp.process.logs),
        ("licsync-dp slow", &slow.process.logs),
        ("licsync-dp edge", &edge.process.logs),
        ("licsync-dp twin", &twin.process.logs),
    ] {
        let lines = unkeyed(logs);
        assert!(
            lines.is_empty(),
            "{who} logged lines without an event:\n{}",
            lines
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
