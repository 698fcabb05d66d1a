//! The embedded database's schema version, kept in its `meta` tree, so a binary never reads
//! records a newer licsync-cp wrote in a layout it does not know (as the PostgreSQL backend
//! refuses a newer schema, [`super::postgres::schema`]).
//!
//! Version 1 is the layout every release so far has written: a database without the key (made
//! before it was recorded) is version 1 and is stamped at open. A later layout change bumps
//! [`CURRENT`] and adds its step to [`upgrade`]; a node opening an older database first writes
//! a backup of it into `<data_dir>/backups/` ([`crate::backup::auto`]) and only then upgrades.

use std::path::Path;

use super::{StoreError, StoreResult};

/// The key in the `meta` tree.
const KEY: &[u8] = b"schema_version";

/// The layout this binary reads and writes.
pub const CURRENT: u32 = 1;

/// Stamps a new database with [`CURRENT`] and returns the version the database is at; refuses
/// one stamped newer, naming both versions and what to do.
pub fn check(meta: &sled::Tree, path: &Path) -> StoreResult<u32> {
    let backend = |e: sled::Error| StoreError::Backend(format!("sled: {e}"));
    match meta.get(KEY).map_err(backend)? {
        None => {
            meta.insert(KEY, &CURRENT.to_be_bytes()).map_err(backend)?;
            meta.flush().map_err(backend)?;
            Ok(CURRENT)
        }
        Some(raw) => {
            let found = <[u8; 4]>::try_from(raw.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    key: "meta/schema_version".into(),
                    reason: format!("expected 4 bytes, found {}", raw.len()),
                })?;
            if found > CURRENT {
                return Err(StoreError::Backend(format!(
                    "the embedded database {} is at schema version {found}, newer than this \
                     licsync-cp knows (version {CURRENT}): run the newer licsync-cp that wrote \
                     it, or restore the backup taken before that upgrade (in \
                     <data_dir>/backups/) into a new data_dir with `licsync-cp restore`",
                    path.display()
                )));
            }
            Ok(found)
        }
    }
}

/// Upgrades the layout from version `from` to [`CURRENT`], one step per version, and stamps
/// [`CURRENT`]. The caller writes a backup first and flushes after.
pub fn upgrade(meta: &sled::Tree, from: u32) -> StoreResult<()> {
    let backend = |e: sled::Error| StoreError::Backend(format!("sled: {e}"));
    for version in from..CURRENT {
        // The step from `version` to `version + 1` goes here when a layout change needs one;
        // version 1 is the first layout, so none does yet.
        tracing::info!(
            event = "storage.upgrade_step",
            from = version,
            to = version + 1,
            "Upgrading the embedded database layout."
        );
    }
    meta.insert(KEY, &CURRENT.to_be_bytes()).map_err(backend)?;
    Ok(())
}
