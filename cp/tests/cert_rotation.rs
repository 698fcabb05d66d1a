//! Certificate lifecycle at the control plane over real mutual TLS: a data plane rotates its
//! certificate (`RotateCertificate`), the server certificate rotates itself while streams stay
//! open, and expiring certificates are reported in the log.

use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_common::pki::{self, CertInfo};
use licsync_testkit::{ControlPlane, Events, eventually};
use tonic::Code;

#[tokio::test]
async fn rotation_keeps_the_id_and_retires_the_old_certificate_once_the_new_one_is_used() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let old = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&old, licsync_common::VERSION).await.unwrap();
    stream.update().await;

    let new = cp.rotate(&old).await.unwrap();
    let info = CertInfo::from_pem(&new.cert_pem).unwrap();
    assert_eq!(info.dataplane_id.as_deref(), Some(old.id.as_str()));
    assert_ne!(info.serial, old.serial());
    assert!(pki::certificate_matches_key(&new.cert_pem, &new.key_pem).unwrap());
    let rotated = events.named("cert.rotated");
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0].field("role"), Some("dataplane"));
    assert_eq!(rotated[0].field("dataplane.id"), Some(old.id.as_str()));
    assert_eq!(rotated[0].field("old_serial"), Some(old.serial().as_str()));
    assert_eq!(rotated[0].field("new_serial"), Some(info.serial.as_str()));
    let listed = cp.find_dataplane(&old.id).await.unwrap();
    assert_eq!(listed["cert_expires_at"], info.not_after.unix_timestamp());

    // Until the new certificate is used, the old one still works (a crash between receiving
    // and saving the new one must not lock the data plane out).
    let mut with_old = cp.sync(&old, licsync_common::VERSION).await.unwrap();
    with_old.update().await;
    drop(with_old);
    let mut with_new = cp.sync(&new, licsync_common::VERSION).await.unwrap();
    with_new.update().await;

    // Now the old one is retired, for streams and rotations alike.
    let refused = cp.sync(&old, licsync_common::VERSION).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("superseded"), "{refused:?}");
    let refused = cp.rotate(&old).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let logged = events.named("dataplane.refused");
    assert!(
        logged
            .iter()
            .any(|e| e.field("reason").is_some_and(|r| r.contains("superseded"))),
        "{logged:?}"
    );
    drop(stream);
}

#[tokio::test]
async fn a_second_rotation_after_a_lost_certificate_keeps_the_one_still_held() {
    let cp = ControlPlane::start().await;
    let held = cp.register_dataplane(licsync_common::VERSION).await;
    // The answer of the first rotation is lost (the data plane crashed before saving it).
    let _lost = cp.rotate(&held).await.unwrap();
    let second = cp.rotate(&held).await.unwrap();
    // It crashed again: what it still holds keeps working until the newest is used.
    cp.sync(&held, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
    cp.sync(&second, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
    let refused = cp.sync(&held, licsync_common::VERSION).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn rotation_needs_a_certificate_and_a_valid_csr() {
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut client =
        licsync_common::proto::license_sync_client::LicenseSyncClient::new(cp.connect(None).await);
    let (_, csr_der) = pki::new_key_and_csr("edge").unwrap();
    let anonymous = client
        .rotate_certificate(licsync_common::proto::RotateCertificateRequest { csr_der })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(
        anonymous
            .message()
            .contains("client certificate is required")
    );

    let mut client = licsync_common::proto::license_sync_client::LicenseSyncClient::new(
        cp.connect(Some(&dp)).await,
    );
    for (csr_der, says) in [
        (b"not a csr".to_vec(), "signing request is invalid"),
        (vec![0u8; 20_000], "the limit is 16384"),
    ] {
        let refused = client
            .rotate_certificate(licsync_common::proto::RotateCertificateRequest { csr_der })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(says), "{refused:?}");
    }
    // Nothing was issued: the registered certificate is still the current one.
    cp.sync(&dp, licsync_common::VERSION)
        .await
        .unwrap()
        .update()
        .await;
    let (status, body) = cp
        .call(
            reqwest::Method::GET,
            &format!("/clustering/data-planes/{}", dp.id),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        body["cert_expires_at"],
        CertInfo::from_pem(&dp.cert_pem)
            .unwrap()
            .not_after
            .unix_timestamp()
    );
}

#[tokio::test]
async fn the_server_certificate_rotates_while_streams_keep_syncing() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|c| c.pki.server_cert_ttl = HumanDuration(Duration::from_secs(3)))
        .start()
        .await;
    let first_serial = cp.server_serial().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let hello_answer = stream.update().await;
    stream.ack(&hello_answer).await;

    // Several lifetimes of the server certificate pass (each rotated at two thirds).
    let rotated = eventually("three server certificate rotations", || async {
        let rotated: Vec<_> = events
            .named("cert.rotated")
            .into_iter()
            .filter(|e| e.field("role") == Some("server"))
            .collect();
        (rotated.len() >= 3).then_some(rotated)
    })
    .await;
    assert_eq!(rotated[0].field("old_serial"), Some(first_serial.as_str()));
    let issued: Vec<&str> = rotated
        .iter()
        .filter_map(|e| e.field("new_serial"))
        .collect();

    // The stream opened under the first certificate (long expired now) still syncs.
    let id = cp.create_license(&cp.issuer.license("Example")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1);
    assert_eq!(update.upserted[0].id, id);
    stream.ack(&update).await;

    // A new connection is handed a newer certificate, one the rotations issued, and works.
    let now_serial = cp.server_serial().await;
    assert_ne!(now_serial, first_serial);
    let rotated_since = events.named("cert.rotated");
    assert!(
        rotated_since
            .iter()
            .any(|e| e.field("new_serial") == Some(now_serial.as_str())),
        "{now_serial} not among {issued:?}"
    );
    let mut fresh = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    assert_eq!(fresh.update().await.revision, update.revision);

    // What is on disk is a certificate the rotations issued, its key private.
    let on_disk = std::fs::read_to_string(cp.pki_dir().join("server.crt")).unwrap();
    let disk_serial = CertInfo::from_pem(&on_disk).unwrap().serial;
    assert!(
        events
            .named("cert.rotated")
            .iter()
            .any(|e| e.field("new_serial") == Some(disk_serial.as_str()))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cp.pki_dir().join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn expiring_data_plane_certificates_are_reported_when_the_walk_runs_at_start() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|c| {
            c.pki.dataplane_cert_ttl = HumanDuration(Duration::from_secs(10 * 86_400));
        })
        .start()
        .await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    assert!(
        events.named("cert.expiring").is_empty(),
        "nothing yet at the first start"
    );

    let _cp = cp.restart().await;
    let expiring = eventually("a cert.expiring line", || async {
        let found = events.named("cert.expiring");
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(expiring.len(), 1, "{expiring:?}");
    let line = &expiring[0];
    assert_eq!(
        line.level,
        tracing::Level::WARN,
        "10 days left is a warning"
    );
    assert_eq!(line.field("role"), Some("dataplane"));
    assert_eq!(line.field("dataplane.id"), Some(dp.id.as_str()));
    // Registered a moment ago with ten days: 9 whole days left, or 10 within the same second.
    assert!(
        matches!(line.field("days_left"), Some("9" | "10")),
        "{line:?}"
    );
    assert_eq!(line.field("serial"), Some(dp.serial().as_str()));
}
