//! User accounts (`/users` in the Admin API): created with a checked username and an Argon2id
//! password hash, listed, shown and deleted.
//!
//! The rules live here, not in the HTTP handler: a username of the allowed shape (so no
//! control character can reach a log line), a password long enough, one user per username.
//! A password is never returned or logged; only its PHC hash is stored.

use licsync_common::unix_now;

use super::password::HashError;
use super::{Principals, check_password, check_username};
use crate::model::{Role, User};
use crate::store::{StoreError, StoreResult};

/// A user to create, as the caller asked for it.
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// Leaves the password out.
impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Why a user was not created.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A field breaks its rule; the reason never quotes a password.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a user named '{username}' already exists; choose another username or delete it first")]
    Duplicate { username: String },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl Principals {
    /// Creates `new` (its username unique, its password hashed) and logs `user.created`.
    pub async fn create_user(&self, new: NewUser) -> Result<User, UserError> {
        let invalid = |field, reason| UserError::Invalid { field, reason };
        check_username(&new.username).map_err(|r| invalid("username", r))?;
        check_password(&new.password).map_err(|r| invalid("password", r))?;
        let duplicate = || UserError::Duplicate {
            username: new.username.clone(),
        };
        // Checked first so a duplicate does not cost an Argon2 hash; the insert below is the
        // atomic check that settles a race.
        if self.store.user(&new.username).await?.is_some() {
            return Err(duplicate());
        }
        let password_hash = self.hash_password(&new.password).await?;
        let user = User {
            username: new.username.clone(),
            password_hash,
            role: new.role,
            created_at: unix_now(),
        };
        if !self.store.insert_user(&user).await? {
            return Err(duplicate());
        }
        tracing::info!(event = "user.created", user = %user.username, role = %user.role, "User created.");
        Ok(user)
    }

    /// Every user, ordered by username.
    pub async fn users(&self) -> StoreResult<Vec<User>> {
        let mut users = self.store.users().await?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    /// How many users there are (Kong's `rbac_users` in the usage report).
    pub async fn user_count(&self) -> StoreResult<u64> {
        Ok(self.store.users().await?.len() as u64)
    }

    /// The user named `username`; `None` for a name no user can have.
    pub async fn user(&self, username: &str) -> StoreResult<Option<User>> {
        if check_username(username).is_err() {
            return Ok(None);
        }
        self.store.user(username).await
    }

    /// Deletes the user named `username` and logs `user.deleted`; `false` when there was none.
    pub async fn delete_user(&self, username: &str) -> StoreResult<bool> {
        if check_username(username).is_err() || !self.store.delete_user(username).await? {
            return Ok(false);
        }
        tracing::info!(event = "user.deleted", user = %username, "User deleted.");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::principals::Credential;
    use crate::store::MemoryStore;

    fn new_user(username: &str, password: &str) -> NewUser {
        NewUser {
            username: username.into(),
            password: password.into(),
            role: Role::Viewer,
        }
    }

    #[tokio::test]
    async fn a_created_user_logs_in_and_its_password_is_stored_hashed() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        let user = principals
            .create_user(new_user("alice", "correct horse battery"))
            .await
            .unwrap();
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(!user.password_hash.contains("correct horse"));
        assert!(!format!("{user:?}").contains(&user.password_hash));
        let stored = principals.user("alice").await.unwrap().unwrap();
        assert_eq!(stored.password_hash, user.password_hash);
        assert!(!format!("{stored:?}").contains(&stored.password_hash));
        let credential = Credential::User {
            username: "alice".into(),
            password: "correct horse battery".into(),
        };
        let source = "192.0.2.9".parse().unwrap();
        principals
            .authenticate(&credential, source, 0)
            .await
            .unwrap();
        assert_eq!(principals.user_count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_second_user_with_the_same_name_is_refused_and_the_first_is_kept() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        let first = principals
            .create_user(new_user("alice", "correct horse battery"))
            .await
            .unwrap();
        let err = principals
            .create_user(new_user("alice", "another long passphrase"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UserError::Duplicate { username } if username == "alice"),
            "{err}"
        );
        let kept = principals.user("alice").await.unwrap().unwrap();
        assert_eq!(kept.password_hash, first.password_hash);
    }

    #[tokio::test]
    async fn bad_names_and_short_passwords_are_refused_before_anything_is_stored() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        for (username, password, field, says) in [
            (
                "al\nice",
                "correct horse battery",
                "username",
                "'\\n' is not allowed",
            ),
            (
                "bob\u{1b}[2J",
                "correct horse battery",
                "username",
                "'\\u{1b}' is not allowed",
            ),
            ("", "correct horse battery", "username", "must be 1 to 64"),
            ("carol", "hunter2", "password", "at least 12 characters"),
        ] {
            let err = principals
                .create_user(new_user(username, password))
                .await
                .unwrap_err();
            match &err {
                UserError::Invalid { field: f, reason } => {
                    assert_eq!(*f, field, "{err}");
                    assert!(reason.contains(says), "{reason}");
                    assert!(!reason.contains("hunter2"), "{reason}");
                }
                other => panic!("{username:?}: {other}"),
            }
        }
        assert!(principals.users().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn users_are_listed_by_name_and_deleted_once() {
        let principals = Principals::new(Arc::new(MemoryStore::new()));
        for name in ["zoe", "adam", "mia"] {
            principals
                .create_user(new_user(name, "correct horse battery"))
                .await
                .unwrap();
        }
        let names: Vec<_> = principals
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, ["adam", "mia", "zoe"]);
        assert!(principals.delete_user("mia").await.unwrap());
        assert!(!principals.delete_user("mia").await.unwrap());
        assert!(!principals.delete_user("no such/user").await.unwrap());
        assert_eq!(principals.user("mia").await.unwrap(), None);
    }
}
