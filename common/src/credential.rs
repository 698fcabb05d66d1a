//! A user's or a connected app's credential, as the control plane verifies it and the agent's
//! `registration renew` sends it: one type, whose `Debug` names the principal and never the
//! secret, so no log line or panic message can carry a password.

use std::fmt;

/// Who proves their identity, and with what.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    User {
        username: String,
        password: String,
    },
    App {
        client_id: String,
        client_secret: String,
    },
}

/// Names the principal, never the secret.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { username, .. } => f
                .debug_struct("User")
                .field("username", username)
                .finish_non_exhaustive(),
            Self::App { client_id, .. } => f
                .debug_struct("App")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// The credential as `Registration.Renew` carries it.
impl From<&Credential> for crate::proto::renew_request::Credential {
    fn from(credential: &Credential) -> Self {
        use crate::proto::{AppCredential, UserCredential};
        match credential {
            Credential::User { username, password } => Self::User(UserCredential {
                username: username.clone(),
                password: password.clone(),
            }),
            Credential::App {
                client_id,
                client_secret,
            } => Self::App(AppCredential {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let user = Credential::User {
            username: "alice".into(),
            password: "hunter2-hunter2".into(),
        };
        let app = Credential::App {
            client_id: "app-1".into(),
            client_secret: "lsc_s3cr3t".into(),
        };
        for (credential, name, secret) in [
            (&user, "alice", "hunter2-hunter2"),
            (&app, "app-1", "lsc_s3cr3t"),
        ] {
            let shown = format!("{credential:?} {credential:#?}");
            assert!(shown.contains(name), "{shown}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
