//! One `Sync` stream, from connecting to its end: `Hello` with what is held, then updates
//! answered with `Ack`/`Nack` and heartbeats, until the stream fails or shutdown is signalled.
//!
//! When the control plane ends the stream or refuses it, its status carries why
//! ([`EndReason`], the `licsync-end-reason` trailer); the failure keeps it as `cause`, so the
//! client can act on it (a revoked data plane stops retrying every second) and the log says
//! which it was. Each heartbeat the control plane answers is published as `last_heartbeat`.

use std::sync::Arc;
use std::time::Duration;

use licsync_common::proto::license_sync_client::LicenseSyncClient;
use licsync_common::proto::{
    ControlPlaneMessage, DataPlaneMessage, Heartbeat, HeldLicense, Hello, control_plane_message,
    data_plane_message,
};
use licsync_common::stream_end::EndReason;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::servers::{self, Target};
use super::{Applier, Backoff, Identity, SyncSettings, lifecycle};
use crate::cluster::{self, ClusterUrl, Diagnosis, FailureKind};
use crate::state::DpState;

/// Largest update accepted from the control plane.
const MAX_UPDATE_BYTES: usize = 256 * 1024 * 1024;

/// How long the control plane's last word (the status that says why it ended the stream) is
/// waited for after an answer could not be sent.
const NACK_GRACE: Duration = Duration::from_secs(1);

/// Why a stream ended other than by shutdown.
#[derive(Debug, Clone)]
pub(super) struct SessionFailure {
    /// The stream had been established (so this is a disconnection, not a failed attempt).
    pub connected: bool,
    /// The control plane had sent something on the stream (an update, a heartbeat answer): it
    /// worked, rather than ending as soon as it began.
    pub heard: bool,
    pub diagnosis: Diagnosis,
    /// Why the control plane ended or refused the stream, when it said.
    pub cause: Option<EndReason>,
}

impl SessionFailure {
    pub(super) fn log(&self, server: &Target) {
        let reason = &self.diagnosis.message;
        let cause = self.cause.map(EndReason::as_str);
        match self.cause {
            Some(EndReason::Replaced) => {
                return tracing::warn!(
                    event = "sync.replaced",
                    %server,
                    %reason,
                    cause,
                    "The control plane ended this stream for a newer one of the same data plane; reconnecting. If this repeats, another agent with the same registration file is running: stop it or register it separately."
                );
            }
            Some(EndReason::Shutdown) => {
                return tracing::info!(
                    event = "dataplane.disconnected",
                    %server,
                    %reason,
                    cause,
                    "The control plane is shutting down; reconnecting with backoff."
                );
            }
            Some(EndReason::AckTimeout) => {
                return tracing::warn!(
                    event = "dataplane.disconnected",
                    %server,
                    %reason,
                    cause,
                    "The control plane ended the stream; reconnecting."
                );
            }
            _ => {}
        }
        match (self.diagnosis.kind, self.connected) {
            (FailureKind::CertificateRefused | FailureKind::ServerUntrusted, _) => {
                tracing::error!(event = "sync.refused", %server, %reason, cause, "Cannot sync with the control plane.")
            }
            (_, true) => tracing::warn!(
                event = "dataplane.disconnected",
                %server,
                %reason,
                "Disconnected from the control plane; reconnecting."
            ),
            (_, false) => tracing::warn!(
                event = "sync.connect_failed",
                %server,
                %reason,
                "Cannot connect to the control plane; retrying."
            ),
        }
    }
}

/// Why a stream ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionEnd {
    Shutdown,
    /// A rotated or reloaded certificate is to be used: reconnect with it at once.
    IdentityChanged,
    /// `sync.servers` was reloaded without the server in use: connect to one listed at once.
    ServersChanged,
}

pub(super) struct Session<'a> {
    pub settings: &'a SyncSettings,
    /// Where `endpoint` leads, for messages.
    pub target: &'a Target,
    pub endpoint: &'a Endpoint,
    pub applier: &'a Applier,
    pub backoff: &'a mut Backoff,
    /// Ends the stream when it changes.
    pub identity: &'a mut watch::Receiver<Arc<Identity>>,
    /// `sync.servers`; ends the stream when the server in use is no longer listed.
    pub servers: &'a mut watch::Receiver<Arc<[ClusterUrl]>>,
    /// Where the connection is published for usage reports.
    pub channel: &'a watch::Sender<Option<Channel>>,
}

