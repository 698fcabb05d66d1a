//! `licsync-dp registration renew` against the real control plane over real TLS: each
//! credential kind, every refusal, `--update-urls`, and a running agent brought back by a
//! manual renewal of its expired certificate, without a restart.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::pki::{self, CertificateAuthority};
use licsync_dp::cluster::ClusterUrl;
use licsync_dp::registration::renew::renew;
use licsync_dp::registration::{Credential, RegistrationFile, RenewOptions};
use support::agent::{self, Agent, file_identity};
use support::{ControlPlane, ControlPlaneBuilder, Enroll, Events, GUARD, Issuer, eventually, read};

const RENEWAL_COMPLETED: &str = "Registration renewal completed\n";

async fn run_renew(cwd: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["registration", "renew"])
        .args(args)
        .current_dir(cwd)
        .env_remove("LICSYNC_PASSWORD")
        .env_remove("LICSYNC_CLIENT_SECRET")
        .output()
        .await
        .unwrap()
}

fn options(credential: Credential, file: &Path, out: &Path) -> RenewOptions {
    RenewOptions {
        credential,
        registration_file: file.to_owned(),
        output_directory: out.to_owned(),
        update_urls: false,
        timeout: GUARD,
        servers: Vec::new(),
    }
}

fn user(username: &str, password: &str) -> Credential {
    Credential::User {
        username: username.into(),
        password: password.into(),
    }
}

/// A registration for a control plane that is not running: enough for what is refused before
/// any connection.
fn offline_registration(path: &Path) {
    let (ca, _) = CertificateAuthority::generate("CA", Duration::from_secs(3600)).unwrap();
    let (key, csr) = pki::new_key_and_csr("edge").unwrap();
    let id = "11111111-2222-4333-8444-555555555555";
    let issued = ca
        .sign_dataplane(&csr, id, Duration::from_secs(3600))
        .unwrap();
    RegistrationFile {
        dataplane_id: id.into(),
        dataplane_name: "edge".into(),
        cluster_url: "https://127.0.0.1:1".into(),
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
async fn mixed_or_incomplete_credentials_are_usage_errors_that_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registration.yaml");
    offline_registration(&file);
    let out = dir.path().join("out");
    let path = file.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--username", "ops"], "--username needs --password"),
        (&["--password", "pw"], "--password needs --username"),
        (&["--client-id", "app"], "--client-id needs --client-secret"),
        (
            &["--client-secret", "s"],
            "--client-secret needs --client-id",
        ),
        (
            &["--username", "ops", "--client-secret", "s"],
            "--username cannot be used with --client-secret",
        ),
        (&[], "say who authorises the renewal"),
    ];
    for (flags, expected) in cases {
        let mut args = flags.to_vec();
        args.extend(["--output-directory", out_arg, path]);
        let output = run_renew(dir.path(), &args).await;
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "{flags:?}: {stderr}"
        );
        assert!(
            stderr.contains("Usage: licsync-dp registration renew"),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
        assert!(!out.exists(), "{flags:?} created the output directory");
    }
}

