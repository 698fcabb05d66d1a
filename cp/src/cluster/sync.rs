//! `licsync.v1.LicenseSync`: one long-lived stream per data plane.
//!
//! Each stream keeps what its data plane holds (`id -> revision`), starting from the Hello, and
//! sends deltas against the newest [`LicenseSet`]: never what the data plane already has, so a
//! reconnect after a control-plane restart resends nothing. At most one update is in flight;
//! while it is, later writes only mark the watch as changed, and the next update is computed from
//! the newest set once the data plane answers: a burst of writes coalesces into one update and a
//! slow data plane is never skipped, only brought up to date later. The stream ends when the
//! control plane shuts down, when the data plane goes away, or when an update stays unanswered
//! for `cluster.ack_timeout` (the data plane reconnects and resynchronises from its Hello), when
//! the data plane is revoked, when a newer stream of it opens, or when its certificate expires;
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
//! date) is sent again after [`RETRY_INITIAL`], doubling up to [`RETRY_MAX`]; the stream stays.
//!
//! A data plane whose Hello reports a version outside Kong's compatibility rule
//! ([`crate::dataplanes::compat`]) keeps its stream (heartbeats keep it visible) but is sent no
//! update. `RotateCertificate` issues a fresh certificate to the calling data plane
//! ([`super::issue::reissue`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use licsync_common::pki::{CertificateAuthority, sha256_hex};
use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::license_sync_server::LicenseSync;
use licsync_common::proto::{
    self, ControlPlaneMessage, DataPlaneMessage, Hello, Nack, control_plane_message,
};
use licsync_common::unix_now;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::caller::{Caller, authenticate};
use super::issue;
use super::sync_end::Ended;
use super::tls::PeerInfo;
use crate::dataplanes::answer::{self, Rejection};
use crate::dataplanes::{SyncStatus, compat};
use crate::licenses::LicenseSet;
use crate::model::{DataPlaneRecord, Revision, StoredLicense};
use crate::state::ControlPlane;

/// How long a new stream may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Most licenses a Hello may claim to hold.
const MAX_HELD: usize = 10_000;
/// First delay before an update the data plane could not apply is sent again.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between such retries.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

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
type Queued = Box<Outbound>;

#[expect(clippy::boxed_local, reason = "the channel's item type is the box")]
fn unqueue(message: Queued) -> Outbound {
    *message
}

/// How long the status that ends a stream may wait for room in a full channel (a data plane
/// that stopped reading would never see it anyway).
const END_GRACE: Duration = Duration::from_secs(1);

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
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(DataPlaneMessage {
                message: Some(DpMessage::Hello(hello)),
            }))) => hello,
            Ok(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a Sync stream must be Hello",
                ));
            }
        };
        let held = parse_held(&hello)?;
        for (field, value) in [("hostname", &hello.hostname), ("version", &hello.version)] {
            licsync_common::log_text::check_name(field, value).map_err(Status::invalid_argument)?;
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
            held,
            rejected: HashMap::new(),
            pending: None,
            retry_at: None,
            retry_delay: RETRY_INITIAL,
            tx,
            nonce_counter: 0,
            compatible: true,
            ack_timeout: self.cp.config().cluster.ack_timeout.0,
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

/// What a data plane holds of one license.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    revision: Revision,
    /// SHA-256 of the document as reported in Hello; `None` once this stream sent it (then the
    /// revision alone identifies it).
    digest: Option<String>,
}

