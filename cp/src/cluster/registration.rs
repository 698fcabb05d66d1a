//! `licsync.v1.Registration`: turns a one-time registration token and a CSR into a data-plane
//! identity (after Flex Gateway's `flexctl registration create`), and renews that identity for
//! a user or connected app allowed to (`flexctl registration renew`).
//!
//! The data plane's key never leaves it; the control plane chooses the id and every field of the
//! certificate. The token is checked and its use counted atomically in storage, so two data
//! planes racing for a token's last use cannot both win.
//!
//! A renewal presents no certificate (the old one may have expired): the credential is checked
//! and throttled by [`crate::principals`], the data plane must exist and not be revoked, and the
//! new certificate is for the same data-plane id. The record's new serial is written atomically
//! with the revocation check; the old certificate stays accepted until the new one is used.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use licsync_common::pki::{CertInfo, CertificateAuthority};
use licsync_common::proto::registration_server::Registration;
use licsync_common::proto::{RegisterRequest, RegisterResponse, RenewRequest, renew_request};
use licsync_common::unix_now;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::issue;
use super::tls::PeerInfo;
use crate::entitlement::AdmissionError;
use crate::model::DataPlaneRecord;
use crate::principals::{
    Credential, MAX_CLIENT_SECRET_BYTES, MAX_PASSWORD_BYTES, Refusal, may_renew_dataplanes,
};
use crate::registration_tokens::ConsumeError;
use crate::state::ControlPlane;

const MAX_TOKEN_BYTES: usize = 256;
const MAX_NAME_BYTES: usize = 128;
const MAX_HOSTNAME_BYTES: usize = 255;
const MAX_VERSION_BYTES: usize = 64;
/// A UUID is 36 bytes; a little slack so the error says "not a UUID" rather than "too long".
const MAX_DATAPLANE_ID_BYTES: usize = 64;
/// Longer than any valid username (64 ASCII characters), so a long one is refused as unknown.
const MAX_USERNAME_BYTES: usize = 256;
const MAX_CLIENT_ID_BYTES: usize = 64;

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
        check_text("name", &req.name, MAX_NAME_BYTES)?;
        check_text("hostname", &req.hostname, MAX_HOSTNAME_BYTES)?;
        check_text("version", &req.version, MAX_VERSION_BYTES)?;

        // A malformed CSR must not burn the token's use, and nothing is signed for a caller
        // whose token was refused: check the CSR, consume the token, then sign.
        issue::check_bounded_csr(&req.csr_der)?;
        // Nor when the license's data-plane limit is enforced and reached.
        let admission = self.cp.entitlement().admit().await.map_err(|refusal| {
            tracing::warn!(event = "registration.refused", peer.addr = %peer, hostname = %req.hostname, reason = %refusal, "Refused a registration.");
            match refusal {
                AdmissionError::LimitReached { .. } => Status::failed_precondition(refusal.to_string()),
                AdmissionError::Storage(error) => Status::unavailable(error.to_string()),
            }
        })?;
        let now = unix_now();
        let token = match self.cp.registration_tokens().consume(&req.token, now).await {
            Ok(token) => token,
            Err(ConsumeError::Storage(error)) => {
                return Err(Status::unavailable(error.to_string()));
            }
            Err(ConsumeError::Refused(refusal)) => {
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
                self.cp.config().pki.dataplane_cert_ttl.0,
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
            retired_cert_serials: Vec::new(),
            cert_expires_at: issued.not_after.unix_timestamp(),
            last_seen: None,
            license_id: None,
            license_updated_at: None,
            revoked: false,
        };
        self.cp
            .dataplanes()
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
        self.cp.audit().record(crate::audit::Entry {
            actor: format!("dataplane {id} (registration token {})", token.id),
            source: peer.clone(),
            action: "dataplane.register".into(),
            resource: format!("/clustering/data-planes/{id}"),
            result: "ok".into(),
        });
        self.cp.entitlement().registered(admission).await;
        Ok(Response::new(RegisterResponse {
            dataplane_id: id.to_string(),
            dataplane_name: name,
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
            cluster_url: self.cp.cluster_url().to_owned(),
            trusted_license_keys: self.cp.licenses().trusted_keys().to_base64(),
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote_addr.ip());
        let req = request.into_inner();
        let credential = credential(req.credential)?;
        if req.dataplane_id.len() > MAX_DATAPLANE_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "dataplane_id is {} bytes; the limit is {MAX_DATAPLANE_ID_BYTES}",
                req.dataplane_id.len()
            )));
        }
        let id = Uuid::try_parse(&req.dataplane_id).map_err(|_| {
            Status::invalid_argument(format!(
                "dataplane_id '{}' is not a UUID; it is the dataplane_id in the registration file",
                req.dataplane_id
            ))
        })?;
        issue::check_bounded_csr(&req.csr_der)?;

        // Who is asking and whether they may: before anything about the data plane is
        // revealed or signed.
        let source = peer.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let refuse = |status: Status, principal: &dyn std::fmt::Display| {
            tracing::warn!(
                event = "registration.renew_refused",
                dataplane.id = %id,
                principal = %principal,
                peer.addr = %source,
                reason = %status.message(),
                "Refused a certificate renewal."
            );
            status
        };
        let principal = self
            .cp
            .principals()
            .authenticate(&credential, source, unix_now())
            .await
            .map_err(|refusal| {
                let status = match &refusal {
                    Refusal::Unavailable(_) => Status::unavailable(refusal.to_string()),
                    _ => Status::unauthenticated(refusal.to_string()),
                };
                refuse(status, &describe(&credential))
            })?;
        may_renew_dataplanes(&principal)
            .map_err(|e| refuse(Status::permission_denied(e.to_string()), &principal))?;

        let reissued = issue::reissue(&self.cp, &self.ca, id, &req.csr_der, None)
            .await
            .map_err(|status| refuse(status, &principal))?;
        let record = reissued.record;
        let expires_at = record.cert_expires_at;
        tracing::info!(
            event = "registration.renewed",
            dataplane.id = %id,
            dataplane.name = %record.name,
            principal = %principal,
            peer.addr = %source,
            cert_serial = %record.cert_serial,
            cert_expires_at = expires_at,
            "Renewed a data plane's certificate."
        );
        self.cp.audit().record(crate::audit::Entry {
            actor: principal.to_string(),
            source: source.to_string(),
            action: "dataplane.renew".into(),
            resource: format!("/clustering/data-planes/{id}"),
            result: "ok".into(),
        });
        Ok(Response::new(RegisterResponse {
            dataplane_id: id.to_string(),
            dataplane_name: record.name,
            certificate_pem: reissued.cert_pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
            cluster_url: self.cp.cluster_url().to_owned(),
            trusted_license_keys: self.cp.licenses().trusted_keys().to_base64(),
        }))
    }
}

