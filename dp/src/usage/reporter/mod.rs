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
//! The control plane may refuse single buckets of a report (a month outside its range, a count
//! above its bound) while storing the rest: the receipt names them. A refused bucket is logged
//! (`usage.bucket_refused`) and not sent again while the agent runs; the other buckets are
//! confirmed as usual.
//!
//! Reports travel on the connection of the sync stream: the sync client publishes its
//! current channel (`None` while disconnected) and the reporter uses whatever is there, so
//! whatever identity and TLS setup the sync client uses, reports use too.

use std::time::Duration;

use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{RefusedUsage, UsageCount, UsageReport};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use super::{LogThrottle, UsageCounter, UsageMonth};
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
    /// Names the control plane in messages until the sync client has chosen a server.
    pub cluster_url: ClusterUrl,
    pub report_interval: Duration,
    pub backoff: Backoff,
}

/// What the control plane answered to a report it accepted.
#[derive(Debug, Default)]
struct Receipt {
    /// What it holds per stored bucket.
    recorded: Vec<(UsageMonth, u64)>,
    /// The buckets it refused, and why.
    refused: Vec<RefusedUsage>,
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
                Ok(receipt) => {
                    self.confirmed(&counts, receipt);
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
        counts: &[(UsageMonth, u64)],
    ) -> Result<Receipt, Failure> {
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
                        self.server()
                    ),
                });
            }
        };
        Ok(Receipt {
            recorded: receipt
                .recorded
                .iter()
                .filter_map(|count| Some((count.bucket.parse().ok()?, count.request_count)))
                .collect(),
            refused: receipt.refused,
        })
    }

    fn confirmed(&self, sent: &[(UsageMonth, u64)], receipt: Receipt) {
        let check = self.counter.record_receipt(&receipt.recorded);
        for refused in receipt.refused {
            // Outside text: escaped and cut before it reaches the log.
            let reason = licsync_common::printable(&refused.reason, 400);
            let bucket = licsync_common::printable(&refused.bucket, 40);
            tracing::warn!(
                event = "usage.bucket_refused",
                epoch = %self.counter.epoch(),
                %bucket,
                request_count = refused.request_count,
                %reason,
                "The control plane refused one month of the usage report and stored the rest; this month is not sent again until the agent restarts."
            );
            if let Ok(month) = refused.bucket.parse::<UsageMonth>() {
                self.counter.record_refused(month, reason);
            }
        }
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

    /// The server reports go to: the sync client's current one (`sync.servers`), else
    /// `cluster_url`.
    fn server(&self) -> ClusterUrl {
        ClusterUrl::parse(&self.sync_status.borrow().cluster_url)
            .unwrap_or_else(|_| self.cluster_url.clone())
    }

    fn explain(&self, status: &tonic::Status) -> Failure {
        let url = &self.server();
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
mod tests;
