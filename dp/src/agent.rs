//! Wiring: from a configuration, a bound local listener and a shutdown future to a running
//! agent, and back to a clean stop.
//!
//! Order matters: the local API answers (`/health/ready` says 503) while the saved state is
//! loaded and the license file brought in line with it; only then does the sync client
//! connect. A restarted agent therefore serves its last license even when the control plane
//! is down. The usage counters are opened (or their epoch created) before anything can count,
//! and on shutdown they are flushed once more after the local API and the statsd listener
//! have stopped, so a clean stop loses no request.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use licsync_common::fsutil;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::{self, SharedClock};
use crate::config::DpConfig;
use crate::license_expiry;
use crate::local_api::{self, LocalApi};
use crate::output::LicenseFile;
use crate::registration::RegistrationFile;
use crate::state::{ActiveRule, FileStateStore};
use crate::sync::{Backoff, RegistrationWatch, SyncClient, SyncSettings};
use crate::usage::http::UsageApi;
use crate::usage::reporter::Reporter;
use crate::usage::statsd::StatsdListener;
use crate::usage::statsd::pattern::MetricFilter;
use crate::usage::{self, UsageCounter, UsageStore};

/// Runs the agent until `shutdown` completes, then stops the sync stream and the local API
/// and flushes the usage counters.
pub async fn run(
    config: DpConfig,
    local: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, local, shutdown, clock::system()).await
}

/// [`run`] with the calendar time taken from `clock` (usage months, license expiry).
pub async fn run_with_clock(
    config: DpConfig,
    local: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: SharedClock,
) -> anyhow::Result<()> {
    run_inner(config, local, shutdown, clock, None).await
}

/// [`run`], applying each configuration received on `reloads` ([`crate::reload`]: the log
/// level and configured license keys; `licsync-dp run` sends one per SIGHUP).
pub async fn run_reloadable(
    config: DpConfig,
    local: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: tokio::sync::mpsc::Receiver<DpConfig>,
) -> anyhow::Result<()> {
    run_inner(config, local, shutdown, clock::system(), Some(reloads)).await
}

