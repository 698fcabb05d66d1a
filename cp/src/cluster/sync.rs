//! `licsync.v1.LicenseSync`: one long-lived stream per data plane.
//!
//! Each stream keeps what its data plane holds (`id -> revision`), starting from the Hello, and
//! sends deltas against the newest [`crate::licenses::LicenseSet`]: never what the data plane
//! already has, so a reconnect after a control-plane restart resends nothing. At most one
//! update is in flight; while it is, later writes only replace the newest set the stream keeps,
//! and the next update is computed from it once the data plane answers: a burst of writes
//! coalesces into one update and a slow data plane is never skipped, only brought up to date
//! later. The stream ends when the control plane shuts down, when the data plane goes away, or
//! when an update stays unanswered for `cluster.ack_timeout` (the data plane reconnects and
//! resynchronises from its Hello), when the data plane is revoked, when a newer stream of it
//! opens, or when its certificate expires;
//! each end by the control plane carries its own status ([`super::sync_end`]).
//!
//! Each heartbeat from the data plane refreshes `last_seen` and is answered at once with one
//! from the control plane, so the agent sees its stream is served on its own schedule; dead
//! connections are HTTP/2 keepalive's to find (`cluster.keepalive_*`).
//!
//! A `Nack` listing licenses means the data plane kept the rest: they count as held, the listed
//! versions are not sent again until they change (`license_rejected`). A `Nack` listing none
//! means it could not apply the update at all (its disk, its license file): nothing counts as
//! held, the data plane shows `apply_failed` with the reason, and the update (brought up to
//! date) is sent again after [`RETRY_INITIAL`](crate::sync_machine::RETRY_INITIAL), doubling up
//! to [`RETRY_MAX`](crate::sync_machine::RETRY_MAX); the stream stays.
//!
//! A data plane whose Hello reports a version outside Kong's compatibility rule
//! ([`crate::dataplanes::compat`]) keeps its stream (heartbeats keep it visible) but is sent no
//! update. `RotateCertificate` issues a fresh certificate to the calling data plane
//! ([`super::issue::reissue`]).
//!
//! Layers: this file translates between protobuf and the domain (the Hello's held list, the
//! response channel); [`crate::sync_machine`] decides what is sent and when, with time as an
//! input so its timeouts are tested without a stream; `sync_stream` runs one stream,
//! feeding the machine and doing what it answers (send, the fleet's live state, the log).

use std::collections::HashMap;
use std::sync::Arc;

use licsync_common::pki::CertificateAuthority;
use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::license_sync_server::LicenseSync;
use licsync_common::proto::{self, ControlPlaneMessage, DataPlaneMessage, Hello};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::caller::{Caller, authenticate};
use super::issue;
use super::sync_stream::{DataPlaneStream, sleep_until};
use super::tls::PeerInfo;
use crate::state::ControlPlane;
use crate::sync_machine::{Action, End, Held, SyncMachine};

/// Most licenses a Hello may claim to hold.
const MAX_HELD: usize = 10_000;

/// The LicenseSync gRPC service.
pub struct SyncService {
    cp: Arc<ControlPlane>,
    /// Signs rotated data-plane certificates.
    ca: Arc<CertificateAuthority>,
    shutdown: CancellationToken,
}

impl SyncService {
    pub fn new(
        cp: Arc<ControlPlane>,
        ca: Arc<CertificateAuthority>,
        shutdown: CancellationToken,
    ) -> Self {
        Self { cp, ca, shutdown }
    }
}

type Outbound = Result<ControlPlaneMessage, Status>;

/// What a stream task hands to tonic. Boxed because tokio's channel allocates its first block
/// of 32 slots up front: with the ~200-byte `Result<ControlPlaneMessage, Status>` in each slot
/// that is ~6 KiB per data plane for a channel that holds one or two messages at a time; with
/// a box per slot it is ~0.3 KiB (the fleet benchmark's memory per data plane, BENCHMARKS.md).
/// The last item may be the status that ends the stream.
pub(super) type Queued = Box<Outbound>;

#[expect(clippy::boxed_local, reason = "the channel's item type is the box")]
fn unqueue(message: Queued) -> Outbound {
    *message
}

#[tonic::async_trait]
impl LicenseSync for SyncService {
    type SyncStream = futures::stream::Map<ReceiverStream<Queued>, fn(Queued) -> Outbound>;

