//! What a data plane's `Nack` says, made fit to keep, show and log.
//!
//! A `Nack` is outside input (from an authenticated data plane, but a buggy or hostile one
//! must not be able to fill the control plane's memory or forge log lines): every text is
//! bounded and its control characters escaped, and only the first [`MAX_LISTED`] rejected
//! licenses are kept (with the total). The last rejection per data plane is shown at
//! `GET /clustering/data-planes/{id}` (`last_rejection`); an update the data plane could not
//! apply at all shows as `sync_status = "apply_failed"` with [`failure_reason`] in
//! `sync_error`.

use licsync_common::proto::Nack;
use serde::Serialize;

use crate::model::Revision;

/// Most rejected licenses kept from one `Nack`.
pub const MAX_LISTED: usize = 100;
/// Longest reason kept, in bytes.
pub const MAX_REASON: usize = 512;
/// Longest license id kept, in bytes (the control plane's are 36-character UUIDs).
const MAX_ID: usize = 64;

/// One license a data plane refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RejectedLicense {
    pub id: String,
    #[schema(value_type = u64)]
    pub revision: Revision,
    pub reason: String,
}

/// A `Nack` that refused licenses: the data plane kept the rest of the update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// Unix seconds when it was received.
    pub at: i64,
    /// The control-plane revision of the update it answered.
    #[schema(value_type = u64)]
    pub revision: Revision,
    /// The data plane's summary.
    pub reason: String,
    /// The refused licenses, in the data plane's order (the first [`MAX_LISTED`]).
    pub rejected: Vec<RejectedLicense>,
    /// How many the data plane listed.
    pub rejected_total: usize,
}

impl Rejection {
    /// `nack` (which lists at least one license) answering the update at `revision`.
    pub fn from_nack(nack: &Nack, revision: Revision, at: i64) -> Self {
        Self {
            at,
            revision,
            reason: clean(&nack.reason, MAX_REASON),
            rejected: nack
                .rejected
                .iter()
                .take(MAX_LISTED)
                .map(|r| RejectedLicense {
                    id: clean(&r.id, MAX_ID),
                    revision: r.revision,
                    reason: clean(&r.reason, MAX_REASON),
                })
                .collect(),
            rejected_total: nack.rejected.len(),
        }
    }

    /// The refused licenses as a JSON array (`[{"id","revision","reason"}...]`), for one log
    /// field that a log shipper can parse, whatever the log format.
    pub fn rejected_json(&self) -> String {
        serde_json::to_string(&self.rejected).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// Why a data plane could not apply an update at all (a `Nack` naming no license).
pub fn failure_reason(nack: &Nack) -> String {
    let reason = clean(&nack.reason, MAX_REASON);
    if reason.trim().is_empty() {
        "the data plane gave no reason".to_owned()
    } else {
        reason
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), cut to at most `limit` bytes on a
/// character boundary.
pub fn clean(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit));
    for c in text.chars() {
        let escaped: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + escaped.len() > limit {
            break;
        }
        out.push_str(&escaped);
    }
    out
}

#[cfg(test)]
mod tests {
    use licsync_common::proto::RejectedLicense as WireRejected;

    use super::*;

    fn nack(rejected: usize) -> Nack {
        Nack {
            nonce: "7-1".into(),
            reason: format!("{rejected} of {rejected} licenses rejected"),
            rejected: (0..rejected)
                .map(|i| WireRejected {
                    id: format!("id-{i}"),
                    revision: 7,
                    reason: "validation failed".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_rejection_keeps_each_license_and_serialises_as_an_array() {
        let rejection = Rejection::from_nack(&nack(2), 7, 1_000);
        assert_eq!(rejection.rejected_total, 2);
        let logged: serde_json::Value = serde_json::from_str(&rejection.rejected_json()).unwrap();
        assert_eq!(
            logged,
            serde_json::json!([
                {"id": "id-0", "revision": 7, "reason": "validation failed"},
                {"id": "id-1", "revision": 7, "reason": "validation failed"},
            ])
        );
        let shown = serde_json::to_value(&rejection).unwrap();
        assert_eq!(shown["at"], 1_000);
        assert_eq!(shown["revision"], 7);
        assert_eq!(shown["reason"], "2 of 2 licenses rejected");
        assert_eq!(shown["rejected"][1]["id"], "id-1");
    }

    #[test]
    fn what_a_data_plane_sends_is_bounded_and_escaped() {
        let mut big = nack(MAX_LISTED + 50);
        big.rejected[0].reason = "x".repeat(10_000);
        big.rejected[1].id = "forged\n2026-01-01 INFO sync.acked".into();
        let rejection = Rejection::from_nack(&big, 7, 0);
        assert_eq!(rejection.rejected.len(), MAX_LISTED);
        assert_eq!(rejection.rejected_total, MAX_LISTED + 50);
        assert_eq!(rejection.rejected[0].reason.len(), MAX_REASON);
        assert_eq!(
            rejection.rejected[1].id,
            "forged\\n2026-01-01 INFO sync.acked"
        );

        assert_eq!(clean("é\u{1b}[31m", 100), "é\\u{1b}[31m");
        assert_eq!(clean("ééé", 5), "éé", "cut on a character boundary");
        let empty = Nack {
            reason: " ".into(),
            ..Nack::default()
        };
        assert_eq!(failure_reason(&empty), "the data plane gave no reason");
    }
}