impl Session<'_> {
    pub(super) async fn run(
        self,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SessionFailure> {
        let target = self.target;
        let url = &target.url;
        let registration_url = self.identity.borrow().cluster_url.clone();
        let not_connected = |(diagnosis, cause)| SessionFailure {
            connected: false,
            heard: false,
            diagnosis,
            cause,
        };
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            () = lifecycle::changed(self.identity) => return Ok(SessionEnd::IdentityChanged),
            () = servers::dropped(self.servers, url, &registration_url) => return Ok(SessionEnd::ServersChanged),
            result = self.endpoint.connect() => {
                result.map_err(|e| not_connected((cluster::diagnose(&e, url), None)))?
            }
        };
        self.channel.send_replace(Some(channel.clone()));
        let held = self.applier.state.borrow().clone();
        let (tx, rx) = mpsc::channel::<DataPlaneMessage>(16);
        // Cannot fail: the receiver is alive and the channel empty.
        let _ = tx.send(hello(&held, self.settings)).await;
        // The first update carries every license (each up to 64 KiB): allow far more than
        // tonic's 4 MiB default so a large set can never wedge a data plane in a retry loop.
        let mut client =
            LicenseSyncClient::new(channel).max_decoding_message_size(MAX_UPDATE_BYTES);
        let response = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            () = lifecycle::changed(self.identity) => return Ok(SessionEnd::IdentityChanged),
            () = servers::dropped(self.servers, url, &registration_url) => return Ok(SessionEnd::ServersChanged),
            result = client.sync(ReceiverStream::new(rx)) => {
                result.map_err(|status| not_connected(from_status(&status, url)))?
            }
        };
        let mut inbound = response.into_inner();
        self.applier.status.send_modify(|status| {
            status.connected = true;
            status.last_error = None;
            status.revoked = false;
        });
        tracing::info!(
            event = "dataplane.connected",
            server = %target,
            held = held.licenses.len(),
            revision = held.revision,
            "Connected to the control plane."
        );
        let mut heard = false;
        let disconnected = |heard: bool, (diagnosis, cause)| SessionFailure {
            connected: true,
            heard,
            diagnosis,
            cause,
        };
        let every = self.settings.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!(
                        event = "dataplane.disconnected",
                        reason = "shutting down",
                        "Disconnected from the control plane."
                    );
                    return Ok(SessionEnd::Shutdown);
                }
                () = lifecycle::changed(self.identity) => {
                    tracing::info!(
                        event = "dataplane.disconnected",
                        reason = "new certificate",
                        "Disconnecting to reconnect with the new certificate."
                    );
                    return Ok(SessionEnd::IdentityChanged);
                }
                () = servers::dropped(self.servers, url, &registration_url) => {
                    tracing::info!(
                        event = "dataplane.disconnected",
                        server = %target,
                        reason = "no longer in sync.servers",
                        "Disconnecting: sync.servers no longer lists this server."
                    );
                    return Ok(SessionEnd::ServersChanged);
                }
                _ = heartbeat.tick() => {
                    if let Err(diagnosis) = send(&tx, heartbeat_message(), url) {
                        return Err(disconnected(heard, why_closed(&mut inbound, diagnosis, url).await));
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(ControlPlaneMessage {
                        message: Some(control_plane_message::Message::Update(update)),
                    })) => {
                        heard = true;
                        // Ack, Nack, or (when the agent itself failed) a Nack asking for the
                        // update again later: in every case the stream stays up.
                        let reply = self.applier.handle(&update).await;
                        if let Err(diagnosis) = send(&tx, reply, url) {
                            // The control plane may have ended the stream while the update
                            // was applied (an unanswered update): say what it said.
                            return Err(disconnected(
                                heard,
                                why_closed(&mut inbound, diagnosis, url).await,
                            ));
                        }
                        self.backoff.reset();
                    }
                    Ok(Some(ControlPlaneMessage {
                        message: Some(control_plane_message::Message::Heartbeat(_)),
                    })) => {
                        tracing::trace!("Heartbeat from the control plane.");
                        heard = true;
                        let now = OffsetDateTime::now_utc().unix_timestamp();
                        self.applier.status.send_modify(|s| s.last_heartbeat = Some(now));
                    }
                    Ok(Some(ControlPlaneMessage { message: None })) => {
                        tracing::debug!("Ignoring an empty or unknown message from the control plane.");
                    }
                    Ok(None) => {
                        return Err(disconnected(heard, (Diagnosis {
                            kind: FailureKind::Unreachable,
                            message: format!("the control plane at {url} closed the stream"),
                        }, None)));
                    }
                    Err(status) => return Err(disconnected(heard, from_status(&status, url))),
                },
            }
        }
    }
}

