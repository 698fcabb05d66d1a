//! Principals: the users and connected apps that may act on the control plane outside the
//! Admin API's bearer token (today: renewing a data plane's certificate, SPEC §4 and §6), and
//! the Admin API's bearer tokens themselves.
//!
//! # Layout
//! - here: [`Credential`] and [`Principal`]; [`Principals::authenticate`] (who is this?)
//!   and [`may_renew_dataplanes`] (may they?).
//! - `bootstrap`: the first API token, created at start (before the control plane is built)
//!   and handed to the operator in `<data_dir>/admin-token`.
//! - `users`, `apps`, `api_tokens`: the records themselves ([`Principals::create_user`],
//!   [`Principals::create_app`], [`Principals::check_api_token`], ...), with their rules; the
//!   Admin API calls these and never storage.
//! - `rules`: what a valid username, password, app name, scope list and client id are; new
//!   client ids and secrets.
//! - `password`: Argon2id hashing of user passwords.
//! - `throttle`: lockouts after repeated failures, per principal and per source address.
//!
//! Every check is built so that an attacker learns as little as possible: passwords are
//! verified with Argon2id and app secrets compared as SHA-256 digests in constant time; an
//! unknown username costs the same Argon2 work as a wrong password and both get the same
//! answer; failures are throttled before any secret is looked at. Failures are logged as
//! `auth.failed` (WARN) with the principal and source address, never with a secret.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use crate::model::{ConnectedApp, Role, Scope, User};
use crate::secrets;
use crate::store::Store;

mod api_tokens;
mod apps;
pub mod bootstrap;
pub mod password;
mod rules;
pub mod throttle;
mod users;

pub use api_tokens::{ApiTokenError, NewApiToken, TokenCaller, TokenCheck};
pub use apps::{AppError, CreatedApp};
pub use rules::*;
pub use users::{NewUser, UserError};

use password::Verdict;
use throttle::{LoginThrottle, PrincipalKey, Throttled};

/// What a caller presents to prove who it is (the shared type; its `Debug` hides the secret).
pub use licsync_common::credential::Credential;

/// Whose failures a credential counts against.
fn principal_key(credential: &Credential) -> PrincipalKey {
    match credential {
        Credential::User { username, .. } => PrincipalKey::User(username.clone()),
        Credential::App { client_id, .. } => PrincipalKey::App(client_id.clone()),
    }
}

/// Someone whose credential was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        username: String,
        role: Role,
    },
    App {
        client_id: String,
        name: String,
        scopes: Vec<Scope>,
    },
}

/// How logs and refusals name a principal: `user 'alice'`, `connected app 'ci' (client id …)`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User { username, .. } => write!(f, "user '{username}'"),
            Principal::App {
                client_id, name, ..
            } => write!(f, "connected app '{name}' (client id {client_id})"),
        }
    }
}

/// Why a credential was not accepted. The text goes to the caller: it says what to check
/// without telling whether the username or client id exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "wrong password for user '{username}', or no such user; check --username and --password (users are created with POST /users)"
    )]
    BadUserCredential { username: String },
    #[error(
        "wrong client secret for connected app '{client_id}', or no such app; check --client-id and --client-secret (apps are created with POST /connected-apps)"
    )]
    BadAppCredential { client_id: String },
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// The control plane could not check (storage failed); the caller may retry.
    #[error("cannot check credentials now: {0}; try again")]
    Unavailable(String),
}

/// An authenticated principal that may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{principal} may not renew data planes: {reason}; renewing needs a user with role admin or a connected app with scope manage:servers"
)]
pub struct Forbidden {
    pub principal: String,
    pub reason: String,
}

/// Renewing a data plane's certificate needs an admin user or an app with `manage:servers`.
pub fn may_renew_dataplanes(principal: &Principal) -> Result<(), Forbidden> {
    let reason = match principal {
        Principal::User {
            role: Role::Admin, ..
        } => return Ok(()),
        Principal::User { role, .. } => format!("its role is {role}"),
        Principal::App { scopes, .. } if scopes.contains(&Scope::ManageServers) => return Ok(()),
        Principal::App { .. } => format!("it lacks scope {}", Scope::ManageServers),
    };
    Err(Forbidden {
        principal: principal.to_string(),
        reason,
    })
}

/// Owns the stored users, connected apps and API tokens; checks credentials against them,
/// with throttling.
pub struct Principals {
    store: Arc<dyn Store>,
    throttle: Mutex<LoginThrottle>,
    /// Bounds how many Argon2 computations (19 MiB and tens of ms each) run at once, so a
    /// burst of logins cannot exhaust memory or starve the blocking pool. Taken before the
    /// throttle check, so no more than this many attempts can pass the check before their
    /// failures are counted.
    hashing: Semaphore,
    /// Serialises this node's Admin API token revocations, so two concurrent deletions cannot
    /// both pass the "another admin token remains" check and lock every operator out.
    token_revocations: tokio::sync::Mutex<()>,
}

