//! The Admin API over HTTPS (`admin.tls_cert_file`, `admin.tls_key_file`) with a real
//! certificate from a test CA: requests work over TLS with the usual token, a plain-HTTP
//! client gets nothing it can read, a client that opens a connection and never completes the
//! handshake is cut off after `admin.header_read_timeout`, and a bad pair stops the start with
//! the key to fix.

use std::path::Path;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::pki::CertificateAuthority;
use licsync_cp::config::CpConfig;
use licsync_cp::server::{Listeners, ServeError};
use licsync_testkit::ControlPlane;
use reqwest::{Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// A CA and a certificate for 127.0.0.1 and localhost written under `dir`: (CA PEM, cert
/// file, key file).
fn certificate(dir: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let day = Duration::from_secs(86_400);
    let (ca, _) = CertificateAuthority::generate("licsync admin test CA", day).unwrap();
    let issued = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()], day)
        .unwrap();
    let cert = dir.join("admin.crt");
    let key = dir.join("admin.key");
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem.unwrap()).unwrap();
    (ca.cert_pem().to_owned(), cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_serves_https_and_bounds_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let cp = ControlPlane::builder()
        .admin_tls(&cert, &key, &ca)
        .config(|c| c.admin.header_read_timeout = HumanDuration(Duration::from_millis(500)))
        .start()
        .await;
    assert!(cp.admin_url().starts_with("https://"));
    let (status, body) = cp.call(Method::GET, "/status", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = cp.create_license(&cp.issuer.license("Over TLS")).await;
    assert!(!id.is_empty());

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(cp.admin_url().replace("https://", "http://") + "/health/live")
        .send()
        .await;
    assert!(plain.is_err(), "a plain-HTTP answer came back: {plain:?}");

    // A connection that never starts its handshake is closed by the server.
    let mut idle = tokio::net::TcpStream::connect(cp.config().admin.listen)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(licsync_testkit::GUARD, idle.read(&mut buf))
        .await
        .expect("the server closes a connection that does not handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_bad_certificate_pair_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_key) = certificate(other.path());
    let missing = dir.path().join("missing.crt");
    for (cert_file, key_file, needle) in [
        (
            missing.clone(),
            other_key.clone(),
            "cannot read admin.tls_cert_file",
        ),
        (
            cert.clone(),
            missing.clone(),
            "cannot read admin.tls_key_file",
        ),
        (other_key.clone(), other_key.clone(), "admin.tls_cert_file"),
    ] {
        let mut config = CpConfig {
            data_dir: dir.path().join("data"),
            ..CpConfig::default()
        };
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.cluster.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.tls_cert_file = Some(cert_file);
        config.admin.tls_key_file = Some(key_file);
        let listeners = Listeners::bind(&config).await.unwrap();
        let error = licsync_cp::server::run(config, listeners, CancellationToken::new())
            .await
            .expect_err("the start fails");
        assert!(matches!(error, ServeError::AdminTls(_)), "{error}");
        assert!(error.to_string().contains(needle), "{error}");
    }

    let mut config = CpConfig::default();
    config.admin.tls_cert_file = Some(cert);
    let error = config.validate().unwrap_err();
    assert_eq!(error.key, "admin.tls_key_file");
}