fn hello(state: &DpState, settings: &SyncSettings) -> DataPlaneMessage {
    DataPlaneMessage {
        message: Some(data_plane_message::Message::Hello(Hello {
            version: settings.version.clone(),
            hostname: settings.hostname.clone(),
            held: state
                .licenses
                .iter()
                .map(|license| HeldLicense {
                    id: license.id.clone(),
                    revision: license.revision,
                    digest: licsync_common::pki::sha256_hex(license.document.as_bytes()),
                })
                .collect(),
            revision: state.revision,
        })),
    }
}

fn heartbeat_message() -> DataPlaneMessage {
    let now = OffsetDateTime::now_utc();
    let sent_at_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    DataPlaneMessage {
        message: Some(data_plane_message::Message::Heartbeat(Heartbeat {
            sent_at_ms,
        })),
    }
}

/// Queues `message` on the request stream. The queue only fills when the control plane stops
/// reading, which HTTP/2 keepalive turns into a stream error soon after.
fn send(
    tx: &mpsc::Sender<DataPlaneMessage>,
    message: DataPlaneMessage,
    url: &ClusterUrl,
) -> Result<(), Diagnosis> {
    tx.try_send(message).map_err(|e| Diagnosis {
        kind: FailureKind::Unreachable,
        message: match e {
            mpsc::error::TrySendError::Full(_) => {
                format!("the control plane at {url} stopped reading the stream")
            }
            mpsc::error::TrySendError::Closed(_) => {
                format!("the stream to the control plane at {url} was closed")
            }
        },
    })
}

/// Why a stream that no longer takes messages ended: the control plane's final status when it
/// sent one (read for at most [`NACK_GRACE`]), else `diagnosis`.
async fn why_closed(
    inbound: &mut tonic::Streaming<ControlPlaneMessage>,
    diagnosis: Diagnosis,
    url: &ClusterUrl,
) -> (Diagnosis, Option<EndReason>) {
    let last_word = async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    };
    match tokio::time::timeout(NACK_GRACE, last_word).await {
        Ok(Some(status)) => from_status(&status, url),
        _ => (diagnosis, None),
    }
}

/// A status from the `Sync` call or stream in operator words, and the reason it carries.
fn from_status(status: &tonic::Status, url: &ClusterUrl) -> (Diagnosis, Option<EndReason>) {
    let cause = EndReason::of(status);
    let said = status.message();
    let diagnosis = match cause {
        Some(EndReason::Revoked) => Diagnosis {
            kind: FailureKind::CertificateRefused,
            message: format!(
                "the control plane at {url} revoked this data plane ({said}); register it again with a new registration token"
            ),
        },
        Some(EndReason::Replaced) => Diagnosis {
            kind: FailureKind::Other,
            message: format!(
                "the control plane at {url} ended the stream: {said}; another agent with the same identity may be running"
            ),
        },
        Some(EndReason::AckTimeout | EndReason::Shutdown) => Diagnosis {
            kind: FailureKind::Unreachable,
            message: format!("the control plane at {url} ended the stream: {said}"),
        },
        _ => refusal(status, url),
    };
    (diagnosis, cause)
}

/// A status without a reason this agent acts on, in operator words.
fn refusal(status: &tonic::Status, url: &ClusterUrl) -> Diagnosis {
    use std::error::Error;
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => Diagnosis {
            kind: FailureKind::CertificateRefused,
            message: format!(
                "the control plane at {url} refused this data plane: {}; check it with `licsync-dp registration inspect`, then renew or register again",
                status.message()
            ),
        },
        Code::Unimplemented => Diagnosis {
            kind: FailureKind::Other,
            message: format!(
                "the server at {url} does not offer license sync; is cluster_url the control plane's cluster listener?"
            ),
        },
        code => {
            let diagnosis = cluster::diagnose(status, url);
            if status.source().is_some() || diagnosis.kind != FailureKind::Other {
                return diagnosis;
            }
            Diagnosis {
                kind: FailureKind::Other,
                message: format!(
                    "the control plane at {url} ended the stream ({code:?}): {}",
                    status.message()
                ),
            }
        }
    }
}
