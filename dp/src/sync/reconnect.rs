//! The sync client's reconnect loop: rounds over the control-plane servers ([`servers`]), one
//! [`session`] per attempt, and the backoff between rounds.
//!
//! An attempt that fails before its stream is up moves on to the next server at once; only a
//! round in which every server failed waits for the backoff delay (exponential, full jitter).
//! A stream that was up and then ended waits one delay too (the jitter spreads a fleet whose
//! node went away over the other nodes), then starts again at the same server (sticky), or at
//! the next one when that node said it is shutting down or the stream ended before it did
//! anything. With one server (no `sync.servers`, a name with one address) this is exactly the
//! loop the agent always had: one attempt, then the delay.
//!
//! Nothing is resent on failover: each new stream's `Hello` lists what the agent holds and the
//! revision it reached, and every node of a cluster reads the same licenses, so a node sends
//! only what the agent lacks.

use std::time::Duration;

use licsync_common::stream_end::EndReason;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::servers::{self, Rotation, Target};
use super::session::{self, SessionEnd, SessionFailure};
use super::{Backoff, Identity, SyncClient, backoff, lifecycle};
use crate::cluster;

/// What ended an attempt, for the loop.
enum Next {
    /// Try the next server of this round now.
    Failover,
    /// Wait this long, then begin a new round.
    Wait(Duration),
    /// Begin a new round now (a new certificate, new servers).
    Now,
    Stop,
}

