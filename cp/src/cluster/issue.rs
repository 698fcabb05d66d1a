//! Issuing a new certificate to a data plane that is already registered: automatic rotation
//! (`LicenseSync.RotateCertificate`) and renewal with credentials (`Registration.Renew`) both
//! end here, so the record is updated one way whichever path the data plane took.
//!
//! The data plane keeps its id. The certificate it held stays valid as the record's
//! `previous_cert_serial` until the new one is first used (see `sync::authenticate`), so a data
//! plane that crashes between receiving its certificate and saving it is not locked out.

use licsync_common::pki::{CertInfo, CertificateAuthority, check_csr};
use time::OffsetDateTime;
use tonic::Status;
use uuid::Uuid;

use crate::model::{DataPlaneRecord, RenewRefusal};
use crate::state::ControlPlane;

/// Largest accepted CSR; a P-256 CSR is about 300 bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// A certificate issued to an existing data plane, and its record as now stored.
#[derive(Debug, Clone)]
pub struct Reissued {
    /// The data plane's record with the new serial and expiry.
    pub record: DataPlaneRecord,
    /// The new certificate, PEM.
    pub cert_pem: String,
    /// Serial (hex) of the certificate it replaces, now the record's previous serial.
    pub old_serial: String,
    /// Serial (hex) of the new certificate.
    pub new_serial: String,
    /// When the new certificate expires.
    pub not_after: OffsetDateTime,
}

/// Checks that `csr_der` is a well-formed, self-signed CSR within [`MAX_CSR_BYTES`]: cheap, so
/// callers may run it before authenticating.
pub fn check_bounded_csr(csr_der: &[u8]) -> Result<(), Status> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(Status::invalid_argument(format!(
            "csr_der is {} bytes; the limit is {MAX_CSR_BYTES}",
            csr_der.len()
        )));
    }
    check_csr(csr_der).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Signs `csr_der` for registered, unrevoked data plane `id` with `pki.dataplane_cert_ttl` and
/// records the new certificate as its current one.
///
/// `presented` is the serial of the certificate the caller authenticated with (rotation over
/// mTLS): that certificate is the one the data plane still holds, so it becomes the previous
/// serial even when it was itself the previous one (a second rotation after a crash). Without
/// one (renewal by credentials), the record's current serial becomes the previous one.
/// Refusals are gRPC statuses whose messages say what to do.
pub async fn reissue(
    cp: &ControlPlane,
    ca: &CertificateAuthority,
    id: Uuid,
    csr_der: &[u8],
    presented: Option<&str>,
) -> Result<Reissued, Status> {
    check_bounded_csr(csr_der)?;
    let unavailable = |e: crate::store::StoreError| Status::unavailable(e.to_string());
    let known = cp.dataplanes().find(id).await.map_err(unavailable)?;
    if let Some(refusal) = unusable(id, known.as_ref()) {
        return Err(refusal);
    }
    let issued = ca
        .sign_dataplane(
            csr_der,
            &id.to_string(),
            cp.config().pki.dataplane_cert_ttl.0,
        )
        .map_err(|e| Status::internal(e.to_string()))?;
    let info = CertInfo::from_pem(&issued.cert_pem).map_err(|e| Status::internal(e.to_string()))?;
    let new_serial = info.serial;
    let expires_at = issued.not_after.unix_timestamp();
    // Checked again under the record's lock: a revocation that landed while signing wins.
    let outcome = cp
        .dataplanes()
        .update(id, |record| {
            if let Some(refusal) = unusable(id, Some(record)) {
                return Err(refusal);
            }
            let old = presented.map_or_else(|| record.cert_serial.clone(), str::to_owned);
            // The two serials accepted until now, but for the one kept as previous, are
            // remembered as superseded.
            let dropped = [
                std::mem::replace(&mut record.cert_serial, new_serial.clone()),
                record
                    .previous_cert_serial
                    .replace(old.clone())
                    .unwrap_or_default(),
            ];
            for serial in dropped {
                if !serial.is_empty() {
                    record.retire_serial(serial);
                }
            }
            record.cert_expires_at = expires_at;
            Ok(old)
        })
        .await
        .map_err(unavailable)?;
    let (record, old_serial) = match outcome {
        Some((record, Ok(old))) => (record, old),
        Some((_, Err(status))) => return Err(status),
        None => return Err(not_registered(id)),
    };
    Ok(Reissued {
        record,
        cert_pem: issued.cert_pem,
        old_serial,
        new_serial,
        not_after: issued.not_after,
    })
}

/// The refusal for an unknown or revoked data plane, saying what to do instead.
fn unusable(id: Uuid, record: Option<&DataPlaneRecord>) -> Option<Status> {
    match record {
        None => Some(not_registered(id)),
        Some(r) if r.revoked => Some(Status::permission_denied(
            RenewRefusal::Revoked { id }.to_string(),
        )),
        Some(_) => None,
    }
}

fn not_registered(id: Uuid) -> Status {
    Status::not_found(RenewRefusal::Unknown { id }.to_string())
}
