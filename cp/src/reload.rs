//! Configuration reload on SIGHUP (`systemctl reload licsync-cp`), without a restart that would
//! drop every data plane's stream.
//!
//! Two things change at once: `licenses.trusted_keys` (a new signing key trusted, or an old one
//! withdrawn, during a key rotation; data planes that follow the control plane's keys get the
//! new list with their next update) and `log.level` (debug logs for a moment). The file is read
//! and checked exactly as at start (`licsync-cp config check`); a bad file changes nothing and
//! says why (`config.reload_failed`). Everything else is bound at start (listeners, storage,
//! PKI, limits): a reload that changes it says which keys wait for a restart
//! (`config.restart_needed`) rather than pretending they took effect.

use std::path::PathBuf;
use std::sync::Arc;

use licsync_common::license::TrustedKeys;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::CpConfig;
use crate::state::ControlPlane;

/// Reads the configuration again at each SIGHUP, as `serve` read it at start (`explicit` is
/// its `--config`), and sends it to [`run`].
pub async fn on_sighup(explicit: Option<PathBuf>, reloads: mpsc::Sender<CpConfig>) {
    let load = || crate::cli::load_config(explicit.clone()).map(|(config, _)| config);
    licsync_common::reload::forward_sighup(load, reloads).await;
}

/// Applies each configuration from `reloads` until `shutdown`.
pub async fn run(
    cp: Arc<ControlPlane>,
    reloads: mpsc::Receiver<CpConfig>,
    shutdown: CancellationToken,
) {
    licsync_common::reload::each(reloads, shutdown, |config| apply(&cp, &config)).await;
}

/// Applies what can change while running and names what cannot. The outcome is logged before
/// the new level applies, so a reload to `warn` still says that it happened.
fn apply(cp: &ControlPlane, config: &CpConfig) {
    let keys = match TrustedKeys::parse(&config.licenses.trusted_keys) {
        Ok(keys) => keys,
        Err(bad) => {
            tracing::error!(event = "config.reload_failed", reason = %bad, "Configuration not reloaded.");
            return;
        }
    };
    let key_count = keys.to_base64().len();
    let keys_changed = cp.licenses().set_trusted_keys(keys);
    if key_count == 0 {
        tracing::warn!(
            event = "licenses.no_trusted_keys",
            "licenses.trusted_keys is empty: every license will be refused until a signing key is trusted."
        );
    }
    let waiting = restart_only_changes(cp.config(), config);
    if !waiting.is_empty() {
        tracing::warn!(
            event = "config.restart_needed",
            keys = ?waiting,
            "These settings changed in the file but take effect only at the next restart."
        );
    }
    tracing::info!(
        event = "config.reloaded",
        trusted_keys = key_count,
        trusted_keys_changed = keys_changed,
        log.level = %config.log.level,
        "Configuration reloaded."
    );
    licsync_common::reload::apply_log_level(&config.log);
}

/// The sections of `new` that differ from what the process started with, other than the ones
/// a reload applies.
fn restart_only_changes(running: &CpConfig, new: &CpConfig) -> Vec<&'static str> {
    let mut new = new.clone();
    // The running copy carries the port actually bound when the file says 0.
    if new.cluster.listen.port() == 0 {
        new.cluster.listen.set_port(running.cluster.listen.port());
    }
    let mut changed = Vec::new();
    if running.data_dir != new.data_dir {
        changed.push("data_dir");
    }
    if running.admin != new.admin {
        changed.push("admin");
    }
    if running.cluster != new.cluster {
        changed.push("cluster");
    }
    if running.pki != new.pki {
        changed.push("pki");
    }
    if running.storage != new.storage {
        changed.push("storage");
    }
    if running.status != new.status {
        changed.push("status");
    }
    if running.licenses.enforce_dataplane_limit != new.licenses.enforce_dataplane_limit {
        changed.push("licenses.enforce_dataplane_limit");
    }
    if running.log.format != new.log.format {
        changed.push("log.format");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_bound_at_start_are_named() {
        let running = CpConfig::default();
        let mut new = running.clone();
        new.licenses.trusted_keys = vec!["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into()];
        new.log.level = "debug".into();
        assert!(restart_only_changes(&running, &new).is_empty());
        new.admin.max_connections += 1;
        new.licenses.enforce_dataplane_limit = !running.licenses.enforce_dataplane_limit;
        new.status.listen.set_port(9100);
        assert_eq!(
            restart_only_changes(&running, &new),
            ["admin", "status", "licenses.enforce_dataplane_limit"]
        );
    }

    #[test]
    fn a_listen_port_of_zero_means_the_port_bound_at_start() {
        let mut running = CpConfig::default();
        running.cluster.listen.set_port(40_000);
        let mut new = running.clone();
        new.cluster.listen.set_port(0);
        assert!(restart_only_changes(&running, &new).is_empty());
    }
}
