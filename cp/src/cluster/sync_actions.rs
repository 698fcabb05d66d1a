//! What a `Sync` stream does for each action of its [`SyncMachine`](crate::sync_machine):
//! send the update, record the answer in the fleet's live state, answer the heartbeat, and
//! write the log line each has always had (`sync.sent`, `sync.acked`, `sync.rejected`,
//! `sync.failed`, `sync.ack_timeout`) and the metrics each moves
//! (`licsync_cp_sync_updates_total`, `licsync_cp_sync_propagation_seconds`). The machine
//! decides; this only carries out.

use licsync_common::proto::{self, ControlPlaneMessage, Nack, control_plane_message};
use licsync_common::unix_now;
use time::OffsetDateTime;
use uuid::Uuid;

use super::sync_end::Ended;
use super::sync_stream::DataPlaneStream;
use crate::dataplanes::answer::{self, Rejection};
use crate::sync_machine::{Action, End, Synced, Update};

impl DataPlaneStream {
    /// Does what the machine answered, in order; actions answering a `Nack` take its reason
    /// and list from `nack`. Returns why the stream ends, if it does.
    pub(super) async fn perform(
        &mut self,
        actions: Vec<Action>,
        nack: Option<&Nack>,
    ) -> Result<(), Ended> {
        let now = unix_now();
        let silent = Nack::default();
        let nack = nack.unwrap_or(&silent);
        for action in actions {
            match action {
                Action::Send(update) => self.send(update).await?,
                Action::Acked { nonce, synced } => {
                    let committed_at = self
                        .propagating
                        .take()
                        .filter(|(revision, _)| *revision == synced.revision)
                        .map(|(_, at)| at);
                    self.cp.metrics().sync_acked(committed_at);
                    self.report(synced, now);
                    tracing::info!(event = "sync.acked", dataplane.id = %self.id, nonce = %nonce, revision = synced.revision, "Data plane applied an update.");
                }
                Action::Rejected { nonce, synced } => {
                    let revision = synced.revision;
                    let rejection = Rejection::from_nack(nack, revision, now);
                    self.propagating = None;
                    self.cp.metrics().sync_rejected();
                    self.report(synced, now);
                    tracing::warn!(
                        event = "sync.rejected",
                        dataplane.id = %self.id,
                        nonce = %nonce,
                        revision,
                        rejected = %rejection.rejected_json(),
                        rejected_count = rejection.rejected_total,
                        reason = %rejection.reason,
                        "Data plane rejected licenses."
                    );
                    self.cp.dataplanes().rejected(self.id, rejection);
                }
                Action::ApplyFailed {
                    nonce,
                    revision,
                    retry_in,
                } => {
                    let reason = answer::failure_reason(nack);
                    self.cp
                        .dataplanes()
                        .apply_failed(self.id, reason.clone(), now);
                    tracing::warn!(event = "sync.failed", dataplane.id = %self.id, nonce = %nonce, revision, reason = %reason, retry_in_ms = retry_in.as_millis(), "Data plane could not apply an update; sending it again later.");
                }
                Action::AnswerHeartbeat => {
                    self.cp.dataplanes().seen(self.id, now);
                    self.answer_heartbeat();
                }
                Action::Ignored { nonce } => {
                    tracing::debug!(dataplane.id = %self.id, nonce, "Ignored an answer to an update that is not in flight.");
                }
                Action::End(End::AckTimeout { nonce, timeout }) => {
                    self.cp.metrics().sync_timed_out();
                    tracing::warn!(event = "sync.ack_timeout", dataplane.id = %self.id, nonce, timeout_s = timeout.as_secs_f64(), "Data plane did not answer an update; ending its stream so it resynchronises.");
                    return Err(Ended::ack_timeout(&nonce, timeout));
                }
                Action::End(End::HelloTimeout) => return Err("no Hello in time".into()),
            }
        }
        Ok(())
    }

    async fn send(&mut self, update: Update) -> Result<(), Ended> {
        let Update {
            nonce,
            revision,
            upserted,
            removed,
            committed_at,
        } = update;
        // Only an update bringing a change measures how long the change took to arrive.
        self.propagating = committed_at
            .filter(|_| !(upserted.is_empty() && removed.is_empty()))
            .map(|at| (revision, at));
        tracing::info!(
            event = "sync.sent",
            dataplane.id = %self.id,
            nonce,
            revision,
            upserted = upserted.len(),
            removed = removed.len(),
            "Sent an update."
        );
        let message = ControlPlaneMessage {
            message: Some(control_plane_message::Message::Update(proto::Update {
                nonce,
                revision,
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
        self.tx
            .send(Box::new(Ok(message)))
            .await
            .map_err(|_| Ended::from("data plane went away"))
    }

    fn report(&self, synced: Synced, now: i64) {
        let Synced {
            revision,
            status,
            active,
        } = synced;
        self.cp
            .dataplanes()
            .synced(self.id, revision, status, active, now);
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
}
