//! `registration create` against a control plane over real TLS: CA pinning by hash, the CA
//! file alternative, refusals in operator words, and the binary's output.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use licsync_dp::registration::create::create;
use licsync_dp::registration::{CaSource, CreateOptions, RegistrationFile};
use support::FakeControlPlane;

fn options(cp: &FakeControlPlane, dir: &std::path::Path, ca: CaSource) -> CreateOptions {
    CreateOptions {
        token: support::TOKEN.into(),
        server: cp.url(),
        ca,
        name: Some("edge-7".into()),
        output_directory: dir.to_owned(),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn pinned_hash_fetches_the_ca_and_writes_a_private_registration_file() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reg");
    let path = create(options(&cp, &out, CaSource::Hash(cp.ca_hash())))
        .await
        .unwrap();
    assert_eq!(path, out.join("registration.yaml"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = RegistrationFile::load(&path).unwrap();
    assert_eq!(file.dataplane_id, "00000000-0000-4000-8000-000000000001");
    assert_eq!(file.dataplane_name, "edge-7");
    assert_eq!(file.cluster_url, cp.url());
    assert_eq!(file.ca_certificate, cp.ca.cert_pem());
    assert_eq!(
        file.trusted_license_keys,
        [cp.signing_key.public_key_base64()]
    );
    let cert = file.certificate_info().unwrap();
    assert_eq!(
        cert.dataplane_id.as_deref(),
        Some(file.dataplane_id.as_str())
    );

    let again = create(options(&cp, &out, CaSource::Hash(cp.ca_hash())))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    cp.stop().await;
}

#[tokio::test]
async fn a_ca_file_works_too() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, cp.ca.cert_pem()).unwrap();
    let path = create(options(&cp, dir.path(), CaSource::File(ca)))
        .await
        .unwrap();
    assert!(RegistrationFile::load(&path).is_ok());
    cp.stop().await;
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_before_the_token_is_sent() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let err = create(options(
        &cp,
        dir.path(),
        CaSource::Hash(format!("sha256:{wrong}")),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "the control plane's CA certificate has fingerprint sha256:{}, not the expected sha256:{wrong}",
            cp.ca.fingerprint()
        )),
        "{err}"
    );
    assert!(!dir.path().join("registration.yaml").exists());

    // The right CA file for another control plane: the server is not trusted.
    let other = FakeControlPlane::start().await;
    let ca = dir.path().join("other-ca.crt");
    std::fs::write(&ca, other.ca.cert_pem()).unwrap();
    let err = create(options(&cp, dir.path(), CaSource::File(ca)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not issued by the CA this data plane trusts"),
        "{err}"
    );
    other.stop().await;
    cp.stop().await;
}

#[tokio::test]
async fn the_control_planes_reason_for_refusing_reaches_the_operator() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&cp, dir.path(), CaSource::Hash(cp.ca_hash()));
    opts.token = support::USED_TOKEN.into();
    let err = create(opts).await.unwrap_err().to_string();
    assert!(err.contains("registration token has been used up"), "{err}");
    assert!(err.contains("POST /registration-tokens"), "{err}");
    assert!(!dir.path().join("registration.yaml").exists());
    cp.stop().await;
}

#[tokio::test]
async fn the_binary_prints_registration_completed_and_inspect_prints_go_time() {
    let cp = FakeControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let create = |dir: &std::path::Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
            .args([
                "registration",
                "create",
                "--server",
                &cp.url(),
                "--ca-cert-hash",
            ])
            .arg(cp.ca_hash())
            .arg("--output-directory")
            .arg(dir)
            .env("LICSYNC_REGISTRATION_TOKEN", support::TOKEN)
            .output()
    };
    let output = create(dir.path()).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Registration completed\n"
    );

    let output = create(dir.path()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "registration file {}/registration.yaml already exists; choose another --output-directory or remove it",
            dir.path().display()
        )),
        "{stderr}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["registration", "inspect", "--file"])
        .arg(dir.path().join("registration.yaml"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expiration = json["expiration_date"].as_str().unwrap();
    assert!(
        expiration.ends_with(" +0000 UTC") && expiration.len() == 29,
        "{expiration}"
    );
    assert_eq!(json["cluster_url"], cp.url());
    assert!(
        json["dataplane_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    cp.stop().await;
}
