//! `license.reload_command` against the real control plane: everything the command starts is
//! killed at its timeout and when the agent stops, and a reload that hangs never holds back
//! the next license (it reaches the file at once; one more reload runs when the hung one ends).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::license::TrustedKeys;
use licsync_dp::config::SyncConfig;
use licsync_dp::output::LicenseFile;
use licsync_dp::state::MemoryStateStore;
use licsync_dp::sync::{SyncClient, SyncSettings};
use support::agent::{self, Agent};
use support::{ControlPlaneBuilder, Enroll, Events, GUARD, Issuer, eventually, read};
use tokio_util::sync::CancellationToken;

/// A reload command that records its shell's pid and its background child's in `pids`, then
/// waits on both for ten minutes.
fn forking_reload(pids: &Path) -> Vec<String> {
    let script = format!(
        "echo $$ >> '{0}'; sleep 600 & echo $! >> '{0}'; sleep 600",
        pids.display()
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn pids(path: &Path) -> Vec<i32> {
    read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Still running (a zombie waiting to be reaped is not).
fn alive(pid: i32) -> bool {
    let Some(stat) = read(Path::new(&format!("/proc/{pid}/stat"))) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
}

/// Waits until the reload command has recorded `count` pids; returns them.
async fn recorded(path: &Path, count: usize) -> Vec<i32> {
    eventually(&format!("{count} pids in {}", path.display()), || async {
        let pids = pids(path);
        (pids.len() >= count).then_some(pids)
    })
    .await
}

async fn all_gone(pids: &[i32]) {
    eventually(&format!("processes {pids:?} to be gone"), || async {
        pids.iter().all(|&pid| !alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn what_the_reload_command_started_is_killed_at_its_timeout() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    cp.create_license(&issuer.license("Timeout Corp")).await;
    let pid_file = dir.path().join("pids");
    let mut config = agent::config(
        &dir.path().join("dp"),
        &dir.path().join("dp/registration.yaml"),
    );
    config.license.reload_command = forking_reload(&pid_file);
    config.license.reload_timeout = HumanDuration(Duration::from_secs(2));
    let agent = Agent::start(config).await;

    let started = recorded(&pid_file, 2).await;
    let failed = eventually("the reload's timeout", || async {
        events.named("license.reload_failed").into_iter().next()
    })
    .await;
    assert!(
        failed
            .field("reason")
            .unwrap()
            .contains("still running after"),
        "{failed:?}"
    );
    // The shell and its background child, both, while the agent runs on.
    all_gone(&started).await;
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["connected"], true, "{status}");

    agent.stop().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn what_the_reload_command_started_is_killed_when_the_agent_stops() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    cp.register(&dir.path().join("dp")).await;
    cp.create_license(&issuer.license("Shutdown Corp")).await;
    let pid_file = dir.path().join("pids");
    let mut config = agent::config(
        &dir.path().join("dp"),
        &dir.path().join("dp/registration.yaml"),
    );
    config.license.reload_command = forking_reload(&pid_file);
    config.license.reload_timeout = HumanDuration(Duration::from_secs(600));
    let agent = Agent::start(config).await;

    let started = recorded(&pid_file, 2).await;
    assert!(started.iter().all(|&pid| alive(pid)), "{started:?}");
    // Stopping does not wait ten minutes for the reload, and leaves nothing behind.
    agent.stop().await;
    all_gone(&started).await;
    cp.shutdown().await;
}

#[tokio::test]
async fn a_license_written_while_a_reload_hangs_reaches_the_file_at_once_and_is_reloaded_once_after()
 {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = ControlPlaneBuilder::in_dir(&dir.path().join("cp"))
        .trusting(&issuer)
        .start()
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    // Each run logs its start, waits for the gate to open, and logs its end.
    let runs = dir.path().join("runs");
    let gate = dir.path().join("gate");
    let script = format!(
        "echo start >> '{runs}'; while [ ! -e '{gate}' ]; do sleep 0.02; done; echo end >> '{runs}'",
        runs = runs.display(),
        gate = gate.display()
    );
    let license_path = dir.path().join("license.json");
    let file = LicenseFile::new(
        &license_path,
        &["/bin/sh".into(), "-c".into(), script],
        Duration::from_secs(600),
    );
    let mut reloads = file.reloads().unwrap();
    let sync = SyncConfig {
        backoff_initial: HumanDuration(Duration::from_millis(20)),
        backoff_max: HumanDuration(Duration::from_millis(100)),
        ..SyncConfig::default()
    };
    let settings = SyncSettings::new(&registration, &sync, TrustedKeys::default()).unwrap();
    let client = SyncClient::new(
        settings,
        Arc::new(MemoryStateStore::default()),
        Some(file.clone()),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(client.run(stop.clone()));

    let first = issuer.license("First Corp");
    cp.create_license(&first).await;
    eventually("the first license and its reload", || async {
        (read(&license_path).as_deref() == Some(first.as_str())
            && read(&runs).as_deref() == Some("start\n"))
        .then_some(())
    })
    .await;

    // The reload hangs; newer licenses reach the file regardless.
    for customer in ["Second Corp", "Third Corp"] {
        let document = issuer.license(customer);
        cp.create_license(&document).await;
        eventually(customer, || async {
            (read(&license_path).as_deref() == Some(document.as_str())).then_some(())
        })
        .await;
    }
    assert_eq!(
        read(&runs).as_deref(),
        Some("start\n"),
        "still the first run"
    );
    let state = *reloads.borrow_and_update();
    assert!(state.running && state.queued, "{state:?}");

    // Once it ends, one more run covers both.
    std::fs::write(&gate, b"").unwrap();
    let state = *tokio::time::timeout(GUARD, reloads.wait_for(|s| !s.running))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.runs, 2, "{state:?}");
    assert_eq!(read(&runs).as_deref(), Some("start\nend\nstart\nend\n"));

    stop.cancel();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    cp.shutdown().await;
}
