//! Declarative licenses (`licenses.watch_dir`): signed license documents (`*.json`) in a
//! directory, typically a mounted ConfigMap or Secret, are imported, updated and removed as
//! Admin API writes would be, with the same validation and the same `license.*` events.
//!
//! Kong reads a license from an environment variable or a file, and that license never reaches
//! hybrid-mode data planes; here a file is one more way to write the stored set every data
//! plane follows. Each file is a license with a stable id derived from its name (so renaming a
//! file replaces the license; [`file_license_id`]), written with `PUT` semantics only when its
//! document differs from what is stored, so every node of a cluster watching the same mount
//! converges without rewriting. The names imported are kept in `<data_dir>/watch_dir.json`, so
//! a file removed while the control plane was down is removed from the store at the next start.
//! Licenses written through the Admin API are never touched.
//!
//! The directory is scanned every `licenses.watch_interval` (a ConfigMap update appears as a
//! renamed `..data` symlink: polling sees it without inotify's corner cases). Hidden entries
//! (`.` prefix, Kubernetes' `..data`) are skipped; at most [`MAX_FILES`] files of at most
//! [`MAX_FILE_BYTES`] each are read, and a refused file is logged once per content.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use licsync_common::fsutil;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::licenses::PutOutcome;
use crate::state::ControlPlane;

/// Files read per scan, at most (the rest are logged and skipped).
pub const MAX_FILES: usize = 1000;
/// Largest license file read: the Admin API's body limit.
pub const MAX_FILE_BYTES: u64 = crate::admin::MAX_BODY_BYTES as u64;
/// The file keeping the names imported, inside `data_dir`.
const STATE_FILE: &str = "watch_dir.json";

/// The id of the license kept for file `name`: a name-based UUID (SHA-256 of a fixed prefix
/// and the name, version 8), the same on every node and across restarts.
pub fn file_license_id(name: &str) -> Uuid {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("licsync licenses.watch_dir\0{name}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// What one scan found: each license file's name and document.
type Found = BTreeMap<String, String>;

/// Runs until `shutdown`: a scan at once, then every `licenses.watch_interval`.
pub async fn run(cp: Arc<ControlPlane>, dir: PathBuf, shutdown: CancellationToken) {
    let every = cp.config().licenses.watch_interval.0;
    let state_path = cp.config().data_dir.join(STATE_FILE);
    let mut imported = load_state(&state_path);
    // Contents refused before, per file, so a bad file is logged once, not every scan.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    tracing::info!(event = "license_dir.watching", dir = %dir.display(), interval_s = every.as_secs_f64(), "Importing license files from licenses.watch_dir.");
    loop {
        match scan(&dir).await {
            Ok(found) => {
                apply(&cp, &found, &mut imported, &mut refused).await;
                save_state(&state_path, &imported);
            }
            Err(error) => {
                tracing::warn!(event = "license_dir.unreadable", dir = %dir.display(), %error, "Cannot read licenses.watch_dir; keeping the licenses imported from it and retrying.");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Imports what changed in `found`, removes what left it, and updates `imported`.
async fn apply(
    cp: &ControlPlane,
    found: &Found,
    imported: &mut BTreeSet<String>,
    refused: &mut BTreeMap<String, String>,
) {
    let current = cp.licenses().current();
    for (name, document) in found {
        let id = file_license_id(name);
        if current
            .licenses
            .get(&id)
            .is_some_and(|l| l.document == *document)
        {
            imported.insert(name.clone());
            continue;
        }
        if refused.get(name) == Some(document) {
            continue;
        }
        match cp.licenses().put(id, document.clone()).await {
            Ok((stored, outcome)) => {
                refused.remove(name);
                imported.insert(name.clone());
                let action = match outcome {
                    PutOutcome::Created => "created",
                    PutOutcome::Replaced => "updated",
                };
                tracing::info!(event = "license_dir.imported", file = %name, license.id = %stored.id, action, revision = stored.revision, "Imported a license file.");
            }
            Err(error) => {
                refused.insert(name.clone(), document.clone());
                tracing::warn!(event = "license_dir.refused", file = %name, license.id = %id, %error, "A license file was not imported; fix or remove it.");
            }
        }
    }
    let gone: Vec<String> = imported
        .iter()
        .filter(|name| !found.contains_key(*name))
        .cloned()
        .collect();
    for name in gone {
        let id = file_license_id(&name);
        match cp.licenses().delete(id).await {
            Ok(_) => {
                imported.remove(&name);
                refused.remove(&name);
                tracing::info!(event = "license_dir.removed", file = %name, license.id = %id, "A license file was removed; its license is deleted.");
            }
            Err(error) => {
                tracing::warn!(event = "license_dir.remove_failed", file = %name, license.id = %id, %error, "Could not delete the license of a removed file; retrying at the next scan.");
            }
        }
    }
}

/// The `*.json` files of `dir` (following symlinks, skipping hidden entries), name and
/// content, within the bounds above; an oversized or unreadable file is logged and skipped.
async fn scan(dir: &Path) -> std::io::Result<Found> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && name.ends_with(".json"))
            .collect();
        names.sort();
        if names.len() > MAX_FILES {
            tracing::warn!(event = "license_dir.too_many_files", files = names.len(), limit = MAX_FILES, "licenses.watch_dir holds more license files than are read; the rest are skipped.");
            names.truncate(MAX_FILES);
        }
        let mut found = Found::new();
        for name in names {
            let path = dir.join(&name);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.len() <= MAX_FILE_BYTES => {}
                Ok(meta) if meta.is_file() => {
                    tracing::warn!(event = "license_dir.refused", file = %name, bytes = meta.len(), limit = MAX_FILE_BYTES, "A license file is larger than a license may be; skipped.");
                    continue;
                }
                _ => continue,
            }
            match std::fs::read_to_string(&path) {
                // A file's trailing newline is not part of the document (JSON ignores it).
                Ok(text) => {
                    found.insert(name, text.trim_end().to_owned());
                }
                Err(error) => {
                    tracing::warn!(event = "license_dir.refused", file = %name, %error, "A license file cannot be read as UTF-8 text; skipped.");
                }
            }
        }
        Ok(found)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn load_state(path: &Path) -> BTreeSet<String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(event = "license_dir.state_unreadable", path = %path.display(), %error, "Cannot read the list of imported license files; licenses of files removed while stopped stay until deleted by hand.");
            BTreeSet::new()
        }),
        Err(_) => BTreeSet::new(),
    }
}

fn save_state(path: &Path, imported: &BTreeSet<String>) {
    let written = serde_json::to_vec(imported)
        .map_err(std::io::Error::other)
        .and_then(|bytes| fsutil::write_atomic(path, &bytes, fsutil::PUBLIC_MODE));
    if let Err(error) = written {
        tracing::warn!(event = "license_dir.state_unwritable", path = %path.display(), %error, "Cannot save the list of imported license files.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_well_formed() {
        let a = file_license_id("acme.json");
        assert_eq!(a, file_license_id("acme.json"));
        assert_ne!(a, file_license_id("acme2.json"));
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    }
}
