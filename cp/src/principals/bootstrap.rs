//! The first admin token: created on a control plane's first start so the Admin API is never
//! open, and handed to the operator through a file only they can read.
//!
//! The file is written before the token's digest is stored. A crash in between leaves a file
//! whose token does not work yet, and the next start (still finding no token) writes a fresh
//! one; the other order could store a token nobody can ever read and lock the operator out.

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
/// 0600) and returns that path; otherwise does nothing and returns `None`. The token itself is
/// never logged.
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
    };
    store.put_api_token(&token).await?;
    tracing::info!(
        event = "admin_token.created",
        admin_token.id = %token.id,
        path = %path.display(),
        "Admin token created; send it as \"Authorization: Bearer <token>\"."
    );
    Ok(Some(path))
}
