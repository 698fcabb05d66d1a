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
//! Being the only writer on this node keeps revisions strictly increasing in commit order, and
//! the published set never shows a write before it is durable. Several nodes sharing one
//! database each run such a writer: storage refuses a batch decided at an older revision than
//! it holds (another node wrote first), and the writer then publishes what storage holds and
//! decides the same requests again ([`CONFLICT_RETRIES`] times at most). A failed batch fails every request in it: a
//! refusal there (a duplicate, a missing id) may have been decided against a write that never
//! became durable, so the caller learns of the failure and may retry.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::{LicenseSet, PutOutcome, WriteError};
use crate::model::{Revision, StoredLicense};
use crate::store::{LicenseChange, LicenseChanges, LicenseRows, Store, StoreError};

/// Most writes applied in one storage transaction.
const MAX_BATCH: usize = 1024;
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
    /// Bring the published set up to what storage holds (other nodes' writes), in turn with
    /// this node's writes.
    CatchUp,
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
    /// The published set is at least at `revision`, as storage was when read.
    CaughtUp {
        revision: Revision,
    },
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
    let mut signatures = None;
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let (catch_ups, writes): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting)
            .into_iter()
            .partition(|(command, _)| matches!(command, Command::CatchUp));
        if !catch_ups.is_empty() {
            let outcome = catch_up(&published).await;
            for (_, reply) in catch_ups {
                let answer = outcome
                    .clone()
                    .map(|revision| Applied::CaughtUp { revision })
                    .map_err(WriteError::Storage);
                let _ = reply.send(answer);
            }
        }
        if !writes.is_empty() {
            signatures = commit(&published, signatures, writes).await;
        }
    }
}

/// Publishes what other nodes committed since the published revision (nothing when there is
/// nothing new); the revision now published.
async fn catch_up(published: &Published) -> Result<Revision, StoreError> {
    let current = published.current.borrow().clone();
    let changes = published
        .store
        .license_changes_since(current.revision)
        .await?;
    let (upserted, deleted) = (changes.upserted.len(), changes.deleted.len());
    match followed(&current, changes) {
        Some(next) => {
            let revision = next.revision;
            tracing::info!(
                event = "cluster_feed.caught_up",
                from = current.revision,
                revision,
                upserted,
                deleted,
                "Published license changes other control-plane nodes made."
            );
            published.current.send_replace(Arc::new(next));
            Ok(revision)
        }
        None => Ok(current.revision),
    }
}

/// `current` with `changes` applied (deletions, then upserts): `None` when they bring nothing
/// newer. Pure, so the rule is tested on its own.
fn followed(current: &LicenseSet, changes: LicenseChanges) -> Option<LicenseSet> {
    if changes.complete {
        let next = LicenseSet::from(LicenseRows {
            revision: changes.revision,
            licenses: changes.upserted,
        });
        return (next != *current && next.revision >= current.revision).then_some(next);
    }
    if changes.revision <= current.revision {
        return None;
    }
    let mut next = current.clone();
    for id in changes.deleted {
        next.licenses.remove(&id);
    }
    for license in changes.upserted {
        next.licenses.insert(license.id, Arc::new(license));
    }
    next.revision = changes.revision;
    Some(next)
}

/// Which license holds each signature, at one revision of the set: Kong's uniqueness rule at
/// the cost of a lookup per write, where a scan of every license (on the one writer task) grew
/// with the number of licenses and slowed every batch.
struct Signatures {
    revision: Revision,
    ids: HashMap<String, Uuid>,
}

impl Signatures {
    fn of(set: &LicenseSet) -> Self {
        Self {
            revision: set.revision,
            ids: set
                .licenses
                .values()
                .map(|l| (l.signature.clone(), l.id))
                .collect(),
        }
    }