    async fn report_usage(
        &self,
        request: Request<proto::UsageReport>,
    ) -> Result<Response<proto::UsageReceipt>, Status> {
        super::usage::report_usage(&self.cp, request).await
    }

    /// Issues a fresh certificate for the calling data plane, identified by the certificate it
    /// presents (which stays valid until the new one is first used).
    async fn rotate_certificate(
        &self,
        request: Request<proto::RotateCertificateRequest>,
    ) -> Result<Response<proto::RotateCertificateResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("connection carries no peer information"))?;
        let caller = authenticate(&self.cp, &peer).await?;
        let csr_der = request.into_inner().csr_der;
        let reissued = issue::reissue(
            &self.cp,
            &self.ca,
            caller.record.id,
            &csr_der,
            Some(&caller.serial),
        )
        .await
        .inspect_err(|status| {
            tracing::warn!(event = "cert.rotation_refused", dataplane.id = %caller.record.id, peer.addr = %peer.remote_addr, reason = %status.message(), "Refused a certificate rotation.");
        })?;
        tracing::info!(
            event = "cert.rotated",
            role = "dataplane",
            dataplane.id = %reissued.record.id,
            old_serial = %reissued.old_serial,
            new_serial = %reissued.new_serial,
            cert_expires_at = reissued.record.cert_expires_at,
            "Issued a rotated data-plane certificate."
        );
        self.cp.audit().record(crate::audit::Entry {
            actor: format!("dataplane {}", reissued.record.id),
            source: peer.remote_addr.to_string(),
            action: "dataplane.rotate_certificate".into(),
            resource: format!("/clustering/data-planes/{}", reissued.record.id),
            result: "ok".into(),
        });
        Ok(Response::new(proto::RotateCertificateResponse {
            certificate_pem: reissued.cert_pem,
            ca_certificate_pem: self.ca.cert_pem().to_owned(),
        }))
    }

    async fn sync(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("connection carries no peer information"))?;
        let Caller {
            record,
            not_after: cert_not_after,
            ..
        } = authenticate(&self.cp, &peer).await?;
        let mut inbound = request.into_inner();
        let mut machine = SyncMachine::new(Instant::now(), self.cp.config().cluster.ack_timeout.0);
        let not_hello =
            || Status::invalid_argument("the first message on a Sync stream must be Hello");
        let hello = tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(DataPlaneMessage {
                    message: Some(DpMessage::Hello(hello)),
                })) => hello,
                Err(status) => return Err(status),
                _ => return Err(not_hello()),
            },
            () = sleep_until(machine.deadline()) => return Err(not_hello()),
        };
        let held = parse_held(&hello)?;
        for (field, value) in [("hostname", &hello.hostname), ("version", &hello.version)] {
            licsync_common::log_text::check_name(field, value).map_err(Status::invalid_argument)?;
        }
        if machine
            .on_hello(Instant::now(), held)
            .contains(&Action::End(End::HelloTimeout))
        {
            return Err(not_hello());
        }

        let (tx, rx) = mpsc::channel(4);
        let span = tracing::info_span!(
            "dataplane_stream",
            dataplane.id = %record.id,
            peer.addr = %peer.remote_addr
        );
        let stream = DataPlaneStream {
            cp: self.cp.clone(),
            id: record.id,
            machine,
            tx,
            propagating: None,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                stream
                    .run(record, hello, inbound, peer, shutdown, cert_not_after)
                    .await;
            }
            .instrument(span),
        );
        Ok(Response::new(futures::StreamExt::map(
            ReceiverStream::new(rx),
            unqueue as fn(Queued) -> Outbound,
        )))
    }
}

fn parse_held(hello: &Hello) -> Result<HashMap<Uuid, Held>, Status> {
    if hello.held.len() > MAX_HELD {
        return Err(Status::invalid_argument(format!(
            "Hello lists {} licenses; the limit is {MAX_HELD}",
            hello.held.len()
        )));
    }
    hello
        .held
        .iter()
        .map(|h| {
            h.id.parse::<Uuid>()
                .map(|id| {
                    let digest = (!h.digest.is_empty()).then(|| h.digest.to_ascii_lowercase());
                    (
                        id,
                        Held {
                            revision: h.revision,
                            digest,
                        },
                    )
                })
                .map_err(|_| {
                    Status::invalid_argument(format!("held license id '{}' is not a UUID", h.id))
                })
        })
        .collect()
}
