//! Group commit for license writes.
//!
//! A write may only be acknowledged once durable, and a durable write costs a flush, so one
//! flush per write would cap `POST /licenses` at one write per flush however many clients
//! write at once. Verified writes therefore go through a channel to one writer task (as usage
//! reports do, [`crate::usage::UsageLedger`]): it takes every write waiting (up to
//! [`MAX_BATCH`]), decides each in arrival order against the committed set plus the writes
//! before it in the batch (uniqueness, existence, the next revision), stores the resulting
//! changes with one [`Store::apply_license_batch`] (one transaction, one flush), and only then
//! publishes the new set and answers each caller. While one batch is flushed, the next gathers.
//!
//! Being the only writer keeps revisions strictly increasing in commit order, and the published
//! set never shows a write before it is durable. A failed batch fails every request in it: a
//! refusal there (a duplicate, a missing id) may have been decided against a write that never
//! became durable, so the caller learns of the failure and may retry.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::{LicenseSet, PutOutcome, WriteError};
use crate::model::{Revision, StoredLicense};
use crate::store::{LicenseChange, Store, StoreError};

/// Most writes applied in one storage transaction.
pub const MAX_BATCH: usize = 1024;
/// Writes that may wait for the writer; further callers wait for room (backpressure).
const QUEUE: usize = 4096;

/// A verified write, waiting for its turn.
#[derive(Debug)]
pub(super) enum Command {
    Create {
        document: String,
        signature: String,
    },
    Put {
        id: Uuid,
        document: String,
        signature: String,
    },
    Patch {
        id: Uuid,
        document: String,
        signature: String,
    },
    Delete {
        id: Uuid,
    },
}

/// What a durable write did.
#[derive(Debug, Clone)]
pub(super) enum Applied {
    Stored(Arc<StoredLicense>, PutOutcome),
    /// The license was removed by the write at `revision`.
    Deleted {
        id: Uuid,
        revision: Revision,
    },
    /// There was nothing to delete; nothing was written.
    Absent,
}

type Answer = Result<Applied, WriteError>;
type Request = (Command, oneshot::Sender<Answer>);

/// The published set and where it is stored: what the writer task needs.
pub(super) struct Published {
    pub store: Arc<dyn Store>,
    pub current: watch::Sender<Arc<LicenseSet>>,
}

/// Hands writes to the writer task, started on the first write (from a runtime, which every
/// caller is in); the task ends when this is dropped.
pub(super) struct Committer {
    published: Arc<Published>,
    queue: OnceLock<mpsc::Sender<Request>>,
}

impl Committer {
    pub fn new(published: Arc<Published>) -> Self {
        Self {
            published,
            queue: OnceLock::new(),
        }
    }

    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Queues `command` and returns its outcome once the batch holding it is durable.
    pub async fn submit(&self, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send((command, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn queue(&self) -> &mpsc::Sender<Request> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(
                write_batches(self.published.clone(), rx)
                    .instrument(tracing::info_span!("license_writer")),
            );
            tx
        })
    }
}

fn stopped() -> WriteError {
    WriteError::Storage(StoreError::Backend(
        "the license writer stopped; the control plane is shutting down".into(),
    ))
}

/// The writer task: one storage write per batch of waiting requests.
async fn write_batches(published: Arc<Published>, mut rx: mpsc::Receiver<Request>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        commit(&published, waiting.drain(..)).await;
    }
}

/// Decides, stores, publishes and answers one batch.
async fn commit(published: &Published, requests: impl Iterator<Item = Request>) {
    let committed = published.current.borrow().clone();
    let mut next = (*committed).clone();
    let now = licsync_common::unix_now();
    let mut changes = Vec::new();
    let mut answers = Vec::new();
    for (command, reply) in requests {
        let answer = decide(&mut next, command, now).map(|(applied, change)| {
            changes.extend(change);
            applied
        });
        answers.push((reply, answer));
    }
    if !changes.is_empty() {
        if let Err(error) = published.store.apply_license_batch(&changes).await {
            tracing::error!(event = "license.store_failed", %error, writes = changes.len(), "Could not store a batch of license writes; every request in it fails.");
            resync_after_failure(published).await;
            for (reply, _) in answers {
                // A caller that went away learns nothing either way.
                let _ = reply.send(Err(WriteError::Storage(error.clone())));
            }
            return;
        }
        published.current.send_replace(Arc::new(next));
        tracing::debug!(writes = changes.len(), "License batch durable.");
    }
    for (reply, answer) in answers {
        if let Ok(applied) = &answer {
            log_applied(applied);
        }
        let _ = reply.send(answer);
    }
}

