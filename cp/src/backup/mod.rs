//! Backups, restores and the backup taken before a storage upgrade (SPEC §10), after RHACS
//! Central's backup and upgrade guide.
//!
//! # Layout
//! - `document`: the versioned JSON file and its strict reading.
//! - `take`: a store's snapshot plus the PKI as a document; [`Backups`] serves `GET /backup`
//!   ([`crate::admin`]'s `backup` module is only its HTTP side).
//! - `client`: `licsync-cp backup --server URL --output FILE`.
//! - `restore`: `licsync-cp restore --input FILE --data-dir DIR`.
//! - `auto`: the backup a node writes into `<data_dir>/backups/` before it upgrades an older
//!   storage schema.
//!
//! A backup is one point in time ([`crate::store::SnapshotStore`]): every license in it is one
//! committed version, and its revision covers all of them. It holds the CA key and the report
//! key in the clear (for PostgreSQL, opened from their sealed form), so it restores without the
//! storage key and is as secret as those keys: every file written here is 0600.

pub mod auto;
pub mod client;
pub mod document;
pub mod restore;
pub mod take;

pub use document::{Counts, Document, DocumentError, FORMAT_VERSION, Pki, StorageVersion};
pub use take::{BackupError, Backups, PkiSource};

/// Runs `licsync-cp restore`.
pub fn run_restore(args: crate::cli::RestoreArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    let crate::cli::RestoreArgs { input, data_dir } = args;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let counts = runtime.block_on(restore::restore(&input, &data_dir))?;
    println!(
        "Restored {} into {}: {counts}. Start licsync-cp with data_dir = \"{}\" (storage.backend = \"sled\"); \
         for PostgreSQL, then run `licsync-cp storage copy --from {} --to URL --encryption-key-file FILE`.",
        input.display(),
        data_dir.display(),
        data_dir.display(),
        data_dir.display()
    );
    Ok(true)
}
