//! Group commit for usage reports.
//!
//! A receipt may only be sent once what it lists is durable, and a durable write costs a flush.
//! One flush per report would cap ingest at one report per flush (hundreds to a few thousand a
//! second, depending on the disk) however many data planes report at once. So reports go
//! through a channel to one writer task: it takes every report waiting (up to [`MAX_BATCH`]),
//! applies them in one atomic storage write with one flush, and then answers each report's
//! oneshot with what is now stored for it. While one batch is being flushed, the next gathers.
//!
//! The writer is started on the first report (from a runtime, which every caller is in) and
//! ends when the ledger is dropped.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{UsageMonth, UsageRow, UsageSubmission};
use crate::store::{Store, StoreError, StoreResult};

/// Most reports applied in one storage write.
pub const MAX_BATCH: usize = 4096;
/// Reports that may wait for the writer; further callers wait for room (backpressure).
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<StoreResult<Vec<(UsageMonth, u64)>>>;

/// Keeps usage counters; see the module documentation.
pub struct UsageLedger {
    store: Arc<dyn Store>,
    queue: OnceLock<mpsc::Sender<(UsageSubmission, Reply)>>,
}

impl UsageLedger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            queue: OnceLock::new(),
        }
    }

    /// Stores `submission` under the max rule and returns, once durable, the count now held for
    /// each of its months (in its order): at least what it reported.
    pub async fn record(&self, submission: UsageSubmission) -> StoreResult<Vec<(UsageMonth, u64)>> {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send((submission, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Every usage counter stored (for the usage report).
    pub async fn rows(&self) -> StoreResult<Vec<UsageRow>> {
        self.store.usage().await
    }

    /// Every month's total over all counters, oldest first.
    pub async fn by_month(&self) -> StoreResult<Vec<(UsageMonth, u64)>> {
        self.store.usage_by_month().await
    }

    fn queue(&self) -> &mpsc::Sender<(UsageSubmission, Reply)> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(
                write_batches(self.store.clone(), rx)
                    .instrument(tracing::info_span!("usage_writer")),
            );
            tx
        })
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("the usage writer stopped; the control plane is shutting down".into())
}

/// The writer task: one storage write per batch of waiting reports.
async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(UsageSubmission, Reply)>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        let (submissions, replies): (Vec<_>, Vec<_>) = waiting.drain(..).unzip();
        let reports = submissions.len();
        match store.record_usage(submissions).await {
            Ok(recorded) => {
                tracing::debug!(reports, "Usage batch durable.");
                for (reply, recorded) in replies.into_iter().zip(recorded) {
                    // A caller that went away (the data plane hung up) retries later; what it
                    // sent is stored either way.
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(error) => {
                tracing::error!(event = "usage.store_failed", %error, reports, "Could not store usage reports; data planes will retry.");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, SledStore};
    use crate::usage::UsageRow;
    use uuid::Uuid;

    fn month(text: &str) -> UsageMonth {
        text.parse().unwrap()
    }

    fn submission(dp: Uuid, epoch: Uuid, counts: &[(&str, u64)]) -> UsageSubmission {
        UsageSubmission {
            dataplane: dp,
            epoch,
            counts: counts.iter().map(|(m, c)| (month(m), *c)).collect(),
        }
    }

    fn total(rows: &[UsageRow]) -> u64 {
        rows.iter().map(|r| r.count).sum()
    }

    /// The max rule through the ledger, on a backend.
    async fn max_semantics(store: Arc<dyn Store>) {
        let ledger = UsageLedger::new(store.clone());
        let dp = Uuid::new_v4();
        let epoch = Uuid::new_v4();
        let nov = [("2026-11", 10)];
        assert_eq!(
            ledger.record(submission(dp, epoch, &nov)).await.unwrap(),
            vec![(month("2026-11"), 10)]
        );
        // Duplicate / retry.
        ledger.record(submission(dp, epoch, &nov)).await.unwrap();
        assert_eq!(total(&store.usage().await.unwrap()), 10);
        // Higher, then a reordered older (lower) report: the receipt says what is held.
        ledger
            .record(submission(dp, epoch, &[("2026-11", 25), ("2026-10", 5)]))
            .await
            .unwrap();
        assert_eq!(
            ledger
                .record(submission(dp, epoch, &[("2026-11", 12)]))
                .await
                .unwrap(),
            vec![(month("2026-11"), 25)]
        );
        assert_eq!(total(&store.usage().await.unwrap()), 30);
        // A wiped data plane starts a new epoch: its counts add.
        let fresh = Uuid::new_v4();
        ledger
            .record(submission(dp, fresh, &[("2026-11", 3)]))
            .await
            .unwrap();
        // Another data plane's counters are its own.
        ledger
            .record(submission(Uuid::new_v4(), epoch, &[("2026-11", 4)]))
            .await
            .unwrap();
        let rows = store.usage().await.unwrap();
        assert_eq!(total(&rows), 37);
        assert_eq!(rows.len(), 4);
    }

    #[tokio::test]
    async fn max_rule_on_both_backends() {
        let dir = tempfile::tempdir().unwrap();
        max_semantics(Arc::new(SledStore::open(&dir.path().join("db")).unwrap())).await;
        max_semantics(Arc::new(MemoryStore::new())).await;
    }

    /// Many reports at once, some of them duplicates within the same batch: every caller gets
    /// its receipt and the stored count is the highest reported.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reports_share_batches_and_keep_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let ledger = Arc::new(UsageLedger::new(store.clone()));
        let dps: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        let epoch = Uuid::new_v4();
        let mut tasks = Vec::new();
        for &dp in &dps {
            for count in 1..=20u64 {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    let recorded = ledger
                        .record(submission(dp, epoch, &[("2026-11", count)]))
                        .await
                        .unwrap();
                    assert!(
                        recorded[0].1 >= count,
                        "a receipt never says less than sent"
                    );
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(total(&store.usage().await.unwrap()), 50 * 20);
    }
}
