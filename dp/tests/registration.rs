//! `registration create` against the real control plane over real TLS: CA pinning by hash, the
//! CA file alternative, refusals in operator words, and the binary's output.

mod support;

use std::os::unix::fs::PermissionsExt;

use licsync_dp::registration::create::create;
use licsync_dp::registration::{CaSource, RegistrationFile};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Events, Issuer};

async fn start(dir: &std::path::Path, issuer: &Issuer) -> ControlPlane {
    ControlPlaneBuilder::in_dir(dir)
        .trusting(issuer)
        .start()
        .await
}

#[tokio::test]
async fn pinned_hash_fetches_the_ca_and_writes_a_private_registration_file() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = start(&dir.path().join("cp"), &issuer).await;
    let out = dir.path().join("reg");
    let token = cp.registration_token(1).await;
    let options = cp.create_options(&token.secret, CaSource::Hash(token.ca_hash.clone()), &out);
    let path = create(options.clone()).await.unwrap();
    assert_eq!(path, out.join("registration.yaml"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = RegistrationFile::load(&path).unwrap();
    assert_eq!(file.dataplane_name, "edge-7");
    assert_eq!(file.cluster_url, cp.url());
    assert_eq!(file.ca_certificate, cp.ca_pem());
    assert_eq!(file.trusted_license_keys, [issuer.public.as_str()]);
    let cert = file.certificate_info().unwrap();
    assert_eq!(
        cert.dataplane_id.as_deref(),
        Some(file.dataplane_id.as_str())
    );
    // The control plane lists it under the same id, with what the data plane told it.
    let row = cp.dataplane(&file.dataplane_id).await;
    assert_eq!(row["name"], "edge-7", "{row}");
    assert_eq!(row["hostname"], licsync_dp::hostname(), "{row}");
    assert_eq!(row["version"], licsync_common::VERSION, "{row}");
    // Both sides log it, with the same id: the control plane `dataplane.registered`, the data
    // plane `registration.created`.
    for name in ["dataplane.registered", "registration.created"] {
        let logged = events.named(name);
        assert_eq!(logged.len(), 1, "{name}: {logged:?}");
        assert_eq!(
            logged[0].field("dataplane.id"),
            Some(file.dataplane_id.as_str()),
            "{name}"
        );
    }

    let again = create(options).await.unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    assert_eq!(RegistrationFile::load(&path).unwrap(), file);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_ca_file_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(&dir.path().join("cp"), &Issuer::new()).await;
    // The file an operator copies from the control plane's data dir.
    let ca = dir.path().join("ca.crt");
    std::fs::copy(cp.ca_cert_path(), &ca).unwrap();
    let token = cp.registration_token(1).await;
    let out = dir.path().join("reg");
    let path = create(cp.create_options(&token.secret, CaSource::File(ca), &out))
        .await
        .unwrap();
    let file = RegistrationFile::load(&path).unwrap();
    assert_eq!(file.ca_certificate, cp.ca_pem());
    assert_eq!(cp.dataplane(&file.dataplane_id).await["name"], "edge-7");
    cp.shutdown().await;
}

#[tokio::test]
async fn a_wrong_fingerprint_or_another_ca_is_refused_before_the_token_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = start(&dir.path().join("cp"), &issuer).await;
    let out = dir.path().join("reg");
    // Good for one registration only: the last step below proves nothing spent it.
    let token = cp.registration_token(1).await;

    let wrong = "ab".repeat(32);
    let err = create(cp.create_options(
        &token.secret,
        CaSource::Hash(format!("sha256:{wrong}")),
        &out,
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "the control plane's CA certificate has fingerprint {}, not the expected sha256:{wrong}",
            token.ca_hash
        )),
        "{err}"
    );
    assert!(!out.join("registration.yaml").exists());

    // The right CA file for another control plane: the server is not trusted.
    let other = start(&dir.path().join("other"), &issuer).await;
    let err = create(cp.create_options(&token.secret, CaSource::File(other.ca_cert_path()), &out))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not issued by the CA this data plane trusts"),
        "{err}"
    );
    assert!(!out.join("registration.yaml").exists());

    // The token was never sent: it still registers one data plane.
    assert!(cp.dataplanes().await.is_empty());
    create(cp.create_options(&token.secret, CaSource::Hash(token.ca_hash.clone()), &out))
        .await
        .unwrap();
    assert_eq!(cp.dataplanes().await.len(), 1);
    other.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test]
async fn the_admin_port_or_a_host_missing_from_the_certificate_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(&dir.path().join("cp"), &Issuer::new()).await;
    let token = cp.registration_token(1).await;
    let out = dir.path().join("reg");
    // The Admin API's address given as --server: plain HTTP answers the TLS handshake.
    let admin = cp.admin_url().replace("http://", "https://");
    for ca in [
        CaSource::Hash(token.ca_hash.clone()),
        CaSource::File(cp.ca_cert_path()),
    ] {
        let mut options = cp.create_options(&token.secret, ca, &out);
        options.server = admin.clone();
        let err = create(options).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{admin} does not speak TLS: is it the cluster port (default 8005)?"
            )),
            "{err}"
        );
    }

    // A server certificate without the host the data plane uses: say which key lists names.
    let cp = cp
        .restart_with(|config| config.cluster.server_names = vec!["cp.example".into()])
        .await;
    let token = cp.registration_token(1).await;
    for ca in [
        CaSource::Hash(token.ca_hash.clone()),
        CaSource::File(cp.ca_cert_path()),
    ] {
        let err = create(cp.create_options(&token.secret, ca, &out))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("add '127.0.0.1' to the control plane's cluster.server_names"),
            "{err}"
        );
    }
    assert!(!out.join("registration.yaml").exists());
    cp.shutdown().await;
}

#[tokio::test]
async fn the_control_planes_reason_for_refusing_reaches_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(&dir.path().join("cp"), &Issuer::new()).await;
    let token = cp.registration_token(1).await;
    let hash = CaSource::Hash(token.ca_hash.clone());
    create(cp.create_options(&token.secret, hash.clone(), &dir.path().join("first")))
        .await
        .unwrap();

    let second = dir.path().join("second");
    let err = create(cp.create_options(&token.secret, hash, &second))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("registration token was already used 1 of 1 times"),
        "{err}"
    );
    assert!(err.contains("POST /registration-tokens"), "{err}");
    assert!(!second.join("registration.yaml").exists());
    assert_eq!(cp.dataplanes().await.len(), 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_registration_completed_and_inspect_prints_go_time() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(&dir.path().join("cp"), &Issuer::new()).await;
    let token = cp.registration_token(1).await;
    let out = dir.path().join("reg");
    let create = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
            .args(["registration", "create", "--server", &cp.url()])
            .arg("--ca-cert-hash")
            .arg(&token.ca_hash)
            .arg("--output-directory")
            .arg(&out)
            .env("LICSYNC_REGISTRATION_TOKEN", &token.secret)
            .output()
    };
    let output = create().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Registration completed\n"
    );

    let output = create().await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "registration file {}/registration.yaml already exists; choose another --output-directory or remove it",
            out.display()
        )),
        "{stderr}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["registration", "inspect", "--file"])
        .arg(out.join("registration.yaml"))
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
    let id = json["dataplane_id"].as_str().unwrap();
    assert_eq!(cp.dataplane(id).await["connected"], false);
    cp.shutdown().await;
}
