//! The reporter: sends the durable cumulative counts to the control plane
//! (`LicenseSync.ReportUsage`) and records its receipts.
//!
//! It reports soon after every flush that made new counts durable, on every new connection
//! (a restarted control plane, or one restored from a backup, relearns at once), and every
//! `usage.report_interval` in any case. A report that fails — no connection, the control
//! plane refusing this data plane's certificate, an older control plane without usage
//! reporting — is retried with backoff and logged at most once a minute, while counting goes
//! on untouched. Reports are idempotent (cumulative counts, the control plane keeps the
//! maximum), so a retry of a report that did arrive costs nothing.
//!
//! Reports travel on the connection of the sync stream: the sync client publishes its
//! current channel (`None` while disconnected) and the reporter uses whatever is there, so
//! whatever identity and TLS setup the sync client uses, reports use too.

use std::time::Duration;

use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{UsageCount, UsageReport};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use super::{Bucket, LogThrottle, UsageCounter};
use crate::cluster::{self, ClusterUrl, FailureKind};
use crate::sync::{Backoff, SyncStatus};

/// How long one `ReportUsage` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often at most a failing report is logged.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(60);
/// How long reports wait for a connection before saying so in the log.
const CONNECT_GRACE: Duration = Duration::from_secs(15);

/// Everything the reporter needs.
pub struct Reporter {
    pub counter: UsageCounter,
    /// The sync client's current connection to the control plane.
    pub channel: watch::Receiver<Option<Channel>>,
    /// The sync client's status, whose `last_error` explains a missing connection.
    pub sync_status: watch::Receiver<SyncStatus>,
    pub cluster_url: ClusterUrl,
    pub report_interval: Duration,
    pub backoff: Backoff,
}

/// Why a report did not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    kind: FailureKind,
    message: String,
}

