//! The backup document: a versioned JSON file holding every record of a control plane and its
//! PKI, and the strict reading of one.
//!
//! Layout (format version 1): `format` (`"licsync-backup"`), `format_version`, `warning` (it
//! holds secret keys), `created_at` (unix seconds), `licsync_version`, `storage` (`backend` and
//! `schema_version` of the store it was taken from), `revision`, then the records:
//! `licenses`, `registration_tokens`, `dataplanes`, `api_tokens`, `users`, `connected_apps`
//! (credentials hashed as stored), `usage`, `audit`, and `pki` (the CA certificate and key and
//! the report-signing key, PEM; `null` when the store had none yet).
//!
//! Reading is strict: the header is checked first so an unknown format or version is named as
//! such, then unknown or duplicate fields are refused, and the records are checked against
//! each other (unique ids, no license newer than the revision, a CA key that parses and
//! matches its certificate) before anything is written anywhere.

use std::collections::HashSet;

use licsync_common::pki::{CertificateAuthority, certificate_matches_key};
use serde::{Deserialize, Serialize};

use crate::model::{
    ApiToken, ConnectedApp, DataPlaneRecord, RegistrationToken, StoredLicense, User,
};
use crate::store::{AuditRecord, LicenseRows, StoreSnapshot, UsageRow};
use crate::usage::ReportKey;

/// What `format` says in every licsync backup.
pub const FORMAT: &str = "licsync-backup";
/// The layout this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The document's `warning`.
pub const WARNING: &str = "This file holds the cluster's secret keys (the CA key that signs every \
    data plane certificate, and the usage report signing key) in the clear, and the hashes of \
    every Admin API credential. Keep it as secret as those keys: mode 0600, encrypted storage, \
    never in a ticket or a repository.";

/// A whole backup.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    pub format_version: u32,
    pub warning: String,
    /// When it was taken (unix seconds).
    pub created_at: i64,
    /// The licsync-cp version that took it.
    pub licsync_version: String,
    pub storage: StorageVersion,
    /// The store's revision: every license write up to it is in, none after it.
    pub revision: u64,
    pub licenses: Vec<StoredLicense>,
    pub registration_tokens: Vec<RegistrationToken>,
    pub dataplanes: Vec<DataPlaneRecord>,
    pub api_tokens: Vec<ApiToken>,
    pub users: Vec<User>,
    pub connected_apps: Vec<ConnectedApp>,
    pub usage: Vec<UsageRow>,
    pub audit: Vec<AuditRecord>,
    pub pki: Option<Pki>,
}

/// Which store a backup was taken from, and at which schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageVersion {
    /// `sled`, `postgres` or `memory`.
    pub backend: String,
    pub schema_version: u32,
}

/// The cluster's secrets, PEM, in the clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// PKCS#8 PEM of the usage report signing key.
    pub report_key_pem: String,
}

/// How many records of each kind a backup holds: the one-line summary the commands print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub licenses: usize,
    pub revision: u64,
    pub dataplanes: usize,
    pub registration_tokens: usize,
    pub api_tokens: usize,
    pub users: usize,
    pub connected_apps: usize,
    pub usage_counters: usize,
    pub audit_records: usize,
    pub pki: bool,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} license(s) at revision {}, {} data plane(s), {} registration token(s), \
             {} API token(s), {} user(s), {} connected app(s), {} usage counter(s), \
             {} audit record(s), {}",
            self.licenses,
            self.revision,
            self.dataplanes,
            self.registration_tokens,
            self.api_tokens,
            self.users,
            self.connected_apps,
            self.usage_counters,
            self.audit_records,
            if self.pki {
                "the cluster CA and the report key"
            } else {
                "no PKI (the store had none yet)"
            }
        )
    }
}

/// Why a file is not a backup this binary can restore.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("not a licsync backup: {0}")]
    Malformed(String),
    #[error("not a licsync backup: \"format\" is {0}, expected \"{FORMAT}\"")]
    WrongFormat(String),
    #[error(
        "backup format version {found} is not one this licsync-cp reads (version {FORMAT_VERSION}): \
         restore it with the licsync-cp release that took it"
    )]
    UnknownVersion { found: u64 },
    #[error("the backup is inconsistent: {0}")]
    Inconsistent(String),
}

