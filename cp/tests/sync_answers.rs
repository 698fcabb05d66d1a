//! How the control plane takes a data plane's answers over real mutual TLS: a `Nack` naming
//! no license (the data plane could not apply the update) shows as `apply_failed` and the
//! update is sent again with backoff on the same stream, never left to stall; a `Nack`
//! refusing licenses is kept, per license, as the data plane's `last_rejection` and logged as
//! a JSON array.

use licsync_testkit::{ControlPlane, Events, eventually};
use serde_json::{Value, json};

#[tokio::test]
async fn an_update_the_data_plane_could_not_apply_is_sent_again_with_backoff() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let license = cp.create_license(&cp.issuer.license("Retry Corp")).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();

    let first = stream.update().await;
    assert_eq!(first.upserted.len(), 1);
    stream
        .nack(
            &first,
            "cannot write license file /etc/kong/license.json",
            &[],
        )
        .await;
    let row = eventually("apply_failed", || async {
        let row = cp.find_dataplane(&dp.id).await?;
        (row["sync_status"] == "apply_failed").then_some(row)
    })
    .await;
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(
        row["sync_error"], "cannot write license file /etc/kong/license.json",
        "{row}"
    );

    // Sent again on the same stream, whole: nothing of it counts as held.
    let retry = stream.update().await;
    assert_ne!(retry.nonce, first.nonce);
    assert_eq!(retry.revision, first.revision);
    assert_eq!(retry.upserted.len(), 1);
    assert_eq!(retry.upserted[0].id, license);

    // Failing again doubles the delay; an answer resets it.
    stream.nack(&retry, "still failing", &[]).await;
    let again = stream.update().await;
    let delays: Vec<u64> = events
        .named("sync.failed")
        .iter()
        .map(|e| e.field("retry_in_ms").unwrap().parse().unwrap())
        .collect();
    // 1 s then 2 s, each shortened by up to a quarter (jitter).
    let [first_delay, second_delay] = delays[..] else {
        panic!("{delays:?}")
    };
    assert!((750..=1000).contains(&first_delay), "{delays:?}");
    assert!((1500..=2000).contains(&second_delay), "{delays:?}");
    let failed = &events.named("sync.failed")[1];
    assert_eq!(failed.level, tracing::Level::WARN);
    assert_eq!(failed.field("reason"), Some("still failing"));
    assert_eq!(failed.field("dataplane.id"), Some(dp.id.as_str()));

    stream.ack(&again).await;
    let row = eventually("normal again", || async {
        let row = cp.find_dataplane(&dp.id).await?;
        (row["sync_status"] == "normal").then_some(row)
    })
    .await;
    assert_eq!(row["sync_error"], Value::Null, "{row}");
    assert_eq!(row["license_id"], license.as_str(), "{row}");

    // Later updates flow as usual: the stream never ended.
    let second = cp.create_license(&cp.issuer.license("Next Corp")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1);
    assert_eq!(update.upserted[0].id, second);
    assert_eq!(events.named("dataplane.disconnected").len(), 0);
}

#[tokio::test]
async fn the_last_rejection_is_shown_per_license_and_logged_as_a_json_array() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;
    let (a, b) = (
        cp.create_license(&cp.issuer.license("A Corp")).await,
        cp.create_license(&cp.issuer.license("B Corp")).await,
    );
    // The two writes may come as one update or two; refuse both.
    let mut refused = Vec::new();
    while refused.len() < 2 {
        let update = stream.update().await;
        let rejected: Vec<(String, u64)> = update
            .upserted
            .iter()
            .map(|l| (l.id.clone(), l.revision))
            .collect();
        let listed: Vec<(&str, u64, &str)> = rejected
            .iter()
            .map(|(id, revision)| (id.as_str(), *revision, "validation failed"))
            .collect();
        stream
            .nack(&update, "licenses rejected\nforged line", &listed)
            .await;
        refused.extend(rejected.into_iter().map(|r| (r, update.revision)));
    }
    let (last, last_revision) = refused.last().cloned().unwrap();

    let row = eventually("the last rejection", || async {
        let row = cp.find_dataplane(&dp.id).await?;
        (row["last_rejection"]["revision"] == last_revision).then_some(row)
    })
    .await;
    assert_eq!(row["sync_status"], "license_rejected", "{row}");
    let shown = &row["last_rejection"];
    assert_eq!(shown["reason"], "licenses rejected\\nforged line", "{row}");
    assert!(shown["at"].as_i64().unwrap() > 0, "{row}");
    let listed = shown["rejected"].as_array().unwrap();
    assert_eq!(shown["rejected_total"], listed.len(), "{row}");
    assert!(
        listed.contains(&json!({"id": last.0, "revision": last.1, "reason": "validation failed"})),
        "{row}"
    );

    let logged = events.named("sync.rejected");
    let ids: Vec<String> = logged
        .iter()
        .flat_map(|e| {
            let array: Value = serde_json::from_str(e.field("rejected").unwrap()).unwrap();
            array
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    assert_eq!(r["reason"], "validation failed", "{r}");
                    assert!(r["revision"].as_u64().unwrap() > 0, "{r}");
                    r["id"].as_str().unwrap().to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut expected = vec![a, b];
    expected.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, expected);
    assert!(
        logged
            .iter()
            .all(|e| !e.field("reason").unwrap().contains('\n')),
        "{logged:?}"
    );

    // A later answer that refuses nothing clears the status but keeps the record of it.
    let fixed = cp.create_license(&cp.issuer.license("C Corp")).await;
    let update = stream.update().await;
    assert_eq!(update.upserted[0].id, fixed);
    stream.ack(&update).await;
    let row = eventually("the ack", || async {
        let row = cp.find_dataplane(&dp.id).await?;
        (row["revision"] == update.revision).then_some(row)
    })
    .await;
    // A and B are still refused, so the status stays; their record too.
    assert_eq!(row["sync_status"], "license_rejected", "{row}");
    assert_eq!(row["last_rejection"]["revision"], last_revision, "{row}");
}
