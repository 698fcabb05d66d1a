//! The control plane's records, as stored and as served.
//!
//! These are plain data: every backend behind [`crate::store::Store`] persists exactly these
//! shapes (sled as JSON values, an in-memory map for tests, later PostgreSQL rows), so adding a
//! backend never touches the Admin API or the cluster protocol.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The control plane's monotonic change counter. Every license write bumps it; data planes use
/// it to tell what they already hold.
pub type Revision = u64;

/// A license as the control plane stores it: Kong's entity plus the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLicense {
    pub id: Uuid,
    /// The license document exactly as submitted.
    pub document: String,
    /// Lowercase hex signature: Kong's uniqueness rule ("same license twice" is a 409).
    pub signature: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision: Revision,
}

impl StoredLicense {
    /// What the active-license rule ([`licsync_common::active`]) compares.
    pub fn rank(&self) -> licsync_common::active::Rank<Uuid> {
        licsync_common::active::Rank {
            updated_at: self.updated_at,
            revision: self.revision,
            id: self.id,
        }
    }
}

/// A one-time (or few-times) registration token. Only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub id: Uuid,
    pub name: String,
    /// SHA-256 hex of the secret.
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: u32,
    pub uses: u32,
}

/// Why a registration token was not accepted. The text goes to the data plane and the CP log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error(
        "registration token is unknown or was revoked; create a new one with POST /registration-tokens"
    )]
    Unknown,
    #[error(
        "registration token expired at {expired_at} (unix seconds); create a new one with POST /registration-tokens"
    )]
    Expired { expired_at: i64 },
    #[error(
        "registration token was already used {uses} of {max_uses} times; create a new one with POST /registration-tokens"
    )]
    UsedUp { uses: u32, max_uses: u32 },
}

/// A registered data plane. Connection state (connected, last contact) lives in memory at the
/// control plane; this is what survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneRecord {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub ip: String,
    pub version: String,
    pub registered_at: i64,
    /// Serial (hex) of the newest certificate issued to it.
    pub cert_serial: String,
    /// Serial of the certificate it held before the newest was issued (rotation or renewal).
    /// Still accepted until the newest one is first used, so a data plane that crashed between
    /// receiving its new certificate and saving it is not locked out; any other serial is
    /// refused.
    #[serde(default)]
    pub previous_cert_serial: Option<String>,
    /// Serials of certificates it held before those two, newest last (at most
    /// [`DataPlaneRecord::RETIRED_SERIALS`]): refused as superseded, while a serial from the
    /// cluster CA that is in none of these was never issued to it by this control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_cert_serials: Vec<String>,
    pub cert_expires_at: i64,
    pub last_seen: Option<i64>,
    /// The license the data plane reported active, and that license's `updated_at`.
    pub license_id: Option<Uuid>,
    pub license_updated_at: Option<i64>,
    pub revoked: bool,
}

impl DataPlaneRecord {
    /// How many retired serials are remembered: with rotation at two thirds of a 90-day
    /// certificate, more than two years of them.
    pub const RETIRED_SERIALS: usize = 16;

    /// Remembers `serial` as one this data plane held and no longer may use.
    pub fn retire_serial(&mut self, serial: String) {
        if serial == self.cert_serial || self.previous_cert_serial.as_ref() == Some(&serial) {
            return;
        }
        self.retired_cert_serials.retain(|s| *s != serial);
        self.retired_cert_serials.push(serial);
        let excess = self
            .retired_cert_serials
            .len()
            .saturating_sub(Self::RETIRED_SERIALS);
        self.retired_cert_serials.drain(..excess);
    }

    /// Whether `serial` is a certificate this data plane held before its current ones.
    pub fn held_before(&self, serial: &str) -> bool {
        self.retired_cert_serials.iter().any(|s| s == serial)
    }
}

/// An Admin API token. Only its SHA-256 is stored; revocable by deleting the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    /// SHA-256 hex of the secret.
    pub token_hash: String,
    pub created_at: i64,
    /// What it may do. Tokens stored before roles existed were all-powerful, and stay so.
    #[serde(default = "Role::admin")]
    pub role: Role,
    /// When it stops working (unix seconds); `None`: when it is revoked.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl ApiToken {
    /// Whether it has expired as of `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// What an Admin API token or a user may do, after RHACS's and Vault's built-in roles; each
