//! One data plane's `Sync` stream at run time: registers it with the fleet, feeds its
//! [`SyncMachine`] what happens (the data plane's messages, newly published license sets, the
//! machine's own deadlines) and does what the machine answers (send, record in the fleet's
//! live state, log). What to send and when is the machine's alone, so it is tested with
//! explicit instants; this file only moves messages, reports and writes the log lines.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::proto::data_plane_message::Message as DpMessage;
use licsync_common::proto::{DataPlaneMessage, Hello, Nack};
use licsync_common::unix_now;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use uuid::Uuid;

use super::sync::Queued;
use super::sync_end::Ended;
use super::tls::PeerInfo;
use crate::dataplanes::compat;
use crate::licenses::LicenseSet;
use crate::model::{DataPlaneRecord, Revision};
use crate::state::ControlPlane;
use crate::sync_machine::{Action, SyncMachine};

/// How long the status that ends a stream may wait for room in a full channel (a data plane
/// that stopped reading would never see it anyway).
const END_GRACE: Duration = Duration::from_secs(1);

/// What ends a stream besides the data plane and the machine.
struct StreamEnds {
    shutdown: CancellationToken,
    replaced: CancellationToken,
    revoked: CancellationToken,
    cert_expiry: Instant,
}

/// A stream whose Hello was accepted.
pub(super) struct DataPlaneStream {
    pub cp: Arc<ControlPlane>,
    pub id: Uuid,
    /// Greeted: it holds what the Hello listed.
    pub machine: SyncMachine,
    pub tx: mpsc::Sender<Queued>,
    /// The revision of the update in flight when it brings a change, and when that change
    /// was committed: its Ack is observed in `licsync_cp_sync_propagation_seconds`. (At most
    /// one update is in flight, so the revision names it; no nonce is copied per update.)
    pub propagating: Option<(Revision, std::time::Instant)>,
}

impl DataPlaneStream {
    pub async fn run(
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
            held = self.machine.held(),
            revision = hello.revision,
            "Data plane connected."
        );
        let compatible = compat::check_current(&version)
            .inspect_err(|why| {
                tracing::warn!(
                    event = "dataplane.version_incompatible",
                    dataplane.id = %self.id,
                    dataplane.version = %version,
                    cp.version = licsync_common::VERSION,
                    reason = %why,
                    "Data plane runs a version this control plane does not sync; it stays connected but gets no updates."
                );
            })
            .is_ok();

        let mut licenses = self.cp.licenses().subscribe();
        let first = licenses.borrow_and_update().clone();
        let opened = self.machine.open(Instant::now(), compatible, first);
        let ended = match self.perform(opened, None).await {
            Err(ended) => ended,
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
        licenses: &mut watch::Receiver<Arc<LicenseSet>>,
        inbound: &mut Streaming<DataPlaneMessage>,
        ends: &StreamEnds,
    ) -> Ended {
        let cert_expiry = tokio::time::sleep_until(ends.cert_expiry);
        tokio::pin!(cert_expiry);
        loop {
            let deadline = self.machine.deadline();
            let (actions, nack) = tokio::select! {
                _ = ends.shutdown.cancelled() => return Ended::shutdown(),
                _ = ends.replaced.cancelled() => return Ended::replaced(self.id),
                _ = ends.revoked.cancelled() => return Ended::revoked(self.id),
                _ = &mut cert_expiry => {
                    tracing::warn!(event = "cert.expired", dataplane.id = %self.id, "The data plane's client certificate expired; closing its stream. Renew it with `licsync-dp registration renew`.");
                    return Ended::certificate_expired(self.id);
                }
                _ = self.tx.closed() => return "data plane went away".into(),
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.received(message),
                    Ok(None) => return "data plane closed the stream".into(),
                    Err(status) => return format!("stream error: {}", status.message()).into(),
                },
                // Watched even while an update is in flight: the machine keeps the newest set
                // for when the data plane answers.
                changed = licenses.changed() => {
                    if changed.is_err() {
                        return Ended::shutdown();
                    }
                    let set = licenses.borrow_and_update().clone();
                    (self.machine.on_set_changed(Instant::now(), set), None)
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    (self.machine.on_tick(Instant::now()), None)
                }
            };
            if let Err(ended) = self.perform(actions, nack.as_ref()).await {
                return ended;
            }
        }
    }

    /// Feeds a data plane's message to the machine; a `Nack` is handed back for its words.
    fn received(&mut self, message: DataPlaneMessage) -> (Vec<Action>, Option<Nack>) {
        let now = Instant::now();
        match message.message {
            Some(DpMessage::Ack(ack)) => (self.machine.on_ack(now, &ack.nonce), None),
            Some(DpMessage::Nack(nack)) => {
                let actions = if nack.rejected.is_empty() {
                    self.machine.on_apply_failed(now, &nack.nonce)
                } else {
                    self.machine
                        .on_rejected(now, &nack.nonce, &rejected_ids(&nack))
                };
                (actions, Some(nack))
            }
            Some(DpMessage::Heartbeat(_)) => (self.machine.on_heartbeat(now), None),
            Some(DpMessage::Hello(_)) | None => {
                tracing::debug!(dataplane.id = %self.id, "Ignored an unexpected message.");
                (Vec::new(), None)
            }
        }
    }
}

fn rejected_ids(nack: &Nack) -> Vec<(Uuid, Revision)> {
    nack.rejected
        .iter()
        .filter_map(|r| r.id.parse().ok().map(|id| (id, r.revision)))
        .collect()
}

/// The monotonic instant at which wall-clock time `at` arrives.
fn until(at: OffsetDateTime) -> Instant {
    let left = at - OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO)
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
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
