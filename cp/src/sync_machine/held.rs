//! What one data plane holds, and what it therefore still needs from a [`LicenseSet`].
//!
//! The delta is computed against what the data plane acknowledged, never against what was
//! sent: an update it never answered (its stream ended first) is sent again on the next
//! stream, and a reconnect after a control-plane restart sends nothing it already has (its
//! Hello lists each license with the digest of the document it holds).

use std::collections::HashMap;
use std::sync::Arc;

use licsync_common::pki::sha256_hex;
use uuid::Uuid;

use crate::dataplanes::SyncStatus;
use crate::licenses::LicenseSet;
use crate::model::{Revision, StoredLicense};

/// What a data plane holds of one license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub revision: Revision,
    /// SHA-256 of the document as reported in Hello; `None` once this stream sent it (then the
    /// revision alone identifies it).
    pub digest: Option<String>,
}

impl Held {
    /// Whether this is exactly `license` (same revision, and same document when the data
    /// plane reported one: a control plane restored from an older backup may reuse revisions).
    pub fn is(&self, license: &StoredLicense) -> bool {
        self.revision == license.revision
            && self
                .digest
                .as_deref()
                .is_none_or(|d| d == sha256_hex(license.document.as_bytes()))
    }
}

/// What a data plane holds and what it refused; the machine's memory of it.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    /// What the data plane holds, as far as it has acknowledged.
    pub held: HashMap<Uuid, Held>,
    /// License versions the data plane refused; not resent until they change.
    pub rejected: HashMap<Uuid, Revision>,
}

impl Holdings {
    /// The licenses of `set` the data plane lacks (neither held nor refused at that revision)
    /// and the ids it holds that `set` no longer has.
    pub fn delta(&self, set: &LicenseSet) -> (Vec<Arc<StoredLicense>>, Vec<Uuid>) {
        let upserted = set
            .licenses
            .iter()
            .filter(|(id, license)| {
                let known = self.held.get(id).is_some_and(|h| h.is(license))
                    || self.rejected.get(id) == Some(&license.revision);
                !known
            })
            .map(|(_, license)| license.clone())
            .collect();
        let removed = self
            .held
            .keys()
            .filter(|id| !set.licenses.contains_key(id))
            .copied()
            .collect();
        (upserted, removed)
    }

    /// Records the data plane's answer to an update: it dropped `removed` and now holds
    /// `upserted`, except the `refused` ones.
    pub fn answered(
        &mut self,
        upserted: Vec<(Uuid, Revision)>,
        removed: Vec<Uuid>,
        refused: &[(Uuid, Revision)],
    ) {
        for id in removed {
            self.held.remove(&id);
        }
        for (id, revision) in upserted {
            if refused.iter().any(|(r, _)| *r == id) {
                self.rejected.insert(id, revision);
            } else {
                self.rejected.remove(&id);
                self.held.insert(
                    id,
                    Held {
                        revision,
                        digest: None,
                    },
                );
            }
        }
    }

    /// The status to show after an answer that by itself means `status`: an Ack for a later
    /// update does not clear a refusal that still stands in `set`.
    pub fn status(&self, status: SyncStatus, set: &LicenseSet) -> SyncStatus {
        let still_rejected = self
            .rejected
            .iter()
            .any(|(id, rev)| set.licenses.get(id).is_some_and(|l| l.revision == *rev));
        if still_rejected {
            SyncStatus::LicenseRejected
        } else {
            status
        }
    }

    /// The license the data plane serves (id, `updated_at`): the shared active rule over what
    /// it holds of `set`.
    pub fn active(&self, set: &LicenseSet) -> Option<(Uuid, i64)> {
        let held = self
            .held
            .iter()
            .filter_map(|(id, held)| set.licenses.get(id).filter(|l| held.is(l)));
        licsync_common::active::newest(held, |l| l.rank()).map(|l| (l.id, l.updated_at))
    }
}
