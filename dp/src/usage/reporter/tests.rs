//! The reporter against a `LicenseSync` server on loopback that keeps the maximum per
//! (epoch, bucket) as the control plane's contract says, and can be told to refuse.
//! Plain HTTP/2: TLS and identity are the sync client's, tested with it; what is tested
//! here is what gets reported, when, and what a refusal does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use licsync_common::proto::license_sync_server::{LicenseSync, LicenseSyncServer};
use licsync_common::proto::{
    ControlPlaneMessage, DataPlaneMessage, RefusedUsage, RotateCertificateRequest,
    RotateCertificateResponse, UsageReceipt,
};
use time::macros::datetime;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::clock::ManualClock;
use crate::usage::UsageStore;

#[derive(Clone, Default)]
struct Recorder {
    held: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    refusals: Arc<Mutex<VecDeque<Code>>>,
    /// Buckets refused one by one, as the control plane refuses a month out of its range.
    refused_buckets: Arc<Mutex<Vec<String>>>,
    /// Every bucket of every report, in order.
    sent: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<u64>>,
}

impl Recorder {
    fn held(&self, bucket: &str) -> Option<u64> {
        let held = self.held.lock().unwrap();
        held.iter()
            .find(|((_, b), _)| b == bucket)
            .map(|(_, count)| *count)
    }

    fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }
}

#[tonic::async_trait]
impl LicenseSync for Recorder {
    type SyncStream = ReceiverStream<Result<ControlPlaneMessage, Status>>;