impl Reporter {
    /// Reports until `shutdown`, or until the sync client is gone.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut flushed = self.counter.subscribe_flushed();
        let mut failures = LogThrottle::new(FAILURE_LOG_PERIOD);
        let mut failing = false;
        let mut next_periodic = Instant::now();
        let mut due = true;
        loop {
            if !due {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = flushed.changed() => if changed.is_err() { return },
                    changed = self.channel.changed() => {
                        if changed.is_err() { return }
                        if self.channel.borrow_and_update().is_none() { continue }
                    }
                    () = tokio::time::sleep_until(next_periodic) => {}
                }
            }
            due = true;
            flushed.mark_unchanged();
            let counts = self.counter.report_counts();
            if counts.is_empty() {
                due = false;
                next_periodic = Instant::now() + self.report_interval;
                continue;
            }
            let Some(channel) = self.current_channel(&shutdown, &mut failures).await else {
                return;
            };
            // A call stuck on an unresponsive control plane must not hold up shutdown: what
            // it carried is durable and is reported after the restart.
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.send(channel, &counts) => outcome,
            };
            match outcome {
                Ok(recorded) => {
                    self.confirmed(&counts, &recorded);
                    if std::mem::take(&mut failing) {
                        tracing::info!(
                            event = "usage.report_resumed",
                            "Usage reports are delivered again."
                        );
                    }
                    failures.reset();
                    self.backoff.reset();
                    due = false;
                    next_periodic = Instant::now() + self.report_interval;
                }
                Err(failure) => {
                    failing = true;
                    self.counter.report_failed(failure.message.clone());
                    if let Some(suppressed) = failures.allow() {
                        log_failure(&failure, suppressed, self.counter.snapshot().unreported);
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(self.backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// The published channel, waiting for one while disconnected (and saying so when that
    /// lasts). `None` on shutdown or when the sync client is gone.
    async fn current_channel(
        &mut self,
        shutdown: &CancellationToken,
        failures: &mut LogThrottle,
    ) -> Option<Channel> {
        let mut patience = tokio::time::interval_at(Instant::now() + CONNECT_GRACE, CONNECT_GRACE);
        loop {
            if let Some(channel) = self.channel.borrow_and_update().clone() {
                return Some(channel);
            }
            let why = self
                .sync_status
                .borrow()
                .last_error
                .clone()
                .unwrap_or_else(|| "not connected yet".to_owned());
            self.counter.report_failed(format!(
                "waiting for the connection to the control plane: {why}"
            ));
            tokio::select! {
                () = shutdown.cancelled() => return None,
                changed = self.channel.changed() => changed.ok()?,
                _ = patience.tick() => {
                    if let Some(suppressed) = failures.allow() {
                        tracing::warn!(
                            event = "usage.report_waiting",
                            reason = %why,
                            unreported = self.counter.snapshot().unreported,
                            suppressed,
                            "Usage reports wait for the connection to the control plane; requests are still counted and kept."
                        );
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        channel: Channel,
        counts: &[(Bucket, u64)],
    ) -> Result<Vec<(Bucket, u64)>, Failure> {
        let report = UsageReport {
            epoch: self.counter.epoch().to_owned(),
            counts: counts
                .iter()
                .map(|(bucket, requests)| UsageCount {
                    bucket: bucket.to_string(),
                    request_count: *requests,
                })
                .collect(),
        };
        let mut request = tonic::Request::new(report);
        request.set_timeout(CALL_TIMEOUT);
        let mut client = LicenseSyncClient::new(channel);
        let receipt = match tokio::time::timeout(CALL_TIMEOUT, client.report_usage(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(self.explain(&status)),
            Err(_) => {
                return Err(Failure {
                    kind: FailureKind::Unreachable,
                    message: format!(
                        "the control plane at {} did not answer a usage report within {CALL_TIMEOUT:?}",
                        self.cluster_url
                    ),
                });
            }
        };
        Ok(receipt
            .recorded
            .iter()
            .filter_map(|count| Some((count.bucket.parse().ok()?, count.request_count)))
            .collect())
    }

    fn confirmed(&self, sent: &[(Bucket, u64)], recorded: &[(Bucket, u64)]) {
        let check = self.counter.record_receipt(recorded);
        for (bucket, ours, theirs) in check.ahead {
            tracing::warn!(
                event = "usage.report_ahead",
                epoch = %self.counter.epoch(),
                %bucket,
                counted = ours,
                recorded = theirs,
                "The control plane holds more requests for this month and epoch than this data plane counted: was the data dir restored from an older copy, or is it shared by two agents? Requests are undercounted until this data plane catches up; move usage.json aside to start a new epoch."
            );
        }
        tracing::debug!(
            event = "usage.reported",
            epoch = %self.counter.epoch(),
            buckets = sent.len(),
            "Usage report confirmed."
        );
    }

    fn explain(&self, status: &tonic::Status) -> Failure {
        let url = &self.cluster_url;
        match status.code() {
            Code::Unimplemented => Failure {
                kind: FailureKind::Other,
                message: format!(
                    "the control plane at {url} does not accept usage reports yet (an older version); counts are kept and sent once it does"
                ),
            },
            Code::Unauthenticated | Code::PermissionDenied => Failure {
                kind: FailureKind::CertificateRefused,
                message: format!(
                    "the control plane at {url} refused this data plane's usage report: {}; check the certificate with `licsync-dp registration inspect`, then renew or register again",
                    status.message()
                ),
            },
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => Failure {
                kind: FailureKind::Other,
                message: format!(
                    "the control plane at {url} rejected the usage report: {}",
                    status.message()
                ),
            },
            _ => {
                let diagnosis = cluster::diagnose(status, url);
                Failure {
                    kind: diagnosis.kind,
                    message: if diagnosis.kind == FailureKind::Other {
                        format!(
                            "cannot report usage to the control plane at {url} ({:?}): {}",
                            status.code(),
                            status.message()
                        )
                    } else {
                        diagnosis.message
                    },
                }
            }
        }
    }
}

fn log_failure(failure: &Failure, suppressed: u64, unreported: u64) {
    let reason = &failure.message;
    match failure.kind {
        FailureKind::CertificateRefused | FailureKind::ServerUntrusted => tracing::error!(
            event = "usage.report_refused",
            %reason,
            unreported,
            suppressed,
            "Usage cannot be reported; requests are still counted and kept."
        ),
        _ => tracing::warn!(
            event = "usage.report_failed",
            %reason,
            unreported,
            suppressed,
            "Usage report failed; retrying. Requests are still counted and kept."
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The reporter against a `LicenseSync` server on loopback that keeps the maximum per
    //! (epoch, bucket) as the control plane's contract says, and can be told to refuse.
    //! Plain HTTP/2: TLS and identity are the sync client's, tested with it; what is tested
    //! here is what gets reported, when, and what a refusal does.

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use licsync_common::proto::license_sync_server::{LicenseSync, LicenseSyncServer};
    use licsync_common::proto::{
        ControlPlaneMessage, DataPlaneMessage, RotateCertificateRequest, RotateCertificateResponse,
        UsageReceipt,
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
            let recorded = report
                .counts
                .iter()
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
            Ok(Response::new(UsageReceipt { recorded }))
        }
    }

    struct Setup {
        recorder: Recorder,
        counter: UsageCounter,
        publish: watch::Sender<Option<Channel>>,
        channel: Channel,
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
            Arc::new(clock),
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
        setup.counter.add(5);
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
        setup.counter.add(3);
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
        setup.counter.add(2);
        setup.counter.flush().await.unwrap();
        until("the wait to be explained", || {
            setup.counter.snapshot().report.last_error.is_some_and(|e| {
                e.contains("waiting for the connection") && e.contains("cannot reach")
            })
        })
        .await;
        setup.recorder.refusals.lock().unwrap().extend([
            Code::Unimplemented,
            Code::Unavailable,
            Code::PermissionDenied,
        ]);
        setup.publish.send_replace(Some(setup.channel.clone()));
        setup.counter.add(4);
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

    #[test]
    fn refusals_are_explained_in_operator_words() {
        let (_, channel) = watch::channel(None);
        let (_, sync_status) = watch::channel(SyncStatus::default());
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
    }
}
