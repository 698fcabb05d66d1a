//! The audit trail: who changed what, from where, and how it ended, for every Admin API
//! mutation (and every refused call) and every registration, renewal and certificate rotation
//! of a data plane.
//!
//! Each record is logged at once (`event = "audit"`, with `actor`, `source`, `action`,
//! `resource` and `result`), then kept in storage for `audit.retention` and served by
//! `GET /audit`. Storage writes go through one writer task that appends whatever has queued
//! in one write, like the usage ledger: an audited request never waits for its own flush, so
//! auditing costs the Admin API's group-committed writes nothing measurable. A read
//! ([`Audit::since`]) and shutdown ([`Audit::flush`]) first wait for what is queued. No
//! secret ever reaches a record: callers pass ids, names, paths and statuses only.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::store::{AuditRecord, Store, StoreResult};

/// Most records appended in one storage write.
const MAX_BATCH: usize = 1024;
/// Records that may wait for the writer; beyond it a record is kept in the log only.
const QUEUE: usize = 16 * 1024;
/// How many times a failed append is retried (1 s apart) before its records are given up
/// (they are in the log either way).
const APPEND_ATTEMPTS: u32 = 10;
/// How often records older than `audit.retention` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What happened, as a caller describes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor: String,
    pub source: String,
    pub action: String,
    pub resource: String,
    pub result: String,
}

enum Command {
    Append(AuditRecord),
    /// Answered once everything queued before it is stored (or given up).
    Flush(oneshot::Sender<()>),
}

/// The audit trail; see the module documentation.
pub struct Audit {
    store: Arc<dyn Store>,
    queue: OnceLock<mpsc::Sender<Command>>,
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queue: OnceLock::new(),
        }
    }

    /// Logs `entry` now and queues it for storage.
    pub fn record(&self, entry: Entry) {
        tracing::info!(
            event = "audit",
            actor = %entry.actor,
            source = %entry.source,
            action = %entry.action,
            resource = %entry.resource,
            result = %entry.result,
            "Audit record."
        );
        let record = AuditRecord {
            id: Uuid::new_v4(),
            at_ms: now_ms(),
            actor: entry.actor,
            source: entry.source,
            action: entry.action,
            resource: entry.resource,
            result: entry.result,
        };
        // Bounded: refused calls are audited too, so a flood of unauthenticated requests while
        // storage is slow or down must not queue without limit. Beyond the queue a record is
        // only in the log line above.
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.queue().try_send(Command::Append(record))
        {
            tracing::warn!(
                event = "audit.dropped",
                queue = QUEUE,
                "The audit queue is full; this record is only in the log."
            );
        }
    }

    /// Waits until every record queued so far is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue().send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Up to `limit` records from `since_ms` (unix ms) on, oldest first, including every
    /// record made before the call.
    pub async fn since(&self, since_ms: i64, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.flush().await;
        self.store.audit_since(since_ms, limit).await
    }

    /// Removes records older than `retention`, every [`PRUNE_EVERY`] (and once at start),
    /// until `shutdown`.
    pub async fn run_retention(&self, retention: Duration, shutdown: CancellationToken) {
        loop {
            let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            match self
                .store
                .prune_audit(now_ms().saturating_sub(keep_ms))
                .await
            {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(
                        event = "audit.pruned",
                        removed,
                        retention_s = retention.as_secs(),
                        "Removed audit records older than audit.retention."
                    );
                }
                Err(error) => {
                    tracing::warn!(event = "audit.prune_failed", %error, "Could not remove old audit records; retrying later.");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    fn queue(&self) -> &mpsc::Sender<Command> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(
                write_batches(self.store.clone(), rx)
                    .instrument(tracing::info_span!("audit_writer")),
            );
            tx
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The writer task: one append per batch of queued records; flushes answered after it.
async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Command>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        for command in waiting.drain(..) {
            match command {
                Command::Append(record) => records.push(record),
                Command::Flush(done) => flushes.push(done),
            }
        }
        append(store.as_ref(), &records).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn append(store: &dyn Store, records: &[AuditRecord]) {
    if records.is_empty() {
        return;
    }
    for attempt in 1..=APPEND_ATTEMPTS {
        match store.append_audit(records).await {
            Ok(()) => return,
            Err(error) if attempt < APPEND_ATTEMPTS => {
                tracing::warn!(event = "audit.store_failed", %error, records = records.len(), attempt, "Could not store audit records; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                tracing::error!(event = "audit.store_failed", %error, records = records.len(), attempt, "Could not store audit records; they are only in the log.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn entry(action: &str) -> Entry {
        Entry {
            actor: "token 'ci' (id 1)".into(),
            source: "127.0.0.1:1".into(),
            action: action.into(),
            resource: "/licenses".into(),
            result: "ok".into(),
        }
    }

    #[tokio::test]
    async fn records_are_readable_in_order_right_after_they_are_made() {
        let audit = Audit::new(Arc::new(MemoryStore::new()));
        for n in 0..50 {
            audit.record(entry(&format!("POST /licenses #{n}")));
        }
        let records = audit.since(0, 1000).await.unwrap();
        assert_eq!(records.len(), 50);
        let actions: Vec<_> = records.iter().map(|r| r.action.clone()).collect();
        let mut sorted = records.clone();
        sorted.sort_by_key(|r| (r.at_ms, r.id));
        assert_eq!(records, sorted, "time order");
        assert!(actions.contains(&"POST /licenses #0".to_owned()));
        assert_eq!(audit.since(0, 7).await.unwrap().len(), 7);
        assert!(audit.since(i64::MAX, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn retention_removes_only_old_records() {
        let store = Arc::new(MemoryStore::new());
        let old = AuditRecord {
            id: Uuid::new_v4(),
            at_ms: 1_000,
            actor: "-".into(),
            source: "-".into(),
            action: "old".into(),
            resource: "-".into(),
            result: "ok".into(),
        };
        crate::store::AuditStore::append_audit(store.as_ref(), &[old])
            .await
            .unwrap();
        let audit = Audit::new(store);
        audit.record(entry("new"));
        audit.flush().await;
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        audit
            .run_retention(Duration::from_secs(86_400), shutdown)
            .await;
        let left = audit.since(0, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].action, "new");
    }
}