    async fn sync(
        &self,
        _request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn rotate_certificate(
        &self,
        _request: Request<RotateCertificateRequest>,
    ) -> Result<Response<RotateCertificateResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn report_usage(
        &self,
        request: Request<UsageReport>,
    ) -> Result<Response<UsageReceipt>, Status> {
        *self.calls.lock().unwrap() += 1;
        if let Some(code) = self.refusals.lock().unwrap().pop_front() {
            return Err(Status::new(code, "refused by the test"));
        }
        let report = request.into_inner();
        let mut held = self.held.lock().unwrap();
        let refuse = self.refused_buckets.lock().unwrap().clone();
        let mut refused = Vec::new();
        self.sent
            .lock()
            .unwrap()
            .extend(report.counts.iter().map(|c| c.bucket.clone()));
        let recorded = report
            .counts
            .iter()
            .filter(|count| {
                let keep = !refuse.contains(&count.bucket);
                if !keep {
                    refused.push(RefusedUsage {
                        bucket: count.bucket.clone(),
                        request_count: count.request_count,
                        reason: format!("{} is refused by the test", count.bucket),
                    });
                }
                keep
            })
            .map(|count| {
                let slot = held
                    .entry((report.epoch.clone(), count.bucket.clone()))
                    .or_insert(0);
                *slot = (*slot).max(count.request_count);
                UsageCount {
                    bucket: count.bucket.clone(),
                    request_count: *slot,
                }
            })
            .collect();
        Ok(Response::new(UsageReceipt { recorded, refused }))
    }
}

struct Setup {
    recorder: Recorder,
    counter: UsageCounter,
    publish: watch::Sender<Option<Channel>>,
    channel: Channel,
    clock: ManualClock,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(LicenseSyncServer::new(recorder.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
    let (counter, _) = UsageCounter::open(
        UsageStore::new(dir.path().join("usage.json")),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let (publish, channel_rx) = watch::channel(None);
    let (_status_tx, sync_status) = watch::channel(SyncStatus {
        last_error: Some("cannot reach the control plane at https://cp:8005".into()),
        ..SyncStatus::default()
    });
    let reporter = Reporter {
        counter: counter.clone(),
        channel: channel_rx,
        sync_status,
        cluster_url: ClusterUrl::parse("https://cp:8005").unwrap(),
        report_interval: Duration::from_millis(50),
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
    };
    tokio::spawn(reporter.run(stop.clone()));
    Setup {
        recorder,
        counter,
        publish,
        channel,
        clock,
        stop,
        _dir: dir,
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn only_flushed_counts_are_reported_and_the_receipt_is_recorded() {
    let setup = setup().await;
    setup.publish.send_replace(Some(setup.channel.clone()));
    setup.counter.add(5).unwrap();
    setup.counter.flush().await.unwrap();
    until("the first report", || {
        setup.recorder.held("2026-11") == Some(5)
    })
    .await;
    until("the receipt", || {
        setup.counter.snapshot().buckets[0].reported == Some(5)
    })
    .await;

    // Counted but not flushed: periodic reports go on with the durable count only.
    setup.counter.add(3).unwrap();
    let calls = setup.recorder.calls();
    until("more periodic reports", || {
        setup.recorder.calls() >= calls + 3
    })
    .await;
    assert_eq!(setup.recorder.held("2026-11"), Some(5));
    setup.counter.flush().await.unwrap();
    until("the flushed count", || {
        setup.recorder.held("2026-11") == Some(8)
    })
    .await;
    let snapshot = setup.counter.snapshot();
    assert!(snapshot.report.last_error.is_none(), "{snapshot:?}");
    setup.stop.cancel();
}

#[tokio::test]
async fn refusals_and_a_missing_connection_are_retried_while_counting_goes_on() {
    let setup = setup().await;
    setup.counter.add(2).unwrap();
    setup.counter.flush().await.unwrap();
    until("the wait to be explained", || {
        setup
            .counter
            .snapshot()
            .report
            .last_error
            .is_some_and(|e| e.contains("waiting for the connection") && e.contains("cannot reach"))
    })
    .await;
    setup.recorder.refusals.lock().unwrap().extend([
        Code::Unimplemented,
        Code::Unavailable,
        Code::PermissionDenied,
    ]);
    setup.publish.send_replace(Some(setup.channel.clone()));
    setup.counter.add(4).unwrap();
    until("the refusals to be retried", || {
        setup.recorder.held("2026-11").is_some()
    })
    .await;
    assert!(
        setup.recorder.calls() >= 4,
        "three refusals, then the report"
    );
    setup.counter.flush().await.unwrap();
    until("everything", || setup.recorder.held("2026-11") == Some(6)).await;
    setup.stop.cancel();
}

/// The control plane refuses one month and stores the other: the other is confirmed, the
/// refused one is sent once, not again, and `GET /usage` says why.
#[tokio::test]
async fn a_refused_bucket_is_not_sent_again_and_the_rest_is_confirmed() {
    let setup = setup().await;
    setup
        .recorder
        .refused_buckets
        .lock()
        .unwrap()
        .push("2026-11".into());
    setup.counter.add(5).unwrap();
    setup.counter.flush().await.unwrap();
    setup.publish.send_replace(Some(setup.channel.clone()));
    until("the refusal to be recorded", || {
        setup.counter.snapshot().buckets[0].refused.is_some()
    })
    .await;
    let refused = setup.counter.snapshot().buckets[0].refused.clone().unwrap();
    assert_eq!(refused, "2026-11 is refused by the test");

    setup.clock.set(datetime!(2026-12-02 08:00 UTC));
    setup.counter.add(2).unwrap();
    setup.counter.flush().await.unwrap();
    until("December to be confirmed", || {
        setup.counter.snapshot().buckets[0].reported == Some(2)
    })
    .await;
    let calls = setup.recorder.calls();
    until("more periodic reports", || {
        setup.recorder.calls() >= calls + 2
    })
    .await;
    let sent = setup.recorder.sent.lock().unwrap().clone();
    assert_eq!(
        sent.iter().filter(|b| *b == "2026-11").count(),
        1,
        "the refused month is sent once: {sent:?}"
    );
    assert_eq!(setup.recorder.held("2026-11"), None);
    let snapshot = setup.counter.snapshot();
    assert_eq!(snapshot.buckets[1].request_count, 5, "kept: {snapshot:?}");
    setup.stop.cancel();
}

#[test]
fn refusals_are_explained_in_operator_words() {
    let (_, channel) = watch::channel(None);
    let (status_tx, sync_status) = watch::channel(SyncStatus::default());
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (counter, _) = runtime
        .block_on(UsageCounter::open(
            UsageStore::new(dir.path().join("usage.json")),
            crate::clock::system(),
        ))
        .unwrap();
    let reporter = Reporter {
        counter,
        channel,
        sync_status,
        cluster_url: ClusterUrl::parse("https://cp:8005").unwrap(),
        report_interval: Duration::from_secs(10),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    };
    for (status, kind, expected) in [
        (
            Status::unimplemented("x"),
            FailureKind::Other,
            "does not accept usage reports yet",
        ),
        (
            Status::permission_denied("certificate revoked"),
            FailureKind::CertificateRefused,
            "refused this data plane's usage report: certificate revoked",
        ),
        (
            Status::invalid_argument("bucket 2026-13"),
            FailureKind::Other,
            "rejected the usage report: bucket 2026-13",
        ),
        (
            Status::unavailable("shutting down"),
            FailureKind::Other,
            "cannot report usage to the control plane at https://cp:8005 (Unavailable): shutting down",
        ),
    ] {
        let failure = reporter.explain(&status);
        assert_eq!(failure.kind, kind, "{status:?}");
        assert!(failure.message.contains(expected), "{}", failure.message);
    }
    // With sync.servers, the server the sync client uses is named.
    status_tx.send_modify(|s| s.cluster_url = "https://cp2:8005".into());
    let failure = reporter.explain(&Status::unavailable("shutting down"));
    assert!(
        failure
            .message
            .contains("the control plane at https://cp2:8005 (Unavailable)"),
        "{}",
        failure.message
    );
}
