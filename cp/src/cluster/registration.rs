//! `licsync.v1.Registration`: turns a one-time registration token and a CSR into a data-plane
//! identity (after Flex Gateway's `flexctl registration create`).
//!
//! The data plane's key never leaves it; the control plane chooses the id and every field of the
//! certificate. The token is checked and its use counted atomically in storage, so two data
//! planes racing for a token's last use cannot both win.

use std::sync::Arc;

use licsync_common::pki::{CertInfo, CertificateAuthority, check_csr};
use licsync_common::proto::registration_server::Registration;
use licsync_common::proto::{RegisterRequest, RegisterResponse, RenewRequest};
use licsync_common::unix_now;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::tls::PeerInfo;
use crate::entitlement::AdmissionError;
use crate::model::DataPlaneRecord;
use crate::secrets;
use crate::state::ControlPlane;

/// Largest accepted CSR; a P-256 CSR is about 300 bytes.
const MAX_CSR_BYTES: usize = 16 * 1024;
const MAX_TOKEN_BYTES: usize = 256;
const MAX_NAME_BYTES: usize = 128;
const MAX_HOSTNAME_BYTES: usize = 255;
const MAX_VERSION_BYTES: usize = 64;

/// The Registration gRPC service.
pub struct RegistrationService {
    cp: Arc<ControlPlane>,
    ca: Arc<CertificateAuthority>,
}

impl RegistrationService {
    pub fn new(cp: Arc<ControlPlane>, ca: Arc<CertificateAuthority>) -> Self {
        Self { cp, ca }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote_addr.ip().to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        check_len("token", &req.token, MAX_TOKEN_BYTES)?;
        check_len("name", &req.name, MAX_NAME_BYTES)?;
        check_len("hostname", &req.hostname, MAX_HOSTNAME_BYTES)?;
        check_len("version", &req.version, MAX_VERSION_BYTES)?;
        if req.csr_der.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "csr_der is {} bytes; the limit is {MAX_CSR_BYTES}",
                req.csr_der.len()
            )));
        }

        // A malformed CSR must not burn the token's use, and nothing is signed for a caller
        // whose token was refused: check the CSR, consume the token, then sign.
        check_csr(&req.csr_der).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Nor when the license's data-plane limit is enforced and reached.
        let admission = self.cp.entitlement.admit(&self.cp).await.map_err(|refusal| {
            tracing::warn!(event = "registration.refused", peer.addr = %peer, hostname = %req.hostname, reason = %refusal, "Refused a registration.");
            match refusal {
                AdmissionError::LimitReached { .. } => Status::failed_precondition(refusal.to_string()),
                AdmissionError::Storage(error) => Status::unavailable(error.to_string()),
            }
        })?;
        let now = unix_now();
        let token = match self
            .cp
            .store
            .consume_registration_token(&secrets::hash(&req.token), now)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
        {
            Ok(token) => token,
            Err(refusal) => {
                tracing::warn!(event = "registration.refused", peer.addr = %peer, hostname = %req.hostname, reason = %refusal, "Refused a registration.");
                return Err(Status::permission_denied(refusal.to_string()));
            }
        };
        let id = Uuid::new_v4();
        let issued = self
            .ca
            .sign_dataplane(
                &req.csr_der,
                &id.to_string(),
                self.cp.config.pki.dataplane_cert_ttl.0,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        let info =
            CertInfo::from_pem(&issued.cert_pem).map_err(|e| Status::internal(e.to_string()))?;

        let name = if req.name.trim().is_empty() {
            req.hostname.clone()
        } else {
            req.name.trim().to_owned()
        };
        let record = DataPlaneRecord {
            id,
            name: name.clone(),
            hostname: req.hostname,
            ip: peer.clone(),
            version: req.version,
            registered_at: now,
            cert_serial: info.serial,
            previous_cert_serial: None,
            cert_expires_at: issued.not_after.unix_timestamp(),
            last_seen: None,
            license_id: None,
            license_updated_at: None,
            revoked: false,
        };
        self.cp
            .dataplanes
            .record(&record)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(
            event = "dataplane.registered",
            dataplane.id = %id,
            dataplane.name = %name,
            registration_token.id = %token.id,
            peer.addr = %peer,
            cert_expires_at = record.cert_expires_at,
            "Registered a data plane."
        );
        self.cp.entitlement.registered(&self.cp, admission).await;
        Ok(Response::new(RegisterResponse {
            dataplane_id: id.to_string(),
            dataplane_name: name,
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
            cluster_url: self.cp.cluster_url.clone(),
            trusted_license_keys: self.cp.licenses.trusted_keys().to_base64(),
        }))
    }

    async fn renew(
        &self,
        _request: Request<RenewRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented(
            "certificate renewal is not available on this control plane version; register the data plane again with a new registration token",
        ))
    }
}

fn check_len(field: &str, value: &str, limit: usize) -> Result<(), Status> {
    if value.len() > limit {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; the limit is {limit}",
            value.len()
        )));
    }
    Ok(())
}
