//! Automatic certificate rotation: when it is due, and one rotation over mTLS.
//!
//! A certificate is rotated once a random fraction between two thirds and three quarters of
//! its lifetime has passed ([`due_at`]): early enough that a control plane that is down for a
//! while, or a few failed attempts, leave plenty of time, and spread out so a fleet registered
//! at once does not rotate at once. The rotation itself ([`rotate`]) makes a fresh key, sends
//! its CSR in `LicenseSync.RotateCertificate` over a connection authenticated with the current
//! certificate, and checks the answer is for this data plane and this key. Saving the new file
//! and switching to it is the caller's ([`super::Lifecycle`]): the control plane keeps
//! accepting the previous certificate until the new one is first used, so a crash before the
//! file is saved loses nothing.

use std::time::Duration;

use licsync_common::pki::{self, CertInfo};
use licsync_common::proto::RotateCertificateRequest;
use licsync_common::proto::license_sync_client::LicenseSyncClient;
use time::OffsetDateTime;
use tonic::Code;

use super::Identity;
use crate::cluster::{self, ClusterUrl, ConnectOptions, Diagnosis, TlsSetupError};
use crate::registration::{RegistrationFile, now_rfc3339};
use crate::sync::servers::Target;

/// Rotation happens once this fraction of the lifetime has passed, at the earliest...
pub const EARLIEST: f64 = 2.0 / 3.0;
/// ...and at the latest.
pub const LATEST: f64 = 3.0 / 4.0;

/// How long to wait before asking again a control plane that cannot rotate certificates (an
/// older version): it will not learn to within minutes.
pub const UNSUPPORTED_RETRY: Duration = Duration::from_secs(3600);

/// When a certificate whose lifetime runs from `start` to `not_after` is rotated, for a
/// `jitter` in `[0, 1]` (uniform in the agent, fixed in tests).
pub fn due_at(start: OffsetDateTime, not_after: OffsetDateTime, jitter: f64) -> OffsetDateTime {
    let fraction = EARLIEST + (LATEST - EARLIEST) * jitter.clamp(0.0, 1.0);
    let lifetime = (not_after - start).max(time::Duration::ZERO);
    start + lifetime * fraction
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "the control plane cannot rotate certificates (it answered: {0}); upgrade it, or renew by hand with `licsync-dp registration renew` before the certificate expires"
    )]
    Unsupported(String),
    #[error("the control plane refused to rotate the certificate: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(Diagnosis),
    #[error("the control plane sent an unusable certificate: {0}; the current one stays in use")]
    BadAnswer(String),
    #[error("cannot create a key and certificate request: {0}")]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

impl RotationError {
    /// How long to wait before the next attempt, given the backoff's proposal.
    pub fn retry_after(&self, backoff: Duration) -> Duration {
        match self {
            Self::Unsupported(_) => UNSUPPORTED_RETRY,
            _ => backoff,
        }
    }
}

/// Asks the control plane at `server` (the node the sync client uses) for a new certificate for
/// `identity`'s data plane, authenticated with its current one, and returns `current` with the new certificate, key and CA.
pub async fn rotate(
    identity: &Identity,
    current: &RegistrationFile,
    server: &Target,
    connect: ConnectOptions,
) -> Result<RegistrationFile, RotationError> {
    let (private_key, csr_der) = pki::new_key_and_csr(&current.dataplane_name)?;
    let url = &server.url;
    let one_shot = ConnectOptions {
        keepalive_interval: None,
        ..connect
    };
    let channel = identity
        .endpoint_to(server, one_shot)?
        .timeout(connect.connect_timeout.max(Duration::from_secs(10)))
        .connect()
        .await
        .map_err(|e| RotationError::Unreachable(cluster::diagnose(&e, url)))?;
    let answer = LicenseSyncClient::new(channel)
        .rotate_certificate(RotateCertificateRequest { csr_der })
        .await
        .map_err(|status| from_status(&status, url))?
        .into_inner();
    check(
        &answer.certificate_pem,
        &private_key,
        &identity.dataplane_id,
    )
    .map_err(RotationError::BadAnswer)?;
    let ca_certificate = if answer.ca_certificate_pem.trim().is_empty() {
        current.ca_certificate.clone()
    } else if pki::certificates_from_pem(&answer.ca_certificate_pem).is_empty() {
        return Err(RotationError::BadAnswer(
            "ca_certificate_pem holds no PEM certificate".into(),
        ));
    } else {
        answer.ca_certificate_pem
    };
    Ok(RegistrationFile {
        ca_certificate,
        certificate: answer.certificate_pem,
        private_key,
        renewed_at: Some(now_rfc3339()),
        ..current.clone()
    })
}

