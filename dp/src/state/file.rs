//! The agent's [`StateStore`]: `<data_dir>/dp-state.json`, replaced atomically and durably
//! (temporary file, fsync, rename, directory fsync), so a crash leaves the old state or the
//! new one, never a torn file.

use std::path::{Path, PathBuf};

use licsync_common::state_file::{self, StateFileError};

use super::{DpState, STATE_FORMAT, StateError, StateStore};

#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_blocking(path: &Path) -> Result<DpState, StateError> {
        let error = |e| match e {
            StateFileError::Read(source) | StateFileError::Write(source) => StateError::Read {
                path: path.to_owned(),
                source,
            },
            StateFileError::Damaged(reason) => StateError::Damaged {
                path: path.to_owned(),
                reason,
            },
            StateFileError::TooNew(found) => StateError::TooNew {
                path: path.to_owned(),
                found,
            },
        };
        Ok(state_file::load(path, STATE_FORMAT)
            .map_err(error)?
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl StateStore for FileStateStore {
    async fn load(&self) -> Result<DpState, StateError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Self::load_blocking(&path))
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))?
    }

    async fn save(&self, state: &DpState) -> Result<(), StateError> {
        let path = self.path.clone();
        let written = match state_file::encode(state) {
            Ok(encoded) => tokio::task::spawn_blocking(move || state_file::write(&path, &encoded))
                .await
                .map_err(|e| StateError::Unavailable(e.to_string()))?,
            Err(e) => Err(e),
        };
        written.map_err(|e| StateError::Write {
            path: self.path.clone(),
            source: e.into_io(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::state::HeldLicense;

    fn sample() -> DpState {
        let mut state = DpState {
            revision: 42,
            synced_at: Some(1_700_000_000),
            ..DpState::default()
        };
        state.upsert(HeldLicense {
            id: "6f1c1f4e-2b7a-4b8e-9a77-0c1d2e3f4a5b".into(),
            document: "{\"license\":{\"payload\":{\"customer\":\"Ünïcode \\\"Inc\\\"\"}}}".into(),
            created_at: 1_600_000_000,
            updated_at: 1_650_000_000,
            revision: 41,
        });
        state
    }

    #[tokio::test]
    async fn round_trip_creates_a_private_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path().join("data/dp-state.json"));
        assert_eq!(
            store.load().await.unwrap(),
            DpState::default(),
            "nothing saved yet"
        );
        let state = sample();
        store.save(&state).await.unwrap();
        assert_eq!(store.load().await.unwrap(), state);
        assert_eq!(
            FileStateStore::new(store.path()).load().await.unwrap(),
            state,
            "a new store (a restarted agent) reads the same state"
        );
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dp-state.json"]);
    }

    #[tokio::test]
    async fn a_crash_mid_write_leaves_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp-state.json");
        let store = FileStateStore::new(&path);
        let state = sample();
        store.save(&state).await.unwrap();
        // What a crash between writing the temporary and renaming it leaves behind.
        std::fs::write(
            dir.path().join(".dp-state.json.tmp-1-deadbeef"),
            b"{\"revis",
        )
        .unwrap();
        assert_eq!(store.load().await.unwrap(), state);
        // A failed save (the directory is gone) leaves nothing half-written in its place.
        let gone = FileStateStore::new(dir.path().join("file-not-dir/x/dp-state.json"));
        std::fs::write(dir.path().join("file-not-dir"), b"").unwrap();
        assert!(matches!(
            gone.save(&state).await,
            Err(StateError::Write { .. })
        ));
        assert_eq!(store.load().await.unwrap(), state);
    }

    #[tokio::test]
    async fn damaged_or_newer_files_are_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp-state.json");
        std::fs::write(&path, b"{\"revision\": \"x\"").unwrap();
        let err = FileStateStore::new(&path)
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dp-state.json") && err.contains("move it aside"),
            "{err}"
        );
        std::fs::write(&path, b"{\"format\": 99}").unwrap();
        let err = FileStateStore::new(&path)
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("upgrade licsync-dp"), "{err}");
    }
}
