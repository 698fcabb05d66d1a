//! Who is calling `licsync.v1.LicenseSync`: the data plane named in the verified client
//! certificate, checked against the registry (registered, not revoked, presenting its newest
//! certificate or the one before it). Sync and RotateCertificate both start here, so a
//! certificate is accepted or refused the same way whatever the call.
//!
//! A refusal names what is wrong in words and carries the `licsync-end-reason` trailer
//! ([`EndReason`]): a serial this data plane held before is *superseded*; one from the cluster CA
//! that this control plane never issued to it (a control plane restored from an older backup,
//! or another one sharing the CA) is *not issued by this control plane*.

use licsync_common::stream_end::EndReason;

use licsync_common::pki::CertInfo;
use time::OffsetDateTime;
use tonic::Status;
use uuid::Uuid;

use super::tls::PeerInfo;
use crate::model::DataPlaneRecord;
use crate::state::ControlPlane;

/// A data plane that proved who it is with its client certificate.
pub(super) struct Caller {
    /// Its record, as it stands after this authentication.
    pub record: DataPlaneRecord,
    /// When the presented certificate expires.
    pub not_after: OffsetDateTime,
    /// Serial (hex) of the presented certificate.
    pub serial: String,
}

/// Checks the verified client certificate against the registry: the identity comes from the
/// certificate, never from a message. The newest certificate retires the one before it the
/// first time it is used; any other serial, a revoked or an unknown data plane is refused.
pub(super) async fn authenticate(cp: &ControlPlane, peer: &PeerInfo) -> Result<Caller, Status> {
    let refuse = |status: Status| {
        tracing::warn!(event = "dataplane.refused", peer.addr = %peer.remote_addr, reason = %status.message(), cause = EndReason::of(&status).map(EndReason::as_str), "Refused a data-plane call.");
        status
    };
    let Some(client) = peer.client.as_deref() else {
        return Err(refuse(Status::unauthenticated(
            "a client certificate is required; register this data plane with `licsync-dp registration create`",
        )));
    };
    let info: &CertInfo = client
        .as_ref()
        .map_err(|e| refuse(Status::unauthenticated(e.clone())))?;
    let id = info
        .dataplane_id
        .as_deref()
        .and_then(|id| id.parse::<Uuid>().ok())
        .ok_or_else(|| {
            refuse(Status::unauthenticated(
                "the client certificate carries no data-plane id; it was not issued by licsync registration",
            ))
        })?;
    let serial = info.serial.clone();
    let outcome = cp
        .dataplanes()
        .update(id, |record| {
            if record.revoked {
                return Err(EndReason::Revoked.status(format!(
                    "revoked: data plane {id} was revoked; register it again with a new registration token (`licsync-dp registration create`)"
                )));
            }
            if record.cert_serial == serial {
                // The newest certificate is in use: the one before it is retired for good.
                if let Some(previous) = record.previous_cert_serial.take() {
                    record.retire_serial(previous);
                }
                Ok(())
            } else if record.previous_cert_serial.as_deref() == Some(serial.as_str()) {
                Ok(())
            } else if record.held_before(&serial) {
                Err(EndReason::CertificateSuperseded.status(format!(
                    "certificate {serial} of data plane {id} was superseded by a newer one; use the newest registration file"
                )))
            } else {
                Err(EndReason::CertificateNotIssued.status(format!(
                    "certificate {serial} of data plane {id} was not issued by this control plane (it is from the cluster CA, but this control plane never issued that serial to it: restored from an older backup, or another control plane shares the CA); register the data plane again"
                )))
            }
        })
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    match outcome {
        Some((record, Ok(()))) => Ok(Caller {
            record,
            not_after: info.not_after,
            serial,
        }),
        Some((_, Err(status))) => Err(refuse(status)),
        None => Err(refuse(EndReason::NotRegistered.status(format!(
            "data plane {id} is not registered with this control plane; register it again (`licsync-dp registration create`)"
        )))),
    }
}