/// The new certificate must name this data plane and certify the key made for it.
fn check(cert_pem: &str, private_key: &str, dataplane_id: &str) -> Result<CertInfo, String> {
    let cert = CertInfo::from_pem(cert_pem).map_err(|e| format!("certificate_pem: {e}"))?;
    if cert.dataplane_id.as_deref() != Some(dataplane_id) {
        return Err(format!(
            "the certificate is for data plane {}, not {dataplane_id}",
            cert.dataplane_id.as_deref().unwrap_or("(none)")
        ));
    }
    match pki::certificate_matches_key(cert_pem, private_key) {
        Ok(true) => Ok(cert),
        Ok(false) => Err("the certificate is not for the key this rotation made".into()),
        Err(e) => Err(format!(
            "the certificate cannot be checked against the new key: {e}"
        )),
    }
}

fn from_status(status: &tonic::Status, url: &ClusterUrl) -> RotationError {
    use std::error::Error;
    let message = || {
        if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_owned()
        }
    };
    match status.code() {
        Code::Unimplemented => RotationError::Unsupported(message()),
        Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition => {
            RotationError::Refused(message())
        }
        _ if status.source().is_some() => {
            RotationError::Unreachable(cluster::diagnose(status, url))
        }
        code => RotationError::Refused(format!("{code:?}: {}", message())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use licsync_common::pki::CertificateAuthority;

    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000 + seconds).unwrap()
    }

    #[test]
    fn rotation_falls_between_two_thirds_and_three_quarters_of_the_lifetime() {
        let day = 86_400;
        let (start, end) = (at(0), at(90 * day));
        assert_eq!(due_at(start, end, 0.0), at(60 * day));
        assert_eq!(due_at(start, end, 1.0), at(67 * day + day / 2));
        let middle = due_at(start, end, 0.5);
        assert!(middle > at(60 * day) && middle < at(68 * day), "{middle}");
        // Out-of-range jitter is clamped; a lifetime already over is due at its start.
        assert_eq!(due_at(start, end, 7.0), at(67 * day + day / 2));
        assert_eq!(due_at(end, start, 0.5), end);
        // Short test certificates: 4 s live, rotated between 2.67 s and 3 s.
        let short = due_at(at(0), at(4), 0.0) - at(0);
        assert!(
            short > time::Duration::milliseconds(2600)
                && short < time::Duration::milliseconds(2700),
            "{short}"
        );
    }

    #[test]
    fn an_older_control_plane_is_asked_again_only_hourly() {
        let unsupported = RotationError::Unsupported("not here".into());
        assert_eq!(
            unsupported.retry_after(StdDuration::from_secs(2)),
            UNSUPPORTED_RETRY
        );
        let refused = RotationError::Refused("no".into());
        assert_eq!(
            refused.retry_after(StdDuration::from_secs(2)),
            StdDuration::from_secs(2)
        );
        assert!(
            unsupported.to_string().contains("registration renew"),
            "{unsupported}"
        );
    }

    #[test]
    fn only_a_certificate_for_this_data_plane_and_key_is_kept() {
        let (ca, _) = CertificateAuthority::generate("CA", StdDuration::from_secs(3600)).unwrap();
        let (key, csr) = pki::new_key_and_csr("edge").unwrap();
        let id = "0b6a2d6c-4b0e-4c43-9c56-7c8a3f3f0a11";
        let good = ca
            .sign_dataplane(&csr, id, StdDuration::from_secs(60))
            .unwrap()
            .cert_pem;
        assert!(check(&good, &key, id).is_ok());
        let other = ca
            .sign_dataplane(
                &csr,
                "5d1b9e8f-0000-4000-8000-000000000001",
                StdDuration::from_secs(60),
            )
            .unwrap()
            .cert_pem;
        let err = check(&other, &key, id).unwrap_err();
        assert!(
            err.starts_with("the certificate is for data plane 5d1b9e8f"),
            "{err}"
        );
        let (other_key, _) = pki::new_key_and_csr("edge").unwrap();
        let err = check(&good, &other_key, id).unwrap_err();
        assert!(err.contains("not for the key"), "{err}");
        assert!(
            check("", &key, id)
                .unwrap_err()
                .starts_with("certificate_pem")
        );
    }
}
