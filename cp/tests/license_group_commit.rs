//! Group commit of license writes through the real Admin API and sled: many concurrent
//! `POST /licenses` are all acknowledged, a data-plane stream only ever sees revisions that
//! rise, and after a restart from disk every acknowledged license is there with a revision of
//! its own.

use std::collections::BTreeSet;

use futures::future::join_all;
use licsync_testkit::ControlPlane;

/// Writes at once: more than one batch's worth of concurrency for the Admin API.
const WRITES: u64 = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_all_durable_with_unique_rising_revisions() {
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    assert_eq!(first.revision, 0);
    stream.ack(&first).await;

    let documents: Vec<String> = (0..WRITES)
        .map(|n| cp.issuer.license(&format!("Customer {n}")))
        .collect();
    let acknowledged: BTreeSet<String> = join_all(documents.iter().map(|d| cp.create_license(d)))
        .await
        .into_iter()
        .collect();
    assert_eq!(
        acknowledged.len() as u64,
        WRITES,
        "every 201 names its own id"
    );

    // The stream is sent whatever set is newest when it looks (bursts coalesce), never a
    // revision it had, and every license it gets is at or below the update's revision.
    let mut seen = 0;
    let mut streamed = BTreeSet::new();
    while seen < WRITES {
        let update = stream.update().await;
        assert!(update.revision > seen, "{} after {seen}", update.revision);
        assert!(
            update
                .upserted
                .iter()
                .all(|l| l.revision <= update.revision)
        );
        streamed.extend(update.upserted.iter().map(|l| l.id.clone()));
        seen = update.revision;
        stream.ack(&update).await;
    }
    assert_eq!(seen, WRITES, "one revision per write");
    assert_eq!(streamed, acknowledged);
    drop(stream);

    let cp = cp.restart().await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let resync = stream.update().await;
    assert_eq!(resync.revision, WRITES);
    let ids: BTreeSet<String> = resync.upserted.iter().map(|l| l.id.clone()).collect();
    assert_eq!(
        ids, acknowledged,
        "every acknowledged write survived the restart"
    );
    let revisions: BTreeSet<u64> = resync.upserted.iter().map(|l| l.revision).collect();
    assert_eq!(
        revisions,
        (1..=WRITES).collect(),
        "each write has a revision of its own, none skipped"
    );
    drop(stream);
    cp.shutdown().await;
}
