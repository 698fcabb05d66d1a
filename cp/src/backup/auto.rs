//! The automatic backup a node writes before it upgrades an older storage schema, after RHACS
//! Central's upgrade: whatever the upgrade does, the state before it is in
//! `<data_dir>/backups/` (directory 0700, file 0600), restorable with `licsync-cp restore`
//! and startable by the older binary (the rollback).
//!
//! The file is named after the moment and both versions, so successive upgrades never replace
//! each other's backups: `licsync-backup-20261202T013000Z-postgres-schema-3-to-4.json`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use licsync_common::fsutil::{self, SECRET_MODE};
use time::OffsetDateTime;
use time::macros::format_description;

use super::document::StorageVersion;
use super::take::{BackupError, PkiSource, document};
use crate::store::StoreSnapshot;

/// The folder inside data_dir.
pub const BACKUPS_DIR: &str = "backups";

/// Writes the backup of `snapshot` (a store of `backend` at schema `from`, about to be upgraded
/// to `to`) into `<data_dir>/backups/`; its path.
pub fn before_upgrade(
    data_dir: &Path,
    snapshot: StoreSnapshot,
    pki: PkiSource<'_>,
    backend: &str,
    from: u32,
    to: u32,
) -> Result<PathBuf, BackupError> {
    let document = document(
        snapshot,
        pki,
        StorageVersion {
            backend: backend.to_owned(),
            schema_version: from,
        },
    )?;
    let dir = data_dir.join(BACKUPS_DIR);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| BackupError::Write {
            path,
            reason: e.to_string(),
        }
    };
    fsutil::ensure_private_dir(&dir).map_err(io(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    let stamp = OffsetDateTime::from_unix_timestamp(document.created_at)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| document.created_at.to_string());
    let path = dir.join(format!(
        "licsync-backup-{stamp}-{backend}-schema-{from}-to-{to}.json"
    ));
    let bytes = serde_json::to_vec(&document).map_err(|e| BackupError::Write {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    fsutil::write_atomic(&path, &bytes, SECRET_MODE).map_err(io(&path))?;
    tracing::warn!(
        event = "storage.backup_before_upgrade",
        path = %path.display(),
        backend,
        from,
        to,
        licenses = document.licenses.len(),
        revision = document.revision,
        "Wrote a backup before upgrading the storage schema; to roll back, stop, restore it \
         into a new data_dir (or database) and start the previous licsync-cp."
    );
    Ok(path)
}