/// The fields every format version keeps, read before the rest.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    format_version: Option<serde_json::Value>,
}

impl Document {
    /// A document holding `snapshot` and `pki`, taken now.
    pub fn new(snapshot: StoreSnapshot, pki: Option<Pki>, storage: StorageVersion) -> Self {
        let StoreSnapshot {
            licenses: LicenseRows { revision, licenses },
            registration_tokens,
            dataplanes,
            api_tokens,
            users,
            connected_apps,
            usage,
            audit,
            sealed_secrets: _,
        } = snapshot;
        Self {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            warning: WARNING.to_owned(),
            created_at: licsync_common::unix_now(),
            licsync_version: licsync_common::VERSION.to_owned(),
            storage,
            revision,
            licenses,
            registration_tokens,
            dataplanes,
            api_tokens,
            users,
            connected_apps,
            usage,
            audit,
            pki,
        }
    }

    /// Reads and checks a document ([`Document::validate`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| DocumentError::Malformed(format!("not a JSON object: {e}")))?;
        match header.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(other) => return Err(DocumentError::WrongFormat(other.to_string())),
            None => return Err(DocumentError::Malformed("no \"format\" field".into())),
        }
        match header.format_version.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(found) => return Err(DocumentError::UnknownVersion { found }),
            None => {
                return Err(DocumentError::Malformed(
                    "\"format_version\" is missing or not a whole number".into(),
                ));
            }
        }
        let document: Self =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        document.validate()?;
        Ok(document)
    }

    /// Checks the records against each other and the PKI's keys, naming the first problem.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let bad = |reason: String| Err(DocumentError::Inconsistent(reason));
        unique("license id", self.licenses.iter().map(|l| l.id))?;
        unique(
            "license signature",
            self.licenses.iter().map(|l| &l.signature),
        )?;
        if let Some(l) = self.licenses.iter().find(|l| l.revision > self.revision) {
            return bad(format!(
                "license {} is at revision {}, after the backup's revision {}",
                l.id, l.revision, self.revision
            ));
        }
        unique(
            "registration token id",
            self.registration_tokens.iter().map(|t| t.id),
        )?;
        unique(
            "registration token hash",
            self.registration_tokens.iter().map(|t| &t.token_hash),
        )?;
        unique("data plane id", self.dataplanes.iter().map(|d| d.id))?;
        unique("API token id", self.api_tokens.iter().map(|t| t.id))?;
        unique("username", self.users.iter().map(|u| &u.username))?;
        unique(
            "connected app client id",
            self.connected_apps.iter().map(|a| &a.client_id),
        )?;
        unique(
            "usage counter",
            self.usage.iter().map(|u| (u.dataplane, u.epoch, u.month)),
        )?;
        unique("audit record", self.audit.iter().map(|r| (r.at_ms, r.id)))?;
        if let Some(pki) = &self.pki {
            let broken = |e: licsync_common::pki::PkiError| {
                DocumentError::Inconsistent(format!("pki.ca_cert_pem / pki.ca_key_pem: {e}"))
            };
            CertificateAuthority::from_pem(&pki.ca_cert_pem, &pki.ca_key_pem).map_err(broken)?;
            if !certificate_matches_key(&pki.ca_cert_pem, &pki.ca_key_pem).map_err(broken)? {
                return bad("pki.ca_key_pem is not the key of pki.ca_cert_pem".into());
            }
            ReportKey::from_pem(&pki.report_key_pem)
                .map_err(|e| DocumentError::Inconsistent(format!("pki.report_key_pem: {e}")))?;
        }
        Ok(())
    }

    /// How many records of each kind it holds.
    pub fn counts(&self) -> Counts {
        Counts {
            licenses: self.licenses.len(),
            revision: self.revision,
            dataplanes: self.dataplanes.len(),
            registration_tokens: self.registration_tokens.len(),
            api_tokens: self.api_tokens.len(),
            users: self.users.len(),
            connected_apps: self.connected_apps.len(),
            usage_counters: self.usage.len(),
            audit_records: self.audit.len(),
            pki: self.pki.is_some(),
        }
    }

    /// The records as a store snapshot (what a restore writes) and the PKI.
    pub fn into_parts(self) -> (StoreSnapshot, Option<Pki>) {
        (
            StoreSnapshot {
                licenses: LicenseRows {
                    revision: self.revision,
                    licenses: self.licenses,
                },
                registration_tokens: self.registration_tokens,
                dataplanes: self.dataplanes,
                api_tokens: self.api_tokens,
                users: self.users,
                connected_apps: self.connected_apps,
                usage: self.usage,
                audit: self.audit,
                sealed_secrets: Vec::new(),
            },
            self.pki,
        )
    }
}

