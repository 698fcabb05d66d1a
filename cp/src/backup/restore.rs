//! `licsync-cp restore --input FILE --data-dir DIR`: a backup becomes the data_dir of an
//! embedded (sled) control plane, which `licsync-cp serve` started on it runs exactly as the
//! one backed up: the same licenses at the same revision, the same registration tokens, admin
//! tokens, users and connected apps, and the same CA, so data planes reconnect with the
//! certificates they hold without registering again.
//!
//! DIR must be absent or empty. Everything is written into a new directory beside it
//! (`.<name>.restore-<pid>`), made durable, and only then renamed to DIR: a restore that fails
//! (a bad file, a full disk) leaves DIR as it was and removes what it wrote. For a cluster on
//! PostgreSQL, restore into a data_dir and then `licsync-cp storage copy` it into an empty
//! database.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use licsync_common::fsutil::{self, PUBLIC_MODE, SECRET_MODE};

use super::document::{Counts, Document, DocumentError, Pki};
use crate::store::{SledStore, StoreError, StoreMeta};
use crate::usage::ReportKey;
use crate::usage::report_key::REPORT_KEY_FILE;

/// Why nothing was restored (DIR is then as it was).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {source}; nothing was restored")]
    Document {
        path: PathBuf,
        source: DocumentError,
    },
    #[error(
        "{path} is not empty (it holds {entry}); restore into an empty or absent directory, so \
         nothing of another control plane mixes with the backup"
    )]
    NotEmpty { path: PathBuf, entry: String },
    #[error("{0} exists and is not a directory; choose another --data-dir")]
    NotADirectory(PathBuf),
    #[error("cannot {action} {path}: {source}; nothing was restored")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write the embedded database: {0}; nothing was restored")]
    Store(#[from] StoreError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let path = path.to_owned();
    move |source| RestoreError::Io {
        action,
        path,
        source,
    }
}

/// Restores the backup in `input` into `data_dir` (absent or empty); what it held.
pub async fn restore(input: &Path, data_dir: &Path) -> Result<Counts, RestoreError> {
    let bytes = std::fs::read(input).map_err(|source| RestoreError::Read {
        path: input.to_owned(),
        source,
    })?;
    let document = Document::parse(&bytes).map_err(|source| RestoreError::Document {
        path: input.to_owned(),
        source,
    })?;
    drop(bytes);
    let counts = document.counts();
    let existed = check_target(data_dir)?;
    let name = data_dir
        .file_name()
        .ok_or_else(|| RestoreError::NotADirectory(data_dir.to_owned()))?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fsutil::ensure_private_dir(&parent).map_err(io_error("create directory", &parent))?;
    let staging = parent.join(format!(
        ".{}.restore-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_error("create directory", &staging))?;
    let written = async {
        write_data_dir(&staging, document).await?;
        if existed {
            std::fs::remove_dir(data_dir).map_err(io_error("replace", data_dir))?;
        }
        std::fs::rename(&staging, data_dir).map_err(io_error("rename into", data_dir))?;
        std::fs::File::open(&parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("sync", &parent))
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written.map(|()| counts)
}

/// Whether `data_dir` exists (it is then an empty directory), or why it cannot be used.
fn check_target(data_dir: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(entry) => Err(RestoreError::NotEmpty {
                path: data_dir.to_owned(),
                entry: entry.map_or_else(
                    |e| e.to_string(),
                    |e| e.file_name().to_string_lossy().into_owned(),
                ),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(RestoreError::NotADirectory(data_dir.to_owned()))
        }
        Err(e) => Err(io_error("read", data_dir)(e)),
    }
}

/// The store and the PKI files of `document`, in `dir`, durable.
async fn write_data_dir(dir: &Path, document: Document) -> Result<(), RestoreError> {
    let (snapshot, pki) = document.into_parts();
    let store = SledStore::open(&dir.join("cp.sled"))?;
    store.restore_into_empty(snapshot).await?;
    store.flush().await?;
    drop(store);
    if let Some(pki) = pki {
        write_pki(&dir.join("pki"), &pki)?;
    }
    Ok(())
}

/// The files a node on an embedded store loads its CA and report key from
/// ([`crate::cluster::ca::load_or_create_ca`], [`ReportKey::load_or_create`]).
fn write_pki(dir: &Path, pki: &Pki) -> Result<(), RestoreError> {
    fsutil::ensure_private_dir(dir).map_err(io_error("create directory", dir))?;
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        fsutil::write_atomic(&path, text.as_bytes(), mode).map_err(io_error("write", &path))
    };
    write("ca.crt", &pki.ca_cert_pem, PUBLIC_MODE)?;
    write("ca.key", &pki.ca_key_pem, SECRET_MODE)?;
    write(REPORT_KEY_FILE, &pki.report_key_pem, SECRET_MODE)?;
    // Checked when the document was read.
    if let Ok(key) = ReportKey::from_pem(&pki.report_key_pem) {
        key.write_public(dir).map_err(|e| RestoreError::Io {
            action: "write",
            path: dir.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}
