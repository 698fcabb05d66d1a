//! The first admin token: created on a control plane's first start so the Admin API is never
//! open, and handed to the operator through a file only they can read.
//!
//! The file is written before the token's digest is stored. A crash in between leaves a file
//! whose token does not work yet, and the next start (still finding no token) writes a fresh
//! one; the other order could store a token nobody can ever read and lock the operator out.
//!
//! Nodes sharing a database share the API tokens, so only one of them bootstraps: the token is
//! stored only if no token exists yet, atomically across nodes
//! ([`crate::store::PrincipalStore::insert_first_api_token`]). A node that loses that race
//! (another node started at the same moment) removes the file it wrote, whose token was never
//! stored, and uses the Admin API with the winner's token like any other node.

use std::path::{Path, PathBuf};

use licsync_common::fsutil::{self, SECRET_MODE};
use licsync_common::unix_now;
use uuid::Uuid;

use crate::model::ApiToken;
use crate::secrets::{self, RandomFailed};
use crate::store::{Store, StoreError};

/// Name of the token file inside `data_dir`.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Name of the bootstrap token's record, as the API-token store shows it.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// The first admin token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("could not create the admin token: {0}")]
    Storage(#[from] StoreError),
    #[error("could not create the admin token: {0}")]
    Random(#[from] RandomFailed),
    #[error(
        "could not write the admin token to {path}: {source}; check that the data_dir is writable by this user"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// When `store` holds no API token, creates one, writes it to `<data_dir>/admin-token` (mode
/// 0600) and returns that path; otherwise (also when another node sharing the store created
/// one first) does nothing and returns `None`. The token itself is never logged.
pub async fn bootstrap_admin_token(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<Option<PathBuf>, BootstrapError> {
    if !store.api_tokens().await?.is_empty() {
        return Ok(None);
    }
    let secret = secrets::generate("lsa_")?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let write = |path: &Path| {
        fsutil::ensure_private_dir(data_dir)?;
        fsutil::write_atomic(path, secret.as_bytes(), SECRET_MODE)
    };
    write(&path).map_err(|source| BootstrapError::Write {
        path: path.clone(),
        source,
    })?;
    let token = ApiToken {
        id: Uuid::new_v4(),
        name: BOOTSTRAP_TOKEN_NAME.into(),
        token_hash: secrets::hash(&secret),
        created_at: unix_now(),
        role: crate::model::Role::Admin,
        expires_at: None,
    };
    if !store.insert_first_api_token(&token).await? {
        // Another node bootstrapped between our look and our write: its token is the one.
        if let Err(source) = std::fs::remove_file(&path)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            return Err(BootstrapError::Write { path, source });
        }
        tracing::info!(
            event = "admin_token.exists",
            "Another control-plane node created the bootstrap admin token first; use that one."
        );
        return Ok(None);
    }
    tracing::info!(
        event = "admin_token.created",
        admin_token.id = %token.id,
        path = %path.display(),
        "Admin token created; send it as \"Authorization: Bearer <token>\"."
    );
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::{MemoryStore, PrincipalStore};

    #[tokio::test]
    async fn the_token_is_written_privately_stored_hashed_and_created_once() {
        let store = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let path = bootstrap_admin_token(&store, dir.path())
            .await
            .unwrap()
            .expect("an empty store gets a bootstrap token");
        assert_eq!(path, dir.path().join(ADMIN_TOKEN_FILE));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(token.starts_with("lsa_"));

        let stored = store.api_tokens().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].name, BOOTSTRAP_TOKEN_NAME);
        assert_eq!(
            stored[0].token_hash,
            secrets::hash(&token),
            "only the hash is stored"
        );

        let again = bootstrap_admin_token(&store, dir.path()).await.unwrap();
        assert_eq!(again, None, "a second start creates nothing");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            token,
            "and leaves the file alone"
        );
        assert_eq!(store.api_tokens().await.unwrap().len(), 1);
    }
}