    /// Refuses `signature` when another license than `own_id` holds it.
    fn check(
        &self,
        signature: &str,
        own_id: Option<Uuid>,
        document: &str,
    ) -> Result<(), WriteError> {
        match self.ids.get(signature) {
            Some(&existing) if Some(existing) != own_id => Err(WriteError::Duplicate {
                payload: document.to_owned(),
                existing,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets `license`'s signature (it was replaced or deleted).
    fn remove(&mut self, license: &StoredLicense) {
        if self.ids.get(&license.signature) == Some(&license.id) {
            self.ids.remove(&license.signature);
        }
    }
}

/// How many times a batch is decided again after another node committed first, before its
/// writes fail (each retry starts from what storage then holds, so only a node losing every
/// race to a stream of writes elsewhere gets that far).
const CONFLICT_RETRIES: usize = 8;

/// Decides, stores, publishes and answers one batch. `signatures` is the index the previous
/// batch left (rebuilt when it is missing or not of the committed set); the index of the new
/// committed set is returned, `None` when the batch failed.
///
/// When storage refuses the batch because another node wrote first
/// ([`StoreError::Conflict`]), nothing was stored: the writer publishes what storage now holds
/// and decides the same requests again against it, so a duplicate of a license the other node
/// just stored is refused and every write gets a revision of its own.
async fn commit(
    published: &Published,
    signatures: Option<Signatures>,
    requests: Vec<Request>,
) -> Option<Signatures> {
    let mut signatures = signatures;
    let mut attempt = 0;
    loop {
        let committed = published.current.borrow().clone();
        let mut index = signatures
            .take()
            .filter(|s| s.revision == committed.revision)
            .unwrap_or_else(|| Signatures::of(&committed));
        let mut next = (*committed).clone();
        let now = licsync_common::unix_now();
        let mut changes = Vec::new();
        let answers: Vec<Answer> = requests
            .iter()
            .map(|(command, _)| {
                decide(&mut next, &mut index, command, now).map(|(applied, change)| {
                    changes.extend(change);
                    applied
                })
            })
            .collect();
        let next_revision = next.revision;
        if !changes.is_empty() {
            match published.store.apply_license_batch(&changes).await {
                Ok(()) => {
                    next.committed_at = Some(std::time::Instant::now());
                    published.current.send_replace(Arc::new(next));
                    tracing::debug!(writes = changes.len(), "License batch durable.");
                }
                Err(StoreError::Conflict { expected, found }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::info!(
                        event = "license.write_conflict",
                        expected,
                        found,
                        attempt,
                        writes = changes.len(),
                        "Another control-plane node wrote licenses first; deciding these writes again."
                    );
                    if let Err(error) = reload(published).await {
                        fail_all(requests, &error);
                        return None;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(event = "license.store_failed", %error, writes = changes.len(), "Could not store a batch of license writes; every request in it fails.");
                    resync_after_failure(published).await;
                    fail_all(requests, &error);
                    return None;
                }
            }
        }
        for ((_, reply), answer) in requests.into_iter().zip(answers) {
            if let Ok(applied) = &answer {
                log_applied(applied);
            }
            // A caller that went away learns nothing either way.
            let _ = reply.send(answer);
        }
        index.revision = next_revision;
        return Some(index);
    }
}

/// Answers every request of a failed batch with `error`.
fn fail_all(requests: Vec<Request>, error: &StoreError) {
    for (_, reply) in requests {
        let _ = reply.send(Err(WriteError::Storage(error.clone())));
    }
}

/// Publishes what storage holds (after a conflict: another node's writes), so the next
/// decision is made against it and streams send those writes too.
async fn reload(published: &Published) -> Result<(), StoreError> {
    let rows = published.store.licenses().await.inspect_err(|error| {
        tracing::error!(event = "license.storage_read_failed", %error, "Cannot read licenses back after a write conflict.");
    })?;
    let set = LicenseSet::from(rows);
    if set != **published.current.borrow() {
        published.current.send_replace(Arc::new(set));
    }
    Ok(())
}

/// Applies `command` to `set` (the committed set plus the batch so far, whose signatures are
/// `signatures`) at time `now`: the answer, and the change to store when there is one. Both are
/// left as they were on a refusal.
fn decide(
    set: &mut LicenseSet,
    signatures: &mut Signatures,
    command: &Command,
    now: i64,
) -> Result<(Applied, Option<LicenseChange>), WriteError> {
    let revision = set.revision + 1;
    let (stored, outcome) = match command {
        Command::Create {
            document,
            signature,
        } => {
            signatures.check(signature, None, document)?;
            let stored = StoredLicense {
                id: Uuid::new_v4(),
                document: document.clone(),
                signature: signature.clone(),
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
            let id = *id;
            signatures.check(signature, Some(id), document)?;
            let existing = set.licenses.get(&id);
            let outcome = match existing {
                Some(_) => PutOutcome::Replaced,
                None => PutOutcome::Created,
            };
            let stored = StoredLicense {
                id,
                document: document.clone(),
                signature: signature.clone(),
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
            let id = *id;
            let existing = set.licenses.get(&id).ok_or(WriteError::NotFound(id))?;
            signatures.check(signature, Some(id), document)?;
            let stored = StoredLicense {
                id,
                document: document.clone(),
                signature: signature.clone(),
                created_at: existing.created_at,
                updated_at: now,
                revision,
            };
            (stored, PutOutcome::Replaced)
        }
        Command::CatchUp => return Ok((Applied::Absent, None)),
        Command::Delete { id } => {
            let id = *id;
            let Some(removed) = set.licenses.remove(&id) else {
                return Ok((Applied::Absent, None));
            };
            signatures.remove(&removed);
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
    if let Some(replaced) = set.licenses.insert(stored.id, stored.clone()) {
        signatures.remove(&replaced);
    }
    signatures.ids.insert(stored.signature.clone(), stored.id);
    Ok((Applied::Stored(stored, outcome), Some(change)))
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
        Applied::Absent | Applied::CaughtUp { .. } => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn create(signature: &str) -> Command {
        Command::Create {
            document: format!("doc {signature}"),
            signature: signature.into(),
        }
    }

    fn stored(answer: Result<(Applied, Option<LicenseChange>), WriteError>) -> Arc<StoredLicense> {
        match answer {
            Ok((Applied::Stored(license, _), Some(LicenseChange::Put(change)))) => {
                assert_eq!(
                    *license, change,
                    "the change stored is the license answered"
                );
                license
            }
            other => panic!("expected a stored license, got {other:?}"),
        }
    }

    /// Within one batch: revisions follow the order of the writes, a replaced or deleted
    /// license frees its signature, and a refusal changes nothing.
    #[test]
    fn decisions_follow_each_other_within_a_batch() {
        let mut set = LicenseSet::default();
        let mut signatures = Signatures::of(&set);
        let a = stored(decide(&mut set, &mut signatures, &create("a"), 10));
        assert_eq!(a.revision, 1);
        let put = Command::Put {
            id: a.id,
            document: "doc b".into(),
            signature: "b".into(),
        };
        let renewed = stored(decide(&mut set, &mut signatures, &put, 11));
        assert_eq!((renewed.revision, renewed.created_at), (2, 10));

        let before = set.clone();
        assert!(matches!(
            decide(&mut set, &mut signatures, &create("b"), 12),
            Err(WriteError::Duplicate { existing, .. }) if existing == a.id
        ));
        let patch = Command::Patch {
            id: Uuid::new_v4(),
            document: "doc c".into(),
            signature: "c".into(),
        };
        assert!(matches!(
            decide(&mut set, &mut signatures, &patch, 12),
            Err(WriteError::NotFound(_))
        ));
        assert_eq!(set, before, "refusals change nothing");

        let other = stored(decide(&mut set, &mut signatures, &create("a"), 12));
        assert_eq!(other.revision, 3, "the replaced signature is free again");
        match decide(&mut set, &mut signatures, &Command::Delete { id: a.id }, 13) {
            Ok((Applied::Deleted { id, revision: 4 }, Some(LicenseChange::Delete { .. }))) => {
                assert_eq!(id, a.id);
            }
            other => panic!("expected a delete, got {other:?}"),
        }
        assert!(matches!(
            decide(&mut set, &mut signatures, &Command::Delete { id: a.id }, 13),
            Ok((Applied::Absent, None))
        ));
        stored(decide(&mut set, &mut signatures, &create("b"), 14));
        assert_eq!(set.revision, 5);
        assert_eq!(
            Signatures::of(&set).ids,
            signatures.ids,
            "the index follows the set"
        );
    }

    fn license(revision: Revision, signature: &str) -> StoredLicense {
        StoredLicense {
            id: Uuid::new_v4(),
            document: format!("doc {signature}"),
            signature: signature.into(),
            created_at: 1,
            updated_at: 1,
            revision,
        }
    }

    /// Another node's changes: deletions then upserts (an id deleted and stored again stays),
    /// nothing when they are not newer, and a complete answer replaces the set.
    #[test]
    fn followed_changes_apply_deletions_then_upserts() {
        let (a, b) = (license(1, "a"), license(2, "b"));
        let current = LicenseSet::from(LicenseRows {
            revision: 2,
            licenses: vec![a.clone(), b.clone()],
        });
        let again = StoredLicense {
            revision: 5,
            ..b.clone()
        };
        let c = license(4, "c");
        let changes = LicenseChanges {
            revision: 5,
            upserted: vec![c.clone(), again.clone()],
            deleted: vec![a.id, b.id],
            complete: false,
        };
        let next = followed(&current, changes.clone()).unwrap();
        assert_eq!(next.revision, 5);
        assert_eq!(
            next.licenses
                .values()
                .map(|l| (**l).clone())
                .collect::<Vec<_>>()
                .len(),
            2
        );
        assert!(!next.licenses.contains_key(&a.id));
        assert_eq!(*next.licenses[&b.id], again);
        assert_eq!(*next.licenses[&c.id], c);
        assert_eq!(followed(&next, changes), None, "already held");
        let stale = LicenseChanges {
            revision: 2,
            ..LicenseChanges::default()
        };
        assert_eq!(followed(&current, stale), None);

        let whole = LicenseChanges::complete(LicenseRows {
            revision: 3,
            licenses: vec![a.clone()],
        });
        let replaced = followed(&current, whole).unwrap();
        assert_eq!(replaced.licenses.keys().collect::<Vec<_>>(), vec![&a.id]);
        let same = LicenseChanges::complete(LicenseRows {
            revision: 2,
            licenses: vec![a, b],
        });
        assert_eq!(followed(&current, same), None, "nothing new");
    }
}
