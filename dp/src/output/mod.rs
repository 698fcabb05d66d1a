//! The license file the gateway reads (`KONG_LICENSE_PATH`) and the command that makes it
//! reload.
//!
//! [`LicenseFile::bring_in_line`] makes the file hold exactly the active license's document,
//! or removes it when nothing is held. It is idempotent: the file is rewritten, and a reload
//! asked for, only when the content differs, so calling it after every update and at start-up
//! costs nothing when nothing changed. One caller writes at a time, so a retry can never put an
//! older license back over a newer one.
//!
//! The reload command ([`reload`]) runs in the background ([`reloader`]): the file is written
//! at once, and the reload for it runs as soon as the previous one (if any) has ended.

mod reload;
mod reloader;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use licsync_common::fsutil;
use tokio::sync::watch;

use crate::state::HeldLicense;

pub use reload::{ReloadCommand, ReloadOutcome};
pub use reloader::{ReloadState, Reloader};

/// What [`LicenseFile::bring_in_line`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChange {
    /// The file already held the right content (or was already absent).
    Unchanged,
    /// The file now holds this license.
    Applied { id: String },
    /// No license is held; the file was removed.
    Removed,
}

/// The license file could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "cannot write license file {path}: {source}; check that the directory exists and is writable by licsync-dp"
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove license file {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot read license file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// Where the active license goes, and what runs after it changed. Clones share the writer
/// and the reloads.
#[derive(Debug, Clone)]
pub struct LicenseFile {
    path: PathBuf,
    reload: Option<Reloader>,
    /// Held while the file is compared and written.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl LicenseFile {
    pub fn new(path: impl Into<PathBuf>, reload_argv: &[String], reload_timeout: Duration) -> Self {
        Self {
            path: path.into(),
            reload: ReloadCommand::new(reload_argv, reload_timeout).map(Reloader::new),
            writer: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file hold `active`'s document (or removes it when `None`); when the file
    /// changed, asks for a reload (which runs in the background).
    pub async fn bring_in_line(
        &self,
        active: Option<&HeldLicense>,
    ) -> Result<OutputChange, OutputError> {
        let _writer = self.writer.lock().await;
        self.write(active).await
    }

    /// [`LicenseFile::bring_in_line`] with the license `active` returns once this caller is
    /// the only writer: a retry reads the newest state then, never one that a concurrent
    /// update has already replaced.
    pub async fn bring_in_line_with(
        &self,
        active: impl FnOnce() -> Option<HeldLicense>,
    ) -> Result<OutputChange, OutputError> {
        let _writer = self.writer.lock().await;
        let active = active();
        self.write(active.as_ref()).await
    }

    /// Where the reloads stand; `None` without a reload command.
    pub fn reloads(&self) -> Option<watch::Receiver<ReloadState>> {
        self.reload.as_ref().map(Reloader::state)
    }

    /// Kills a reload still running (with every process it started) and runs no more: for
    /// when the agent stops.
    pub async fn stop_reloads(&self) {
        if let Some(reload) = &self.reload {
            reload.stop().await;
        }
    }

    async fn write(&self, active: Option<&HeldLicense>) -> Result<OutputChange, OutputError> {
        let path = self.path.clone();
        let wanted = active.map(|license| license.document.clone());
        let changed = tokio::task::spawn_blocking(move || write_if_different(&path, wanted))
            .await
            .map_err(|e| OutputError::Write {
                path: self.path.clone(),
                source: io::Error::other(e),
            })??;
        let change = match (changed, active) {
            (false, _) => return Ok(OutputChange::Unchanged),
            (true, Some(license)) => {
                tracing::info!(
                    event = "license.applied",
                    license.id = %license.id,
                    license.revision = license.revision,
                    path = %self.path.display(),
                    "License file updated."
                );
                OutputChange::Applied {
                    id: license.id.clone(),
                }
            }
            (true, None) => {
                tracing::info!(
                    event = "license.removed",
                    path = %self.path.display(),
                    "No license is held any more; license file removed."
                );
                OutputChange::Removed
            }
        };
        if let Some(reload) = &self.reload {
            reload.request();
        }
        Ok(change)
    }
}

/// Returns whether the file changed.
fn write_if_different(path: &Path, wanted: Option<String>) -> Result<bool, OutputError> {
    let current = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(OutputError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    match wanted {
        Some(document) if current.as_deref() == Some(document.as_bytes()) => Ok(false),
        Some(document) => {
            let write = || -> io::Result<()> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                fsutil::write_atomic(path, document.as_bytes(), fsutil::PUBLIC_MODE)
            };
            write().map_err(|source| OutputError::Write {
                path: path.to_owned(),
                source,
            })?;
            Ok(true)
        }
        None if current.is_none() => Ok(false),
        None => {
            fsutil::remove_durable(path).map_err(|source| OutputError::Remove {
                path: path.to_owned(),
                source,
            })?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn license(id: &str, document: &str) -> HeldLicense {
        HeldLicense {
            id: id.into(),
            document: document.into(),
            created_at: 1,
            updated_at: 2,
            revision: 3,
        }
    }

    #[tokio::test]
    async fn writes_exact_bytes_only_when_different_and_removes_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kong/license.json");
        let file = LicenseFile::new(&path, &[], Duration::from_secs(1));
        // Not valid JSON on purpose: the file must hold the document byte for byte.
        let a = license("a", "{\"license\": {\"payload\": {}} }\n");

        assert_eq!(
            file.bring_in_line(None).await.unwrap(),
            OutputChange::Unchanged
        );
        assert_eq!(
            file.bring_in_line(Some(&a)).await.unwrap(),
            OutputChange::Applied { id: "a".into() }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), a.document);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the gateway must be able to read it");
        assert_eq!(
            file.bring_in_line(Some(&a)).await.unwrap(),
            OutputChange::Unchanged
        );

        std::fs::write(&path, b"edited by hand").unwrap();
        assert_eq!(
            file.bring_in_line(Some(&a)).await.unwrap(),
            OutputChange::Applied { id: "a".into() },
            "a file that drifted is put back"
        );

        assert_eq!(
            file.bring_in_line(None).await.unwrap(),
            OutputChange::Removed
        );
        assert!(!path.exists());
        assert_eq!(
            file.bring_in_line(None).await.unwrap(),
            OutputChange::Unchanged
        );
    }

    #[tokio::test]
    async fn reload_runs_only_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("reloads");
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("echo reload >> {}", marker.display()),
        ];
        let file = LicenseFile::new(
            dir.path().join("license.json"),
            &argv,
            Duration::from_secs(10),
        );
        let a = license("a", "{}");
        let mut reloads = file.reloads().unwrap();
        file.bring_in_line(Some(&a)).await.unwrap();
        reloads.wait_for(|r| !r.running).await.unwrap();
        file.bring_in_line(Some(&a)).await.unwrap();
        file.bring_in_line(None).await.unwrap();
        reloads.wait_for(|r| !r.running).await.unwrap();
        assert_eq!(reloads.borrow().runs, 2);
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "reload\nreload\n"
        );
    }

    #[tokio::test]
    async fn an_unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("not-a-dir"), b"").unwrap();
        let path = dir.path().join("not-a-dir/license.json");
        let file = LicenseFile::new(&path, &[], Duration::from_secs(1));
        let err = file
            .bring_in_line(Some(&license("a", "{}")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not-a-dir/license.json"), "{err}");
    }
}
