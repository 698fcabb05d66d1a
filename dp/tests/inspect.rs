//! `licsync-dp registration inspect`, the real binary: its exact output, where it finds the
//! file without `--file`, and its errors.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use licsync_common::pki::{self, CertificateAuthority};
use licsync_common::time_fmt;
use licsync_dp::registration::RegistrationFile;
use serde_json::{Value, json};

const ID: &str = "11111111-2222-4333-8444-555555555555";

/// A registration as `registration create` writes it, valid for `ttl`.
fn registration(ttl: Duration) -> RegistrationFile {
    let (ca, _) = CertificateAuthority::generate("CA", Duration::from_secs(3600)).unwrap();
    let (key, csr) = pki::new_key_and_csr("edge").unwrap();
    let issued = ca.sign_dataplane(&csr, ID, ttl).unwrap();
    RegistrationFile {
        dataplane_id: ID.into(),
        dataplane_name: "edge-9".into(),
        cluster_url: "https://cp.example.com:8005".into(),
        ca_certificate: ca.cert_pem().to_owned(),
        certificate: issued.cert_pem,
        private_key: key,
        trusted_license_keys: vec!["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into()],
        registered_at: "2025-06-01T10:00:00Z".into(),
        renewed_at: Some("2025-07-01T10:00:00Z".into()),
    }
}

/// What inspect must print for `file`.
fn expected(file: &RegistrationFile, expired: bool) -> Value {
    let cert = file.certificate_info().unwrap();
    let ca = pki::first_certificate(&file.ca_certificate, "ca").unwrap();
    json!({
        "dataplane_id": ID,
        "dataplane_name": "edge-9",
        "cluster_url": "https://cp.example.com:8005",
        "issued_at": time_fmt::go_utc(cert.not_before),
        "expiration_date": time_fmt::go_utc(cert.not_after),
        "expired": expired,
        "serial": cert.serial,
        "ca_cert_sha256": pki::sha256_hex(&ca),
        "registered_at": "2025-06-01T10:00:00Z",
        "renewed_at": "2025-07-01T10:00:00Z",
        "trusted_license_keys": ["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    })
}

async fn inspect(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"));
    command
        .args(["registration", "inspect"])
        .args(args)
        .current_dir(cwd)
        .env_remove("LICSYNC_DP_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.unwrap()
}

/// The one JSON object printed on success.
fn printed(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn prints_one_json_object_with_go_formatted_times_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registration.yaml");
    let file = registration(Duration::from_secs(3600));
    file.save(&path).unwrap();
    let output = inspect(dir.path(), &["--file", path.to_str().unwrap()], &[]).await;
    let json = printed(&output);
    assert_eq!(json, expected(&file, false));
    // Flex Gateway's format, to the character: `2025-09-25 19:27:32 +0000 UTC`.
    let expiration = json["expiration_date"].as_str().unwrap();
    let not_after = file.certificate_info().unwrap().not_after;
    assert_eq!(
        expiration,
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
            not_after.year(),
            u8::from(not_after.month()),
            not_after.day(),
            not_after.hour(),
            not_after.minute(),
            not_after.second()
        )
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    assert_eq!(stdout.matches('{').count(), 1, "one flat object: {stdout}");
}

#[tokio::test]
async fn an_expired_certificate_is_inspected_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registration.yaml");
    let file = registration(Duration::from_secs(1));
    file.save(&path).unwrap();
    // Validity has one-second resolution.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let json = printed(&inspect(dir.path(), &["--file", path.to_str().unwrap()], &[]).await);
    assert_eq!(json, expected(&file, true));
}

#[tokio::test]
async fn without_file_it_inspects_the_configured_registration_file() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("etc/registration.yaml");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    let file = registration(Duration::from_secs(3600));
    file.save(&elsewhere).unwrap();
    let config = dir.path().join("dp.toml");
    std::fs::write(
        &config,
        format!(
            "registration_file = {:?}\n",
            elsewhere.display().to_string()
        ),
    )
    .unwrap();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    // --config, then LICSYNC_DP_CONFIG.
    let json = printed(&inspect(&cwd, &["--config", config.to_str().unwrap()], &[]).await);
    assert_eq!(json, expected(&file, false));
    let json = printed(&inspect(&cwd, &[], &[("LICSYNC_DP_CONFIG", &config)]).await);
    assert_eq!(json, expected(&file, false));

    // ./licsync-dp.toml in the working directory.
    std::fs::copy(&config, cwd.join("licsync-dp.toml")).unwrap();
    let json = printed(&inspect(&cwd, &[], &[]).await);
    assert_eq!(json, expected(&file, false));

    // No configuration at all: ./registration.yaml.
    std::fs::remove_file(cwd.join("licsync-dp.toml")).unwrap();
    let err = failed(&inspect(&cwd, &[], &[]).await);
    assert!(
        err.contains("registration file ./registration.yaml not found")
            && err.contains("registration create"),
        "{err}"
    );
    let local = registration(Duration::from_secs(3600));
    local.save(&cwd.join("registration.yaml")).unwrap();
    let json = printed(&inspect(&cwd, &[], &[]).await);
    assert_eq!(json, expected(&local, false));
}

#[tokio::test]
async fn a_missing_unreadable_or_broken_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = failed(&inspect(dir.path(), &["--file", missing.to_str().unwrap()], &[]).await);
    assert!(
        err.starts_with(&format!(
            "licsync-dp: registration file {} not found",
            missing.display()
        )),
        "{err}"
    );

    // A directory where the file should be: unreadable, even for root.
    let directory = dir.path().join("dir.yaml");
    std::fs::create_dir(&directory).unwrap();
    let err = failed(&inspect(dir.path(), &["--file", directory.to_str().unwrap()], &[]).await);
    assert!(
        err.starts_with(&format!("licsync-dp: cannot read {}", directory.display())),
        "{err}"
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "dataplane_id: [").unwrap();
    let err = failed(&inspect(dir.path(), &["--file", broken.to_str().unwrap()], &[]).await);
    assert!(
        err.starts_with(&format!(
            "licsync-dp: registration file {} is invalid",
            broken.display()
        )),
        "{err}"
    );

    // A configuration that does not load: exit 2, naming it.
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "registration_fil = \"x\"\n").unwrap();
    let output = inspect(dir.path(), &["--config", config.to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("registration_fil"),
        "{err}"
    );
}