/// role may do everything the ones after it may. Renewing a data plane's certificate by hand
/// needs [`Role::Admin`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including who may use the Admin API (tokens, users, connected apps), the
    /// audit trail and backups.
    Admin,
    /// Runs the fleet: licenses, registration tokens, data planes, usage reports; not
    /// tokens or principals.
    Operator,
    /// May look (`GET`), not change; not the tokens, principals or audit trail.
    Viewer,
}

impl Role {
    /// Every role, as the Admin API spells them, most powerful first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    /// The Admin API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn covers(self, needed: Role) -> bool {
        // Declared most powerful first.
        self <= needed
    }

    /// What a request naming a role must say: `expected one of: admin, operator, viewer`.
    pub fn one_of() -> String {
        let roles: Vec<_> = Self::ALL.iter().map(|r| r.as_str()).collect();
        format!("expected one of: {}", roles.join(", "))
    }

    /// [`Role::Admin`], for serde's defaults.
    pub fn admin() -> Self {
        Role::Admin
    }

    /// The role spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person who may authenticate to the control plane (for now: to renew a data plane's
/// certificate with `licsync-dp registration renew --username ...`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique; see `principals::check_username` for what is allowed.
    pub username: String,
    /// Argon2id PHC string (`$argon2id$v=19$m=...`): salt and parameters included.
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
}

/// Leaves the password hash out: a hash in a log is an offline-cracking target.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What a connected app may do, after Anypoint's connected-app scopes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    /// Read data planes and their state.
    #[serde(rename = "read:servers")]
    ReadServers,
    /// Manage data planes: renew their certificates.
    #[serde(rename = "manage:servers")]
    ManageServers,
    /// Read the organization (licenses, usage).
    #[serde(rename = "view:organization")]
    ViewOrganization,
}

impl Scope {
    /// Every scope, as the Admin API spells them.
    pub const ALL: [Scope; 3] = [
        Scope::ReadServers,
        Scope::ManageServers,
        Scope::ViewOrganization,
    ];

    /// The Admin API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadServers => "read:servers",
            Scope::ManageServers => "manage:servers",
            Scope::ViewOrganization => "view:organization",
        }
    }

    /// The scope spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A program that authenticates with a client id and secret (CI jobs, automation), after
/// Anypoint's connected apps. Only the secret's SHA-256 is stored: it is a 256-bit random
/// string, so a slow hash would add latency and no protection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedApp {
    /// Generated by the control plane: 32 lowercase hex digits.
    pub client_id: String,
    pub name: String,
    /// SHA-256 hex of the client secret.
    pub secret_hash: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    pub created_at: i64,
}

/// Leaves the secret's digest out of logs and panics.
impl std::fmt::Debug for ConnectedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectedApp")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("secret_hash", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Why a data plane may not get a new certificate (renewal or rotation). The text goes to the
/// caller and the CP log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefusal {
    #[error(
        "data plane {id} is not registered on this control plane; check dataplane_id in the registration file, or register it with a new registration token"
    )]
    Unknown { id: Uuid },
    #[error("data plane {id} was revoked; register it again with a new registration token")]
    Revoked { id: Uuid },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_serials_are_remembered_bounded_and_never_the_accepted_ones() {
        let mut record = DataPlaneRecord {
            id: Uuid::nil(),
            name: "edge-1".into(),
            hostname: String::new(),
            ip: String::new(),
            version: String::new(),
            registered_at: 0,
            cert_serial: "current".into(),
            previous_cert_serial: Some("previous".into()),
            retired_cert_serials: Vec::new(),
            cert_expires_at: 0,
            last_seen: None,
            license_id: None,
            license_updated_at: None,
            revoked: false,
        };
        record.retire_serial("current".into());
        record.retire_serial("previous".into());
        assert!(record.retired_cert_serials.is_empty(), "still accepted");
        for n in 0..40 {
            record.retire_serial(format!("old-{n}"));
        }
        record.retire_serial("old-30".into());
        assert_eq!(
            record.retired_cert_serials.len(),
            DataPlaneRecord::RETIRED_SERIALS
        );
        assert!(record.held_before("old-39") && record.held_before("old-24"));
        assert!(!record.held_before("old-23"), "the oldest are forgotten");
        assert_eq!(record.retired_cert_serials.last().unwrap(), "old-30");
        assert!(!record.held_before("never"));
    }
}
