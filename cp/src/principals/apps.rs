//! Connected apps (`/connected-apps` in the Admin API): programs that log in with a client id
//! and secret, limited to the scopes they were granted.
//!
//! The control plane generates both the client id and the secret. The secret is handed back
//! once, from [`Principals::create_app`]; only its SHA-256 is stored, and logs name an app by
//! client id and name only.

use licsync_common::unix_now;

use super::{Principals, check_app_name, is_client_id, new_client_id, new_client_secret};
use crate::model::{ConnectedApp, Scope};
use crate::secrets::{self, RandomFailed};
use crate::store::{StoreError, StoreResult};

/// A new app and its secret: the only time the secret is known.
pub struct CreatedApp {
    pub app: ConnectedApp,
    pub client_secret: String,
}

/// Leaves the secret out.
impl std::fmt::Debug for CreatedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApp")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// Why an app was not created.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Random(#[from] RandomFailed),
    /// 128 random bits collided: not the caller's fault, and a retry fixes it.
    #[error("the generated client id is already taken; send the request again")]
    ClientIdTaken,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl Principals {
    /// Creates an app named `name` (trimmed) with `scopes`, and logs `connected_app.created`.
    pub async fn create_app(&self, name: &str, scopes: Vec<Scope>) -> Result<CreatedApp, AppError> {
        let name = check_app_name(name).map_err(|reason| AppError::Invalid {
            field: "name",
            reason,
        })?;
        if scopes.is_empty() {
            return Err(AppError::Invalid {
                field: "scopes",
                reason: format!("must list at least one scope; {}", super::known_scopes()),
            });
        }
        let client_secret = new_client_secret()?;
        let app = ConnectedApp {
            client_id: new_client_id(),
            name,
            secret_hash: secrets::hash(&client_secret),
            scopes,
            created_at: unix_now(),
        };
        if !self.store.insert_connected_app(&app).await? {
            return Err(AppError::ClientIdTaken);
        }
        let scopes: Vec<_> = app.scopes.iter().map(|s| s.as_str()).collect();
        tracing::info!(
            event = "connected_app.created",
            client_id = %app.client_id,
            app.name = %app.name,
            scopes = %scopes.join(","),
            "Connected app created."
        );
        Ok(CreatedApp { app, client_secret })
    }

    /// Every app, oldest first.
    pub async fn apps(&self) -> StoreResult<Vec<ConnectedApp>> {
        let mut apps = self.store.connected_apps().await?;
        apps.sort_by(|a, b| (a.created_at, &a.client_id).cmp(&(b.created_at, &b.client_id)));
        Ok(apps)
    }

    /// The app with `client_id`; `None` for an id of a shape this control plane never hands out.
    pub async fn app(&self, client_id: &str) -> StoreResult<Option<ConnectedApp>> {
        if !is_client_id(client_id) {
            return Ok(None);
        }
        self.store.connected_app(client_id).await
    }

    /// Deletes the app with `client_id` and logs `connected_app.deleted`; `false` when there
    /// was none.
    pub async fn delete_app(&self, client_id: &str) -> StoreResult<bool> {
        if !is_client_id(client_id) || !self.store.delete_connected_app(client_id).await? {
            return Ok(false);
        }
        tracing::info!(event = "connected_app.deleted", client_id = %client_id, "Connected app deleted.");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::principals::{Credential, Principal};
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_created_app_logs_in_with_its_secret_which_is_stored_only_as_a_digest() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        let created = principals
            .create_app("  ci  ", vec![Scope::ManageServers])
            .await
            .unwrap();
        assert_eq!(created.app.name, "ci");
        assert_ne!(created.app.secret_hash, created.client_secret);
        let stored = principals
            .app(&created.app.client_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, created.app);
        assert_eq!(stored.secret_hash, secrets::hash(&created.client_secret));
        assert!(!format!("{stored:?}").contains(&stored.secret_hash));
        let credential = Credential::App {
            client_id: created.app.client_id.clone(),
            client_secret: created.client_secret.clone(),
        };
        let principal = principals
            .authenticate(&credential, "192.0.2.7".parse().unwrap(), 0)
            .await
            .unwrap();
        assert!(matches!(principal, Principal::App { name, .. } if name == "ci"));
    }

    #[tokio::test]
    async fn names_with_control_characters_blank_or_too_long_are_refused() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        for (name, says) in [
            (
                "ci\r\nWARN forged",
                "name must not contain control characters (found U+000D)",
            ),
            ("ci\u{202e}", "found U+202E"),
            ("   ", "must not be empty"),
            (&"x".repeat(129) as &str, "at most 128 characters"),
        ] {
            let err = principals
                .create_app(name, vec![Scope::ReadServers])
                .await
                .unwrap_err();
            assert!(
                matches!(&err, AppError::Invalid { field: "name", reason } if reason.contains(says)),
                "{name:?}: {err}"
            );
        }
        let err = principals.create_app("ci", Vec::new()).await.unwrap_err();
        assert!(
            matches!(
                err,
                AppError::Invalid {
                    field: "scopes",
                    ..
                }
            ),
            "{err}"
        );
        assert!(principals.apps().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn apps_are_deleted_once_and_odd_ids_are_simply_unknown() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        let created = principals
            .create_app("ci", vec![Scope::ReadServers])
            .await
            .unwrap();
        let id = created.app.client_id;
        assert!(principals.delete_app(&id).await.unwrap());
        assert!(!principals.delete_app(&id).await.unwrap());
        assert_eq!(principals.app(&id).await.unwrap(), None);
        assert_eq!(principals.app("../../etc").await.unwrap(), None);
    }
}