#[tokio::test]
async fn renewing_into_a_directory_that_holds_a_registration_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registration.yaml");
    offline_registration(&file);
    let before = std::fs::read(&file).unwrap();
    // In place: the default --output-directory is the current directory, the file's own.
    let output = run_renew(
        dir.path(),
        &["--username", "ops", "--password", "pw", "registration.yaml"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "licsync-dp: ./registration.yaml already exists, and renewing never overwrites a registration file; choose another --output-directory (for example a new empty one), or move that file away first\n"
    );
    assert!(output.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// A control plane with a registered data plane, an admin user `ops` and a license.
struct Fleet {
    dir: tempfile::TempDir,
    issuer: Issuer,
    cp: ControlPlane,
    registration: RegistrationFile,
    file: PathBuf,
}

async fn fleet(ttl: Option<Duration>) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let mut builder = ControlPlaneBuilder::in_dir(&dir.path().join("cp")).trusting(&issuer);
    if let Some(ttl) = ttl {
        builder = builder.dataplane_cert_ttl(ttl);
    }
    let cp = builder.start().await;
    // Before registering: a short-lived certificate starts ageing at registration.
    cp.create_admin_user("ops", "correct horse battery staple")
        .await;
    let registration = cp.register(&dir.path().join("dp")).await;
    let file = dir.path().join("dp/registration.yaml");
    Fleet {
        dir,
        issuer,
        cp,
        registration,
        file,
    }
}

/// Checks that `new` renews `old`: same data plane, fresh key and certificate, saved 0600.
fn assert_renewed(old: &RegistrationFile, path: &Path) -> RegistrationFile {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let new = RegistrationFile::load(path).unwrap();
    assert_eq!(new.dataplane_id, old.dataplane_id);
    assert_eq!(new.dataplane_name, old.dataplane_name);
    assert_eq!(new.cluster_url, old.cluster_url);
    assert_eq!(new.registered_at, old.registered_at);
    assert!(new.renewed_at.is_some());
    assert_ne!(new.private_key, old.private_key);
    let (old_cert, new_cert) = (
        old.certificate_info().unwrap(),
        new.certificate_info().unwrap(),
    );
    assert_ne!(new_cert.serial, old_cert.serial);
    assert_eq!(
        new_cert.dataplane_id.as_deref(),
        Some(old.dataplane_id.as_str())
    );
    new
}

// Needs the control plane's Renew and principals (branch `principals`).
#[tokio::test]
async fn an_admin_user_renews_with_the_binary_and_the_new_file_connects() {
    let Fleet {
        dir,
        issuer: _,
        cp,
        registration,
        file,
    } = fleet(None).await;
    let out = dir.path().join("renewed");
    let output = run_renew(
        dir.path(),
        &[
            "--username",
            "ops",
            "--password",
            "correct horse battery staple",
            "--output-directory",
            out.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), RENEWAL_COMPLETED);
    let renewed = assert_renewed(&registration, &out.join("registration.yaml"));

    // The renewed file is what the agent then runs with.
    let agent = Agent::start(agent::config(
        &dir.path().join("agent"),
        &out.join("registration.yaml"),
    ))
    .await;
    eventually("the renewed data plane to connect", || async {
        let row = cp.dataplane(&renewed.dataplane_id).await;
        (row["connected"] == true).then_some(())
    })
    .await;
    agent.stop().await;
    cp.shutdown().await;
}

// Needs the control plane's Renew and principals (branch `principals`).
#[tokio::test]
async fn a_connected_app_renews_only_with_the_manage_servers_scope() {
    let Fleet {
        dir,
        cp,
        registration,
        file,
        ..
    } = fleet(None).await;
    let (reader, reader_secret) = cp.create_app("dashboards", &["read:servers"]).await;
    let refused_dir = dir.path().join("refused");
    let err = renew(options(
        Credential::App {
            client_id: reader,
            client_secret: reader_secret,
        },
        &file,
        &refused_dir,
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("refused the renewal"), "{err}");
    assert!(!refused_dir.join("registration.yaml").exists());

    let (manager, secret) = cp.create_app("fleet-automation", &["manage:servers"]).await;
    // The secret may come from the environment instead of the command line.
    let out = dir.path().join("renewed");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_licsync-dp"))
        .args(["registration", "renew", "--client-id", &manager])
        .arg("--output-directory")
        .arg(&out)
        .arg(&file)
        .env("LICSYNC_CLIENT_SECRET", &secret)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), RENEWAL_COMPLETED);
    assert_renewed(&registration, &out.join("registration.yaml"));
    cp.shutdown().await;
}

// Needs the control plane's Renew and principals (branch `principals`).
#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_refused_and_nothing_is_written() {
    let Fleet { dir, cp, file, .. } = fleet(None).await;
    for (name, credential) in [
        ("wrong password", user("ops", "wrong")),
        (
            "unknown user",
            user("nobody", "correct horse battery staple"),
        ),
    ] {
        let out = dir.path().join(name);
        let err = renew(options(credential, &file, &out))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "the control plane at {} refused the renewal: ",
                cp.url()
            )),
            "{name}: {err}"
        );
        assert!(
            !err.contains("correct horse"),
            "{name}: the password is never shown: {err}"
        );
        assert!(!out.join("registration.yaml").exists(), "{name}");
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn with_sync_servers_a_renewal_passes_over_a_node_that_is_down() {
    let Fleet {
        dir,
        cp,
        mut registration,
        file,
        ..
    } = fleet(None).await;
    // The node in the registration file is gone; the configuration lists it first, then a
    // node that answers.
    let down = "https://127.0.0.1:1";
    registration.cluster_url = down.into();
    std::fs::remove_file(&file).unwrap();
    registration.save(&file).unwrap();
    let config = dir.path().join("licsync-dp.toml");
    std::fs::write(
        &config,
        format!("[sync]\nservers = [\"{down}\", \"{}\"]\n", cp.url()),
    )
    .unwrap();
    let out = dir.path().join("renewed");
    let args = [
        "-c",
        config.to_str().unwrap(),
        "--username",
        "ops",
        "--password",
        "correct horse battery staple",
        "--output-directory",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    let output = run_renew(dir.path(), &args).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), RENEWAL_COMPLETED);
    assert_renewed(&registration, &out.join("registration.yaml"));

    // A refusal is the cluster's answer, not one node's: the next server is not asked, and
    // the error names the node that refused.
    let mut refused = options(user("ops", "wrong"), &file, &dir.path().join("refused"));
    refused.servers = vec![
        ClusterUrl::parse(&cp.url()).unwrap(),
        ClusterUrl::parse(down).unwrap(),
    ];
    let err = renew(refused).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "the control plane at {} refused the renewal: ",
            cp.url()
        )),
        "{err}"
    );
    cp.shutdown().await;
}

