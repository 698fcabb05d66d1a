//! Configuration reload on SIGHUP (`systemctl reload licsync-dp`).
//!
//! `log.level` applies at once. `license.trusted_keys`, when the file names keys before and
//! after, replaces the keys the agent verifies with; the stream reconnects so that licenses
//! refused under the old keys are offered again (the control plane resends what a `Hello`
//! does not list). `sync.servers` applies at once too: a stream to a server still listed is
//! kept, otherwise the agent reconnects to the new list (resending nothing it holds).
//! Everything else is bound at start (listeners, paths, the other sync and usage settings,
//! and a switch between configured keys and the registration file's): a reload that changes
//! it names those keys (`config.restart_needed`). A file that does not load changes nothing
//! (`config.reload_failed`).

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, DpConfig};
use crate::sync::{ConfiguredKeys, ConfiguredServers};

/// What a reload can change in the running sync client.
pub struct Handles {
    /// `None` once the client no longer takes new keys.
    pub keys: Option<ConfiguredKeys>,
    pub servers: ConfiguredServers,
}

/// Reads the configuration again at each SIGHUP, as `run` read it at start (`explicit` is its
/// `--config`), and sends it to [`run`].
pub async fn on_sighup(explicit: Option<PathBuf>, reloads: mpsc::Sender<DpConfig>) {
    let load = || {
        let path = licsync_common::config::locate(explicit.clone(), config::DEFAULT_FILE_NAME);
        DpConfig::load(path.as_deref())
    };
    licsync_common::reload::forward_sighup(load, reloads).await;
}

/// Applies each configuration from `reloads` until `shutdown`; `running` is the one the agent
/// started with.
pub async fn run(
    mut running: DpConfig,
    handles: Handles,
    reloads: mpsc::Receiver<DpConfig>,
    shutdown: CancellationToken,
) {
    licsync_common::reload::each(reloads, shutdown, |config| {
        apply(&running, &handles, &config);
        // What a reload applied is the new baseline; the rest keeps its start-up value.
        if replaceable_keys(&running, &config) {
            running.license.trusted_keys = config.license.trusted_keys;
        }
        running.sync.servers = config.sync.servers;
        running.log.level = config.log.level;
    })
    .await;
}

/// Configured keys before and after: a replacement the running agent can make.
fn replaceable_keys(running: &DpConfig, new: &DpConfig) -> bool {
    !running.license.trusted_keys.is_empty() && !new.license.trusted_keys.is_empty()
}

fn apply(running: &DpConfig, handles: &Handles, config: &DpConfig) {
    let keys_changed = match &handles.keys {
        Some(keys) if replaceable_keys(running, config) => keys.replace(config.trusted_keys()),
        _ => false,
    };
    let servers_changed = handles.servers.replace(config.sync.server_urls());
    let waiting = restart_only_changes(running, config);
    if !waiting.is_empty() {
        tracing::warn!(
            event = "config.restart_needed",
            keys = ?waiting,
            "These settings changed in the file but take effect only at the next restart."
        );
    }
    tracing::info!(
        event = "config.reloaded",
        trusted_keys = config.license.trusted_keys.len(),
        trusted_keys_changed = keys_changed,
        sync.servers = %config.sync.servers.join(","),
        servers_changed,
        log.level = %config.log.level,
        "Configuration reloaded{}{}.",
        if keys_changed { "; reconnecting to verify with the new license keys" } else { "" },
        if servers_changed { "; using the new sync.servers" } else { "" }
    );
    licsync_common::reload::apply_log_level(&config.log);
}

/// The settings of `new` that differ from the running ones and wait for a restart.
fn restart_only_changes(running: &DpConfig, new: &DpConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut push = |differs: bool, key: &'static str| {
        if differs {
            changed.push(key);
        }
    };
    push(running.data_dir != new.data_dir, "data_dir");
    push(
        running.registration_file != new.registration_file,
        "registration_file",
    );
    let (old, next) = (&running.license, &new.license);
    push(old.output_path != next.output_path, "license.output_path");
    push(
        old.reload_command != next.reload_command || old.reload_timeout != next.reload_timeout,
        "license.reload_command",
    );
    push(
        old.trusted_keys != next.trusted_keys && !replaceable_keys(running, new),
        "license.trusted_keys (between configured keys and the registration file's)",
    );
    push(
        old.follow_control_plane_keys != next.follow_control_plane_keys,
        "license.follow_control_plane_keys",
    );
    push(
        old.prefer_in_force != next.prefer_in_force,
        "license.prefer_in_force",
    );
    push(running.local != new.local, "local");
    // `sync.servers` applies at once; the rest of the table waits.
    let same_servers = |sync: &crate::config::SyncConfig| crate::config::SyncConfig {
        servers: Vec::new(),
        ..sync.clone()
    };
    push(
        same_servers(&running.sync) != same_servers(&new.sync),
        "sync",
    );
    push(running.usage != new.usage, "usage");
    push(running.log.format != new.log.format, "log.format");
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const KEY_B: &str = "tPo1c5kZkQ2MIhBXXkBlBtApkhe3p8ctldL2i/0mywY=";

    #[test]
    fn configured_keys_and_level_apply_the_rest_waits() {
        let mut running = DpConfig::default();
        running.license.trusted_keys = vec![KEY_A.into()];
        let mut new = running.clone();
        new.license.trusted_keys = vec![KEY_A.into(), KEY_B.into()];
        new.log.level = "debug".into();
        assert!(replaceable_keys(&running, &new));
        assert!(restart_only_changes(&running, &new).is_empty());

        new.sync.servers = vec!["https://cp2:8005".into()];
        assert!(restart_only_changes(&running, &new).is_empty());

        new.license.prefer_in_force = !running.license.prefer_in_force;
        new.local.max_connections += 1;
        assert_eq!(
            restart_only_changes(&running, &new),
            ["license.prefer_in_force", "local"]
        );
    }

    #[test]
    fn switching_between_configured_and_registration_keys_waits_for_a_restart() {
        let running = DpConfig::default();
        let mut new = running.clone();
        new.license.trusted_keys = vec![KEY_A.into()];
        assert!(!replaceable_keys(&running, &new));
        assert_eq!(
            restart_only_changes(&running, &new),
            ["license.trusted_keys (between configured keys and the registration file's)"]
        );
    }
}
