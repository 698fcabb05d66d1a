//! The whole data-plane agent (`licsync_dp::agent::run_with_clock`) in-process, on a loopback
//! local API, with its files in a directory of the test's: what `licsync-dp run` does, minus
//! the process. The one in-process agent every dp test uses.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_dp::clock::SharedClock;
use licsync_dp::config::{DpConfig, SyncConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::GUARD;
use super::usage_agent::LocalApi;

/// An agent configuration for tests: state and license file under `dir`, the registration
/// file at `registration_file`, quick reconnects and a registration check every 100 ms.
pub fn config(dir: &Path, registration_file: &Path) -> DpConfig {
    let mut config = DpConfig {
        data_dir: dir.join("data"),
        registration_file: registration_file.to_owned(),
        sync: SyncConfig {
            backoff_initial: HumanDuration(Duration::from_millis(20)),
            backoff_max: HumanDuration(Duration::from_millis(200)),
            registration_check_interval: HumanDuration(Duration::from_millis(100)),
            ..SyncConfig::default()
        },
        ..DpConfig::default()
    };
    config.license.output_path = Some(dir.join("license.json"));
    config
}

/// A running agent.
pub struct Agent {
    /// Its local API.
    pub api: LocalApi,
    /// Where the local API listens.
    pub local: SocketAddr,
    pub license_path: PathBuf,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    /// Starts the agent and waits until its local API answers.
    pub async fn start(config: DpConfig) -> Self {
        Self::start_with_clock(config, licsync_dp::clock::system()).await
    }

    /// An agent whose calendar (usage months, license expiry) is `clock`.
    pub async fn start_with_clock(config: DpConfig, clock: SharedClock) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let api = LocalApi::new(format!("http://{local}"));
        let license_path = config.output_path();
        let stop = CancellationToken::new();
        let task = tokio::spawn(licsync_dp::agent::run_with_clock(
            config,
            listener,
            stop.clone().cancelled_owned(),
            clock,
        ));
        api.wait_until_up().await;
        Self {
            api,
            local,
            license_path,
            stop,
            task,
        }
    }

    /// Stops the agent and fails the test if it ended with an error or panicked.
    pub async fn stop(self) {
        self.stop.cancel();
        match tokio::time::timeout(GUARD, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the agent stopped with an error: {error:#}"),
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the agent task failed: {e}"),
            Err(_) => panic!("the agent did not stop within {GUARD:?}"),
        }
    }
}

/// Inode and modification time of `path`: an atomic rewrite changes both.
pub fn file_identity(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}