impl Principals {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        Self {
            store,
            throttle: Mutex::new(LoginThrottle::default()),
            hashing: Semaphore::new(parallel),
            token_revocations: tokio::sync::Mutex::new(()),
        }
    }

    fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The PHC string to store for a new user's password (hashed on the blocking pool).
    pub async fn hash_password(&self, password: &str) -> Result<String, password::HashError> {
        let _permit = self.hashing.acquire().await;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .unwrap_or_else(|e| Err(password::HashError(e.to_string())))
    }

    /// Who `credential` belongs to, checked at `now` (unix seconds) for a caller at `source`.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        source: IpAddr,
        now: i64,
    ) -> Result<Principal, Refusal> {
        let key = principal_key(credential);
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        if let Err(throttled) = self.throttle().check(&key, source, now) {
            tracing::warn!(
                event = "auth.throttled",
                principal = %key,
                source = %source,
                retry_after_s = throttled.retry_after,
                "Login refused without checking: too many recent failures."
            );
            return Err(throttled.into());
        }
        let checked = match credential {
            Credential::User { username, password } => self.check_user(username, password).await,
            Credential::App {
                client_id,
                client_secret,
            } => self.check_app(client_id, client_secret).await,
        }
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        match checked {
            Ok(principal) => {
                self.throttle().succeeded(&key);
                Ok(principal)
            }
            Err(reason) => {
                let lockouts = self.throttle().failed(&key, source, now);
                tracing::warn!(
                    event = "auth.failed",
                    principal = %key,
                    source = %source,
                    reason,
                    "Login failed."
                );
                if let Some(seconds) = lockouts.principal {
                    tracing::warn!(event = "auth.locked_out", principal = %key, lockout_s = seconds, "Too many failed logins: locked out.");
                }
                if let Some(seconds) = lockouts.source {
                    tracing::warn!(event = "auth.locked_out", source = %source, lockout_s = seconds, "Too many failed logins from one address: locked out.");
                }
                Err(match credential {
                    Credential::User { username, .. } => Refusal::BadUserCredential {
                        username: username.clone(),
                    },
                    Credential::App { client_id, .. } => Refusal::BadAppCredential {
                        client_id: client_id.clone(),
                    },
                })
            }
        }
    }

    /// Refuses a sign-in from `source` while it is locked out after failed logins of any
    /// kind (the status page checks this before a bearer token, which names no principal).
    pub fn check_source(&self, source: IpAddr, now: i64) -> Result<(), Throttled> {
        self.throttle().check_source(source, now)
    }

    /// Counts a failed bearer-token sign-in against `source`, as a failed password counts;
    /// `Some(seconds)` when it locked the source out.
    pub fn source_failed(&self, source: IpAddr, now: i64) -> Option<u64> {
        self.throttle().source_failed(source, now)
    }

    /// The user, or why not (a reason for the log only).
    async fn check_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Result<Principal, &'static str>, crate::store::StoreError> {
        let user: Option<User> = if check_username(username).is_ok() {
            self.store.user(username).await?
        } else {
            None
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_owned();
        let verdict = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => Some(password::verify(&password, &stored)),
            None => {
                password::verify_dummy(&password);
                None
            }
        })
        .await
        .map_err(|e| crate::store::StoreError::Backend(format!("password check failed: {e}")))?;
        Ok(match (user, verdict) {
            (Some(user), Some(Verdict::Matches)) => Ok(Principal::User {
                username: user.username,
                role: user.role,
            }),
            (Some(_), Some(Verdict::Wrong)) => Err("wrong_password"),
            (Some(user), Some(Verdict::StoredHashUnusable)) => {
                tracing::error!(event = "auth.unusable_hash", user = %user.username, "The stored password hash of this user is unusable; delete the user and create it again.");
                Err("stored_hash_unusable")
            }
            _ => Err("unknown_user"),
        })
    }

    /// The app, or why not (a reason for the log only).
    async fn check_app(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Result<Principal, &'static str>, crate::store::StoreError> {
        let app: Option<ConnectedApp> = if is_client_id(client_id) {
            self.store.connected_app(client_id).await?
        } else {
            None
        };
        let presented = secrets::hash(client_secret);
        // Compare against something of the same shape when the app is unknown, so both paths
        // do the same work.
        let stored = app
            .as_ref()
            .map_or_else(|| secrets::hash("no such app"), |a| a.secret_hash.clone());
        let matches = secrets::digests_equal(&presented, &stored);
        Ok(match app {
            Some(app) if matches => Ok(Principal::App {
                client_id: app.client_id,
                name: app.name,
                scopes: app.scopes,
            }),
            Some(_) => Err("wrong_secret"),
            None => Err("unknown_app"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, PrincipalStore};

    #[test]
    fn debug_output_never_shows_a_secret() {
        let user = Credential::User {
            username: "alice".into(),
            password: "hunter2-hunter2".into(),
        };
        let app = Credential::App {
            client_id: "0123".into(),
            client_secret: "lsc_topsecret".into(),
        };
        let text = format!("{user:?} {app:?}");
        assert!(text.contains("alice") && text.contains("0123"));
        assert!(
            !text.contains("hunter2") && !text.contains("topsecret"),
            "{text}"
        );
    }

    #[test]
    fn only_admins_and_manage_servers_apps_may_renew() {
        let admin = Principal::User {
            username: "root".into(),
            role: Role::Admin,
        };
        assert_eq!(may_renew_dataplanes(&admin), Ok(()));
        let viewer = Principal::User {
            username: "eve".into(),
            role: Role::Viewer,
        };
        assert_eq!(
            may_renew_dataplanes(&viewer).unwrap_err().to_string(),
            "user 'eve' may not renew data planes: its role is viewer; renewing needs a user with role admin or a connected app with scope manage:servers"
        );
        let app = |scopes: Vec<Scope>| Principal::App {
            client_id: "c1".into(),
            name: "ci".into(),
            scopes,
        };
        assert_eq!(
            may_renew_dataplanes(&app(vec![Scope::ManageServers])),
            Ok(())
        );
        let err = may_renew_dataplanes(&app(vec![Scope::ReadServers, Scope::ViewOrganization]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "connected app 'ci' (client id c1) may not renew data planes: it lacks scope manage:servers"
            ),
            "{err}"
        );
    }

    async fn principals_with_users() -> (Principals, ConnectedApp, String) {
        let store = Arc::new(MemoryStore::new());
        let principals = Principals::new(store.clone());
        let hash = principals
            .hash_password("correct horse battery")
            .await
            .unwrap();
        store
            .insert_user(&User {
                username: "alice".into(),
                password_hash: hash,
                role: Role::Admin,
                created_at: 0,
            })
            .await
            .unwrap();
        let secret = new_client_secret().unwrap();
        let app = ConnectedApp {
            client_id: new_client_id(),
            name: "ci".into(),
            secret_hash: secrets::hash(&secret),
            scopes: vec![Scope::ManageServers],
            created_at: 0,
        };
        store.insert_connected_app(&app).await.unwrap();
        (principals, app, secret)
    }

    fn user(username: &str, password: &str) -> Credential {
        Credential::User {
            username: username.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn users_and_apps_authenticate_and_wrong_or_unknown_ones_look_alike() {
        let (principals, app, secret) = principals_with_users().await;
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let ok = principals
            .authenticate(&user("alice", "correct horse battery"), source, 0)
            .await
            .unwrap();
        assert_eq!(
            ok,
            Principal::User {
                username: "alice".into(),
                role: Role::Admin
            }
        );
        let wrong = principals
            .authenticate(&user("alice", "wrong horse battery"), source, 0)
            .await
            .unwrap_err();
        let unknown = principals
            .authenticate(&user("alicia", "correct horse battery"), source, 0)
            .await
            .unwrap_err();
        assert_eq!(
            wrong.to_string().replace("alice", "?"),
            unknown.to_string().replace("alicia", "?"),
            "an unknown user reads like a wrong password"
        );
        assert!(
            wrong
                .to_string()
                .starts_with("wrong password for user 'alice'")
        );

        let app_credential = |client_id: &str, client_secret: &str| Credential::App {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        };
        let ok = principals
            .authenticate(&app_credential(&app.client_id, &secret), source, 0)
            .await
            .unwrap();
        assert_eq!(
            ok.to_string(),
            format!("connected app 'ci' (client id {})", app.client_id)
        );
        let wrong = principals
            .authenticate(&app_credential(&app.client_id, "lsc_nope"), source, 0)
            .await
            .unwrap_err();
        assert_eq!(
            wrong,
            Refusal::BadAppCredential {
                client_id: app.client_id.clone()
            }
        );
        let unknown = principals
            .authenticate(&app_credential(&new_client_id(), &secret), source, 0)
            .await
            .unwrap_err();
        assert!(matches!(unknown, Refusal::BadAppCredential { .. }));
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_user_out_even_with_the_right_password() {
        let (principals, _, _) = principals_with_users().await;
        let source: IpAddr = "192.0.2.2".parse().unwrap();
        for n in 0..5 {
            let refusal = principals
                .authenticate(&user("alice", "not the password"), source, 100 + n)
                .await
                .unwrap_err();
            assert!(
                matches!(refusal, Refusal::BadUserCredential { .. }),
                "{refusal}"
            );
        }
        let refused = principals
            .authenticate(&user("alice", "correct horse battery"), source, 110)
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many failed logins for user 'alice'; try again in 54 s"
        );
        // Once the lockout has passed, the right password works and clears the history.
        principals
            .authenticate(&user("alice", "correct horse battery"), source, 165)
            .await
            .unwrap();
        principals
            .authenticate(&user("alice", "not the password"), source, 166)
            .await
            .unwrap_err();
        principals
            .authenticate(&user("alice", "correct horse battery"), source, 167)
            .await
            .unwrap();
    }
}
