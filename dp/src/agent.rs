//! Wiring: from a configuration, a bound local listener and a shutdown future to a running
//! agent, and back to a clean stop.
//!
//! Order matters: the local API answers (`/health/ready` says 503) while the saved state is
//! loaded and the license file brought in line with it; only then does the sync client
//! connect. A restarted agent therefore serves its last license even when the control plane
//! is down.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use licsync_common::fsutil;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::DpConfig;
use crate::local_api::{self, LocalApi};
use crate::output::LicenseFile;
use crate::registration::RegistrationFile;
use crate::state::FileStateStore;
use crate::sync::{RegistrationWatch, SyncClient, SyncSettings};

/// Runs the agent until `shutdown` completes, then stops the sync stream and the local API.
pub async fn run(
    config: DpConfig,
    local: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let output = LicenseFile::new(
        config.output_path(),
        &config.license.reload_command,
        config.license.reload_timeout.0,
    );
    let store = Arc::new(FileStateStore::new(config.state_path()));
    let mut client = SyncClient::new(settings, store, Some(output))
        .with_context(|| format!("registration file {}", config.registration_file.display()))?
        .watch_registration(RegistrationWatch {
            path: config.registration_file.clone(),
            check_interval: config.sync.registration_check_interval.0,
            rotate: config.sync.rotate_certificate,
            keys_from_file: config.license.trusted_keys.is_empty(),
        });

    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });

    let local_addr = local
        .local_addr()
        .map_or_else(|_| "unknown".to_owned(), |addr| addr.to_string());
    let api = LocalApi {
        license_path: config.output_path(),
        status: client.status(),
        licenses: client.licenses(),
    };
    let mut api_task = tokio::spawn(
        local_api::serve(local, api, token.clone().cancelled_owned())
            .instrument(tracing::info_span!("local_api")),
    );
    tracing::info!(
        event = "dp.started",
        dataplane.id = %registration.dataplane_id,
        cluster.url = %registration.cluster_url,
        local.addr = %local_addr,
        version = licsync_common::VERSION,
        "licsync-dp starting."
    );

    if let Err(error) = client.load().await {
        token.cancel();
        let _ = api_task.await;
        return Err(error.into());
    }
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
    tracing::info!("licsync-dp stopped.");
    result
}