impl SyncClient {
    pub(super) async fn keep_in_sync(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut identity_rx = self.identity.clone();
        let mut servers_rx = self.servers.subscribe();
        let mut rotation = Rotation::default();
        // With an expired certificate, the control plane's refusal is logged once (it says in
        // its own words why); the expiry schedule repeats the rest once a minute.
        let mut expired_refusal_logged: Option<String> = None;
        'rounds: while !shutdown.is_cancelled() {
            let configured = servers_rx.borrow_and_update().clone();
            let registration_url = identity_rx.borrow().cluster_url.clone();
            let urls = servers::urls(&configured, &registration_url);
            let lookup =
                servers::resolve(&urls, &self.lookup, self.settings.connect.connect_timeout);
            let targets = tokio::select! {
                () = shutdown.cancelled() => break,
                targets = lookup => targets,
            };
            rotation.begin_round(targets);
            let delay = loop {
                let Some(target) = rotation.current().cloned() else {
                    // Never: a round has at least the registration file's URL.
                    break backoff.next_delay();
                };
                let identity = identity_rx.borrow_and_update().clone();
                if let Some(keys) = &identity.trusted_keys {
                    self.applier.keys = keys.clone();
                }
                self.server.send_replace(Some(target.clone()));
                self.applier
                    .status
                    .send_modify(|s| s.cluster_url = target.url.to_string());
                let outcome = match identity.endpoint_to(&target, self.settings.connect) {
                    Ok(endpoint) => {
                        session::Session {
                            settings: &self.settings,
                            target: &target,
                            endpoint: &endpoint,
                            applier: &self.applier,
                            backoff: &mut backoff,
                            identity: &mut identity_rx,
                            servers: &mut servers_rx,
                            channel: &self.channel,
                        }
                        .run(&shutdown)
                        .await
                    }
                    Err(error) => Err(SessionFailure {
                        connected: false,
                        heard: false,
                        diagnosis: cluster::Diagnosis {
                            kind: cluster::FailureKind::Other,
                            message: error.to_string(),
                        },
                        cause: None,
                    }),
                };
                self.channel.send_replace(None);
                self.applier.status.send_modify(|s| {
                    s.connected = false;
                    s.last_heartbeat = None;
                });
                let next = match outcome {
                    Ok(SessionEnd::Shutdown) => Next::Stop,
                    Ok(SessionEnd::IdentityChanged | SessionEnd::ServersChanged) => {
                        backoff.reset();
                        rotation.stay();
                        Next::Now
                    }
                    Err(failure) => self.failed(
                        &failure,
                        &identity,
                        &target,
                        &mut rotation,
                        &mut backoff,
                        &mut expired_refusal_logged,
                    ),
                };
                match next {
                    Next::Stop => break 'rounds,
                    Next::Now => continue 'rounds,
                    Next::Failover => continue,
                    Next::Wait(delay) => break delay,
                }
            };
            tracing::debug!(?delay, "Reconnecting after a delay.");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
                () = lifecycle::changed(&mut identity_rx) => backoff.reset(),
                () = changed(&mut servers_rx) => backoff.reset(),
            }
        }
        tracing::info!(event = "sync.stopped", "Sync client stopped.");
    }

    /// Logs a failed attempt or an ended stream, publishes why, and decides what comes next.
    fn failed(
        &self,
        failure: &SessionFailure,
        identity: &Identity,
        target: &Target,
        rotation: &mut Rotation,
        backoff: &mut Backoff,
        expired_refusal_logged: &mut Option<String>,
    ) -> Next {
        if failure.cause.is_some_and(registration_required) {
            // Every node of the cluster knows the same data planes: none would accept it.
            rotation.stay();
            let message = self.report_registration_required(failure, identity);
            self.applier.status.send_modify(|s| {
                s.revoked = true;
                s.last_error = Some(message);
            });
            return Next::Wait(backoff::REFUSED_RETRY);
        }
        self.applier.status.send_modify(|s| {
            s.last_error = Some(failure.diagnosis.message.clone());
            s.revoked = false;
        });
        let expired = identity.cert.not_after <= OffsetDateTime::now_utc();
        if !failure.connected
            && let Some(next) = rotation.failed()
        {
            let (server, error) = (target, &failure.diagnosis.message);
            if expired {
                tracing::debug!(event = "sync.server_failed", %server, %error, %next, "Cannot sync with an expired certificate; trying the next server.");
            } else {
                tracing::warn!(
                    event = "sync.server_failed",
                    %server,
                    %error,
                    %next,
                    "Cannot sync with this control-plane server; trying the next one now."
                );
            }
            return Next::Failover;
        }
        if failure.connected {
            if failure.heard && failure.cause != Some(EndReason::Shutdown) {
                rotation.stay();
            } else {
                rotation.move_on();
            }
        }
        let first_refusal = failure.diagnosis.kind == cluster::FailureKind::CertificateRefused
            && expired_refusal_logged.as_ref() != Some(&identity.cert.serial);
        if !expired {
            failure.log(target);
        } else if first_refusal {
            failure.log(target);
            *expired_refusal_logged = Some(identity.cert.serial.clone());
        } else {
            tracing::debug!(reason = %failure.diagnosis.message, "Cannot sync with an expired certificate.");
        }
        Next::Wait(backoff.next_delay())
    }

    /// Logs, in words an operator can act on, that the control plane revoked this data plane
    /// (`sync.revoked`) or no longer knows it (`sync.refused`), with the command that registers
    /// it again; returns what `/status` shows as `last_error`.
    fn report_registration_required(
        &self,
        failure: &SessionFailure,
        identity: &Identity,
    ) -> String {
        let fingerprint =
            licsync_common::pki::first_certificate(&identity.ca_certificate_pem, "CA")
                .map(|der| licsync_common::pki::sha256_hex(&der))
                .unwrap_or_else(|_| "<ca_cert_sha256>".into());
        let file = self.registration.as_ref().map_or_else(
            || "the registration file".to_owned(),
            |watch| watch.path.display().to_string(),
        );
        let command = format!(
            "licsync-dp registration create --token <NEW_TOKEN> --server {} --ca-cert-hash sha256:{fingerprint} --output-directory <DIR>",
            identity.cluster_url
        );
        let retry_in_s = backoff::REFUSED_RETRY.as_secs();
        let reason = &failure.diagnosis.message;
        if failure.cause == Some(EndReason::Revoked) {
            tracing::error!(
                event = "sync.revoked",
                dataplane.id = %identity.dataplane_id,
                %reason,
                %command,
                registration_file = %file,
                retry_in_s,
                "This data plane was revoked at the control plane; it retries only every {} minutes. Get a new registration token (POST /registration-tokens), run the command, then move <DIR>/registration.yaml over the registration file: the agent picks it up without a restart.",
                retry_in_s / 60
            );
        } else {
            tracing::error!(
                event = "sync.refused",
                dataplane.id = %identity.dataplane_id,
                %reason,
                %command,
                registration_file = %file,
                retry_in_s,
                "The control plane does not know this data plane; it retries only every {} minutes. Register it again with the command and move <DIR>/registration.yaml over the registration file.",
                retry_in_s / 60
            );
        }
        format!("{reason}; run `{command}` and move <DIR>/registration.yaml over {file}")
    }
}

/// Whether `cause` means only a new registration can bring this data plane back.
fn registration_required(cause: EndReason) -> bool {
    matches!(cause, EndReason::Revoked | EndReason::NotRegistered)
}

/// Resolves when `sync.servers` is replaced; never, once nothing can replace it.
async fn changed<T>(rx: &mut tokio::sync::watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
