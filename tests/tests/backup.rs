//! Backup and restore with the real programs (SPEC §10), as the README's "Backup and restore"
//! does: `licsync-cp backup` while licenses are being written, `licsync-cp restore` into a new
//! directory, and the same `licsync-cp` started on it.
//!
//! The backup is one point in time: the licenses one writer created are a prefix of what it
//! created, the license another writer kept changing is one of its committed versions, and the
//! revision is the newest of them. The restored control plane serves exactly that, and the
//! agent registered before the backup reconnects with its certificate, never registering again,
//! and gets the next license. Refusals: an existing --output, a non-empty --data-dir, a file
//! that is not a backup.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::binary;
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// `licsync-cp ARGS` with `env`; (exit code, stdout, stderr).
fn licsync_cp(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = std::process::Command::new(binary("licsync-cp"))
        .args(args)
        .env_remove("LICSYNC_CP_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The licenses of a backup document, by id: (document, revision).
fn licenses(backup: &Value) -> std::collections::HashMap<String, (String, u64)> {
    backup["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                (
                    l["document"].as_str().unwrap().to_owned(),
                    l["revision"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_restores_one_point_in_time_and_the_agent_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp = Dp::start(&dp_dir, "").await;
    let (_, fleet) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    let dp_id = fleet["data"][0]["id"].as_str().unwrap().to_owned();
    let first = issuer.license("Patched 0");
    let changing = cp.create_license(&first).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    dp.wait_for_license(Some(&first), T).await;

    let token_file = tmp.path().join("admin-token");
    licsync_common::fsutil::write_new_secret(&token_file, cp.token.as_bytes()).unwrap();
    let backup_file = tmp.path().join("backups/cp.json");
    std::fs::create_dir_all(backup_file.parent().unwrap()).unwrap();

    // Two writers, each waiting for its write before the next, while the backup is taken.
    let stop = CancellationToken::new();
    let created_so_far = AtomicUsize::new(0);
    let creator = async {
        let mut created = Vec::new();
        while !stop.is_cancelled() {
            let document = issuer.license(&format!("Created {}", created.len()));
            let id = cp.create_license(&document).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            created.push((id, document));
            created_so_far.store(created.len(), Ordering::Relaxed);
        }
        created
    };
    let patcher = async {
        let mut versions = vec![first.clone()];
        while !stop.is_cancelled() {
            let document = issuer.license(&format!("Patched {}", versions.len()));
            let (status, body) = cp
                .call(
                    Method::PATCH,
                    &format!("/licenses/{changing}"),
                    Some(json!({ "payload": document })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            versions.push(document);
        }
        versions
    };
    let backup = async {
        // Started once writes are flowing; the writers go on until it has finished.
        while created_so_far.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (server, output, token) = (
            cp.admin_url.clone(),
            backup_file.clone(),
            token_file.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            licsync_cp(
                &[
                    "backup",
                    "--server",
                    &server,
                    "--token-file",
                    path(&token),
                    "--output",
                    path(&output),
                ],
                &[],
            )
        })
        .await
        .unwrap();
        stop.cancel();
        result
    };
    let (created, versions, (code, stdout, stderr)) = tokio::join!(creator, patcher, backup);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("license(s) at revision") && stdout.contains("1 data plane(s)"),
        "{stdout}"
    );
    let mode = std::fs::metadata(&backup_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // One point in time: a prefix of the creations, one committed version of the changing
    // license, and the revision of the newest of them.
    let backup: Value = serde_json::from_slice(&std::fs::read(&backup_file).unwrap()).unwrap();
    assert!(backup["warning"].as_str().unwrap().contains("secret keys"));
    let revision = backup["revision"].as_u64().unwrap();
    let held = licenses(&backup);
    let prefix = created
        .iter()
        .take_while(|(id, _)| held.contains_key(id))
        .count();
    assert_eq!(
        held.len(),
        prefix + 1,
        "the backup holds creations that are not a prefix of the {} made",
        created.len()
    );
    for (id, document) in &created[..prefix] {
        assert_eq!(&held[id].0, document, "license {id}");
    }
    let (changed, _) = &held[&changing];
    assert!(versions.contains(changed), "not a committed version");
    let newest = held.values().map(|(_, r)| *r).max().unwrap();
    assert_eq!(newest, revision, "the revision covers every license");
    println!(
        "backup at revision {revision}: {prefix} of {} creations, version {} of {} of the changed license",
        created.len(),
        versions.iter().position(|v| v == changed).unwrap(),
        versions.len()
    );

    // Never over an existing file, whichever way the token comes.
    let before = std::fs::read(&backup_file).unwrap();
    let (code, _, stderr) = licsync_cp(
        &[
            "backup",
            "--server",
            &cp.admin_url,
            "--output",
            path(&backup_file),
        ],
        &[("LICSYNC_CP_ADMIN_TOKEN", &cp.token)],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&backup_file).unwrap(), before);

    // Restore: refused into a non-empty directory or from a file that is no backup.
    let data_dir = cp.dir.join("data");
    let (code, _, stderr) = licsync_cp(
        &[
            "restore",
            "--input",
            path(&backup_file),
            "--data-dir",
            path(&data_dir),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("is not empty"), "{stderr}");
    let junk = tmp.path().join("junk.json");
    std::fs::write(
        &junk,
        br#"{"format": "licsync-backup", "format_version": 99}"#,
    )
    .unwrap();
    let refused = tmp.path().join("never");
    let (code, _, stderr) = licsync_cp(
        &[
            "restore",
            "--input",
            path(&junk),
            "--data-dir",
            path(&refused),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("backup format version 99"), "{stderr}");
    assert!(!refused.exists());

    let restored = tmp.path().join("restored");
    let (code, stdout, stderr) = licsync_cp(
        &[
            "restore",
            "--input",
            path(&backup_file),
            "--data-dir",
            path(&restored),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("at revision {revision}")),
        "{stdout}"
    );

    // The same control plane (ports, so the agent's cluster URL) started on the restored
    // data_dir serves exactly the backup.
    let fingerprint = cp.ca_fingerprint.clone();
    let status = cp.process.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    cp.restart_with(&format!("data_dir = \"{}\"", restored.display()))
        .await;
    assert_eq!(cp.ca_fingerprint, fingerprint);
    let (_, status) = cp.call(Method::GET, "/status", None).await;
    assert_eq!(status["revision"], revision, "{status}");
    let (status, again) = cp.call(Method::GET, "/backup", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(licenses(&again), held);
    for kind in [
        "licenses",
        "registration_tokens",
        "dataplanes",
        "api_tokens",
    ] {
        assert_eq!(again[kind], backup[kind], "{kind}");
    }

    // The agent reconnects with the certificate it holds, and follows the restored set.
    cp.process
        .logs
        .wait_for_event("dataplane.connected", T, |e| {
            e.field("dataplane.id") == Some(dp_id.as_str())
        })
        .await;
    let next = issuer.license("After The Restore");
    cp.create_license(&next).await;
    dp.wait_for_license(Some(&next), T).await;
    let (_, fleet) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    let ids: Vec<&str> = fleet["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [dp_id.as_str()], "no data plane registered again");
}
