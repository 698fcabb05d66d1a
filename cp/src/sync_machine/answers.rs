//! How the data plane's answers move a [`SyncMachine`]: an Ack or a `Nack` naming the update
//! in flight settles it (what it now holds, what to show in the fleet), and a set that arrived
//! meanwhile goes out next; any other answer changes nothing. Kept apart from the timers and
//! the sending in `mod.rs` only for size: it is the same machine.

use tokio::time::Instant;
use uuid::Uuid;

use super::{Action, Pending, Phase, RETRY_INITIAL, RETRY_MAX, SyncMachine, Synced};
use crate::dataplanes::SyncStatus;
use crate::model::Revision;

impl SyncMachine {
    /// The data plane applied update `nonce`.
    pub fn on_ack(&mut self, now: Instant, nonce: &str) -> Vec<Action> {
        self.answer(now, nonce, |machine, pending| {
            let revision = pending.revision;
            machine
                .holdings
                .answered(pending.upserted, pending.removed, &[]);
            Action::Acked {
                nonce: pending.nonce,
                synced: machine.synced(revision, SyncStatus::Normal),
            }
        })
    }

    /// The data plane refused the `rejected` licenses of update `nonce` and kept the rest.
    pub fn on_rejected(
        &mut self,
        now: Instant,
        nonce: &str,
        rejected: &[(Uuid, Revision)],
    ) -> Vec<Action> {
        self.answer(now, nonce, |machine, pending| {
            let revision = pending.revision;
            machine
                .holdings
                .answered(pending.upserted, pending.removed, rejected);
            Action::Rejected {
                nonce: pending.nonce,
                synced: machine.synced(revision, SyncStatus::LicenseRejected),
            }
        })
    }

    /// The data plane could not apply update `nonce` at all (its disk, its license file):
    /// nothing counts as held, and the update is sent again after the current delay.
    pub fn on_apply_failed(&mut self, now: Instant, nonce: &str) -> Vec<Action> {
        let mut actions = self.expire(now);
        if let Some(pending) = self.take_pending(nonce, &mut actions) {
            let nominal = self.retry_delay;
            self.retry_delay = (nominal * 2).min(RETRY_MAX);
            let delay = nominal - nominal.mul_f64(fastrand::f64() / 4.0);
            self.retry_at = Some(now + delay);
            actions.push(Action::ApplyFailed {
                nonce: pending.nonce,
                revision: pending.revision,
                retry_in: delay,
            });
        }
        actions
    }

    /// An Ack or a listing Nack: `record` turns the answered update into what to report, and
    /// a set that arrived meanwhile goes out next.
    fn answer(
        &mut self,
        now: Instant,
        nonce: &str,
        record: impl FnOnce(&mut Self, Pending) -> Action,
    ) -> Vec<Action> {
        let mut actions = self.expire(now);
        if let Some(pending) = self.take_pending(nonce, &mut actions) {
            self.retry_delay = RETRY_INITIAL;
            let answered = record(self, pending);
            actions.push(answered);
            self.catch_up(now, &mut actions);
        }
        actions
    }

    /// The update in flight if `nonce` names it; otherwise an [`Action::Ignored`] (unless the
    /// stream already ended).
    fn take_pending(&mut self, nonce: &str, actions: &mut Vec<Action>) -> Option<Pending> {
        match &self.pending {
            Some(p) if p.nonce == nonce => self.pending.take(),
            _ => {
                if !matches!(self.phase, Phase::Ended) {
                    actions.push(Action::Ignored {
                        nonce: nonce.to_owned(),
                    });
                }
                None
            }
        }
    }

    fn synced(&self, revision: Revision, status: SyncStatus) -> Synced {
        Synced {
            revision,
            status: self.holdings.status(status, &self.latest),
            active: self.holdings.active(&self.latest),
        }
    }
}
