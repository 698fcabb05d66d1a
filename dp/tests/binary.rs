//! The real `licsync-dp` binary: start-up from saved state with the control plane down,
//! SIGTERM, and configuration errors.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use licsync_common::pki::CertificateAuthority;
use licsync_dp::registration::RegistrationFile;
use licsync_dp::state::{DpState, FileStateStore, HeldLicense, StateStore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registration for a control plane that is not running.
fn offline_registration(path: &Path) {
    let (ca, _) = CertificateAuthority::generate("CA", Duration::from_secs(3600)).unwrap();
    let (key, csr) = licsync_common::pki::new_key_and_csr("edge").unwrap();
    let issued = ca
        .sign_dataplane(
            &csr,
            "11111111-2222-4333-8444-555555555555",
            Duration::from_secs(3600),
        )
        .unwrap();
    RegistrationFile {
        dataplane_id: "11111111-2222-4333-8444-555555555555".into(),
        dataplane_name: "edge".into(),
        cluster_url: format!("https://127.0.0.1:{}", free_port()),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key,
        trusted_license_keys: vec![],
        registered_at: "2025-01-01T00:00:00Z".into(),
        renewed_at: None,
    }
    .save(path)
    .unwrap();
}

#[tokio::test]
async fn restarted_while_the_control_plane_is_down_it_serves_the_last_license_then_stops_on_sigterm()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    offline_registration(&dir.path().join("registration.yaml"));
    let document = r#"{"license":{"payload":{"customer":"Saved"},"signature":"00","version":"1"}}"#;
    let mut state = DpState {
        revision: 3,
        synced_at: Some(1_700_000_000),
        ..DpState::default()
    };
    state.upsert(HeldLicense {
        id: "saved-1".into(),
        document: document.into(),
        created_at: 1,
        updated_at: 2,
        revision: 3,
    });
    FileStateStore::new(data.join("dp-state.json"))
        .save(&state)
        .await
        .unwrap();
    let port = free_port();
    let license_path = dir.path().join("kong/license.json");
    let config = dir.path().join("licsync-dp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\nregistration_file = {reg:?}\n[license]\noutput_path = {out:?}\n[local]\nlisten = \"127.0.0.1:{port}\"\n",
            data = data,
            reg = dir.path().join("registration.yaml"),
            out = license_path,
        ),
    )
    .unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..250 {
        if let Ok(response) = http.get(format!("{base}/health/ready")).send().await
            && response.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the agent became ready without a control plane");
    assert_eq!(std::fs::read_to_string(&license_path).unwrap(), document);
    let license: serde_json::Value = http
        .get(format!("{base}/license"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(license["id"], "saved-1");
    let status: serde_json::Value = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connected"], false);
    assert_eq!(status["revision"], 3);
    assert_eq!(status["last_sync"], 1_700_000_000);

    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let started = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_bad_configuration_stops_start_up_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dp.toml");
    std::fs::write(&config, "[sync]\nheartbeat_interval = \"0s\"\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .arg("run")
        .env("LICSYNC_DP_CONFIG", &config)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("sync.heartbeat_interval"), "{stderr}");
}

#[tokio::test]
async fn without_a_registration_it_says_how_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nregistration_file = {:?}\n[local]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("data"),
            dir.path().join("missing.yaml")
        ),
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing.yaml") && stderr.contains("registration create"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_check_names_the_bad_sync_servers_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dp.toml");
    std::fs::write(
        &config,
        "[sync]\nservers = [\n  \"https://cp1:8005\",\n  \"http://cp2:8005\",\n]\n",
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("line 4, key 'sync.servers'"), "{stderr}");
    assert!(
        stderr.contains("'http://cp2:8005' must start with https://"),
        "{stderr}"
    );
}