/// The credential of a renewal, its fields bounded; a missing or empty one says what to send.
fn credential(credential: Option<renew_request::Credential>) -> Result<Credential, Status> {
    match credential {
        Some(renew_request::Credential::User(user)) => {
            check_len("username", &user.username, MAX_USERNAME_BYTES)?;
            check_len("password", &user.password, MAX_PASSWORD_BYTES)?;
            if user.username.is_empty() || user.password.is_empty() {
                return Err(Status::invalid_argument(
                    "a user credential needs both a username and a password",
                ));
            }
            Ok(Credential::User {
                username: user.username,
                password: user.password,
            })
        }
        Some(renew_request::Credential::App(app)) => {
            check_len("client_id", &app.client_id, MAX_CLIENT_ID_BYTES)?;
            check_len("client_secret", &app.client_secret, MAX_CLIENT_SECRET_BYTES)?;
            if app.client_id.is_empty() || app.client_secret.is_empty() {
                return Err(Status::invalid_argument(
                    "a connected-app credential needs both a client id and a client secret",
                ));
            }
            Ok(Credential::App {
                client_id: app.client_id,
                client_secret: app.client_secret,
            })
        }
        None => Err(Status::unauthenticated(
            "no credential: renewing needs a user (username and password) or a connected app (client id and secret)",
        )),
    }
}

/// Who a credential claims to be, for logs (never the secret).
fn describe(credential: &Credential) -> String {
    match credential {
        Credential::User { username, .. } => format!("user '{username}'"),
        Credential::App { client_id, .. } => format!("connected app '{client_id}'"),
    }
}

/// [`check_len`] for text that is stored, listed and logged: no control characters either, so
/// a name cannot forge a log line or rewrite a terminal.
fn check_text(field: &str, value: &str, limit: usize) -> Result<(), Status> {
    check_len(field, value, limit)?;
    licsync_common::log_text::check_name(field, value).map_err(Status::invalid_argument)
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
