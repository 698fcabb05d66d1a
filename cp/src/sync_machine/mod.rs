//! The rule of one data plane's `Sync` stream, with no transport, clock or storage: what to
//! send and when, fed by plain inputs and answering with [`Action`]s. The tonic service
//! ([`crate::cluster::sync`]) only translates messages, feeds them here with the current
//! instant and performs what comes back; time is an input, so every timeout is tested with
//! explicit instants.
//!
//! The rule: each update is the delta between the newest [`LicenseSet`] and what the data plane
//! acknowledged ([`Held`]). At most one update is in flight; sets arriving meanwhile replace
//! one another and the next update is computed from the newest once the data plane answers, so
//! a burst coalesces into one update and a slow data plane is only brought up to date later,
//! never skipped. An update unanswered for `cluster.ack_timeout` ends the stream (the data
//! plane reconnects and resynchronises from its Hello). An empty `Nack` (it could not apply
//! anything) is answered by the same update, brought up to date, after [`RETRY_INITIAL`],
//! doubling up to [`RETRY_MAX`], each wait shortened by up to a quarter at random so data planes
//! that failed together (one bad write to a shared volume) do not retry in lockstep; a `Nack` listing licenses counts the rest as held and keeps
//! the listed versions from being sent again until they change. An incompatible data plane is
//! sent nothing. Once the machine ends, every later input is ignored: an answer that arrives
//! after its deadline is too late, whichever the transport noticed first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::licenses::LicenseSet;
use crate::model::Revision;

mod action;
mod answers;
mod held;
#[cfg(test)]
mod tests;

pub use action::{Action, End, Synced, Update};
pub use held::Held;
use held::Holdings;

/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// First delay before an update the data plane could not apply is sent again.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between such retries.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// An update sent and not yet answered.
#[derive(Debug)]
struct Pending {
    nonce: String,
    revision: Revision,
    upserted: Vec<(Uuid, Revision)>,
    removed: Vec<Uuid>,
    deadline: Instant,
}

#[derive(Debug)]
enum Phase {
    AwaitingHello {
        deadline: Instant,
    },
    /// Hello received; the first update waits for [`SyncMachine::open`].
    Greeted,
    Open,
    Ended,
}

/// The state of one data plane's stream.
#[derive(Debug)]
pub struct SyncMachine {
    phase: Phase,
    /// `cluster.ack_timeout`.
    ack_timeout: Duration,
    holdings: Holdings,
    pending: Option<Pending>,
    /// When the update the data plane could not apply is sent again; nothing is sent before.
    retry_at: Option<Instant>,
    /// The delay before the next such retry (doubles per failure, reset by an answer).
    retry_delay: Duration,
    nonce_counter: u64,
    /// Whether the data plane's version may be synced; when not, nothing is sent.
    compatible: bool,
    /// The newest set, and whether an update has been computed from it yet.
    latest: Arc<LicenseSet>,
    stale: bool,
}

impl SyncMachine {
    /// A stream opened at `now`, waiting for its Hello.
    pub fn new(now: Instant, ack_timeout: Duration) -> Self {
        Self {
            phase: Phase::AwaitingHello {
                deadline: now + HELLO_TIMEOUT,
            },
            ack_timeout,
            holdings: Holdings::default(),
            pending: None,
            retry_at: None,
            retry_delay: RETRY_INITIAL,
            nonce_counter: 0,
            compatible: true,
            latest: Arc::default(),
            stale: false,
        }
    }

    /// When [`Self::on_tick`] next has something to do, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingHello { deadline } => Some(deadline),
            // Never both: a retry waits for no answer.
            Phase::Open => self.pending.as_ref().map(|p| p.deadline).or(self.retry_at),
            Phase::Greeted | Phase::Ended => None,
        }
    }

    /// How many licenses the data plane said it holds (for `dataplane.connected`).
    pub fn held(&self) -> usize {
        self.holdings.held.len()
    }

    /// The Hello arrived, listing what the data plane `held`.
    pub fn on_hello(&mut self, now: Instant, held: HashMap<Uuid, Held>) -> Vec<Action> {
        let actions = self.expire(now);
        if matches!(self.phase, Phase::AwaitingHello { .. }) {
            self.holdings.held = held;
            self.phase = Phase::Greeted;
        }
        actions
    }

    /// The stream is registered and `set` is the newest: answer the Hello with everything the
    /// data plane lacks (an empty update too, so it knows it is up to date), unless its
    /// version is not `compatible`.
    pub fn open(&mut self, now: Instant, compatible: bool, set: Arc<LicenseSet>) -> Vec<Action> {
        if !matches!(self.phase, Phase::Greeted) {
            return Vec::new();
        }
        self.phase = Phase::Open;
        self.compatible = compatible;
        self.latest = set;
        self.stale = false;
        if compatible {
            self.send(now, true).into_iter().collect()
        } else {
            Vec::new()
        }
    }

    /// A newer set was published.
    pub fn on_set_changed(&mut self, now: Instant, set: Arc<LicenseSet>) -> Vec<Action> {
        let mut actions = self.expire(now);
        if matches!(self.phase, Phase::Open) {
            self.latest = set;
            self.stale = true;
            self.catch_up(now, &mut actions);
        }
        actions
    }

    /// The data plane sent a heartbeat; answered even when it is sent no updates, so it sees
    /// its stream is served.
    pub fn on_heartbeat(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = self.expire(now);
        if !matches!(self.phase, Phase::Ended) {
            actions.push(Action::AnswerHeartbeat);
        }
        actions
    }

    /// Time passed: whatever fell due by `now` (see [`Self::deadline`]).
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.expire(now)
    }

    /// Applies whatever deadline passed by `now`: the end, or the retry.
    fn expire(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::AwaitingHello { deadline } if now >= deadline => {
                self.phase = Phase::Ended;
                vec![Action::End(End::HelloTimeout)]
            }
            Phase::Open => {
                if let Some(pending) = self.pending.as_ref().filter(|p| now >= p.deadline) {
                    let nonce = pending.nonce.clone();
                    self.phase = Phase::Ended;
                    self.pending = None;
                    return vec![Action::End(End::AckTimeout {
                        nonce,
                        timeout: self.ack_timeout,
                    })];
                }
                if self.retry_at.is_some_and(|at| now >= at) {
                    self.retry_at = None;
                    // Sent even when nothing changed: the data plane must try again to answer.
                    return self.send(now, true).into_iter().collect();
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Sends an update from a set that arrived while one was in flight, once nothing is.
    fn catch_up(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.stale && self.compatible && self.pending.is_none() && self.retry_at.is_none() {
            actions.extend(self.send(now, false));
        }
    }

    /// The delta to the newest set; with `always`, also an empty one.
    fn send(&mut self, now: Instant, always: bool) -> Option<Action> {
        self.stale = false;
        let set = self.latest.clone();
        let (upserted, removed) = self.holdings.delta(&set);
        if upserted.is_empty() && removed.is_empty() && !always {
            return None;
        }
        self.nonce_counter += 1;
        let nonce = format!("{}-{}", set.revision, self.nonce_counter);
        self.pending = Some(Pending {
            nonce: nonce.clone(),
            revision: set.revision,
            upserted: upserted.iter().map(|l| (l.id, l.revision)).collect(),
            removed: removed.clone(),
            deadline: now + self.ack_timeout,
        });
        Some(Action::Send(Update {
            nonce,
            revision: set.revision,
            upserted,
            removed,
            committed_at: set.committed_at,
        }))
    }
}
