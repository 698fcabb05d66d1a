//! Moving a running fleet from embedded storage to PostgreSQL with the real programs, as the
//! README's "Moving from embedded storage to PostgreSQL" does: a `licsync-cp` on sled with an
//! agent holding a license; SIGTERM; `licsync-cp storage keygen` and `storage copy` (password
//! from `LICSYNC_CP_POSTGRES_PASSWORD`); the same control plane restarted on PostgreSQL. The
//! agent, never re-registered, reconnects with its old certificate, keeps its license and gets
//! the next one written at the new node.

use std::time::Duration;

use licsync_testkit::Issuer;
use licsync_testkit::postgres::{PASSWORD, fresh_database, without_password};
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::binary;
use nix::sys::signal::Signal;
use reqwest::Method;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_control_plane_moves_to_postgres_and_its_agent_reconnects_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(&dp_dir, "").await;
    let first = issuer.license("Before The Move");
    cp.create_license(&first).await;
    dp.wait_for_license(Some(&first), T).await;
    let (_, status) = cp.call(Method::GET, "/status", None).await;
    let revision = status["revision"].clone();
    let fingerprint = cp.ca_fingerprint.clone();

    let status = cp.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let url = without_password(&fresh_database().await);
    let key = tmp.path().join("storage.key");
    let licsync_cp = |args: &[&str]| {
        std::process::Command::new(binary("licsync-cp"))
            .args(args)
            .env("LICSYNC_CP_POSTGRES_PASSWORD", PASSWORD)
            .output()
            .unwrap()
    };
    let keygen = licsync_cp(&["storage", "keygen", "--output", key.to_str().unwrap()]);
    assert!(keygen.status.success(), "{keygen:?}");
    let data_dir = cp.dir.join("data");
    let copy = licsync_cp(&[
        "storage",
        "copy",
        "--from",
        data_dir.to_str().unwrap(),
        "--to",
        &url,
        "--encryption-key-file",
        key.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&copy.stdout);
    assert!(
        copy.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    assert!(
        stdout.contains(&format!("1 license(s) at revision {revision}"))
            && stdout.contains("1 data plane(s)"),
        "{stdout}"
    );
    // The same process, ports and data_dir, now on PostgreSQL; the password from the
    // environment as for the copy.
    cp.restart_with(&format!(
        "[storage]\nbackend = \"postgres\"\nencryption_key_file = \"{}\"\n\
         [storage.postgres]\nurl = \"{url}\"\npassword_file = \"{}\"\n",
        key.display(),
        password_file(tmp.path()).display()
    ))
    .await;
    assert_eq!(cp.ca_fingerprint, fingerprint);
    let (_, status) = cp.call(Method::GET, "/status", None).await;
    assert_eq!(status["storage"]["backend"], "postgres", "{status}");
    assert_eq!(status["revision"], revision, "{status}");

    // The agent was never told anything: it reconnects and follows the new node.
    cp.process
        .logs
        .wait_for_event("dataplane.connected", T, |_| true)
        .await;
    let next = issuer.license("After The Move");
    cp.create_license(&next).await;
    dp.wait_for_license(Some(&next), T).await;
}

/// A file holding the test server's password (mode 0600).
fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("postgres-password");
    licsync_common::fsutil::write_new_secret(&path, PASSWORD.as_bytes()).unwrap();
    path
}