async fn run_inner(
    config: DpConfig,
    local: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: SharedClock,
    reloads: Option<tokio::sync::mpsc::Receiver<DpConfig>>,
) -> anyhow::Result<()> {
    let registration = RegistrationFile::load(&config.registration_file)?;
    fsutil::ensure_private_dir(&config.data_dir).with_context(|| {
        format!(
            "cannot create data_dir {}; create it or point data_dir elsewhere",
            config.data_dir.display()
        )
    })?;
    let mut settings = SyncSettings::new(&registration, &config.sync, config.trusted_keys())
        .with_context(|| format!("registration file {}", config.registration_file.display()))?;
    settings.follow_control_plane_keys =
        config.license.follow_control_plane_keys && config.license.trusted_keys.is_empty();
    settings.active_rule = ActiveRule {
        prefer_in_force: config.license.prefer_in_force,
    };
    let active_rule = settings.active_rule;
    let cluster_url = settings.cluster_url.clone();
    let output = LicenseFile::new(
        config.output_path(),
        &config.license.reload_command,
        config.license.reload_timeout.0,
    );
    let reload_runs = output.reloads();
    let store = Arc::new(FileStateStore::new(config.state_path()));
    let mut client = SyncClient::new(settings, store, Some(output))
        .with_context(|| format!("registration file {}", config.registration_file.display()))?
        .with_servers(config.sync.server_urls())
        .watch_registration(RegistrationWatch {
            path: config.registration_file.clone(),
            check_interval: config.sync.registration_check_interval.0,
            rotate: config.sync.rotate_certificate,
            keys_from_file: config.license.trusted_keys.is_empty(),
        });

    let (counter, created) =
        UsageCounter::open(UsageStore::new(config.usage_path()), clock.clone()).await?;
    if created {
        tracing::info!(
            event = "usage.epoch_created",
            epoch = %counter.epoch(),
            path = %config.usage_path().display(),
            "Counting requests under a new usage epoch."
        );
    }
    let statsd = match config.usage.statsd_listen {
        None => None,
        Some(addr) => {
            // Validated with the configuration.
            let filter =
                MetricFilter::parse(&config.usage.statsd_patterns, &config.usage.statsd_exclude)?;
            Some(
                StatsdListener::bind(addr, filter, counter.clone())
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen for statsd on usage.statsd_listen {addr}; choose another address or leave the key out"
                        )
                    })?,
            )
        }
    };

    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    if let Some(reloads) = reloads {
        tokio::spawn(
            crate::reload::run(
                config.clone(),
                crate::reload::Handles {
                    keys: client.configured_keys(),
                    servers: client.configured_servers(),
                },
                reloads,
                token.clone(),
            )
            .instrument(tracing::info_span!("config_reload")),
        );
    }

    let local_addr = local
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string());
    let api = LocalApi {
        license_path: config.output_path(),
        status: client.status(),
        licenses: client.licenses(),
        active_rule,
        usage: UsageApi {
            counter: counter.clone(),
            statsd: statsd.as_ref().map(StatsdListener::handle),
            flush_interval: config.usage.flush_interval.0,
            report_interval: config.usage.report_interval.0,
        },
        reloads: reload_runs,
    };
    let mut api_task = tokio::spawn(
        local_api::serve(
            local,
            api,
            local_api::http_limits(&config.local),
            token.clone(),
        )
        .instrument(tracing::info_span!("local_api")),
    );
    let statsd_task = statsd.map(|listener| {
        tokio::spawn(
            listener
                .run(token.clone())
                .instrument(tracing::info_span!("statsd")),
        )
    });
    tracing::info!(
        event = "dp.started",
        dataplane.id = %registration.dataplane_id,
        cluster.url = %registration.cluster_url,
        sync.servers = %config.sync.servers.join(","),
        local.addr = %local_addr,
        usage.epoch = %counter.epoch(),
        version = licsync_common::VERSION,
        "licsync-dp starting."
    );

    if let Err(error) = client.load().await {
        token.cancel();
        let _ = api_task.await;
        finish_usage(&counter, statsd_task, Vec::new()).await?;
        return Err(error.into());
    }
    licsync_common::sd_notify::ready(&format!("started; local API {local_addr}"));
    let background = vec![
        tokio::spawn(
            usage::run_flusher(
                counter.clone(),
                config.usage.flush_interval.0,
                token.clone(),
            )
            .instrument(tracing::info_span!("usage_flush")),
        ),
        tokio::spawn(
            Reporter {
                counter: counter.clone(),
                channel: client.cluster_channel(),
                sync_status: client.status(),
                cluster_url,
                report_interval: config.usage.report_interval.0,
                backoff: Backoff::new(config.sync.backoff_initial.0, config.sync.backoff_max.0),
            }
            .run(token.clone())
            .instrument(tracing::info_span!("usage_report")),
        ),
        tokio::spawn(
            license_expiry::run(client.licenses(), active_rule, clock, token.clone())
                .instrument(tracing::info_span!("license_expiry")),
        ),
    ];
    let mut sync_task = tokio::spawn(client.run(token.clone()));

    let result = tokio::select! {
        api = &mut api_task => {
            token.cancel();
            let _ = (&mut sync_task).await;
            match api {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the local API stopped")),
                Err(e) => Err(anyhow::Error::new(e).context("the local API task failed")),
            }
        }
        sync = &mut sync_task => {
            token.cancel();
            let _ = (&mut api_task).await;
            match sync {
                Ok(result) => result.map_err(Into::into),
                Err(e) => Err(anyhow::Error::new(e).context("the sync task failed")),
            }
        }
    };
    let flushed = finish_usage(&counter, statsd_task, background).await;
    tracing::info!(event = "dp.stopped", "licsync-dp stopped.");
    result.and(flushed)
}

/// Once nothing counts any more (local API and statsd listener stopped), writes what is left
/// and waits for the usage tasks. A failure here loses counts, so it fails the run.
async fn finish_usage(
    counter: &UsageCounter,
    statsd: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    if let Some(task) = statsd {
        let _ = task.await;
    }
    let flushed = counter.flush().await;
    for task in background {
        let _ = task.await;
    }
    match flushed {
        Ok(written) => {
            tracing::info!(
                event = "usage.flushed",
                written,
                epoch = %counter.epoch(),
                "Usage counters saved."
            );
            Ok(())
        }
        Err(error) => {
            let lost = counter.snapshot().unflushed;
            tracing::error!(event = "usage.flush_failed", %error, lost, "The last usage counts could not be saved.");
            Err(anyhow::Error::new(error)
                .context(format!("{lost} counted requests were not saved")))
        }
    }
}
