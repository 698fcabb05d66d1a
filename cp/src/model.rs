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
    pub cert_expires_at: i64,
    pub last_seen: Option<i64>,
    /// The license the data plane reported active, and that license's `updated_at`.
    pub license_id: Option<Uuid>,
    pub license_updated_at: Option<i64>,
    pub revoked: bool,
}

/// An Admin API token. Only its SHA-256 is stored; revocable by deleting the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    /// SHA-256 hex of the secret.
    pub token_hash: String,
    pub created_at: i64,
}