impl Held {
    fn is(&self, license: &StoredLicense) -> bool {
        self.revision == license.revision
            && self
                .digest
                .as_deref()
                .is_none_or(|d| d == sha256_hex(license.document.as_bytes()))
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

/// What ends a stream besides the data plane itself.
struct StreamEnds {
    shutdown: CancellationToken,
    replaced: CancellationToken,
    revoked: CancellationToken,
    cert_expiry: Instant,
}

/// The monotonic instant at which wall-clock time `at` arrives.
fn until(at: OffsetDateTime) -> Instant {
    let left = at - OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// An update sent and not yet answered.
struct Pending {
    nonce: String,
    revision: Revision,
    upserted: Vec<(Uuid, Revision)>,
    removed: Vec<Uuid>,
    deadline: Instant,
}

struct DataPlaneStream {
    cp: Arc<ControlPlane>,
    id: Uuid,
    /// What the data plane holds, as far as it has acknowledged.
    held: HashMap<Uuid, Held>,
    /// License versions the data plane refused; not resent until they change.
    rejected: HashMap<Uuid, Revision>,
    pending: Option<Pending>,
    /// When the update the data plane could not apply is sent again; no other update is sent
    /// before.
    retry_at: Option<Instant>,
    /// The delay before the next such retry (doubles per failure, reset by an answer).
    retry_delay: Duration,
    tx: mpsc::Sender<Queued>,
    nonce_counter: u64,
    /// Whether the data plane's version may be synced; when not, no update is sent.
    compatible: bool,
    /// `cluster.ack_timeout`.
    ack_timeout: Duration,
}

impl DataPlaneStream {
    async fn run(
        mut self,
        record: DataPlaneRecord,
        hello: Hello,
        mut inbound: Streaming<DataPlaneMessage>,
        peer: PeerInfo,
        shutdown: CancellationToken,
        cert_not_after: OffsetDateTime,
    ) {
        let now = unix_now();
        let (slot, replaced) = self.cp.dataplanes().stream_opened(self.id, now);
        if replaced {
            tracing::warn!(event = "dataplane.stream_replaced", dataplane.id = %self.id, peer.addr = %peer.remote_addr, "A newer stream replaced this data plane's open stream; if this repeats, its registration file is in use on two hosts.");
        }
        let ip = peer.remote_addr.ip().to_string();
        let version = truncate(hello.version, 64);
        let hostname = truncate(hello.hostname, 255);
        if record.version != version || record.hostname != hostname || record.ip != ip {
            let reported = self
                .cp
                .dataplanes()
                .update(self.id, |r| {
                    r.version = version.clone();
                    r.hostname = hostname;
                    r.ip = ip;
                })
                .await;
            if let Err(error) = reported {
                tracing::warn!(event = "dataplane.record_failed", dataplane.id = %self.id, %error, "Could not record the data plane's version and address.");
            }
        }
        tracing::info!(
            event = "dataplane.connected",
            dataplane.id = %self.id,
            peer.addr = %peer.remote_addr,
            version = %version,
            held = self.held.len(),
            revision = hello.revision,
            "Data plane connected."
        );
        if let Err(why) = compat::check_current(&version) {
            self.compatible = false;
            tracing::warn!(
                event = "dataplane.version_incompatible",
                dataplane.id = %self.id,
                dataplane.version = %version,
                cp.version = licsync_common::VERSION,
                reason = %why,
                "Data plane runs a version this control plane does not sync; it stays connected but gets no updates."
            );
        }

        let mut licenses = self.cp.licenses().subscribe();
        let first = licenses.borrow_and_update().clone();
        let opened = if self.compatible {
            self.send_update(&first, true).await
        } else {
            Ok(())
        };
        let ended = match opened {
            Err(reason) => Ended::from(reason),
            Ok(()) => {
                let ends = StreamEnds {
                    shutdown,
                    replaced: slot.replaced.clone(),
                    revoked: slot.revoked.clone(),
                    cert_expiry: until(cert_not_after),
                };
                self.serve(&mut licenses, &mut inbound, &ends).await
            }
        };

        if let Err(error) = self
            .cp
            .dataplanes()
            .stream_closed(self.id, &slot, unix_now())
            .await
        {
            tracing::warn!(event = "dataplane.record_failed", dataplane.id = %self.id, %error, "Could not record the data plane's last contact.");
        }
        if let Some(status) = ended.status() {
            // The data plane reads why before the stream closes; `OK` would say nothing.
            let _ = tokio::time::timeout(END_GRACE, self.tx.send(Box::new(Err(status)))).await;
        }
        tracing::info!(event = "dataplane.disconnected", dataplane.id = %self.id, reason = ended.reason(), cause = ended.cause(), "Data plane disconnected.");
    }

    /// The stream's main loop; returns why it ended.
    async fn serve(
        &mut self,
        licenses: &mut tokio::sync::watch::Receiver<Arc<LicenseSet>>,
        inbound: &mut Streaming<DataPlaneMessage>,
        ends: &StreamEnds,
    ) -> Ended {
        let cert_expiry = tokio::time::sleep_until(ends.cert_expiry);
        tokio::pin!(cert_expiry);
        loop {
            let deadline = self.pending.as_ref().map(|p| p.deadline);
            let retry_at = self.retry_at;
            tokio::select! {
                _ = ends.shutdown.cancelled() => return Ended::shutdown(),
                _ = ends.replaced.cancelled() => return Ended::replaced(self.id),
                _ = ends.revoked.cancelled() => return Ended::revoked(self.id),
                _ = &mut cert_expiry => {
                    tracing::warn!(event = "cert.expired", dataplane.id = %self.id, "The data plane's client certificate expired; closing its stream. Renew it with `licsync-dp registration renew`.");
                    return Ended::certificate_expired(self.id);
                }
                _ = self.tx.closed() => return "data plane went away".into(),
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message),
                    Ok(None) => return "data plane closed the stream".into(),
                    Err(status) => return format!("stream error: {}", status.message()).into(),
                },
                changed = licenses.changed(), if self.pending.is_none() && retry_at.is_none() && self.compatible => {
                    if changed.is_err() {
                        return Ended::shutdown();
                    }
                    let set = licenses.borrow_and_update().clone();
                    if let Err(reason) = self.send_update(&set, false).await {
                        return reason.into();
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    self.retry_at = None;
                    // Sent even when nothing changed: the data plane must try again to answer.
                    let set = licenses.borrow_and_update().clone();
                    if let Err(reason) = self.send_update(&set, true).await {
                        return reason.into();
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let nonce = self.pending.as_ref().map(|p| p.nonce.clone()).unwrap_or_default();
                    tracing::warn!(event = "sync.ack_timeout", dataplane.id = %self.id, nonce, timeout_s = self.ack_timeout.as_secs_f64(), "Data plane did not answer an update; ending its stream so it resynchronises.");
                    return Ended::ack_timeout(&nonce, self.ack_timeout);
                }
            }
        }
    }

    /// Sends the delta to `set`; with `always`, also an empty one (the first answer to Hello).
    async fn send_update(&mut self, set: &LicenseSet, always: bool) -> Result<(), String> {
        let mut upserted = Vec::new();
        for (id, license) in &set.licenses {
            let known = self.held.get(id).is_some_and(|h| h.is(license))
                || self.rejected.get(id) == Some(&license.revision);
            if !known {
                upserted.push(license.clone());
            }
        }
        let removed: Vec<Uuid> = self
            .held
            .keys()
            .filter(|id| !set.licenses.contains_key(id))
            .copied()
            .collect();
        if upserted.is_empty() && removed.is_empty() && !always {
            return Ok(());
        }
        self.nonce_counter += 1;
        let nonce = format!("{}-{}", set.revision, self.nonce_counter);
        let message = ControlPlaneMessage {
            message: Some(control_plane_message::Message::Update(proto::Update {
                nonce: nonce.clone(),
                revision: set.revision,
                upserted: upserted
                    .iter()
                    .map(|l| proto::License {
                        id: l.id.to_string(),
                        document: l.document.clone(),
                        created_at: l.created_at,
                        updated_at: l.updated_at,
                        revision: l.revision,
                    })
                    .collect(),
                removed: removed.iter().map(Uuid::to_string).collect(),
                trusted_license_keys: self.cp.licenses().trusted_keys().to_base64(),
            })),
        };
        tracing::info!(
            event = "sync.sent",
            dataplane.id = %self.id,
            nonce,
            revision = set.revision,
            upserted = upserted.len(),
            removed = removed.len(),
            "Sent an update."
        );
        self.pending = Some(Pending {
            nonce,
            revision: set.revision,
            upserted: upserted.iter().map(|l| (l.id, l.revision)).collect(),
            removed,
            deadline: Instant::now() + self.ack_timeout,
        });
        self.tx
            .send(Box::new(Ok(message)))
            .await
            .map_err(|_| "data plane went away".to_owned())
    }

    fn handle(&mut self, message: DataPlaneMessage) {
        let now = unix_now();
        match message.message {
            Some(DpMessage::Ack(ack)) => {
                if let Some(pending) = self.take_pending(&ack.nonce) {
                    let revision = pending.revision;
                    self.retry_delay = RETRY_INITIAL;
                    self.apply(pending, &[]);
                    self.report_synced(revision, SyncStatus::Normal, now);
                    tracing::info!(event = "sync.acked", dataplane.id = %self.id, nonce = %ack.nonce, revision, "Data plane applied an update.");
                }
            }
            Some(DpMessage::Nack(nack)) if nack.rejected.is_empty() => {
                // The data plane could not apply anything (a full disk, an unwritable license
                // file) and asks for the update again: nothing counts as held.
                if let Some(pending) = self.take_pending(&nack.nonce) {
                    let reason = answer::failure_reason(&nack);
                    let delay = self.retry_delay;
                    self.retry_delay = (delay * 2).min(RETRY_MAX);
                    self.retry_at = Some(Instant::now() + delay);
                    self.cp
                        .dataplanes()
                        .apply_failed(self.id, reason.clone(), now);
                    tracing::warn!(event = "sync.failed", dataplane.id = %self.id, nonce = %pending.nonce, revision = pending.revision, reason = %reason, retry_in_ms = delay.as_millis(), "Data plane could not apply an update; sending it again later.");
                }
            }
            Some(DpMessage::Nack(nack)) => {
                if let Some(pending) = self.take_pending(&nack.nonce) {
                    let revision = pending.revision;
                    let rejection = Rejection::from_nack(&nack, revision, now);
                    let rejected = rejected_ids(&nack);
                    self.retry_delay = RETRY_INITIAL;
                    self.apply(pending, &rejected);
                    self.report_synced(revision, SyncStatus::LicenseRejected, now);
                    tracing::warn!(
                        event = "sync.rejected",
                        dataplane.id = %self.id,
                        nonce = %nack.nonce,
                        revision,
                        rejected = %rejection.rejected_json(),
                        rejected_count = rejection.rejected_total,
                        reason = %rejection.reason,
                        "Data plane rejected licenses."
                    );
                    self.cp.dataplanes().rejected(self.id, rejection);
                }
            }
            Some(DpMessage::Heartbeat(_)) => {
                self.cp.dataplanes().seen(self.id, now);
                self.answer_heartbeat();
            }
            Some(DpMessage::Hello(_)) | None => {
                tracing::debug!(dataplane.id = %self.id, "Ignored an unexpected message.");
            }
        }
    }

    /// Answers a data plane's heartbeat with one of ours. Skipped when the channel is full:
    /// the data plane is not reading, and the next heartbeat tries again.
    fn answer_heartbeat(&self) {
        let sent_at_ms =
            i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX);
        let beat = ControlPlaneMessage {
            message: Some(control_plane_message::Message::Heartbeat(
                proto::Heartbeat { sent_at_ms },
            )),
        };
        let _ = self.tx.try_send(Box::new(Ok(beat)));
    }

    fn take_pending(&mut self, nonce: &str) -> Option<Pending> {
        match &self.pending {
            Some(p) if p.nonce == nonce => self.pending.take(),
            _ => {
                tracing::debug!(dataplane.id = %self.id, nonce, "Ignored an answer to an update that is not in flight.");
                None
            }
        }
    }

    /// Records what the data plane now holds after answering `pending`.
    fn apply(&mut self, pending: Pending, rejected: &[(Uuid, Revision)]) {
        for id in pending.removed {
            self.held.remove(&id);
        }
        for (id, revision) in pending.upserted {
            if rejected.iter().any(|(r, _)| *r == id) {
                self.rejected.insert(id, revision);
            } else {
                self.rejected.remove(&id);
                self.held.insert(
                    id,
                    Held {
                        revision,
                        digest: None,
                    },
                );
            }
        }
    }

    fn report_synced(&self, revision: Revision, status: SyncStatus, now: i64) {
        let set = self.cp.licenses().current();
        // An Ack for a later update does not clear a refusal that still stands.
        let still_rejected = self
            .rejected
            .iter()
            .any(|(id, rev)| set.licenses.get(id).is_some_and(|l| l.revision == *rev));
        let status = if still_rejected {
            SyncStatus::LicenseRejected
        } else {
            status
        };
        let active = self
            .held
            .iter()
            .filter_map(|(id, held)| set.licenses.get(id).filter(|l| held.is(l)));
        let active =
            licsync_common::active::newest(active, |l| l.rank()).map(|l| (l.id, l.updated_at));
        self.cp
            .dataplanes()
            .synced(self.id, revision, status, active, now);
    }
}

fn rejected_ids(nack: &Nack) -> Vec<(Uuid, Revision)> {
    nack.rejected
        .iter()
        .filter_map(|r| r.id.parse().ok().map(|id| (id, r.revision)))
        .collect()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
