//! The agent's versioned JSON files (`dp-state.json`, `usage.json`): one way to read and write
//! them, so the two cannot drift.
//!
//! A file carries a `format` number. It is read first, on its own, so that a file written by a
//! newer release says "upgrade" rather than "damaged" even when its layout changed; then the
//! whole file is read. Writing replaces the file atomically and durably (temporary file,
//! fsync, rename, directory fsync) with mode 0600 in a private directory: a crash leaves the
//! old file or the new one, never a torn one.

use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fsutil;

/// Why a state file could not be read or written; the caller adds the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{0}")]
    Read(io::Error),
    /// Not JSON, or not this layout; the parser's reason.
    #[error("{0}")]
    Damaged(String),
    /// Written by a newer release: the format number found.
    #[error("format {0}")]
    TooNew(u32),
    #[error("{0}")]
    Write(io::Error),
}

impl StateFileError {
    /// The error as an I/O error, for callers that report a failed write by path and cause.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Read(source) | Self::Write(source) => source,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// Reads the file at `path` holding format `current` or older; `Ok(None)` when there is none.
pub fn load<T: DeserializeOwned>(path: &Path, current: u32) -> Result<Option<T>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateFileError::Read(e)),
    };
    #[derive(serde::Deserialize)]
    struct Format {
        #[serde(default)]
        format: u32,
    }
    let damaged = |e: serde_json::Error| StateFileError::Damaged(e.to_string());
    let Format { format } = serde_json::from_slice(&bytes).map_err(damaged)?;
    if format > current {
        return Err(StateFileError::TooNew(format));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(damaged)
}

/// Replaces the file at `path` with `value` (pretty JSON, a final newline, mode 0600);
/// durable when it returns `Ok`.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    write(path, &encode(value)?)
}

/// A value serialised for [`write`]. Async callers encode on their own task, borrowing the
/// value, and move only these bytes to a blocking thread for the disk work, rather than
/// cloning the whole state to hand it over.
pub struct Encoded(Vec<u8>);

/// Serialises `value` as [`save`] writes it.
pub fn encode<T: Serialize>(value: &T) -> Result<Encoded, StateFileError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| StateFileError::Write(io::Error::other(e)))?;
    bytes.push(b'\n');
    Ok(Encoded(bytes))
}

/// Replaces the file at `path` with `encoded`; durable when it returns `Ok`.
pub fn write(path: &Path, encoded: &Encoded) -> Result<(), StateFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::ensure_private_dir(dir).map_err(StateFileError::Write)?;
    }
    fsutil::write_atomic(path, &encoded.0, fsutil::SECRET_MODE).map_err(StateFileError::Write)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct File {
        format: u32,
        value: String,
    }

    #[test]
    fn round_trip_private_and_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/state.json");
        assert!(load::<File>(&path, 1).unwrap().is_none());
        let file = File {
            format: 1,
            value: "x".into(),
        };
        save(&path, &file).unwrap();
        assert_eq!(load::<File>(&path, 1).unwrap(), Some(file));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn a_newer_format_says_so_even_when_its_layout_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, br#"{"format": 2, "value": {"now": "an object"}}"#).unwrap();
        assert!(matches!(
            load::<File>(&path, 1),
            Err(StateFileError::TooNew(2))
        ));
        std::fs::write(&path, br#"{"format": 1, "value": 7}"#).unwrap();
        assert!(matches!(
            load::<File>(&path, 1),
            Err(StateFileError::Damaged(_))
        ));
        std::fs::write(&path, b"{torn").unwrap();
        assert!(matches!(
            load::<File>(&path, 1),
            Err(StateFileError::Damaged(_))
        ));
    }
}