/// Applies `command` to `set` (the committed set plus the batch so far) at time `now`: the
/// answer, and the change to store when there is one. `set` is left as it was on a refusal.
fn decide(
    set: &mut LicenseSet,
    command: Command,
    now: i64,
) -> Result<(Applied, Option<LicenseChange>), WriteError> {
    let revision = set.revision + 1;
    let (stored, outcome) = match command {
        Command::Create {
            document,
            signature,
        } => {
            check_unique(set, &signature, None, &document)?;
            let stored = StoredLicense {
                id: Uuid::new_v4(),
                document,
                signature,
                created_at: now,
                updated_at: now,
                revision,
            };
            (stored, PutOutcome::Created)
        }
        Command::Put {
            id,
            document,
            signature,
        } => {
            check_unique(set, &signature, Some(id), &document)?;
            let existing = set.licenses.get(&id);
            let outcome = match existing {
                Some(_) => PutOutcome::Replaced,
                None => PutOutcome::Created,
            };
            let stored = StoredLicense {
                id,
                document,
                signature,
                created_at: existing.map_or(now, |l| l.created_at),
                updated_at: now,
                revision,
            };
            (stored, outcome)
        }
        Command::Patch {
            id,
            document,
            signature,
        } => {
            let existing = set.licenses.get(&id).ok_or(WriteError::NotFound(id))?;
            check_unique(set, &signature, Some(id), &document)?;
            let stored = StoredLicense {
                id,
                document,
                signature,
                created_at: existing.created_at,
                updated_at: now,
                revision,
            };
            (stored, PutOutcome::Replaced)
        }
        Command::Delete { id } => {
            if set.licenses.remove(&id).is_none() {
                return Ok((Applied::Absent, None));
            }
            set.revision = revision;
            return Ok((
                Applied::Deleted { id, revision },
                Some(LicenseChange::Delete { id, revision }),
            ));
        }
    };
    let change = LicenseChange::Put(stored.clone());
    let stored = Arc::new(stored);
    set.revision = revision;
    set.licenses.insert(stored.id, stored.clone());
    Ok((Applied::Stored(stored, outcome), Some(change)))
}

fn check_unique(
    set: &LicenseSet,
    signature: &str,
    own_id: Option<Uuid>,
    document: &str,
) -> Result<(), WriteError> {
    match set
        .licenses
        .values()
        .find(|l| l.signature == signature && Some(l.id) != own_id)
    {
        Some(existing) => Err(WriteError::Duplicate {
            payload: document.to_owned(),
            existing: existing.id,
        }),
        None => Ok(()),
    }
}

/// The log line of a durable write, once durable.
fn log_applied(applied: &Applied) {
    match applied {
        Applied::Stored(stored, PutOutcome::Created) => {
            tracing::info!(event = "license.created", license.id = %stored.id, revision = stored.revision, "License created.");
        }
        Applied::Stored(stored, PutOutcome::Replaced) => {
            tracing::info!(event = "license.updated", license.id = %stored.id, revision = stored.revision, "License updated.");
        }
        Applied::Deleted { id, revision } => {
            tracing::info!(event = "license.deleted", license.id = %id, revision, "License deleted.");
        }
        Applied::Absent => {}
    }
}

/// A failed batch may still have reached storage (a transaction committed, its flush failed).
/// Republishing what storage holds keeps revisions unique and the uniqueness check honest; if
/// storage cannot even be read, the next write fails again and says so.
async fn resync_after_failure(published: &Published) {
    match published.store.licenses().await {
        Ok(rows) => {
            let set = LicenseSet::from(rows);
            if set != **published.current.borrow() {
                tracing::warn!(
                    event = "license.storage_uncertain",
                    revision = set.revision,
                    "A failed write reached storage; publishing what storage holds."
                );
                published.current.send_replace(Arc::new(set));
            }
        }
        Err(error) => {
            tracing::error!(event = "license.storage_read_failed", %error, "Cannot read licenses back after a failed write.");
        }
    }
}