// Needs the control plane's Renew and principals (branch `principals`).
#[tokio::test]
async fn update_urls_takes_the_advertised_cluster_url_otherwise_it_is_kept() {
    let Fleet {
        dir,
        cp,
        mut registration,
        file,
        ..
    } = fleet(None).await;
    // The operator reached the control plane as localhost (also in its certificate); it
    // advertises 127.0.0.1.
    let port = registration
        .cluster_url
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    registration.cluster_url = format!("https://localhost:{port}");
    registration.save(&file).unwrap();
    let advertised = cp.advertised_url().await;
    assert_eq!(advertised, format!("https://127.0.0.1:{port}"));

    let kept = dir.path().join("kept");
    renew(options(
        user("ops", "correct horse battery staple"),
        &file,
        &kept,
    ))
    .await
    .unwrap();
    let renewed = RegistrationFile::load(&kept.join("registration.yaml")).unwrap();
    assert_eq!(renewed.cluster_url, format!("https://localhost:{port}"));

    let updated = dir.path().join("updated");
    let output = run_renew(
        dir.path(),
        &[
            "--username",
            "ops",
            "--password",
            "correct horse battery staple",
            "--update-urls=true",
            "--output-directory",
            updated.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let renewed = RegistrationFile::load(&updated.join("registration.yaml")).unwrap();
    assert_eq!(renewed.cluster_url, advertised);
    cp.shutdown().await;
}

// Needs the control plane's Renew and principals (branch `principals`).
#[tokio::test]
async fn renewing_an_expired_certificate_by_hand_brings_the_running_agent_back_without_a_restart() {
    let (events, _capture) = Events::capture();
    let Fleet {
        dir,
        issuer,
        cp,
        registration,
        file,
    } = fleet(Some(Duration::from_secs(4))).await;
    let document = issuer.license("Renewal Corp");
    cp.create_license(&document).await;
    let mut config = agent::config(&dir.path().join("dp"), &file);
    config.sync.rotate_certificate = false;
    let agent = Agent::start(config).await;
    eventually("the license file", || async {
        (read(&agent.license_path).as_deref() == Some(document.as_str())).then_some(())
    })
    .await;
    let written = file_identity(&agent.license_path);
    eventually("the agent to report its expired certificate", || async {
        events
            .named("cert.expired")
            .into_iter()
            .find(|e| e.field("renew_command").is_some())
    })
    .await;
    eventually(
        "the control plane to drop the expired data plane",
        || async {
            (cp.dataplane(&registration.dataplane_id).await["connected"] == false).then_some(())
        },
    )
    .await;

    // Certificates that outlive the test from now on; then the operator renews by hand (the
    // old certificate has expired) and copies the result into place.
    let cp = cp
        .restart_with(|config| {
            config.pki.dataplane_cert_ttl = HumanDuration(Duration::from_secs(3600))
        })
        .await;
    let mark = events.mark();
    let out = dir.path().join("renewed");
    renew(options(
        user("ops", "correct horse battery staple"),
        &file,
        &out,
    ))
    .await
    .unwrap();
    let renewed = assert_renewed(&registration, &out.join("registration.yaml"));
    std::fs::copy(out.join("registration.yaml"), &file).unwrap();

    eventually(
        "the agent to reconnect with the renewed certificate",
        || async {
            let row = cp.dataplane(&registration.dataplane_id).await;
            (row["connected"] == true).then_some(row)
        },
    )
    .await;
    let reloaded = events.since(mark, "registration.reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(
        reloaded[0].field("serial"),
        Some(renewed.certificate_info().unwrap().serial.as_str())
    );
    let (_, status) = agent.api.get("/status").await;
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(
        status["cert_expires_at"],
        renewed
            .certificate_info()
            .unwrap()
            .not_after
            .unix_timestamp()
    );
    // Same license, never rewritten, nothing resent.
    assert_eq!(file_identity(&agent.license_path), written);
    assert!(events.since(mark, "license.received").is_empty());
    agent.stop().await;
    cp.shutdown().await;
}