/// Refuses the first value of `what` met twice.
fn unique<T: std::hash::Hash + Eq + std::fmt::Debug>(
    what: &str,
    values: impl Iterator<Item = T>,
) -> Result<(), DocumentError> {
    let mut seen = HashSet::new();
    for value in values {
        if let Some(twice) = seen.replace(value) {
            return Err(DocumentError::Inconsistent(format!(
                "{what} {twice:?} appears twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Document {
        let (ca, key_pem) =
            CertificateAuthority::generate("test CA", std::time::Duration::from_secs(3600))
                .unwrap();
        let (_, report_pem) = ReportKey::generate().unwrap();
        let license = StoredLicense {
            id: uuid::Uuid::new_v4(),
            document: "{}".into(),
            signature: "ab".into(),
            created_at: 1,
            updated_at: 2,
            revision: 3,
        };
        let snapshot = StoreSnapshot {
            licenses: LicenseRows {
                revision: 4,
                licenses: vec![license],
            },
            ..StoreSnapshot::default()
        };
        let pki = Pki {
            ca_cert_pem: ca.cert_pem().to_owned(),
            ca_key_pem: key_pem,
            report_key_pem: report_pem,
        };
        Document::new(
            snapshot,
            Some(pki),
            StorageVersion {
                backend: "sled".into(),
                schema_version: 1,
            },
        )
    }

    fn reparsed(change: impl FnOnce(&mut serde_json::Value)) -> Result<Document, DocumentError> {
        let mut value = serde_json::to_value(document()).unwrap();
        change(&mut value);
        Document::parse(&serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn a_document_reads_back_as_written() {
        let written = document();
        let bytes = serde_json::to_vec(&written).unwrap();
        let read = Document::parse(&bytes).unwrap();
        assert_eq!(read.licenses, written.licenses);
        assert_eq!(read.revision, 4);
        assert!(read.warning.contains("secret keys"));
        assert_eq!(
            read.counts().to_string().split(',').next().unwrap(),
            "1 license(s) at revision 4"
        );
    }

    #[test]
    fn every_malformed_document_is_refused_naming_what_is_wrong() {
        for (change, expected) in [
            (
                Box::new(|v: &mut serde_json::Value| v["format_version"] = 2.into())
                    as Box<dyn FnOnce(&mut serde_json::Value)>,
                "backup format version 2",
            ),
            (
                Box::new(|v: &mut serde_json::Value| v["format"] = "kong".into()),
                "\"format\" is \"kong\"",
            ),
            (
                Box::new(|v: &mut serde_json::Value| {
                    v.as_object_mut().unwrap().remove("format");
                }),
                "no \"format\" field",
            ),
            (
                Box::new(|v: &mut serde_json::Value| v["surprise"] = 1.into()),
                "unknown field `surprise`",
            ),
            (
                Box::new(|v: &mut serde_json::Value| v["revision"] = 2.into()),
                "after the backup's revision 2",
            ),
            (
                Box::new(|v: &mut serde_json::Value| {
                    let license = v["licenses"][0].clone();
                    v["licenses"].as_array_mut().unwrap().push(license);
                }),
                "appears twice",
            ),
            (
                Box::new(|v: &mut serde_json::Value| v["pki"]["ca_key_pem"] = "junk".into()),
                "pki.ca_cert_pem / pki.ca_key_pem",
            ),
        ] {
            let error = reparsed(change).err().expect(expected).to_string();
            assert!(
                error.contains(expected),
                "{error} should contain {expected}"
            );
        }
        let error = Document::parse(b"[1, 2]").err().unwrap().to_string();
        assert!(error.starts_with("not a licsync backup"), "{error}");
    }
}
